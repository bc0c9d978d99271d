#!/usr/bin/env python3
"""Peer run: train the shipped default model (the `small` preset on Fashion-MNIST) with
PyTorch + diffusers, matching our engine's training run hyper-parameter for hyper-parameter, so
that the two can be compared at the same number of steps (issue 7).

Our run (assets/training/fmnist-small/README.md; its options are stored in
training_state.safetensors' `train_config` metadata):

    ddpm train --data /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz --channels 1 \\
        --image-size 32 --no-hflip --preset small --batch-size 32 --lr 5e-4 --warmup 200 \\
        --ema-decay 0.999 --label-dropout 0.1 --seed 0

What this script matches (and where in our code each comes from):

- model: diffusers' UNet2DModel built from our trainer's own config.json
  (assets/training/fmnist-small/model/config.json: the `small` preset of src/nn/config.rs with
  in/out_channels 1, sample_size 32, num_class_embeds 11 = 10 classes + the null class, dropout
  0.1, 8 GroupNorm groups, norm_eps 1e-6), so the architecture and parameter count (1,114,209)
  are identical. Initialisation: PyTorch's defaults, which are what src/nn/mod.rs init_random
  draws (U(±1/√fan_in) for conv/linear weights and biases, N(0, 1) class embedding, GroupNorm
  weight 1 / bias 0); same distributions, not the same numbers.
- data (src/data/mod.rs from_idx, pad_to): the 60,000 training images of the gzipped IDX files,
  pixel v ↦ v/127.5 − 1, centred-padded 28×28 → 32×32 with background −1; labels 0..9 from the
  IDX label file. No horizontal flips (--no-hflip).
- batch (src/diffusion/train.rs Trainer::micro_batch): 32 images per step, each drawn
  uniformly *with replacement* from the dataset (our trainer draws index = hash(seed, step,
  item) mod N, not epochs of a shuffled permutation); t ~ U{0..999} per image; label replaced by
  the null class 10 (= num_class_embeds − 1) with probability 0.1 per image; ε ~ N(0, I).
- forward process (src/diffusion/schedule.rs, ops/ddpm.rs): linear β from 1e-4 to 0.02 over
  T = 1000, ᾱ in float64, x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε with both factors rounded to float32;
  prediction_type epsilon.
- loss (ops/loss.rs): L_simple = mean over all elements of (ε_θ(x_t, t, y) − ε)², in train mode
  (dropout 0.1 in every ResNet block).
- gradient clipping (train.rs, ops/optim.rs clip_scale): global L2 norm clipped to 1.0 with
  coefficient min(1, 1/(‖g‖ + 1e-6)), i.e. torch.nn.utils.clip_grad_norm_; the logged grad_norm is
  the norm before clipping, as ours.
- optimizer (TrainConfig::default, ops/optim.rs adam_step): Adam, β₁ 0.9, β₂ 0.999, ε 1e-8
  added outside the square root, bias-corrected, no weight decay = torch.optim.Adam.
- learning rate (train.rs train_step): lr_k = 5e-4 · min(1, k/200) at 1-based step k: linear
  warmup over 200 steps from 2.5e-6, then constant (no decay).
- EMA (train.rs, ema_warmup true in the stored options): after each optimizer step,
  ema ← d·ema + (1 − d)·θ with d = min(0.999, (1 + s)/(10 + s)), s = steps taken before this one
  (0-based), starting from a copy of the initial weights. diffusers' EMAModel uses a different
  warmup (decay 0 on the first update), so it is done by hand here.
- output: the EMA weights as a diffusers folder DIR/model (config.json,
  diffusion_pytorch_model.safetensors, and our scheduler_config.json copied, which also names
  the null class), loadable by `ddpm sample --model DIR/model`; one JSON line per step in
  DIR/metrics.jsonl with the fields of our trainer (step, loss, lr, grad_norm, images_per_s,
  wall_s; images/s and wall time counted from the start of the first step).

What differs (without --draws/--init): every random draw (initial weights, data order, t, ε,
label dropout, dropout masks) comes from torch's generator seeded with --seed instead of our keyed SplitMix64 hashes,
so the two runs see different batches and noise; only their distributions match. Floating-point
summation order differs too (CPU float32 here). Neither affects what is compared: loss curves and
samples at equal step counts.

Run (CPU; nice it if something else is training on the machine):

    nice -n 10 /work/venv/bin/python benches/peers/torch_train_fmnist.py --steps 3 --out /tmp/t
    nice -n 10 /work/venv/bin/python benches/peers/torch_train_fmnist.py --steps 3800 \\
        --out runs/torch-fmnist-small --threads 2
    ddpm sample --model runs/torch-fmnist-small/model --sampler ddim --steps 20 --n 10 --out s.png

Replaying the engine's run (everything drawn as the engine drew it: initial weights, images,
labels after label dropout, t, eps; only the dropout masks are torch's):

    cargo run --release --example train_draws -- assets/training/fmnist-small \
        /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz \
        /usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz 2000 runs/draws2000
    /work/venv/bin/python benches/peers/torch_train_fmnist.py --steps 2000 \
        --draws runs/draws2000/draws.safetensors --init runs/draws2000/init \
        --out runs/torch-replay-2000

`--replay data,t,eps` picks which draws to take from the file (the rest from torch), `--init`
alone starts torch's own draws from the engine's initial weights, and `--dropout 0` removes the
one remaining difference.

Ctrl-C stops early and still writes the EMA model of the last finished step.
"""

import argparse
import copy
import gzip
import json
import math
import os
import shutil
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
sys.dont_write_bytecode = True  # no __pycache__ next to the scripts

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from diffusers import UNet2DModel  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OURS = os.path.join(REPO, "assets", "training", "fmnist-small", "model")
FMNIST = "/usr/share/datasets/fashion-mnist"

# Our run's options (training_state.safetensors `train_config`, TrainConfig::default for the rest).
BATCH = 32
LR = 5e-4
WARMUP = 200
CLIP = 1.0
BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
WEIGHT_DECAY = 0.0
EMA_DECAY = 0.999
EMA_WARMUP = True
LABEL_DROPOUT = 0.1
T = 1000
BETA_START, BETA_END = 1e-4, 0.02
IMAGE_SIZE = 32


def read_idx(path, magic):
    """An IDX file (gzipped or not) as a uint8 array shaped by its header."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    m = int.from_bytes(raw[0:4], "big")
    if m != magic:
        raise SystemExit(f"{path}: magic {m:#010x}, expected {magic:#010x}")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(dims):
        raise SystemExit(f"{path}: header says {dims}, file holds {data.size} bytes of data")
    return data.reshape(dims)


def load_data(images_path, labels_path):
    """Images as float32 [N, 1, 32, 32] in [-1, 1] padded with -1, labels as int64 [N]
    (src/data/mod.rs from_idx + pad_to)."""
    px = read_idx(images_path, 0x0803)
    labels = read_idx(labels_path, 0x0801).astype(np.int64)
    n, h, w = px.shape
    if labels.shape[0] != n:
        raise SystemExit(f"{labels_path}: {labels.shape[0]} labels for {n} images")
    x = np.full((n, 1, IMAGE_SIZE, IMAGE_SIZE), -1.0, dtype=np.float32)
    top, left = (IMAGE_SIZE - h) // 2, (IMAGE_SIZE - w) // 2
    x[:, 0, top:top + h, left:left + w] = px.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    return torch.from_numpy(x), torch.from_numpy(labels), int(labels.max()) + 1


def schedule_tables():
    """sqrt(abar_t), sqrt(1 - abar_t) for t = 0..T-1 (float64, then rounded to float32, as
    src/diffusion/schedule.rs)."""
    betas = np.linspace(BETA_START, BETA_END, T, dtype=np.float64)
    abar = np.cumprod(1.0 - betas)
    return (torch.from_numpy(np.sqrt(abar).astype(np.float32)),
            torch.from_numpy(np.sqrt(1.0 - abar).astype(np.float32)))


def lr_at(step0):
    """Learning rate of the step with 0-based index step0 (train.rs train_step)."""
    if WARMUP == 0:
        return LR
    return LR * min(1.0, (step0 + 1) / WARMUP)


def ema_decay_at(step0):
    if EMA_WARMUP:
        return min(EMA_DECAY, (1.0 + step0) / (10.0 + step0))
    return EMA_DECAY


def save_model(ema_model, out):
    model_dir = os.path.join(out, "model")
    ema_model.save_pretrained(model_dir, safe_serialization=True)
    shutil.copyfile(os.path.join(OURS, "scheduler_config.json"),
                    os.path.join(model_dir, "scheduler_config.json"))
    return model_dir


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, required=True, help="optimizer steps to take")
    ap.add_argument("--out", default="runs/torch-fmnist-small", help="output folder")
    ap.add_argument("--seed", type=int, default=0, help="torch.manual_seed")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--data", default=f"{FMNIST}/train-images-idx3-ubyte.gz", help="IDX images")
    ap.add_argument("--labels", default=f"{FMNIST}/train-labels-idx1-ubyte.gz", help="IDX labels")
    ap.add_argument("--config", default=os.path.join(OURS, "config.json"),
                    help="UNet2DModel config.json (default: the one our trainer wrote)")
    ap.add_argument("--draws", help="replay the engine's draws: OUT/draws.safetensors of "
                    "`cargo run --release --example train_draws` (steps are capped at its length)")
    ap.add_argument("--replay", default="data,t,eps",
                    help="with --draws: which of the draws to replay: data (the images and their "
                    "labels after label dropout), t, eps; the rest come from torch's generator")
    ap.add_argument("--init", help="start from this diffusers folder's weights (e.g. OUT/init of "
                    "train_draws: the engine's initial weights) instead of torch's init")
    ap.add_argument("--dropout", type=float, help="override the config's dropout")
    args = ap.parse_args()
    if args.steps < 1:
        ap.error("--steps must be at least 1")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    x_all, y_all, num_classes = load_data(args.data, args.labels)
    n_data = x_all.shape[0]
    print(f"dataset: {n_data} images of {tuple(x_all.shape[1:])}, {num_classes} classes",
          file=sys.stderr)

    config = UNet2DModel.load_config(args.config)
    if args.dropout is not None:
        config["dropout"] = args.dropout
    model = UNet2DModel.from_config(config).to(torch.float32)
    if args.init:
        from safetensors.torch import load_file
        state = load_file(os.path.join(args.init, "diffusion_pytorch_model.safetensors"))
        model.load_state_dict(state, strict=True)
        print(f"initial weights from {args.init}", file=sys.stderr)
    draws, replay = None, set()
    if args.draws:
        from safetensors.torch import load_file
        draws = load_file(args.draws)
        replay = set(args.replay.split(",")) - {""}
        unknown = replay - {"data", "t", "eps"}
        if unknown:
            ap.error(f"--replay: unknown {sorted(unknown)}; choose from data, t, eps")
        if draws["t"].shape[1] != BATCH:
            ap.error(f"--draws {args.draws}: batch {draws['t'].shape[1]}, this run's is {BATCH}")
        if args.steps > draws["t"].shape[0]:
            print(f"--draws holds {draws['t'].shape[0]} steps: stopping there", file=sys.stderr)
            args.steps = draws["t"].shape[0]
        print(f"replaying the engine's {sorted(replay)} from {args.draws}", file=sys.stderr)
    k = model.config.num_class_embeds
    if k != num_classes + 1:
        raise SystemExit(f"num_class_embeds {k}: expected {num_classes} classes + the null class")
    null_class = k - 1
    model.train()
    params = [p for p in model.parameters()]
    print(f"model: {sum(p.numel() for p in params)} parameters, torch {torch.__version__}, "
          f"{args.threads} threads", file=sys.stderr)

    ema_model = copy.deepcopy(model).eval().requires_grad_(False)
    ema_params = list(ema_model.parameters())
    opt = torch.optim.Adam(params, lr=lr_at(0), betas=BETAS, eps=ADAM_EPS,
                           weight_decay=WEIGHT_DECAY)
    sqrt_ab, sqrt_1m_ab = schedule_tables()

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "train_config.json"), "w") as f:
        json.dump({
            "peer": "torch_train_fmnist", "torch": torch.__version__, "seed": args.seed,
            "threads": args.threads, "batch_size": BATCH, "lr": LR, "warmup_steps": WARMUP,
            "clip_grad_norm": CLIP, "beta1": BETAS[0], "beta2": BETAS[1], "adam_eps": ADAM_EPS,
            "weight_decay": WEIGHT_DECAY, "ema_decay": EMA_DECAY, "ema_warmup": EMA_WARMUP,
            "hflip": False, "label_dropout": LABEL_DROPOUT, "beta_schedule": "linear",
            "num_train_timesteps": T, "beta_start": BETA_START, "beta_end": BETA_END,
            "prediction_type": "epsilon", "null_class": null_class,
            "dropout": model.config.dropout, "init": args.init, "draws": args.draws,
            "replay": sorted(replay),
        }, f, indent=2)
    metrics = open(os.path.join(args.out, "metrics.jsonl"), "w")

    step = 0
    started = time.perf_counter()
    try:
        while step < args.steps:
            idx = torch.randint(0, n_data, (BATCH,))
            x0 = x_all[idx]
            y = y_all[idx].clone()
            y[torch.rand(BATCH) < LABEL_DROPOUT] = null_class
            t = torch.randint(0, T, (BATCH,))
            eps = torch.randn_like(x0)
            if "data" in replay:
                x0, y = draws["x0"][step], draws["y"][step].long()
            if "t" in replay:
                t = draws["t"][step].long()
            if "eps" in replay:
                eps = draws["eps"][step]
            x_t = sqrt_ab[t].view(-1, 1, 1, 1) * x0 + sqrt_1m_ab[t].view(-1, 1, 1, 1) * eps

            lr = lr_at(step)
            for g in opt.param_groups:
                g["lr"] = lr
            pred = model(x_t, t, class_labels=y).sample
            loss = F.mse_loss(pred, eps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, CLIP)
            loss_v, norm_v = loss.item(), grad_norm.item()
            if not (math.isfinite(loss_v) and math.isfinite(norm_v)):
                raise SystemExit(f"step {step + 1}: non-finite loss {loss_v} / grad norm {norm_v}")
            opt.step()
            d = ema_decay_at(step)
            with torch.no_grad():
                torch._foreach_lerp_(ema_params, params, 1.0 - d)
            step += 1

            elapsed = time.perf_counter() - started
            ips = step * BATCH / max(elapsed, 1e-9)
            metrics.write(json.dumps({"step": step, "loss": loss_v, "grad_norm": norm_v, "lr": lr,
                                      "images_per_s": ips, "wall_s": elapsed}) + "\n")
            metrics.flush()
            print(f"step {step}/{args.steps} loss {loss_v:.4f} grad_norm {norm_v:.3f} "
                  f"lr {lr:.3g} {ips:.1f} img/s", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"stopped after step {step}", file=sys.stderr)
    wall = time.perf_counter() - started
    metrics.close()
    model_dir = save_model(ema_model, args.out)
    print(f"wrote the EMA model of step {step} to {model_dir}", file=sys.stderr)
    print(json.dumps({"peer": "torch_train_fmnist", "steps": step, "batch_size": BATCH,
                      "threads": args.threads, "wall_s": wall,
                      "images_per_s": step * BATCH / max(wall, 1e-9)}))


if __name__ == "__main__":
    main()
