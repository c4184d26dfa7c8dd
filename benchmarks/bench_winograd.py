"""The numpy backend's conv2–conv5 by Winograd against im2col, whole network, in one process.

One model per variant; ``alexnet_aa_numpy.WINOGRAD_MIN_TILES`` is set so high
for the im2col arm that no layer takes the Winograd path, and to 0 for the
"everywhere" arm (every ungrouped 3×3 and 5×5 layer: grouped ones always take
im2col, so the paper's and Caffe's arms differ in conv3 only). The arms
alternate, round after round, and each cell is the fastest call of all rounds.
This is what the tile threshold (Winograd only with at least
``WINOGRAD_MIN_TILES`` tiles per worker) was chosen from.

    python benchmarks/bench_winograd.py [--variants paper,caffe,torchvision] [--batches 1,32] [--rounds 15] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import alexnet_aa_numpy
from alexnet_aa import AlexNet
from alexnet_aa.architecture import get_architecture
from report import best_of, blas_line, emit


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="paper,caffe,torchvision")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    default = alexnet_aa_numpy.WINOGRAD_MIN_TILES
    lines = ["# numpy backend: Winograd conv2–conv5 against im2col", "",
             f"    python benchmarks/bench_winograd.py {' '.join(argv if argv is not None else sys.argv[1:])}", "",
             f"- {blas_line()}; {alexnet_aa_numpy.WORKERS} workers; best of {args.rounds} alternating rounds", "",
             "| variant | batch | im2col ms | Winograd where ≥ threshold ms | Winograd everywhere ms | im2col / threshold | im2col / everywhere |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    arms = {"im2col": 10**9, "threshold": default, "everywhere": 0}
    for variant in args.variants.split(","):
        size = get_architecture(variant).input_size
        model = AlexNet(variant, "numpy")
        for batch in map(int, args.batches.split(",")):
            x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
            best = dict.fromkeys(arms, float("inf"))
            for _ in range(args.rounds):
                for arm, threshold in arms.items():
                    alexnet_aa_numpy.WINOGRAD_MIN_TILES = threshold
                    best[arm] = min(best[arm], best_of(lambda: model(x), 1))
            alexnet_aa_numpy.WINOGRAD_MIN_TILES = default
            ms = {arm: 1e3 * s for arm, s in best.items()}
            lines.append(f"| {variant} | {batch} | {ms['im2col']:.1f} | {ms['threshold']:.1f} | {ms['everywhere']:.1f} | "
                         f"{ms['im2col'] / ms['threshold']:.2f}× | {ms['im2col'] / ms['everywhere']:.2f}× |")
            print(lines[-1], file=sys.stderr, flush=True)
    return emit(lines + [""], args.out)


if __name__ == "__main__":
    sys.exit(main())
