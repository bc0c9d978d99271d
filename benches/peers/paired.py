#!/usr/bin/env python3
"""The engine's training step against PyTorch's, in alternating bursts: a same-run ratio that
the noise of a shared machine moves less than back-to-back benches do.

Both sides stay loaded and warm: the engine as `step_time PRESET BATCH serve` (examples/
step_time.rs, which runs N steps per line N on stdin and answers with one JSON line), PyTorch
in this process (torch_train_step.py's step: the same step, clipping and EMA included). Each
pair runs a burst of the same number of steps on each side, the order swapped every pair
(ABBA), and its ratio is engine images/s over PyTorch images/s from the burst means. Prints
one JSON line per pair and a summary line (median, min and max of the pair ratios).

    cargo build --release --example step_time
    /work/venv/bin/python benches/peers/paired.py --preset small --pairs 6
    /work/venv/bin/python benches/peers/paired.py --preset ddpm-cifar10 --pairs 4
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from torch_train_step import DEFAULTS, make_step  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# Steps per burst: a few seconds on each side on a 2-core machine.
BURST = {"small": 5, "ddpm-cifar10": 1}


def engine_binary():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "release", "examples", "step_time")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=list(DEFAULTS), default="small")
    ap.add_argument("--batch", type=int, help="default: small 32, ddpm-cifar10 8")
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--steps", type=int, help="steps per burst (default: small 5, ddpm-cifar10 1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--engine", default=engine_binary(), help="the step_time example's binary")
    a = ap.parse_args()
    if not os.path.exists(a.engine):
        sys.exit(f"{a.engine} not found: run `cargo build --release --example step_time` or pass --engine")
    batch = a.batch or DEFAULTS[a.preset][0]
    steps = a.steps or BURST[a.preset]
    torch.set_num_threads(a.threads)

    engine = subprocess.Popen([a.engine, a.preset, str(batch), "serve"], cwd=ROOT, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    ready = engine.stdout.readline().strip()
    if ready != "ready":
        sys.exit(f"engine did not start (said {ready!r}, exit {engine.poll()})")

    def engine_burst():
        engine.stdin.write(f"{steps}\n")
        engine.stdin.flush()
        line = engine.stdout.readline()
        if not line:
            sys.exit(f"engine exited ({engine.wait()})")
        return json.loads(line)["sec_per_step_mean"]

    _, torch_step = make_step(a.preset, batch)
    for _ in range(DEFAULTS[a.preset][1]):
        torch_step()

    def torch_burst():
        t0 = time.perf_counter()
        for _ in range(steps):
            torch_step()
        return (time.perf_counter() - t0) / steps

    # One discarded pair: the engine's first bursts ran slower in the first rounds (16.2 and
    # 16.9 images/s in pair 0 against 19-22 later, 2026-12-03), as did its first steps in the
    # bench; both sides get the same extra burst.
    engine_burst()
    torch_burst()
    ratios = []
    for i in range(a.pairs):
        if i % 2 == 0:
            theirs, ours = torch_burst(), engine_burst()
        else:
            ours, theirs = engine_burst(), torch_burst()
        ratios.append(theirs / ours)
        print(json.dumps({
            "pair": i, "preset": a.preset, "batch": batch, "steps": steps,
            "engine_images_per_s": round(batch / ours, 3), "torch_images_per_s": round(batch / theirs, 3),
            "ratio": round(theirs / ours, 4), "loadavg_1m": os.getloadavg()[0],
        }), flush=True)
    engine.stdin.close()
    engine.wait()
    print(json.dumps({
        "summary": "paired", "preset": a.preset, "batch": batch, "pairs": a.pairs, "steps": steps,
        "ratio_median": round(statistics.median(ratios), 4), "ratio_min": round(min(ratios), 4),
        "ratio_max": round(max(ratios), 4), "torch": torch.__version__,
    }), flush=True)


if __name__ == "__main__":
    main()
