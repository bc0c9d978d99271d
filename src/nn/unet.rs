//! The DDPM U-Net, laid out exactly like diffusers' `UNet2DModel`: same modules, same parameter
//! names, same forward. Forward records a tape; backward is written by hand, block by block.

use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::nn::config::UNetConfig;
use crate::nn::encoder::{Encoder, EncoderOut, EncoderTape};
use crate::nn::layers::{AttnBlock, AttnTape, Conv, GroupNorm, Mode, ResnetBlock, ResnetTape, Upsample};
use crate::nn::params::{Grads, Params};
use crate::ops::conv2d::Conv2dParams;
use crate::ops::{elementwise as ew, layout};
use crate::tensor::Tensor;

struct UpLevel {
    resnets: Vec<ResnetBlock>,
    attns: Vec<AttnBlock>,
    up: Option<Upsample>,
}

/// The network ε_θ(x_t, t[, y]) with its parameters.
pub struct UNet {
    config: UNetConfig,
    /// Parameters, named as in diffusers' state dict.
    pub params: Params,
    encoder: Encoder,
    up: Vec<UpLevel>,
    norm_out: GroupNorm,
    conv_out: Conv,
}

/// Everything the backward pass needs from one forward pass.
pub struct UNetTape {
    encoder: EncoderTape,
    up: Vec<UpLevelTape>,
    /// Channels of each skip tensor, in push order.
    skip_channels: Vec<usize>,
    out_pre: Tensor,
    out_stats: Tensor,
    out_act: Tensor,
}

struct UpLevelTape {
    resnets: Vec<ResnetTape>,
    attns: Vec<AttnTape>,
    /// Channels of the main path entering each resnet (before the concat).
    main_channels: Vec<usize>,
    /// The upsampled tensor (input of the upsampler's conv).
    up_u: Option<Tensor>,
}

impl UNet {
    /// Declare every module and parameter of `config` (no weights yet: load or initialise).
    pub fn new(config: UNetConfig) -> Result<Self> {
        config.validate()?;
        let c = &config;
        let mut ps = Params::default();
        let ch = &c.block_out_channels;
        let n = ch.len();
        let temb = c.time_embed_dim();
        let groups = c.norm_num_groups;
        let eps = c.norm_eps;
        // Dropout streams: one per ResNet block, in construction order.
        let mut stream = 0u32;
        let mut next_stream = || {
            stream += 1;
            stream
        };
        let encoder = Encoder::new(c, &mut ps, &mut next_stream);
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up = Vec::new();
        let mut out_ch = rev[0];
        for (i, ty) in c.up_block_types.iter().enumerate() {
            let prev_out = out_ch;
            out_ch = rev[i];
            let in_ch = rev[(i + 1).min(n - 1)];
            let name = format!("up_blocks.{i}");
            let layers = c.layers_per_block + 1;
            let mut resnets = Vec::new();
            let mut attns = Vec::new();
            for j in 0..layers {
                let skip = if j == layers - 1 { in_ch } else { out_ch };
                let rin = if j == 0 { prev_out } else { out_ch };
                resnets.push(ResnetBlock::new(
                    &mut ps,
                    &format!("{name}.resnets.{j}"),
                    rin + skip,
                    out_ch,
                    temb,
                    groups,
                    eps,
                    c.dropout,
                    1.0,
                    next_stream(),
                ));
                if ty == "AttnUpBlock2D" {
                    attns.push(AttnBlock::new(
                        &mut ps,
                        &format!("{name}.attentions.{j}"),
                        out_ch,
                        c.attention_head_dim,
                        groups,
                        eps,
                        1.0,
                    ));
                }
            }
            let up_s = (i + 1 < n).then(|| Upsample::new(&mut ps, &format!("{name}.upsamplers.0"), out_ch));
            up.push(UpLevel {
                resnets,
                attns,
                up: up_s,
            });
        }
        let norm_out = GroupNorm::new(&mut ps, "conv_norm_out", ch[0], groups, eps);
        let conv_out = Conv::new(&mut ps, "conv_out", ch[0], c.out_channels, 3, Conv2dParams::new(1, 1));
        Ok(UNet {
            config,
            params: ps,
            encoder,
            up,
            norm_out,
            conv_out,
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// Check the inputs of a forward pass; returns (batch, height, width).
    fn check_inputs(&self, x: &Tensor, t: &Tensor, labels: Option<&Tensor>) -> Result<(usize, usize, usize)> {
        let (b, c, h, w) = x.dims4("UNet sample")?;
        if c != self.config.in_channels {
            return Err(Error::shape(
                "UNet",
                format!("sample has {c} channels, the model expects {}", self.config.in_channels),
            ));
        }
        let f = 1usize << (self.config.block_out_channels.len() - 1);
        if h % f != 0 || w % f != 0 {
            return Err(Error::shape(
                "UNet",
                format!("sample is {h}×{w}; height and width must be multiples of {f}"),
            ));
        }
        t.expect_shape("UNet", "timestep", &[b])?;
        match (self.encoder.class_embedding, labels) {
            (Some(_), Some(l)) => l.expect_shape("UNet", "class_labels", &[b])?,
            (Some(_), None) => {
                return Err(Error::arg(
                    "class_labels",
                    "this model is class-conditional (num_class_embeds is set): pass labels",
                ))
            }
            (None, Some(_)) => {
                return Err(Error::arg(
                    "class_labels",
                    "this model has no class embedding (num_class_embeds is null)",
                ))
            }
            (None, None) => {}
        }
        Ok((b, h, w))
    }

    /// ε_θ(x, t[, labels]) without recording a tape.
    pub fn forward(&self, ctx: &Context, x: &Tensor, t: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        Ok(self.forward_tape(ctx, x, t, labels, Mode::EVAL)?.0)
    }

    /// Forward pass that also returns the tape for [`UNet::backward`].
    pub fn forward_tape(
        &self,
        ctx: &Context,
        x: &Tensor,
        t: &Tensor,
        labels: Option<&Tensor>,
        mode: Mode,
    ) -> Result<(Tensor, UNetTape)> {
        self.check_inputs(x, t, labels)?;
        let ps = &self.params;
        let EncoderOut {
            mut h,
            mut skips,
            tape: enc,
        } = self.encoder.forward(ctx, ps, x, t, labels, mode)?;
        let skip_channels: Vec<usize> = skips.iter().map(|s| s.shape()[1]).collect();
        let temb_act = enc.temb_act.clone();

        let mut up_tapes = Vec::new();
        for level in &self.up {
            let mut ut = UpLevelTape {
                resnets: Vec::new(),
                attns: Vec::new(),
                main_channels: Vec::new(),
                up_u: None,
            };
            for (j, r) in level.resnets.iter().enumerate() {
                let skip = skips
                    .pop()
                    .ok_or_else(|| Error::Gpu("U-Net skip stack underflow (engine bug)".into()))?;
                ut.main_channels.push(h.shape()[1]);
                let cat = layout::concat_channels(ctx, &h, &skip)?;
                let (y, rt) = r.forward(ctx, ps, &cat, &temb_act, mode)?;
                ut.resnets.push(rt);
                h = y;
                if let Some(a) = level.attns.get(j) {
                    let (y, at) = a.forward(ctx, ps, &h, mode)?;
                    ut.attns.push(at);
                    h = y;
                }
            }
            if let Some(u) = &level.up {
                let (y, uu) = u.forward(ctx, ps, &h)?;
                ut.up_u = Some(uu);
                h = y;
            }
            up_tapes.push(ut);
        }
        let (out_act, out_stats) = self.norm_out.forward(ctx, ps, &h, true)?;
        let out = self.conv_out.forward(ctx, ps, &out_act)?;
        let tape = UNetTape {
            encoder: enc,
            up: up_tapes,
            skip_channels,
            out_pre: h,
            out_stats,
            out_act,
        };
        Ok((out, tape))
    }

    /// Backward of [`UNet::forward_tape`] for the output gradient `dout`: accumulates (`+=`)
    /// the gradient of every parameter into `grads`.
    pub fn backward(&self, ctx: &Context, tape: UNetTape, dout: &Tensor, grads: &mut Grads) -> Result<()> {
        self.backward_impl(ctx, tape, dout, grads, false).map(drop)
    }

    /// [`UNet::backward`] that also returns the gradient of the input sample: the vector–Jacobian
    /// product `doutᵀ ∂ε_θ/∂x` (including the factor 2 of `center_input_sample`).
    pub fn backward_input(&self, ctx: &Context, tape: UNetTape, dout: &Tensor, grads: &mut Grads) -> Result<Tensor> {
        Ok(self
            .backward_impl(ctx, tape, dout, grads, true)?
            .expect("input gradient requested"))
    }

    fn backward_impl(
        &self,
        ctx: &Context,
        tape: UNetTape,
        dout: &Tensor,
        grads: &mut Grads,
        need_dx: bool,
    ) -> Result<Option<Tensor>> {
        let ps = &self.params;
        let g = grads;
        let UNetTape {
            encoder,
            up,
            skip_channels,
            out_pre,
            out_stats,
            out_act,
        } = tape;
        let temb_act = encoder.temb_act.clone();
        let mut dtemb: Option<Tensor> = None;
        let mut dskips: Vec<Option<Tensor>> = vec![None; skip_channels.len()];
        let accumulate = |slot: &mut Option<Tensor>, d: Tensor| -> Result<()> {
            match slot {
                Some(acc) => ew::add_inplace(ctx, acc, &d),
                None => {
                    *slot = Some(d);
                    Ok(())
                }
            }
        };

        let dact = self
            .conv_out
            .backward(ctx, ps, g, &out_act, dout, true)?
            .expect("dx requested");
        let mut dh = self.norm_out.backward(ctx, ps, g, &out_pre, &out_stats, &dact, true)?;

        // Up path, in reverse. Skip indices are consumed from the top of the stack.
        let mut skip_top = skip_channels.len();
        let mut skip_index_of_up: Vec<Vec<usize>> = Vec::new();
        for level in &self.up {
            let mut idx = Vec::new();
            for _ in &level.resnets {
                skip_top -= 1;
                idx.push(skip_top);
            }
            skip_index_of_up.push(idx);
        }
        for ((level, ut), idxs) in self.up.iter().zip(up).zip(skip_index_of_up).rev() {
            let UpLevelTape {
                resnets,
                attns,
                main_channels,
                up_u,
            } = ut;
            if let (Some(u), Some(uu)) = (&level.up, up_u) {
                dh = u.backward(ctx, ps, g, &uu, &dh)?;
            }
            let mut attns: Vec<Option<AttnTape>> = attns.into_iter().map(Some).collect();
            for (j, rt) in resnets.into_iter().enumerate().rev() {
                if let Some(a) = level.attns.get(j) {
                    let at = attns[j].take().expect("attention tape");
                    dh = a.backward(ctx, ps, g, at, &dh)?;
                }
                let dcat = level.resnets[j].backward(ctx, ps, g, rt, &temb_act, &dh, &mut dtemb)?;
                let (dmain, dskip) = layout::split_channels(ctx, &dcat, main_channels[j])?;
                accumulate(&mut dskips[idxs[j]], dskip)?;
                dh = dmain;
            }
        }

        self.encoder.backward(ctx, ps, g, encoder, dh, dskips, dtemb, need_dx)
    }
}
