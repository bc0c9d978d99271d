//! The DDPM U-Net, laid out exactly like diffusers' `UNet2DModel`: same modules, same parameter
//! names, same forward. Forward records a tape; backward is written by hand, block by block.

use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::nn::config::UNetConfig;
use crate::nn::layers::{
    AttnBlock, AttnTape, Conv, Downsample, GroupNorm, Linear, Mode, ResnetBlock, ResnetTape, Upsample,
};
use crate::nn::params::{Grads, ParamId, Params};
use crate::ops::conv2d::Conv2dParams;
use crate::ops::{elementwise as ew, embedding, layout};
use crate::tensor::Tensor;

struct DownLevel {
    resnets: Vec<ResnetBlock>,
    attns: Vec<AttnBlock>,
    down: Option<Downsample>,
}

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
    conv_in: Conv,
    time_linear_1: Linear,
    time_linear_2: Linear,
    class_embedding: Option<ParamId>,
    down: Vec<DownLevel>,
    mid_resnets: [ResnetBlock; 2],
    mid_attn: Option<AttnBlock>,
    up: Vec<UpLevel>,
    norm_out: GroupNorm,
    conv_out: Conv,
}

/// Everything the backward pass needs from one forward pass.
pub struct UNetTape {
    x_in: Tensor,
    t_proj: Tensor,
    h1: Tensor,
    emb: Tensor,
    temb_act: Tensor,
    labels: Option<Tensor>,
    conv_in_out: Tensor,
    down: Vec<LevelTape>,
    mid: (ResnetTape, Option<AttnTape>, ResnetTape),
    up: Vec<UpLevelTape>,
    /// Channels of each skip tensor, in push order.
    skip_channels: Vec<usize>,
    out_pre: Tensor,
    out_stats: Tensor,
    out_act: Tensor,
}

struct LevelTape {
    resnets: Vec<ResnetTape>,
    attns: Vec<AttnTape>,
    /// Input of the downsampler.
    down_in: Option<Tensor>,
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
        let same = Conv2dParams::new(1, 1);
        let conv_in = Conv::new(&mut ps, "conv_in", c.in_channels, ch[0], 3, same);
        let time_linear_1 = Linear::new(&mut ps, "time_embedding.linear_1", ch[0], temb);
        let time_linear_2 = Linear::new(&mut ps, "time_embedding.linear_2", temb, temb);
        let class_embedding = c
            .num_class_embeds
            .map(|k| ps.declare("class_embedding.weight".into(), vec![k, temb]));
        // Dropout streams: one per ResNet block, in construction order.
        let mut stream = 0u32;
        let mut next_stream = || {
            stream += 1;
            stream
        };
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
                    &mut ps,
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
            let down_s = (i + 1 < n)
                .then(|| Downsample::new(&mut ps, &format!("{name}.downsamplers.0"), out_ch, c.downsample_padding));
            down.push(DownLevel {
                resnets,
                attns,
                down: down_s,
            });
        }
        let last = ch[n - 1];
        let msf = c.mid_block_scale_factor;
        let mid_r0 = ResnetBlock::new(
            &mut ps,
            "mid_block.resnets.0",
            last,
            last,
            temb,
            groups,
            eps,
            c.dropout,
            msf,
            next_stream(),
        );
        let mid_attn = c.add_attention.then(|| {
            let ag = c.attn_norm_num_groups.unwrap_or(groups);
            AttnBlock::new(
                &mut ps,
                "mid_block.attentions.0",
                last,
                c.attention_head_dim,
                ag,
                eps,
                msf,
            )
        });
        let mid_r1 = ResnetBlock::new(
            &mut ps,
            "mid_block.resnets.1",
            last,
            last,
            temb,
            groups,
            eps,
            c.dropout,
            msf,
            next_stream(),
        );
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
        let conv_out = Conv::new(&mut ps, "conv_out", ch[0], c.out_channels, 3, same);
        Ok(UNet {
            config,
            params: ps,
            conv_in,
            time_linear_1,
            time_linear_2,
            class_embedding,
            down,
            mid_resnets: [mid_r0, mid_r1],
            mid_attn,
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
        match (self.class_embedding, labels) {
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
        let c = &self.config;
        let ps = &self.params;
        let x_in = if c.center_input_sample {
            // 2x − 1: inputs in [0, 1] to [−1, 1].
            let minus_one = ctx.empty(x.shape(), "center_input_sample")?;
            ew::fill(ctx, &minus_one, -1.0)?;
            ew::axpby(ctx, x, &minus_one, 2.0, 1.0)?
        } else {
            x.clone()
        };
        // Time embedding: sinusoidal → linear → silu → linear (+ class embedding).
        let t_proj = embedding::timestep_embedding(
            ctx,
            t,
            c.block_out_channels[0],
            c.flip_sin_to_cos,
            c.freq_shift,
            10_000.0,
        )?;
        let h1 = self.time_linear_1.forward(ctx, ps, &t_proj)?;
        let a1 = ew::silu(ctx, &h1)?;
        let mut emb = self.time_linear_2.forward(ctx, ps, &a1)?;
        if let (Some(id), Some(l)) = (self.class_embedding, labels) {
            let ce = embedding::embedding_lookup(ctx, ps.get(id), l)?;
            emb = ew::add(ctx, &emb, &ce)?;
        }
        // Every ResNet applies silu to the embedding first: compute it once.
        let temb_act = ew::silu(ctx, &emb)?;

        let conv_in_out = self.conv_in.forward(ctx, ps, &x_in)?;
        let mut skips = vec![conv_in_out.clone()];
        let mut h = conv_in_out.clone();
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
                    let (y, at) = a.forward(ctx, ps, &h)?;
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
        let skip_channels: Vec<usize> = skips.iter().map(|s| s.shape()[1]).collect();

        let (y, m0) = self.mid_resnets[0].forward(ctx, ps, &h, &temb_act, mode)?;
        h = y;
        let ma = match &self.mid_attn {
            Some(a) => {
                let (y, at) = a.forward(ctx, ps, &h)?;
                h = y;
                Some(at)
            }
            None => None,
        };
        let (y, m1) = self.mid_resnets[1].forward(ctx, ps, &h, &temb_act, mode)?;
        h = y;

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
                    let (y, at) = a.forward(ctx, ps, &h)?;
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
            x_in,
            t_proj,
            h1,
            emb,
            temb_act,
            labels: labels.cloned(),
            conv_in_out,
            down: down_tapes,
            mid: (m0, ma, m1),
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
        let ps = &self.params;
        let g = grads;
        let UNetTape {
            x_in,
            t_proj,
            h1,
            emb,
            temb_act,
            labels,
            conv_in_out,
            down,
            mid,
            up,
            skip_channels,
            out_pre,
            out_stats,
            out_act,
        } = tape;
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

        // Mid block.
        let (m0, ma, m1) = mid;
        dh = self.mid_resnets[1].backward(ctx, ps, g, m1, &temb_act, &dh, &mut dtemb)?;
        if let (Some(a), Some(at)) = (&self.mid_attn, ma) {
            dh = a.backward(ctx, ps, g, at, &dh)?;
        }
        dh = self.mid_resnets[0].backward(ctx, ps, g, m0, &temb_act, &dh, &mut dtemb)?;

        // Down path, in reverse: each pushed skip adds its gradient where the main path passes it.
        let mut skip_pos = skip_channels.len();
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
        self.conv_in.backward(ctx, ps, g, &x_in, &dh, false)?;
        drop(conv_in_out);

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
        Ok(())
    }
}
