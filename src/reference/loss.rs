//! CPU f64 reference for the loss ops.
