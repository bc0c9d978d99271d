//! Shaders, the pipeline cache and the dispatch description.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// A WGSL source file embedded in the binary, one per op family (`shaders/<name>.wgsl`).
pub(crate) struct Shader {
    /// File stem, used in labels and the cache key.
    pub name: &'static str,
    /// WGSL text.
    pub source: &'static str,
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

#[derive(Default)]
pub(crate) struct PipelineCache {
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<Key, Arc<wgpu::ComputePipeline>>>,
}

impl PipelineCache {
    pub fn get(
        &self,
        device: &wgpu::Device,
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
                let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
                let m = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(shader.name),
                    source: wgpu::ShaderSource::Wgsl(shader.source.into()),
                });
                if let Some(e) = pollster::block_on(scope.pop()) {
                    return Err(Error::Gpu(format!("shaders/{}.wgsl: {e}", shader.name)));
                }
                modules.insert(shader.name, m.clone());
                m
            }
        };
        let label = format!("{}::{}", shader.name, entry);
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
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
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
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
