//! GPU kernels against their CPU f64 references. One test binary (one link, one context).

mod common;
mod elementwise;
