#!/usr/bin/env python3
"""Generate the images of the 10,000-sample Fréchet distance (issue 7) with diffusers on the CPU.

`ddpm eval --fd` samples with the engine; at ~2 s per guided image on the software adapter,
10,000 images take hours there. This script draws them from the same model folder with
diffusers' DPMSolverMultistepScheduler (the scheduler whose step() the engine's DPM-Solver++
matches step for step, tests/samplers.rs) and the same classifier-free guidance, and writes a
safetensors file that `ddpm eval --fd --samples FILE` embeds with the engine-trained classifier.
So the model, the metric and the classifier are the same as with the engine's sampler; only
the noise differs (torch's generator instead of the engine's counter-based one).

Matched to `ddpm eval --fd --sampler dpm++ --steps 10 --guidance 3` (src/diffusion/sample.rs):
- DPMSolverMultistepScheduler(num_train_timesteps, linear β from the model's
  scheduler_config.json, algorithm_type "dpmsolver++", solver_order 2), diffusers' defaults
  otherwise (linspace spacing, lower_order_final, final σ 0, no thresholding): the
  configuration of the parity fixtures in tests/fixtures/make_fixtures.py.
- guidance: ε = ε_∅ + w (ε_c − ε_∅), the conditional and unconditional halves in one batch, ∅ the
  null class of label dropout (scheduler_config.json `null_class`, here 10).
- classes: image i asks for class i mod K, so 10,000 images are 1,000 of each class.
- output: `images` [n, C, H, W] float32 as the sampler leaves them (the engine clamps to [−1, 1]
  and quantises to 8 bits before embedding, as for its own samples) and `labels` [n] float32.

The file is rewritten after every --save-every batches (atomically), and a rerun with the same
arguments continues from it, so a long run survives an interruption.

    /work/venv/bin/python benches/peers/diffusers_fd_samples.py --model assets/default-model \\
        --n 10000 --out runs/fd10k/ours.safetensors
    ./target/release/ddpm eval --fd --model assets/default-model --samples runs/fd10k/ours.safetensors \\
        --n 10000 --data /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz \\
        --labels /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz --batch-size 500

--dump-data IDX writes the padded images of a dataset (v/127.5 − 1, 28×28 centred in 32×32 with
background −1, as src/data/mod.rs) in the same format, for the real-vs-real floor.
"""

import argparse
import gzip
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
sys.dont_write_bytecode = True

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402


def write_atomic(tensors, path, meta):
    tmp = path + ".tmp"
    save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=meta)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_idx_images(path, n, size):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    magic, count, h, w = np.frombuffer(raw[:16], dtype=">u4")
    if magic != 2051:
        sys.exit(f"{path}: not an IDX image file (magic {magic:#x}, expected 0x803)")
    n = min(n, int(count))
    px = np.frombuffer(raw[16:16 + n * h * w], dtype=np.uint8).reshape(n, 1, h, w)
    out = np.full((n, 1, size, size), -1.0, dtype=np.float32)
    top, left = (size - h) // 2, (size - w) // 2
    out[:, :, top:top + h, left:left + w] = px.astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="diffusers UNet2DModel folder (ours or diffusers')")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--batch", type=int, default=250, help="images per batch (2x with guidance)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save-every", type=int, default=4, help="batches between rewrites of --out")
    ap.add_argument("--dump-data", help="IDX image file: write its first --n padded images instead")
    ap.add_argument("--size", type=int, default=32, help="--dump-data: padded size")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    torch.set_num_threads(a.threads)

    if a.dump_data:
        imgs = read_idx_images(a.dump_data, a.n, a.size)
        write_atomic({"images": imgs}, a.out, {"source": a.dump_data})
        print(f"wrote {imgs.shape[0]} images of {a.dump_data} to {a.out}")
        return

    from diffusers import DPMSolverMultistepScheduler, UNet2DModel

    model = UNet2DModel.from_pretrained(a.model).to(torch.float32).eval()
    with open(os.path.join(a.model, "scheduler_config.json")) as f:
        sc = json.load(f)
    if sc.get("beta_schedule", "linear") != "linear" or sc.get("prediction_type", "epsilon") != "epsilon":
        sys.exit(f"{a.model}: this script handles linear-β ε-prediction models only")
    k = model.config.num_class_embeds
    null = sc.get("null_class")
    if k is None or null is None:
        sys.exit(f"{a.model}: not a class-conditional model with a null class")
    classes = k - 1
    sched = DPMSolverMultistepScheduler(
        num_train_timesteps=sc.get("num_train_timesteps", 1000), beta_schedule="linear",
        beta_start=sc.get("beta_start", 1e-4), beta_end=sc.get("beta_end", 0.02),
        algorithm_type="dpmsolver++", solver_order=2)
    c, s = model.config.in_channels, model.config.sample_size
    meta = {"model": os.path.abspath(a.model), "sampler": "diffusers DPMSolverMultistepScheduler dpmsolver++ 2M",
            "steps": str(a.steps), "guidance": str(a.guidance), "seed": str(a.seed), "n": str(a.n),
            "batch": str(a.batch)}

    done_imgs, done_labels = [], []
    if os.path.exists(a.out):
        prev = load_file(a.out)
        from safetensors import safe_open
        with safe_open(a.out, "pt") as f:
            pmeta = f.metadata() or {}
        if {k2: pmeta.get(k2) for k2 in meta} != meta:
            sys.exit(f"{a.out} exists with other settings ({pmeta}); remove it or pick another --out")
        done_imgs, done_labels = [prev["images"]], [prev["labels"]]
        print(f"resuming: {prev['images'].shape[0]} images already in {a.out}", flush=True)
    have = sum(t.shape[0] for t in done_imgs)
    t0 = time.perf_counter()
    made = 0
    b = 0
    with torch.no_grad():
        while have < a.n:
            start = have
            m = min(a.batch, a.n - start)
            # every batch has its own generator, so a resumed run draws what an uninterrupted one would
            g = torch.Generator().manual_seed(a.seed * 1_000_003 + start)
            y = torch.arange(start, start + m) % classes
            x = torch.randn(m, c, s, s, generator=g) * sched.init_noise_sigma
            sched.set_timesteps(a.steps)
            labels = torch.cat([y, torch.full((m,), null)])
            for t in sched.timesteps:
                eps = model(torch.cat([x, x]), t, class_labels=labels).sample
                e_c, e_u = eps[:m], eps[m:]
                x = sched.step(e_u + a.guidance * (e_c - e_u), t, x, generator=g).prev_sample
            done_imgs.append(x)
            done_labels.append(y.to(torch.float32))
            have += m
            made += m
            b += 1
            el = time.perf_counter() - t0
            print(f"{have}/{a.n} images, {made / el:.2f} images/s, ETA {(a.n - have) * el / made:.0f} s", flush=True)
            if b % a.save_every == 0 or have >= a.n:
                write_atomic({"images": torch.cat(done_imgs), "labels": torch.cat(done_labels)}, a.out, meta)
    print(json.dumps({"what": "diffusers_fd_samples", "made": made,
                      "seconds": round(time.perf_counter() - t0, 1), "out": a.out, **meta}))


if __name__ == "__main__":
    main()
