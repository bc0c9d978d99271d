#!/usr/bin/env bash
# The 10,000-vs-10,000 Fréchet distance of issue 7 for a Fashion-MNIST model folder.
# Usage: scripts/measure_fd10k.sh MODEL_DIR NAME [N]
#
# The 10,000 guided samples (DPM-Solver++ 2M, 10 steps, guidance 3, 1,000 per class) are drawn
# by diffusers on the CPU (benches/peers/diffusers_fd_samples.py; the engine's own sampler would
# take hours on the software adapter), then the engine embeds them and the 10,000 test images
# with the engine-trained classifier (assets/fmnist-classifier) and reports the distance and the
# guided class accuracy. The floor is the distance of the 10,000 test images to the first
# 10,000 training images in the same feature space. Needs /work/venv (torch, diffusers) and
# `apt-get install dataset-fashion-mnist`. Files go to runs/fd10k/ (the samples file resumes).
set -euo pipefail
model=$1
name=$2
n=${3:-10000}
py=${PYTHON:-/work/venv/bin/python}
ddpm=${DDPM:-./target/release/ddpm}
fm=/usr/share/datasets/fashion-mnist
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
mkdir -p runs/fd10k
echo "== $model: $n samples by diffusers (DPM-Solver++ 2M, 10 steps, guidance 3, seed 0)"
/usr/bin/time -f "wall %e s" "$py" benches/peers/diffusers_fd_samples.py --model "$model" --n "$n" \
    --out "runs/fd10k/$name.safetensors" | tail -n 1
echo "== $model: FD against the first $n test images"
"$ddpm" eval --fd --model "$model" --samples "runs/fd10k/$name.safetensors" --n "$n" \
    --data $fm/t10k-images-idx3-ubyte.gz --labels $fm/t10k-labels-idx1-ubyte.gz --batch-size 500
if [ ! -f "runs/fd10k/test-$n.safetensors" ]; then
  "$py" benches/peers/diffusers_fd_samples.py --dump-data $fm/t10k-images-idx3-ubyte.gz --n "$n" \
      --out "runs/fd10k/test-$n.safetensors"
fi
echo "== floor: the first $n test images against the first $n training images"
"$ddpm" eval --fd --model "$model" --samples "runs/fd10k/test-$n.safetensors" --n "$n" \
    --data $fm/train-images-idx3-ubyte.gz --labels $fm/train-labels-idx1-ubyte.gz --batch-size 500 |
    grep -E "Fréchet|floor"
