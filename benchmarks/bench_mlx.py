"""Dispatch overhead of the ``mlx`` backend: ``alexnet_aa.AlexNet(backend="mlx")`` vs hand-written MLX.

Both networks run the same weights and the same algorithms (per-group
``mx.conv2d`` + concatenate, strided-slice max-pool, shifted-add LRN,
``mx.addmm``); the native one is a plain function over literal layer lists,
with no alexnet_aa code in its forward. The ratio

    overhead = median(backend forward) / median(native forward)

measures what the model's generic forward, the backend's validation and its
compiled epilogues cost or save (target <= 1.05). Per-layer times run each op
alone on an evaluated input (``mx.eval`` after every layer) and report the
minimum of the repeats (the least disturbed run on a shared machine).

    python benchmarks/bench_mlx.py --variant paper --batch 1 --repeats 5 [--no-compile] [--out FILE]

On the Linux CPU wheel (reference BLAS) the paper variant runs at about one
image per second: keep ``--batch 1`` and a few repeats there.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time

import numpy as np

# -- the hand-written network: literal layer lists, no alexnet_aa ---------------------
# (name, kind, args): conv (out, kernel, stride, padding, groups); lrn (size, alpha, beta, k);
# pool (kernel, stride, ceil_mode); flatten; linear (out, relu).
_CONVS = {
    "paper": [(96, 11, 4, 0, 1), (256, 5, 1, 2, 2), (384, 3, 1, 1, 1), (384, 3, 1, 1, 2), (256, 3, 1, 1, 2)],
    "caffe": [(96, 11, 4, 0, 1), (256, 5, 1, 2, 2), (384, 3, 1, 1, 1), (384, 3, 1, 1, 2), (256, 3, 1, 1, 2)],
    "torchvision": [(64, 11, 4, 2, 1), (192, 5, 1, 2, 1), (384, 3, 1, 1, 1), (256, 3, 1, 1, 1), (256, 3, 1, 1, 1)],
}
_LRN = {"paper": (5, 5e-4, 0.75, 2.0), "caffe": (5, 1e-4, 0.75, 1.0), "torchvision": None}
_CEIL = {"paper": False, "caffe": True, "torchvision": False}
_SIZE = {"paper": 227, "caffe": 227, "torchvision": 224}


def native_layers(variant: str) -> list[tuple[str, str, tuple]]:
    c, lrn, ceil = _CONVS[variant], _LRN[variant], _CEIL[variant]
    layers = [("conv1", "conv", c[0])]
    layers += [("lrn1", "lrn", lrn)] if lrn else []
    layers += [("pool1", "pool", (3, 2, ceil)), ("conv2", "conv", c[1])]
    layers += [("lrn2", "lrn", lrn)] if lrn else []
    layers += [
        ("pool2", "pool", (3, 2, ceil)),
        ("conv3", "conv", c[2]),
        ("conv4", "conv", c[3]),
        ("conv5", "conv", c[4]),
        ("pool5", "pool", (3, 2, ceil)),
        ("flatten", "flatten", ()),
        ("fc6", "linear", (4096, True)),
        ("fc7", "linear", (4096, True)),
        ("fc8", "linear", (1000, False)),
    ]
    return layers


def native_op(mx, kind: str, args: tuple, x, p: dict, name: str):
    if kind == "conv":
        _, _, s, pad, g = args
        w, b = p[f"{name}.weight"], p[f"{name}.bias"]
        if g == 1:
            y = mx.conv2d(x, w, stride=s, padding=pad)
        else:
            ci, co = x.shape[-1] // g, w.shape[0] // g
            y = mx.concatenate(
                [mx.conv2d(x[..., i * ci : (i + 1) * ci], w[i * co : (i + 1) * co], stride=s, padding=pad) for i in range(g)],
                axis=-1,
            )
        return mx.maximum(y + b, 0.0)
    if kind == "lrn":
        size, alpha, beta, k = args
        c, lo = x.shape[-1], (size - 1) // 2
        sq = mx.pad(x * x, [(0, 0), (0, 0), (0, 0), (lo, size - 1 - lo)])
        acc = sq[..., 0:c]
        for d in range(1, size):
            acc = acc + sq[..., d : d + c]
        return x * mx.power(k + (alpha / size) * acc, -beta)
    if kind == "pool":
        kk, s, ceil = args
        _, h, w, _ = x.shape
        ho, wo = (_ceil_out(h, kk, s) if ceil else (h - kk) // s + 1), (_ceil_out(w, kk, s) if ceil else (w - kk) // s + 1)
        ph, pw = max(0, (ho - 1) * s + kk - h), max(0, (wo - 1) * s + kk - w)
        if ph or pw:
            x = mx.pad(x, [(0, 0), (0, ph), (0, pw), (0, 0)], constant_values=-float("inf"))
        y = x[:, :, 0 : (wo - 1) * s + 1 : s]
        for j in range(1, kk):
            y = mx.maximum(y, x[:, :, j : j + (wo - 1) * s + 1 : s])
        z = y[:, 0 : (ho - 1) * s + 1 : s]
        for i in range(1, kk):
            z = mx.maximum(z, y[:, i : i + (ho - 1) * s + 1 : s])
        return z
    if kind == "flatten":
        return x.reshape(x.shape[0], -1)
    if kind == "linear":
        y = mx.addmm(p[f"{name}.bias"], x, p[f"{name}.weight"])
        return mx.maximum(y, 0.0) if args[1] else y
    raise ValueError(kind)


def _ceil_out(size: int, k: int, s: int) -> int:
    out = -(-(size - k) // s) + 1
    return out - 1 if (out - 1) * s >= size else out


def native_params(mx, canonical: dict[str, np.ndarray]) -> dict:
    """Canonical OIHW / (out, in) host weights → OHWI / (in, out) with fc6's columns in NHWC order."""
    out = {}
    for key, w in canonical.items():
        w = np.asarray(w, dtype=np.float32)
        if key == "fc6.weight":
            side = int(round((w.shape[1] // 256) ** 0.5))
            w = w.reshape(w.shape[0], 256, side, side).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
        if w.ndim == 4:
            w = w.transpose(0, 2, 3, 1)
        elif w.ndim == 2:
            w = w.T
        out[key] = mx.array(np.ascontiguousarray(w))
    mx.eval(list(out.values()))
    return out


def native_forward(mx, layers, x_nchw, p):
    x = mx.transpose(x_nchw, (0, 2, 3, 1))
    for name, kind, args in layers:
        x = native_op(mx, kind, args, x, p, name)
    return x


# -- timing ---------------------------------------------------------------------------------


def _timed(mx, fn) -> float:
    t0 = time.perf_counter()
    mx.eval(fn())
    return time.perf_counter() - t0


def _pair_times(mx, first, second, repeats: int) -> tuple[list[float], list[float]]:
    """One warm-up each, then ``repeats`` timed runs of both, alternating which goes first."""
    _timed(mx, first)
    _timed(mx, second)
    ta, tb = [], []
    for i in range(repeats):
        if i % 2:
            tb.append(_timed(mx, second))
            ta.append(_timed(mx, first))
        else:
            ta.append(_timed(mx, first))
            tb.append(_timed(mx, second))
    return ta, tb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="paper", choices=sorted(_CONVS))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (after one warm-up)")
    ap.add_argument("--no-compile", action="store_true", help="build the backend with compile=False")
    ap.add_argument("--lrn", default="auto", choices=["auto", "composed", "metal"], help="the backend's LRN path")
    ap.add_argument("--no-layers", action="store_true", help="skip the per-layer table")
    ap.add_argument("--out", help="also write the Markdown report to this file")
    args = ap.parse_args(argv)

    import mlx.core as mx

    import alexnet_aa
    from alexnet_aa import ops

    model = alexnet_aa.AlexNet(args.variant, backend="mlx", seed=0, compile=not args.no_compile, lrn=args.lrn)
    be = model.backend
    canonical = model.state_dict()
    p_native = native_params(mx, canonical)
    layers = native_layers(args.variant)
    size = _SIZE[args.variant]
    x_host = np.random.default_rng(0).standard_normal((args.batch, 3, size, size), dtype=np.float32)
    x = mx.array(x_host)
    mx.eval(x)

    # agreement first: the two networks must compute the same thing
    y_be, y_nat = np.array(model(x)), np.array(native_forward(mx, layers, x, p_native))
    agree = float(np.linalg.norm(y_be - y_nat) / np.linalg.norm(y_nat))

    # whole forward, interleaved so that drift hits both alike
    t_be, t_nat = _pair_times(mx, lambda: model(x), lambda: native_forward(mx, layers, x, p_native), args.repeats)
    med_be, med_nat = statistics.median(t_be), statistics.median(t_nat)
    ratio = med_be / med_nat

    # per layer: each op alone on an evaluated input
    rows = []
    if not args.no_layers:
        p_be = model.native_params
        h = mx.transpose(x, (0, 2, 3, 1))
        mx.eval(h)
        for name, kind, a in layers:  # the backend's side goes through alexnet_aa.ops, as the model does
            if kind == "conv":
                call = lambda h=h, name=name, a=a: ops.conv2d(be, h, p_be[f"{name}.weight"], p_be[f"{name}.bias"], a[2], a[3], a[4], True)  # noqa: E731
            elif kind == "lrn":
                call = lambda h=h, a=a: ops.lrn(be, h, *a)  # noqa: E731
            elif kind == "pool":
                call = lambda h=h, a=a: ops.max_pool2d(be, h, a[0], a[1], a[2])  # noqa: E731
            elif kind == "linear":
                call = lambda h=h, name=name, a=a: ops.linear(be, h, p_be[f"{name}.weight"], p_be[f"{name}.bias"], a[1])  # noqa: E731
            else:
                call = lambda h=h: ops.flatten(be, h)  # noqa: E731
            nat = lambda h=h, name=name, kind=kind, a=a: native_op(mx, kind, a, h, p_native, name)  # noqa: E731
            tb, tn = _pair_times(mx, call, nat, args.repeats)
            rows.append((name, min(tb), min(tn)))
            h = nat()
            mx.eval(h)

    desc = be.describe()
    command = "python benchmarks/bench_mlx.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        f"### MLX backend vs native MLX — `{args.variant}`, batch {args.batch}, {args.repeats} repeats",
        "",
        f"- command: `{command.strip()}`",
        f"- date: {datetime.date.today().isoformat()}; machine: {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}, mlx {desc['mlx']}, device {desc['device']}, Metal {desc['metal']}",
        f"- backend: lrn = {desc['lrn']}; compile = {desc['compile']}",
        f"- outputs agree: relative L2 difference backend vs native = {agree:.2e}",
        "",
        "| forward | median s | min s | images/s |",
        "|---|---:|---:|---:|",
        f"| alexnet_aa `mlx` backend | {med_be:.3f} | {min(t_be):.3f} | {args.batch / med_be:.2f} |",
        f"| native MLX | {med_nat:.3f} | {min(t_nat):.3f} | {args.batch / med_nat:.2f} |",
        "",
        f"**dispatch-overhead ratio (backend / native, medians): {ratio:.3f}** (target <= 1.05); "
        f"of the minima: {min(t_be) / min(t_nat):.3f}",
    ]
    if rows:
        lines += ["", "Per layer, each op alone (minimum of the repeats):", ""]
        lines += ["| layer | backend ms | native ms | ratio |", "|---|---:|---:|---:|"]
        for name, tb, tn in rows:
            lines.append(f"| {name} | {tb * 1e3:.2f} | {tn * 1e3:.2f} | {tb / tn:.2f} |")
        sb, sn = sum(r[1] for r in rows), sum(r[2] for r in rows)
        lines.append(f"| **sum** | {sb * 1e3:.1f} | {sn * 1e3:.1f} | {sb / sn:.2f} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
