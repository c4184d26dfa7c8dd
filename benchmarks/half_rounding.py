"""One rounding or two: the relative error of a half-precision convolution + bias + ReLU.

A half-precision conv can round its result once (bias and ReLU in float32, as cuDNN and the cupy
backend's ``conv2d_mma.cu`` do) or twice (the sum rounded, then the bias added and rounded again, as
MLX's ``mx.conv2d`` followed by ``+ b`` does). One rounding is bounded by the unit roundoff u in
relative L2; two roundings are not, where the bias cancels the sum. This script draws random small
convolutions from the conformance suite's shape space (``test_conv2d_shape_space``), computes both
from the same half-rounded inputs in float64, and prints how far each lands from the exact result.

    python benchmarks/half_rounding.py [--draws 3000] [--seed 0]
"""

from __future__ import annotations

import argparse

import ml_dtypes
import numpy as np

from alexnet_aa import reference

DTYPES = {"float16": (np.float16, 2.0**-11), "bfloat16": (ml_dtypes.bfloat16, 2.0**-8)}


def _rounded(a, dtype):
    return a.astype(np.float32).astype(dtype).astype(np.float64)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--draws", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    errors = {name: [] for name in DTYPES}
    for _ in range(args.draws):
        n, cg, og, g = (int(v) for v in rng.integers(1, (4, 6, 6, 4)))
        h, w, kh, kw = (int(v) for v in rng.integers(1, (13, 13, 6, 6)))
        s, pad = tuple(int(v) for v in rng.integers(1, 4, 2)), tuple(int(v) for v in rng.integers(0, 3, 2))
        if h + 2 * pad[0] < kh or w + 2 * pad[1] < kw:
            continue
        x = rng.standard_normal((n, cg * g, h, w))
        wt = rng.standard_normal((og * g, cg, kh, kw)) / np.sqrt(cg * kh * kw)
        b = rng.standard_normal(og * g)
        for name, (dtype, _) in DTYPES.items():
            xr, wr, br = (_rounded(a, dtype) for a in (x, wt, b))
            conv = reference.conv2d(xr, wr, None, s, pad, g, False)
            exact = np.maximum(conv + br[None, :, None, None], 0)
            once = np.maximum(_rounded(conv + br[None, :, None, None], dtype), 0)
            twice = np.maximum(_rounded(_rounded(conv, dtype) + br[None, :, None, None], dtype), 0)
            norm = np.linalg.norm(exact)
            if norm > 0:
                errors[name].append((np.linalg.norm(once - exact) / norm, np.linalg.norm(twice - exact) / norm))
    print(f"{args.draws} draws of the suite's conv shape space (seed {args.seed}), relative L2 error against the "
          "exact result on the same rounded inputs\n")
    print("| dtype | rounding | max | max / u | share > 2u | share > 8u |")
    print("|---|---|---:|---:|---:|---:|")
    for name, (_, u) in DTYPES.items():
        e = np.array(errors[name])
        for col, label in ((0, "once (bias, ReLU in float32)"), (1, "twice (sum rounded, then + bias)")):
            v = e[:, col]
            print(f"| {name} | {label} | {v.max():.2e} | {v.max() / u:.2f} | {100 * np.mean(v > 2 * u):.2f} % "
                  f"| {100 * np.mean(v > 8 * u):.2f} % |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
