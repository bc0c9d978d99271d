//! Shaders, the pipeline cache and the dispatch description.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::scoped;
use crate::error::{Error, Result};

/// A WGSL source file embedded in the binary, one per op family (`shaders/<name>.wgsl`).
pub(crate) struct Shader {
    /// File stem, used in labels and the cache key.
    pub name: &'static str,
    /// WGSL text.
    pub source: &'static str,
}

/// `W4`, `ld4` and `st4` as `vec4<f32>` (every adapter).
const WIDE_F32: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/wide/vec4_f32.wgsl"));
/// `W4`, `ld4` and `st4` as `vec2<u64>` (adapters with SHADER_INT64; pays on llvmpipe).
const WIDE_U64: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/wide/vec4_u64.wgsl"));

/// Philox-4x32-10 and the in-line dropout mask (see [`uses_philox`]).
const PHILOX: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/lib/philox.wgsl"));

/// Whether WGSL source uses a function or the struct of shaders/lib/philox.wgsl.
fn uses_philox(source: &str) -> bool {
    ["philox(", "dropout_keep4(", "dropout_apply4(", "DropParams"]
        .iter()
        .any(|f| source.contains(f))
}

/// The WGSL that is compiled for `shader`: its file, plus the wide-element prelude when it
/// declares buffers of `W4` or `W2` (moved with `ld4` / `st4`, `ld2` / `st2`), plus
/// shaders/lib/philox.wgsl when it uses what that defines (which needs the prelude's
/// `mul_wide`, so such a shader declares wide buffers too). Appended, so that error line numbers stay those of
/// the shader's own file.
pub(crate) fn module_source(shader: &Shader, wide_u64: bool) -> std::borrow::Cow<'static, str> {
    if !shader.source.contains("array<W4>") && !shader.source.contains("array<W2>") {
        return shader.source.into();
    }
    let prelude = if wide_u64 { WIDE_U64 } else { WIDE_F32 };
    let philox = if uses_philox(shader.source) { PHILOX } else { "" };
    format!("{}\n{prelude}\n{philox}", shader.source).into()
}

/// Embed `shaders/<name>.wgsl` as a [`Shader`].
#[macro_export]
#[doc(hidden)]
macro_rules! shader {
    ($name:literal) => {
        $crate::gpu::Shader {
            name: $name,
            source: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/", $name, ".wgsl")),
        }
    };
}

/// One compute dispatch. Binding 0 is the uniform `params` (omitted when empty); storage
/// buffers follow at bindings 1, 2, ... in the order given. The entry point must use every
/// binding passed (pipelines use the layout derived from the entry point).
pub(crate) struct Dispatch<'a> {
    pub shader: &'static Shader,
    pub entry: &'static str,
    /// Pipeline-overridable constants (workgroup sizes, tile sizes, variant switches).
    pub constants: &'a [(&'static str, f64)],
    pub params: &'a [u8],
    pub buffers: &'a [&'a wgpu::Buffer],
    pub workgroups: [u32; 3],
}

type Key = (&'static str, &'static str, Vec<(&'static str, u64)>);

/// A WGSL compute kernel written outside the crate, run with [`crate::Context::run_wgsl`].
///
/// Binding rules as for the built-in kernels: everything in `@group(0)`; `@binding(0)` a
/// uniform holding the params (only when params are passed), then one storage buffer per tensor
/// at `@binding(1)`, `@binding(2)`, ... in the order given.
#[derive(Clone, Copy, Debug)]
pub struct WgslKernel<'a> {
    /// Name of the module: its pipelines are cached under it, apart from the built-in shaders.
    /// One name, one source: a second source under the same name is refused.
    pub name: &'a str,
    /// WGSL text.
    pub source: &'a str,
    /// Entry point (a `@compute` function of `source`).
    pub entry: &'a str,
}

/// A compiled user module and its source (to refuse a second source under the same name).
struct UserModule {
    source: String,
    module: wgpu::ShaderModule,
}

#[derive(Default)]
pub(crate) struct PipelineCache {
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<Key, Arc<wgpu::ComputePipeline>>>,
    user_modules: Mutex<HashMap<String, UserModule>>,
    user_pipelines: Mutex<HashMap<(String, String), Arc<wgpu::ComputePipeline>>>,
}

impl PipelineCache {
    /// The pipeline of a user kernel, built on first use and cached by (name, entry point).
    pub fn get_user(&self, device: &wgpu::Device, k: &WgslKernel<'_>) -> Result<Arc<wgpu::ComputePipeline>> {
        let bad = |msg: String| Error::arg("WgslKernel", format!("{}::{}: {msg}", k.name, k.entry));
        let key = (k.name.to_string(), k.entry.to_string());
        let module = {
            let mut modules = self.user_modules.lock().unwrap_or_else(|p| p.into_inner());
            match modules.get(k.name) {
                Some(m) if m.source != k.source => {
                    return Err(bad("another source was already compiled under this name".into()))
                }
                Some(m) => m.module.clone(),
                None => {
                    // Parse with naga first: errors name the line, and a binding outside group 0
                    // (which the engine never binds) is refused before anything is recorded.
                    let parsed = naga::front::wgsl::parse_str(k.source).map_err(|e| bad(e.emit_to_string(k.source)))?;
                    if let Some(b) = parsed
                        .global_variables
                        .iter()
                        .filter_map(|(_, g)| g.binding.as_ref())
                        .find(|b| b.group != 0)
                    {
                        return Err(bad(format!(
                            "@group({}) @binding({}): only group 0 is bound",
                            b.group, b.binding
                        )));
                    }
                    let (m, error) = scoped(device, wgpu::ErrorFilter::Validation, || {
                        device.create_shader_module(wgpu::ShaderModuleDescriptor {
                            label: Some(k.name),
                            source: wgpu::ShaderSource::Wgsl(k.source.into()),
                        })
                    });
                    if let Some(e) = error {
                        return Err(bad(e.to_string()));
                    }
                    modules.insert(
                        k.name.to_string(),
                        UserModule {
                            source: k.source.to_string(),
                            module: m.clone(),
                        },
                    );
                    m
                }
            }
        };
        if let Some(p) = self.user_pipelines.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(p.clone());
        }
        let label = format!("{}::{}", k.name, k.entry);
        let (pipeline, error) = scoped(device, wgpu::ErrorFilter::Validation, || {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: None,
                module: &module,
                entry_point: Some(k.entry),
                compilation_options: wgpu::PipelineCompilationOptions::default(),
                cache: None,
            })
        });
        if let Some(e) = error {
            return Err(bad(e.to_string()));
        }
        let pipeline = Arc::new(pipeline);
        self.user_pipelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, pipeline.clone());
        Ok(pipeline)
    }

    pub fn get(
        &self,
        device: &wgpu::Device,
        wide_u64: bool,
        shader: &'static Shader,
        entry: &'static str,
        constants: &[(&'static str, f64)],
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let key: Key = (
            shader.name,
            entry,
            constants.iter().map(|(k, v)| (*k, v.to_bits())).collect(),
        );
        if let Some(p) = self.pipelines.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(p.clone());
        }
        let module = {
            let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(m) = modules.get(shader.name) {
                m.clone()
            } else {
                let (m, error) = scoped(device, wgpu::ErrorFilter::Validation, || {
                    device.create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(shader.name),
                        source: wgpu::ShaderSource::Wgsl(module_source(shader, wide_u64)),
                    })
                });
                if let Some(e) = error {
                    return Err(Error::Gpu(format!("shaders/{}.wgsl: {e}", shader.name)));
                }
                modules.insert(shader.name, m.clone());
                m
            }
        };
        let label = format!("{}::{}", shader.name, entry);
        let (pipeline, error) = scoped(device, wgpu::ErrorFilter::Validation, || {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    // Every kernel initialises the workgroup memory it reads.
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            })
        });
        if let Some(e) = error {
            return Err(Error::Gpu(format!("pipeline {label}: {e}")));
        }
        let pipeline = Arc::new(pipeline);
        self.pipelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, pipeline.clone());
        Ok(pipeline)
    }
}
