#!/usr/bin/env bash
# Measure a Fashion-MNIST model the way assets/README.md reports it (issue 7): Fréchet distance,
# its floor and the guided class accuracy by the engine-trained classifier, and test bits/dim.
# Usage: scripts/measure_default_model.sh MODEL_DIR [N_FD] [N_BPD]
# Every figure is from the first images of the shipped 2,000-image test slice; the samplers,
# step counts, guidance and seeds are fixed here so two models are measured the same way.
set -euo pipefail
model=${1:-assets/default-model}
n_fd=${2:-300}
n_bpd=${3:-64}
data=assets/fashion-mnist/t10k-2k-images-idx3-ubyte.gz
ddpm=${DDPM:-./target/release/ddpm}
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
echo "== $model: FD and guided class accuracy (DPM-Solver++ 10 steps, guidance 3, seed 0, n $n_fd)"
/usr/bin/time -f "wall %e s" "$ddpm" eval --fd --model "$model" --data "$data" --n "$n_fd" \
    --sampler dpm++ --steps 10 --guidance 3 --batch-size 100 --seed 0
echo "== $model: bits/dim (stratified, 50 timesteps + L_0 per batch, n $n_bpd, batches of 16)"
/usr/bin/time -f "wall %e s" "$ddpm" eval --bpd --bpd-timesteps 50 --model "$model" --data "$data" \
    --n "$n_bpd" --batch-size 16 --seed 0
