//! The `ddpm` command-line tool: a thin client of the library.

// The doc comments below are clap's --help text, where `<out>` reads as a placeholder.
#![allow(rustdoc::invalid_html_tags)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use ddpm_wgpu::checkpoint::{self, TensorFile};
use ddpm_wgpu::data::Dataset;
use ddpm_wgpu::diffusion::eval;
use ddpm_wgpu::diffusion::generate::{self, Format, SampleRequest};
use ddpm_wgpu::diffusion::sample::Spacing;
use ddpm_wgpu::diffusion::sde::{Predictor, SdeParams};
use ddpm_wgpu::diffusion::train::{preset_for, Control, FitEnd, FitOptions, Progress, TrainConfig, Trainer};
use ddpm_wgpu::gpu::adapter;
use ddpm_wgpu::nn::NoisyClassifier;
use ddpm_wgpu::{Context, ContextOptions, Error, Result, UNet, UNetConfig};

#[derive(Parser)]
#[command(name = "ddpm", version, about = "Train and sample DDPMs on any GPU wgpu reaches")]
struct Cli {
    /// Backend(s) to search: vulkan, metal, dx12, gl (comma-separated). Env: DDPM_BACKEND.
    #[arg(long, global = true)]
    backend: Option<String>,
    /// Adapter index (see `ddpm info`) or part of its name. Env: DDPM_ADAPTER.
    #[arg(long, global = true)]
    adapter: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List every adapter seen, the chosen one, its limits and features.
    Info,
    /// Train a DDPM (Algorithm 1) on a dataset; checkpoints are resumable.
    Train(TrainArgs),
    /// Draw samples from a diffusers UNet2DModel folder and write a PNG grid.
    Sample(SampleArgs),
    /// Evaluate a model on a dataset: --bpd gives the variational bound in bits/dim,
    /// --loss-buckets K the training loss per timestep bucket.
    Eval(EvalArgs),
    /// Train the small image classifier used by `ddpm eval --fd` (features for the Fréchet
    /// distance, judge of guided samples) with this engine's kernels.
    TrainClassifier(ClassifierArgs),
    /// Run ε_θ on tensors from a safetensors file (`sample`, `timestep`, optional `class_labels`).
    Predict {
        /// A diffusers model folder (config.json + diffusion_pytorch_model.safetensors).
        #[arg(long)]
        model: PathBuf,
        /// Input safetensors file.
        #[arg(long)]
        input: PathBuf,
        /// Output safetensors file (tensor `sample`).
        #[arg(long)]
        output: PathBuf,
    },
}

/// Where `ddpm sample` looks for a model when --model is not given.
const DEFAULT_MODEL: &str = "assets/default-model";
/// Where `ddpm eval --fd` looks for the classifier when --classifier is not given.
const DEFAULT_CLASSIFIER: &str = "assets/fmnist-classifier";

#[derive(Args)]
struct ClassifierArgs {
    /// Training images (as for `ddpm train`; labels required).
    #[arg(long)]
    data: PathBuf,
    /// IDX label file of --data. Default: the images file name with "images" → "labels".
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Held-out images to report accuracy on (e.g. the t10k files).
    #[arg(long)]
    test_data: Option<PathBuf>,
    /// IDX label file of --test-data.
    #[arg(long)]
    test_labels: Option<PathBuf>,
    /// Channels to read PNGs as (1 or 3).
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// Pad images to this size (a multiple of 8; as the diffusion model sees them).
    #[arg(long, default_value_t = 32)]
    image_size: usize,
    /// Passes over the training set (a fraction cuts the last one short).
    #[arg(long, default_value_t = 2.0)]
    epochs: f64,
    /// Train guided diffusion's noise-aware classifier p(y | x_t, t) instead (the U-Net's encoder
    /// with a pooled head, on images noised by the forward process), for `ddpm sample
    /// --noisy-classifier`: small (the small U-Net's encoder) or tiny (half its width).
    #[arg(long)]
    noisy: Option<String>,
    /// Images per step.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Peak learning rate (Adam, linear decay to 0).
    #[arg(long, default_value_t = 2e-3)]
    lr: f32,
    /// Seed of the initialisation and the shuffling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder (config.json, model.safetensors, metrics.json).
    #[arg(long, default_value = "runs/classifier")]
    out: PathBuf,
}

/// A model folder's recommended `ddpm sample` settings (`sample_defaults.json`, all optional),
/// used for each flag that is not given.
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SampleDefaults {
    sampler: Option<String>,
    steps: Option<usize>,
    n: Option<usize>,
    per_class: Option<usize>,
    guidance: Option<f32>,
}

impl SampleDefaults {
    const FILE: &str = "sample_defaults.json";

    fn read(model_dir: &Path) -> Result<Self> {
        let path = model_dir.join(Self::FILE);
        if !path.is_file() {
            return Ok(Self::default());
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
            path,
            msg: format!(
                "{e}; expected an object with any of sampler, steps, n, per_class, guidance (or delete the file)"
            ),
        })
    }
}

#[derive(Args)]
struct SampleArgs {
    /// A diffusers UNet2DModel folder (config.json + diffusion_pytorch_model.safetensors, optional
    /// scheduler_config.json), or a pipeline folder with unet/ and scheduler/. Default:
    /// assets/default-model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// ddpm (ancestral, Ho et al.), ddim (Song et al.) or dpm++ (DPM-Solver++(2M)); or the
    /// score-SDE view of the model: sde-em (reverse-SDE Euler–Maruyama), pc (predictor–corrector),
    /// ode-heun (probability-flow ODE, Heun), langevin (annealed Langevin dynamics). Default:
    /// the model folder's sample_defaults.json, else ddpm.
    #[arg(long)]
    sampler: Option<String>,
    /// Inference steps (default: T for ddpm, sde-em and pc, 50 for ddim, 25 for dpm++, 100 for
    /// ode-heun); for langevin the number of noise levels (default 10).
    #[arg(long)]
    steps: Option<usize>,
    /// pc: the predictor, ancestral (DDPM's step with σ² = β; default) or reverse-diffusion.
    #[arg(long)]
    predictor: Option<String>,
    /// pc: signal-to-noise ratio r of the Langevin corrector (default 0.16).
    #[arg(long)]
    snr: Option<f64>,
    /// pc: Langevin corrector steps before each predictor step (default 1; 0 = predictor only).
    #[arg(long)]
    corrector_steps: Option<usize>,
    /// langevin: Langevin steps per noise level (default 100).
    #[arg(long)]
    langevin_steps: Option<usize>,
    /// langevin: step scale ε; level i steps by α_i = ε·σ_i²/σ_L² (default 2e-5).
    #[arg(long)]
    langevin_eps: Option<f64>,
    /// Number of images (for a class-conditional model without --class: spread over the
    /// classes, one grid row per class). Default: sample_defaults.json, else 64.
    #[arg(long)]
    n: Option<usize>,
    /// Samples per class (class-conditional models without --class); default n / classes.
    #[arg(long)]
    per_class: Option<usize>,
    /// Seed of all the noise: the same seed gives the same images.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output file: a PNG grid, or safetensors with --format safetensors / a .safetensors name.
    #[arg(long, default_value = "samples.png")]
    out: PathBuf,
    /// png or safetensors (default: from the --out extension).
    #[arg(long)]
    format: Option<String>,
    /// Make every sample this class (class-conditional models).
    #[arg(long)]
    class: Option<u32>,
    /// Classifier-free guidance weight w: ε = ε_∅ + w (ε_c − ε_∅); 1 = plain conditional.
    /// Default: sample_defaults.json, else 1.
    #[arg(long)]
    guidance: Option<f32>,
    /// DDIM's η (0 = deterministic, 1 ≈ DDPM).
    #[arg(long)]
    eta: Option<f64>,
    /// Timestep spacing: leading, trailing or linspace (default as diffusers: leading for
    /// ddpm/ddim, linspace for dpm++).
    #[arg(long)]
    spacing: Option<String>,
    /// Also write a denoising strip per sample (x_t above predicted x̂₀ at ~10 steps) as
    /// <out>_strip_<i>.png.
    #[arg(long)]
    strip: bool,
    /// Classifier guidance: a noise-aware classifier folder (`ddpm train-classifier --noisy`);
    /// --class / --per-class then name its classes (an unconditional model can be steered too).
    #[arg(long)]
    noisy_classifier: Option<PathBuf>,
    /// Classifier guidance scale s: DDPM shifts the mean by s Σ ∇ log p(y|x_t), the other
    /// samplers shift ε̂ by −s √(1−ᾱ_t) ∇ log p(y|x_t).
    #[arg(long, default_value_t = 1.0)]
    classifier_scale: f32,
}

#[derive(Args)]
struct EvalArgs {
    /// Compute the negative log-likelihood bound in bits/dim (L_T + Σ L_{t−1} + L_0, one model
    /// call per timestep per batch).
    #[arg(long)]
    bpd: bool,
    /// --bpd from K + 1 model calls per batch instead of T: L_0 and L_T exactly, Σ L_t from one
    /// timestep drawn in each of K equal strata, weighted by the stratum size (unbiased; reported
    /// with its spread). 0 = every timestep (the exact bound).
    #[arg(long, default_value_t = 0)]
    bpd_timesteps: usize,
    /// --bpd: also evaluate this second model folder on the same images, timesteps and noise,
    /// and report the paired difference (this model − --model) with its standard error: the
    /// way to tell whether two models differ by less than the spread of either bound.
    #[arg(long)]
    vs_model: Option<PathBuf>,
    /// Split the timesteps into K equal buckets and report the mean L_simple ‖ε − ε_θ(x_t, t)‖²
    /// per bucket (t uniform inside the bucket, one draw per image; K model calls per batch).
    #[arg(long, default_value_t = 0)]
    loss_buckets: usize,
    /// Class-conditional models: evaluate with the null class of label dropout (the
    /// unconditional model) instead of the dataset's labels.
    #[arg(long)]
    null_class: bool,
    /// Fréchet distance between --n generated images and the first --n images of --data, in
    /// the feature space of --classifier; also the classifier's accuracy on the generated
    /// images of each requested class (class-conditional models).
    #[arg(long)]
    fd: bool,
    /// Exact likelihood through the probability-flow ODE (Song et al. 2021): bits/dim of the
    /// uniformly dequantised data, the divergence from Hutchinson's estimator (one Rademacher
    /// probe per image), integrated from t = 1e-5 to 1 by --ode-solver (heun: 2·--ode-steps
    /// model calls per batch, each a forward and a backward pass). ε-prediction models.
    #[arg(long)]
    ode_bpd: bool,
    /// --ode-bpd's integrator: heun (fixed steps, --ode-steps of them) or rk45 (adaptive
    /// Dormand–Prince 5(4) with scipy's error control, as score_sde reports; --ode-tol).
    #[arg(long, default_value = "heun")]
    ode_solver: String,
    /// Heun steps of --ode-bpd; with rk45, the most steps (accepted and rejected) per batch.
    #[arg(long, default_value_t = 100)]
    ode_steps: usize,
    /// rk45's relative and absolute tolerance (score_sde: 1e-5).
    #[arg(long, default_value_t = 1e-5)]
    ode_tol: f64,
    /// Classifier folder for --fd (written by `ddpm train-classifier`). Default:
    /// assets/fmnist-classifier.
    #[arg(long)]
    classifier: Option<PathBuf>,
    /// Sampler for --fd: ddpm, ddim or dpm++.
    #[arg(long, default_value = "dpm++")]
    sampler: String,
    /// Inference steps for --fd.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Classifier-free guidance weight for --fd (1 = plain conditional).
    #[arg(long, default_value_t = 1.0)]
    guidance: f32,
    /// --fd: steer the samples with this noise-aware classifier (classifier guidance, as
    /// `ddpm sample --noisy-classifier`).
    #[arg(long)]
    noisy_classifier: Option<PathBuf>,
    /// --fd: the classifier guidance scale s.
    #[arg(long, default_value_t = 1.0)]
    classifier_scale: f32,
    /// --fd: read the generated images from this safetensors file (`images`, optional `labels`,
    /// as written by `ddpm sample --format safetensors` or --save-samples) instead of sampling.
    #[arg(long)]
    samples: Option<PathBuf>,
    /// --fd: also write the generated images (and labels) to this safetensors file.
    #[arg(long)]
    save_samples: Option<PathBuf>,
    /// A diffusers UNet2DModel folder (as for `ddpm sample`). Default: assets/default-model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Dataset (as for `ddpm train`): PNG folder, IDX file or CIFAR-10 binary batches.
    #[arg(long)]
    data: PathBuf,
    /// IDX label file (for a class-conditional model on IDX images).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Number of images (the first N of the dataset).
    #[arg(long, default_value_t = 16)]
    n: usize,
    /// Images per model call.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Seed of the forward-process noise (and of the bucket timesteps).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
struct TrainArgs {
    /// Dataset: a folder of PNGs (subfolders = classes), an IDX image file (.gz ok), or a
    /// CIFAR-10 binary batch file or folder of them.
    #[arg(long)]
    data: PathBuf,
    /// IDX label file (for IDX images). Default: the images file name with "images" → "labels".
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Train unconditionally even when the dataset has labels.
    #[arg(long)]
    unconditional: bool,
    /// Channels to read PNGs as (1 or 3).
    #[arg(long, default_value_t = 3)]
    channels: usize,
    /// Pad images to this size (centred, background −1). 28×28 Fashion-MNIST → 32.
    #[arg(long)]
    image_size: Option<usize>,
    /// Model preset: small or ddpm-cifar10 (ignored with --config).
    #[arg(long, default_value = "small")]
    preset: String,
    /// A diffusers UNet2DModel config.json to train instead of a preset.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output folder: checkpoints, metrics.jsonl, sample grids.
    #[arg(long, default_value = "runs/train")]
    out: PathBuf,
    /// Optimizer steps to reach (a resumed run continues to this total).
    #[arg(long, default_value_t = 1000)]
    steps: u64,
    /// Images per step.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Micro-batches per step.
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-4)]
    lr: f32,
    /// Warmup steps.
    #[arg(long, default_value_t = 5000)]
    warmup: u64,
    /// Global gradient-norm clip (0 disables).
    #[arg(long, default_value_t = 1.0)]
    clip: f32,
    /// EMA decay.
    #[arg(long, default_value_t = 0.9999)]
    ema_decay: f32,
    /// Dropout inside ResNet blocks (overrides the preset).
    #[arg(long)]
    dropout: Option<f32>,
    /// Disable random horizontal flips (use for digits/text).
    #[arg(long)]
    no_hflip: bool,
    /// Label dropout probability (classifier-free guidance).
    #[arg(long, default_value_t = 0.1)]
    label_dropout: f32,
    /// Seed for every random choice.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// β schedule: linear, scaled_linear, sqrt, cosine.
    #[arg(long, default_value = "linear")]
    beta_schedule: String,
    /// What the model learns to predict: epsilon (ε, Ho et al.), sample (x₀) or v_prediction (v).
    #[arg(long, default_value = "epsilon")]
    prediction_type: String,
    /// Diffusion steps T.
    #[arg(long, default_value_t = 1000)]
    timesteps: usize,
    /// Objective: simple (L_simple, Ho et al.), hybrid (L_simple + λ·L_vlb with a learned
    /// variance, improved DDPM) or vlb (L_vlb alone). hybrid and vlb give the preset 2·C output
    /// channels and write variance_type "learned_range".
    #[arg(long, default_value = "simple")]
    loss: String,
    /// λ of the hybrid loss.
    #[arg(long, default_value_t = 0.001)]
    vlb_weight: f32,
    /// uniform, or importance (t ∝ √E\[L_t²\] over the last 10 L_t per t, reweighted; needs --loss
    /// hybrid or vlb).
    #[arg(long, default_value = "uniform")]
    timestep_sampler: String,
    /// Save a checkpoint every N steps (and at the end, and on Ctrl-C).
    #[arg(long, default_value_t = 500)]
    save_every: u64,
    /// Continue from the checkpoint in --out.
    #[arg(long)]
    resume: bool,
    /// Write a PNG grid of EMA-model samples (DDIM, 20 steps) as <out>/samples_<step>.png every
    /// N steps; 0 disables.
    #[arg(long, default_value_t = 500)]
    sample_every: u64,
    /// Images per sample grid: per class (one row each) for a class-conditional model.
    #[arg(long, default_value_t = 8)]
    sample_n: usize,
}

fn main() {
    let cli = Cli::parse();
    // Before any adapter is enumerated (the driver reads it once): see tune_software_threads.
    let lp_threads = ddpm_wgpu::tune_software_threads();
    let opts = ContextOptions::from_env().merged(cli.backend.clone(), cli.adapter.clone());
    let res = match cli.cmd {
        Cmd::Info => info(&opts, lp_threads),
        Cmd::Train(args) => train(&opts, args),
        Cmd::Sample(args) => sample(&opts, args),
        Cmd::Eval(args) => eval(&opts, args),
        Cmd::TrainClassifier(args) => train_classifier(&opts, args),
        Cmd::Predict { model, input, output } => predict(&opts, &model, &input, &output),
    };
    if let Err(e) = res {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn info(opts: &ContextOptions, lp_threads: Option<usize>) -> Result<()> {
    let all = adapter::list(opts)?;
    println!("adapters seen ({}):", all.len());
    for a in &all {
        println!(
            "  [{}] {} | backend {:?} | {:?} | driver {}",
            a.index, a.name, a.backend, a.device_type, a.driver
        );
    }
    let ctx = Context::with_options(opts)?;
    let l = ctx.limits();
    let i = ctx.adapter_info();
    println!("chosen: {}", ctx.adapter_name());
    println!(
        "  max_storage_buffer_binding_size: {} MiB",
        l.max_storage_buffer_binding_size >> 20
    );
    println!("  max_buffer_size: {} MiB", l.max_buffer_size >> 20);
    println!(
        "  max_compute_workgroup_storage_size: {} KiB",
        l.max_compute_workgroup_storage_size >> 10
    );
    println!(
        "  max_compute_invocations_per_workgroup: {}",
        l.max_compute_invocations_per_workgroup
    );
    println!(
        "  max_compute_workgroups_per_dimension: {}",
        l.max_compute_workgroups_per_dimension
    );
    println!(
        "  max_storage_buffers_per_shader_stage: {}",
        l.max_storage_buffers_per_shader_stage
    );
    println!("  subgroup size: {}..{}", i.subgroup_min_size, i.subgroup_max_size);
    if i.device_type == wgpu::DeviceType::Cpu {
        if let Some(n) = lp_threads {
            println!("  llvmpipe worker threads (LP_NUM_THREADS): {n}");
        }
    }
    println!(
        "  features: f16={} subgroups={} timestamps={} int64={} (wide u64 loads: {})",
        ctx.has_f16(),
        ctx.has_subgroups(),
        ctx.features().contains(wgpu::Features::TIMESTAMP_QUERY),
        ctx.features().contains(wgpu::Features::SHADER_INT64),
        if ctx.wide_loads() { "on" } else { "off" }
    );
    Ok(())
}

fn load_dataset(
    p: &Path,
    labels: Option<&Path>,
    channels: usize,
    unconditional: bool,
    image_size: Option<usize>,
) -> Result<Dataset> {
    let mut ds = Dataset::open(p, labels, channels)?;
    if unconditional {
        ds.drop_labels();
    }
    if let Some(s) = image_size {
        ds.pad_to(s)?;
    }
    Ok(ds)
}

fn train(opts: &ContextOptions, args: TrainArgs) -> Result<()> {
    if args.save_every == 0 {
        return Err(Error::arg("--save-every", "must be at least 1"));
    }
    if args.sample_every > 0 && args.sample_n == 0 {
        return Err(Error::arg("--sample-n", "must be at least 1 (or --sample-every 0)"));
    }
    let ctx = Context::with_options(opts)?;
    let data = load_dataset(
        &args.data,
        args.labels.as_deref(),
        args.channels,
        args.unconditional,
        args.image_size,
    )?;
    eprintln!(
        "dataset: {} images of {}×{}×{}, {} classes",
        data.len(),
        data.channels,
        data.height,
        data.width,
        data.num_classes
    );
    let mut trainer = if args.resume {
        let t = Trainer::resume(&ctx, &args.out)?;
        eprintln!("resumed at step {} from {}", t.step, args.out.display());
        t
    } else {
        let mut cfg = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
                UNetConfig::from_json(&text)?
            }
            None => {
                let mut cfg = preset_for(&args.preset, &data, args.label_dropout)?;
                // improved DDPM: a learned variance doubles the output channels (ε, v)
                if ddpm_wgpu::diffusion::hybrid::LossType::parse(&args.loss)?.learned_variance() {
                    cfg.out_channels = 2 * cfg.in_channels;
                }
                cfg
            }
        };
        if let Some(d) = args.dropout {
            cfg.dropout = d;
        }
        cfg.validate()?;
        let mut unet = UNet::new(cfg)?;
        unet.init_random(&ctx, args.seed)?;
        let config = TrainConfig {
            batch_size: args.batch_size,
            grad_accum: args.grad_accum,
            lr: args.lr,
            warmup_steps: args.warmup,
            clip_grad_norm: (args.clip > 0.0).then_some(args.clip),
            ema_decay: args.ema_decay,
            hflip: !args.no_hflip,
            label_dropout: if data.num_classes > 0 { args.label_dropout } else { 0.0 },
            seed: args.seed,
            beta_schedule: args.beta_schedule.clone(),
            num_train_timesteps: args.timesteps,
            prediction_type: args.prediction_type.clone(),
            loss_type: args.loss.clone(),
            vlb_weight: args.vlb_weight,
            timestep_sampler: args.timestep_sampler.clone(),
            ..TrainConfig::default()
        };
        Trainer::new(&ctx, unet, config)?
    };
    eprintln!(
        "model: {} parameters on {}",
        trainer.unet.params.count(),
        ctx.adapter_name()
    );
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    std::fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;
    let metrics_path = args.out.join("metrics.jsonl");
    if args.resume {
        forget_metrics_after(&metrics_path, trainer.step)?;
    }
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .map_err(|e| Error::io(&metrics_path, e))?;
    let bar = indicatif::ProgressBar::new(args.steps);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]")
            .expect("valid template"),
    );
    bar.set_position(trainer.step);
    let mut smoothed: Option<f32> = None;
    let opts = FitOptions {
        steps: args.steps,
        out: Some(args.out.clone()),
        save_every: args.save_every,
        sample_every: args.sample_every,
        sample_n: args.sample_n,
        sample_steps: 20,
    };
    let end = trainer.fit(&ctx, &data, &opts, |p| {
        match *p {
            Progress::Step {
                stats: s,
                images_per_s,
                elapsed,
            } => {
                print_profile(&ctx, &format!("step {}", s.step));
                smoothed = Some(smoothed.map_or(s.loss, |m| 0.98 * m + 0.02 * s.loss));
                bar.set_position(s.step);
                bar.set_message(format!(
                    "loss {:.4} (avg {:.4}) {:.1} img/s",
                    s.loss,
                    smoothed.unwrap_or(s.loss),
                    images_per_s
                ));
                use std::io::Write;
                let _ = writeln!(
                    metrics,
                    "{}",
                    serde_json::json!({"step": s.step, "loss": s.loss, "grad_norm": s.grad_norm, "lr": s.lr,
                        "images_per_s": images_per_s, "wall_s": elapsed.as_secs_f64()})
                );
            }
            Progress::SampleGrid { path, step } => bar.println(format!("step {step}: wrote {}", path.display())),
            _ => {}
        }
        if stop.load(Ordering::SeqCst) {
            Control::Stop
        } else {
            Control::Continue
        }
    });
    match end {
        Ok(FitEnd::Finished) => {
            bar.finish();
            eprintln!("done: step {}; checkpoint in {}", trainer.step, args.out.display());
            Ok(())
        }
        Ok(FitEnd::Stopped) => {
            bar.abandon_with_message("interrupted");
            eprintln!(
                "saved {} at step {}; continue with --resume",
                args.out.display(),
                trainer.step
            );
            Err(Error::Interrupted)
        }
        Err(e @ (Error::NonFinite { .. } | Error::OutOfMemory { .. })) => {
            bar.abandon();
            eprintln!("stopping: the last good checkpoint in {} is kept", args.out.display());
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// Per-kernel wall times of what ran since the last call (a training step, a sampling run),
/// when `DDPM_PROFILE` is set: the 25 largest, or `DDPM_PROFILE_TOP` of them.
fn print_profile(ctx: &Context, what: &str) {
    let prof = ctx.take_profile();
    if prof.is_empty() {
        return;
    }
    let total: f64 = prof.iter().map(|p| p.secs).sum();
    let cpu: f64 = prof.iter().map(|p| p.cpu_secs).sum();
    eprintln!("{what}: kernel wall time {total:.3} s, CPU time {cpu:.3} s (DDPM_PROFILE; cores = CPU / wall)");
    for p in prof.iter().take(
        std::env::var("DDPM_PROFILE_TOP")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(25),
    ) {
        let rate = p.gflops().map_or(String::new(), |g| format!("{g:>6.2} GFLOP/s "));
        eprintln!(
            "  {:>7.1} ms {:>5.1}% {:>5}x {:>4.2} cores {rate}{}",
            p.secs * 1e3,
            100.0 * p.secs / total,
            p.calls,
            p.cpu_secs / p.secs.max(1e-12),
            p.name
        );
    }
}

/// Drop the metrics.jsonl lines of steps after `step`: a run that stopped after its last
/// checkpoint (a NaN, a crash) logged steps that the resumed run trains again.
fn forget_metrics_after(path: &Path, step: u64) -> Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let keep = |line: &str| {
        serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v["step"].as_u64())
            .is_none_or(|s| s <= step)
    };
    let kept: String = text.lines().filter(|l| keep(l)).map(|l| format!("{l}\n")).collect();
    if kept.len() != text.len() {
        checkpoint::write_atomic(path, kept.as_bytes())?;
    }
    Ok(())
}

fn sample(opts: &ContextOptions, args: SampleArgs) -> Result<()> {
    let model_dir = args.model.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_MODEL));
    if args.model.is_none() && !model_dir.exists() {
        return Err(Error::arg(
            "--model",
            format!(
                "no model at {} (the default); pass --model DIR with a diffusers UNet2DModel folder, \
                 e.g. --model runs/train/model after `ddpm train`",
                model_dir.display()
            ),
        ));
    }
    let format = Format::parse(args.format.as_deref(), &args.out)?;
    let spacing = args.spacing.as_deref().map(Spacing::parse).transpose()?;
    let predictor = args.predictor.as_deref().map(Predictor::parse).transpose()?;
    let d = SampleDefaults::read(&model_dir)?;
    let req = SampleRequest {
        sampler: args.sampler.or(d.sampler).unwrap_or_else(|| "ddpm".into()),
        steps: args.steps.or(d.steps),
        n: args.n.or(d.n).unwrap_or(64),
        seed: args.seed,
        class: args.class,
        per_class: args.per_class.or(d.per_class.filter(|_| args.n.is_none())),
        guidance: args.guidance.or(d.guidance).unwrap_or(1.0),
        eta: args.eta,
        spacing,
        strip: args.strip,
        sde: SdeParams {
            predictor,
            snr: args.snr,
            corrector_steps: args.corrector_steps,
            langevin_steps: args.langevin_steps,
            langevin_eps: args.langevin_eps,
        },
    };
    let ctx = Context::with_options(opts)?;
    let model = generate::load_model(&ctx, &model_dir)?;
    // Refuse a bad request before the (slow) sampling starts.
    let (sampler, spacing, steps) = generate::resolve(&model, &req)?;
    eprintln!(
        "model {} ({} parameters) on {}; scheduler {}; {sampler:?}, {steps} steps, {spacing:?} spacing",
        model.dir.display(),
        model.unet.params.count(),
        ctx.adapter_name(),
        model
            .scheduler_path
            .as_ref()
            .map_or("DDPM defaults (no scheduler_config.json)".into(), |p| p
                .display()
                .to_string()),
    );
    let bar = indicatif::ProgressBar::new(steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} step {pos}/{len} [{elapsed_precise}<{eta_precise}]")
            .expect("valid template"),
    );
    let started = Instant::now();
    let noisy = args
        .noisy_classifier
        .as_deref()
        .map(|dir| NoisyClassifier::load(&ctx, dir))
        .transpose()?;
    let out = match &noisy {
        Some(clf) => generate::sample_model_with_classifier(&ctx, &model, &req, clf, args.classifier_scale, |i, _| {
            bar.set_position(i as u64)
        })?,
        None => generate::sample_model(&ctx, &model, &req, |i, _| bar.set_position(i as u64))?,
    };
    bar.finish();
    print_profile(&ctx, "sampling");
    let written = out.save(&args.out, format)?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{} samples in {secs:.1} s ({:.2} s/step); wrote {}{}",
        out.shape[0],
        secs / steps as f64,
        args.out.display(),
        if written.len() > 1 {
            format!(" and {} strips", written.len() - 1)
        } else {
            String::new()
        }
    );
    Ok(())
}

fn eval(opts: &ContextOptions, args: EvalArgs) -> Result<()> {
    if !args.bpd && args.loss_buckets == 0 && !args.fd && !args.ode_bpd {
        return Err(Error::arg(
            "--bpd / --ode-bpd / --loss-buckets / --fd",
            "nothing to evaluate: pass --bpd, --ode-bpd, --loss-buckets K and/or --fd",
        ));
    }
    if args.vs_model.is_some() && !args.bpd {
        return Err(Error::arg("--vs-model", "compares bits/dim: pass --bpd with it"));
    }
    let model_dir = args.model.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_MODEL));
    if args.model.is_none() && !model_dir.exists() {
        return Err(Error::arg(
            "--model",
            format!(
                "no model at {} (the default); pass --model DIR with a diffusers UNet2DModel folder",
                model_dir.display()
            ),
        ));
    }
    if args.n == 0 || args.batch_size == 0 {
        return Err(Error::arg("--n / --batch-size", "must be at least 1"));
    }
    let ctx = Context::with_options(opts)?;
    let model = generate::load_model(&ctx, &model_dir)?;
    let cfg = model.unet.config();
    let data = load_dataset(
        &args.data,
        args.labels.as_deref(),
        cfg.in_channels,
        cfg.num_class_embeds.is_none(),
        Some(cfg.sample_size),
    )?;
    if data.channels != cfg.in_channels {
        return Err(Error::arg(
            "--data",
            format!("{} channels; the model takes {}", data.channels, cfg.in_channels),
        ));
    }
    let n = args.n.min(data.len());
    let labels = eval::eval_labels(&model.unet, &model.scheduler, &data.labels, n, args.null_class)?;
    let label_note = match (&labels, args.null_class) {
        (None, _) => String::new(),
        (Some(_), true) => ", null class".into(),
        (Some(_), false) => ", the dataset's labels".into(),
    };
    let per = data.image_size();
    let schedule = model.scheduler.schedule()?;
    let t = schedule.len();
    let batches = n.div_ceil(args.batch_size);
    // Argument errors before the (slow) bound.
    let ranges = if args.loss_buckets > 0 {
        eval::bucket_ranges(t, args.loss_buckets)?
    } else {
        Vec::new()
    };
    let bar_style =
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} model calls [{elapsed_precise}<{eta_precise}]")
            .expect("valid template");
    if args.bpd {
        let vs = match &args.vs_model {
            Some(dir) => {
                let other = generate::load_model(&ctx, dir)?;
                let (a, b) = (model.unet.config(), other.unet.config());
                if (a.in_channels, a.sample_size, a.num_class_embeds)
                    != (b.in_channels, b.sample_size, b.num_class_embeds)
                    || other.scheduler.schedule()?.betas != schedule.betas
                {
                    return Err(Error::arg(
                        "--vs-model",
                        format!(
                            "{} differs from {} in channels, size, classes or β schedule; a paired \
                             bound needs the same data and timesteps for both",
                            dir.display(),
                            model_dir.display()
                        ),
                    ));
                }
                Some(other)
            }
            None => None,
        };
        let calls = if args.bpd_timesteps == 0 {
            t
        } else {
            1 + args.bpd_timesteps.min(t - 1)
        };
        let runs = 1 + vs.is_some() as usize;
        let bar = indicatif::ProgressBar::new((batches * calls * runs) as u64);
        bar.set_style(bar_style.clone());
        let bound = |m: &generate::Model, b: usize, pass: usize| -> Result<ddpm_wgpu::diffusion::bpd::Bpd> {
            let (lo, hi) = (b * args.batch_size, ((b + 1) * args.batch_size).min(n));
            let done = (b * runs + pass) * calls;
            if args.bpd_timesteps == 0 {
                ddpm_wgpu::diffusion::bpd::eval_bpd(
                    &ctx,
                    &m.unet,
                    &schedule,
                    m.scheduler.variance,
                    m.scheduler.prediction,
                    m.scheduler.clip_sample,
                    &data.images[lo * per..hi * per],
                    labels.as_ref().map(|l| &l[lo..hi]),
                    hi - lo,
                    args.seed.wrapping_add(b as u64),
                    |i, _| bar.set_position((done + i) as u64),
                )
            } else {
                ddpm_wgpu::diffusion::bpd::eval_bpd_sampled(
                    &ctx,
                    &m.unet,
                    &schedule,
                    m.scheduler.variance,
                    m.scheduler.prediction,
                    m.scheduler.clip_sample,
                    &data.images[lo * per..hi * per],
                    labels.as_ref().map(|l| &l[lo..hi]),
                    hi - lo,
                    args.bpd_timesteps,
                    args.seed.wrapping_add(b as u64),
                    |i, _| bar.set_position((done + i) as u64),
                )
            }
        };
        let (mut totals, mut priors) = (Vec::new(), Vec::new());
        let mut batch_means = Vec::new();
        let mut terms = vec![0.0; t];
        // --vs-model: per image and per batch, (other − this) on the same draws.
        let (mut diffs, mut batch_diffs) = (Vec::new(), Vec::new());
        for b in 0..batches {
            let (lo, hi) = (b * args.batch_size, ((b + 1) * args.batch_size).min(n));
            let r = bound(&model, b, 0)?;
            for (acc, v) in terms.iter_mut().zip(&r.terms) {
                *acc += v * (hi - lo) as f64 / n as f64;
            }
            let batch_mean = r.total.iter().sum::<f64>() / r.total.len() as f64;
            if let Some(other) = &vs {
                let o = bound(other, b, 1)?;
                diffs.extend(o.total.iter().zip(&r.total).map(|(x, y)| x - y));
                batch_diffs.push(o.total.iter().sum::<f64>() / o.total.len() as f64 - batch_mean);
            }
            batch_means.push(batch_mean);
            totals.extend(r.total);
            priors.extend(r.prior);
        }
        bar.finish_and_clear();
        let mean = totals.iter().sum::<f64>() / n as f64;
        let sd_err = |v: &[f64]| {
            let m = v.iter().sum::<f64>() / v.len() as f64;
            let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len().max(2) - 1) as f64;
            (var / v.len() as f64).sqrt()
        };
        // Images of a batch share its timestep draw: with sampled timesteps the batches are the
        // independent units.
        let (err, err_note) = if args.bpd_timesteps == 0 {
            (
                sd_err(&totals),
                format!("standard error, {n} images, T = {t}{label_note}"),
            )
        } else if batches >= 2 {
            (
                sd_err(&batch_means),
                format!(
                    "standard error over {batches} batches, each with its own {} timesteps of T = {t}; \
                     {n} images{label_note}",
                    calls - 1
                ),
            )
        } else {
            (
                sd_err(&totals),
                format!(
                    "image-to-image standard error only: one batch, one draw of {} timesteps of T = {t}; \
                     {n} images{label_note}",
                    calls - 1
                ),
            )
        };
        println!("bits/dim: {mean:.4} ± {err:.4} ({err_note})");
        println!(
            "  L_T (prior) {:.5}  L_0 (decoder) {:.4}  Σ L_t-1 {:.4}",
            priors.iter().sum::<f64>() / n as f64,
            terms[0],
            terms[1..].iter().sum::<f64>()
        );
        if let Some(dir) = &args.vs_model {
            let diff = diffs.iter().sum::<f64>() / n as f64;
            let vs_mean = mean + diff;
            let (derr, unit) = if args.bpd_timesteps == 0 || batches < 2 {
                (sd_err(&diffs), "images")
            } else {
                (sd_err(&batch_diffs), "batches")
            };
            println!(
                "--vs-model {}: bits/dim {vs_mean:.4} on the same images, timesteps and noise",
                dir.display()
            );
            println!(
                "  paired difference ({} − {}): {diff:+.4} ± {derr:.4} (standard error over {} {unit}); \
                 |difference| / error = {:.1}",
                dir.display(),
                model_dir.display(),
                if unit == "images" { n } else { batches },
                diff.abs() / derr.max(f64::MIN_POSITIVE)
            );
        }
    }
    if args.ode_bpd {
        ode_bpd_eval(&ctx, &model, &data, n, labels.as_deref(), &label_note, &args)?;
    }
    if args.fd {
        fd_eval(&ctx, &model, &data, n, &args)?;
    }
    if args.loss_buckets > 0 {
        let bar = indicatif::ProgressBar::new((batches * ranges.len()) as u64);
        bar.set_style(bar_style);
        let r = eval::loss_buckets(
            &ctx,
            &model.unet,
            &schedule,
            model.scheduler.prediction,
            &data.images[..n * per],
            labels.as_deref(),
            n,
            args.loss_buckets,
            args.batch_size,
            args.seed,
            |i, _| bar.set_position(i as u64),
        )?;
        bar.finish_and_clear();
        println!(
            "L_simple per timestep bucket ({n} images, T = {t}, seed {}{label_note}):",
            args.seed
        );
        for ((lo, hi), m) in r.ranges.iter().zip(&r.mean) {
            println!("  t {lo:>5}..{:<5} {m:.5}", hi - 1);
        }
    }
    Ok(())
}

fn predict(opts: &ContextOptions, model: &Path, input: &Path, output: &Path) -> Result<()> {
    let ctx = Context::with_options(opts)?;
    let unet = UNet::from_pretrained(&ctx, model)?;
    let file = TensorFile::read(input)?;
    let x = file.upload(&ctx, "sample")?;
    let t = file.upload(&ctx, "timestep")?;
    let labels = if file.contains("class_labels") {
        Some(file.upload(&ctx, "class_labels")?)
    } else {
        None
    };
    let out = unet.forward(&ctx, &x, &t, labels.as_ref())?;
    let data = ctx.read(&out)?;
    let bytes = checkpoint::serialize_f32(&[("sample".to_string(), out.shape().to_vec(), data)], None)?;
    checkpoint::write_atomic(output, &bytes)?;
    eprintln!("wrote {} ({:?})", output.display(), out.shape());
    Ok(())
}

/// `ddpm eval --ode-bpd`: bits/dim through the probability-flow ODE.
fn ode_bpd_eval(
    ctx: &Context,
    model: &generate::Model,
    data: &Dataset,
    n: usize,
    labels: Option<&[u32]>,
    label_note: &str,
    args: &EvalArgs,
) -> Result<()> {
    use ddpm_wgpu::diffusion::likelihood::{
        bits_per_dim, dequantize, ode_log_likelihood, LikelihoodOptions, OdeSolver, UNetEps,
    };
    use ddpm_wgpu::diffusion::Prediction;
    if model.scheduler.prediction != Prediction::Epsilon {
        return Err(Error::arg(
            "--ode-bpd",
            format!(
                "{}: the model predicts {:?}; the ODE likelihood takes ε-prediction models",
                model.dir.display(),
                model.scheduler.prediction
            ),
        ));
    }
    let solver = match args.ode_solver.as_str() {
        "heun" => OdeSolver::Heun,
        "rk45" => OdeSolver::Rk45 {
            rtol: args.ode_tol,
            atol: args.ode_tol,
        },
        other => return Err(Error::arg("--ode-solver", format!("{other:?}: expected heun or rk45"))),
    };
    let schedule = model.scheduler.schedule()?;
    let cfg = model.unet.config();
    let per = data.image_size();
    let batches = n.div_ceil(args.batch_size);
    let bar = indicatif::ProgressBar::new(batches as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} batch {pos}/{len} [{elapsed_precise}<{eta_precise}]")
            .expect("valid template"),
    );
    let started = Instant::now();
    let mut bpd = Vec::with_capacity(n);
    let (mut prior, mut delta) = (0.0, 0.0);
    let (mut evals, mut steps) = (0usize, 0usize);
    for b in 0..batches {
        let (lo, hi) = (b * args.batch_size, ((b + 1) * args.batch_size).min(n));
        let xs = dequantize(&data.images[lo * per..hi * per], args.seed.wrapping_add(b as u64));
        let x = ctx.upload(&[hi - lo, cfg.in_channels, cfg.sample_size, cfg.sample_size], &xs)?;
        let lt = labels
            .map(|l| ctx.upload(&[hi - lo], &l[lo..hi].iter().map(|&v| v as f32).collect::<Vec<_>>()))
            .transpose()?;
        let m = UNetEps {
            unet: &model.unet,
            labels: lt.as_ref(),
        };
        let opts = LikelihoodOptions {
            steps: args.ode_steps,
            solver,
            seed: args.seed.wrapping_add(b as u64),
            ..Default::default()
        };
        let r = ode_log_likelihood(ctx, &m, &schedule, &x, &opts)?;
        (evals, steps) = (evals + r.evals, steps + r.steps);
        bpd.extend(r.log_p.iter().map(|&lp| bits_per_dim(lp, per)));
        prior += r.prior.iter().sum::<f64>();
        delta += r.delta.iter().sum::<f64>();
        bar.set_position(b as u64 + 1);
    }
    bar.finish_and_clear();
    let mean = bpd.iter().sum::<f64>() / n as f64;
    let var = bpd.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n.max(2) - 1) as f64;
    let how = match solver {
        OdeSolver::Heun => format!("{} Heun steps", args.ode_steps),
        OdeSolver::Rk45 { rtol, .. } => format!(
            "RK45, rtol = atol = {rtol:e}, {:.1} steps and {:.1} model calls per batch",
            steps as f64 / batches as f64,
            evals as f64 / batches as f64
        ),
    };
    println!(
        "ODE bits/dim: {mean:.4} ± {:.4} (standard error; {n} images, uniformly dequantised, {how}, \
         one Rademacher probe per image{label_note}; {:.0} s)",
        (var / n as f64).sqrt(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "  log N(x(1); 0, I) {:.2} nats/image, ∫ div F dt {:.2} nats/image",
        prior / n as f64,
        delta / n as f64
    );
    Ok(())
}

/// `ddpm eval --fd`: sample (or read) n images, embed them and n test images with the
/// classifier, and report the Fréchet distance, its two-real-samples floor, and class accuracy.
fn fd_eval(ctx: &Context, model: &generate::Model, data: &Dataset, n: usize, args: &EvalArgs) -> Result<()> {
    use ddpm_wgpu::diffusion::fd::{frechet_distance, FeatureStats};
    use ddpm_wgpu::nn::Classifier;
    let dir = args
        .classifier
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CLASSIFIER));
    let clf = Classifier::load(ctx, &dir)?;
    let cc = clf.config().clone();
    let cfg = model.unet.config();
    if cc.image_size != cfg.sample_size || cc.in_channels != cfg.in_channels {
        return Err(Error::arg(
            "--classifier",
            format!(
                "{} takes {}×{s}×{s} images; the model makes {}×{m}×{m}",
                dir.display(),
                cc.in_channels,
                cfg.in_channels,
                s = cc.image_size,
                m = cfg.sample_size
            ),
        ));
    }
    if n < 2 {
        return Err(Error::arg("--n", "the Fréchet distance needs at least 2 images"));
    }
    let per = data.image_size();
    // Generated images: read, or sample in batches (one row per class for conditional models).
    let (images, labels) = match &args.samples {
        Some(path) => {
            let f = TensorFile::read(path)?;
            let (shape, v) = f.get("images")?;
            if shape.len() != 4 || shape[1..] != [cc.in_channels, cc.image_size, cc.image_size] || shape[0] < n {
                return Err(Error::arg(
                    "--samples",
                    format!(
                        "{}: images {shape:?}; expected at least [{n}, {}, {s}, {s}]",
                        path.display(),
                        cc.in_channels,
                        s = cc.image_size
                    ),
                ));
            }
            let labels = if f.contains("labels") {
                Some(f.get("labels")?.1[..n].iter().map(|&l| l as u32).collect::<Vec<u32>>())
            } else {
                None
            };
            (v[..n * per].to_vec(), labels)
        }
        None => {
            let classes = cfg.num_class_embeds.map(|k| k - 1);
            let batch = match classes {
                Some(k) => args.batch_size.max(k) / k * k,
                None => args.batch_size,
            };
            let bar = indicatif::ProgressBar::new(n as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} images [{elapsed_precise}<{eta_precise}]",
                )
                .expect("valid template"),
            );
            let (mut images, mut labels) = (Vec::with_capacity(n * per), Vec::with_capacity(n));
            let noisy = args
                .noisy_classifier
                .as_deref()
                .map(|dir| NoisyClassifier::load(ctx, dir))
                .transpose()?;
            let started = Instant::now();
            let mut chunk = 0u64;
            while images.len() < n * per {
                let req = SampleRequest {
                    sampler: args.sampler.clone(),
                    steps: Some(args.steps),
                    n: batch,
                    seed: args.seed.wrapping_add(chunk),
                    class: None,
                    per_class: classes.map(|k| batch / k),
                    guidance: args.guidance,
                    eta: None,
                    spacing: None,
                    strip: false,
                    sde: Default::default(),
                };
                let out = match &noisy {
                    Some(clf) => {
                        generate::sample_model_with_classifier(ctx, model, &req, clf, args.classifier_scale, |_, _| {})?
                    }
                    None => generate::sample_model(ctx, model, &req, |_, _| {})?,
                };
                images.extend_from_slice(&out.images);
                labels.extend(out.labels.unwrap_or_default());
                chunk += 1;
                bar.set_position((images.len() / per).min(n) as u64);
            }
            bar.finish_and_clear();
            images.truncate(n * per);
            labels.truncate(n);
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "sampled {n} images in {secs:.0} s ({:.2} images/s): {} {} steps, guidance {}, seed {}{}",
                n as f64 / secs,
                args.sampler,
                args.steps,
                args.guidance,
                args.seed,
                match &args.noisy_classifier {
                    Some(d) => format!(", classifier guidance {} with {}", args.classifier_scale, d.display()),
                    None => String::new(),
                }
            );
            let labels = if classes.is_some() { Some(labels) } else { None };
            if let Some(path) = &args.save_samples {
                let mut t = vec![(
                    "images".to_string(),
                    vec![n, cc.in_channels, cc.image_size, cc.image_size],
                    images.clone(),
                )];
                if let Some(l) = &labels {
                    t.push(("labels".into(), vec![n], l.iter().map(|&v| v as f32).collect()));
                }
                checkpoint::write_atomic(path, &checkpoint::serialize_f32(&t, None)?)?;
                eprintln!("wrote the samples to {}", path.display());
            }
            (images, labels)
        }
    };
    // As the PNGs a user would see: clamped to [−1, 1] and quantised to 8 bits, like the data.
    let generated: Vec<f32> = images
        .iter()
        .map(|&v| ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() / 127.5 - 1.0)
        .collect();
    let (gen_feats, gen_pred) = clf.embed(ctx, &generated, args.batch_size.max(1))?;
    let (real_feats, real_pred) = clf.embed(ctx, &data.images[..n * per], args.batch_size.max(1))?;
    let dim = cc.features;
    let real = FeatureStats::new(&real_feats, dim)?;
    let fd = frechet_distance(&FeatureStats::new(&gen_feats, dim)?, &real)?;
    println!(
        "Fréchet distance: {fd:.4} ({n} generated vs the first {n} images of {}; {dim}-d features of {})",
        args.data.display(),
        dir.display()
    );
    if data.len() >= 2 * n {
        let (floor_feats, _) = clf.embed(ctx, &data.images[n * per..2 * n * per], args.batch_size.max(1))?;
        let floor = frechet_distance(&FeatureStats::new(&floor_feats, dim)?, &real)?;
        println!(
            "  floor at this n: {floor:.4} (images {n}..{} of the same data vs the first {n})",
            2 * n
        );
    }
    if !data.labels.is_empty() {
        let ok = real_pred.iter().zip(&data.labels).filter(|(p, l)| p == l).count();
        println!(
            "  classifier accuracy on the data: {:.2}% ({ok}/{n})",
            100.0 * ok as f64 / n as f64
        );
    }
    if let Some(labels) = labels {
        let k = cc.num_classes;
        let (mut hit, mut tot) = (vec![0usize; k], vec![0usize; k]);
        for (p, &l) in gen_pred.iter().zip(&labels) {
            if (l as usize) < k {
                tot[l as usize] += 1;
                hit[l as usize] += (*p == l) as usize;
            }
        }
        let all: usize = hit.iter().sum();
        println!(
            "  generated images classified as their requested class: {:.2}% ({all}/{}; chance {:.0}%)",
            100.0 * all as f64 / labels.len() as f64,
            labels.len(),
            100.0 / k as f64
        );
        let per_class: Vec<String> = (0..k)
            .filter(|&c| tot[c] > 0)
            .map(|c| format!("{c}: {:.0}%", 100.0 * hit[c] as f64 / tot[c] as f64))
            .collect();
        println!("  per class: {}", per_class.join(", "));
    }
    Ok(())
}

fn train_classifier(opts: &ContextOptions, args: ClassifierArgs) -> Result<()> {
    use ddpm_wgpu::nn::{ClassifierConfig, ClassifierTrainOptions, ClassifierTrainer};
    let train = load_dataset(
        &args.data,
        args.labels.as_deref(),
        args.channels,
        false,
        Some(args.image_size),
    )?;
    if train.labels.is_empty() {
        return Err(Error::arg(
            "--data",
            format!(
                "{} has no labels; a classifier needs them (--labels FILE)",
                args.data.display()
            ),
        ));
    }
    let test = match &args.test_data {
        Some(p) => Some(load_dataset(
            p,
            args.test_labels.as_deref(),
            args.channels,
            false,
            Some(args.image_size),
        )?),
        None => None,
    };
    if let Some(size) = &args.noisy {
        return train_noisy_classifier(opts, &args, size, &train, test.as_ref());
    }
    let config = ClassifierConfig {
        in_channels: train.channels,
        image_size: args.image_size,
        num_classes: train.num_classes,
        ..ClassifierConfig::fashion_mnist()
    };
    let ctx = Context::with_options(opts)?;
    let mut tr = ClassifierTrainer::new(
        &ctx,
        config,
        ClassifierTrainOptions {
            batch_size: args.batch_size,
            lr: args.lr,
            seed: args.seed,
        },
    )?;
    eprintln!(
        "classifier: {} parameters on {}; {} training images, {} classes",
        tr.model.params.count(),
        ctx.adapter_name(),
        train.len(),
        train.num_classes
    );
    let started = Instant::now();
    let (bar, mut progress) = classifier_progress(started);
    let mut ema = None;
    tr.fit(&ctx, &train.images, &train.labels, args.epochs, |step, total, loss| {
        ema = Some(progress(step, total, loss))
    })?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let images = ((train.len() / args.batch_size * args.batch_size) as f64 * args.epochs).round();
    let mut metrics = serde_json::json!({
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
        "train_images": train.len(), "final_loss_ema": ema, "wall_s": secs, "images_per_s": images / secs,
        "data": args.data.display().to_string(),
    });
    eprintln!(
        "trained in {secs:.0} s ({:.1} images/s); smoothed final loss {:.4}",
        images / secs,
        ema.unwrap_or(f32::NAN)
    );
    if let Some(test) = &test {
        if test.labels.is_empty() {
            return Err(Error::arg("--test-labels", "the test data has no labels"));
        }
        let (_, pred) = tr.model.embed(&ctx, &test.images, 256)?;
        let ok = pred.iter().zip(&test.labels).filter(|(p, l)| p == l).count();
        let acc = ok as f64 / test.len() as f64;
        println!("test accuracy: {:.2}% ({ok}/{})", 100.0 * acc, test.len());
        metrics["test_accuracy"] = acc.into();
        metrics["test_data"] = args.test_data.as_ref().map(|p| p.display().to_string()).into();
    }
    tr.model.save(&ctx, &args.out)?;
    let text = serde_json::to_string_pretty(&metrics).expect("json");
    checkpoint::write_atomic(&args.out.join("metrics.json"), text.as_bytes())?;
    println!("wrote {}", args.out.display());
    Ok(())
}

/// A progress bar for the classifiers' training, with plain log lines when stderr is not a
/// terminal; returns the callback and the smoothed loss it tracks.
fn classifier_progress(started: Instant) -> (indicatif::ProgressBar, impl FnMut(u32, u32, f32) -> f32) {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} step {pos}/{len} loss {msg} [{elapsed_precise}<{eta_precise}]",
        )
        .expect("valid template"),
    );
    let b = bar.clone();
    let mut ema: Option<f32> = None;
    let cb = move |step: u32, total: u32, loss: f32| {
        b.set_length(total as u64);
        b.set_position(step as u64);
        let e = ema.map_or(loss, |e: f32| 0.98 * e + 0.02 * loss);
        ema = Some(e);
        b.set_message(format!("{e:.4}"));
        // indicatif draws nothing when stderr is not a terminal (a log file): plain lines then.
        if b.is_hidden() && (step.is_multiple_of(100) || step == total) {
            eprintln!(
                "step {step}/{total} loss {e:.4} ({:.0} s)",
                started.elapsed().as_secs_f64()
            );
        }
        e
    };
    (bar, cb)
}

/// `ddpm train-classifier --noisy SIZE`: guided diffusion's noise-aware classifier.
fn train_noisy_classifier(
    opts: &ContextOptions,
    args: &ClassifierArgs,
    size: &str,
    train: &Dataset,
    test: Option<&Dataset>,
) -> Result<()> {
    use ddpm_wgpu::nn::{accuracy_at, NoisyClassifierConfig, NoisyClassifierTrainer};
    let mut config = match size {
        "small" => NoisyClassifierConfig::small(train.channels, train.num_classes),
        "tiny" => NoisyClassifierConfig::tiny(train.channels, train.num_classes),
        other => {
            return Err(Error::arg(
                "--noisy",
                format!("unknown size '{other}'; expected small or tiny"),
            ))
        }
    };
    config.encoder.sample_size = args.image_size;
    let ctx = Context::with_options(opts)?;
    let mut tr = NoisyClassifierTrainer::new(&ctx, config, args.batch_size, args.lr, args.seed)?;
    eprintln!(
        "noise-aware classifier ({size}): {} parameters on {}; {} training images, {} classes; t ~ U{{0..{}}}",
        tr.model.params.count(),
        ctx.adapter_name(),
        train.len(),
        train.num_classes,
        tr.model.config().noise.num_train_timesteps - 1
    );
    let started = Instant::now();
    let (bar, mut progress) = classifier_progress(started);
    let mut last = f32::NAN;
    tr.fit(&ctx, &train.images, &train.labels, args.epochs, |s, total, l| {
        last = progress(s, total, l)
    })?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let images = ((train.len() / args.batch_size * args.batch_size) as f64 * args.epochs).round();
    eprintln!(
        "trained in {secs:.0} s ({:.1} images/s); smoothed final loss {last:.4}",
        images / secs
    );
    let mut metrics = serde_json::json!({
        "noisy": size, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "seed": args.seed, "train_images": train.len(), "final_loss_ema": last, "wall_s": secs,
        "images_per_s": images / secs, "data": args.data.display().to_string(),
    });
    if let Some(test) = test {
        if test.labels.is_empty() {
            return Err(Error::arg("--test-labels", "the test data has no labels"));
        }
        let mut by_t = serde_json::Map::new();
        for t in [0usize, 250, 500, 750, 999] {
            let acc = accuracy_at(&ctx, &tr.model, &test.images, &test.labels, t, 128, args.seed)?;
            println!("test accuracy at t = {t}: {:.2}% ({} images)", 100.0 * acc, test.len());
            by_t.insert(t.to_string(), acc.into());
        }
        metrics["test_accuracy_by_t"] = by_t.into();
    }
    tr.model.save(&ctx, &args.out)?;
    let text = serde_json::to_string_pretty(&metrics).expect("json");
    checkpoint::write_atomic(&args.out.join("metrics.json"), text.as_bytes())?;
    println!("wrote {}", args.out.display());
    Ok(())
}
