//! Elementwise ops (`shaders/elementwise.wgsl`).
//!
//! # Contracts
//! - `axpby(a, b, alpha, beta)`: a, b any equal shape → out = alpha·a + beta·b (new tensor).
//! - `add(a, b)`: a + b.

use crate::error::{Error, Result};
use crate::gpu::{Context, Dispatch, Shader};
use crate::tensor::Tensor;

static SHADER: Shader = crate::shader!("elementwise");
const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    alpha: f32,
    beta: f32,
    _pad: u32,
}

fn same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::shape(
            op,
            format!("operands differ: {:?} vs {:?}", a.shape(), b.shape()),
        ));
    }
    Ok(())
}

/// out = alpha·a + beta·b.
pub fn axpby(ctx: &Context, a: &Tensor, b: &Tensor, alpha: f32, beta: f32) -> Result<Tensor> {
    same_shape("axpby", a, b)?;
    let out = ctx.empty(a.shape(), "axpby.out")?;
    let n = a.numel() as u32;
    let params = Params {
        n,
        alpha,
        beta,
        _pad: 0,
    };
    ctx.dispatch(Dispatch {
        shader: &SHADER,
        entry: "axpby",
        constants: &[],
        params: bytemuck::bytes_of(&params),
        buffers: &[a.buffer(), b.buffer(), out.buffer()],
        workgroups: ctx.grid(n.div_ceil(WG)),
    })?;
    Ok(out)
}

/// a + b.
pub fn add(ctx: &Context, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    axpby(ctx, a, b, 1.0, 1.0)
}
