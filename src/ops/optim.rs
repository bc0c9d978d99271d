//! Optimizer kernels (`shaders/optim.wgsl`).
//!
//! # Contracts
//! - `adam_step(param, grad, m, v, p, grad_scale)`: param, grad, m, v all the same shape;
//!   grad_scale `[1]` or `None`. In place: m =, v =, param = (torch.optim.Adam / AdamW with
//!   decoupled weight decay, bias-corrected, eps outside the square root):
//!   g = grad·grad_scale\[0\]; param ·= 1 − lr·wd; m = β1·m + (1−β1)·g; v = β2·v + (1−β2)·g²;
//!   param −= lr/(1−β1^step) · m / (√v/√(1−β2^step) + eps). grad is read only.
//! - `grad_norm_sq(grads)`: any number ≥ 1 of tensors of any shapes → out `[1]` (=) = Σ over
//!   all elements of all tensors of g².
//! - `clip_scale(norm_sq [1], max_norm)` → out `[1]` (=) = min(1, max_norm/(√norm_sq + 1e-6))
//!   (torch.nn.utils.clip_grad_norm_'s coefficient; feed it to `adam_step` as grad_scale).
//! - `ema_update(ema, param, decay)`: equal shapes; in place ema = decay·ema + (1−decay)·param.
//! - `adam_ema_step(param, grad, m, v, p, grad_scale, ema, decay)`: `adam_step` then
//!   `ema_update(ema, param, decay)` with the updated param, in one pass.
//! - `adam_ema_many(slots, p, grad_scale, decay)`: `adam_ema_step` on every (param, grad, m, v,
//!   ema) slot, the short tensors together in one dispatch; the same results bit for bit.
//! - `FlatAdam`: `adam_ema_many` with the short tensors' m, v and ema kept flat between steps
//!   (`gather_grads_norm_sq` = `grad_norm_sq` up to summation order, then `step`; `write_back`
//!   updates the per-tensor state).

use crate::error::{Error, Result};
use crate::gpu::{Context, Dispatch, Shader};
use crate::tensor::Tensor;

static SHADER: Shader = crate::shader!("optim");
const WG: u32 = 256;
/// Elements one `sum_chunks` workgroup reduces (256 invocations × ITEMS in the shader).
const CHUNK: usize = 256 * 8;
/// Largest flat buffer `grad_norm_sq` gathers small tensors into (floats; 64 MiB).
const FLAT: usize = 1 << 24;

/// Hyper-parameters of one Adam / AdamW step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamParams {
    /// Learning rate.
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Added to √v̂ (outside the square root).
    pub eps: f32,
    /// Decoupled weight decay (AdamW); 0 = Adam.
    pub weight_decay: f32,
    /// 1-based step number, for bias correction.
    pub step: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AdamUniform {
    n: u32,
    step_size: f32,
    inv_sqrt_bc2: f32,
    eps: f32,
    beta1: f32,
    beta2: f32,
    decay: f32,
    ema_decay: f32,
    ema_rest: f32,
    _pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ReduceUniform {
    n: u32,
    out_offset: u32,
    square: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ClipUniform {
    max_norm: f32,
    _pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct EmaUniform {
    n: u32,
    decay: f32,
    rest: f32,
    _pad: u32,
}

fn elements(op: &'static str, t: &Tensor) -> Result<u32> {
    u32::try_from(t.numel()).map_err(|_| Error::shape(op, format!("{:?} has more than 2^32 elements", t.shape())))
}

/// One Adam/AdamW step in place on `param`, `m` and `v`.
pub fn adam_step(
    ctx: &Context,
    param: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    p: &AdamParams,
    grad_scale: Option<&Tensor>,
) -> Result<()> {
    adam_launch(ctx, param, grad, m, v, p, grad_scale, None)
}

/// [`adam_step`] followed by [`ema_update`]`(ema, param, ema_decay)` on the updated param, in
/// one pass (the same arithmetic; one dispatch per tensor instead of two).
#[allow(clippy::too_many_arguments)]
pub fn adam_ema_step(
    ctx: &Context,
    param: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    p: &AdamParams,
    grad_scale: Option<&Tensor>,
    ema: &Tensor,
    ema_decay: f32,
) -> Result<()> {
    ema.expect_shape("adam_ema_step", "ema", param.shape())?;
    adam_launch(ctx, param, grad, m, v, p, grad_scale, Some((ema, ema_decay)))
}

/// One tensor's optimizer state for [`adam_ema_many`]: (param, grad, m, v, ema), equal shapes.
pub type AdamSlot<'a> = (&'a Tensor, &'a Tensor, &'a Tensor, &'a Tensor, &'a Tensor);

/// Tensors at most this long are stepped together by [`adam_ema_many`] (longer ones, whose
/// dispatch costs little next to their work, each by its own).
const BATCH_MAX: usize = 1 << 16;

/// [`adam_ema_step`] on every slot, with the same arithmetic (results equal bit for bit), in
/// few dispatches: the short tensors (biases, norms, small weights: most of a U-Net's, by count)
/// are copied back to back into flat buffers (buffer copies are memcpys for a software adapter,
/// while each dispatch costs a round of thread wake-ups there), stepped by one dispatch, and
/// copied back.
pub fn adam_ema_many(
    ctx: &Context,
    slots: &[AdamSlot<'_>],
    p: &AdamParams,
    grad_scale: Option<&Tensor>,
    ema_decay: f32,
) -> Result<()> {
    let column = |k: usize| -> Vec<&Tensor> { slots.iter().map(|s| [s.0, s.1, s.2, s.3, s.4][k]).collect() };
    let (params, grads, m, v, ema) = (column(0), column(1), column(2), column(3), column(4));
    // A FlatAdam for one step: state in, step, state out.
    let flat = FlatAdam::new(ctx, &m, &v, &ema)?;
    flat.check("adam_ema_many", "grad", &grads)?;
    flat.gather(ctx, &grads, &flat.grad);
    flat.step(ctx, &params, &grads, &m, &v, &ema, p, grad_scale, ema_decay)?;
    flat.write_back(ctx, &m, &v, &ema)
}

/// Adam and EMA over a fixed list of tensors whose short ones (at most `BATCH_MAX` elements:
/// biases, norms, small weights) keep their moments and EMA back to back in flat buffers from one
/// step to the next. [`adam_ema_many`] (a `FlatAdam` for one step) copies all five arrays of
/// every short tensor in and four out; kept across steps, only the grad and the param go in and
/// the param comes out, and the grad norm is taken from the same flat grads (no second gather).
/// The per-tensor m, v and ema are stale while this holds them: [`FlatAdam::write_back`] brings
/// them up to date (for a checkpoint or the EMA model). Results equal [`adam_ema_step`]'s per
/// tensor, bit for bit.
pub struct FlatAdam {
    /// Element offset in the flat buffers of every tensor held there, in list order.
    at: Vec<Option<usize>>,
    shapes: Vec<Vec<usize>>,
    param: Tensor,
    grad: Tensor,
    m: Tensor,
    v: Tensor,
    ema: Tensor,
}

impl FlatAdam {
    /// Take the short tensors' `m`, `v` and `ema` into flat buffers (one list entry per tensor,
    /// equal shapes across the three lists).
    pub fn new(ctx: &Context, m: &[&Tensor], v: &[&Tensor], ema: &[&Tensor]) -> Result<Self> {
        const OP: &str = "FlatAdam::new";
        if v.len() != m.len() || ema.len() != m.len() {
            return Err(Error::shape(
                OP,
                format!(
                    "{} m, {} v and {} ema tensors: one of each per parameter",
                    m.len(),
                    v.len(),
                    ema.len()
                ),
            ));
        }
        let mut at = Vec::with_capacity(m.len());
        let mut total = 0;
        for ((mt, vt), et) in m.iter().zip(v).zip(ema) {
            vt.expect_shape(OP, "v", mt.shape())?;
            et.expect_shape(OP, "ema", mt.shape())?;
            if mt.numel() <= BATCH_MAX {
                at.push(Some(total));
                // Every tensor starts on a vec4 (zeros in between) for the vec4 kernels.
                total += mt.numel().next_multiple_of(4);
            } else {
                at.push(None);
            }
        }
        let total = total.max(4);
        let flat = |name: &str| -> Result<Tensor> {
            let t = ctx.empty(&[total], &format!("FlatAdam.{name}"))?;
            ctx.clear_buffer(t.buffer());
            Ok(t)
        };
        let f = FlatAdam {
            at,
            shapes: m.iter().map(|t| t.shape().to_vec()).collect(),
            param: flat("param")?,
            grad: flat("grad")?,
            m: flat("m")?,
            v: flat("v")?,
            ema: flat("ema")?,
        };
        for (flat, ts) in [(&f.m, m), (&f.v, v), (&f.ema, ema)] {
            f.gather(ctx, ts, flat);
        }
        Ok(f)
    }

    fn check(&self, op: &'static str, name: &str, ts: &[&Tensor]) -> Result<()> {
        if ts.len() != self.shapes.len() {
            return Err(Error::shape(
                op,
                format!("{} {name} tensors for {} parameters", ts.len(), self.shapes.len()),
            ));
        }
        for (t, shape) in ts.iter().zip(&self.shapes) {
            t.expect_shape(op, name, shape)?;
        }
        Ok(())
    }

    /// Copy the flat-held tensors of `ts` into `flat`.
    fn gather(&self, ctx: &Context, ts: &[&Tensor], flat: &Tensor) {
        for (t, at) in ts.iter().zip(&self.at) {
            if let Some(at) = at {
                ctx.copy_buffer(t.buffer(), 0, flat.buffer(), *at as u64 * 4, t.bytes());
            }
        }
    }

    /// Copy `flat` back into the flat-held tensors of `ts`.
    fn scatter(&self, ctx: &Context, flat: &Tensor, ts: &[&Tensor]) {
        for (t, at) in ts.iter().zip(&self.at) {
            if let Some(at) = at {
                ctx.copy_buffer(flat.buffer(), *at as u64 * 4, t.buffer(), 0, t.bytes());
            }
        }
    }

    /// Gather the short grads into the flat grad buffer (for [`FlatAdam::step`]) and return
    /// Σ g² over every element of every grad as a `[1]` tensor, as [`grad_norm_sq`] does.
    pub fn gather_grads_norm_sq(&self, ctx: &Context, grads: &[&Tensor]) -> Result<Tensor> {
        self.check("FlatAdam::gather_grads_norm_sq", "grad", grads)?;
        self.gather(ctx, grads, &self.grad);
        let mut launches = vec![(self.grad.buffer(), self.grad.numel())];
        for (g, at) in grads.iter().zip(&self.at) {
            if at.is_none() {
                launches.push((g.buffer(), g.numel()));
            }
        }
        sum_sq_of(ctx, &launches)
    }

    /// [`adam_ema_step`] on every tensor: the short ones from the flat buffers (their grads as
    /// gathered by the last [`FlatAdam::gather_grads_norm_sq`]), the long ones in place.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &self,
        ctx: &Context,
        params: &[&Tensor],
        grads: &[&Tensor],
        m: &[&Tensor],
        v: &[&Tensor],
        ema: &[&Tensor],
        p: &AdamParams,
        grad_scale: Option<&Tensor>,
        ema_decay: f32,
    ) -> Result<()> {
        const OP: &str = "FlatAdam::step";
        for (name, ts) in [("param", params), ("grad", grads), ("m", m), ("v", v), ("ema", ema)] {
            self.check(OP, name, ts)?;
        }
        for (i, at) in self.at.iter().enumerate() {
            if at.is_none() {
                adam_ema_step(ctx, params[i], grads[i], m[i], v[i], p, grad_scale, ema[i], ema_decay)?;
            }
        }
        if self.at.iter().any(Option::is_some) {
            self.gather(ctx, params, &self.param);
            adam_ema_step(
                ctx,
                &self.param,
                &self.grad,
                &self.m,
                &self.v,
                p,
                grad_scale,
                &self.ema,
                ema_decay,
            )?;
            self.scatter(ctx, &self.param, params);
        }
        Ok(())
    }

    /// Bring the per-tensor `m`, `v` and `ema` up to date with the flat ones.
    pub fn write_back(&self, ctx: &Context, m: &[&Tensor], v: &[&Tensor], ema: &[&Tensor]) -> Result<()> {
        for (name, ts) in [("m", m), ("v", v), ("ema", ema)] {
            self.check("FlatAdam::write_back", name, ts)?;
        }
        for (flat, ts) in [(&self.m, m), (&self.v, v), (&self.ema, ema)] {
            self.scatter(ctx, flat, ts);
        }
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn adam_launch(
    ctx: &Context,
    param: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    p: &AdamParams,
    grad_scale: Option<&Tensor>,
    ema: Option<(&Tensor, f32)>,
) -> Result<()> {
    const OP: &str = "adam_step";
    let shape = param.shape();
    grad.expect_shape(OP, "grad", shape)?;
    m.expect_shape(OP, "m", shape)?;
    v.expect_shape(OP, "v", shape)?;
    if p.step == 0 {
        return Err(Error::arg("step", "Adam steps are 1-based; got 0"));
    }
    let n = elements(OP, param)?;
    let t = p.step as i32;
    let bc1 = 1.0 - (p.beta1 as f64).powi(t);
    let bc2 = 1.0 - (p.beta2 as f64).powi(t);
    let uniform = AdamUniform {
        n,
        step_size: (p.lr as f64 / bc1) as f32,
        inv_sqrt_bc2: (1.0 / bc2.sqrt()) as f32,
        eps: p.eps,
        beta1: p.beta1,
        beta2: p.beta2,
        decay: (1.0 - p.lr as f64 * p.weight_decay as f64) as f32,
        ema_decay: ema.map_or(0.0, |e| e.1),
        ema_rest: ema.map_or(0.0, |e| (1.0 - e.1 as f64) as f32),
        _pad: [0; 3],
    };
    let (entry, buffers): (&'static str, Vec<&wgpu::Buffer>) = match grad_scale {
        Some(s) => {
            s.expect_shape(OP, "grad_scale", &[1])?;
            (
                "adam_scaled",
                vec![param.buffer(), grad.buffer(), m.buffer(), v.buffer(), s.buffer()],
            )
        }
        None => ("adam", vec![param.buffer(), grad.buffer(), m.buffer(), v.buffer()]),
    };
    let (entry, buffers) = match ema {
        None => (entry, buffers),
        Some((e, _)) => {
            let mut buffers = buffers;
            buffers.push(e.buffer());
            (
                if grad_scale.is_some() {
                    "adam_scaled_ema"
                } else {
                    "adam_ema"
                },
                buffers,
            )
        }
    };
    // The vec4 kernels where every element is in a whole vec4.
    let (entry, invocations) = match (n.is_multiple_of(4), entry) {
        (true, "adam") => ("adam4", n / 4),
        (true, "adam_scaled") => ("adam_scaled4", n / 4),
        (true, "adam_ema") => ("adam_ema4", n / 4),
        (true, "adam_scaled_ema") => ("adam_scaled_ema4", n / 4),
        _ => (entry, n),
    };
    ctx.dispatch(Dispatch {
        shader: &SHADER,
        entry,
        constants: &[],
        params: bytemuck::bytes_of(&uniform),
        buffers: &buffers,
        workgroups: ctx.grid(invocations.div_ceil(WG)),
    })
}

/// Record one `sum_chunks` launch: partial sums of `input[..n]` into `out[offset..]`.
fn sum_chunks(ctx: &Context, input: &wgpu::Buffer, n: usize, out: &Tensor, offset: usize, square: bool) -> Result<()> {
    let uniform = ReduceUniform {
        n: n as u32,
        out_offset: offset as u32,
        square: square as u32,
        _pad: 0,
    };
    ctx.dispatch(Dispatch {
        shader: &SHADER,
        // One 8-lane workgroup per chunk on CPU adapters (see sum_chunks8) when n % 4 == 0.
        entry: if ctx.adapter_info().device_type == wgpu::DeviceType::Cpu && n.is_multiple_of(4) {
            "sum_chunks8"
        } else {
            "sum_chunks"
        },
        constants: &[],
        params: bytemuck::bytes_of(&uniform),
        buffers: &[input, out.buffer()],
        workgroups: ctx.grid(n.div_ceil(CHUNK) as u32),
    })
}

/// Σ g² over every element of every tensor in `grads`, as a `[1]` tensor (no readback).
pub fn grad_norm_sq(ctx: &Context, grads: &[&Tensor]) -> Result<Tensor> {
    const OP: &str = "grad_norm_sq";
    if grads.is_empty() {
        return Err(Error::arg("grads", "grad_norm_sq needs at least one tensor"));
    }
    for g in grads {
        elements(OP, g)?;
    }
    // Stage 1: the tensors are copied back to back into flat buffers of at most FLAT floats
    // (buffer copies are memcpys for a software adapter, while every dispatch costs a round of
    // thread wake-ups there: one dispatch per flat buffer instead of one per tensor); a tensor
    // larger than that is reduced in place. Every launch writes its partial sums side by side
    // into one buffer.
    let flat_cap = (ctx.max_binding_bytes() as usize / 4).min(FLAT);
    let mut launches: Vec<(Tensor, usize)> = Vec::new();
    let mut group: Vec<&Tensor> = Vec::new();
    let mut group_len = 0;
    let mut flush = |group: &mut Vec<&Tensor>, group_len: &mut usize| -> Result<()> {
        match group.len() {
            0 => {}
            1 => launches.push((group[0].clone(), group[0].numel())),
            _ => {
                // Each tensor starts on a vec4 (zeros in between) for the vec4 reduction.
                let flat = ctx.empty(&[*group_len], "grad_norm_sq.flat")?;
                ctx.clear_buffer(flat.buffer());
                let mut at = 0u64;
                for g in group.iter() {
                    ctx.copy_buffer(g.buffer(), 0, flat.buffer(), at, g.numel() as u64 * 4);
                    at += g.numel().next_multiple_of(4) as u64 * 4;
                }
                launches.push((flat, *group_len));
            }
        }
        group.clear();
        *group_len = 0;
        Ok(())
    };
    for g in grads {
        let len = g.numel().next_multiple_of(4);
        if group_len + len > flat_cap {
            flush(&mut group, &mut group_len)?;
        }
        group.push(g);
        group_len += len;
    }
    flush(&mut group, &mut group_len)?;
    let launches: Vec<(&wgpu::Buffer, usize)> = launches.iter().map(|(t, n)| (t.buffer(), *n)).collect();
    sum_sq_of(ctx, &launches)
}

/// Σ x² over the first `n` elements of every (buffer, n), as a `[1]` tensor: one `sum_chunks`
/// launch per buffer writing its partial sums side by side, then rounds over those until one
/// value is left.
fn sum_sq_of(ctx: &Context, launches: &[(&wgpu::Buffer, usize)]) -> Result<Tensor> {
    let total: usize = launches.iter().map(|(_, n)| n.div_ceil(CHUNK)).sum();
    let mut partials = ctx.empty(&[total], "grad_norm_sq.partials")?;
    let mut offset = 0;
    for &(b, n) in launches {
        sum_chunks(ctx, b, n, &partials, offset, true)?;
        offset += n.div_ceil(CHUNK);
    }
    let mut len = total;
    while len > 1 {
        let next = len.div_ceil(CHUNK);
        let out = ctx.empty(&[next], "grad_norm_sq.partials")?;
        sum_chunks(ctx, partials.buffer(), len, &out, 0, false)?;
        partials = out;
        len = next;
    }
    Ok(partials)
}

/// min(1, max_norm/(√norm_sq + 1e-6)) as a `[1]` tensor.
pub fn clip_scale(ctx: &Context, norm_sq: &Tensor, max_norm: f32) -> Result<Tensor> {
    norm_sq.expect_shape("clip_scale", "norm_sq", &[1])?;
    let out = ctx.empty(&[1], "clip_scale.out")?;
    let uniform = ClipUniform { max_norm, _pad: [0; 3] };
    ctx.dispatch(Dispatch {
        shader: &SHADER,
        entry: "clip_scale",
        constants: &[],
        params: bytemuck::bytes_of(&uniform),
        buffers: &[norm_sq.buffer(), out.buffer()],
        workgroups: [1, 1, 1],
    })?;
    Ok(out)
}

/// ema = decay·ema + (1 − decay)·param, in place on `ema`.
pub fn ema_update(ctx: &Context, ema: &Tensor, param: &Tensor, decay: f32) -> Result<()> {
    const OP: &str = "ema_update";
    param.expect_shape(OP, "param", ema.shape())?;
    let n = elements(OP, ema)?;
    let uniform = EmaUniform {
        n,
        decay,
        rest: (1.0 - decay as f64) as f32,
        _pad: 0,
    };
    ctx.dispatch(Dispatch {
        shader: &SHADER,
        entry: "ema",
        constants: &[],
        params: bytemuck::bytes_of(&uniform),
        buffers: &[ema.buffer(), param.buffer()],
        workgroups: ctx.grid(n.div_ceil(WG)),
    })
}
