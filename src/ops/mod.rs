//! GPU ops: one file per op family, each the launcher for `shaders/<family>.wgsl`.
//! Every file starts with the contract: argument shapes and which outputs are written (`=`) or
//! accumulated (`+=`).

pub mod elementwise;
