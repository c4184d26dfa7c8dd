"""What the paper's AlexNet costs to run here, per backend, with PyTorch timed in the same run:
images per second at batch 1 and 32, and where a batch-32 forward's time goes by kind of layer
(convolutions, LRN, pooling, fully connected). Input for the claims page (docs/claims.md).

Each backend's forward is the best of ``--repeats`` after a warm-up; the per-layer times walk
``model.iter_layers`` and bring every layer's output to the host (``backend.to_host``: MLX computes
lazily, so that is what makes it compute there), the best of ``--repeats`` per layer. PyTorch runs
the same weights and input through ``torch.nn.functional`` (its LRN is ``local_response_norm``).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_costs.py --out docs/benchmarks/costs.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from alexnet_aa import AlexNet
from alexnet_aa.architecture import get_architecture
from alexnet_aa.backend import available_backends
from alexnet_aa.weights import he_weights
from report import best_of, blas_line, emit

KINDS = {"Conv": "convolutions", "LRN": "LRN", "MaxPool": "max pooling", "Linear": "fully connected"}


def layer_ms(model: AlexNet, x, repeats: int) -> dict[str, float]:
    """The best time of each layer over ``repeats`` forward passes (after a warm-up), in ms."""
    best: dict[str, float] = {}
    for _ in range(repeats + 1):
        start = time.perf_counter()
        for name, y in model.iter_layers(x):
            model.backend.to_host(y)
            now = time.perf_counter()
            best[name] = min(best.get(name, float("inf")), (now - start) * 1e3)
            start = now
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", default="paper")
    p.add_argument("--backends", default="numpy,mlx", help="comma-separated (default: numpy,mlx)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", help="the Markdown report; the JSON beside it (same name, .json)")
    args = p.parse_args(argv)
    import torch

    from alexnet_aa.testing.torch_reference import torch_forward, torch_weights

    arch = get_architecture(args.variant)
    weights = he_weights(arch, 0)
    kinds = {layer.name: KINDS.get(layer.kind, "other") for layer in arch.layers}
    rng = np.random.default_rng(0)
    inputs = {n: rng.standard_normal((n, 3, arch.input_size, arch.input_size)).astype(np.float32) for n in (1, 32)}
    tw = torch_weights(torch, weights)
    torch_ips = {n: n / best_of(lambda: torch_forward(torch, arch, tw, torch.from_numpy(x)), args.repeats)
                 for n, x in inputs.items()}
    ready = available_backends()
    results = {"variant": arch.variant, "date": time.strftime("%Y-%m-%d"), "repeats": args.repeats,
               "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
                          f"NumPy {np.__version__}, PyTorch {torch.__version__} ({torch.get_num_threads()} threads); {blas_line()}",
               "torch_images_per_second": torch_ips, "backends": {}}
    for name in args.backends.split(","):
        ok, why = ready.get(name, (False, "not installed"))
        if not ok:
            print(f"skipping {name}: {why}")
            continue
        model = AlexNet(args.variant, name, weights=weights)
        ips = {n: n / best_of(lambda: model.backend.to_host(model(x)), args.repeats) for n, x in inputs.items()}
        per_layer = layer_ms(model, inputs[32], args.repeats)
        by_kind: dict[str, float] = {}
        for layer, ms in per_layer.items():
            by_kind[kinds[layer]] = by_kind.get(kinds[layer], 0.0) + ms
        results["backends"][name] = {"images_per_second": ips, "layer_ms_batch32": per_layer, "kind_ms_batch32": by_kind}
    lines = [f"# What AlexNet ({arch.variant}) costs to run here, per backend", "",
             f"Measured {results['date']} on {results['machine']}. Best of {args.repeats} after a warm-up; "
             "the ratio is the backend's images/s over PyTorch's in the same run.", "",
             "```bash", f"env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_costs.py --out {args.out or 'FILE'}",
             "```", "",
             "| backend | img/s batch 1 | vs PyTorch | img/s batch 32 | vs PyTorch | " +
             " | ".join(f"{k} share (b32)" for k in [*KINDS.values(), "other"]) + " |",
             "|---|" + "---:|" * (4 + len(KINDS) + 1)]
    lines.append(f"| PyTorch {torch.__version__} | {torch_ips[1]:.1f} | 1.00 | {torch_ips[32]:.1f} | 1.00 |"
                 + " |" * (len(KINDS) + 1))
    for name, r in results["backends"].items():
        total = sum(r["kind_ms_batch32"].values())
        shares = " | ".join(f"{100 * r['kind_ms_batch32'].get(k, 0.0) / total:.0f}%" for k in [*KINDS.values(), "other"])
        lines.append(f"| {name} | {r['images_per_second'][1]:.1f} | {r['images_per_second'][1] / torch_ips[1]:.2f} | "
                     f"{r['images_per_second'][32]:.1f} | {r['images_per_second'][32] / torch_ips[32]:.2f} | {shares} |")
    if args.out:
        Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    return emit(lines, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
