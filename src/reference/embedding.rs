//! CPU f64 reference for the embedding ops.
