//! CPU f64 reference for the random ops.
