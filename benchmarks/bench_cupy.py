"""Benchmark the cupy backend's whole AlexNet forward against PyTorch + cuDNN.

Both run the same canonical weights (the model's seeded initialisation) on the
same GPU in the same process, in true float32: TF32 is off for cuDNN and
cuBLAS in torch, and CuPy uses no TF32 unless ``CUPY_TF32=1`` (reported).
Timing uses CUDA events around whole forwards (images/s, ratio) and around
each layer (milliseconds); kernel compilation and cuDNN autotuning are timed
separately as warm-up. The script also reports each layer's relative L2
difference between the two, a correctness check independent of the suite.

    python benchmarks/bench_cupy.py [--variants paper,torchvision] [--batches 1,32,128] [--out bench.md]

Needs a CUDA GPU, cupy, torch with CUDA, and the ``alexnet-aa`` and
``alexnet-aa-cupy`` distributions installed. torchvision is not used: the
torch side is :mod:`alexnet_aa.testing.torch_reference` (``torch.nn.functional``
on the same layer table).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default="paper,torchvision", help="comma-separated variants (default: paper,torchvision)")
    p.add_argument("--batches", default="1,32,128", help="comma-separated batch sizes (default: 1,32,128)")
    p.add_argument("--seconds", type=float, default=1.0, help="target timing time per (variant, batch, library) (default: 1.0)")
    p.add_argument("--layer-reps", type=int, default=5, help="repetitions of the per-layer timing (median) (default: 5)")
    p.add_argument("--no-tile-sweep", action="store_true", help="skip timing every conv tile on every conv layer")
    p.add_argument("--out", default=None, help="also write the Markdown report to this file")
    return p.parse_args(argv)


@dataclass
class Report:
    """The report's table rows, filled per (variant, batch)."""

    summary: list = field(default_factory=list)
    layer_sections: list = field(default_factory=list)
    warm_rows: list = field(default_factory=list)
    check_rows: list = field(default_factory=list)
    sweep_rows: list = field(default_factory=list)


# -- timing helpers ------------------------------------------------------------------------


class Timer:
    """CUDA-event timing for one library (``cupy`` or ``torch``)."""

    def __init__(self, lib: str):
        self.lib = lib
        if lib == "cupy":
            import cupy

            self._event = lambda: cupy.cuda.Event()
            self._sync = cupy.cuda.Device().synchronize
            self._elapsed = cupy.cuda.get_elapsed_time
        else:
            import torch

            self._event = lambda: torch.cuda.Event(enable_timing=True)
            self._sync = torch.cuda.synchronize
            self._elapsed = lambda a, b: a.elapsed_time(b)

    def event(self):
        e = self._event()
        e.record()
        return e

    def sync(self):
        self._sync()

    def ms(self, a, b) -> float:
        return float(self._elapsed(a, b))

    def forward_ms(self, fn, seconds: float) -> tuple[float, int]:
        """Mean milliseconds per call of ``fn()`` over about ``seconds`` (after one untimed call)."""
        fn()
        self.sync()
        a = self.event()
        fn()
        b = self.event()
        self.sync()
        one = max(self.ms(a, b), 1e-3)
        iters = max(3, min(200, int(seconds * 1e3 / one)))
        a = self.event()
        for _ in range(iters):
            fn()
        b = self.event()
        self.sync()
        return self.ms(a, b) / iters, iters

    def layer_ms(self, gen_fn, reps: int) -> dict[str, float]:
        """Median milliseconds of each layer over ``reps`` forwards driven by ``gen_fn()`` (yields (name, out))."""
        samples: dict[str, list[float]] = {}
        for _ in range(reps):
            self.sync()
            marks = [("", self.event())]
            for name, _ in gen_fn():
                marks.append((name, self.event()))
            self.sync()
            for (_, a), (name, b) in zip(marks, marks[1:]):
                samples.setdefault(name, []).append(self.ms(a, b))
        return {name: statistics.median(v) for name, v in samples.items()}


def _rel(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _table(header, rows) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def main(argv=None) -> int:
    args = _parse(argv)
    variants = [v for v in args.variants.split(",") if v]
    batches = [int(b) for b in args.batches.split(",") if b]

    import cupy
    import numpy as np
    import torch

    from alexnet_aa import AlexNet, example_input
    from alexnet_aa.backend import get_backend
    from alexnet_aa.testing.torch_reference import torch_weights

    if not torch.cuda.is_available():
        print("torch sees no CUDA device: cannot benchmark against cuDNN", file=sys.stderr)
        return 2
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    torch.set_grad_enabled(False)

    t0 = time.perf_counter()
    backend = get_backend("cupy")
    compile_s = backend.warmup()
    setup_s = time.perf_counter() - t0
    facts = backend.describe()

    lines = ["# cupy backend vs PyTorch + cuDNN (float32, TF32 off)", ""]
    lines += [f"- {k}: {v}" for k, v in facts.items()]
    lines += [
        f"- torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, "
        f"torch device {torch.cuda.get_device_name()}",
        f"- python {platform.python_version()}, CUPY_TF32={os.environ.get('CUPY_TF32', '(unset)')}, "
        f"CUPY_CACHE_DIR={os.environ.get('CUPY_CACHE_DIR', '(default)')}",
        f"- cupy kernel compile/load (warmup): {compile_s:.2f} s (backend construction + warmup {setup_s:.2f} s; "
        "a second run loads from CuPy's disk cache)",
        "",
    ]
    print("\n".join(lines), flush=True)

    t_cp, t_th = Timer("cupy"), Timer("torch")
    rep = Report()
    for variant in variants:
        model = AlexNet(variant, backend=backend)
        tw = torch_weights(torch, model.state_dict(), "cuda")
        for batch in batches:
            x = np.asarray(example_input(variant, batch=batch), dtype=np.float32)
            _bench_batch(args, rep, model, backend, tw, x, t_cp, t_th, variant, batch, sweep=batch == max(batches))
            # the batch's device arrays died with _bench_batch's frame: hand their memory back
            cupy.get_default_memory_pool().free_all_blocks()
            torch.cuda.empty_cache()

    out = lines + ["## Whole forward", ""]
    out += _table(["variant", "batch", "cupy img/s", "torch img/s", "cupy ms", "torch ms", "cupy/torch time", "iters"], rep.summary)
    out += ["", "## Agreement with torch (relative L2, same weights and input)", ""]
    out += _table(["variant", "batch", "logits", "worst layer", "top-1 match"], rep.check_rows)
    out += ["", "## First call (ms): cupy with compiled kernels; torch incl. cuDNN autotuning", ""]
    out += _table(["variant", "batch", "library", "first call ms"], rep.warm_rows)
    out += ["", "## Per layer"] + rep.layer_sections
    if rep.sweep_rows:
        out += ["", "## conv2d tile sweep (ms per layer, conv + bias + ReLU; * = what conv2d runs by default; "
                "wino = Winograd F(2x2,3x3) / F(2x2,5x5), 3x3 and 5x5 stride-1 layers only)", ""]
        out += _table(["variant", "batch", "layer", *_tiles(), "cuDNN"], rep.sweep_rows)
    text = "\n".join(out) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


def _bench_batch(args, rep: Report, model, backend, tw, x, t_cp, t_th, variant, batch, *, sweep: bool) -> None:
    """Time and check one (variant, batch) (and sweep the conv tiles if ``sweep``); append to ``rep``.

    A function of its own so that every device array it makes (inputs,
    per-layer outputs) is released when it returns.
    """
    import numpy as np
    import torch

    from alexnet_aa.testing.torch_reference import torch_forward, torch_layers

    arch = model.arch
    xc = backend.asarray(x)
    xt = torch.from_numpy(x).cuda()

    def run_cp():
        return model(xc)

    def run_th():
        return torch_forward(torch, arch, tw, xt)

    # first calls: cupy (kernels already compiled) vs torch (cuDNN autotuning)
    for lib, timer, fn in (("cupy", t_cp, run_cp), ("torch", t_th, run_th)):
        timer.sync()
        s = time.perf_counter()
        fn()
        timer.sync()
        rep.warm_rows.append((variant, batch, lib, f"{(time.perf_counter() - s) * 1e3:.1f}"))

    # per-layer agreement (same weights, same input)
    ours = {n: backend.to_host(y) for n, y in model.layers(xc).items()}
    theirs = {n: y.cpu().numpy() for n, y in torch_layers(torch, arch, tw, xt)}
    errs = {n: _rel(ours[n], theirs[n]) for n in ours}
    worst = max(errs, key=errs.get)
    last = arch.layers[-1].name
    top1 = float(np.mean(ours[last].argmax(1) == theirs[last].argmax(1)))
    rep.check_rows.append((variant, batch, f"{errs[last]:.2e}", f"{worst} ({errs[worst]:.2e})", f"{top1:.3f}"))

    ms_cp, it_cp = t_cp.forward_ms(run_cp, args.seconds)
    ms_th, it_th = t_th.forward_ms(run_th, args.seconds)
    rep.summary.append((variant, batch, f"{batch * 1e3 / ms_cp:,.0f}", f"{batch * 1e3 / ms_th:,.0f}",
                        f"{ms_cp:.3f}", f"{ms_th:.3f}", f"{ms_cp / ms_th:.2f}", f"{it_cp}/{it_th}"))
    print(f"{variant} batch {batch}: cupy {ms_cp:.3f} ms, torch {ms_th:.3f} ms, ratio {ms_cp / ms_th:.2f}", flush=True)

    lc = t_cp.layer_ms(lambda: model.iter_layers(xc), args.layer_reps)
    lt = t_th.layer_ms(lambda: torch_layers(torch, arch, tw, xt), args.layer_reps)
    rows = [(n, f"{lc[n]:.3f}", f"{lt[n]:.3f}", f"{lc[n] / lt[n]:.2f}" if lt[n] > 0 else "-") for n in lc]
    rows.append(("**sum**", f"{sum(lc.values()):.3f}", f"{sum(lt.values()):.3f}",
                 f"{sum(lc.values()) / sum(lt.values()):.2f}"))
    rep.layer_sections += ["", f"### {variant}, batch {batch}: per layer (ms, median of {args.layer_reps})", ""]
    rep.layer_sections += _table(["layer", "cupy", "torch", "cupy/torch"], rows)

    if sweep and not args.no_tile_sweep:
        rep.sweep_rows += _tile_sweep(model, xc, t_cp, tw, xt, variant, batch)


def _tiles():
    from alexnet_aa_cupy import kernels

    return [*kernels.CONV_TILES, *(f"wino {t}" for t in kernels.WINOGRAD_TILES)]


def _tile_sweep(model, xc, t_cp, tw, xt, variant, batch):
    """Time every conv algorithm and tile on every conv layer's real input; torch's conv (+ReLU) beside it."""
    import torch
    from alexnet_aa_cupy import kernels

    from alexnet_aa.architecture import Conv
    from alexnet_aa.testing.torch_reference import torch_layers

    F = torch.nn.functional
    arch = model.arch
    rows = []
    outs_cp = model.layers(xc)
    outs_th = dict(torch_layers(torch, arch, tw, xt))
    names = [layer.name for layer in arch.layers]
    convs, params = set(arch.layers_of(Conv)), model.native_params
    for i, layer in enumerate(arch.layers):
        if layer not in convs:
            continue
        x_in = xc if i == 0 else outs_cp[names[i - 1]]
        x_th = xt if i == 0 else outs_th[names[i - 1]]
        w, b = params[f"{layer.name}.weight"], params[f"{layer.name}.bias"]
        s, p = (layer.stride, layer.stride), (layer.padding, layer.padding)
        chosen = kernels.conv2d_choice(x_in.shape, w.shape, s, p, layer.groups, kernels.device_facts()["sms"])
        cells = []
        for algo, tiles in (("gemm", kernels.CONV_TILES), ("winograd", kernels.WINOGRAD_TILES)):
            for tile in tiles:
                if algo == "winograd" and not kernels.winograd_applies(w.shape, s):
                    cells.append("-")
                    continue
                ms, _ = t_cp.forward_ms(
                    lambda: kernels.conv2d(x_in, w, b, s, p, layer.groups, True, algo=algo, tile=tile), 0.2)
                cells.append(f"{ms:.3f}" + ("*" if (algo, tile) == chosen else ""))
        ms_th, _ = Timer("torch").forward_ms(
            lambda: F.relu(F.conv2d(x_th, tw[f"{layer.name}.weight"], tw[f"{layer.name}.bias"],
                                    stride=layer.stride, padding=layer.padding, groups=layer.groups)), 0.2)
        rows.append((variant, batch, layer.name, *cells, f"{ms_th:.3f}"))
    return rows


if __name__ == "__main__":
    sys.exit(main())
