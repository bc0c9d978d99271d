#!/usr/bin/env python3
"""One fixed Fashion-MNIST training batch for comparing gradients at a fixed state (issue 7).

Writes BATCH (safetensors: sample = x_t, timestep, class_labels, noise) from the first 32
training images (padded to 32×32, every tenth label replaced by the null class 10), t and ε from
torch's generator with seed 0, and prints PyTorch's L_simple and global gradient norm for MODEL
in eval mode and, over 12 dropout seeds, in train mode. `cargo run --release --example grad_norm
-- MODEL BATCH` prints the engine's figures for the same model and batch.

    /work/venv/bin/python scripts/grad_norm_batch.py assets/default-model /tmp/batch.safetensors
"""
import gzip
import sys

import numpy as np
import torch
from diffusers import UNet2DModel
from safetensors.torch import save_file

FM = "/usr/share/datasets/fashion-mnist"
model_dir, out = sys.argv[1], sys.argv[2]
torch.set_num_threads(2)
m = UNet2DModel.from_pretrained(model_dir).float()
raw = gzip.open(f"{FM}/train-images-idx3-ubyte.gz").read()
px = np.frombuffer(raw[16:16 + 32 * 784], dtype=np.uint8).reshape(32, 1, 28, 28)
x0 = np.full((32, 1, 32, 32), -1.0, np.float32)
x0[:, :, 2:30, 2:30] = px / 127.5 - 1
x0 = torch.from_numpy(x0)
lab = np.frombuffer(gzip.open(f"{FM}/train-labels-idx1-ubyte.gz").read()[8:8 + 32], dtype=np.uint8)
y = torch.from_numpy(lab.astype(np.int64))
y[::10] = 10
g = torch.Generator().manual_seed(0)
t = torch.randint(0, 1000, (32,), generator=g)
eps = torch.randn(32, 1, 32, 32, generator=g)
ab = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
xt = ab[t].sqrt().float().view(-1, 1, 1, 1) * x0 + (1 - ab[t]).sqrt().float().view(-1, 1, 1, 1) * eps
save_file({"sample": xt.contiguous(), "timestep": t.float(), "class_labels": y.float(), "noise": eps}, out)


def loss_and_norm(train, seed):
    m.train(train)
    m.zero_grad()
    torch.manual_seed(seed)
    loss = ((m(xt, t, class_labels=y).sample - eps) ** 2).mean()
    loss.backward()
    return loss.item(), torch.sqrt(sum((p.grad.double() ** 2).sum() for p in m.parameters())).item()


print("pytorch eval: loss %.6f  gradient norm %.5f" % loss_and_norm(False, 0))
v = np.array([loss_and_norm(True, s) for s in range(12)])
print("pytorch train, 12 dropout seeds: loss %.5f ± %.5f  gradient norm %.5f ± %.5f (mean ± sd)"
      % (v[:, 0].mean(), v[:, 0].std(ddof=1), v[:, 1].mean(), v[:, 1].std(ddof=1)))
