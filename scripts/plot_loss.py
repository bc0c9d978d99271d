#!/usr/bin/env python3
"""Plot training-loss curves from one or more ``metrics.jsonl`` files.

Each input file holds one JSON object per line with at least ``step`` and
``loss`` (other keys such as ``lr``, ``grad_norm``, ``images_per_s`` and
``wall_s`` are ignored). If a step appears more than once (e.g. after a resumed
run), the last occurrence wins. Blank or malformed lines (such as a partial
line being written by a live training job) are skipped.

For each run the raw loss is drawn faintly and a centered moving average
(window ``--smooth``) boldly, on a log-scale y axis against step. For each run
the script also prints the number of steps and the mean loss of the first and
last 50 steps.

Usage:
    python scripts/plot_loss.py --out loss.png RUN_METRICS[:LABEL] [MORE[:LABEL] ...]
                                [--smooth 50] [--title T]

Examples:
    python scripts/plot_loss.py --out loss.png runs/fmnist-small/metrics.jsonl
    python scripts/plot_loss.py --out cmp.png \\
        runs/a/metrics.jsonl:baseline runs/b/metrics.jsonl:"new lr" --smooth 100

Without ``:LABEL`` the run is labelled by the name of the directory holding
the metrics file (or the file name if it has no parent directory).
"""

import argparse
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SUMMARY_WINDOW = 50


def parse_spec(spec):
    """Split ``PATH[:LABEL]`` into (path, label).

    The split happens at the last ':' only if the part before it is an
    existing file, so paths that themselves contain ':' still work.
    """
    if ":" in spec:
        path, label = spec.rsplit(":", 1)
        if os.path.isfile(path) or not os.path.isfile(spec):
            if label:
                return path, label
            spec = path
    path = spec
    parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
    return path, parent or os.path.basename(path)


def load_metrics(path):
    """Return (steps, losses) sorted by step, keeping the last entry per step."""
    by_step = {}
    skipped = 0
    with open(path, "r", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
                step = int(rec["step"])
                loss = float(rec["loss"])
            except (ValueError, KeyError, TypeError):
                skipped += 1
                continue
            by_step[step] = loss
    if skipped:
        print(f"warning: {path}: skipped {skipped} unparsable line(s)", file=sys.stderr)
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def moving_average(values, window):
    """Centered moving average over ``window`` points.

    Centered (rather than trailing) so the smoothed curve does not lag the raw
    one by half a window; near the ends the window is truncated to the points
    that exist.
    """
    window = max(1, int(window))
    half_lo = (window - 1) // 2
    half_hi = window - 1 - half_lo
    prefix = [0.0]
    for v in values:
        prefix.append(prefix[-1] + v)
    n = len(values)
    out = []
    for i in range(n):
        lo = max(0, i - half_lo)
        hi = min(n, i + half_hi + 1)
        out.append((prefix[hi] - prefix[lo]) / (hi - lo))
    return out


def mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Plot training-loss curves from metrics.jsonl files.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Each RUN is PATH[:LABEL]; without LABEL the parent directory name is used.",
    )
    ap.add_argument("runs", nargs="+", metavar="RUN_METRICS[:LABEL]")
    ap.add_argument("--out", required=True, help="output image path (e.g. loss.png)")
    ap.add_argument("--smooth", type=int, default=50, help="moving-average window in steps (default 50)")
    ap.add_argument("--title", default=None, help="figure title")
    args = ap.parse_args(argv)

    if args.smooth < 1:
        ap.error("--smooth must be >= 1")

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    plotted = 0

    for i, spec in enumerate(args.runs):
        path, label = parse_spec(spec)
        try:
            steps, losses = load_metrics(path)
        except OSError as e:
            print(f"error: {path}: {e}", file=sys.stderr)
            return 1
        if not steps:
            print(f"{label}: {path}: no (step, loss) records, skipped", file=sys.stderr)
            continue

        first = mean(losses[:SUMMARY_WINDOW])
        last = mean(losses[-SUMMARY_WINDOW:])
        n = len(steps)
        print(
            f"{label}: {n} steps (step {steps[0]}..{steps[-1]}), "
            f"mean loss first {min(n, SUMMARY_WINDOW)} = {first:.6g}, "
            f"last {min(n, SUMMARY_WINDOW)} = {last:.6g}"
        )

        # Log scale cannot show non-positive values; mask them out of the plot.
        plot_losses = [v if v > 0 and math.isfinite(v) else float("nan") for v in losses]
        smooth = moving_average(losses, args.smooth)
        plot_smooth = [v if v > 0 and math.isfinite(v) else float("nan") for v in smooth]

        color = colors[i % len(colors)]
        ax.plot(steps, plot_losses, color=color, alpha=0.25, linewidth=0.8)
        ax.plot(steps, plot_smooth, color=color, linewidth=2.0,
                label=f"{label} (MA {args.smooth})")
        plotted += 1

    if not plotted:
        print("error: nothing to plot", file=sys.stderr)
        return 1

    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if args.title:
        ax.set_title(args.title)
    ax.grid(True, which="major", alpha=0.5)
    ax.grid(True, which="minor", alpha=0.2)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out)
    plt.close(fig)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
