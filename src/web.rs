//! The engine in a web page: wasm-bindgen exports for `wasm32-unknown-unknown` with the `web`
//! feature, over wgpu's WebGPU backend. Every call goes through the library's own paths —
//! [`Context::new_async`], [`generate::load_model_bytes`], [`generate::sample_model_async`] —
//! with the waits the browser cannot block on (adapter, device, readback) awaited.
//!
//! `web/build.sh` builds the module into `web/pkg/`; `web/index.html` uses it:
//!
//! ```js
//! import init, { Engine, SampleParams } from "./pkg/ddpm_wgpu.js";
//! await init();
//! const engine = await Engine.create();
//! const model = engine.loadModel(configText, new Uint8Array(weightsBuffer), schedulerText);
//! const params = new SampleParams();
//! params.sampler = "ddim"; params.steps = 20; params.n = 16; params.seed = 0;
//! const out = await model.sample(params, (done, total) => console.log(`${done}/${total}`));
//! const [n, c, h, w] = out.shape;   // out.images: Float32Array, [n, c, h, w] in [-1, 1]
//! ```

use std::rc::Rc;

use js_sys::{Float32Array, Function, Promise};
use wasm_bindgen::prelude::*;

use crate::diffusion::generate::{self, Model, SampleOutput, SampleRequest};
use crate::gpu::Context;

/// The largest integer a JS number holds exactly (2⁵³ − 1): the largest seed a page can pass.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// A GPU context in the page: the browser's WebGPU adapter, a device on it, the engine's
/// pipeline cache and buffer pool.
#[wasm_bindgen]
pub struct Engine {
    ctx: Rc<Context>,
}

#[wasm_bindgen]
impl Engine {
    /// Request the browser's WebGPU adapter (`navigator.gpu.requestAdapter()`) and a device
    /// with the adapter's limits. Resolves to an `Engine`; rejects with the reason when the
    /// browser offers no WebGPU adapter.
    pub async fn create() -> Result<Engine, JsError> {
        let ctx = Context::new_async().await?;
        Ok(Engine { ctx: Rc::new(ctx) })
    }

    /// The adapter's name, backend and device type, as `ddpm info` prints them.
    #[wasm_bindgen(getter)]
    pub fn adapter(&self) -> String {
        self.ctx.adapter_name()
    }

    /// Load a diffusers `UNet2DModel` from the contents of its folder's files, fetched by the
    /// page: `config.json` as text, `diffusion_pytorch_model.safetensors` as bytes, and
    /// `scheduler_config.json` as text (`undefined`: Ho et al.'s DDPM schedule). Uploads the
    /// weights; throws if a file is invalid or the weights do not fit the config.
    #[wasm_bindgen(js_name = loadModel)]
    pub fn load_model(
        &self,
        config_json: &str,
        weights: &[u8],
        scheduler_json: Option<String>,
    ) -> Result<DiffusionModel, JsError> {
        let model = generate::load_model_bytes(&self.ctx, config_json, weights, scheduler_json.as_deref())?;
        Ok(DiffusionModel {
            ctx: self.ctx.clone(),
            model: Rc::new(model),
        })
    }
}

/// A loaded U-Net with its scheduler config, ready to sample.
#[wasm_bindgen]
pub struct DiffusionModel {
    ctx: Rc<Context>,
    model: Rc<Model>,
}

#[wasm_bindgen]
impl DiffusionModel {
    /// Image height and width (config.json's `sample_size`).
    #[wasm_bindgen(getter, js_name = sampleSize)]
    pub fn sample_size(&self) -> usize {
        self.model.unet.config().sample_size
    }

    /// Image channels (`in_channels`).
    #[wasm_bindgen(getter)]
    pub fn channels(&self) -> usize {
        self.model.unet.config().in_channels
    }

    /// Rows of the class embedding (`num_class_embeds`, the null class of guidance included);
    /// `undefined` for an unconditional model.
    #[wasm_bindgen(getter, js_name = numClassEmbeds)]
    pub fn num_class_embeds(&self) -> Option<usize> {
        self.model.unet.config().num_class_embeds
    }

    /// T, the training timesteps (the most inference steps a sampler may take).
    #[wasm_bindgen(getter, js_name = numTrainTimesteps)]
    pub fn num_train_timesteps(&self) -> usize {
        self.model.scheduler.num_train_timesteps
    }

    /// Sample images as `ddpm sample` does: the same request, the same noise for the same
    /// seed, the same result as the native engine within float tolerance. `onStep(done,
    /// total)`, if given, is called as each step is recorded (the GPU runs them after; the
    /// promise resolves when the images are read back). Resolves to [`Samples`]; rejects with
    /// the engine's message on a bad request (unknown sampler, steps out of range, a class on
    /// an unconditional model, ...) or a GPU error.
    #[wasm_bindgen(unchecked_return_type = "Promise<Samples>")]
    pub fn sample(&self, params: &SampleParams, on_step: Option<Function>) -> Promise {
        let request = params.request();
        let (ctx, model) = (self.ctx.clone(), self.model.clone());
        wasm_bindgen_futures::future_to_promise(async move {
            let request = request?;
            let progress = |done: usize, total: usize| {
                if let Some(f) = &on_step {
                    // A throwing callback must not abort the sampling.
                    let _ = f.call2(&JsValue::NULL, &JsValue::from(done), &JsValue::from(total));
                }
            };
            let out = generate::sample_model_async(&ctx, &model, &request, progress)
                .await
                .map_err(JsError::from)?;
            Ok(Samples { out }.into())
        })
    }
}

/// What to sample (the fields of `ddpm sample`). `new SampleParams()` holds the defaults;
/// set the fields to change them.
#[wasm_bindgen(getter_with_clone)]
#[derive(Clone, Debug)]
pub struct SampleParams {
    /// `ddpm`, `ddim` or `dpm++` (default `ddim`).
    pub sampler: String,
    /// Inference steps; `undefined` (the default): T for ddpm, 50 for ddim, 25 for dpm++.
    pub steps: Option<u32>,
    /// Number of images (unconditional, or all of one class; default 16).
    pub n: u32,
    /// Seed of all the noise: an integer from 0 to 2⁵³ − 1 (default 0).
    pub seed: f64,
    /// Every sample of this class (class-conditional models); `undefined`: one row per class.
    pub class: Option<u32>,
    /// Samples per class when no class is given (`undefined`: n / classes, at least 1).
    #[wasm_bindgen(js_name = perClass)]
    pub per_class: Option<u32>,
    /// Classifier-free guidance weight w (default 1: plain conditional sampling).
    pub guidance: f32,
    /// DDIM's η (`undefined`: 0).
    pub eta: Option<f64>,
}

#[wasm_bindgen]
impl SampleParams {
    /// The defaults: 16 images, DDIM with its default 50 steps, seed 0, no guidance.
    #[wasm_bindgen(constructor)]
    pub fn new() -> SampleParams {
        SampleParams {
            sampler: "ddim".into(),
            steps: None,
            n: 16,
            seed: 0.0,
            class: None,
            per_class: None,
            guidance: 1.0,
            eta: None,
        }
    }
}

impl Default for SampleParams {
    fn default() -> Self {
        Self::new()
    }
}

impl SampleParams {
    /// The library's request; a seed that is not an exact non-negative integer is refused.
    fn request(&self) -> Result<SampleRequest, JsValue> {
        let s = self.seed;
        if !(s.fract() == 0.0 && (0.0..=MAX_SAFE_INTEGER).contains(&s)) {
            return Err(JsError::new(&format!("seed {s}: expected an integer from 0 to 2^53 - 1")).into());
        }
        Ok(SampleRequest {
            sampler: self.sampler.clone(),
            steps: self.steps.map(|v| v as usize),
            n: self.n as usize,
            seed: s as u64,
            class: self.class,
            per_class: self.per_class.map(|v| v as usize),
            guidance: self.guidance,
            eta: self.eta,
            ..SampleRequest::default()
        })
    }
}

/// Sampled images, read back from the GPU.
#[wasm_bindgen]
pub struct Samples {
    out: SampleOutput,
}

#[wasm_bindgen]
impl Samples {
    /// The images, `[n, C, H, W]` row-major, in [−1, 1] (not clamped): x₀ as the native
    /// engine returns it.
    #[wasm_bindgen(getter)]
    pub fn images(&self) -> Float32Array {
        Float32Array::from(&self.out.images[..])
    }

    /// `[n, C, H, W]`.
    #[wasm_bindgen(getter)]
    pub fn shape(&self) -> Vec<u32> {
        self.out.shape.iter().map(|&d| d as u32).collect()
    }

    /// Grid columns: samples per class, or ⌈√n⌉.
    #[wasm_bindgen(getter)]
    pub fn cols(&self) -> usize {
        self.out.cols
    }

    /// The class of each sample (class-conditional models); `undefined` otherwise.
    #[wasm_bindgen(getter)]
    pub fn labels(&self) -> Option<Vec<u32>> {
        self.out.labels.clone()
    }
}
