#!/usr/bin/env python3
"""Peer benchmark: one full DDPM training step of diffusers' UNet2DModel with PyTorch on the CPU.

A step = draw t and noise, x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, forward, L_simple =
mean((eps_theta(x_t, t) - eps)^2), backward, gradient clipping at norm 1.0, Adam (lr 1e-4) step,
EMA update (decay 0.9999): the engine's train_step with TrainConfig's defaults. Train mode
(dropout on where the preset has it). Prints one JSON line per preset.

    /work/venv/bin/python benches/peers/torch_train_step.py                  # both presets
    /work/venv/bin/python benches/peers/torch_train_step.py --preset small --steps 20
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import diffusers  # noqa: E402
from diffusers import DDPMScheduler, UNet2DModel  # noqa: E402

from _presets import PRESETS  # noqa: E402

DEFAULTS = {  # batch, warm-up steps, timed steps
    "small": (32, 3, 10),
    "ddpm-cifar10": (8, 1, 3),
}


def make_step(preset, batch):
    """The model's parameter count and a function that runs one training step."""
    torch.manual_seed(0)
    model = UNet2DModel(**PRESETS[preset]).to(torch.float32)
    model.train()
    params = list(model.parameters())
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.Adam(params, lr=1e-4)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    c, s = model.config.in_channels, model.config.sample_size
    x0 = torch.randn(batch, c, s, s).clamp(-1, 1)

    def step():
        t = torch.randint(0, 1000, (batch,))
        eps = torch.randn_like(x0)
        x_t = sched.add_noise(x0, eps, t)
        loss = F.mse_loss(model(x_t, t).sample, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1.0 - 0.9999)
        return loss.item()

    return sum(p.numel() for p in params), step


def bench(preset, batch, warmup, steps, threads):
    params, step = make_step(preset, batch)
    for _ in range(warmup):
        step()
    times = []
    load0 = os.getloadavg()[0]
    c0 = time.process_time()
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    cpu = time.process_time() - c0
    total = sum(times)
    return {
        "peer": "torch_train_step",
        "preset": preset,
        "batch": batch,
        "params": params,
        "threads": threads,
        "warmup_steps": warmup,
        "steps": steps,
        "sec_per_step_mean": total / steps,
        "sec_per_step_min": min(times),
        "images_per_s": batch * steps / total,
        # CPU seconds (all threads) per step, and the 1-minute load average before/after: a wall
        # time far above cpu_s_per_step / threads means other processes shared the cores.
        "cpu_s_per_step": cpu / steps,
        "loadavg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=list(PRESETS) + ["all"], default="all")
    ap.add_argument("--batch", type=int, help="default: small 32, ddpm-cifar10 8")
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for preset in (PRESETS if a.preset == "all" else [a.preset]):
        b, w, n = DEFAULTS[preset]
        r = bench(preset, a.batch or b, w if a.warmup is None else a.warmup, a.steps or n, a.threads)
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
