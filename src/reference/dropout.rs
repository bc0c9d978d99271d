//! CPU f64 reference for the dropout ops.
