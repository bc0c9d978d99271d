//! The U-Net's encoder: input convolution, timestep (and class) embedding, the down path and the
//! mid block, exactly as in diffusers' `UNet2DModel`. The U-Net adds the up path on top of it;
//! the noise-aware classifier of guided diffusion adds a pooled head instead.
//!
//! Parameter names are diffusers' (`conv_in.*`, `time_embedding.*`, `class_embedding.weight`,
//! `down_blocks.*`, `mid_block.*`), declared in diffusers' order.

use crate::error::Result;
use crate::gpu::Context;
use crate::nn::config::UNetConfig;
use crate::nn::layers::{AttnBlock, AttnTape, Conv, Downsample, Linear, Mode, ResnetBlock, ResnetTape};
use crate::nn::params::{Grads, ParamId, Params};
use crate::ops::conv2d::Conv2dParams;
use crate::ops::{elementwise as ew, embedding};
use crate::tensor::Tensor;

struct DownLevel {
    resnets: Vec<ResnetBlock>,
    attns: Vec<AttnBlock>,
    down: Option<Downsample>,
}

/// conv_in, time embedding, down blocks and mid block of a `UNet2DModel`.
pub(crate) struct Encoder {
    center_input_sample: bool,
    t_channels: usize,
    flip_sin_to_cos: bool,
    freq_shift: f32,
    conv_in: Conv,
    time_linear_1: Linear,
    time_linear_2: Linear,
    pub(crate) class_embedding: Option<ParamId>,
    down: Vec<DownLevel>,
    mid_resnets: [ResnetBlock; 2],
    mid_attn: Option<AttnBlock>,
}

/// What [`Encoder::backward`] needs from [`Encoder::forward`].
pub(crate) struct EncoderTape {
    x_in: Tensor,
    t_proj: Tensor,
    h1: Tensor,
    emb: Tensor,
    /// silu(embedding): the input of every ResNet's time projection.
    pub(crate) temb_act: Tensor,
    labels: Option<Tensor>,
    down: Vec<LevelTape>,
    mid: (ResnetTape, Option<AttnTape>, ResnetTape),
}

struct LevelTape {
    resnets: Vec<ResnetTape>,
    attns: Vec<AttnTape>,
    /// Input of the downsampler.
    down_in: Option<Tensor>,
}

/// The encoder's outputs: the mid block's output and the skip tensors in push order (the
/// output of conv_in, of every down ResNet/attention pair and of every downsampler).
pub(crate) struct EncoderOut {
    pub(crate) h: Tensor,
    pub(crate) skips: Vec<Tensor>,
    pub(crate) tape: EncoderTape,
}

impl Encoder {
    /// Declare the encoder's parameters of `c` into `ps`; `next_stream` numbers the dropout
    /// streams of the ResNet blocks in construction order.
    pub(crate) fn new(c: &UNetConfig, ps: &mut Params, next_stream: &mut impl FnMut() -> u32) -> Self {
        let ch = &c.block_out_channels;
        let n = ch.len();
        let temb = c.time_embed_dim();
        let (groups, eps) = (c.norm_num_groups, c.norm_eps);
        let conv_in = Conv::new(ps, "conv_in", c.in_channels, ch[0], 3, Conv2dParams::new(1, 1));
        let time_linear_1 = Linear::new(ps, "time_embedding.linear_1", ch[0], temb);
        let time_linear_2 = Linear::new(ps, "time_embedding.linear_2", temb, temb);
        let class_embedding = c
            .num_class_embeds
            .map(|k| ps.declare("class_embedding.weight".into(), vec![k, temb]));
        let mut down = Vec::new();
        let mut out_ch = ch[0];
        for (i, ty) in c.down_block_types.iter().enumerate() {
            let in_ch = out_ch;
            out_ch = ch[i];
            let name = format!("down_blocks.{i}");
            let mut resnets = Vec::new();
            let mut attns = Vec::new();
            for j in 0..c.layers_per_block {
                let cin = if j == 0 { in_ch } else { out_ch };
                resnets.push(ResnetBlock::new(
                    ps,
                    &format!("{name}.resnets.{j}"),
                    cin,
                    out_ch,
                    temb,
                    groups,
                    eps,
                    c.dropout,
                    1.0,
                    next_stream(),
                ));
                if ty == "AttnDownBlock2D" {
                    attns.push(AttnBlock::new(
                        ps,
                        &format!("{name}.attentions.{j}"),
                        out_ch,
                        c.attention_head_dim,
                        groups,
                        eps,
                        1.0,
                    ));
                }
            }
            let down_s = (i + 1 < n)
                .then(|| Downsample::new(ps, &format!("{name}.downsamplers.0"), out_ch, c.downsample_padding));
            down.push(DownLevel {
                resnets,
                attns,
                down: down_s,
            });
        }
        let last = ch[n - 1];
        let msf = c.mid_block_scale_factor;
        let mut mid_resnet = |ps: &mut Params, j: usize| {
            ResnetBlock::new(
                ps,
                &format!("mid_block.resnets.{j}"),
                last,
                last,
                temb,
                groups,
                eps,
                c.dropout,
                msf,
                next_stream(),
            )
        };
        let mid_r0 = mid_resnet(ps, 0);
        let mid_attn = c.add_attention.then(|| {
            let ag = c.attn_norm_num_groups.unwrap_or(groups);
            AttnBlock::new(ps, "mid_block.attentions.0", last, c.attention_head_dim, ag, eps, msf)
        });
        let mid_r1 = mid_resnet(ps, 1);
        Encoder {
            center_input_sample: c.center_input_sample,
            t_channels: ch[0],
            flip_sin_to_cos: c.flip_sin_to_cos,
            freq_shift: c.freq_shift,
            conv_in,
            time_linear_1,
            time_linear_2,
            class_embedding,
            down,
            mid_resnets: [mid_r0, mid_r1],
            mid_attn,
        }
    }

    /// Forward pass (inputs already checked by the caller).
    pub(crate) fn forward(
        &self,
        ctx: &Context,
        ps: &Params,
        x: &Tensor,
        t: &Tensor,
        labels: Option<&Tensor>,
        mode: Mode,
    ) -> Result<EncoderOut> {
        let x_in = if self.center_input_sample {
            // 2x − 1: inputs in [0, 1] to [−1, 1].
            let minus_one = ctx.empty(x.shape(), "center_input_sample")?;
            ew::fill(ctx, &minus_one, -1.0)?;
            ew::axpby(ctx, x, &minus_one, 2.0, 1.0)?
        } else {
            x.clone()
        };
        // Time embedding: sinusoidal → linear → silu → linear (+ class embedding).
        let t_proj =
            embedding::timestep_embedding(ctx, t, self.t_channels, self.flip_sin_to_cos, self.freq_shift, 10_000.0)?;
        let h1 = self.time_linear_1.forward(ctx, ps, &t_proj)?;
        let a1 = ew::silu(ctx, &h1)?;
        let mut emb = self.time_linear_2.forward(ctx, ps, &a1)?;
        if let (Some(id), Some(l)) = (self.class_embedding, labels) {
            let ce = embedding::embedding_lookup(ctx, ps.get(id), l)?;
            emb = ew::add(ctx, &emb, &ce)?;
        }
        // Every ResNet applies silu to the embedding first: compute it once.
        let temb_act = ew::silu(ctx, &emb)?;

        let mut h = self.conv_in.forward(ctx, ps, &x_in)?;
        let mut skips = vec![h.clone()];
        let mut down_tapes = Vec::new();
        for level in &self.down {
            let mut lt = LevelTape {
                resnets: Vec::new(),
                attns: Vec::new(),
                down_in: None,
            };
            for (j, r) in level.resnets.iter().enumerate() {
                let (y, rt) = r.forward(ctx, ps, &h, &temb_act, mode)?;
                lt.resnets.push(rt);
                h = y;
                if let Some(a) = level.attns.get(j) {
                    let (y, at) = a.forward(ctx, ps, &h, mode)?;
                    lt.attns.push(at);
                    h = y;
                }
                skips.push(h.clone());
            }
            if let Some(d) = &level.down {
                lt.down_in = Some(h.clone());
                h = d.forward(ctx, ps, &h)?;
                skips.push(h.clone());
            }
            down_tapes.push(lt);
        }

        let (y, m0) = self.mid_resnets[0].forward(ctx, ps, &h, &temb_act, mode)?;
        h = y;
        let ma = match &self.mid_attn {
            Some(a) => {
                let (y, at) = a.forward(ctx, ps, &h, mode)?;
                h = y;
                Some(at)
            }
            None => None,
        };
        let (y, m1) = self.mid_resnets[1].forward(ctx, ps, &h, &temb_act, mode)?;
        let tape = EncoderTape {
            x_in,
            t_proj,
            h1,
            emb,
            temb_act,
            labels: labels.cloned(),
            down: down_tapes,
            mid: (m0, ma, m1),
        };
        Ok(EncoderOut { h: y, skips, tape })
    }

    /// Backward of [`Encoder::forward`]: `dh` is the gradient of the mid block's output,
    /// `dskips` of each skip tensor (`None` where nothing used it) and `dtemb` what the layers
    /// above accumulated into the gradient of silu(embedding). Accumulates (`+=`) every encoder
    /// parameter's gradient into `g`; returns the gradient of the input `x` when `need_dx`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward(
        &self,
        ctx: &Context,
        ps: &Params,
        g: &mut Grads,
        tape: EncoderTape,
        mut dh: Tensor,
        mut dskips: Vec<Option<Tensor>>,
        mut dtemb: Option<Tensor>,
        need_dx: bool,
    ) -> Result<Option<Tensor>> {
        let EncoderTape {
            x_in,
            t_proj,
            h1,
            emb,
            temb_act,
            labels,
            down,
            mid,
        } = tape;

        let (m0, ma, m1) = mid;
        dh = self.mid_resnets[1].backward(ctx, ps, g, m1, &temb_act, &dh, &mut dtemb)?;
        if let (Some(a), Some(at)) = (&self.mid_attn, ma) {
            dh = a.backward(ctx, ps, g, at, &dh)?;
        }
        dh = self.mid_resnets[0].backward(ctx, ps, g, m0, &temb_act, &dh, &mut dtemb)?;

        // Down path, in reverse: each pushed skip adds its gradient where the main path passes it.
        let mut skip_pos = dskips.len();
        for (level, lt) in self.down.iter().zip(down).rev() {
            let LevelTape {
                resnets,
                attns,
                down_in,
            } = lt;
            if let (Some(d), Some(di)) = (&level.down, down_in) {
                skip_pos -= 1;
                if let Some(s) = dskips[skip_pos].take() {
                    ew::add_inplace(ctx, &dh, &s)?;
                }
                dh = d.backward(ctx, ps, g, &di, &dh)?;
            }
            let mut attns: Vec<Option<AttnTape>> = attns.into_iter().map(Some).collect();
            for (j, rt) in resnets.into_iter().enumerate().rev() {
                skip_pos -= 1;
                if let Some(s) = dskips[skip_pos].take() {
                    ew::add_inplace(ctx, &dh, &s)?;
                }
                if let Some(a) = level.attns.get(j) {
                    let at = attns[j].take().expect("attention tape");
                    dh = a.backward(ctx, ps, g, at, &dh)?;
                }
                dh = level.resnets[j].backward(ctx, ps, g, rt, &temb_act, &dh, &mut dtemb)?;
            }
        }
        debug_assert_eq!(skip_pos, 1);
        if let Some(s) = dskips[0].take() {
            ew::add_inplace(ctx, &dh, &s)?;
        }
        let dx_in = self.conv_in.backward(ctx, ps, g, &x_in, &dh, need_dx)?;
        // center_input_sample: x_in = 2x − 1, so dL/dx = 2 dL/dx_in.
        let dx = match dx_in {
            Some(d) if self.center_input_sample => Some(ew::scale(ctx, &d, 2.0)?),
            d => d,
        };

        // Time embedding.
        if let Some(dt) = dtemb {
            let demb = ew::silu_backward(ctx, &emb, &dt)?;
            if let (Some(id), Some(l)) = (self.class_embedding, &labels) {
                let k = ps.shape(id)[0];
                g.accumulate(ctx, id, embedding::embedding_backward(ctx, l, &demb, k)?)?;
            }
            let da1 = self
                .time_linear_2
                .backward(ctx, ps, g, &ew::silu(ctx, &h1)?, &demb, true)?
                .expect("dx requested");
            let dh1 = ew::silu_backward(ctx, &h1, &da1)?;
            self.time_linear_1.backward(ctx, ps, g, &t_proj, &dh1, false)?;
        }
        Ok(dx)
    }
}
