//! `ddpm sample` as one library call: load a diffusers model folder and its scheduler config,
//! decide which class each sample gets, run a sampler ([`super::sample::sample`]) and lay the
//! result out as a PNG grid, per-sample denoising strips, or a safetensors file.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::checkpoint::{self, CONFIG_FILE};
use crate::diffusion::sample::{self, Guidance, SampleOptions, Sampler, Spacing, Variance};
use crate::diffusion::schedule::{BetaSchedule, Prediction, Schedule};
use crate::diffusion::sde::{self, SdeParams, SdeSampler};
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::image;
use crate::nn::{NoisyClassifier, UNet};

/// File name of diffusers' scheduler config.
pub const SCHEDULER_FILE: &str = "scheduler_config.json";

/// The fields of diffusers' `scheduler_config.json` that sampling uses.
#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerConfig {
    /// T.
    pub num_train_timesteps: usize,
    /// β schedule.
    pub beta_schedule: BetaSchedule,
    /// β_1.
    pub beta_start: f64,
    /// β_T.
    pub beta_end: f64,
    /// DDPM reverse variance (learned_range: the model has 2·C output channels).
    pub variance: Variance,
    /// What the model predicts (`prediction_type`).
    pub prediction: Prediction,
    /// Clip x̂₀ to [−1, 1] (DDPM and DDIM).
    pub clip_sample: bool,
    /// The class-embedding row that means "no class" (classifier-free guidance). `None`: not
    /// stated, the last row is assumed; `Some(None)`: the model has none (`"null_class": null`,
    /// written by `ddpm train` for a model trained without label dropout).
    pub null_class: Option<Option<u32>>,
}

impl Default for SchedulerConfig {
    /// Ho et al.'s DDPM: T = 1000, linear β from 1e-4 to 0.02, σ² = β̃, clipped x̂₀.
    fn default() -> Self {
        SchedulerConfig {
            num_train_timesteps: 1000,
            beta_schedule: BetaSchedule::Linear,
            beta_start: 1e-4,
            beta_end: 0.02,
            variance: Variance::FixedSmall,
            prediction: Prediction::Epsilon,
            clip_sample: true,
            null_class: None,
        }
    }
}

impl SchedulerConfig {
    /// Parse `scheduler_config.json` text (any diffusers scheduler class); missing fields take
    /// DDPMScheduler's defaults, settings the engine cannot honour are refused.
    pub fn from_json(text: &str) -> Result<Self> {
        let bad = |field: &str, msg: String| Error::Config {
            field: field.into(),
            msg,
        };
        let v: Value = serde_json::from_str(text).map_err(|e| bad(SCHEDULER_FILE, format!("not valid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad(SCHEDULER_FILE, "expected a JSON object".into()))?;
        let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
        let mut c = SchedulerConfig::default();
        if let Some(v) = get("num_train_timesteps") {
            c.num_train_timesteps = v
                .as_u64()
                .filter(|&t| t > 0)
                .ok_or_else(|| bad("num_train_timesteps", format!("{v}: expected a positive integer")))?
                as usize;
        }
        if let Some(v) = get("beta_schedule") {
            let name = v
                .as_str()
                .ok_or_else(|| bad("beta_schedule", format!("{v}: expected a string")))?;
            c.beta_schedule = BetaSchedule::parse(name)?;
        }
        for (k, slot) in [("beta_start", &mut c.beta_start), ("beta_end", &mut c.beta_end)] {
            if let Some(v) = get(k) {
                *slot = v.as_f64().ok_or_else(|| bad(k, format!("{v}: expected a number")))?;
            }
        }
        if let Some(v) = get("variance_type") {
            c.variance = match v.as_str() {
                Some("fixed_small") => Variance::FixedSmall,
                Some("fixed_large") => Variance::FixedLarge,
                Some("learned_range") => Variance::LearnedRange,
                _ => {
                    return Err(bad(
                        "variance_type",
                        format!("{v} is not supported; expected fixed_small, fixed_large or learned_range"),
                    ))
                }
            };
        }
        if let Some(v) = get("clip_sample") {
            c.clip_sample = v
                .as_bool()
                .ok_or_else(|| bad("clip_sample", format!("{v}: expected true or false")))?;
        }
        if let Some(v) = get("prediction_type") {
            c.prediction = v
                .as_str()
                .and_then(|name| Prediction::parse(name).ok())
                .ok_or_else(|| {
                    bad(
                        "prediction_type",
                        format!("{v} is not supported; expected epsilon, sample or v_prediction"),
                    )
                })?;
        }
        if get("trained_betas").is_some() {
            return Err(bad(
                "trained_betas",
                "explicit β tables are not supported; use beta_schedule".into(),
            ));
        }
        if get("thresholding").and_then(Value::as_bool) == Some(true) {
            return Err(bad("thresholding", "true is not supported; only false".into()));
        }
        if let Some(v) = obj.get("null_class") {
            c.null_class = Some(match v {
                Value::Null => None,
                v => Some(
                    v.as_u64()
                        .and_then(|k| u32::try_from(k).ok())
                        .ok_or_else(|| bad("null_class", format!("{v}: expected a class index or null")))?,
                ),
            });
        }
        Ok(c)
    }

    /// The noise schedule.
    pub fn schedule(&self) -> Result<Schedule> {
        Schedule::new(
            self.beta_schedule,
            self.num_train_timesteps,
            self.beta_start,
            self.beta_end,
        )
    }
}

/// A model folder resolved: where config.json is, and the scheduler config found next to it.
pub struct Model {
    /// The folder holding config.json and the weights.
    pub dir: PathBuf,
    /// The U-Net.
    pub unet: UNet,
    /// `scheduler_config.json` (or DDPM defaults when there is none).
    pub scheduler: SchedulerConfig,
    /// Where the scheduler config came from (`None`: defaults).
    pub scheduler_path: Option<PathBuf>,
}

/// Load a diffusers `UNet2DModel` folder. Accepts the model folder itself (config.json +
/// diffusion_pytorch_model.safetensors, optional scheduler_config.json) or a pipeline folder
/// with `unet/` and `scheduler/` subfolders.
pub fn load_model(ctx: &Context, dir: &Path) -> Result<Model> {
    let not_model = |msg: String| Error::Checkpoint { path: dir.into(), msg };
    if !dir.exists() {
        return Err(not_model(
            "no such folder; pass --model DIR with a diffusers UNet2DModel folder (config.json + \
             diffusion_pytorch_model.safetensors), e.g. runs/train/model written by `ddpm train`"
                .into(),
        ));
    }
    let model_dir = if !dir.join(CONFIG_FILE).exists() && dir.join("unet").join(CONFIG_FILE).exists() {
        dir.join("unet")
    } else {
        dir.to_path_buf()
    };
    let cfg_path = model_dir.join(CONFIG_FILE);
    if !cfg_path.exists() {
        return Err(not_model(format!(
            "no {CONFIG_FILE}: not a diffusers model folder (expected {CONFIG_FILE} and {} of a UNet2DModel)",
            checkpoint::WEIGHTS_FILE
        )));
    }
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
    check_unet_class(&text, &cfg_path)?;
    let weights_path = model_dir.join(checkpoint::WEIGHTS_FILE);
    let weights = std::fs::read(&weights_path).map_err(|e| Error::io(&weights_path, e))?;
    let candidates = [
        model_dir.join(SCHEDULER_FILE),
        model_dir.join("..").join("scheduler").join(SCHEDULER_FILE),
    ];
    let scheduler_path = candidates.into_iter().find(|p| p.exists());
    let scheduler_text = match &scheduler_path {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?),
        None => None,
    };
    let unet = checkpoint::unet_from_parts(ctx, &text, &weights, &cfg_path, &weights_path)?;
    let scheduler = parse_scheduler(scheduler_text.as_deref(), scheduler_path.as_deref())?;
    Ok(Model {
        dir: model_dir,
        unet,
        scheduler,
        scheduler_path,
    })
}

/// [`load_model`] from the files already in memory (what a web page fetches): config.json's
/// text, the safetensors bytes of diffusion_pytorch_model.safetensors, and
/// scheduler_config.json's text if the model has one (DDPM defaults otherwise).
pub fn load_model_bytes(
    ctx: &Context,
    config_json: &str,
    weights: &[u8],
    scheduler_json: Option<&str>,
) -> Result<Model> {
    let cfg_path = Path::new(CONFIG_FILE);
    check_unet_class(config_json, cfg_path)?;
    let weights_path = Path::new(checkpoint::WEIGHTS_FILE);
    let unet = checkpoint::unet_from_parts(ctx, config_json, weights, cfg_path, weights_path)?;
    let scheduler_path = scheduler_json.map(|_| PathBuf::from(SCHEDULER_FILE));
    let scheduler = parse_scheduler(scheduler_json, scheduler_path.as_deref())?;
    Ok(Model {
        dir: PathBuf::from("(model in memory)"),
        unet,
        scheduler,
        scheduler_path,
    })
}

/// Refuse a config.json that names another diffusers class than UNet2DModel.
fn check_unet_class(config_json: &str, cfg_path: &Path) -> Result<()> {
    let class = serde_json::from_str::<Value>(config_json)
        .ok()
        .and_then(|v| v.get("_class_name").and_then(Value::as_str).map(str::to_string));
    if let Some(class) = class.filter(|c| c != "UNet2DModel") {
        return Err(Error::Checkpoint {
            path: cfg_path.into(),
            msg: format!("describes a {class}, not a UNet2DModel; `ddpm sample` needs a diffusers UNet2DModel folder"),
        });
    }
    Ok(())
}

/// The scheduler config from its text (`path` names it in messages), DDPM defaults without one.
fn parse_scheduler(text: Option<&str>, path: Option<&Path>) -> Result<SchedulerConfig> {
    match text {
        Some(text) => SchedulerConfig::from_json(text).map_err(|e| Error::Checkpoint {
            path: path.unwrap_or(Path::new(SCHEDULER_FILE)).into(),
            msg: e.to_string(),
        }),
        None => Ok(SchedulerConfig::default()),
    }
}

/// What to sample.
#[derive(Clone, Debug)]
pub struct SampleRequest {
    /// `ddpm`, `ddim` or `dpm++`, or a score-SDE sampler: `sde-em`, `pc`, `ode-heun` or
    /// `langevin` ([`crate::diffusion::sde`]).
    pub sampler: String,
    /// Inference steps; default T for ddpm, 50 for ddim, 25 for dpm++ (at most T); for the
    /// score-SDE samplers [`SdeSampler::default_steps`] (langevin: noise levels).
    pub steps: Option<usize>,
    /// Number of images (unconditional, or all of one class).
    pub n: usize,
    /// Seed of all the noise.
    pub seed: u64,
    /// Every sample of this class (class-conditional models).
    pub class: Option<u32>,
    /// Samples per class when no class is given (default n / classes, at least 1).
    pub per_class: Option<usize>,
    /// Classifier-free guidance weight w (1 = plain conditional).
    pub guidance: f32,
    /// DDIM's η (default 0).
    pub eta: Option<f64>,
    /// Timestep spacing (default: leading for ddpm/ddim, linspace for dpm++, as diffusers).
    pub spacing: Option<Spacing>,
    /// Keep x_t and x̂₀ at ~10 evenly spaced steps for denoising strips.
    pub strip: bool,
    /// Options of the score-SDE samplers (`pc`: predictor, r, corrector steps; `langevin`: steps
    /// per level, ε); refused for other samplers.
    pub sde: SdeParams,
}

impl Default for SampleRequest {
    fn default() -> Self {
        SampleRequest {
            sampler: "ddpm".into(),
            steps: None,
            n: 64,
            seed: 0,
            class: None,
            per_class: None,
            guidance: 1.0,
            eta: None,
            spacing: None,
            strip: false,
            sde: SdeParams::default(),
        }
    }
}

/// Parse a sampler name with its options.
pub fn parse_sampler(name: &str, eta: Option<f64>, sched: &SchedulerConfig) -> Result<Sampler> {
    let sampler = match name.to_ascii_lowercase().as_str() {
        "ddpm" => Sampler::Ddpm {
            variance: sched.variance,
            clip: sched.clip_sample,
        },
        "ddim" => Sampler::Ddim {
            eta: eta.unwrap_or(0.0),
            clip: sched.clip_sample,
        },
        "dpm++" | "dpmpp" | "dpm-solver++" | "dpmsolver++" => Sampler::DpmSolverPP,
        other => match SdeSampler::parse(other) {
            Some(s) => Sampler::Sde(s),
            None => {
                return Err(Error::arg(
                    "--sampler",
                    format!("unknown sampler '{other}'; expected ddpm, ddim, dpm++, {}", sde::NAMES),
                ))
            }
        },
    };
    match (eta, sampler) {
        (Some(e), Sampler::Ddim { .. }) if !(0.0..=1.0).contains(&e) => {
            Err(Error::arg("--eta", format!("{e}: expected 0..=1")))
        }
        (Some(_), Sampler::Ddim { .. }) | (None, _) => Ok(sampler),
        (Some(_), _) => Err(Error::arg("--eta", "only applies to --sampler ddim")),
    }
}

/// Sampled images on the host, with what is needed to write them.
pub struct SampleOutput {
    /// [n, C, H, W] in [−1, 1] (not clamped).
    pub images: Vec<f32>,
    /// (n, C, H, W).
    pub shape: [usize; 4],
    /// Class of each sample (conditional models).
    pub labels: Option<Vec<u32>>,
    /// Grid columns: samples per class, or ⌈√n⌉.
    pub cols: usize,
    /// Step indices of the strip frames (empty without `strip`).
    pub strip_steps: Vec<usize>,
    /// Per frame: x_t after that step, [n, C, H, W].
    pub strip_x: Vec<Vec<f32>>,
    /// Per frame: predicted x̂₀ at that step, [n, C, H, W].
    pub strip_x0: Vec<Vec<f32>>,
    /// The timestep the model saw at each strip frame.
    pub strip_t: Vec<usize>,
}

/// Who is told each sample's class: the model (classifier-free guidance and plain conditional
/// sampling), and the labels for a noise-aware classifier.
struct ClassPlan {
    guidance: Option<Guidance>,
    labels: Option<Vec<u32>>,
    n: usize,
    cols: usize,
}

/// The labels of `req` (one class, or `per_class` of each) over `classes`, and the grid width.
fn request_labels(classes: &[u32], req: &SampleRequest, null_note: &str) -> Result<(Vec<u32>, usize)> {
    let square = |n: usize| ((n as f64).sqrt().ceil() as usize).max(1);
    match req.class {
        Some(c) => {
            if !classes.contains(&c) {
                return Err(Error::arg(
                    "--class",
                    format!("class {c} is outside the classes 0..={}{null_note}", classes.len() - 1),
                ));
            }
            Ok((vec![c; req.n], square(req.n)))
        }
        None => {
            let per = req.per_class.unwrap_or((req.n / classes.len()).max(1));
            if per == 0 {
                return Err(Error::arg("--per-class", "must be at least 1"));
            }
            Ok((classes.iter().flat_map(|&c| std::iter::repeat_n(c, per)).collect(), per))
        }
    }
}

/// Which class each sample gets and the grid width. `classifier_classes`: the classes of a
/// noise-aware classifier guiding the sampling (which lets an unconditional model take classes).
fn class_plan(
    unet: &UNet,
    sched: &SchedulerConfig,
    req: &SampleRequest,
    classifier_classes: Option<usize>,
) -> Result<ClassPlan> {
    let k = unet.config().num_class_embeds;
    let square = |n: usize| ((n as f64).sqrt().ceil() as usize).max(1);
    if !req.guidance.is_finite() {
        return Err(Error::arg(
            "--guidance",
            format!("{}: expected a finite weight", req.guidance),
        ));
    }
    let Some(k) = k else {
        if req.guidance != 1.0 {
            return Err(Error::arg(
                "--guidance",
                "classifier-free guidance needs a class-conditional model (num_class_embeds is null); \
                 an unconditional model is steered by --classifier",
            ));
        }
        let Some(kc) = classifier_classes else {
            if req.class.is_some() || req.per_class.is_some() {
                return Err(Error::arg(
                    "--class",
                    "the model is unconditional (num_class_embeds is null): give --classifier to steer it to a class",
                ));
            }
            return Ok(ClassPlan {
                guidance: None,
                labels: None,
                n: req.n,
                cols: square(req.n),
            });
        };
        let classes: Vec<u32> = (0..kc as u32).collect();
        let (labels, cols) = request_labels(&classes, req, " (the classifier's)")?;
        return Ok(ClassPlan {
            guidance: None,
            n: labels.len(),
            labels: Some(labels),
            cols,
        });
    };
    let null_class = match sched.null_class {
        Some(explicit) => explicit,
        None => Some(k as u32 - 1),
    };
    if let Some(nc) = null_class.filter(|&nc| nc as usize >= k) {
        return Err(Error::Config {
            field: "null_class".into(),
            msg: format!("{nc} is outside the model's {k} class embeddings"),
        });
    }
    // The real classes: every row but the null one.
    let classes: Vec<u32> = (0..k as u32).filter(|&c| Some(c) != null_class).collect();
    if classes.is_empty() {
        return Err(Error::arg(
            "--class",
            "the model's only class embedding is the null class",
        ));
    }
    if req.guidance != 1.0 && null_class.is_none() {
        return Err(Error::arg(
            "--guidance",
            "the model has no null class (trained without label dropout): only --guidance 1",
        ));
    }
    let null_note = null_class.map_or(String::new(), |nc| format!("; {nc} is the null class"));
    let (labels, cols) = request_labels(&classes, req, &format!(" of the model{null_note}"))?;
    let n = labels.len();
    Ok(ClassPlan {
        guidance: Some(Guidance {
            labels: labels.clone(),
            // Without a null row (w = 1 only) the value is never used.
            null_class: null_class.unwrap_or(0),
            weight: req.guidance,
        }),
        labels: Some(labels),
        n,
        cols,
    })
}

/// Resolve the request against the model: (sampler, spacing, steps); every argument error is
/// found here, before sampling starts.
pub fn resolve(model: &Model, req: &SampleRequest) -> Result<(Sampler, Spacing, usize)> {
    let sched = &model.scheduler;
    let sampler = sde::apply_params(parse_sampler(&req.sampler, req.eta, sched)?, &req.sde)?;
    let t = sched.num_train_timesteps;
    let steps = req.steps.unwrap_or(match sampler {
        Sampler::Ddpm { .. } => t,
        Sampler::Ddim { .. } => 50.min(t),
        Sampler::DpmSolverPP => 25.min(t),
        Sampler::Sde(s) => s.default_steps(t),
    });
    if steps == 0 || steps > t {
        return Err(Error::arg(
            "--steps",
            format!("{steps}: expected 1..={t} (the model's num_train_timesteps)"),
        ));
    }
    let spacing = req.spacing.unwrap_or(match sampler {
        Sampler::DpmSolverPP => Spacing::Linspace,
        _ => Spacing::Leading,
    });
    let cfg = model.unet.config();
    sample::check_out_channels(cfg.in_channels, cfg.out_channels, sampler).map_err(|e| match e {
        Error::InvalidArgument { arg, msg } => Error::InvalidArgument {
            arg,
            msg: format!("{}: {msg}", model.dir.display()),
        },
        e => e,
    })?;
    // Class and guidance errors too, before any sampling starts.
    class_plan(&model.unet, sched, req, None)?;
    Ok((sampler, spacing, steps))
}

/// Sample from a loaded model. `progress(done, total)` is called after every step (nothing is
/// read back from the GPU until the end). In the browser, await [`sample_model_async`] instead.
pub fn sample_model(
    ctx: &Context,
    model: &Model,
    req: &SampleRequest,
    progress: impl FnMut(usize, usize),
) -> Result<SampleOutput> {
    crate::gpu::block_on(
        sample_model_async(ctx, model, req, progress),
        "sample_model",
        "sample_model_async",
    )
}

/// [`sample_model`], awaited: the same steps, with the final readbacks awaited (the browser's
/// way; on native targets the future is ready when first polled). `progress` is called as
/// each step is recorded, before the GPU has run it.
pub async fn sample_model_async(
    ctx: &Context,
    model: &Model,
    req: &SampleRequest,
    progress: impl FnMut(usize, usize),
) -> Result<SampleOutput> {
    sample_model_guided_async(ctx, model, req, None, progress).await
}

/// [`sample_model`] steered by a noise-aware classifier with scale `classifier_scale`
/// (classifier guidance; see [`sample::sample_guided`]). The requested classes (`class`,
/// `per_class`) are the classifier's, so an unconditional model can be steered too; with a
/// class-conditional model they go to both, and classifier-free guidance (`guidance`) combines
/// with it.
pub fn sample_model_with_classifier(
    ctx: &Context,
    model: &Model,
    req: &SampleRequest,
    classifier: &NoisyClassifier,
    classifier_scale: f32,
    progress: impl FnMut(usize, usize),
) -> Result<SampleOutput> {
    crate::gpu::block_on(
        sample_model_guided_async(ctx, model, req, Some((classifier, classifier_scale)), progress),
        "sample_model_with_classifier",
        "sample_model_async",
    )
}

async fn sample_model_guided_async(
    ctx: &Context,
    model: &Model,
    req: &SampleRequest,
    classifier: Option<(&NoisyClassifier, f32)>,
    progress: impl FnMut(usize, usize),
) -> Result<SampleOutput> {
    if req.n == 0 {
        return Err(Error::arg("--n", "must be at least 1"));
    }
    let (sampler, spacing, steps) = resolve(model, req)?;
    let plan = class_plan(
        &model.unet,
        &model.scheduler,
        req,
        classifier.map(|(c, _)| c.config().num_classes),
    )?;
    let (guidance, n, cols) = (plan.guidance, plan.n, plan.cols);
    let schedule = model.scheduler.schedule()?;
    let cfg = model.unet.config();
    // ~10 evenly spaced frames, always the first and the last step.
    let frames = 10.min(steps);
    let keep: Vec<usize> = if req.strip {
        let mut v: Vec<usize> = (0..frames)
            .map(|k| {
                if frames == 1 {
                    steps - 1
                } else {
                    (k as f64 * (steps - 1) as f64 / (frames - 1) as f64).round() as usize
                }
            })
            .collect();
        v.dedup();
        v
    } else {
        Vec::new()
    };
    let labels = plan.labels;
    let opts = SampleOptions {
        n,
        size: cfg.sample_size,
        sampler,
        spacing,
        steps,
        seed: req.seed,
        guidance,
        keep,
    };
    let prediction = model.scheduler.prediction;
    let plan_t = sample::plan_timesteps(&schedule, sampler, spacing, steps, prediction)?;
    let guide = match (classifier, &labels) {
        (Some((classifier, scale)), Some(labels)) => Some(sample::ClassifierGuide {
            classifier,
            labels,
            scale,
        }),
        _ => None,
    };
    let out = sample::sample_guided(ctx, &model.unet, &schedule, prediction, &opts, guide.as_ref(), progress)?;
    let images = ctx.read_async(&out.images).await?;
    let (mut strip_steps, mut strip_x, mut strip_x0, mut strip_t) = (vec![], vec![], vec![], vec![]);
    for (i, x, x0) in &out.trajectory {
        strip_steps.push(*i);
        strip_t.push(plan_t[*i]);
        strip_x.push(ctx.read_async(x).await?);
        strip_x0.push(ctx.read_async(x0).await?);
    }
    Ok(SampleOutput {
        images,
        shape: [n, cfg.in_channels, cfg.sample_size, cfg.sample_size],
        labels,
        cols,
        strip_steps,
        strip_x,
        strip_x0,
        strip_t,
    })
}

/// Output format of [`SampleOutput::save`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One PNG grid.
    Png,
    /// safetensors: `images` [n, C, H, W] f32 in [−1, 1] (unclamped), `labels` \[n\] if any.
    Safetensors,
}

impl Format {
    /// Parse `png` / `safetensors`; `None` picks by the file extension.
    pub fn parse(name: Option<&str>, out: &Path) -> Result<Self> {
        match name {
            Some("png") => Ok(Format::Png),
            Some("safetensors") => Ok(Format::Safetensors),
            Some(other) => Err(Error::arg(
                "--format",
                format!("'{other}': expected png or safetensors"),
            )),
            None => Ok(if out.extension().is_some_and(|e| e == "safetensors") {
                Format::Safetensors
            } else {
                Format::Png
            }),
        }
    }
}

impl SampleOutput {
    /// The denoising strip of sample `i`: 2 rows × frames (x_t on top, x̂₀ below), as images
    /// for [`image::write_grid`] with `cols = frames`.
    pub fn strip(&self, i: usize) -> Vec<f32> {
        let [_, c, h, w] = self.shape;
        let per = c * h * w;
        let mut v = Vec::with_capacity(2 * self.strip_x.len() * per);
        for frames in [&self.strip_x, &self.strip_x0] {
            for f in frames.iter() {
                v.extend_from_slice(&f[i * per..(i + 1) * per]);
            }
        }
        v
    }

    /// Write the grid (or tensors) to `out`, and with strips one `<stem>_strip_<i>.png` per
    /// sample beside it. Returns every path written.
    pub fn save(&self, out: &Path, format: Format) -> Result<Vec<PathBuf>> {
        let [n, c, h, w] = self.shape;
        let mut written = vec![out.to_path_buf()];
        match format {
            Format::Png => image::write_grid(out, &self.images, n, c, h, w, self.cols)?,
            Format::Safetensors => {
                let mut t = vec![("images".to_string(), self.shape.to_vec(), self.images.clone())];
                if let Some(l) = &self.labels {
                    t.push(("labels".into(), vec![n], l.iter().map(|&v| v as f32).collect()));
                }
                checkpoint::write_atomic(out, &checkpoint::serialize_f32(&t, None)?)?;
            }
        }
        if !self.strip_x.is_empty() {
            let stem = out
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let frames = self.strip_x.len();
            for i in 0..n {
                let p = out.with_file_name(format!("{stem}_strip_{i}.png"));
                image::write_grid(&p, &self.strip(i), 2 * frames, c, h, w, frames)?;
                written.push(p);
            }
        }
        Ok(written)
    }
}
