//! GPU ops: one file per op family, each the launcher for `shaders/<family>.wgsl`.
//! Every file starts with the contract: argument shapes and which outputs are written (`=`) or
//! accumulated (`+=`).

pub mod attention;
// Shapes in these two files' docs are written `[N,Cin,H,W]`, which rustdoc reads as links.
#[allow(rustdoc::broken_intra_doc_links)]
pub mod conv2d;
pub mod ddpm;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod groupnorm;
pub mod layout;
pub mod loss;
#[allow(rustdoc::broken_intra_doc_links)]
pub mod matmul;
pub mod optim;
pub mod random;
pub mod sde;
pub mod vlb;
