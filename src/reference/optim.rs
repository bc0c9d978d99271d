//! CPU f64 reference for the optim ops.
