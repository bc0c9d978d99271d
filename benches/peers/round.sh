#!/usr/bin/env bash
# One same-run round of the engine against its peers (issues 5 and 6): the engine's train_step and
# sampling benches and the PyTorch / diffusers peer scripts back to back, then both training
# steps in alternating bursts (paired.py), then the ratios.
#   bash benches/peers/round.sh [out.txt]     (PYTHON=/path/to/python with torch + diffusers)
# Run it on an otherwise idle machine; on a shared one compare rounds, not single numbers.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-round.txt}
py=${PYTHON:-python3}
: >"$out"
step() { echo "=== $(date +%T) loadavg $(cut -d' ' -f1-3 /proc/loadavg) $*" >>"$out"; }
quiet='^\s*$|Warming|Collecting|Analyzing|Benchmarking|Found|outlier|high|low|Compiling|Finished|Running'
step cargo bench --bench train_step
cargo bench --bench train_step 2>&1 | grep -Ev "$quiet" >>"$out"
step torch_train_step.py --preset all
"$py" benches/peers/torch_train_step.py --preset all >>"$out" 2>&1
step cargo bench --bench sampling
cargo bench --bench sampling 2>&1 | grep -Ev "$quiet" >>"$out"
step diffusers_sampling.py --preset small --batch 16 --loops 1
"$py" benches/peers/diffusers_sampling.py --preset small --batch 16 --loops 1 >>"$out" 2>&1
cargo build --release --example step_time 2>&1 | grep -Ev "$quiet" >>"$out" || true
step paired.py --preset small --pairs 6
"$py" benches/peers/paired.py --preset small --pairs 6 >>"$out" 2>&1
step paired.py --preset ddpm-cifar10 --pairs 3
"$py" benches/peers/paired.py --preset ddpm-cifar10 --pairs 3 >>"$out" 2>&1
step done
python3 - "$out" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
def engine(pattern):
    m = re.search(pattern + r"[^\n]*?([0-9.]+) images/s", text)
    return float(m.group(1)) if m else None
def peer(key, **want):
    for line in text.splitlines():
        if line.startswith("{"):
            d = json.loads(line)
            if all(d.get(k) == v for k, v in want.items()):
                return d[key]
    return None
crit = re.search(r"train_step/small b32\s+time:\s+\[\S+ \S+ ([0-9.]+) (ms|s)", text)
crit_ips = None
if crit:
    sec = float(crit.group(1)) / (1000 if crit.group(2) == "ms" else 1)
    crit_ips = 32 / sec
rows = [
    ("train small b32 (10-step mean)", engine(r"train_step small b32:"), peer("images_per_s", peer="torch_train_step", preset="small")),
    ("train small b32 (criterion mean)", crit_ips, peer("images_per_s", peer="torch_train_step", preset="small")),
    ("train ddpm-cifar10 b8", engine(r"train_step ddpm-cifar10 b8:"), peer("images_per_s", peer="torch_train_step", preset="ddpm-cifar10")),
    ("DDIM-50 small b16", engine(r"sampling small b16 ddim 50 steps:"), peer("images_per_s", peer="diffusers_sampling", what="ddim50")),
]
lines = []
for name, ours, theirs in rows:
    if ours and theirs:
        lines.append(f"ratio {name}: engine {ours:.2f} images/s, peer {theirs:.2f} images/s, {ours / theirs:.3f}x")
    else:
        lines.append(f"ratio {name}: missing ({ours}, {theirs})")
for preset, b in (("small", 32), ("ddpm-cifar10", 8)):
    s = peer("ratio_median", summary="paired", preset=preset)
    if s is None:
        lines.append(f"ratio train {preset} b{b} (paired): missing")
        continue
    lo, hi = peer("ratio_min", summary="paired", preset=preset), peer("ratio_max", summary="paired", preset=preset)
    lines.append(f"ratio train {preset} b{b} (paired bursts, median of pairs): {s:.3f}x (pairs {lo:.3f}-{hi:.3f}x)")
with open(sys.argv[1], "a") as f:
    for line in lines:
        print(line)
        f.write(line + "\n")
PY
