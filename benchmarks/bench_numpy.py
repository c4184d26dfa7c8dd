"""Benchmark the numpy backend's whole AlexNet forward against PyTorch on the CPU, in one run.

Both sides run the same canonical weights and input in float32 on all cores:
PyTorch through ``torch.nn.functional`` (oneDNN convolutions, its own LRN),
under ``torch.inference_mode``. The time of a forward is the best of
``--repeats`` after a warm-up call; the ratio is numpy images/s over torch
images/s (> 1: numpy is faster). Per-layer times of the numpy backend follow.

    python benchmarks/bench_numpy.py [--variants paper,torchvision] [--batches 1,32] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from alexnet_aa import AlexNet, example_input
from alexnet_aa.architecture import VARIANTS, get_architecture
from alexnet_aa.testing import relative_error
from alexnet_aa.testing.torch_reference import torch_forward, torch_weights
from alexnet_aa.weights import he_weights
from report import best_of, emit, layer_table


def per_layer_ms(model: AlexNet, x) -> dict[str, float]:
    out, start = {}, time.perf_counter()
    for name, _ in model.iter_layers(x):
        now = time.perf_counter()
        out[name] = (now - start) * 1e3
        start = now
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--batches", default="1,32")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", help="also write the Markdown report here")
    args = p.parse_args(argv)

    import torch

    lines = [
        "# numpy backend vs PyTorch CPU",
        "",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores ({platform.processor() or platform.platform()})",
        f"- numpy {np.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), python {platform.python_version()}",
        f"- best of {args.repeats} after one warm-up call; float32; same weights and input on both sides",
        "",
        "| variant | batch | numpy img/s | torch img/s | numpy/torch speed | logits rel. error |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    layer_tables = []
    for variant in args.variants.split(","):
        arch = get_architecture(variant)
        weights = he_weights(arch, 0)
        model = AlexNet(variant, "numpy", weights=weights)
        tw = torch_weights(torch, weights)
        for batch in map(int, args.batches.split(",")):
            x = example_input(variant, batch, seed=1)
            tx = torch.from_numpy(x)
            t_np = best_of(lambda: model(x), args.repeats)
            t_torch = best_of(lambda: torch_forward(torch, arch, tw, tx), args.repeats)
            err = relative_error(np.asarray(model(x)), torch_forward(torch, arch, tw, tx).numpy())
            lines.append(f"| {variant} | {batch} | {batch / t_np:,.1f} | {batch / t_torch:,.1f} | "
                         f"{t_torch / t_np:.2f} | {err:.1e} |")
            print(lines[-1], flush=True)
            layers = per_layer_ms(model, x)
            layer_tables.append((variant, batch, layers))
    lines.append("")
    for variant, batch, layers in layer_tables:
        lines += layer_table(f"numpy backend per layer: {variant}, batch {batch} (ms, one forward)", layers, 2)
    return emit(lines, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
