"""mkdocs hooks: every table, formula, diagram and command output in the docs is generated here, from the code.

A page asks for generated content with a placeholder comment on a line of its
own, ``<!-- gen:NAME ARGS -->``; :func:`on_page_markdown` replaces it with the
output of ``GENERATORS[NAME](*ARGS)``. An unknown name fails the build. The
architecture diagrams (SVG) and the example pictures (PNG) are added to the
site as generated files by :func:`on_files`; benchmark result files
``benchmarks/*.md`` are included in ``performance.md`` rather than published
on their own.

The same module holds :class:`RstDocstrings`, a griffe extension that turns
the RST bits of the project's docstrings (``.. math::``, ``:math:``,
``:func:``, doctest blocks, simple tables) into Markdown for mkdocstrings.

``tests/test_docs.py`` imports this file to check that every placeholder of
every page is replaced and the published totals appear.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

from alexnet_aa import architecture as A
from alexnet_aa.ablation import kept_runs
from alexnet_aa.summary import format_markdown

DOCS = Path(__file__).resolve().parent
PLACEHOLDER = re.compile(r"<!--\s*gen:([\w-]+)((?:\s+[^\s>]+)*)\s*-->")

# -- small helpers ----------------------------------------------------------------


def _table(header: list[str], rows: list[list[str]], align: str = "") -> str:
    """A Markdown table; ``align`` has one of ``l``/``r`` per column (default: left)."""
    align = align or "l" * len(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)


def _mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:,.1f} MB"


def _infos(variant: str, *kinds: type) -> list:
    """The summary rows of ``variant`` (only the layers of ``kinds``, spec classes, if given)."""
    arch = A.get_architecture(variant)
    wanted = set(arch.layers_of(*kinds)) if kinds else set(arch.layers)
    return [i for i in A.layer_infos(arch) if i.layer in wanted]


def _code(text: str, lang: str = "text") -> str:
    return f"```{lang}\n{text.rstrip()}\n```"


# -- the generators: each returns Markdown -----------------------------------------


def gen_table(variant: str) -> str:
    """The layer table of ``variant`` (:func:`alexnet_aa.summary.format_markdown`)."""
    return format_markdown(variant)


def gen_variants() -> str:
    """The three variants side by side."""
    rows = []
    for v in A.VARIANTS:
        arch = A.get_architecture(v)
        lrn = next(iter(arch.layers_of(A.LRN)), None)
        pool = arch.layers_of(A.MaxPool)[0]
        convs = arch.layers_of(A.Conv)
        rows.append([
            f"`{v}`", f"{arch.input_size}×{arch.input_size}",
            " / ".join(str(c.out_channels) for c in convs),
            ", ".join(c.name for c in convs if c.groups > 1) or "none",
            lrn.config() if lrn else "none",
            f"{pool.kernel}×{pool.kernel} /{pool.stride}, {'ceil' if pool.ceil_mode else 'floor'}",
            f"{A.count_params(v):,}", f"{A.count_macs(v):,}",
        ])
    return _table(["variant", "input", "conv channels", "grouped (g=2)", "LRN", "max-pool", "params", "MACs"],
                  rows, "llllllrr")


def gen_sources() -> str:
    """Where each variant comes from and what sets it apart (the architecture's own notes)."""
    return "\n".join(f"- **`{v}`** — {A.get_architecture(v).source}. {A.get_architecture(v).notes}" for v in A.VARIANTS)


def gen_sizes(variant: str) -> str:
    """Every conv and pool layer's output-size formula with its numbers (LaTeX), from ``layer_infos``."""
    lines = []
    for info in _infos(variant):
        f = info.layer.output_size_latex(info.in_shape)
        if f:
            lines.append(f"- **{info.name}** ({info.layer.config()}): ${f}$ → "
                         f"`{'×'.join(map(str, info.out_shape))}`")
    return "\n".join(lines)


def gen_formulas(variant: str) -> str:
    """Each layer's formula with its numbers, as ``layer_infos(...).explain`` writes it."""
    rows = [[f"`{i.name}`", type(i.layer).__name__, f"`{i.explain}`"] for i in _infos(variant)]
    return _table(["layer", "type", "formula with this layer's numbers"], rows)


def gen_lrn() -> str:
    """The LRN constants of each variant in both conventions."""
    rows = []
    for v in A.VARIANTS:
        lrn = next(iter(A.get_architecture(v).layers_of(A.LRN)), None)
        if lrn is None:
            rows.append([f"`{v}`", "—", "—", "—", "—", "no LRN"])
            continue
        rows.append([f"`{v}`", lrn.size, f"{lrn.k:g}", f"{lrn.beta:g}", f"{lrn.alpha:g}",
                     f"{lrn.alpha / lrn.size:g}"])
    return _table(["variant", "n (size)", "k", "β", "α passed to `lrn` (α/n convention)",
                   "α in the paper's convention (no 1/n) = α/n"], rows, "lrrrrr")


def gen_totals() -> str:
    """Per variant: parameters, weight memory, MACs, FLOPs, activation memory per image."""
    rows = []
    for v in A.VARIANTS:
        infos = _infos(v)
        params, macs = sum(i.params for i in infos), sum(i.macs for i in infos)
        acts = sum(i.activation_bytes for i in infos)
        peak = max(4 * int(np.prod(i.in_shape)) + i.activation_bytes for i in infos)
        rows.append([f"`{v}`", f"{params:,}", _mb(4 * params), f"{macs:,}", f"{2 * macs / 1e9:.2f}",
                     _mb(acts), _mb(peak)])
    return _table(["variant", "parameters", "weights (float32)", "MACs per image", "GFLOP per image",
                   "all activations per image", "largest layer input + output"], rows, "lrrrrrr")


def gen_shares(variant: str) -> str:
    """Where the parameters and the MACs are: convolutions vs fully connected layers, per layer."""
    infos = [i for i in _infos(variant) if i.params]
    p_all, m_all = sum(i.params for i in infos), sum(i.macs for i in infos)
    rows = [[f"`{i.name}`", f"{i.params:,}", f"{100 * i.params / p_all:.1f} %", f"{i.macs:,}",
             f"{100 * i.macs / m_all:.1f} %", f"{2 * i.macs / (4 * i.params):.1f}"] for i in infos]
    for kind, cls in (("all conv", A.Conv), ("all fc", A.Linear)):
        p = sum(i.params for i in _infos(variant, cls))
        m = sum(i.macs for i in _infos(variant, cls))
        rows.append([f"**{kind}**", f"{p:,}", f"{100 * p / p_all:.1f} %", f"{m:,}", f"{100 * m / m_all:.1f} %",
                     f"{2 * m / (4 * p):.1f}"])
    return _table(["layer", "params", "share", "MACs", "share", "FLOP per weight byte (batch 1)"], rows, "lrrrrr")


def gen_batch_memory(variant: str) -> str:
    """Activation memory and arithmetic intensity against the batch size."""
    infos = _infos(variant)
    params, macs = sum(i.params for i in infos), sum(i.macs for i in infos)
    peak = max(4 * int(np.prod(i.in_shape)) + i.activation_bytes for i in infos)
    acts = sum(i.activation_bytes for i in infos)
    rows = [[n, _mb(n * peak), _mb(n * acts), f"{2 * macs * n / 1e9:,.1f}", f"{2 * macs * n / (4 * params):,.0f}"]
            for n in (1, 8, 32, 128, 512)]
    return _table(["batch", "largest layer input + output", "all layer outputs (`model.layers`)",
                   "GFLOP per batch", "FLOP per weight byte"], rows, "rrrrr")


def gen_im2col(variant: str) -> str:
    """The patch matrix the reference im2col builds per conv layer (per image), against the input it reads."""
    rows = []
    for i in _infos(variant, A.Conv):
        c, k = i.in_shape[0], i.layer.kernel
        cols = c * k * k * i.out_shape[1] * i.out_shape[2]
        rows.append([f"`{i.name}`", f"{c}·{k}²·{i.out_shape[1]}·{i.out_shape[2]} = {cols:,}", _mb(4 * cols),
                     f"{cols / int(np.prod(i.in_shape)):.1f}×"])
    return _table(["layer", "patch-matrix elements (C·K²·H_out·W_out)", "float32", "× its input"], rows, "lrrr")


def gen_groups(variant: str) -> str:
    """Each grouped convolution's parameters and MACs against the same layer ungrouped."""
    rows = []
    for i in _infos(variant, A.Conv):
        layer = i.layer
        if layer.groups > 1:
            whole = i.params - layer.out_channels  # weights only
            rows.append([f"`{i.name}`", f"{layer.in_channels} → {layer.out_channels}", layer.groups,
                         f"{layer.out_channels}·{layer.in_channels // layer.groups}·{layer.kernel}² = {whole:,}",
                         f"{whole * layer.groups:,}", f"{i.macs:,}", f"{i.macs * layer.groups:,}"])
    if not rows:
        return f"The `{variant}` variant has no grouped convolution."
    return _table(["layer", "channels", "groups", "weights (grouped)", "weights if ungrouped", "MACs (grouped)",
                   "MACs if ungrouped"], rows, "llrrrrr")


def gen_pool_modes() -> str:
    """Floor against ceil mode for a 3×3 stride-2 pool at a few input sizes."""
    sizes = (6, 7, 13, 14, 27, 28, 54, 55, 56, 57)
    rows = [[n, A.pool_output_size(n, 3, 2), A.pool_output_size(n, 3, 2, ceil_mode=True)] for n in sizes]
    for r in rows:
        r.append("same" if r[1] == r[2] else "**differ**")
    return _table(["input H", "floor", "ceil", ""], rows, "rrrl")


def gen_math(dotted: str, *which: str) -> str:
    """The ``.. math::`` blocks of an object's docstring (all, or those numbered ``which``), as display math."""
    import inspect

    module, _, attr = dotted.rpartition(".")
    doc = inspect.getdoc(getattr(importlib.import_module(module), attr)) or ""
    blocks = re.findall(r"^\$\$\n(.*?)\n\$\$", rst_to_markdown(doc), flags=re.S | re.M)
    if not blocks:
        raise ValueError(f"{dotted}'s docstring has no '.. math::' block")
    chosen = [blocks[int(w)] for w in which] if which else blocks
    return "\n\n".join(f"$$\n{textwrap.dedent(b).strip()}\n$$" for b in chosen)


def gen_lrn_windows(size: str) -> str:
    """For one LRN size, each channel's forward window and its transposed window (the backward's)."""
    n = int(size)
    lo, hi, channels = (n - 1) // 2, n - 1 - (n - 1) // 2, 6
    rows = [[f"`{c}`", f"{max(0, c - lo)} … {min(channels - 1, c + hi)}", f"{max(0, c - hi)} … {min(channels - 1, c + lo)}"]
            for c in range(channels)]
    return (f"size {n}, {channels} channels:\n\n"
            + _table(["channel c", "forward window W(c)", "transposed window {j : c ∈ W(j)}"], rows))


def gen_towers(variant: str) -> str:
    """The paper's two-GPU split, read off the layer table: which layers see both towers' maps."""
    rows = []
    for i in _infos(variant, A.Conv):
        layer = i.layer
        talk = ("the image (both towers)" if i.name == "conv1" else "its own tower's maps only" if layer.groups > 1
                else "**both towers' maps**")
        rows.append([f"`{i.name}`", f"{layer.out_channels // 2} + {layer.out_channels // 2}", layer.groups, talk])
    for i in _infos(variant, A.Linear):
        width = i.layer.out_features
        rows.append([f"`{i.name}`", f"{width // 2} + {width - width // 2}" if i.name != "fc8" else f"{width}", "—",
                     "**both towers' outputs**"])
    return _table(["layer", "units per tower", "groups here", "its inputs"], rows, "lrrl")


def gen_freeze(variant: str) -> str:
    """What ``--freeze LAYER`` trains: the tensors above LAYER, and where the backward pass stops."""
    arch = A.get_architecture(variant)
    infos = {i.name: i for i in A.layer_infos(arch)}
    weighted = [layer.name for layer in arch.weighted_layers]
    total = sum(infos[n].params for n in weighted)
    rows = [["(none)", f"{total:,}", "100%", "conv1 (no input gradient)"]]
    for name in weighted[:-1]:
        trained = sum(infos[n].params for n in weighted[weighted.index(name) + 1:])
        first = weighted[weighted.index(name) + 1]
        rows.append([f"`{name}`", f"{trained:,}", f"{trained / total:.2%}", f"{first} (no input gradient)"])
    return _table(["--freeze", "parameters trained", "share", "the backward pass stops at"], rows, "lrrl")


def gen_crops() -> str:
    """How many distinct inputs the paper's augmentation makes of one image, for each crop size."""
    from alexnet_aa.preprocess import default_preprocess

    rows = []
    for variant in ("torchvision", "paper"):
        pre = default_preprocess(variant)
        offsets = pre.resize_size - pre.crop_size + 1
        rows.append([f"`{variant}`", f"{pre.resize_size}²", f"{pre.crop_size}²", f"{offsets}² = {offsets ** 2:,}",
                     f"{2 * offsets ** 2:,}"])
    return _table(["variant", "resized", "crop", "crop positions", "with flips"], rows, "lrrrr")


def gen_sgd_vs_pytorch() -> str:
    """The paper's rule and PyTorch's on one weight with a constant gradient, the learning rate
    divided by 10 after step 3: equal before the drop, apart after it."""
    from alexnet_aa.training import SGD

    opt, w = SGD(0.1, momentum=0.9, weight_decay=0.0), {"fc8.weight": np.array([1.0])}
    torch_w, buf = 1.0, 0.0
    rows = []
    for step in range(1, 7):
        lr = 0.1 if step <= 3 else 0.01
        opt.lr = lr
        w = opt.step(w, {"fc8.weight": np.array([1.0])})
        buf = 0.9 * buf + 1.0 if step > 1 else 1.0
        torch_w -= lr * buf
        rows.append([step, f"{lr:g}", f"{float(w['fc8.weight'][0]):.5f}", f"{torch_w:.5f}",
                     "same" if abs(float(w["fc8.weight"][0]) - torch_w) < 1e-12 else "**differ**"])
    return _table(["step", "lr", "paper (v ← 0.9v − lr·g; w ← w + v)", "PyTorch (b ← 0.9b + g; w ← w − lr·b)", ""],
                  rows, "rrrrl")


def gen_tolerances() -> str:
    """``alexnet_aa.testing.TOLERANCES`` as a table."""
    from alexnet_aa.testing import TOLERANCES

    checks = list(next(iter(TOLERANCES.values())))
    rows = [[f"`{dtype}`"] + [f"{tol[c]:.0e}" if c in tol else "—" for c in checks] for dtype, tol in TOLERANCES.items()]
    return _table(["dtype"] + [f"`{c}`" for c in checks], rows, "l" + "r" * len(checks))


def gen_failure_example() -> str:
    """The real message of a failing LRN case: a backend whose even-size window is one channel short."""
    from types import SimpleNamespace

    from alexnet_aa import reference
    from alexnet_aa.testing import ConformanceError, assert_conforms
    from alexnet_aa.testing.conformance import LRN_CASES

    n, c, h, w, size, alpha, beta, k = LRN_CASES["size4-even"]
    x = 3.0 * np.random.default_rng(0).standard_normal((n, c, h, w))
    ref = reference.lrn(x, size, alpha, beta, k)
    lo = (size - 1) // 2  # the window should run from c - lo to c + size - 1 - lo; this one stops one short
    padded = np.pad(x * x, ((0, 0), (lo, size), (0, 0), (0, 0)))
    short = sum(padded[:, d : d + c] for d in range(size - 1))
    wrong = x / (k + alpha / size * short) ** beta
    mine = SimpleNamespace(name="mine", dtype="float32")
    context = f"case=size4-even x={x.shape} size={size} alpha={alpha} beta={beta} k={k} noncontiguous=False"
    try:
        assert_conforms(wrong.astype(np.float32), ref, backend=mine, check="lrn", context=context)
    except ConformanceError as exc:
        return _code(f"{type(exc).__name__}: {exc}")
    raise AssertionError("the broken LRN passed the suite")


def gen_cases() -> str:
    """The conformance suite's data cases, read from :mod:`alexnet_aa.testing.conformance`."""
    from alexnet_aa.testing import conformance as C

    parts = []
    for title, cases, header in [
        ("conv2d", C.CONV_CASES, ["N", "C", "H", "W", "O", "K", "S", "P", "groups"]),
        ("max_pool2d", C.POOL_CASES, ["N", "C", "H", "W", "K", "S"]),
        ("lrn", C.LRN_CASES, ["N", "C", "H", "W", "size", "α", "β", "k"]),
        ("linear", C.LINEAR_CASES, ["N", "F_in", "F_out"]),
        ("activation", {k: (str(shape), scale) for k, (shape, scale) in C.ACTIVATION_CASES.items()}, ["shape", "scale"]),
        ("network", C.NETWORK_CASES, ["variant", "input size"]),
    ]:
        rows = [[f"`{name}`", *(f"{v:g}" if isinstance(v, float) else v for v in values)]
                for name, values in cases.items()]
        parts.append(f"**`{title}`** ({len(cases)} cases)\n\n" + _table(["case", *header], rows, "l" + "r" * len(header)))
    return "\n\n".join(parts)


def gen_nonfinite_cases() -> str:
    """The NaN/±inf cases of ``test_nonfinite``, read from :mod:`alexnet_aa.testing.conformance`."""
    from alexnet_aa.testing import conformance as C

    rows = [[f"`{name}`", f"`{op}`", "×".join(map(str, shape)), ", ".join("×".join(map(str, s)) for s in w.values()) or "—",
             ", ".join(map(str, args))] for name, (op, shape, w, args) in C.NONFINITE_CASES.items()]
    return _table(["case", "op", "x", "weights", "arguments"], rows)


def gen_capabilities() -> str:
    """The optional capabilities (``alexnet_aa.backend.CAPABILITIES``) and which registered backends lack each."""
    from alexnet_aa.backend import CAPABILITIES, BackendError, backend_class, registered_backends

    lacking: dict[str, list[str]] = {}
    for name in registered_backends():
        try:
            for capability, reason in backend_class(name).unsupported.items():
                lacking.setdefault(capability, []).append(f"`{name}` ({reason})")
        except BackendError:
            continue
    rows = [[f"`{cap}`", what, "; ".join(lacking.get(cap, [])) or "—"] for cap, what in CAPABILITIES.items()]
    return _table(["capability", "covers", "backends installed here that lack it"], rows)


def gen_bundles() -> str:
    """The published weight bundles, from the meta of :class:`alexnet_aa.bundles.AlexNetWeights`
    (torchvision's ``inject_weight_metadata``, as a table)."""
    from alexnet_aa.bundles import AlexNetWeights

    rows = []
    for bundle in AlexNetWeights:  # DEFAULT is an alias: iteration skips it
        meta, acc = bundle.meta, bundle.meta["metrics"]["ImageNet-1K"]
        get = (f"`alexnet-aa weights download {meta['short_name']}` (SHA-256 `{bundle.sha256[:12]}…`)" if bundle.sha256
               else f"import a copy you trust: `alexnet-aa weights import {bundle.file_name}`")
        default = " (`DEFAULT`)" if bundle is AlexNetWeights.DEFAULT else ""
        rows.append([f"`{bundle.name}`{default}", f"`{bundle.variant}`", f"{meta['num_params']:,}", f"{meta['ops']:.3f}",
                     f"{acc['acc@1']} / {acc['acc@5']}", bundle.transforms().summary(), get])
    return _table(["bundle", "variant", "params", "GMACs", "ImageNet-1K top-1 / top-5 (published)", "preprocessing",
                   "how to get it"], rows, "llrrrll")


#: The backends whose conformance run the docs show: the example third-party backend (how a backend
#: author's CI sees it) and ours on the CPU.
SUITE_SPECS = ("example", "numpy")


def _junit_failures(path: Path) -> str:
    """Each failed or erroring test in a JUnit XML report: its id and the start of its message (the
    run's own output is too long to show whole, and its tail holds only the skip reasons)."""
    import xml.etree.ElementTree as ET

    if not path.exists():
        return f"(no JUnit report at {path})\n"
    lines = []
    for case in ET.parse(path).getroot().iter("testcase"):
        for bad in [*case.iter("failure"), *case.iter("error")]:
            lines.append(f"{bad.tag.upper()} {case.get('classname')}::{case.get('name')}\n"
                         f"{(bad.get('message') or '')[:1500]}\n{(bad.text or '')[-2500:]}\n")
    return "".join(lines)


@functools.lru_cache(maxsize=1)
def suite_run() -> tuple[str, str, dict]:
    """``(command, output, report)`` of one run of the conformance suite on :data:`SUITE_SPECS`, the
    documented CI command with ``--alexnet-report``; the example backend is registered from its own
    ``pyproject.toml`` for the run (no install). A failing run fails the docs build."""
    from alexnet_aa.backend import registered_backends
    from alexnet_aa.testing.dist_info import write_dist_info

    specs = [spec for spec in SUITE_SPECS if spec == "example" or spec in registered_backends()]
    with tempfile.TemporaryDirectory() as tmp:
        write_dist_info(DOCS / "example_backend" / "pyproject.toml", tmp)
        argv = ["--pyargs", "alexnet_aa.testing.conformance", "--alexnet-backend", ",".join(specs),
                "--alexnet-report", "conformance.json", "--junitxml", "conformance.xml", "-q", "-rsx"]
        path = os.pathsep.join(p for p in (tmp, str(DOCS / "example_backend"), os.environ.get("PYTHONPATH")) if p)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALEXNET_AA")} | {"PYTHONPATH": path}
        done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *argv], cwd=tmp, env=env,
                              capture_output=True, text=True, timeout=1200)
        report_path = Path(tmp) / "conformance.json"
        if done.returncode != 0:
            seed = json.loads(report_path.read_text(encoding="utf-8"))["seed"] if report_path.exists() else "?"
            raise RuntimeError(f"the conformance run for the docs failed (seed {seed}: rerun with --alexnet-seed {seed}):\n"
                               f"{_junit_failures(Path(tmp) / 'conformance.xml')}"
                               f"{done.stdout[-1500:]}{done.stderr[-2000:]}")
        report = json.loads(report_path.read_text(encoding="utf-8"))
    return f"python -m pytest {shlex.join(argv)}", done.stdout, report


def gen_suite_console() -> str:
    """The suite's command and the end of its output: the error table and the outcome line (a real run)."""
    command, output, _ = suite_run()
    lines = output.rstrip().splitlines()
    start = next(i for i, line in enumerate(lines) if "alexnet_aa conformance: largest" in line)
    tail = "\n".join(lines[start:])
    return _code(f"$ {command}\n...\n" + re.sub(r"\S*(alexnet_aa/testing/conformance\.py)", r"\1", tail), "console")


def gen_suite_table(spec: str) -> str:
    """Per check, from the same run's JSON report: cases, failed, the largest error and the tolerance."""
    entry = suite_run()[2]["backends"][spec]
    rows = [[f"`{check}`", c["cases"], c["failed"], f"{c['max_error']:.2e}", f"{c['tolerance']:.0e}"]
            for check, c in entry["checks"].items()]
    outcomes = ", ".join(f"{n} {kind}" for kind, n in entry["outcomes"].items())
    return (_table(["check", "cases", "failed", "largest relative L2 error", "tolerance"], rows, "lrrrr")
            + f"\n\nTests of `{spec}`: {outcomes} (seed {suite_run()[2]['seed']}, {suite_run()[2]['platform']}).")


def gen_suite_report(spec: str) -> str:
    """The ``--alexnet-report`` entry of ``spec`` from the same run, as JSON (one check shown in full)."""
    entry = dict(suite_run()[2]["backends"][spec])
    first = next(iter(entry["checks"]))
    entry["checks"] = {first: entry["checks"][first], "…": "one entry per check"}
    if entry.get("xfails_file"):
        entry["xfails_file"] = ".../" + "/".join(Path(entry["xfails_file"]).parts[-2:])
    return _code(json.dumps(entry, indent=2, ensure_ascii=False), "json")


def run_cli(*argv: str) -> str:
    """The output of ``alexnet-aa ARGV`` (stdout and stderr), run in this process.

    A command that fails (non-zero status) fails the docs build, with its output.
    """
    from alexnet_aa.cli import build_parser

    parser = build_parser()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            args = parser.parse_args(list(argv))
            status = args.func(args)
        except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
            status = exc.code
    if status:
        raise RuntimeError(f"`alexnet-aa {shlex.join(argv)}` exited with {status}:\n{buf.getvalue()}")
    return buf.getvalue()


def gen_cli(*argv: str) -> str:
    """A console block: the command and its real output."""
    return _code(f"$ alexnet-aa {shlex.join(argv)}\n{run_cli(*argv)}", "console")


def gen_cli_help() -> str:
    """``alexnet-aa --help`` and every subcommand's ``--help``."""
    from alexnet_aa.cli import build_parser

    parser = build_parser()
    blocks = []

    def walk(p, prog: str) -> None:
        blocks.append(f"### `{prog}`\n\n" + _code(p.format_help(), "text"))
        for action in p._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                for name, child in action.choices.items():
                    walk(child, f"{prog} {name}")

    walk(parser, "alexnet-aa")
    return "\n\n".join(blocks)


def gen_platform() -> str:
    """Where these docs were built (for machine-dependent output)."""
    return f"{platform.system()} {platform.machine()}, Python {platform.python_version()}, NumPy {np.__version__}"


def gen_benchmarks() -> str:
    """The benchmark result files ``docs/benchmarks/*.md``, headings demoted under this section."""
    files = sorted((DOCS / "benchmarks").glob("*.md"))
    if not files:
        return ("!!! note \"No benchmark results yet\"\n    Result files `docs/benchmarks/*.md` (one per backend and "
                "machine, each naming its machine and date) are included here when they exist.")
    parts = []
    for f in files:
        text, fence = [], False
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.lstrip().startswith(("```", "~~~")):
                fence = not fence
            if not fence and line.startswith("#"):
                line = "##" + line  # '# Title' becomes '### Title' inside this page's '## Benchmarks'
            # relative links and images of the included file, seen from performance.md
            line = re.sub(r"\]\((?!https?:|#|/)([^)]+)\)", r"](benchmarks/\1)", line)
            text.append(line)
        parts.append(f"<!-- included from docs/benchmarks/{f.name} -->\n" + "\n".join(text))
    return "\n\n".join(parts)


def gen_backend_pages() -> str:
    """Links to the backend pages ``docs/backends/*.md`` that exist."""
    pages = sorted((DOCS / "backends").glob("*.md"))
    if not pages:
        return "(No backend pages yet.)"
    return "\n".join(f"- [{_title(p)}](backends/{p.name})" for p in pages)


def _title(page: Path) -> str:
    """A page's first ``# heading``, else its file name."""
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return page.stem


def gen_diagram(variant: str) -> str:
    """The architecture diagram of ``variant`` (the SVG :func:`on_files` generates)."""
    return f"![AlexNet ({variant}): the layer stack with output shapes]({_diagram_uri(variant)})"


def gen_pictures(variant: str) -> str:
    """The example pictures of ``alexnet-aa visualize`` (generated by :func:`on_files`)."""
    from alexnet_aa.visualize import pictured_layers

    names = ["conv1_filters", "input", *pictured_layers(A.get_architecture(variant))]
    out = []
    for name in names:
        file = f"{name}.png" if name in ("conv1_filters", "input") else f"activations_{name}.png"
        out.append(f"**{name}**\n\n![{variant} {name}](img/visualize-{variant}/{file})")
    return "\n\n".join(out)


def _recorded(name: str) -> dict | None:
    """A recorded run's JSON under ``docs/benchmarks/`` (``None`` when it was never recorded)."""
    path = DOCS / "benchmarks" / name
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _not_recorded(what: str, command: str) -> str:
    return f"!!! note \"Not recorded yet\"\n    {what} is recorded by `{command}`."


def _spread(s: dict | None, percent: bool = True, missing: str = "no value") -> str:
    """``mean [min–max]`` of a summary entry of :func:`alexnet_aa.ablation.summarize` (``missing``:
    what a seed without a value is, for an entry some seeds lack)."""
    if s is None or s["mean"] is None:
        return f"{missing} ({s['missing']} of the seeds)" if s else "–"
    f = (lambda v: f"{100 * v:.1f}%") if percent else (lambda v: f"{v:.1f}")
    return f"{f(s['mean'])} [{f(s['min'])}–{f(s['max'])}]"


def gen_ablation(what: str) -> str:
    """One recorded ablation (``docs/benchmarks/ablations/ablate-WHAT.json``): per arm, the mean and
    the range over the seeds of the errors after the last epoch and of the epochs to the target error."""
    result = _recorded(f"ablations/ablate-{what}.json")
    if result is None:
        return _not_recorded(f"The `{what}` ablation", "python benchmarks/ablate_digits.py --out docs/benchmarks/ablations.md")
    cfg = result["config"]
    target = cfg["target_error"]
    rows = []
    for arm in result["arms"]:
        s = arm.get("summary")
        if s is None:
            rows.append([arm["label"], f"`{arm['variant']}`", "in progress", "", "", "", "", ""])
            continue
        rows.append([arm["label"], f"`{arm['variant']}`", f"{arm['lr']:g}", _spread(s["final_train_error"], missing="diverged"),
                     _spread(s["final_val_error"], missing="diverged"), _spread(s["best_val_error"], missing="diverged"),
                     _spread(s[f"epochs_to_{target:g}"], False, missing="not reached"), str(s["diverged"])])
    seeds = ", ".join(map(str, cfg["seeds"]))
    png = f"benchmarks/ablations/ablate-{what}.png"
    plot = f"\n\n![{what}: training and validation error against epochs]({png})" if (DOCS / png).is_file() else ""
    return (_table(["arm", "table", "lr", f"training error, epoch {cfg['epochs']}", f"validation error, epoch {cfg['epochs']}",
                    "best validation error", f"epochs to {target:.0%} training error", "diverged"], rows, "lllrrrrr")
            + f"\n\nMean [best–worst] over seeds {seeds}; {cfg['epochs']} epochs of batch {cfg['batch']} on "
            f"`{cfg['backend']}`, {result.get('finished', 'in progress')}." + plot)


def gen_reduced() -> str:
    """What ``+input=67`` does to the paper's table: parameters, MACs and fc6's input, against 227×227."""
    rows = []
    for variant in ("paper", "paper+input=67"):
        arch = A.get_architecture(variant, 10)
        infos = A.layer_infos(arch)
        pool5 = next(i.out_shape for i in infos if i.name == "pool5")
        rows.append([f"`{variant}`", f"{arch.input_size}×{arch.input_size}", "×".join(map(str, pool5)),
                     f"{sum(i.params for i in infos):,}", f"{sum(i.macs for i in infos):,}"])
    full, small = (A.count_macs(v, 10) for v in ("paper", "paper+input=67"))
    return (_table(["table (10 classes)", "input", "pool5 output", "parameters", "MACs per image"], rows, "llrrr")
            + f"\n\nA 67×67 forward takes 1/{full / small:.1f} of the MACs of a 227×227 one. fc6 shrinks to "
            "256 inputs, so most of the parameters left are fc7's.")


def gen_sweep(what: str) -> str:
    """The learning-rate sweep of a recorded ablation: each arm's final training error per rate (first seed)."""
    result = _recorded(f"ablations/ablate-{what}.json")
    if result is None or len(result["config"]["lrs"]) < 2 or any("sweep" not in a for a in result["arms"]):
        return ""
    lrs = result["config"]["lrs"]
    rows = []
    for arm in result["arms"]:
        cells = {e["lr"]: "diverged" if e["stopped"] else f"{100 * e['final_train_error']:.1f}%" for e in arm["sweep"]}
        rows.append([arm["label"], *(f"**{cells[lr]}**" if lr == arm["lr"] else cells[lr] for lr in lrs)])
    return ("The sweep: each arm's training error after the last epoch, at each learning rate (seed "
            f"{result['config']['seeds'][0]}; in bold the rate the arm kept; diverged: the loss stopped being finite).\n\n"
            + _table(["arm", *(f"lr {lr:g}" for lr in lrs)], rows, "l" + "r" * len(lrs)))


def _values(arm: dict, key: str) -> list[float]:
    """The last epoch's ``key`` of each seed's run at the arm's kept rate (none for a run that
    diverged, or without a validation split)."""
    return [r["history"][-1][key] for r in kept_runs(arm)
            if r["history"] and "stopped" not in r and r["history"][-1][key] is not None]


def _apart(a: list[float], b: list[float]) -> bool:
    """Whether the seeds' ranges of ``a`` and ``b`` do not overlap."""
    return max(a) < min(b) or max(b) < min(a)


#: The measure each experiment's claim is about: the claim is that the base arm's is lower (None: no
#: direction is claimed for this comparison).
CLAIMS = {"relu-vs-tanh": "train_error", "lrn": "val_error", "overlap": "val_error", "dropout": "gap", "groups": None}


def gen_verdict(what: str) -> str:
    """What a recorded ablation shows about its claim, computed from its runs: the base arm against each
    other one, and whether the seeds' ranges are apart. "Reproduces" where the claimed measure
    (:data:`CLAIMS`) is lower for the base arm with the ranges apart, "does not reproduce" where it is
    higher with the ranges apart, "not distinguishable" where they overlap."""
    result = _recorded(f"ablations/ablate-{what}.json")
    if result is None or any("summary" not in a for a in result["arms"]):
        return ""
    base, *others = result["arms"]
    target, epochs = result["config"]["target_error"], result["config"]["epochs"]

    def metric(arm: dict, key: str) -> list[float]:
        if key == "gap":
            return [v - t for v, t in zip(_values(arm, "val_error"), _values(arm, "train_error"))]
        return _values(arm, key)

    words = {"train_error": f"training error after epoch {epochs}", "val_error": f"validation error after epoch {epochs}",
             "gap": "overfitting gap (validation minus training error, last epoch)"}
    lines = []
    for arm in others:
        diverged = [(x["label"], x["summary"]["diverged"], len(kept_runs(x))) for x in (base, arm)]
        parts = [f"{label} diverged in {n} of its {runs} seeds at lr {x['lr']:g} (the loss stopped being finite)"
                 for (label, n, runs), x in zip(diverged, (base, arm)) if n]
        for key in ("train_error", "val_error", "gap"):
            a, b = metric(base, key), metric(arm, key)
            if not a or not b:
                if key == "train_error":
                    parts.append("no errors to compare: every seed of an arm diverged")
                    break
                parts.append(f"no {words[key]} (no validation split)")
                continue
            apart = _apart(a, b)
            parts.append(f"{words[key]} {100 * np.mean(a):.1f}% with {base['label']} against {100 * np.mean(b):.1f}% "
                         f"with {arm['label']} ({'outside' if apart else 'within'} the seeds' spread)")
        reach = {x["label"]: x["summary"][f"epochs_to_{target:g}"] for x in (base, arm)}
        reached = "; ".join(f"{label} reached {target:.0%} training error in "
                            + (f"{s['mean']:.1f} epochs" if s["mean"] is not None else f"none of the {epochs} epochs in {s['missing']} run(s)")
                            for label, s in reach.items())
        claim = CLAIMS[what]
        a, b = (metric(base, claim), metric(arm, claim)) if claim else ([], [])
        if not (a and b):
            verdict = "Measured"
        else:
            verdict = ("Reproduces here" if np.mean(a) < np.mean(b) and _apart(a, b) else
                       "Does not reproduce here" if np.mean(a) > np.mean(b) and _apart(a, b) else
                       "Not distinguishable here")
        lines.append(f"**{verdict}** ({base['label']} against {arm['label']}): " + "; ".join(parts) + f". {reached}.")
    return "\n\n".join(lines)


def gen_fc_share() -> str:
    """The fully connected layers' share of each variant's parameters, from the table."""
    parts = []
    for v in A.VARIANTS:
        infos = _infos(v)
        fc = sum(i.params for i in _infos(v, A.Linear))
        parts.append(f"`{v}` {100 * fc / sum(i.params for i in infos):.1f}%")
    return "The fully connected layers hold " + ", ".join(parts) + " of the parameters (from the layer tables)."


def gen_costs() -> str:
    """Images per second per backend against PyTorch in the same run, and where a batch-32 forward's
    time goes (``docs/benchmarks/costs.json``, from ``benchmarks/bench_costs.py``)."""
    result = _recorded("costs.json")
    if result is None:
        return _not_recorded("What AlexNet costs per backend", "python benchmarks/bench_costs.py --out docs/benchmarks/costs.md")
    torch_ips = {int(k): v for k, v in result["torch_images_per_second"].items()}
    rows = [["PyTorch (peer)", f"{torch_ips[1]:.1f}", "1.00", f"{torch_ips[32]:.1f}", "1.00", "", "", "", ""]]
    for name, r in result["backends"].items():
        ips = {int(k): v for k, v in r["images_per_second"].items()}
        kinds = r["kind_ms_batch32"]
        total = sum(kinds.values())
        rows.append([f"`{name}`", f"{ips[1]:.1f}", f"{ips[1] / torch_ips[1]:.2f}", f"{ips[32]:.1f}",
                     f"{ips[32] / torch_ips[32]:.2f}", f"{total / 32:.1f}"]
                    + [f"{100 * kinds.get(k, 0.0) / total:.0f}%" for k in ("convolutions", "LRN", "fully connected")])
    return (_table(["backend", "img/s, batch 1", "vs PyTorch", "img/s, batch 32", "vs PyTorch", "ms per image (batch 32)",
                    "convolutions", "LRN", "fully connected"], rows, "lrrrrrrrr")
            + f"\n\nThe `{result['variant']}` table, measured {result['date']} on {result['machine']}; "
            "the shares are of a batch-32 forward's time, layer by layer.")


def generators() -> dict:
    """``{NAME: function}`` of every ``gen_*`` function of this module (``gen_cli_help`` is ``cli-help``)."""
    return {name[4:].replace("_", "-"): fn for name, fn in globals().items() if name.startswith("gen_") and callable(fn)}


def render(markdown: str) -> str:
    """Replace every ``<!-- gen:NAME ARGS -->`` of ``markdown``; an unknown NAME is a ``KeyError``.

    A placeholder alone on an indented line (inside an admonition, say) has
    every line of its output indented the same way.
    """
    known = generators()

    def replace(m: re.Match) -> str:
        name, args = m.group(1), m.group(2).split()
        if name not in known:
            raise KeyError(f"unknown docs generator {name!r} in {m.group(0)!r}; known: {', '.join(known)}")
        text = known[name](*args)
        indent = m.string[m.string.rfind("\n", 0, m.start()) + 1 : m.start()]
        return text.replace("\n", "\n" + indent) if indent and not indent.strip() else text

    return PLACEHOLDER.sub(replace, markdown)


# -- generated files ---------------------------------------------------------------------


def _diagram_uri(variant: str) -> str:
    return f"img/alexnet-{variant}.svg"


#: MathJax's configuration for ``pymdownx.arithmatex`` (generic mode), served as ``javascripts/mathjax.js``.
MATHJAX_CONFIG = r"""window.MathJax = {
  tex: {inlineMath: [["\\(", "\\)"]], displayMath: [["\\[", "\\]"]], processEscapes: true, processEnvironments: true},
  options: {ignoreHtmlClass: ".*|", processHtmlClass: "arithmatex"}
};
document$.subscribe(() => { MathJax.startup.output.clearCache(); MathJax.typesetClear(); MathJax.texReset(); MathJax.typesetPromise(); });
"""


#: The variants whose example pictures the docs show (each costs a model build at docs build time).
PICTURED = ("paper",)


@functools.lru_cache(maxsize=None)
def visualize_run(variant: str) -> tuple[str, dict[str, bytes]]:
    """``alexnet-aa visualize --variant VARIANT --out pictures``: its console text and the PNGs it wrote."""
    with tempfile.TemporaryDirectory() as tmp:
        argv = ("visualize", "--variant", variant, "--out", str(Path(tmp) / variant))
        text = run_cli(*argv).replace(str(Path(tmp) / variant), "pictures")
        pngs = {p.name: p.read_bytes() for p in sorted((Path(tmp) / variant).glob("*.png"))}
    return f"$ alexnet-aa visualize --variant {variant} --out pictures\n{text}", pngs


def gen_cli_visualize(variant: str) -> str:
    """The console output of ``alexnet-aa visualize`` (the run that made the pictures on the page)."""
    return _code(visualize_run(variant)[0], "console")


@functools.lru_cache(maxsize=None)
def train_run() -> str:
    """``alexnet-aa train`` for two epochs on a made-up folder of two colours (``colours/blue``,
    ``colours/red``, 8 noisy images each), then a resume to a third: the console text of both."""
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        root, rng = Path(tmp) / "colours", np.random.default_rng(0)
        for name, colour in (("blue", (40, 60, 200)), ("red", (200, 50, 40))):
            (root / name).mkdir(parents=True)
            for i in range(8):
                pixels = np.clip(rng.normal(colour, 40, size=(48, 40, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / name / f"{i}.png")
        common = ("--variant", "torchvision", "--input-size", "64", "--init", "he", "--lr", "1e-4", "--batch", "4",
                  "--val-split", "0.25", "--out", "run.safetensors")
        texts = []
        for extra in (("--epochs", "2"), ("--epochs", "3", "--resume", "run.safetensors")):
            argv = ("train", "colours", *common, *extra)
            cwd = os.getcwd()
            os.chdir(tmp)
            try:
                text = run_cli(*argv)
            finally:
                os.chdir(cwd)
            texts.append(f"$ alexnet-aa {shlex.join(argv)}\n{text}")
    return re.sub(r"\d+\.\d+ img/s  \d+\.\d+ s", "… img/s  … s", "".join(texts))


def gen_cli_train() -> str:
    """The console output of :func:`train_run` (speeds elided: they are this machine's)."""
    return _code(train_run(), "console")


def generated_files() -> dict[str, bytes | str]:
    """``{path under docs/: content}`` of every generated file: diagrams, pictures, the MathJax config."""
    from alexnet_aa.diagram import architecture_svg

    files: dict[str, bytes | str] = {"javascripts/mathjax.js": MATHJAX_CONFIG}
    files.update({_diagram_uri(v): architecture_svg(v) for v in A.VARIANTS})
    for variant in PICTURED:
        files.update({f"img/visualize-{variant}/{name}": png for name, png in visualize_run(variant)[1].items()})
    return files


# -- mkdocs events ----------------------------------------------------------------------------


def on_files(files, config, **kwargs):
    """Add the diagrams and pictures; benchmark result files are included in performance.md, not pages."""
    from mkdocs.structure.files import File

    for f in list(files):
        if f.src_uri.startswith("benchmarks/") and f.src_uri.endswith(".md"):
            files.remove(f)
    for uri, content in generated_files().items():
        files.append(File.generated(config, uri, content=content))
    return files


def on_page_markdown(markdown, page, config, files, **kwargs):
    return render(markdown)


# -- RST in docstrings → Markdown (a griffe extension, loaded by mkdocstrings) ---------------------

_ROLE = re.compile(r":(?:py:)?(func|class|meth|mod|data|attr|obj|exc):`(~?)([^`<]+?)(?:\s*<([^>]+)>)?`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_SIMPLE_TABLE_RULE = re.compile(r"^\s*=+(\s+=+)+\s*$")


def _role(m: re.Match) -> str:
    text = m.group(3).strip()
    if m.group(4):  # :meth:`title <target>`
        return f"`{text}`"
    return f"`{text.rsplit('.', 1)[-1] if m.group(2) else text}`"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _simple_table(lines: list[str]) -> list[str]:
    """An RST simple table (rules of ``=``) → a Markdown table."""
    rule = lines[0]
    spans = [(m.start(), m.end()) for m in re.finditer(r"=+", rule)]

    def cells(line: str) -> list[str]:
        out = []
        for j, (a, _) in enumerate(spans):
            b = spans[j + 1][0] if j + 1 < len(spans) else len(line)
            out.append(line[a:b].strip())
        return out

    body = [cells(line) for line in lines[1:] if line.strip() and not _SIMPLE_TABLE_RULE.match(line)]
    header, rows = body[0], body[1:]
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def rst_to_markdown(text: str) -> str:
    """The RST constructs the project's docstrings use, as Markdown + arithmatex math."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith(".. math::"):  # display math, inline or as an indented block
            base = _indent(line)
            body = [stripped[len(".. math::"):].strip()]
            i += 1
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
                body.append(lines[i])
                i += 1
            math = textwrap.dedent("\n".join(body)).strip()
            out += ["", " " * base + "$$", *(" " * base + m for m in math.splitlines()), " " * base + "$$", ""]
            continue
        if _SIMPLE_TABLE_RULE.match(line):  # simple table: rule, header, rule, rows, rule
            j, rules = i, 0
            while j < len(lines) and lines[j].strip():
                rules += bool(_SIMPLE_TABLE_RULE.match(lines[j]))
                j += 1
            if rules >= 3:
                out += _simple_table(lines[i:j])
                i = j
                continue
        if stripped.startswith(">>>"):  # a doctest block → a pycon fence
            base = _indent(line)
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i][base:])
                i += 1
            out += [" " * base + "```pycon", *(" " * base + b for b in block), " " * base + "```"]
            continue
        if stripped.endswith("::") and not stripped.startswith(".."):  # literal block after 'text::'
            base = _indent(line)
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j < len(lines) and _indent(lines[j]) > base:
                out.append(line[: len(line.rstrip()) - 1])  # 'text::' → 'text:'
                block = []
                while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > base):
                    block.append(lines[j])
                    j += 1
                while block and not block[-1].strip():
                    block.pop()
                out += ["", " " * base + "```", *(" " * base + b for b in textwrap.dedent("\n".join(block)).splitlines()),
                        " " * base + "```", ""]
                i = j
                continue
        line = _MATH_ROLE.sub(lambda m: f"${m.group(1)}$", line)
        out.append(_ROLE.sub(_role, line))
        i += 1
    return "\n".join(out)


_NUMPY_ITEM_SECTIONS = ("Parameters", "Other Parameters", "Returns", "Yields", "Receives", "Raises", "Warns",
                         "Attributes")


def end_numpy_sections(text: str) -> str:
    """Put a ``Notes`` heading before prose that follows a numpy-style item section.

    griffe's numpy parser reads a ``Parameters`` section up to the next
    section, so a closing paragraph would be read as more parameters.
    """
    lines = text.splitlines()
    out: list[str] = []
    in_items = False
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and re.fullmatch(r"-{3,}", lines[i + 1].strip()) and line.strip():
            in_items = line.strip() in _NUMPY_ITEM_SECTIONS
        elif (in_items and line and not line[0].isspace() and i and not lines[i - 1].strip()
              and " : " not in line and len(line.split()) >= 3):
            out += ["Notes", "-----"]
            in_items = False
        out.append(line)
    return "\n".join(out)


try:
    import griffe
except ImportError:  # the docs toolchain is not installed: the generators above still work
    griffe = None

if griffe is not None:

    class RstDocstrings(griffe.Extension):
        """Rewrites each docstring with :func:`rst_to_markdown` before it is parsed."""

        def on_instance(self, *, obj, **kwargs) -> None:
            if obj.docstring is not None:
                obj.docstring.value = end_numpy_sections(rst_to_markdown(obj.docstring.value))
