#!/usr/bin/env bash
# Issue 8, "measured, not claimed": L_simple vs improved DDPM's hybrid objective (learned
# variance, L_simple + 0.001·L_vlb) at equal steps on Fashion-MNIST, then test bits/dim of each
# EMA model with the same stratified estimator. A reduced model (the small preset's layout at
# half width, 16-32-32, unconditional, no dropout) so that both runs fit this machine; the
# configs are written here.
# Usage: scripts/compare_objectives.sh [STEPS] [N_BPD] [OUT]
set -euo pipefail
steps=${1:-400}
n_bpd=${2:-128}
out=${3:-runs/objectives}
train=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
test=assets/fashion-mnist/t10k-2k-images-idx3-ubyte.gz
ddpm=${DDPM:-./target/release/ddpm}
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
mkdir -p "$out"
python3 - "$out" <<'PY'
import json, sys
c = json.load(open("assets/default-model/config.json"))
c.update(block_out_channels=[16, 32, 32], num_class_embeds=None, dropout=0.0)
for name, oc in [("simple", 1), ("hybrid", 2)]:
    json.dump(dict(c, out_channels=oc), open(f"{sys.argv[1]}/config-{name}.json", "w"), indent=1)
PY
for loss in simple hybrid; do
    echo "== train --loss $loss, $steps steps of 32"
    /usr/bin/time -f "wall %e s" "$ddpm" train --data "$train" --channels 1 --image-size 32 --no-hflip \
        --unconditional --config "$out/config-$loss.json" --loss "$loss" --batch-size 32 --lr 1e-3 \
        --warmup 50 --ema-decay 0.99 --seed 0 --steps "$steps" --save-every "$steps" --sample-every 0 \
        --out "$out/$loss" 2>&1 | grep -v '^\s*$' | tail -n 3
    python3 -c "
import json
rows = [json.loads(l) for l in open('$out/$loss/metrics.jsonl')]
tail = rows[-50:]
print('  L_simple (mean of the last 50 steps): %.4f' % (sum(r['loss'] for r in tail) / len(tail)))
"
    echo "== $loss: bits/dim (stratified, 50 timesteps + L_0 per batch, n $n_bpd, batches of 16)"
    /usr/bin/time -f "wall %e s" "$ddpm" eval --bpd --bpd-timesteps 50 --model "$out/$loss/model" \
        --data "$test" --n "$n_bpd" --batch-size 16 --seed 0
done
