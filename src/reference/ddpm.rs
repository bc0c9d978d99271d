//! CPU f64 reference for the ddpm ops.
