#!/usr/bin/env bash
# Issue 8, "measured, not claimed": classifier guidance (a noise-aware classifier trained by
# `ddpm train-classifier --noisy`) against classifier-free guidance on the shipped default model,
# judged by the independent Fashion-MNIST classifier of assets/fmnist-classifier: the share of
# samples it labels as the requested class, and the Fréchet distance in its feature space.
# Usage: scripts/compare_guidance.sh [N] [EPOCHS] [OUT]
set -euo pipefail
n=${1:-100}
epochs=${2:-0.25}
out=${3:-runs/guidance}
train=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
test=assets/fashion-mnist/t10k-2k-images-idx3-ubyte.gz
ddpm=${DDPM:-./target/release/ddpm}
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
mkdir -p "$out"
if [ ! -f "$out/noisy-classifier/model.safetensors" ]; then
    echo "== train-classifier --noisy tiny, $epochs epochs of the 60,000 training images"
    /usr/bin/time -f "wall %e s" "$ddpm" train-classifier --noisy tiny --data "$train" --test-data "$test" \
        --channels 1 --image-size 32 --epochs "$epochs" --batch-size 64 --lr 1e-3 --seed 0 \
        --out "$out/noisy-classifier" 2>&1 | grep -v '^\s*$' | tail -n 8
fi
run() {
    echo "== $*"
    /usr/bin/time -f "wall %e s" "$ddpm" eval --fd --data "$test" --n "$n" --sampler dpm++ --steps 10 \
        --batch-size 100 --seed 0 "$@" 2>&1 | grep -E "Fréchet|floor|requested|per class|sampled|wall"
}
run --guidance 1
run --guidance 3
for s in 1 3 10; do
    run --guidance 1 --noisy-classifier "$out/noisy-classifier" --classifier-scale "$s"
done
run --guidance 3 --noisy-classifier "$out/noisy-classifier" --classifier-scale 3
