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
use ddpm_wgpu::diffusion::train::{preset_for, Control, FitEnd, FitOptions, Progress, TrainConfig, Trainer};
use ddpm_wgpu::gpu::adapter;
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

#[derive(Args)]
struct SampleArgs {
    /// A diffusers UNet2DModel folder (config.json + diffusion_pytorch_model.safetensors, optional
    /// scheduler_config.json), or a pipeline folder with unet/ and scheduler/. Default:
    /// assets/default-model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// ddpm (ancestral, Ho et al.), ddim (Song et al.) or dpm++ (DPM-Solver++(2M)).
    #[arg(long, default_value = "ddpm")]
    sampler: String,
    /// Inference steps (default: T for ddpm, 50 for ddim, 25 for dpm++).
    #[arg(long)]
    steps: Option<usize>,
    /// Number of images (for a class-conditional model without --class: spread over the
    /// classes, one grid row per class).
    #[arg(long, default_value_t = 64)]
    n: usize,
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
    #[arg(long, default_value_t = 1.0)]
    guidance: f32,
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
}

#[derive(Args)]
struct EvalArgs {
    /// Compute the negative log-likelihood bound in bits/dim (L_T + Σ L_{t−1} + L_0, one model
    /// call per timestep per batch).
    #[arg(long)]
    bpd: bool,
    /// Split the timesteps into K equal buckets and report the mean L_simple ‖ε − ε_θ(x_t, t)‖²
    /// per bucket (t uniform inside the bucket, one draw per image; K model calls per batch).
    #[arg(long, default_value_t = 0)]
    loss_buckets: usize,
    /// Class-conditional models: evaluate with the null class of label dropout (the
    /// unconditional model) instead of the dataset's labels.
    #[arg(long)]
    null_class: bool,
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
    let opts = ContextOptions::from_env().merged(cli.backend.clone(), cli.adapter.clone());
    let res = match cli.cmd {
        Cmd::Info => info(&opts),
        Cmd::Train(args) => train(&opts, args),
        Cmd::Sample(args) => sample(&opts, args),
        Cmd::Eval(args) => eval(&opts, args),
        Cmd::Predict { model, input, output } => predict(&opts, &model, &input, &output),
    };
    if let Err(e) = res {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn info(opts: &ContextOptions) -> Result<()> {
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
    println!(
        "  features: f16={} subgroups={} timestamps={}",
        ctx.has_f16(),
        ctx.has_subgroups(),
        ctx.features().contains(wgpu::Features::TIMESTAMP_QUERY)
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
            None => preset_for(&args.preset, &data, args.label_dropout)?,
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
                print_profile(&ctx, s.step);
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

/// Per-kernel wall times of the last step, when `DDPM_PROFILE` is set.
fn print_profile(ctx: &Context, step: u64) {
    let prof = ctx.take_profile();
    if prof.is_empty() {
        return;
    }
    let total: f64 = prof.iter().map(|p| p.2).sum();
    eprintln!("step {step}: kernel wall time {total:.3} s (DDPM_PROFILE)");
    for (name, calls, secs) in prof.iter().take(25) {
        eprintln!(
            "  {:>7.1} ms {:>5.1}% {calls:>5}x {name}",
            secs * 1e3,
            100.0 * secs / total
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
    let req = SampleRequest {
        sampler: args.sampler,
        steps: args.steps,
        n: args.n,
        seed: args.seed,
        class: args.class,
        per_class: args.per_class,
        guidance: args.guidance,
        eta: args.eta,
        spacing,
        strip: args.strip,
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
    let out = generate::sample_model(&ctx, &model, &req, |i, _| bar.set_position(i as u64))?;
    bar.finish();
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
    if !args.bpd && args.loss_buckets == 0 {
        return Err(Error::arg(
            "--bpd / --loss-buckets",
            "nothing to evaluate: pass --bpd and/or --loss-buckets K",
        ));
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
        let bar = indicatif::ProgressBar::new((batches * t) as u64);
        bar.set_style(bar_style.clone());
        let (mut totals, mut priors) = (Vec::new(), Vec::new());
        let mut terms = vec![0.0; t];
        for b in 0..batches {
            let (lo, hi) = (b * args.batch_size, ((b + 1) * args.batch_size).min(n));
            let r = ddpm_wgpu::diffusion::bpd::eval_bpd(
                &ctx,
                &model.unet,
                &schedule,
                model.scheduler.variance,
                model.scheduler.prediction,
                model.scheduler.clip_sample,
                &data.images[lo * per..hi * per],
                labels.as_ref().map(|l| &l[lo..hi]),
                hi - lo,
                args.seed.wrapping_add(b as u64),
                |i, _| bar.set_position((b * t + i) as u64),
            )?;
            for (acc, v) in terms.iter_mut().zip(&r.terms) {
                *acc += v * (hi - lo) as f64 / n as f64;
            }
            totals.extend(r.total);
            priors.extend(r.prior);
        }
        bar.finish_and_clear();
        let mean = totals.iter().sum::<f64>() / n as f64;
        let var = totals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n.max(2) - 1) as f64;
        println!(
            "bits/dim: {mean:.4} ± {:.4} (standard error, {n} images, T = {t}{label_note})",
            (var / n as f64).sqrt()
        );
        println!(
            "  L_T (prior) {:.5}  L_0 (decoder) {:.4}  Σ L_t-1 {:.4}",
            priors.iter().sum::<f64>() / n as f64,
            terms[0],
            terms[1..].iter().sum::<f64>()
        );
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
