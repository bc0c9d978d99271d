//! CPU f64 reference for the layout ops.
