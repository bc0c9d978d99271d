//! CPU f64 reference for the conv2d ops.
