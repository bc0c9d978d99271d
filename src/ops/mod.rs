//! GPU ops: one file per op family, each the launcher for `shaders/<family>.wgsl`.
//! Every file starts with the contract: argument shapes and which outputs are written (`=`) or
//! accumulated (`+=`).

pub mod attention;
pub mod conv2d;
pub mod ddpm;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod groupnorm;
pub mod layout;
pub mod loss;
pub mod matmul;
pub mod optim;
pub mod random;
