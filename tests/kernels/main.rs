//! GPU kernels against their CPU f64 references. One test binary (one link, one context).
//! Run one family with e.g. `cargo test --release --test kernels -- conv2d`.

mod common;

mod attention;
mod conv2d;
mod ddpm;
mod dropout;
mod elementwise;
mod embedding;
mod groupnorm;
mod layout;
mod loss;
mod matmul;
mod optim;
mod random;
mod sde;
mod vlb;
