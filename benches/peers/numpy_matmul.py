"""numpy float32 matmul GFLOP/s on this CPU, for the ratio against `cargo bench --bench matmul`.

Usage: python3 benches/peers/numpy_matmul.py   (needs numpy: pip install numpy)
"""
import time

import numpy as np


def gflops(m: int, k: int, n: int, batch: int = 1, reps: int = 10) -> float:
    a = np.random.default_rng(0).standard_normal((batch, m, k), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((batch, k, n), dtype=np.float32)
    np.matmul(a, b)
    t = time.perf_counter()
    for _ in range(reps):
        np.matmul(a, b)
    s = (time.perf_counter() - t) / reps
    return 2.0 * batch * m * k * n / s / 1e9


if __name__ == "__main__":
    print(f"numpy matmul 1x1024x1024x1024: {gflops(1024, 1024, 1024):.1f} GFLOP/s")
    print(f"numpy matmul 8x64x580x1024: {gflops(64, 580, 1024, batch=8):.1f} GFLOP/s")
