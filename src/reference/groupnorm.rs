//! CPU f64 reference for the groupnorm ops.
