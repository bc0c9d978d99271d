"""Winograd F(m×m, 3×3) transforms from interpolation points, and their float32 error.

Builds Aᵀ, G and Bᵀ by Toom-Cook (points p_0..p_{n-2} and ∞, n = m + 2):
  Aᵀ[i][j] = p_j^i,  G[j][k] = p_j^k / Π_{l≠j}(p_j − p_l),  Bᵀ[j] = coefficients of Π_{l≠j}(x − p_l),
checks Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A against the direct correlation in float64, and prints the
max error of float32 transforms over 64-channel sums (inputs N(0, 1), weights N(0, 0.01)) as a
fraction of the output's RMS. shaders/conv2d.wgsl uses the points 0, 1, −1, 2, −½ for F(4×4, 3×3).

    python3 scripts/winograd_points.py   (needs numpy)
"""
import numpy as np
from numpy.polynomial import polynomial as P


def mats(points, m):
    n = m + 2
    a = [float(x) for x in points]
    at, g, bt = np.zeros((m, n)), np.zeros((n, 3)), np.zeros((n, n))
    for j in range(n - 1):
        for i in range(m):
            at[i, j] = a[j] ** i
        f = np.prod([a[j] - a[l] for l in range(n - 1) if l != j])
        for k in range(3):
            g[j, k] = a[j] ** k / f
        c = P.polyfromroots([a[l] for l in range(n - 1) if l != j])
        bt[j, : len(c)] = c
    at[m - 1, n - 1] = 1
    g[n - 1, 2] = 1
    c = P.polyfromroots(a)
    bt[n - 1, : len(c)] = c
    return at, g, bt


def f32_error(points, m, cin=64, trials=400, seed=1):
    at, g, bt = (x.astype(np.float32) for x in mats(points, m))
    n = m + 2
    rng = np.random.default_rng(seed)
    errs, rms = [], []
    for _ in range(trials):
        d = rng.standard_normal((cin, n, n)).astype(np.float32)
        w = (rng.standard_normal((cin, 3, 3)) * 0.1).astype(np.float32)
        u = np.einsum("ij,cjk,lk->cil", g, w, g).astype(np.float32)
        v = np.einsum("ij,cjk,lk->cil", bt, d, bt).astype(np.float32)
        y = at @ (u * v).sum(0, dtype=np.float32) @ at.T
        ref = np.array(
            [[(w.astype(np.float64) * d[:, i : i + 3, j : j + 3]).sum() for j in range(m)] for i in range(m)]
        )
        errs.append(np.abs(y - ref).max())
        rms.append(np.sqrt((ref**2).mean()))
    return np.mean(errs) / np.mean(rms)


def exact(points, m):
    at, g, bt = mats(points, m)
    rng = np.random.default_rng(0)
    d, w = rng.standard_normal((m + 2, m + 2)), rng.standard_normal((3, 3))
    y = at @ ((g @ w @ g.T) * (bt @ d @ bt.T)) @ at.T
    ref = np.array([[(w * d[i : i + 3, j : j + 3]).sum() for j in range(m)] for i in range(m)])
    return np.abs(y - ref).max()


if __name__ == "__main__":
    np.set_printoptions(precision=6, suppress=True)
    for m, pts in [(2, [0, 1, -1]), (4, [0, 1, -1, 2, -2]), (4, [0, 1, -1, 0.5, -0.5]), (4, [0, 1, -1, 2, -0.5])]:
        print(f"F({m}x{m}, 3x3) points {pts} + inf: float64 check {exact(pts, m):.1e}, "
              f"float32 max error / RMS {f32_error(pts, m):.2e}")
    at, g, bt = mats([0, 1, -1, 2, -0.5], 4)
    print("points 0, 1, -1, 2, -1/2:\nBt =\n", bt, "\nG =\n", g, "\nAt =\n", at)
