//! Checkpoints: diffusers-layout model folders (config.json + diffusion_pytorch_model.safetensors)
//! and safetensors tensor files, written atomically (temp file, fsync, rename).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::nn::{Params, UNet, UNetConfig};

/// File name of the weights inside a diffusers model folder.
pub const WEIGHTS_FILE: &str = "diffusion_pytorch_model.safetensors";
/// File name of the config inside a diffusers model folder.
pub const CONFIG_FILE: &str = "config.json";

/// Write `bytes` to `path` atomically: a temp file in the same folder, fsync, rename, fsync the
/// folder. A crash leaves either the old file or the new one, never a torn one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e: std::io::Error| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Tensors read from a safetensors file, converted to f32 (f16/bf16/f64 are accepted).
pub struct TensorFile {
    path: PathBuf,
    tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl TensorFile {
    /// Read and validate a safetensors file. A truncated or corrupt file is refused with a
    /// message naming it.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(path, &bytes)
    }

    /// Parse safetensors bytes (`path` is only used in messages).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| Error::Checkpoint {
            path: path.into(),
            msg: format!(
                "not a valid safetensors file ({e}); it may be truncated or corrupt: re-download or re-save it"
            ),
        })?;
        let mut tensors = BTreeMap::new();
        for name in st.names() {
            let view = st.tensor(name).map_err(|e| Error::Checkpoint {
                path: path.into(),
                msg: format!("tensor '{name}': {e}"),
            })?;
            let data = to_f32(&view).ok_or_else(|| Error::Checkpoint {
                path: path.into(),
                msg: format!(
                    "tensor '{name}' has dtype {:?}; expected F32 (F16, BF16 and F64 are converted)",
                    view.dtype()
                ),
            })?;
            tensors.insert(name.clone(), (view.shape().to_vec(), data));
        }
        Ok(TensorFile {
            path: path.into(),
            tensors,
        })
    }

    /// Names of the tensors in the file.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The tensor `name` (shape, data), or an error naming the file and tensor.
    pub fn get(&self, name: &str) -> Result<(&[usize], &[f32])> {
        self.tensors
            .get(name)
            .map(|(s, d)| (s.as_slice(), d.as_slice()))
            .ok_or_else(|| Error::Checkpoint {
                path: self.path.clone(),
                msg: format!("tensor '{name}' is missing"),
            })
    }

    /// Whether the file holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The tensor `name` uploaded to the GPU.
    pub fn upload(&self, ctx: &Context, name: &str) -> Result<crate::Tensor> {
        let (shape, data) = self.get(name)?;
        ctx.upload(shape, data)
    }
}

fn to_f32(view: &TensorView<'_>) -> Option<Vec<f32>> {
    let d = view.data();
    Some(match view.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => d
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => d
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        Dtype::I64 => d
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        Dtype::I32 => d
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
            .collect(),
        _ => return None,
    })
}

/// Serialise named f32 tensors to safetensors bytes.
pub fn serialize_f32(
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(Dtype::F32, shape.clone(), bytemuck::cast_slice(data))
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::Checkpoint {
                    path: PathBuf::new(),
                    msg: format!("tensor '{name}': {e}"),
                })
        })
        .collect::<Result<_>>()?;
    safetensors::serialize(views, &metadata).map_err(|e| Error::Checkpoint {
        path: PathBuf::new(),
        msg: e.to_string(),
    })
}

/// A named host tensor: (name, shape, data).
pub type HostTensor = (String, Vec<usize>, Vec<f32>);

/// Read every tensor of `params` from the GPU, with its name.
pub fn params_to_host(ctx: &Context, params: &Params) -> Result<Vec<HostTensor>> {
    ctx.flush();
    (0..params.len())
        .map(|i| {
            Ok((
                params.names()[i].clone(),
                params.shape(i).to_vec(),
                ctx.read(params.get(i))?,
            ))
        })
        .collect()
}

/// Fill `params` from a tensor file. Every declared parameter must be present with its exact
/// shape; tensors the model does not declare are refused (they mean a config mismatch).
pub fn load_params(ctx: &Context, params: &mut Params, file: &TensorFile, prefix: &str) -> Result<()> {
    for i in 0..params.len() {
        let name = format!("{prefix}{}", params.names()[i]);
        let (shape, data) = file.get(&name).map_err(|_| Error::Checkpoint {
            path: file.path.clone(),
            msg: format!("tensor '{name}' is missing; the weights do not match config.json"),
        })?;
        if shape != params.shape(i) {
            return Err(Error::Checkpoint {
                path: file.path.clone(),
                msg: format!(
                    "tensor '{name}' has shape {shape:?}, config.json implies {:?}",
                    params.shape(i)
                ),
            });
        }
        params.set(i, ctx.upload(shape, data)?)?;
    }
    if prefix.is_empty() {
        let unexpected: Vec<&str> = file.names().filter(|n| params.id(n).is_none()).take(5).collect();
        if !unexpected.is_empty() {
            return Err(Error::Checkpoint {
                path: file.path.clone(),
                msg: format!("unexpected tensors {unexpected:?}: the weights do not match config.json"),
            });
        }
    }
    Ok(())
}

impl UNet {
    /// Load a diffusers model folder (config.json + diffusion_pytorch_model.safetensors).
    pub fn from_pretrained(ctx: &Context, dir: impl AsRef<Path>) -> Result<UNet> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(Error::Checkpoint {
                path: dir.into(),
                msg: "not a folder; expected a diffusers model folder with config.json and diffusion_pytorch_model.safetensors".into(),
            });
        }
        let cfg_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let weights_path = dir.join(WEIGHTS_FILE);
        let weights = std::fs::read(&weights_path).map_err(|e| Error::io(&weights_path, e))?;
        unet_from_parts(ctx, &text, &weights, &cfg_path, &weights_path)
    }

    /// [`UNet::from_pretrained`] from the folder's two files already in memory: config.json's
    /// text and the safetensors bytes (what a web page fetches).
    pub fn from_bytes(ctx: &Context, config_json: &str, weights: &[u8]) -> Result<UNet> {
        unet_from_parts(
            ctx,
            config_json,
            weights,
            Path::new(CONFIG_FILE),
            Path::new(WEIGHTS_FILE),
        )
    }

    /// Write a diffusers model folder (atomically, file by file).
    pub fn save_pretrained(&self, ctx: &Context, dir: impl AsRef<Path>) -> Result<()> {
        save_folder(ctx, dir.as_ref(), self.config(), &self.params)
    }
}

/// A U-Net from config.json text and safetensors bytes; the paths only name them in messages.
pub(crate) fn unet_from_parts(
    ctx: &Context,
    config_json: &str,
    weights: &[u8],
    cfg_path: &Path,
    weights_path: &Path,
) -> Result<UNet> {
    let config = UNetConfig::from_json(config_json).map_err(|e| Error::Checkpoint {
        path: cfg_path.into(),
        msg: e.to_string(),
    })?;
    let mut unet = UNet::new(config)?;
    let file = TensorFile::parse(weights_path, weights)?;
    load_params(ctx, &mut unet.params, &file, "")?;
    Ok(unet)
}

/// Write `params` as a diffusers model folder for `config`.
pub fn save_folder(ctx: &Context, dir: &Path, config: &UNetConfig, params: &Params) -> Result<()> {
    let host = params_to_host(ctx, params)?;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let bytes = serialize_f32(&host, Some(meta))?;
    write_atomic(&dir.join(WEIGHTS_FILE), &bytes)?;
    write_atomic(&dir.join(CONFIG_FILE), config.to_json().as_bytes())
}
