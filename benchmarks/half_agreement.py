"""How often half precision picks float32's class: top-1 agreement on random inputs, per dtype.

The conformance suite holds a half-precision backend to its tolerances on a few cases; whether it
still picks the same class as float32 is a statistic over many inputs. For each variant, one set of
He-initialised weights (seeded) goes to the backend at float32 and at each half dtype, and ``--count``
standard-normal images (seeded, batches of ``--batch``) run through both:

- top-1 = float32's: the share of images whose class is float32's;
- float32's top-1 in the top-5: the share whose top-5 holds float32's class;
- logits rel L2: the median, over images, of the relative L2 difference of the logits.

    python benchmarks/half_agreement.py --backend mlx [--dtypes float16,bfloat16] [--variants torchvision]
        [--count 1000] [--batch 50] [--out docs/benchmarks/mlx-half-agreement.md]

``benchmarks/bench_cupy.py`` measures the same for the cupy backend (:func:`top1_agreement`).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time

import numpy as np
from report import emit


def top1_agreement(reference, halves: dict, count: int, batch: int = 100, seed: int = 1) -> dict[str, tuple]:
    """For each model of ``halves`` (name → model, same weights as ``reference``): ``(top-1 matches,
    reference's top-1 within the top-5, median logits rel L2)`` on ``count`` standard-normal images of
    seed ``seed``; the reference runs each batch once for all of them."""
    rng = np.random.default_rng(seed)
    size = reference.arch.input_size
    counts = {name: [0, 0, []] for name in halves}
    for start in range(0, count, batch):
        x = rng.standard_normal((min(batch, count - start), 3, size, size)).astype(np.float32)
        a = np.asarray(reference.backend.to_host(reference(x)), np.float64)
        for name, half in halves.items():
            b = np.asarray(half.backend.to_host(half(x)), np.float64)
            c = counts[name]
            c[0] += int(np.sum(a.argmax(1) == b.argmax(1)))
            c[1] += int(np.sum((np.argsort(-b, axis=1)[:, :5] == a.argmax(1)[:, None]).any(axis=1)))
            c[2] += list(np.linalg.norm(b - a, axis=1) / np.linalg.norm(a, axis=1))
    return {name: (top1, top5, statistics.median(errors)) for name, (top1, top5, errors) in counts.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", required=True, help="a backend with dtype= options (cupy, mlx)")
    p.add_argument("--dtypes", default="float16,bfloat16")
    p.add_argument("--variants", default="torchvision")
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    from alexnet_aa import AlexNet
    from alexnet_aa.architecture import get_architecture
    from alexnet_aa.weights import he_weights

    lines = [f"# Half precision against float32 on the `{args.backend}` backend: top-1 agreement", "",
             f"{datetime.date.today().isoformat()}, {platform.machine()}, {platform.python_version()}; "
             f"{args.count} standard-normal images (seed 1) per variant, He-initialised weights (seed 0).", "",
             "```console", f"$ python benchmarks/half_agreement.py --backend {args.backend} --dtypes {args.dtypes} "
             f"--variants {args.variants} --count {args.count} --batch {args.batch}", "```", "",
             "| variant | dtype | top-1 = float32's | float32's top-1 in the top-5 | logits rel L2 (median) |",
             "|---|---|---:|---:|---:|"]
    t0 = time.perf_counter()
    for variant in args.variants.split(","):
        weights = he_weights(get_architecture(variant), np.random.default_rng(0))
        reference = AlexNet(variant, f"{args.backend}[dtype=float32]", weights=weights)
        halves = {dtype: AlexNet(variant, f"{args.backend}[dtype={dtype}]", weights=weights) for dtype in args.dtypes.split(",")}
        n = args.count
        for dtype, (top1, top5, err) in top1_agreement(reference, halves, n, args.batch).items():
            lines.append(f"| {variant} | {dtype} | {top1 / n:.1%} ({top1}/{n}) | {top5 / n:.1%} | {err:.2e} |")
            print(lines[-1], flush=True)
    lines += ["", f"Whole run: {time.perf_counter() - t0:.0f} s."]
    return emit(lines, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
