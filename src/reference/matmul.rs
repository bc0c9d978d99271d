//! CPU f64 reference for the matmul ops.
