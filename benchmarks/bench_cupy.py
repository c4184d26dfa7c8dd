"""Benchmark the cupy backend's whole AlexNet forward against PyTorch + cuDNN, at every storage dtype.

Both run the same canonical weights (the model's seeded initialisation) on the same GPU in the same
process. float32 is true float32 on both sides (TF32 off for cuDNN and cuBLAS in torch; CuPy uses no
TF32 unless ``CUPY_TF32=1``, reported). float16 and bfloat16 are ``CupyBackend(dtype=...)`` (tensor
cores, float32 accumulation) against torch in the same dtype with channels-last tensors and cuDNN
autotuning. Timing uses CUDA events around whole forwards and around each layer; kernel compilation,
graph recording and cuDNN autotuning are timed separately as first calls.

Sections of the report:

- whole forward: ours with the forward captured as a CUDA graph (the default) and eager
  (``capture=False``), torch eager, and ``torch.compile(mode="reduce-overhead")`` (CUDA graphs) at
  the batches of ``--compile-batches`` and dtypes of ``--compile-dtypes`` where it runs; the ratios
  against cuDNN's time. The report is written after each dtype, so a run cut short keeps what it measured;
- agreement with torch per layer (relative L2, top-1), and, for each half dtype, top-1 agreement
  with our own float32 forward on ``--agreement`` random inputs (He-initialised weights);
- per layer (eager, ms) for every variant and batch;
- the conv sweep (every algorithm and tile on every conv layer's real input, cuDNN beside it) and
  the linear sweep (GEMV, GEMM tiles and cuBLAS on fc6–fc8; fc6's GEMV as a share of the device's
  memory bandwidth), at the largest batch and at batch 1.

    python benchmarks/bench_cupy.py [--variants paper,torchvision] [--batches 1,32,128]
        [--dtypes float32,float16,bfloat16] [--compile-batches 1] [--agreement 1000] [--out bench.md]

Needs a CUDA GPU, cupy, torch with CUDA, and the ``alexnet-aa`` and ``alexnet-aa-cupy`` distributions
installed (bfloat16: ml_dtypes). torchvision is not used: the torch side is
:mod:`alexnet_aa.testing.torch_reference` (``torch.nn.functional`` on the same layer table).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default="paper,torchvision", help="comma-separated variants (default: paper,torchvision)")
    p.add_argument("--batches", default="1,32,128", help="comma-separated batch sizes (default: 1,32,128)")
    p.add_argument("--dtypes", default="float32,float16,bfloat16",
                   help="comma-separated storage dtypes (default: float32,float16,bfloat16)")
    p.add_argument("--compile-batches", default="1",
                   help="batches at which torch.compile(mode='reduce-overhead') is timed too ('' for none; default: 1)")
    p.add_argument("--compile-dtypes", default="float32",
                   help="dtypes at which torch.compile is timed (each compile takes tens of seconds; default: float32)")
    p.add_argument("--agreement", type=int, default=1000,
                   help="random inputs for each half dtype's top-1 agreement with float32 (0: skip; default: 1000)")
    p.add_argument("--seconds", type=float, default=1.0, help="target timing time per (variant, batch, library) (default: 1.0)")
    p.add_argument("--layer-reps", type=int, default=5, help="repetitions of the per-layer timing (median) (default: 5)")
    p.add_argument("--no-sweep", action="store_true", help="skip the conv and linear sweeps")
    p.add_argument("--out", default=None, help="also write the Markdown report to this file")
    return p.parse_args(argv)


@dataclass
class Report:
    """The report's table rows, filled per (dtype, variant, batch)."""

    summary: list = field(default_factory=list)
    layer_sections: list = field(default_factory=list)
    warm_rows: list = field(default_factory=list)
    check_rows: list = field(default_factory=list)
    agreement_rows: list = field(default_factory=list)
    sweep_rows: list = field(default_factory=list)
    linear_rows: list = field(default_factory=list)
    failures: list = field(default_factory=list)


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


def _table(header, rows) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def _csv(text: str) -> list[str]:
    return [v for v in text.split(",") if v]


def main(argv=None) -> int:
    args = _parse(argv)
    variants, dtypes = _csv(args.variants), _csv(args.dtypes)
    batches = [int(b) for b in _csv(args.batches)]
    compile_batches = {int(b) for b in _csv(args.compile_batches)}
    compile_dtypes = set(_csv(args.compile_dtypes))

    import cupy
    import torch

    from alexnet_aa import AlexNet
    from alexnet_aa.backend import get_backend

    if not torch.cuda.is_available():
        print("torch sees no CUDA device: cannot benchmark against cuDNN", file=sys.stderr)
        return 2
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    torch.set_grad_enabled(False)

    t0 = time.perf_counter()
    backends = {d: (get_backend("cupy", dtype=d), get_backend("cupy", dtype=d, capture=False)) for d in dtypes}
    compile_s = backends[dtypes[0]][0].warmup()
    setup_s = time.perf_counter() - t0
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.runtime.getDevice())
    peak_gbs = 2 * props["memoryClockRate"] * 1e3 * props["memoryBusWidth"] / 8 / 1e9  # DDR: two transfers a clock

    lines = ["# cupy backend vs PyTorch + cuDNN", ""]
    lines += [f"- {k}: {v}" for k, v in backends[dtypes[0]][0].describe().items()]
    lines += [
        f"- torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, "
        f"torch device {torch.cuda.get_device_name()}; float32 with TF32 off on both sides",
        f"- memory bandwidth from the device's attributes: {peak_gbs:,.0f} GB/s "
        f"({props['memoryClockRate'] / 1e3:.0f} MHz x {props['memoryBusWidth']} bits x 2)",
        f"- python {platform.python_version()}, CUPY_TF32={os.environ.get('CUPY_TF32', '(unset)')}, "
        f"CUPY_CACHE_DIR={os.environ.get('CUPY_CACHE_DIR', '(default)')}",
        f"- cupy kernel compile/load (warmup): {compile_s:.2f} s (backends + warmup {setup_s:.2f} s; "
        "a second run loads from CuPy's disk cache)",
        "",
    ]
    print("\n".join(lines), flush=True)

    t_cp, t_th = Timer("cupy"), Timer("torch")
    rep = Report()
    # Each part is attempted on its own: one that fails is a row of the report's failures, and the report is
    # rewritten after each part, so a run cut short by its timeout keeps what it measured.
    if not args.no_sweep:  # short, and fc6's share of the memory bandwidth is one of the issue's targets
        _attempt(rep, "linear sweep", lambda: rep.linear_rows.extend(
            _linear_sweep(t_cp, t_th, torch, sorted({1, max(batches)}), peak_gbs)))
        _write(args, lines, rep, "after the linear sweep")
    for dtype in dtypes:  # float32 first by default: its figures are the first targets
        captured_be, eager_be = backends[dtype]
        for variant in variants:
            models = {}  # captured, eager, torch weights: made in the first batch's attempt, kept for the others
            for batch in batches:
                _attempt(rep, f"{dtype} {variant} batch {batch}", lambda: _bench_batch(
                    args, rep, *_models(models, AlexNet, torch, captured_be, eager_be, variant, dtype),
                    t_cp, t_th, dtype, variant, batch, compiled=batch in compile_batches and dtype in compile_dtypes,
                    sweep=not args.no_sweep and batch in (1, max(batches)) and variant == variants[-1]))
                cupy.get_default_memory_pool().free_all_blocks()
                torch.cuda.empty_cache()
                _write(args, lines, rep, f"after {dtype} {variant} batch {batch}")
            models.clear()
        if dtype != "float32" and args.agreement:
            _attempt(rep, f"{dtype} agreement", lambda: rep.agreement_rows.extend(
                _agreement(backends, dtype, variants, args.agreement)))
            _write(args, lines, rep, f"after the {dtype} agreement")
    print(_write(args, lines, rep, None))
    return 1 if rep.failures else 0


def _models(models: dict, AlexNet, torch, captured_be, eager_be, variant: str, dtype: str) -> tuple:
    """``(captured model, eager model, torch weights)`` for ``variant``, made once into ``models``."""
    if not models:
        models["captured"] = AlexNet(variant, backend=captured_be)
        models["eager"] = AlexNet(variant, backend=eager_be)
        models["torch"] = _torch_weights(torch, models["captured"].state_dict(), dtype)
    return models["captured"], models["eager"], models["torch"]


def _attempt(rep: Report, what: str, fn) -> None:
    """``fn()``; an exception is printed with its traceback and kept as a row of the report's failures."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - one failing part must not cost the others their figures
        traceback.print_exc()
        rep.failures.append((what, f"{type(exc).__name__}: {exc}".replace("|", "/").replace("\n", " ")[:300]))


def _write(args, lines, rep: Report, partial: str | None) -> str:
    """The Markdown report of what ``rep`` holds, written to ``--out`` (marked partial while the run goes on)."""
    out = lines + ([f"**Partial report: written {partial}; the run went on.**", ""] if partial else [])
    if rep.failures:
        out += ["## Failures (see the run's log for the tracebacks)", ""] + _table(["part", "error"], rep.failures) + [""]
    out += ["## Whole forward (ms per batch; ratios are time over cuDNN's time: below 1 is faster)", ""]
    out += _table(["dtype", "variant", "batch", "captured", "eager", "torch", "torch.compile", "captured/torch",
                   "captured/torch.compile", "captured img/s", "iters"], rep.summary)
    out += ["", "## Agreement with torch in the same dtype (relative L2, same weights and input)", ""]
    out += _table(["dtype", "variant", "batch", "logits", "worst layer", "top-1 match"], rep.check_rows)
    if rep.agreement_rows:
        out += ["", f"## Half precision against our float32 ({args.agreement} random inputs, He-initialised weights)", ""]
        out += _table(["dtype", "variant", "top-1 = float32's", "top-5 holds float32's top-1", "logits rel L2 (median)"],
                      rep.agreement_rows)
    out += ["", "## First call (ms): ours records the graph; torch includes cuDNN autotuning (and compiling)", ""]
    out += _table(["dtype", "variant", "batch", "library", "first call ms"], rep.warm_rows)
    out += ["", "## Per layer (eager)"] + rep.layer_sections
    if rep.sweep_rows:
        out += ["", "## conv2d sweep (ms per layer, conv + bias + ReLU; * = what conv2d runs by default)", ""]
        out += _table(["dtype", "variant", "batch", "layer", "algorithm: ms per tile", "cuDNN", "best/cuDNN"], rep.sweep_rows)
    if rep.linear_rows:
        out += ["", "## linear sweep, float32 (ms; * = the default; GB/s: the weight's bytes over the time)", ""]
        out += _table(["layer", "batch", "gemv", *_linear_tiles(), "cuBLAS", "torch", "GEMV GB/s (% of peak)"],
                      rep.linear_rows)
    text = "\n".join(out) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return text


def _torch_weights(torch, params, dtype: str):
    """The canonical weights on the GPU in ``dtype``; 4-D ones channels-last for the half dtypes."""
    from alexnet_aa.testing.torch_reference import torch_weights

    tw = torch_weights(torch, params, "cuda")
    if dtype == "float32":
        return tw
    tdt = getattr(torch, dtype)
    return {k: v.to(tdt).contiguous(memory_format=torch.channels_last) if v.ndim == 4 else v.to(tdt) for k, v in tw.items()}


def _bench_batch(args, rep: Report, captured, eager, tw, t_cp, t_th, dtype, variant, batch, *, compiled: bool,
                 sweep: bool) -> None:
    """Time and check one (dtype, variant, batch); append to ``rep``. A function of its own so that every
    device array it makes is released when it returns."""
    import numpy as np
    import torch

    from alexnet_aa import example_input
    from alexnet_aa.testing.compare import relative_error
    from alexnet_aa.testing.torch_reference import torch_forward, torch_layers

    arch = captured.arch
    x = np.asarray(example_input(variant, batch=batch), dtype=np.float32)
    be = captured.backend
    xc = be.asarray(x)
    xt = torch.from_numpy(x).cuda()
    if dtype != "float32":
        xt = xt.to(getattr(torch, dtype)).contiguous(memory_format=torch.channels_last)

    runs = {"captured": lambda: captured(xc), "eager": lambda: eager(xc), "torch": lambda: torch_forward(torch, arch, tw, xt)}
    if compiled:
        try:
            fn = torch.compile(lambda t: torch_forward(torch, arch, tw, t), mode="reduce-overhead")
            runs["torch.compile"] = lambda: fn(xt)
        except Exception as exc:  # noqa: BLE001 - report why it does not run, time the rest
            print(f"torch.compile unavailable: {type(exc).__name__}: {exc}", flush=True)
    for lib, fn in list(runs.items()):
        timer = t_th if lib.startswith("torch") else t_cp
        timer.sync()
        s = time.perf_counter()
        try:
            with warnings.catch_warnings():  # a recording that fails warns and runs eagerly: not "captured"
                warnings.filterwarnings("error", message=r".*recording the forward", category=RuntimeWarning)
                fn()
            timer.sync()
        except Exception as exc:  # noqa: BLE001 - torch.compile may fail at its first call (no triton, ...)
            print(f"{lib} failed: {type(exc).__name__}: {exc}", flush=True)
            del runs[lib]
            continue
        rep.warm_rows.append((dtype, variant, batch, lib, f"{(time.perf_counter() - s) * 1e3:.1f}"))

    ours = {n: be.to_host(y) for n, y in eager.layers(xc).items()}
    theirs = {n: y.float().cpu().numpy() for n, y in torch_layers(torch, arch, tw, xt)}
    errs = {n: relative_error(ours[n], theirs[n]) for n in ours}
    worst = max(errs, key=errs.get)
    last = arch.layers[-1].name
    if "captured" in runs:
        same = np.array_equal(be.to_host(captured(xc)), ours[last], equal_nan=True)
        verdict = "" if same else " (captured != eager!)"
    else:
        verdict = " (not captured: recording failed)"
    top1 = float(np.mean(ours[last].argmax(1) == theirs[last].argmax(1)))
    rep.check_rows.append((dtype, variant, batch, f"{errs[last]:.2e}", f"{worst} ({errs[worst]:.2e})", f"{top1:.3f}{verdict}"))

    ms = {lib: t_th.forward_ms(fn, args.seconds) if lib.startswith("torch") else t_cp.forward_ms(fn, args.seconds)
          for lib, fn in runs.items()}
    th, tc, cap, eag = (ms.get(lib, (None,))[0] for lib in ("torch", "torch.compile", "captured", "eager"))
    ours_ms = cap or eag  # eager stands in (and is named) where the recording failed

    def fmt(v):
        return f"{v:.3f}" if v else "-"

    rep.summary.append((dtype, variant, batch, fmt(cap), fmt(eag), fmt(th), fmt(tc),
                        f"**{ours_ms / th:.2f}**" + ("" if cap else " (eager)"), f"{ours_ms / tc:.2f}" if tc else "-",
                        f"{batch * 1e3 / ours_ms:,.0f}", "/".join(str(v[1]) for v in ms.values())))
    print(f"{dtype} {variant} batch {batch}: captured {fmt(cap)} ms, eager {fmt(eag)} ms, torch {fmt(th)} ms"
          + (f", torch.compile {tc:.3f} ms" if tc else ""), flush=True)

    lc = t_cp.layer_ms(lambda: eager.iter_layers(xc), args.layer_reps)
    lt = t_th.layer_ms(lambda: torch_layers(torch, arch, tw, xt), args.layer_reps)
    rows = [(n, f"{lc[n]:.3f}", f"{lt[n]:.3f}", f"{lc[n] / lt[n]:.2f}" if lt[n] > 0 else "-") for n in lc]
    rows.append(("**sum**", f"{sum(lc.values()):.3f}", f"{sum(lt.values()):.3f}",
                 f"{sum(lc.values()) / sum(lt.values()):.2f}"))
    rep.layer_sections += ["", f"### {dtype}, {variant}, batch {batch}: per layer (ms, median of {args.layer_reps})", ""]
    rep.layer_sections += _table(["layer", "cupy", "torch", "cupy/torch"], rows)

    if sweep:
        rep.sweep_rows += _conv_sweep(eager, xc, t_cp, tw, xt, dtype, variant, batch)


def _agreement(backends, dtype, variants, count) -> list[tuple]:
    """Top-1 of ``dtype`` against our float32 forward on ``count`` random N(0, 1) inputs, batches of 100
    (``half_agreement.top1_agreement``, the same measure as for the other backends)."""
    import numpy as np
    from half_agreement import top1_agreement

    from alexnet_aa import AlexNet
    from alexnet_aa.architecture import get_architecture
    from alexnet_aa.weights import he_weights

    f32 = backends["float32"][0] if "float32" in backends else "cupy"
    rows = []
    for variant in variants:
        weights = he_weights(get_architecture(variant), np.random.default_rng(0))
        ref, half = AlexNet(variant, f32, weights=weights), AlexNet(variant, backends[dtype][0], weights=weights)
        top1, top5, err = top1_agreement(ref, {dtype: half}, count)[dtype]
        rows.append((dtype, variant, f"{top1 / count:.4f} ({top1}/{count})", f"{top5 / count:.4f}", f"{err:.2e}"))
        print(f"{dtype} {variant}: top-1 agreement with float32 {top1}/{count}", flush=True)
    return rows


def _conv_sweep(model, xc, t_cp, tw, xt, dtype, variant, batch):
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
    sms = kernels.device_facts()["sms"]
    for i, layer in enumerate(arch.layers):
        if layer not in convs:
            continue
        x_in = xc if i == 0 else outs_cp[names[i - 1]]
        x_th = xt if i == 0 else outs_th[names[i - 1]]
        w, b = params[f"{layer.name}.weight"], params[f"{layer.name}.bias"]
        s, p = (layer.stride, layer.stride), (layer.padding, layer.padding)
        cells, best = [], float("inf")
        if dtype == "float32":
            chosen = kernels.conv2d_choice(x_in.shape, w.shape, s, p, layer.groups, sms)
            for algo in kernels.CONV_ALGOS:
                try:
                    kernels.resolve_conv_algo(w.shape, s, algo)
                except ValueError:
                    continue
                # each algorithm with its own prepared transform, as prepare would store it were it the default
                wa = w if algo == "gemm" or w.winograd_algo == algo else kernels.ConvWeight(w.ihwo, kernels.winograd_weight(w.ihwo, algo))
                times = []
                for tile in (kernels.CONV_TILES if algo == "gemm" else kernels.WINOGRAD_TILES):
                    ms, _ = t_cp.forward_ms(lambda: kernels.conv2d(x_in, wa, b, s, p, layer.groups, True, algo=algo, tile=tile), 0.2)
                    best = min(best, ms)
                    times.append(f"{tile} {ms:.3f}" + ("*" if (algo, tile) == chosen else ""))
                cells.append(f"{algo}: " + ", ".join(times))
        else:
            default = kernels.choose_mma_conv_tile(w.shape[0] // layer.groups, x_in.shape[0] * outs_cp[layer.name].shape[2]
                                                   * outs_cp[layer.name].shape[3], layer.groups, sms)
            times = []
            for tile, cfg in kernels.MMA_CONV_TILES.items():
                ms, _ = t_cp.forward_ms(lambda: kernels.conv2d_mma(x_in, w, b, s, p, layer.groups, True, tile=tile), 0.2)
                best = min(best, ms)
                times.append(f"{tile} {ms:.3f}" + ("*" if cfg == default else ""))
            cells.append("mma: " + ", ".join(times))
        ms_th, _ = Timer("torch").forward_ms(
            lambda: F.relu(F.conv2d(x_th, tw[f"{layer.name}.weight"], tw[f"{layer.name}.bias"],
                                    stride=layer.stride, padding=layer.padding, groups=layer.groups)), 0.2)
        rows.append((dtype, variant, batch, layer.name, "; ".join(cells), f"{ms_th:.3f}", f"{best / ms_th:.2f}"))
    return rows


def _linear_tiles():
    from alexnet_aa_cupy import kernels

    return [f"gemm {t}" for t in kernels.LINEAR_TILES]


def _linear_sweep(t_cp, t_th, torch, batches, peak_gbs):
    """fc6–fc8 (float32) at each batch: our GEMV and GEMM tiles (the same bits), cuBLAS, torch; GB/s of the GEMV."""
    import cupy
    import numpy as np
    from alexnet_aa_cupy import kernels

    rows = []
    rng = np.random.default_rng(0)
    for name, (fin, fout) in {"fc6": (9216, 4096), "fc7": (4096, 4096), "fc8": (4096, 1000)}.items():
        w_io = cupy.asarray((rng.standard_normal((fin, fout)) / np.sqrt(fin)).astype(np.float32))
        b = cupy.asarray(rng.standard_normal(fout).astype(np.float32))
        wt, bt = torch.as_tensor(cupy.asnumpy(w_io).T.copy(), device="cuda"), torch.as_tensor(cupy.asnumpy(b), device="cuda")
        for batch in batches:
            x = cupy.asarray(rng.standard_normal((batch, fin)).astype(np.float32))
            xt = torch.as_tensor(cupy.asnumpy(x), device="cuda")
            default = kernels.choose_linear_algo(batch)
            gemv, _ = t_cp.forward_ms(lambda: kernels.linear(x, w_io, b, True, algo="gemv"), 0.3)
            cells = [f"{gemv:.3f}" + ("*" if default == "gemv" else "")]
            chosen = kernels.choose_conv_tile(fout, batch, kernels.linear_chunks(fin), kernels.device_facts()["sms"],
                                              tiles=kernels.LINEAR_TILES)
            for tile, cfg in kernels.LINEAR_TILES.items():
                ms, _ = t_cp.forward_ms(lambda: kernels.linear(x, w_io, b, True, algo="gemm", tile=tile), 0.3)
                cells.append(f"{ms:.3f}" + ("*" if default == "gemm" and cfg == chosen else ""))
            blas, _ = t_cp.forward_ms(lambda: kernels.linear_cublas(x, w_io, b, True), 0.3)
            th, _ = t_th.forward_ms(lambda: torch.nn.functional.relu(torch.nn.functional.linear(xt, wt, bt)), 0.3)
            gbs = fin * fout * 4 / (gemv * 1e-3) / 1e9
            rows.append((name, batch, *cells, f"{blas:.3f}", f"{th:.3f}", f"{gbs:,.0f} ({100 * gbs / peak_gbs:.0f}%)"))
    return rows


if __name__ == "__main__":
    sys.exit(main())
