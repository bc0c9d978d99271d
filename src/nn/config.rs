//! `UNet2DModel` configuration, read from and written to diffusers' `config.json`.
//!
//! Every field that a DDPM checkpoint uses is honoured; a value the engine does not support is
//! refused with an error naming the field and the supported values, never silently ignored.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// A diffusers `UNet2DModel` config (the subset of fields that describe DDPM U-Nets).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    /// Height and width of the training images (informational; any multiple of
    /// 2^(levels-1) works).
    pub sample_size: usize,
    /// Channels of the input image.
    pub in_channels: usize,
    /// Channels of the output (ε prediction: same as `in_channels`).
    pub out_channels: usize,
    /// Map inputs from [0, 1] to [-1, 1] inside the model (`2x - 1`).
    pub center_input_sample: bool,
    /// Sinusoidal embedding order: `cos, sin` when true.
    pub flip_sin_to_cos: bool,
    /// `downscale_freq_shift` of the sinusoidal embedding.
    pub freq_shift: f32,
    /// `DownBlock2D` or `AttnDownBlock2D` per level.
    pub down_block_types: Vec<String>,
    /// `UpBlock2D` or `AttnUpBlock2D` per level (deepest first).
    pub up_block_types: Vec<String>,
    /// Channels per level.
    pub block_out_channels: Vec<usize>,
    /// ResNet blocks per down level (up levels have one more).
    pub layers_per_block: usize,
    /// Output scale of the mid block's ResNets and attention.
    pub mid_block_scale_factor: f32,
    /// 1: symmetric padding in the stride-2 downsampling conv; 0: pad (0,1,0,1) first.
    pub downsample_padding: usize,
    /// Dropout probability inside ResNet blocks (training only).
    pub dropout: f32,
    /// Channels per attention head; `None` means one head over all channels.
    pub attention_head_dim: Option<usize>,
    /// Groups of every GroupNorm.
    pub norm_num_groups: usize,
    /// Groups of the mid block attention's GroupNorm (`None`: `norm_num_groups`).
    pub attn_norm_num_groups: Option<usize>,
    /// GroupNorm epsilon.
    pub norm_eps: f32,
    /// Whether the mid block has an attention layer.
    pub add_attention: bool,
    /// Number of classes for class conditioning (`nn.Embedding` added to the time embedding).
    pub num_class_embeds: Option<usize>,
}

fn field<'a>(obj: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).filter(|v| !v.is_null())
}

fn want_str(obj: &serde_json::Map<String, Value>, name: &str, default: &str, allowed: &[&str]) -> Result<()> {
    let v = match field(obj, name) {
        None => default.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(Error::Config {
                field: name.into(),
                msg: format!("expected a string, got {other}"),
            })
        }
    };
    if !allowed.contains(&v.as_str()) {
        return Err(Error::Config {
            field: name.into(),
            msg: format!("'{v}' is not supported; supported: {}", allowed.join(", ")),
        });
    }
    Ok(())
}

fn get_usize(obj: &serde_json::Map<String, Value>, name: &str, default: Option<usize>) -> Result<usize> {
    match field(obj, name) {
        None => default.ok_or_else(|| Error::Config {
            field: name.into(),
            msg: "missing".into(),
        }),
        Some(v) => v.as_u64().map(|x| x as usize).ok_or_else(|| Error::Config {
            field: name.into(),
            msg: format!("expected a non-negative integer, got {v}"),
        }),
    }
}

fn get_opt_usize(obj: &serde_json::Map<String, Value>, name: &str) -> Result<Option<usize>> {
    match field(obj, name) {
        None => Ok(None),
        Some(_) => get_usize(obj, name, None).map(Some),
    }
}

fn get_f32(obj: &serde_json::Map<String, Value>, name: &str, default: f32) -> Result<f32> {
    match field(obj, name) {
        None => Ok(default),
        Some(v) => v.as_f64().map(|x| x as f32).ok_or_else(|| Error::Config {
            field: name.into(),
            msg: format!("expected a number, got {v}"),
        }),
    }
}

fn get_bool(obj: &serde_json::Map<String, Value>, name: &str, default: bool) -> Result<bool> {
    match field(obj, name) {
        None => Ok(default),
        Some(v) => v.as_bool().ok_or_else(|| Error::Config {
            field: name.into(),
            msg: format!("expected true or false, got {v}"),
        }),
    }
}

fn get_strings(obj: &serde_json::Map<String, Value>, name: &str) -> Result<Vec<String>> {
    let v = field(obj, name).ok_or_else(|| Error::Config {
        field: name.into(),
        msg: "missing".into(),
    })?;
    let arr = v.as_array().ok_or_else(|| Error::Config {
        field: name.into(),
        msg: "expected a list".into(),
    })?;
    arr.iter()
        .map(|x| {
            x.as_str().map(str::to_string).ok_or_else(|| Error::Config {
                field: name.into(),
                msg: format!("expected strings, got {x}"),
            })
        })
        .collect()
}

impl UNetConfig {
    /// Parse diffusers' `config.json` text, applying diffusers' defaults for missing fields and
    /// refusing unsupported values.
    pub fn from_json(text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text).map_err(|e| Error::Config {
            field: "config.json".into(),
            msg: format!("not valid JSON: {e}"),
        })?;
        let obj = v.as_object().ok_or_else(|| Error::Config {
            field: "config.json".into(),
            msg: "expected a JSON object".into(),
        })?;
        if let Some(class) = obj.get("_class_name").and_then(Value::as_str) {
            if class != "UNet2DModel" {
                return Err(Error::Config {
                    field: "_class_name".into(),
                    msg: format!("'{class}' is not supported; only UNet2DModel"),
                });
            }
        }
        want_str(obj, "time_embedding_type", "positional", &["positional"])?;
        want_str(obj, "act_fn", "silu", &["silu", "swish"])?;
        want_str(obj, "resnet_time_scale_shift", "default", &["default"])?;
        want_str(obj, "downsample_type", "conv", &["conv"])?;
        want_str(obj, "upsample_type", "conv", &["conv"])?;
        want_str(obj, "mid_block_type", "UNetMidBlock2D", &["UNetMidBlock2D"])?;
        if let Some(v) = field(obj, "class_embed_type") {
            return Err(Error::Config {
                field: "class_embed_type".into(),
                msg: format!("{v} is not supported; only null (nn.Embedding via num_class_embeds)"),
            });
        }
        if get_bool(obj, "attention_legacy_order", false)? {
            return Err(Error::Config {
                field: "attention_legacy_order".into(),
                msg: "true is not supported; only false".into(),
            });
        }
        let sample_size = match field(obj, "sample_size") {
            None => 32,
            Some(Value::Array(a)) => {
                let s: Vec<u64> = a.iter().filter_map(Value::as_u64).collect();
                if s.len() != 2 || s[0] != s[1] {
                    return Err(Error::Config {
                        field: "sample_size".into(),
                        msg: format!("expected an integer or a square [h, w], got {a:?}"),
                    });
                }
                s[0] as usize
            }
            Some(_) => get_usize(obj, "sample_size", None)?,
        };
        let cfg = UNetConfig {
            sample_size,
            in_channels: get_usize(obj, "in_channels", Some(3))?,
            out_channels: get_usize(obj, "out_channels", Some(3))?,
            center_input_sample: get_bool(obj, "center_input_sample", false)?,
            flip_sin_to_cos: get_bool(obj, "flip_sin_to_cos", true)?,
            freq_shift: get_f32(obj, "freq_shift", 0.0)?,
            down_block_types: match field(obj, "down_block_types") {
                None => ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"]
                    .map(String::from)
                    .to_vec(),
                Some(_) => get_strings(obj, "down_block_types")?,
            },
            up_block_types: match field(obj, "up_block_types") {
                None => ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"]
                    .map(String::from)
                    .to_vec(),
                Some(_) => get_strings(obj, "up_block_types")?,
            },
            block_out_channels: match field(obj, "block_out_channels") {
                None => vec![224, 448, 672, 896],
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| {
                        x.as_u64().map(|c| c as usize).ok_or_else(|| Error::Config {
                            field: "block_out_channels".into(),
                            msg: format!("expected integers, got {x}"),
                        })
                    })
                    .collect::<Result<_>>()?,
                Some(other) => {
                    return Err(Error::Config {
                        field: "block_out_channels".into(),
                        msg: format!("expected a list of integers, got {other}"),
                    })
                }
            },
            layers_per_block: get_usize(obj, "layers_per_block", Some(2))?,
            mid_block_scale_factor: get_f32(obj, "mid_block_scale_factor", 1.0)?,
            downsample_padding: get_usize(obj, "downsample_padding", Some(1))?,
            dropout: get_f32(obj, "dropout", 0.0)?,
            // diffusers' default is 8 when the key is absent; an explicit null means one head.
            attention_head_dim: match obj.get("attention_head_dim") {
                None => Some(8),
                Some(Value::Null) => None,
                Some(_) => Some(get_usize(obj, "attention_head_dim", None)?),
            },
            norm_num_groups: get_usize(obj, "norm_num_groups", Some(32))?,
            attn_norm_num_groups: get_opt_usize(obj, "attn_norm_num_groups")?,
            norm_eps: get_f32(obj, "norm_eps", 1e-5)?,
            add_attention: get_bool(obj, "add_attention", true)?,
            num_class_embeds: get_opt_usize(obj, "num_class_embeds")?,
        };
        if let Some(d) = get_opt_usize(obj, "time_embedding_dim")? {
            if d != cfg.time_embed_dim() {
                return Err(Error::Config {
                    field: "time_embedding_dim".into(),
                    msg: format!(
                        "{d} is not supported; only null (4 × block_out_channels[0] = {})",
                        cfg.time_embed_dim()
                    ),
                });
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check internal consistency (block counts, divisibility, supported block types).
    pub fn validate(&self) -> Result<()> {
        let cfgerr = |field: &str, msg: String| {
            Err(Error::Config {
                field: field.into(),
                msg,
            })
        };
        let n = self.block_out_channels.len();
        if n == 0 {
            return cfgerr("block_out_channels", "must not be empty".into());
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return cfgerr(
                "down_block_types",
                format!(
                    "down_block_types ({}), up_block_types ({}) and block_out_channels ({n}) must have the same length",
                    self.down_block_types.len(),
                    self.up_block_types.len()
                ),
            );
        }
        for t in &self.down_block_types {
            if t != "DownBlock2D" && t != "AttnDownBlock2D" {
                return cfgerr(
                    "down_block_types",
                    format!("'{t}' is not supported; supported: DownBlock2D, AttnDownBlock2D"),
                );
            }
        }
        for t in &self.up_block_types {
            if t != "UpBlock2D" && t != "AttnUpBlock2D" {
                return cfgerr(
                    "up_block_types",
                    format!("'{t}' is not supported; supported: UpBlock2D, AttnUpBlock2D"),
                );
            }
        }
        if self.layers_per_block == 0 {
            return cfgerr("layers_per_block", "must be at least 1".into());
        }
        if self.downsample_padding > 1 {
            return cfgerr(
                "downsample_padding",
                format!("{} is not supported; supported: 0, 1", self.downsample_padding),
            );
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return cfgerr("dropout", format!("{} must be in [0, 1)", self.dropout));
        }
        let g = self.norm_num_groups;
        for &c in &self.block_out_channels {
            if g == 0 || c % g != 0 {
                return cfgerr(
                    "norm_num_groups",
                    format!("{g} groups do not divide {c} channels (block_out_channels)"),
                );
            }
            if let Some(d) = self.attention_head_dim {
                if d == 0 || c % d != 0 {
                    return cfgerr("attention_head_dim", format!("{d} does not divide {c} channels"));
                }
            }
        }
        if let Some(ag) = self.attn_norm_num_groups {
            let c = self.block_out_channels[n - 1];
            if ag == 0 || !c.is_multiple_of(ag) {
                return cfgerr(
                    "attn_norm_num_groups",
                    format!("{ag} groups do not divide {c} channels"),
                );
            }
        }
        if !self.block_out_channels[0].is_multiple_of(2) {
            return cfgerr(
                "block_out_channels",
                "the first entry must be even (sinusoidal embedding size)".into(),
            );
        }
        Ok(())
    }

    /// Serialise as diffusers' `config.json` (with `_class_name` so diffusers can load it).
    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(self).expect("config serialises");
        let obj = v.as_object_mut().expect("object");
        obj.insert("_class_name".into(), "UNet2DModel".into());
        obj.insert("act_fn".into(), "silu".into());
        obj.insert("time_embedding_type".into(), "positional".into());
        obj.insert("resnet_time_scale_shift".into(), "default".into());
        obj.insert("downsample_type".into(), "conv".into());
        obj.insert("upsample_type".into(), "conv".into());
        obj.insert("class_embed_type".into(), Value::Null);
        serde_json::to_string_pretty(&v).expect("config serialises")
    }

    /// Dimension of the time embedding (`4 × block_out_channels[0]`).
    pub fn time_embed_dim(&self) -> usize {
        self.block_out_channels[0] * 4
    }

    /// The paper's 35.7M-parameter CIFAR-10 model (Ho et al. 2020, appendix B).
    pub fn ddpm_cifar10() -> Self {
        UNetConfig {
            sample_size: 32,
            in_channels: 3,
            out_channels: 3,
            center_input_sample: false,
            flip_sin_to_cos: false,
            freq_shift: 1.0,
            down_block_types: ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"]
                .map(String::from)
                .to_vec(),
            up_block_types: ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]
                .map(String::from)
                .to_vec(),
            block_out_channels: vec![128, 256, 256, 256],
            layers_per_block: 2,
            mid_block_scale_factor: 1.0,
            downsample_padding: 0,
            dropout: 0.1,
            attention_head_dim: None,
            norm_num_groups: 32,
            attn_norm_num_groups: None,
            norm_eps: 1e-6,
            add_attention: true,
            num_class_embeds: None,
        }
    }

    /// A 1.1M-parameter model that trains in minutes on a CPU adapter: 32×32 inputs,
    /// block_out_channels 32,64,64, one ResNet per level, attention at 8×8 and in the mid block.
    pub fn small(in_channels: usize, num_class_embeds: Option<usize>) -> Self {
        UNetConfig {
            sample_size: 32,
            in_channels,
            out_channels: in_channels,
            center_input_sample: false,
            flip_sin_to_cos: false,
            freq_shift: 1.0,
            down_block_types: ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"]
                .map(String::from)
                .to_vec(),
            up_block_types: ["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"].map(String::from).to_vec(),
            block_out_channels: vec![32, 64, 64],
            layers_per_block: 1,
            mid_block_scale_factor: 1.0,
            downsample_padding: 0,
            dropout: 0.1,
            attention_head_dim: None,
            norm_num_groups: 8,
            attn_norm_num_groups: None,
            norm_eps: 1e-6,
            add_attention: true,
            num_class_embeds,
        }
    }

    /// A preset by name: `ddpm-cifar10` or `small`.
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "ddpm-cifar10" => Ok(Self::ddpm_cifar10()),
            "small" => Ok(Self::small(1, None)),
            other => Err(Error::arg(
                "--preset",
                format!("unknown preset '{other}'; expected ddpm-cifar10 or small"),
            )),
        }
    }
}
