//! The U-Net's layers, each with a forward that returns what its backward needs (its slice of
//! the tape) and a hand-written backward that returns the input gradient and accumulates (`+=`)
//! parameter gradients into [`Grads`].

use crate::error::Result;
use crate::gpu::Context;
use crate::nn::params::{Grads, ParamId, Params};
use crate::ops::conv2d::{self, Conv2dParams};
use crate::ops::{attention, dropout, elementwise as ew, groupnorm, layout, matmul};
use crate::tensor::Tensor;

/// Training or inference, and the dropout seed of this step.
#[derive(Clone, Copy, Debug)]
pub struct Mode {
    /// Dropout active.
    pub train: bool,
    /// Seed for dropout masks (one stream per ResNet block).
    pub seed: u64,
}

impl Mode {
    /// Inference: no dropout.
    pub const EVAL: Mode = Mode { train: false, seed: 0 };
}

/// 2-D convolution with bias.
pub struct Conv {
    pub(crate) w: ParamId,
    pub(crate) b: ParamId,
    pub(crate) p: Conv2dParams,
}

impl Conv {
    pub(crate) fn new(params: &mut Params, name: &str, cin: usize, cout: usize, k: usize, p: Conv2dParams) -> Self {
        Conv {
            w: params.declare(format!("{name}.weight"), vec![cout, cin, k, k]),
            b: params.declare(format!("{name}.bias"), vec![cout]),
            p,
        }
    }
    pub(crate) fn forward(&self, ctx: &Context, ps: &Params, x: &Tensor) -> Result<Tensor> {
        Ok(self.forward_fused(ctx, ps, x, conv2d::Fused::default(), false)?.0)
    }

    /// The Winograd weight transform, computed once while the parameters are frozen (see
    /// [`Params::freeze`]) and this convolution runs Winograd; None otherwise.
    fn weight_transform(&self, ctx: &Context, ps: &Params, x: &Tensor) -> Result<Option<Tensor>> {
        let w = ps.get(self.w);
        if !ps.is_frozen() || !conv2d::forward_runs_winograd(ctx, x, w, self.p)? {
            return Ok(None);
        }
        ps.derived(self.w, || conv2d::winograd_weight_transform(ctx, w))
    }
    /// The forward with `epi` added to the output (see [`conv2d::conv2d_fused`]); with `save`,
    /// also what the backward can reuse ([`conv2d::conv2d_fused_saving`]).
    pub(crate) fn forward_fused(
        &self,
        ctx: &Context,
        ps: &Params,
        x: &Tensor,
        epi: conv2d::Fused<'_>,
        save: bool,
    ) -> Result<(Tensor, conv2d::ConvSaved)> {
        let (w, b) = (ps.get(self.w), Some(ps.get(self.b)));
        let u = if save || self.p.stride != 1 || w.shape()[2..] != [3, 3] {
            None
        } else {
            self.weight_transform(ctx, ps, x)?
        };
        let epi = conv2d::Fused {
            weight_transform: u.as_ref(),
            ..epi
        };
        if save {
            conv2d::conv2d_fused_saving(ctx, x, w, b, self.p, epi)
        } else {
            Ok((
                conv2d::conv2d_fused(ctx, x, w, b, self.p, epi)?,
                conv2d::ConvSaved::default(),
            ))
        }
    }
    pub(crate) fn backward(
        &self,
        ctx: &Context,
        ps: &Params,
        g: &mut Grads,
        x: &Tensor,
        dy: &Tensor,
        need_dx: bool,
    ) -> Result<Option<Tensor>> {
        self.backward_saved(ctx, ps, g, x, dy, need_dx, &conv2d::ConvSaved::default())
    }
    /// The backward, reusing what [`Conv::forward_fused`] saved.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward_saved(
        &self,
        ctx: &Context,
        ps: &Params,
        g: &mut Grads,
        x: &Tensor,
        dy: &Tensor,
        need_dx: bool,
        saved: &conv2d::ConvSaved,
    ) -> Result<Option<Tensor>> {
        let grads = conv2d::conv2d_backward_saved(ctx, x, ps.get(self.w), dy, self.p, need_dx, saved)?;
        g.accumulate(ctx, self.w, grads.dw)?;
        g.accumulate(ctx, self.b, grads.db)?;
        Ok(grads.dx)
    }
    /// The backward of this convolution and of the norm (then SiLU, then `dropout`) whose
    /// output it read from `norm_x` ([`conv2d::conv2d_backward_norm`]): accumulates both
    /// layers' parameter grads and returns dx of the norm's input (+ `dx_addend`) and, where
    /// the convolution had it at hand, its bias grad per image [Cout, N] with (a copy of) its
    /// bias grad [Cout].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward_through_norm(
        &self,
        ctx: &Context,
        ps: &Params,
        g: &mut Grads,
        x: &Tensor,
        dy: &Tensor,
        saved: &conv2d::ConvSaved,
        norm: &GroupNorm,
        norm_x: &Tensor,
        stats: &Tensor,
        dropout: Option<dropout::Dropout>,
        dx_addend: Option<&Tensor>,
    ) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
        let nm = conv2d::NormGrad {
            x: norm_x,
            gamma: ps.get(norm.gamma),
            beta: ps.get(norm.beta),
            stats,
            groups: norm.groups,
            silu: true,
            dropout,
        };
        let r = conv2d::conv2d_backward_norm(ctx, x, ps.get(self.w), dy, self.p, saved, nm, dx_addend)?;
        let per_image = match r.db_images {
            Some(s) => Some((s, ctx.duplicate(&r.db, "conv.db")?)),
            None => None,
        };
        g.accumulate(ctx, self.w, r.dw)?;
        g.accumulate(ctx, self.b, r.db)?;
        g.accumulate(ctx, norm.gamma, r.dgamma)?;
        g.accumulate(ctx, norm.beta, r.dbeta)?;
        Ok((r.dx, per_image))
    }
}

/// `nn.Linear` (weight [out, in]).
pub struct Linear {
    pub(crate) w: ParamId,
    pub(crate) b: ParamId,
}

impl Linear {
    pub(crate) fn new(params: &mut Params, name: &str, cin: usize, cout: usize) -> Self {
        Linear {
            w: params.declare(format!("{name}.weight"), vec![cout, cin]),
            b: params.declare(format!("{name}.bias"), vec![cout]),
        }
    }
    pub(crate) fn forward(&self, ctx: &Context, ps: &Params, x: &Tensor) -> Result<Tensor> {
        matmul::linear(ctx, x, ps.get(self.w), Some(ps.get(self.b)))
    }
    /// The backward given dy transposed, `dy_t` [out, rows], and its row sums `db` [out] (the
    /// bias grad) already computed: dx = dy_tᵀ·w, dw = dy_t·x, no transpose and no reduction.
    pub(crate) fn backward_transposed(
        &self,
        ctx: &Context,
        ps: &Params,
        g: &mut Grads,
        x: &Tensor,
        dy_t: &Tensor,
        db: Tensor,
    ) -> Result<Tensor> {
        let dx = matmul::matmul(ctx, dy_t, ps.get(self.w), true, false)?;
        g.accumulate(ctx, self.w, matmul::matmul(ctx, dy_t, x, false, false)?)?;
        g.accumulate(ctx, self.b, db)?;
        Ok(dx)
    }
    pub(crate) fn backward(
        &self,
        ctx: &Context,
        ps: &Params,
        g: &mut Grads,
        x: &Tensor,
        dy: &Tensor,
        need_dx: bool,
    ) -> Result<Option<Tensor>> {
        let (dx, dw, db) = matmul::linear_backward(ctx, x, ps.get(self.w), dy, need_dx)?;
        g.accumulate(ctx, self.w, dw)?;
        g.accumulate(ctx, self.b, db)?;
        Ok(dx)
    }
}

/// `nn.GroupNorm` with affine parameters, optionally fused with SiLU.
pub struct GroupNorm {
    pub(crate) gamma: ParamId,
    pub(crate) beta: ParamId,
    pub(crate) groups: usize,
    pub(crate) eps: f32,
}

impl GroupNorm {
    pub(crate) fn new(params: &mut Params, name: &str, c: usize, groups: usize, eps: f32) -> Self {
        GroupNorm {
            gamma: params.declare(format!("{name}.weight"), vec![c]),
            beta: params.declare(format!("{name}.bias"), vec![c]),
            groups,
            eps,
        }
    }
    /// The stats `[N, G, 2]` of x only (see [`GroupNorm::input`]).
    pub(crate) fn stats(&self, ctx: &Context, ps: &Params, x: &Tensor) -> Result<Tensor> {
        groupnorm::group_norm_stats(ctx, x, ps.get(self.gamma), ps.get(self.beta), self.groups, self.eps)
    }
    /// This norm (then SiLU when `silu`, then `dropout`) for a convolution to apply to its
    /// input as it reads it.
    pub(crate) fn input<'a>(
        &self,
        ps: &'a Params,
        stats: &'a Tensor,
        silu: bool,
        dropout: Option<dropout::Dropout>,
    ) -> conv2d::InputNorm<'a> {
        conv2d::InputNorm {
            stats,
            gamma: ps.get(self.gamma),
            beta: ps.get(self.beta),
            groups: self.groups,
            silu,
            dropout,
        }
    }
    /// y of [`GroupNorm::forward`] from stats computed before.
    pub(crate) fn apply(&self, ctx: &Context, ps: &Params, x: &Tensor, stats: &Tensor, silu: bool) -> Result<Tensor> {
        groupnorm::group_norm_apply(ctx, x, ps.get(self.gamma), ps.get(self.beta), stats, self.groups, silu)
    }
    /// Returns (y, stats).
    pub(crate) fn forward(&self, ctx: &Context, ps: &Params, x: &Tensor, silu: bool) -> Result<(Tensor, Tensor)> {
        groupnorm::group_norm(
            ctx,
            x,
            ps.get(self.gamma),
            ps.get(self.beta),
            self.groups,
            self.eps,
            silu,
        )
    }
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward(
        &self,
        ctx: &Context,
        ps: &Params,
        g: &mut Grads,
        x: &Tensor,
        stats: &Tensor,
        dy: &Tensor,
        silu: bool,
    ) -> Result<Tensor> {
        self.backward_add(ctx, ps, g, x, stats, dy, silu, None)
    }

    /// [`Self::backward`] with `dx_addend` added to dx as it is written.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward_add(
        &self,
        ctx: &Context,
        ps: &Params,
        g: &mut Grads,
        x: &Tensor,
        stats: &Tensor,
        dy: &Tensor,
        silu: bool,
        dx_addend: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.backward_dropout(ctx, ps, g, x, stats, dy, silu, None, dx_addend)
    }

    /// [`Self::backward_add`] of dropout(norm(x)) (`dropout` given): dy is the dropout
    /// output's gradient.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward_dropout(
        &self,
        ctx: &Context,
        ps: &Params,
        g: &mut Grads,
        x: &Tensor,
        stats: &Tensor,
        dy: &Tensor,
        silu: bool,
        dropout: Option<dropout::Dropout>,
        dx_addend: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (dx, dgamma, dbeta) = groupnorm::group_norm_backward_dropout(
            ctx,
            x,
            ps.get(self.gamma),
            ps.get(self.beta),
            stats,
            dy,
            self.groups,
            silu,
            dropout,
            dx_addend,
        )?;
        g.accumulate(ctx, self.gamma, dgamma)?;
        g.accumulate(ctx, self.beta, dbeta)?;
        Ok(dx)
    }
}

/// diffusers' `ResnetBlock2D` (time_embedding_norm "default"):
/// h = conv1(silu(norm1(x))) + time_emb_proj(silu(temb)); h = conv2(dropout(silu(norm2(h))));
/// out = (shortcut(x) + h) / output_scale_factor.
pub struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv,
    time_emb_proj: Linear,
    norm2: GroupNorm,
    conv2: Conv,
    conv_shortcut: Option<Conv>,
    dropout: f32,
    out_scale: f32,
    stream: u32,
}

/// What [`ResnetBlock::backward`] needs from the forward.
pub struct ResnetTape {
    x: Tensor,
    stats1: Tensor,
    // silu(norm1(x)) and dropout(silu(norm2(h))) are never stored: the convolutions normalize
    // (and drop out) their inputs themselves, and the backward recomputes them only where a
    // convolution kept no input transform.
    h: Tensor,
    stats2: Tensor,
    // The dropout between norm2 and conv2 (training with dropout > 0 only).
    drop: Option<dropout::Dropout>,
    // The convolutions' Winograd input transforms, kept in training for their weight grads.
    saved1: conv2d::ConvSaved,
    saved2: conv2d::ConvSaved,
}

impl ResnetBlock {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        params: &mut Params,
        name: &str,
        cin: usize,
        cout: usize,
        temb: usize,
        groups: usize,
        eps: f32,
        dropout: f32,
        out_scale: f32,
        stream: u32,
    ) -> Self {
        let same = Conv2dParams::new(1, 1);
        ResnetBlock {
            norm1: GroupNorm::new(params, &format!("{name}.norm1"), cin, groups, eps),
            conv1: Conv::new(params, &format!("{name}.conv1"), cin, cout, 3, same),
            time_emb_proj: Linear::new(params, &format!("{name}.time_emb_proj"), temb, cout),
            norm2: GroupNorm::new(params, &format!("{name}.norm2"), cout, groups, eps),
            conv2: Conv::new(params, &format!("{name}.conv2"), cout, cout, 3, same),
            conv_shortcut: (cin != cout).then(|| {
                Conv::new(
                    params,
                    &format!("{name}.conv_shortcut"),
                    cin,
                    cout,
                    1,
                    Conv2dParams::new(1, 0),
                )
            }),
            dropout,
            out_scale,
            stream,
        }
    }

    /// `temb_act` = silu(temb) [B, temb_dim], shared by every block.
    pub(crate) fn forward(
        &self,
        ctx: &Context,
        ps: &Params,
        x: &Tensor,
        temb_act: &Tensor,
        mode: Mode,
    ) -> Result<(Tensor, ResnetTape)> {
        // The norms (+ SiLU, + dropout) run inside the next convolution's input transform
        // (`conv2d::InputNorm`) and their outputs are never stored (while training the
        // convolutions keep their input transforms for the weight grads, so the backward needs
        // neither a1 nor d2; where one kept none the backward recomputes it).
        let stats1 = self.norm1.stats(ctx, ps, x)?;
        let tproj = self.time_emb_proj.forward(ctx, ps, temb_act)?;
        // h = conv1(a1) + tproj per (image, channel), added by the convolution's output stage.
        let epi1 = conv2d::Fused {
            input_norm: Some(self.norm1.input(ps, &stats1, true, None)),
            image_bias: Some(&tproj),
            residual: None,
            weight_transform: None,
        };
        let (h, saved1) = self.conv1.forward_fused(ctx, ps, x, epi1, mode.train)?;
        let drop = (mode.train && self.dropout > 0.0).then_some(dropout::Dropout {
            p: self.dropout,
            seed: mode.seed,
            stream: self.stream,
        });
        let stats2 = self.norm2.stats(ctx, ps, &h)?;
        let shortcut = match &self.conv_shortcut {
            Some(sc) => sc.forward(ctx, ps, x)?,
            None => x.clone(),
        };
        // out = (shortcut + conv2(d2)) / out_scale, also in the convolution's output stage.
        let epi2 = conv2d::Fused {
            input_norm: Some(self.norm2.input(ps, &stats2, true, drop)),
            image_bias: None,
            residual: Some((&shortcut, 1.0 / self.out_scale)),
            weight_transform: None,
        };
        let (out, saved2) = self.conv2.forward_fused(ctx, ps, &h, epi2, mode.train)?;
        Ok((
            out,
            ResnetTape {
                x: x.clone(),
                stats1,
                h,
                stats2,
                drop,
                saved1,
                saved2,
            },
        ))
    }

    /// Returns dx; accumulates d(temb_act) into `dtemb`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward(
        &self,
        ctx: &Context,
        ps: &Params,
        g: &mut Grads,
        tape: ResnetTape,
        temb_act: &Tensor,
        dy: &Tensor,
        dtemb: &mut Option<Tensor>,
    ) -> Result<Tensor> {
        let dy = if self.out_scale == 1.0 {
            dy.clone()
        } else {
            ew::scale(ctx, dy, 1.0 / self.out_scale)?
        };
        let dx_short = match &self.conv_shortcut {
            Some(sc) => sc.backward(ctx, ps, g, &tape.x, &dy, true)?.expect("dx requested"),
            None => dy.clone(),
        };
        // With the input transform kept, conv2's backward reads its input for the shape only
        // (h has d2's); otherwise d2 is recomputed.
        let d2 = if tape.saved2.keeps_input_transform() {
            tape.h.clone()
        } else {
            let a2 = self.norm2.apply(ctx, ps, &tape.h, &tape.stats2, true)?;
            match tape.drop {
                Some(d) => dropout::dropout(ctx, &a2, d.p, d.seed, d.stream)?,
                None => a2,
            }
        };
        let (dh, _) = self.conv2.backward_through_norm(
            ctx,
            ps,
            g,
            &d2,
            &dy,
            &tape.saved2,
            &self.norm2,
            &tape.h,
            &tape.stats2,
            tape.drop,
            None,
        )?;
        // With the input transform kept, conv1's backward reads its input for the shape only (x
        // has a1's); otherwise a1 is recomputed.
        let a1 = if tape.saved1.keeps_input_transform() {
            tape.x.clone()
        } else {
            self.norm1.apply(ctx, ps, &tape.x, &tape.stats1, true)?
        };
        // dx = the norm path's gradient + the shortcut's, summed as the norm's backward writes dx.
        let (dx, per_image) = self.conv1.backward_through_norm(
            ctx,
            ps,
            g,
            &a1,
            &dh,
            &tape.saved1,
            &self.norm1,
            &tape.x,
            &tape.stats1,
            None,
            Some(&dx_short),
        )?;
        // h = conv1(a1) + tproj per (image, channel): tproj's grad is conv1's bias grad per
        // image, which its Winograd weight grad has at hand as [Cout, N] (tproj's grad
        // transposed; its sum over the images, conv1's bias grad, is tproj's bias grad), else
        // dh's channel sums.
        let dt = match per_image {
            Some((dt_t, db)) => self
                .time_emb_proj
                .backward_transposed(ctx, ps, g, temb_act, &dt_t, db)?,
            None => {
                let dtproj = ew::channel_sum(ctx, &dh)?;
                self.time_emb_proj
                    .backward(ctx, ps, g, temb_act, &dtproj, true)?
                    .expect("dx requested")
            }
        };
        match dtemb {
            Some(acc) => ew::add_inplace(ctx, acc, &dt)?,
            None => *dtemb = Some(dt),
        }
        Ok(dx)
    }
}

/// diffusers' `Attention` as used by the U-Net blocks (`_from_deprecated_attn_block`):
/// GroupNorm → q, k, v projections over the H·W tokens → multi-head softmax(qkᵀ/√d)v → to_out
/// → + residual, / rescale_output_factor.
pub struct AttnBlock {
    norm: GroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    rescale: f32,
}

/// What [`AttnBlock::backward`] needs from the forward.
pub struct AttnTape {
    x: Tensor,
    saved: Option<AttnSaved>,
}

/// The token-major activations of a training forward; an inference forward (channel-major,
/// [`attention::attention_channels_first`]) keeps none and a backward recomputes them.
struct AttnSaved {
    stats: Tensor,
    tokens: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    lse: Tensor,
}

impl AttnBlock {
    pub(crate) fn new(
        params: &mut Params,
        name: &str,
        c: usize,
        head_dim: Option<usize>,
        groups: usize,
        eps: f32,
        rescale: f32,
    ) -> Self {
        let heads = head_dim.map_or(1, |d| c / d);
        AttnBlock {
            norm: GroupNorm::new(params, &format!("{name}.group_norm"), c, groups, eps),
            to_q: Linear::new(params, &format!("{name}.to_q"), c, c),
            to_k: Linear::new(params, &format!("{name}.to_k"), c, c),
            to_v: Linear::new(params, &format!("{name}.to_v"), c, c),
            to_out: Linear::new(params, &format!("{name}.to_out.0"), c, c),
            heads,
            rescale,
        }
    }

    /// Outside training, where the GEMM attention kernel runs one head, the block stays
    /// channel-major (NCHW) throughout: q, k, v and the output projection are pointwise
    /// convolutions and attention runs on the transposes ([`attention::attention_channels_first`]),
    /// so no activation is transposed. Otherwise, and while training, tokens are [N·T, C].
    pub(crate) fn forward(&self, ctx: &Context, ps: &Params, x: &Tensor, mode: Mode) -> Result<(Tensor, AttnTape)> {
        let (n, c, h, w) = x.dims4("AttnBlock")?;
        let t = h * w;
        let channels_first =
            !mode.train && self.heads == 1 && attention::kernel_for(ctx, n, t, c, 1) == attention::Kernel::Gemm;
        if !channels_first {
            return self.forward_tokens(ctx, ps, x);
        }
        let (normed, _) = self.norm.forward(ctx, ps, x, false)?;
        let pointwise = Conv2dParams::new(1, 0);
        let proj = |l: &Linear, input: &Tensor, epi: conv2d::Fused<'_>| -> Result<Tensor> {
            let wt = ps.get(l.w).reshape(&[c, c, 1, 1])?;
            conv2d::conv2d_fused(ctx, input, &wt, Some(ps.get(l.b)), pointwise, epi)
        };
        let plain = conv2d::Fused::default();
        let qt = proj(&self.to_q, &normed, plain)?.reshape(&[n, c, t])?;
        let kt = proj(&self.to_k, &normed, plain)?.reshape(&[n, c, t])?;
        let vt = proj(&self.to_v, &normed, plain)?.reshape(&[n, c, t])?;
        let ot = attention::attention_channels_first(ctx, &qt, &kt, &vt)?.reshape(&[n, c, h, w])?;
        // out = (to_out(o) + x) / rescale, the residual added by the projection's GEMM pass.
        let epi = conv2d::Fused {
            residual: Some((x, 1.0 / self.rescale)),
            ..plain
        };
        let out = proj(&self.to_out, &ot, epi)?;
        Ok((
            out,
            AttnTape {
                x: x.clone(),
                saved: None,
            },
        ))
    }

    /// The token-major forward (training, several heads, and adapters without the GEMM kernel).
    fn forward_tokens(&self, ctx: &Context, ps: &Params, x: &Tensor) -> Result<(Tensor, AttnTape)> {
        let (n, c, h, w) = x.dims4("AttnBlock")?;
        let t = h * w;
        let (normed, stats) = self.norm.forward(ctx, ps, x, false)?;
        let tokens = layout::nchw_to_nlc(ctx, &normed)?.reshape(&[n * t, c])?;
        let q = self.to_q.forward(ctx, ps, &tokens)?.reshape(&[n, t, c])?;
        let k = self.to_k.forward(ctx, ps, &tokens)?.reshape(&[n, t, c])?;
        let v = self.to_v.forward(ctx, ps, &tokens)?.reshape(&[n, t, c])?;
        let (o, lse) = attention::attention(ctx, &q, &k, &v, self.heads)?;
        let proj = self
            .to_out
            .forward(ctx, ps, &o.reshape(&[n * t, c])?)?
            .reshape(&[n, t, c])?;
        let y = layout::nlc_to_nchw(ctx, &proj, h, w)?;
        let out = ew::axpby(ctx, &y, x, 1.0 / self.rescale, 1.0 / self.rescale)?;
        Ok((
            out,
            AttnTape {
                x: x.clone(),
                saved: Some(AttnSaved {
                    stats,
                    tokens,
                    q,
                    k,
                    v,
                    o,
                    lse,
                }),
            },
        ))
    }

    pub(crate) fn backward(
        &self,
        ctx: &Context,
        ps: &Params,
        g: &mut Grads,
        tape: AttnTape,
        dy: &Tensor,
    ) -> Result<Tensor> {
        let (n, c, _, _) = dy.dims4("AttnBlock backward")?;
        let x = tape.x;
        let tape = match tape.saved {
            Some(saved) => saved,
            None => {
                let (_, full) = self.forward_tokens(ctx, ps, &x)?;
                full.saved.expect("the token-major forward keeps its activations")
            }
        };
        let dy = if self.rescale == 1.0 {
            dy.clone()
        } else {
            ew::scale(ctx, dy, 1.0 / self.rescale)?
        };
        let dproj = layout::nchw_to_nlc(ctx, &dy)?;
        let t = dproj.shape()[1];
        let dproj = dproj.reshape(&[n * t, c])?;
        let o2 = tape.o.reshape(&[n * t, c])?;
        let d_o = self
            .to_out
            .backward(ctx, ps, g, &o2, &dproj, true)?
            .expect("dx requested")
            .reshape(&[n, t, c])?;
        let (dq, dk, dv) =
            attention::attention_backward(ctx, &tape.q, &tape.k, &tape.v, &tape.o, &tape.lse, &d_o, self.heads)?;
        let flat = |d: Tensor| d.reshape(&[n * t, c]);
        let dtok = self
            .to_q
            .backward(ctx, ps, g, &tape.tokens, &flat(dq)?, true)?
            .expect("dx requested");
        let dk_tok = self
            .to_k
            .backward(ctx, ps, g, &tape.tokens, &flat(dk)?, true)?
            .expect("dx requested");
        let dv_tok = self
            .to_v
            .backward(ctx, ps, g, &tape.tokens, &flat(dv)?, true)?
            .expect("dx requested");
        ew::add_inplace(ctx, &dtok, &dk_tok)?;
        ew::add_inplace(ctx, &dtok, &dv_tok)?;
        let (_, _, h, w) = x.dims4("AttnBlock backward")?;
        let dnormed = layout::nlc_to_nchw(ctx, &dtok.reshape(&[n, t, c])?, h, w)?;
        let dx = self.norm.backward(ctx, ps, g, &x, &tape.stats, &dnormed, false)?;
        ew::add_inplace(ctx, &dx, &dy)?;
        Ok(dx)
    }
}

/// diffusers' `Downsample2D` with a conv: stride 2, padding 1, or with `downsample_padding = 0`
/// a (0, 1, 0, 1) pad then no padding (the original TF model's asymmetric pad).
pub struct Downsample {
    conv: Conv,
}

impl Downsample {
    pub(crate) fn new(params: &mut Params, name: &str, c: usize, padding: usize) -> Self {
        let p = if padding == 0 {
            Conv2dParams::asymmetric(2, [0, 1, 0, 1])
        } else {
            Conv2dParams::new(2, padding)
        };
        Downsample {
            conv: Conv::new(params, &format!("{name}.conv"), c, c, 3, p),
        }
    }
    pub(crate) fn forward(&self, ctx: &Context, ps: &Params, x: &Tensor) -> Result<Tensor> {
        self.conv.forward(ctx, ps, x)
    }
    pub(crate) fn backward(
        &self,
        ctx: &Context,
        ps: &Params,
        g: &mut Grads,
        x: &Tensor,
        dy: &Tensor,
    ) -> Result<Tensor> {
        Ok(self.conv.backward(ctx, ps, g, x, dy, true)?.expect("dx requested"))
    }
}

/// diffusers' `Upsample2D` with a conv: nearest 2× then a 3×3 conv.
pub struct Upsample {
    conv: Conv,
}

impl Upsample {
    pub(crate) fn new(params: &mut Params, name: &str, c: usize) -> Self {
        Upsample {
            conv: Conv::new(params, &format!("{name}.conv"), c, c, 3, Conv2dParams::new(1, 1)),
        }
    }
    /// Returns (y, upsampled input) — the latter is the tape.
    pub(crate) fn forward(&self, ctx: &Context, ps: &Params, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let u = layout::upsample_nearest2x(ctx, x)?;
        Ok((self.conv.forward(ctx, ps, &u)?, u))
    }
    pub(crate) fn backward(
        &self,
        ctx: &Context,
        ps: &Params,
        g: &mut Grads,
        u: &Tensor,
        dy: &Tensor,
    ) -> Result<Tensor> {
        let du = self.conv.backward(ctx, ps, g, u, dy, true)?.expect("dx requested");
        layout::upsample_nearest2x_backward(ctx, &du)
    }
}
