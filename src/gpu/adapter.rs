//! Adapter enumeration and choice.

use crate::error::{Error, Result};

/// How to pick the adapter. Every field can also come from the environment.
#[derive(Clone, Debug, Default)]
pub struct ContextOptions {
    /// Backends to search, comma-separated: `vulkan`, `metal`, `dx12`, `gl`. `None` = all.
    /// Environment: `DDPM_BACKEND`, else wgpu's `WGPU_BACKEND`.
    pub backend: Option<String>,
    /// Adapter by index (as listed by `ddpm info`) or by a case-insensitive substring of its
    /// name. `None` = prefer a discrete GPU, then integrated, virtual, then a CPU adapter.
    /// Environment: `DDPM_ADAPTER`, else wgpu's `WGPU_ADAPTER_NAME`.
    pub adapter: Option<String>,
}

impl ContextOptions {
    /// Options from `DDPM_BACKEND` / `DDPM_ADAPTER` (or `WGPU_BACKEND` / `WGPU_ADAPTER_NAME`).
    pub fn from_env() -> Self {
        let var = |a: &str, b: &str| {
            std::env::var(a)
                .ok()
                .or_else(|| std::env::var(b).ok())
                .filter(|s| !s.trim().is_empty())
        };
        ContextOptions {
            backend: var("DDPM_BACKEND", "WGPU_BACKEND"),
            adapter: var("DDPM_ADAPTER", "WGPU_ADAPTER_NAME"),
        }
    }

    /// Override fields that are `Some` in `other` (command-line flags over environment).
    pub fn merged(mut self, backend: Option<String>, adapter: Option<String>) -> Self {
        if backend.is_some() {
            self.backend = backend;
        }
        if adapter.is_some() {
            self.adapter = adapter;
        }
        self
    }
}

/// What `ddpm info` prints about one adapter.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    /// Position in enumeration order (what `--adapter INDEX` refers to).
    pub index: usize,
    /// Adapter name.
    pub name: String,
    /// Backend (Vulkan, Gl, ...).
    pub backend: wgpu::Backend,
    /// Discrete, integrated, CPU, ...
    pub device_type: wgpu::DeviceType,
    /// Driver name and version.
    pub driver: String,
}

pub(crate) fn parse_backends(s: &str) -> Result<wgpu::Backends> {
    let mut b = wgpu::Backends::empty();
    for part in s.split(',').map(|p| p.trim().to_lowercase()).filter(|p| !p.is_empty()) {
        b |= match part.as_str() {
            "vulkan" | "vk" => wgpu::Backends::VULKAN,
            "metal" | "mtl" => wgpu::Backends::METAL,
            "dx12" | "d3d12" => wgpu::Backends::DX12,
            "gl" | "gles" | "opengl" => wgpu::Backends::GL,
            "webgpu" | "browser" => wgpu::Backends::BROWSER_WEBGPU,
            "all" => wgpu::Backends::all(),
            _ => return Err(Error::UnknownBackend(part)),
        };
    }
    if b.is_empty() {
        return Err(Error::UnknownBackend(s.to_string()));
    }
    Ok(b)
}

fn backends(opts: &ContextOptions) -> Result<wgpu::Backends> {
    match &opts.backend {
        Some(s) => parse_backends(s),
        // In the browser the only backend is the browser's own WebGPU.
        None if cfg!(target_arch = "wasm32") => Ok(wgpu::Backends::BROWSER_WEBGPU),
        None => Ok(wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12 | wgpu::Backends::GL),
    }
}

pub(crate) fn instance(opts: &ContextOptions) -> Result<wgpu::Instance> {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends(opts)?;
    Ok(wgpu::Instance::new(desc))
}

/// Every adapter the instance sees, in enumeration order. In the browser, await
/// [`list_async`] instead.
pub fn list(opts: &ContextOptions) -> Result<Vec<AdapterSummary>> {
    crate::gpu::block_on(list_async(opts), "adapter::list", "adapter::list_async")
}

/// [`list`], awaited (in the browser: the one adapter `navigator.gpu` offers, if any).
pub async fn list_async(opts: &ContextOptions) -> Result<Vec<AdapterSummary>> {
    let inst = instance(opts)?;
    let adapters = inst.enumerate_adapters(backends(opts)?).await;
    Ok(adapters.iter().enumerate().map(|(i, a)| summary(i, a)).collect())
}

fn summary(index: usize, a: &wgpu::Adapter) -> AdapterSummary {
    let info = a.get_info();
    AdapterSummary {
        index,
        name: info.name,
        backend: info.backend,
        device_type: info.device_type,
        driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
    }
}

/// Preference: real GPUs first, then CPU adapters; among equals Vulkan/Metal/DX12 before GL
/// (GL has no subgroups or f16).
fn rank(a: &wgpu::Adapter) -> (u8, u8) {
    let info = a.get_info();
    let ty = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    };
    let be = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    };
    (ty, be)
}

pub(crate) async fn choose(inst: &wgpu::Instance, opts: &ContextOptions) -> Result<wgpu::Adapter> {
    let bk = backends(opts)?;
    let adapters = inst.enumerate_adapters(bk).await;
    // Adapters that cannot run compute shaders are useless to us (very old GL).
    let usable: Vec<(usize, wgpu::Adapter)> = adapters
        .into_iter()
        .enumerate()
        .filter(|(_, a)| {
            a.get_downlevel_capabilities()
                .flags
                .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
        })
        .collect();
    if let Some(want) = &opts.adapter {
        let available = usable
            .iter()
            .map(|(i, a)| format!("[{i}] {}", a.get_info().name))
            .collect::<Vec<_>>()
            .join(", ");
        let found = match want.trim().parse::<usize>() {
            Ok(idx) => usable.iter().find(|(i, _)| *i == idx),
            Err(_) => {
                let w = want.to_lowercase();
                usable
                    .iter()
                    .find(|(_, a)| a.get_info().name.to_lowercase().contains(&w))
            }
        };
        return found.map(|(_, a)| a.clone()).ok_or_else(|| Error::AdapterNotFound {
            wanted: want.clone(),
            available: if available.is_empty() { "none".into() } else { available },
        });
    }
    usable
        .into_iter()
        .map(|(_, a)| a)
        .min_by_key(rank)
        .ok_or_else(|| Error::NoAdapter {
            searched: format!("{bk:?}"),
            hint: if cfg!(target_arch = "wasm32") {
                "The browser's navigator.gpu offered no adapter: use a browser with WebGPU enabled \
                 (headless Chromium needs --enable-unsafe-webgpu)."
            } else {
                "Install a Vulkan driver: on Linux without a GPU `apt-get install mesa-vulkan-drivers` \
                 (software lavapipe); or try the GL backend with DDPM_BACKEND=gl (needs Mesa's EGL, \
                 `apt-get install libegl-mesa0`)."
            }
            .into(),
        })
}
