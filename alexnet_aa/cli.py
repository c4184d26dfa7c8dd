"""The ``alexnet-aa`` command (also ``python -m alexnet_aa``).

Subcommands: ``summary`` (the layer table and its formulas), ``backends``
(what is installed and why something cannot run), ``run`` (one forward pass,
timed) and ``compare`` (every available backend against the float64
reference, layer by layer).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from .architecture import VARIANTS, architecture
from .arrays import example_input
from .backend import INSTALL_HINTS, BackendError, available_backends, backend_class, get_backend
from .model import AlexNet
from .summary import format_text
from .testing.compare import oracle, relative_error, tolerance
from .weights import WeightsError, he_weights


def _add_variant(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", default="paper", choices=VARIANTS, help="AlexNet variant (default: paper)")


def _weights_arg(args) -> object:
    """The ``--weights`` file, else He-scaled random weights (well-separated logits) seeded by ``--seed``."""
    return args.weights if args.weights else he_weights(architecture(args.variant), args.seed)


def cmd_summary(args) -> int:
    print(format_text(args.variant, explain=args.explain, input_size=args.input_size))
    return 0


def cmd_backends(args) -> int:
    status = available_backends()
    for name, (ok, why) in status.items():
        print(f"{name:<10} {'available' if ok else 'unavailable'}" + ("" if ok else f": {why}"))
        if ok:
            try:
                backend = backend_class(name)()
                facts = backend.describe()
                print(f"{'':<10} layout {backend.layout}, dtype {backend.dtype}")
                for key, value in facts.items():
                    print(f"{'':<10} {key}: {value}")
            except Exception as exc:  # a backend's describe() must not hide the others
                print(f"{'':<10} describe() failed: {exc}")
    for name, hint in INSTALL_HINTS.items():
        if name not in status:
            print(f"{name:<10} not installed: {hint}")
    return 0


def _forward_timed(model: AlexNet, x) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Every layer's output on the host (NCHW) and the seconds until it was there."""
    outputs, seconds = {}, {}
    start = time.perf_counter()
    for name, y in model._forward(x):
        host = model.backend.to_host(y)  # forces lazy (MLX) and asynchronous (CuPy) work to finish
        seconds[name] = time.perf_counter() - start
        outputs[name] = model.backend.to_host(model.canonical(name, y))
        start = time.perf_counter()
    return outputs, seconds


def cmd_run(args) -> int:
    model = AlexNet(args.variant, args.backend, weights=_weights_arg(args))
    compile_s = model.backend.warmup()
    x = example_input(args.variant, args.batch, args.seed)
    model(x)  # first call: allocations, lazy compilation
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        logits = model.backend.to_host(model(x))
        times.append(time.perf_counter() - t0)
    best = min(times)
    pred = model.predict(x, top=5)
    print(f"{model!r} on input {tuple(x.shape)} float32 (seed {args.seed})")
    print(f"output {tuple(logits.shape)}; warmup/compile {compile_s:.3f} s")
    print(f"time: {best * 1e3:.2f} ms per batch, {best / args.batch * 1e3:.2f} ms per image, "
          f"{args.batch / best:.1f} images/s (best of {args.repeats})")
    for i in range(min(args.batch, 4)):
        top = ", ".join(f"{c} ({p:.3f})" for c, p in zip(pred.indices[i], pred.probabilities[i]))
        print(f"image {i}: top-5 classes {top}")
    return 0


def cmd_compare(args) -> int:
    names = args.backend or [n for n, (ok, _) in available_backends().items() if ok]
    weights = _weights_arg(args)
    x = example_input(args.variant, args.batch, args.seed)
    ref_outputs, ref_seconds = _forward_timed(AlexNet(args.variant, oracle(), weights=weights), x)
    print(f"AlexNet ({args.variant}), input {tuple(x.shape)} seed {args.seed}; reference: array-api on NumPy float64")
    print("error = relative L2 error against the reference; time includes the copy of each layer's output to the host\n")
    failed = []
    columns = []
    for name in names:
        try:
            model = AlexNet(args.variant, name, weights=weights)
        except BackendError as exc:
            print(f"{name}: skipped: {exc}\n")
            continue
        model.backend.warmup()
        _forward_timed(model, x)  # warm caches and lazy compilation before timing
        outputs, seconds = _forward_timed(model, x)
        tol = tolerance(model.backend, "network")
        errors = {k: relative_error(outputs[k], ref_outputs[k]) for k in ref_outputs}
        same_top1 = np.array_equal(outputs["fc8"].argmax(1), ref_outputs["fc8"].argmax(1))
        ok = errors["fc8"] <= tol and same_top1 and not np.isnan(outputs["fc8"]).any()
        if not ok:
            failed.append(name)
        columns.append((name, errors, seconds, tol, ok, same_top1))
    header = f"{'layer':<8}" + "".join(f"  {n + ' error':>16}  {n + ' ms':>10}" for n, *_ in columns) + f"  {'reference ms':>12}"
    print(header)
    for layer in ref_outputs:
        row = f"{layer:<8}" + "".join(f"  {e[layer]:>16.2e}  {s[layer] * 1e3:>10.2f}" for _, e, s, *_ in columns)
        print(row + f"  {ref_seconds[layer] * 1e3:>12.2f}")
    print(f"{'total':<8}" + "".join(f"  {'':>16}  {sum(s.values()) * 1e3:>10.2f}" for _, _, s, *_ in columns)
          + f"  {sum(ref_seconds.values()) * 1e3:>12.2f}")
    print()
    for name, errors, _, tol, ok, same_top1 in columns:
        verdict = "agrees" if ok else "DISAGREES"
        print(f"{name}: {verdict} (logits error {errors['fc8']:.2e}, tolerance {tol:.0e}, top-1 {'same' if same_top1 else 'different'})")
    if not columns:
        print("no backend could run", file=sys.stderr)
        return 2
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alexnet-aa", description="AlexNet on every Array API backend.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("summary", help="the layer table: shapes, parameters, MACs (from the formulas)")
    _add_variant(p)
    p.add_argument("--explain", action="store_true", help="show each formula with the layer's numbers")
    p.add_argument("--input-size", type=int, default=None, help="input side (default: the variant's)")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("backends", help="every registered backend, available or not, and why")
    p.set_defaults(func=cmd_backends)

    p = sub.add_parser("run", help="one timed forward pass on seeded random input")
    p.add_argument("--backend", default="numpy")
    _add_variant(p)
    p.add_argument("--weights", help=".safetensors or .npz file (default: seeded random weights)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("compare", help="every available backend against the float64 reference, per layer")
    p.add_argument("--backend", action="append", help="compare only this backend (repeatable)")
    _add_variant(p)
    p.add_argument("--weights", help=".safetensors or .npz file (default: seeded random weights)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "batch", 1) < 1:
        print("alexnet-aa: error: --batch must be >= 1", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except (BackendError, WeightsError, ValueError, TypeError) as exc:
        print(f"alexnet-aa {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
