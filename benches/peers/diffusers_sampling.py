#!/usr/bin/env python3
"""Peer benchmark: DDPM sampling cost of diffusers' UNet2DModel (small preset) on the CPU.

Two numbers, each as one JSON line:
  unet_forward: one UNet forward (eval, torch.no_grad) at batch 16  -> images/s = 16 / time
  ddim50:       a full 50-step DDIM loop (eta 0) at batch 16         -> images/s = 16 / loop time

    /work/venv/bin/python benches/peers/diffusers_sampling.py
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
import diffusers  # noqa: E402
from diffusers import DDIMScheduler, UNet2DModel  # noqa: E402

from _presets import PRESETS  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=list(PRESETS), default="small")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--forward-reps", type=int, default=20)
    ap.add_argument("--ddim-steps", type=int, default=50)
    ap.add_argument("--loops", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = UNet2DModel(**PRESETS[a.preset]).to(torch.float32).eval()
    params = sum(p.numel() for p in model.parameters())
    c, s, b = model.config.in_channels, model.config.sample_size, a.batch
    load0 = os.getloadavg()[0]
    common = {"preset": a.preset, "batch": b, "params": params, "threads": a.threads,
              "torch": torch.__version__, "diffusers": diffusers.__version__}

    with torch.no_grad():
        x = torch.randn(b, c, s, s)
        t = torch.full((b,), 500, dtype=torch.long)
        for _ in range(3):
            model(x, t)
        times = []
        c0 = time.process_time()
        for _ in range(a.forward_reps):
            t0 = time.perf_counter()
            model(x, t)
            times.append(time.perf_counter() - t0)
        mean = sum(times) / len(times)
        cpu = (time.process_time() - c0) / a.forward_reps
        print(json.dumps({"peer": "diffusers_sampling", "what": "unet_forward", **common,
                          "reps": a.forward_reps, "sec_mean": mean, "sec_min": min(times),
                          "images_per_s": b / mean, "cpu_s_mean": cpu,
                          "loadavg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)]}), flush=True)

        sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear")
        loop_times = []
        load0 = os.getloadavg()[0]
        c0 = time.process_time()
        for _ in range(a.loops):
            sched.set_timesteps(a.ddim_steps)
            x = torch.randn(b, c, s, s)
            t0 = time.perf_counter()
            for tt in sched.timesteps:
                eps = model(x, tt).sample
                x = sched.step(eps, tt, x, eta=0.0).prev_sample
            loop_times.append(time.perf_counter() - t0)
        mean = sum(loop_times) / len(loop_times)
        cpu = (time.process_time() - c0) / a.loops
        print(json.dumps({"peer": "diffusers_sampling", "what": f"ddim{a.ddim_steps}", **common,
                          "loops": a.loops, "sec_per_loop_mean": mean, "sec_per_loop_min": min(loop_times),
                          "images_per_s": b / mean, "cpu_s_per_loop": cpu,
                          "loadavg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)]}), flush=True)


if __name__ == "__main__":
    main()
