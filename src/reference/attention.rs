//! CPU f64 reference for the attention ops.
