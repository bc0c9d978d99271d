//! # ddpm-wgpu
//!
//! A hand-written WGSL compute engine for denoising diffusion probabilistic models (Ho, Jain,
//! Abbeel 2020) that runs on any adapter wgpu reaches: Vulkan, Metal, DX12, GL, and Mesa's
//! software Vulkan driver (lavapipe) on machines with no GPU.
//!
//! ```
//! use ddpm_wgpu::{Context, ops};
//! # fn main() -> ddpm_wgpu::Result<()> {
//! let ctx = Context::new()?;
//! let a = ctx.upload(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])?;
//! let b = ctx.upload(&[2, 3], &[6.0, 5.0, 4.0, 3.0, 2.0, 1.0])?;
//! let c = ops::elementwise::add(&ctx, &a, &b)?;
//! assert_eq!(ctx.read(&c)?, vec![7.0; 6]);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod checkpoint;
pub mod data;
pub mod diffusion;
pub mod error;
pub mod gpu;
pub mod image;
pub mod nn;
pub mod ops;
pub mod reference;
pub mod tensor;

pub use error::{Error, Result};
pub use gpu::{AdapterSummary, Context, ContextOptions, MemoryStats};
pub use nn::{UNet, UNetConfig};
pub use tensor::{DType, Tensor};
