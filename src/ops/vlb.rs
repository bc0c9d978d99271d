//! The learned-variance bound term L_t and its gradient (`shaders/vlb.wgsl`), for the hybrid
//! loss L_simple + λ L_vlb and the pure L_vlb objective of improved DDPM.
//!
//! # Contract
//! `vlb_terms(out, x0, x_t, coefs, weights, gin, grad_mean)`: out `[B, 2C, H, W]` (ε_θ then v),
//! x0 and x_t `[B, C, H, W]`, coefs `[B, 8]` (see [`vlb_coefs`]), weights `[B]`, gin
//! `[B, C, H, W]` → (vb `[B]` = L_t of each sample in bits/dim, dout `[B, 2C, H, W]` =
//! ∂(Σ_b weights\[b\]·vb\[b\])/∂out, plus gin on the ε half). With `grad_mean` false the ε half
//! gets gin only: the stop-gradient on the mean of the hybrid loss.

use crate::diffusion::schedule::{Prediction, Schedule};
use crate::error::{Error, Result};
use crate::gpu::{Context, Dispatch, Shader};
use crate::tensor::Tensor;

static SHADER: Shader = crate::shader!("vlb");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    d: u32,
    grad_mean: u32,
    batch: u32,
    _pad: u32,
}

/// Per-sample coefficients of the bound at timestep index `t` for a model predicting
/// `prediction`: [c0, ct, log β̃_t (clipped), log β_t, x0_x, x0_m, 1 if t = 0 else 0, 0], with
/// the posterior mean c0·x̂₀ + ct·x_t and x̂₀ = x0_x·x_t − x0_m·m (m = the model's first half).
pub fn vlb_coefs(schedule: &Schedule, prediction: Prediction, t: usize) -> [f64; 8] {
    let (c0, ct, log_var_clipped) = crate::diffusion::bpd::posterior(schedule, t);
    let pc = prediction.coefs(schedule.alphas_cumprod[t]);
    [
        c0,
        ct,
        log_var_clipped,
        schedule.betas[t].ln(),
        pc.x0_x,
        pc.x0_m,
        if t == 0 { 1.0 } else { 0.0 },
        0.0,
    ]
}

/// The bound term of each sample and the gradient of Σ_b weights\[b\]·vb\[b\] (see the module
/// contract).
#[allow(clippy::too_many_arguments)]
pub fn vlb_terms(
    ctx: &Context,
    out: &Tensor,
    x0: &Tensor,
    x_t: &Tensor,
    coefs: &Tensor,
    weights: &Tensor,
    gin: &Tensor,
    grad_mean: bool,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "vlb_terms";
    let (b, c2, h, w) = out.dims4(OP)?;
    if c2 % 2 != 0 {
        return Err(Error::shape(
            OP,
            format!("out {:?} must have 2·C channels (ε_θ and v)", out.shape()),
        ));
    }
    let half = [b, c2 / 2, h, w];
    x0.expect_shape(OP, "x0", &half)?;
    x_t.expect_shape(OP, "x_t", &half)?;
    gin.expect_shape(OP, "gin", &half)?;
    coefs.expect_shape(OP, "coefs", &[b, 8])?;
    weights.expect_shape(OP, "weights", &[b])?;
    let d = u32::try_from(c2 / 2 * h * w).map_err(|_| Error::shape(OP, format!("{:?} is too large", out.shape())))?;
    let vb = ctx.empty(&[b], "vlb.vb")?;
    let dout = ctx.empty(out.shape(), "vlb.dout")?;
    let params = Params {
        d,
        grad_mean: grad_mean as u32,
        batch: b as u32,
        _pad: 0,
    };
    ctx.dispatch(Dispatch {
        shader: &SHADER,
        entry: "vlb_terms",
        constants: &[],
        params: bytemuck::bytes_of(&params),
        buffers: &[
            out.buffer(),
            x0.buffer(),
            x_t.buffer(),
            coefs.buffer(),
            weights.buffer(),
            gin.buffer(),
            vb.buffer(),
            dout.buffer(),
        ],
        workgroups: ctx.grid(b as u32),
    })?;
    Ok((vb, dout))
}
