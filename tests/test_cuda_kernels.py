"""The cupy backend's CUDA kernels, checked without a GPU.

1. Every ``.cu`` file builds alone (sm_90, ``-I`` the package for
   ``gemm_tile.cuh``) and the concatenation CuPy compiles (the header
   inlined once by ``kernels.source()``) builds for sm_75, sm_80 and sm_90 with the machine's ``nvcc``, warnings
   as errors, with the flags
   CuPy passes to NVRTC (``-std=c++17 -ftz=true``); no kernel spills
   registers; every name in ``kernels.NAME_EXPRESSIONS`` is an entry point.
2. The kernels run on the CPU (``backends/cupy/tests/cuda_on_cpu.h``, g++),
   launched with the exact argument tuples ``kernels.plan_*`` build for the
   GPU, and agree with float64 NumPy loops: conv (stride, padding, groups,
   odd sizes, tails of every tile, fused bias + ReLU), max-pool (floor, ceil,
   the last-window rule), LRN (sizes 5, 4, 3, batch != channels, alpha >= 0.1),
   the linear epilogue; the Winograd paths F(2x2, 3x3), F(2x2, 5x5) (``algo="winograd"``)
   and F(4x4, 5x5) (``"winograd_f4"``, opt-in) — their matrices checked in exact
   rationals; weight, input and output transforms and the batched GEMM, every tile,
   padding 0/1/2, groups, odd maps, tile counts that fill no GEMM tile,
   AlexNet-sized K = in/groups*kh*kw up to 3456 (3x3) and 1600 (5x5) and the whole
   conv2 layers, rel L2 error < 1e-5 against float64 (F(4x4, 5x5)'s weight transform
   within half an ulp of G g G^T), the same image bitwise whatever batch it comes in,
   and ``kernels.conv2d`` on prepared and plain weights; non-finite inputs: NaN stays
   NaN through the fused ReLU (conv, every algorithm, and the linear epilogue) at
   exactly the reference's NaN, except under F(4x4, 5x5), whose NaN reaches exactly
   the transforms' support (up to the 8x8 output block around it); the known gaps
   pinned as strict xfails (that spread; Winograd turns ±inf into NaN);
   the backward kernels — the split-K weight gradient (every tile, 1 and 3 splits,
   bitwise the same on a rerun), the input gradient through the forward kernel on the
   dilated gradient, the pooling gather (ties to the first maximum), the one-pass LRN
   backward (even sizes) — against alexnet_aa.reference's float64 backward ops;
   the own linear kernels (GEMV at 1/2/4/8 rows a block, every GEMM tile: the same bits,
   and an image alone its batch's bits; NaN and inf * 0); half precision — the float16
   and bfloat16 conversions bit-exact against NumPy and ml_dtypes, the tensor-core conv
   and linear kernels (``mma.sync`` emulated warp-wide) within one output rounding of
   float64 on the same rounded inputs, every tile the same bits, 16-byte loads only where
   aligned, max-pool and LRN in the half dtypes.
3. Plans without a device; the constructor's device, dtype, capture and TF32 checks against
   a stand-in cupy.

Skipped, with the reason, where ``nvcc`` or ``g++`` is absent.
"""

from __future__ import annotations

import ctypes
import importlib.util
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from alexnet_aa.architecture import pool_output_size

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "backends" / "cupy" / "alexnet_aa_cupy"
EMU = ROOT / "backends" / "cupy" / "tests"
ARCHS = ("sm_75", "sm_80", "sm_90")  # sm_75: the oldest CuPy 14 supports (float32 only: mma traps there)


def _load_kernels():
    # kernels.py imports only numpy: load it by path, so this test needs neither
    # cupy nor an installed alexnet_aa_cupy.
    spec = importlib.util.spec_from_file_location("_alexnet_aa_cupy_kernels", PKG / "kernels.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


kernels = _load_kernels()


# -- 1. nvcc -----------------------------------------------------------------------

NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found on PATH (install the CUDA toolkit to compile-check the kernels)")


def _nvcc(src: Path, arch: str, out: Path) -> subprocess.CompletedProcess:
    cmd = [
        NVCC, "-std=c++17", f"-arch={arch}", "-cubin", "-ftz=true", f"-I{PKG}",
        "-Werror", "all-warnings", "-Xptxas", "-Werror", "-Xptxas", "-v",
        "-o", str(out), str(src),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def nvcc_results(tmp_path_factory):
    """{(file, arch): CompletedProcess}, compiled in parallel."""
    tmp = tmp_path_factory.mktemp("cubin")
    whole = tmp / "module.cu"
    whole.write_text(kernels.source())
    # Each file alone at the newest arch (self-contained, warning-free); the
    # concatenation, which holds every kernel, at every arch (spills, names).
    jobs = [(PKG / f, ARCHS[-1]) for f in kernels.SOURCES] + [(whole, a) for a in ARCHS]
    with ThreadPoolExecutor(max_workers=4) as pool:
        futs = {(src.name, a): pool.submit(_nvcc, src, a, tmp / f"{src.stem}.{a}.cubin") for src, a in jobs}
        return {k: f.result() for k, f in futs.items()}


def _ptxas_report(stderr: str) -> dict[str, dict[str, int]]:
    """{kernel: {"registers": n, "spill_stores": n, "spill_loads": n}} from ``-Xptxas -v``."""
    out: dict[str, dict[str, int]] = {}
    current = None
    for line in stderr.splitlines():
        if m := re.search(r"Compiling entry function '(\w+)'", line):
            current = out.setdefault(m.group(1), {})
        elif current is not None and (m := re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)):
            current["spill_stores"], current["spill_loads"] = int(m.group(1)), int(m.group(2))
        elif current is not None and (m := re.search(r"Used (\d+) registers", line)):
            current["registers"] = int(m.group(1))
    return out


@needs_nvcc
@pytest.mark.parametrize("name,arch", [(f, ARCHS[-1]) for f in kernels.SOURCES] + [("module.cu", a) for a in ARCHS])
def test_nvcc_compiles(nvcc_results, name, arch):
    r = nvcc_results[(name, arch)]
    assert r.returncode == 0, f"nvcc -arch={arch} {name} failed:\n{r.stderr}"
    report = _ptxas_report(r.stderr)
    assert report, f"no ptxas report for {name}:\n{r.stderr}"
    spills = {k: v for k, v in report.items() if v.get("spill_stores") or v.get("spill_loads")}
    assert not spills, f"{name} ({arch}) spills registers: {spills}"


@needs_nvcc
@pytest.mark.parametrize("arch", ARCHS)
def test_every_name_expression_is_an_entry_point(nvcc_results, arch):
    entries = set(_ptxas_report(nvcc_results[("module.cu", arch)].stderr))
    missing = [n for n in kernels.NAME_EXPRESSIONS if n not in entries]
    assert not missing, f"NAME_EXPRESSIONS lists kernels the module does not define: {missing}; defined: {sorted(entries)}"
    unlisted = sorted(entries - set(kernels.NAME_EXPRESSIONS))
    assert not unlisted, f"entry points missing from NAME_EXPRESSIONS: {unlisted}"
    per_file = set()
    for f in kernels.SOURCES:
        per_file |= set(_ptxas_report(nvcc_results[(f, ARCHS[-1])].stderr))
    assert per_file == entries


def test_tile_tables_match_the_kernels_they_name():
    """Every ConvTile's bm, bn, bk and thread count are the template arguments and launch bounds of the
    entry point it names (the plans size grids and splits from the table, the kernels from the .cu)."""
    entry = re.compile(r"__launch_bounds__\((\d+)[^)]*\)\s*(\w+)\([^)]*\)\s*\{\s*\w+<(\d+), (\d+), (\d+), (\d+), (\d+)")
    found = {m.group(2): tuple(int(v) for v in m.group(1, 3, 4, 5, 6, 7))
             for f in kernels.SOURCES for m in entry.finditer((PKG / f).read_text())}
    tiles = [*kernels.CONV_TILES.values(), *kernels.WINOGRAD_TILES.values(), kernels.WINOGRAD_SCALAR_TILE,
             *kernels.WEIGHT_GRAD_TILES.values(), *kernels.LINEAR_TILES.values()]
    for t in tiles:
        threads, bm, bn, bk, tm, tn = found[t.kernel]
        assert (t.threads, t.bm, t.bn, t.bk) == (threads, bm, bn, bk), f"{t} disagrees with the .cu: {found[t.kernel]}"
        assert (bm // tm) * (bn // tn) == threads, f"{t.kernel}: the micro-tiles do not make {threads} threads"
    # tensor-core tiles: <T, BM, BN, WM, WN>, one entry point per half dtype
    mma = re.compile(r"__launch_bounds__\((\d+)\)\s*(\w+)\((?:[^()]|\([^()]*\))*\)\s*\{\s*\w+<(\w+), (\d+), (\d+), (\d+), (\d+)>")
    found = {m.group(2): (int(m.group(1)), m.group(3), *(int(v) for v in m.group(4, 5, 6, 7)))
             for f in kernels.SOURCES for m in mma.finditer((PKG / f).read_text())}
    for t in (*kernels.MMA_CONV_TILES.values(), *kernels.LINEAR_MMA_TILES.values()):
        for dtype, storage in (("float16", "half_t"), ("bfloat16", "bf16_t")):
            threads, ctype, bm, bn, wm, wn = found[t.kernel + kernels.DTYPES[dtype]]
            assert (t.threads, t.bm, t.bn, ctype) == (threads, bm, bn, storage), f"{t} ({dtype}) disagrees with the .cu"
            assert (bm // wm) * (bn // wn) * 32 == threads and t.bk == 32, f"{t.kernel}: the warps do not make {threads} threads"
    constants = dict(re.findall(r"constexpr int (LINEAR_\w+) = (\d+);", (PKG / "linear.cu").read_text()))
    for name in ("LINEAR_K_CHUNK", "LINEAR_GEMV_THREADS"):
        assert int(constants[name]) == getattr(kernels, name), f"kernels.{name} differs from linear.cu's"
    rows = tuple(int(r) for r in re.findall(r"^LINEAR_GEMV_ENTRY\((\d+)\)", (PKG / "linear.cu").read_text(), re.MULTILINE))
    assert rows == kernels.LINEAR_GEMV_ROWS, f"linear.cu's GEMV entry points {rows} differ from kernels.LINEAR_GEMV_ROWS"


def test_sources_have_no_system_headers():
    """The .cu files include only the package's own headers, and the module NVRTC gets includes nothing."""
    for f in (*kernels.SOURCES, *kernels.HEADERS):
        text = (PKG / f).read_text()
        includes = re.findall(r'^[ \t]*#[ \t]*include\b(.*)$', text, re.MULTILINE)
        earlier = kernels.HEADERS[:kernels.HEADERS.index(f)] if f in kernels.HEADERS else kernels.HEADERS
        allowed = tuple(f'"{h}"' for h in earlier)  # a header includes only those inlined before it
        others = [i.strip() for i in includes if i.strip() not in allowed]
        assert not others, f"{f} includes {others}; NVRTC sources may include only kernels.HEADERS {kernels.HEADERS}"
        assert text.startswith("// " + f), f"{f} must open with its header comment naming the file"
    module = kernels.source()
    assert not re.search(r'^[ \t]*#[ \t]*include\b', module, re.MULTILINE), "source() must inline every header"
    for h in kernels.HEADERS:
        assert module.count(f"// ---- {h} ----") == 1 and module.startswith(f"// ---- {kernels.HEADERS[0]} ----")


# -- 2. the kernels on the CPU -------------------------------------------------------

GXX = shutil.which("g++")


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    if GXX is None:
        pytest.skip("g++ not found: cannot build the CPU emulation of the CUDA kernels")
    so = tmp_path_factory.mktemp("emu") / "emu.so"
    cmd = [GXX, "-std=c++20", "-O1", "-pthread", f"-I{PKG}", "-fno-strict-aliasing", "-Wall", "-Wextra",
           "-Wno-unknown-pragmas", "-Werror", "-shared", "-fPIC", "-o", str(so), str(EMU / "emu_entry.cpp")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode != 0 and "barrier" in r.stderr and "No such file" in r.stderr:
        pytest.skip(f"g++ lacks <barrier> (C++20): {r.stderr.splitlines()[0]}")
    assert r.returncode == 0, f"g++ failed to build the emulation:\n{r.stderr}"
    return ctypes.CDLL(str(so))


def _run(lib, plan) -> None:
    """Call ``emu_<kernel>`` with the plan's grid, block and argument tuple."""
    args, types = [], []
    for v in (*plan.grid, *plan.block):
        args.append(v)
        types.append(ctypes.c_uint)
    for a in plan.args:
        if isinstance(a, np.ndarray):
            assert a.dtype.name in kernels.DTYPES and a.flags.c_contiguous, (a.dtype, a.flags)
            args.append(a.ctypes.data_as(ctypes.c_void_p))
            types.append(ctypes.c_void_p)
        elif isinstance(a, np.int32):
            args.append(int(a)); types.append(ctypes.c_int32)
        elif isinstance(a, np.int64):
            args.append(int(a)); types.append(ctypes.c_int64)
        elif isinstance(a, np.float32):
            args.append(float(a)); types.append(ctypes.c_float)
        else:
            raise TypeError(f"kernel argument of type {type(a).__name__} (must be a numpy array or scalar)")
    fn = getattr(lib, "emu_" + plan.kernel)
    fn.argtypes, fn.restype = types, None
    fn(*args)


def _rel_err(y, ref) -> float:
    return float(np.linalg.norm(y.astype(np.float64) - ref) / max(np.linalg.norm(ref), 1e-30))


def _assert_close(y, ref, what, tol=2e-6):
    __tracebackhide__ = True
    assert y.shape == ref.shape, f"{what}: shape {y.shape}, but should be {ref.shape}"
    assert np.isfinite(y).all(), f"{what}: non-finite output"
    err = _rel_err(y, ref)
    worst = np.unravel_index(np.argmax(np.abs(y - ref)), y.shape)
    assert err < tol, f"{what}: rel L2 error {err:.3g} > {tol:g}; worst at {worst}: {y[worst]} vs {ref[worst]}"


def conv2d_ref(x, w_oihw, b, stride, padding, groups, relu):
    """Float64 grouped cross-correlation by explicit window loops."""
    x, w = x.astype(np.float64), w_oihw.astype(np.float64)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    (sh, sw), (ph, pw) = stride, padding
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    xp[:, :, ph:ph + h, pw:pw + wd] = x
    oh, ow = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    y = np.zeros((n, o, oh, ow))
    og = o // groups
    for g in range(groups):
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, g * cg:(g + 1) * cg, i * sh:i * sh + kh, j * sw:j * sw + kw]
                y[:, g * og:(g + 1) * og, i, j] = np.tensordot(patch, w[g * og:(g + 1) * og], axes=([1, 2, 3], [1, 2, 3]))
    y += b.astype(np.float64)[None, :, None, None]
    return np.maximum(y, 0) if relu else y


def _conv_case(rng, n, c, h, w, o, k, stride, padding, groups):
    kh, kw = k
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((o, c // groups, kh, kw)) / np.sqrt(c // groups * kh * kw)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    return x, wt, b


CONV_CASES = {
    # name: (n, c, h, w, o, (kh, kw), stride, padding, groups)
    "3x3-p1-groups2-odd": (2, 6, 9, 11, 10, (3, 3), (1, 1), (1, 1), 2),
    "11x11-s4-p2-tails": (1, 3, 31, 29, 10, (11, 11), (4, 4), (2, 2), 1),
    "1x1-map": (1, 4, 1, 1, 5, (1, 1), (1, 1), (0, 0), 1),
    "5x5-p2-g2-many-m-tiles": (1, 4, 7, 6, 2 * 70, (5, 5), (1, 1), (2, 2), 2),
    "asym-stride-pad": (3, 5, 8, 13, 7, (5, 3), (2, 3), (0, 2), 1),
    "m-over-128": (1, 2, 6, 5, 130, (3, 3), (1, 1), (1, 1), 1),
    "n-over-tile-images-split": (5, 3, 7, 9, 6, (3, 3), (1, 1), (1, 1), 1),
}


@pytest.mark.parametrize("tile", list(kernels.CONV_TILES))
@pytest.mark.parametrize("case", list(CONV_CASES))
@pytest.mark.parametrize("relu", [True, False], ids=["relu", "no-relu"])
def test_conv2d_kernel_on_cpu(emu, case, tile, relu):
    n, c, h, w, o, k, stride, padding, groups = CONV_CASES[case]
    rng = np.random.default_rng(sum(map(ord, case + tile)) + relu)
    x, w_oihw, b = _conv_case(rng, n, c, h, w, o, k, stride, padding, groups)
    w_ihwo = np.ascontiguousarray(w_oihw.transpose(1, 2, 3, 0))  # what CupyBackend.prepare does
    shape = kernels.conv2d_output_shape(x.shape, w_ihwo.shape, stride, padding)
    y = np.full(shape, np.nan, dtype=np.float32)  # every element must be written
    plan = kernels.plan_conv2d(x, w_ihwo, b, y, stride, padding, groups, relu, sms=1, tile=tile)
    _run(emu, plan)
    _assert_close(y, conv2d_ref(x, w_oihw, b, stride, padding, groups, relu), f"conv2d[{case}, {tile}, relu={relu}]")


# Winograd F(mxm, RxR) (conv2d_winograd.cu): the matrices of its header comment, exact, keyed by (m, R):
# Y = A^T [(G g G^T) ⊙ (B^T d B)] A.
_Q = Fraction
WINO_MATRICES = {
    (2, 3): dict(
        AT=[[1, 1, 1, 0], [0, 1, -1, -1]],
        G=[[1, 0, 0], [_Q(1, 2), _Q(1, 2), _Q(1, 2)], [_Q(1, 2), _Q(-1, 2), _Q(1, 2)], [0, 0, 1]],
        BT=[[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]),
    (2, 5): dict(
        AT=[[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 1]],
        G=[[_Q(1, 4), 0, 0, 0, 0], [_Q(-1, 6)] * 5, [_Q(-1, 6), _Q(1, 6), _Q(-1, 6), _Q(1, 6), _Q(-1, 6)],
           [_Q(1, 24), _Q(1, 12), _Q(1, 6), _Q(1, 3), _Q(2, 3)], [_Q(1, 24), _Q(-1, 12), _Q(1, 6), _Q(-1, 3), _Q(2, 3)],
           [0, 0, 0, 0, 1]],
        BT=[[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
            [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]),
    (4, 5): dict(
        AT=[[1, 1, 1, 1, 1, 8, 8, 0], [0, 1, -1, 2, -2, 4, -4, 0], [0, 1, 1, 4, 4, 2, 2, 0], [0, 1, -1, 8, -8, 1, -1, 1]],
        G=[[_Q(1, 4), 0, 0, 0, 0], [_Q(1, 18)] * 5, [_Q(1, 18), _Q(-1, 18), _Q(1, 18), _Q(-1, 18), _Q(1, 18)],
           [_Q(1, 360), _Q(1, 180), _Q(1, 90), _Q(1, 45), _Q(2, 45)],
           [_Q(1, 360), _Q(-1, 180), _Q(1, 90), _Q(-1, 45), _Q(2, 45)],
           [_Q(2, 45), _Q(1, 45), _Q(1, 90), _Q(1, 180), _Q(1, 360)],
           [_Q(2, 45), _Q(-1, 45), _Q(1, 90), _Q(-1, 180), _Q(1, 360)], [0, 0, 0, 0, _Q(1, 4)]],
        BT=[[4, 0, -21, 0, 21, 0, -4, 0], [0, -4, -4, 17, 17, -4, -4, 0], [0, 4, -4, -17, 17, 4, -4, 0],
            [0, 2, 1, -10, -5, 8, 4, 0], [0, -2, 1, 10, -5, -8, 4, 0], [0, 4, 8, -5, -10, 1, 2, 0],
            [0, -4, 8, 5, -10, -1, 2, 0], [0, -4, 0, 21, 0, -21, 0, 4]]),
}
WINO_G = {key: np.array(mats["G"], dtype=np.float64) for key, mats in WINO_MATRICES.items()}
#: (algo, R) of every Winograd transform, and its output tile m.
WINOGRAD_KINDS = [(algo, r) for algo, a in kernels.WINOGRAD_ALGOS.items() for r in a.kernels]


def _wino_m(algo):
    return kernels.WINOGRAD_ALGOS[algo].m


@pytest.mark.parametrize("m,r", list(WINO_MATRICES))
def test_winograd_matrices_are_exact(m, r):
    """In exact rationals, A^T [(G g) ⊙ (B^T d)] is the correlation y_j = sum_i d_(i+j) g_i for every basis
    d and g (so for all, by linearity; 2-D is the same along each axis); the kernels' sizes agree."""
    at, g_, bt = (WINO_MATRICES[(m, r)][k] for k in ("AT", "G", "BT"))
    alpha = m + r - 1
    assert (len(at), len(at[0]), len(g_), len(g_[0]), len(bt), len(bt[0])) == (m, alpha, alpha, r, alpha, alpha)
    for a in range(alpha):
        for b in range(r):
            gg = [_Q(g_[i][b]) for i in range(alpha)]                 # G e_b
            bd = [_Q(bt[i][a]) for i in range(alpha)]                 # B^T e_a
            y = [sum(at[j][i] * gg[i] * bd[i] for i in range(alpha)) for j in range(m)]
            assert y == [int(a == b + j) for j in range(m)], f"F({m}, {r}): d=e{a}, g=e{b} gives {y}"
    assert any(kernels.WINOGRAD_ALGOS[name].m == m and r in a.kernels for name, a in kernels.WINOGRAD_ALGOS.items())


def _conv2d_winograd_emu(lib, x, w_oihw, b, padding, groups, relu, tile, algo="winograd"):
    """Run the Winograd path's four launches (``algo``'s transforms) in the emulation; return (y, u)."""
    w_ihwo = np.ascontiguousarray(w_oihw.transpose(1, 2, 3, 0))
    u = np.full(kernels.winograd_weight_shape(w_ihwo.shape, algo), np.nan, np.float32)
    _run(lib, kernels.plan_winograd_weight(w_ihwo, u, sms=1))
    shape = kernels.conv2d_output_shape(x.shape, w_ihwo.shape, (1, 1), padding)
    y = np.full(shape, np.nan, np.float32)  # every element must be written
    bufs = {k: np.full(v, np.nan, np.float32)
            for k, v in kernels.winograd_buffer_shapes(x.shape, w_ihwo.shape, padding, algo).items()}
    for plan in kernels.plan_conv2d_winograd(x, u, b, y, bufs["v_xct"], bufs["m_xot"], padding, groups, relu, sms=1, tile=tile):
        _run(lib, plan)
    return y, u


WINOGRAD_CASES = {
    # name: (n, c, h, w, o, kernel size, padding, groups); out/groups % 4 != 0 runs the scalar-load GEMM
    "p1-g2-odd-scalar": (2, 6, 9, 11, 10, 3, (1, 1), 2),
    "p0-odd-batch3": (3, 4, 7, 6, 8, 3, (0, 0), 1),
    "p2-rect": (1, 5, 5, 8, 12, 3, (2, 2), 1),
    "asym-pad": (2, 3, 6, 5, 8, 3, (0, 2), 1),
    "k3-on-1x1-p1-scalar": (1, 16, 1, 1, 7, 3, (1, 1), 1),
    "m-over-128-n-over-128": (3, 2, 15, 13, 136, 3, (1, 1), 1),
    "alexnet-K-3456": (1, 384, 6, 5, 16, 3, (1, 1), 1),  # K = in*9 of paper conv4/5, tv conv4
    "5x5-p2-g2-odd-batch2": (2, 6, 9, 11, 8, 5, (2, 2), 2),
    "5x5-p0-odd-batch3": (3, 4, 9, 7, 8, 5, (0, 0), 1),
    "5x5-p1-rect-scalar": (1, 5, 6, 11, 6, 5, (1, 1), 1),
    "5x5-asym-pad-g2-scalar": (2, 6, 7, 8, 10, 5, (2, 0), 2),
    "5x5-on-1x1-p2-scalar": (1, 8, 1, 1, 7, 5, (2, 2), 1),
    "5x5-m-over-128-n-over-128": (3, 2, 15, 13, 136, 5, (2, 2), 1),
    "alexnet-K-1600": (1, 64, 27, 27, 16, 5, (2, 2), 1),  # K = in*25 of tv conv2, on its 27x27 map
    "alexnet-K-1200-g2": (1, 96, 13, 13, 16, 5, (2, 2), 2),  # K = in/2*25 of paper conv2
    "alexnet-tv-conv2": (1, 64, 27, 27, 192, 5, (2, 2), 1),  # the whole layer, batch 1
    "alexnet-paper-conv2": (2, 96, 27, 27, 256, 5, (2, 2), 2),  # the whole layer, batch 2
}


def _winograd_tiles_to_run(algo, case):
    """Every GEMM tile where out/groups % 4 == 0 (else only the scalar-load one), but the picked tile alone for
    the whole layers and, under F(2x2), for the AlexNet-sized cases (F(4x4, 5x5), the new algorithm, runs them all)."""
    n, c, h, w, o, k, p, g = WINOGRAD_CASES[case]
    if (o // g) % 4 or case.endswith("conv2") or (case.startswith("alexnet") and _wino_m(algo) == 2):
        return [None]
    return [None, *kernels.WINOGRAD_TILES]


WINOGRAD_RUNS = [
    (algo, case, tile)
    for algo, a in kernels.WINOGRAD_ALGOS.items()
    for case, (n, c, h, w, o, k, p, g) in WINOGRAD_CASES.items() if k in a.kernels
    for tile in _winograd_tiles_to_run(algo, case)
]


@pytest.mark.parametrize("algo,case,tile", WINOGRAD_RUNS, ids=[f"{a}-{c}-{t or 'auto'}" for a, c, t in WINOGRAD_RUNS])
def test_conv2d_winograd_on_cpu(emu, algo, case, tile):
    """The weight transform against an einsum of G in float64 (F(4x4, 5x5)'s, computed in float64, within
    half an ulp of it), the convolution against the float64 loops: rel L2 error < 1e-5."""
    n, c, h, w, o, k, padding, groups = WINOGRAD_CASES[case]
    relu = len(case) % 2 == 0
    rng = np.random.default_rng(sum(map(ord, case + str(tile))))
    x, w_oihw, b = _conv_case(rng, n, c, h, w, o, (k, k), (1, 1), padding, groups)
    y, u = _conv2d_winograd_emu(emu, x, w_oihw, b, padding, groups, relu, tile, algo)
    m = _wino_m(algo)
    g = WINO_G[(m, k)]
    u_ref = np.einsum("ir,ocrs,js->ijco", g, w_oihw.astype(np.float64), g).reshape((m + k - 1) ** 2, c // groups, o)
    _assert_close(u, u_ref, f"{kernels.WINOGRAD_ALGOS[algo].entry('weight', k)}[{case}]", tol=1e-7)
    if m == 4:
        ulps = np.abs(u - u_ref) / np.spacing(np.abs(u_ref).astype(np.float32))
        assert ulps.max() <= 0.5 + 1e-6, f"F(4x4, 5x5) weight transform: {ulps.max():.3f} ulp from G g G^T"
    _assert_close(y, conv2d_ref(x, w_oihw, b, (1, 1), padding, groups, relu),
                  f"conv2d {algo} {k}x{k}[{case}, {tile}, relu={relu}]", tol=1e-5)


@pytest.mark.parametrize("algo,k", WINOGRAD_KINDS)
def test_conv2d_winograd_is_batch_independent(emu, algo, k):
    """An image's result is bitwise the same alone and inside a batch (any tile: the k order is fixed)."""
    rng = np.random.default_rng(11)
    x, w_oihw, b = _conv_case(rng, 3, 8, 9, 7, 16, (k, k), (1, 1), (k // 2, k // 2), 2)
    batch, _ = _conv2d_winograd_emu(emu, x, w_oihw, b, (k // 2, k // 2), 2, True, "128x128", algo)
    for i in range(3):
        alone, _ = _conv2d_winograd_emu(emu, np.ascontiguousarray(x[i:i + 1]), w_oihw, b, (k // 2, k // 2), 2, True,
                                        "64x64", algo)
        assert np.array_equal(alone[0], batch[i]), f"{algo} {k}x{k} image {i}: max diff {np.abs(alone[0] - batch[i]).max():.3g}"


def max_pool2d_ref(x, kernel, stride, ceil_mode):
    n, c, h, w = x.shape
    oh = pool_output_size(h, kernel[0], stride[0], ceil_mode)
    ow = pool_output_size(w, kernel[1], stride[1], ceil_mode)
    y = np.empty((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            win = x[:, :, i * stride[0]:i * stride[0] + kernel[0], j * stride[1]:j * stride[1] + kernel[1]]
            y[:, :, i, j] = win.max(axis=(2, 3))
    return y


POOL_CASES = {
    # name: (shape, kernel, stride, ceil_mode, expected (OH, OW))
    "3x3s2-floor-8": ((2, 3, 8, 8), (3, 3), (2, 2), False, (3, 3)),
    "3x3s2-ceil-8": ((2, 3, 8, 8), (3, 3), (2, 2), True, (4, 4)),
    "3x3s2-ceil-13": ((1, 4, 13, 13), (3, 3), (2, 2), True, (6, 6)),
    "last-window-rule": ((1, 2, 5, 7), (1, 2), (3, 4), True, (2, 2)),
    "rect-floor": ((3, 2, 9, 6), (3, 2), (2, 1), False, (4, 5)),
    "rect-ceil": ((3, 2, 10, 6), (2, 3), (3, 2), True, (4, 3)),
}


@pytest.mark.parametrize("case", list(POOL_CASES))
def test_max_pool2d_kernel_on_cpu(emu, case):
    shape, kernel, stride, ceil_mode, expected = POOL_CASES[case]
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(shape) - 3).astype(np.float32)  # mostly negative: a 0-init bug would show
    out_shape = kernels.max_pool2d_output_shape(x.shape, kernel, stride, ceil_mode)
    assert out_shape[2:] == expected
    y = np.full(out_shape, np.nan, dtype=np.float32)
    _run(emu, kernels.plan_max_pool2d(x, y, kernel, stride, sms=1))
    _assert_close(y, max_pool2d_ref(x, kernel, stride, ceil_mode), f"max_pool2d[{case}]", tol=1e-7)


def lrn_ref(x, size, alpha, beta, k):
    x = x.astype(np.float64)
    c = x.shape[1]
    y = np.empty_like(x)
    for ch in range(c):
        lo, hi = max(0, ch - (size - 1) // 2), min(c - 1, ch + size // 2)
        s = (x[:, lo:hi + 1] ** 2).sum(axis=1)
        y[:, ch] = x[:, ch] / (k + alpha / size * s) ** beta
    return y


@pytest.mark.parametrize(
    "shape,size,alpha,beta,k",
    [
        ((2, 7, 3, 5), 5, 0.5, 0.75, 1.0),
        ((3, 6, 4, 4), 3, 0.3, 0.75, 2.0),
        ((2, 5, 2, 3), 4, 1.0, 0.5, 1.5),
        ((1, 9, 1, 1), 5, 5e-4 * 5 * 1000, 0.75, 2.0),
    ],
)
def test_lrn_kernel_on_cpu(emu, shape, size, alpha, beta, k):
    x = (np.random.default_rng(3).standard_normal(shape) * 2).astype(np.float32)
    y = np.full(shape, np.nan, dtype=np.float32)
    _run(emu, kernels.plan_lrn(x, y, size, alpha, beta, k, sms=1))
    _assert_close(y, lrn_ref(x, size, alpha, beta, k), f"lrn[{shape}, size={size}]")


@pytest.mark.parametrize("relu", [True, False])
def test_linear_epilogue_on_cpu(emu, relu):
    rng = np.random.default_rng(5)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((3, 17), (11, 17), (11,)))
    y = np.ascontiguousarray(x @ w.T)  # stands in for cupy.matmul
    _run(emu, kernels.plan_linear_bias_act(y, b, relu, sms=1))
    ref = x.astype(np.float64) @ w.T.astype(np.float64) + b
    _assert_close(y, np.maximum(ref, 0) if relu else ref, f"linear[relu={relu}]", tol=1e-6)


# -- non-finite inputs: NaN stays NaN (DESIGN.md §5), through the fused ReLU too ------

def _window_mask(bad, w_shape_oihw, stride, padding, groups):
    """(n, o, oh, ow) bool: True where the output's direct window (all its in/groups channels) holds a ``bad`` input."""
    o, cg, kh, kw = w_shape_oihw
    hits = conv2d_ref(bad.astype(np.float32), np.ones((o, cg, kh, kw), np.float32), np.zeros(o, np.float32),
                      stride, padding, groups, False)
    return hits > 0


def _poison(x, value, where):
    x = x.copy()
    for idx in where:
        x[idx] = value
    return x


# (n, c, h, w), positions: interior, corner next to the padding, another image and channel group.
NONFINITE_AT = ((0, 1, 2, 3), (1, 5, 0, 0), (1, 0, 8, 10))


def _check_nonfinite(y, ref, x_bad, w_oihw, stride, padding, groups, what):
    __tracebackhide__ = True
    assert np.array_equal(np.isnan(y), np.isnan(ref)), (
        f"{what}: NaN at {np.argwhere(np.isnan(y) != np.isnan(ref))[:5].tolist()} differs from the reference "
        f"({int(np.isnan(y).sum())} NaN vs {int(np.isnan(ref).sum())})")
    assert np.array_equal(np.isposinf(y), np.isposinf(ref)) and np.array_equal(np.isneginf(y), np.isneginf(ref)), (
        f"{what}: infinities differ from the reference")
    window = _window_mask(x_bad, w_oihw.shape, stride, padding, groups)
    assert np.isfinite(y[~window]).all(), f"{what}: non-finite output outside the windows holding the bad input"
    fin = np.isfinite(ref)
    assert fin.any() and _rel_err(y[fin], ref[fin]) < 1e-5, f"{what}: finite outputs wrong"


@pytest.mark.parametrize("tile", list(kernels.CONV_TILES))
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("relu", [True, False], ids=["relu", "no-relu"])
def test_conv2d_gemm_nonfinite_on_cpu(emu, tile, value, relu):
    """Implicit GEMM: NaN / ±inf inputs give exactly the reference's NaN and ±inf (ReLU keeps NaN, maps -inf to 0)."""
    n, c, h, w, o, k, stride, padding, groups = CONV_CASES["3x3-p1-groups2-odd"]
    rng = np.random.default_rng(17)
    x, w_oihw, b = _conv_case(rng, n, c, h, w, o, k, stride, padding, groups)
    x = _poison(x, value, NONFINITE_AT)
    w_ihwo = np.ascontiguousarray(w_oihw.transpose(1, 2, 3, 0))
    y = np.full(kernels.conv2d_output_shape(x.shape, w_ihwo.shape, stride, padding), 0.5, np.float32)
    _run(emu, kernels.plan_conv2d(x, w_ihwo, b, y, stride, padding, groups, relu, sms=1, tile=tile))
    ref = conv2d_ref(x, w_oihw, b, stride, padding, groups, relu)
    assert np.isnan(ref).any() if value != value else np.isinf(ref).any() or relu
    _check_nonfinite(y, ref, ~np.isfinite(x), w_oihw, stride, padding, groups, f"conv2d gemm[{value}, {tile}, relu={relu}]")


WINOGRAD_NONFINITE = {3: (2, 6, 9, 11, 8, 3, (1, 1), 2), 5: (2, 6, 9, 11, 8, 5, (2, 2), 2)}


def _winograd_reach(bad, algo, k, padding, groups, o):
    """(n, o, oh, ow) bool: the outputs ``algo``'s transforms reach from the ``bad`` inputs. Per axis, input
    d_q of a tile reaches output y_p of that tile where (|A^T| |B^T|)[p][q] != 0, in every tile whose input
    tile holds it; 2-D is the product of the row and column sets; every output channel of the group."""
    m = _wino_m(algo)
    mats = WINO_MATRICES[(m, k)]
    support = (np.abs(np.array(mats["AT"], float)) @ np.abs(np.array(mats["BT"], float))) > 0  # (m, ALPHA)
    alpha = m + k - 1
    n, c, h, w = bad.shape
    oh, ow = h + 2 * padding[0] - k + 1, w + 2 * padding[1] - k + 1

    def axis(i, pad, size):
        p = i + pad  # position in the zero-padded input
        return sorted({m * t + j for t in range(max(0, (p - alpha) // m), p // m + 1) if 0 <= p - m * t < alpha
                       for j in range(m) if support[j, p - m * t] and m * t + j < size})

    reach = np.zeros((n, o, oh, ow), bool)
    og, cg = o // groups, c // groups
    for img, ch, i, j in np.argwhere(bad):
        rows, cols = axis(i, padding[0], oh), axis(j, padding[1], ow)
        reach[img, ch // cg * og:(ch // cg + 1) * og][np.ix_(range(og), rows, cols)] = True
    return reach


def _winograd_poisoned(emu, algo, k, value, where, relu, seed):
    n, c, h, w, o, _, padding, groups = WINOGRAD_NONFINITE[k]
    rng = np.random.default_rng(seed)
    x, w_oihw, b = _conv_case(rng, n, c, h, w, o, (k, k), (1, 1), padding, groups)
    x = _poison(x, value, where)
    y, _ = _conv2d_winograd_emu(emu, x, w_oihw, b, padding, groups, relu, None, algo)
    with np.errstate(invalid="ignore"):
        ref = conv2d_ref(x, w_oihw, b, (1, 1), padding, groups, relu)
    reach = _winograd_reach(~np.isfinite(x), algo, k, padding, groups, o)
    window = _window_mask(~np.isfinite(x), w_oihw.shape, (1, 1), padding, groups)
    return y, ref, reach, window


@pytest.mark.parametrize("algo,k", WINOGRAD_KINDS)
@pytest.mark.parametrize("relu", [True, False], ids=["relu", "no-relu"])
def test_conv2d_winograd_nan_on_cpu(emu, algo, k, relu):
    """Winograd: a NaN input gives NaN exactly at the outputs the transforms reach from it
    (:func:`_winograd_reach`: they add no zero-coefficient products) and every other output is right.
    F(2x2, R): that reach is the direct window (d_0 reaches only y_0, d_ALPHA-1 only y_1, every other d_i
    both), so NaN is exactly the reference's. F(4x4, 5x5): d_1, d_2, d_5, d_6 of a tile reach all four
    outputs, beyond their windows: a NaN at padded position p with p % 4 in (1, 2), along either axis,
    spreads to the 8 outputs 4*(p//4) - 4 .. 4*(p//4) + 3 of that axis instead of its window's 5; these
    positions hold such NaNs (exact ones: the next test, the reference's NaN: the xfail after it)."""
    y, ref, reach, window = _winograd_poisoned(emu, algo, k, np.nan, NONFINITE_AT, relu, 19 + k)
    assert np.array_equal(np.isnan(ref), window) and window.any()
    assert np.array_equal(np.isnan(y), reach), (
        f"{algo} {k}x{k}: NaN at {np.argwhere(np.isnan(y) != reach)[:5].tolist()} differs from the transforms' reach")
    assert (reach >= window).all()
    if _wino_m(algo) == 2:
        assert np.array_equal(reach, window), "F(2x2, R) must reach exactly the direct windows"
    else:
        assert reach.sum() > window.sum(), "these positions must show F(4x4, 5x5)'s spread"
    _assert_close(y[~reach], ref[~reach], f"conv2d {algo} {k}x{k}[nan, relu={relu}] outside the NaN", tol=1e-5)


@pytest.mark.parametrize("relu", [True, False], ids=["relu", "no-relu"])
def test_conv2d_winograd_f4_nan_is_exact_at_aligned_positions_on_cpu(emu, relu):
    """F(4x4, 5x5): a NaN at padded positions p with p % 4 in (0, 3) along both axes (d_0 of one tile and
    d_4 of the one before, or d_3 and d_7: their reach is the window) gives exactly the reference's NaN."""
    padding = WINOGRAD_NONFINITE[5][6]
    aligned = ((0, 1, 2, 1), (1, 5, 5, 6), (1, 0, 6, 10), (0, 3, 1, 2))   # padded (4, 3), (7, 8), (8, 12), (3, 4)
    assert all((i + padding[0]) % 4 in (0, 3) and (j + padding[1]) % 4 in (0, 3) for _, _, i, j in aligned)
    y, ref, reach, window = _winograd_poisoned(emu, "winograd_f4", 5, np.nan, aligned, relu, 31)
    assert np.array_equal(reach, window) and window.any()
    assert np.array_equal(np.isnan(y), np.isnan(ref)), (
        f"NaN at {np.argwhere(np.isnan(y) != np.isnan(ref))[:5].tolist()} differs from the reference's")
    _assert_close(y[~window], ref[~window], f"conv2d winograd_f4[nan aligned, relu={relu}] outside the NaN", tol=1e-5)


@pytest.mark.xfail(strict=True, reason=(
    "known conformance gap (DESIGN.md §5 'no element is NaN unless the reference's is'), F(4x4, 5x5) only: "
    "B^T's rows 1-6 take d_1..d_6 and A^T's rows take m_1..m_6, so a NaN at d_1, d_2, d_5 or d_6 of a tile "
    "(padded position p % 4 in (1, 2)) reaches all 4 outputs of the tile, beyond its direct window "
    "(an 8-wide run of outputs per axis instead of 5); F(2x2) and the implicit GEMM are exact."))
@pytest.mark.parametrize("relu", [True, False], ids=["relu", "no-relu"])
def test_conv2d_winograd_f4_nan_gives_reference_nan_on_cpu(emu, relu):
    y, ref, _, _ = _winograd_poisoned(emu, "winograd_f4", 5, np.nan, NONFINITE_AT, relu, 19 + 5)
    assert np.array_equal(np.isnan(y), np.isnan(ref)), (
        f"{int(np.isnan(y).sum())} NaN outputs where the reference has {int(np.isnan(ref).sum())}")


@pytest.mark.parametrize("algo,k", WINOGRAD_KINDS)
@pytest.mark.parametrize("value", [np.inf, -np.inf], ids=["inf", "-inf"])
def test_conv2d_winograd_inf_stays_in_its_reach_on_cpu(emu, algo, k, value):
    """Winograd: an infinite input makes exactly the outputs the transforms reach from it non-finite (for
    F(2x2, R) the direct windows holding it, for F(4x4, 5x5) up to the 8x8 block around it: see the NaN
    test), and every other output is right. Inside, the result is NaN where the reference's is ±inf: see
    the xfail below."""
    y, ref, reach, window = _winograd_poisoned(emu, algo, k, value, NONFINITE_AT, False, 23 + k)
    assert np.array_equal(~np.isfinite(ref), window)  # one inf per window: ±inf, never inf - inf
    assert np.array_equal(~np.isfinite(y), reach), "non-finite outputs differ from the transforms' reach of the inf"
    _assert_close(y[~reach], ref[~reach], f"conv2d {algo} {k}x{k}[{value}] outside the inf's reach", tol=1e-5)


@pytest.mark.xfail(strict=True, reason=(
    "known conformance gap (DESIGN.md §5 'no element is NaN unless the reference's is'): "
    "the Winograd transforms subtract the input tile's entries (B^T) and the per-point products (A^T), "
    "so a single ±inf input becomes inf - inf = NaN at outputs where the direct convolution gives ±inf "
    "(and, after ReLU, NaN where the reference gives 0 for -inf). NaN inputs are exact under F(2x2) "
    "(previous tests)."))
@pytest.mark.parametrize("algo,k", WINOGRAD_KINDS)
def test_conv2d_winograd_inf_gives_reference_infinities_on_cpu(emu, algo, k):
    y, ref, _, _ = _winograd_poisoned(emu, algo, k, np.inf, NONFINITE_AT, False, 23 + k)
    assert not np.isnan(ref).any()
    assert not np.isnan(y).any(), f"{int(np.isnan(y).sum())} of {int(np.isinf(ref).sum())} infinite reference outputs are NaN"


def test_linear_epilogue_keeps_nan_on_cpu(emu):
    """bias + ReLU: NaN (from the product or the bias) stays NaN, +inf stays +inf, -inf becomes 0 (= maximum(y, 0))."""
    y0 = np.array([[np.nan, 1.0, -1.0, np.inf, -np.inf, 2.0], [-3.0, np.nan, 0.5, -0.0, 4.0, 1.0]], np.float32)
    b = np.array([0.0, 0.0, np.nan, 0.0, 0.0, -np.inf], np.float32)
    ref = y0.astype(np.float64) + b
    for relu in (True, False):
        y = y0.copy()
        _run(emu, kernels.plan_linear_bias_act(y, b, relu, sms=1))
        want = np.maximum(ref, 0) if relu else ref
        assert np.isnan(want).sum() == 4
        np.testing.assert_array_equal(y, want.astype(np.float32), err_msg=f"linear epilogue, relu={relu}")


# -- the backward kernels ------------------------------------------------------------

BACKWARD_CONVS = {
    # name: (n, c, h, w, o, (kh, kw), stride, padding, groups)
    "3x3-p1-g2": (2, 6, 9, 11, 10, (3, 3), (1, 1), (1, 1), 2),
    "11x11-s4-p2": (1, 3, 31, 29, 8, (11, 11), (4, 4), (2, 2), 1),
    "5x3-s2x3-p0x2": (2, 5, 8, 13, 7, (5, 3), (2, 3), (0, 2), 1),
    "1x1-p1-wider-than-kernel": (1, 4, 5, 6, 6, (1, 1), (1, 1), (1, 1), 1),
    "k-over-128-m-over-128": (1, 16, 5, 5, 130, (3, 3), (1, 1), (1, 1), 1),
    "stride3-unread-rows": (2, 4, 7, 5, 4, (3, 3), (3, 3), (0, 0), 2),
}


def _conv_backward_ref(x, w_oihw, g, stride, padding, groups):
    """(dx, dw_oihw) of the convolution in float64, by alexnet_aa.reference (checked against finite differences)."""
    from alexnet_aa import reference

    x64, w64, g64 = x.astype(np.float64), w_oihw.astype(np.float64), g.astype(np.float64)
    dx, dw, _ = reference.conv2d_backward(x64, w64, None, g64, stride, padding, groups, False, True)
    return dx, dw


@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("tile", list(kernels.WEIGHT_GRAD_TILES))
@pytest.mark.parametrize("case", list(BACKWARD_CONVS))
def test_conv2d_backward_weight_kernel_on_cpu(emu, case, tile, splits):
    """``conv2d_backward.cu``: the split-K weight gradient and its fixed-order reduction, every tile."""
    n, c, h, w, o, k, stride, padding, groups = BACKWARD_CONVS[case]
    rng = np.random.default_rng(len(case) + splits)
    x, w_oihw, _ = _conv_case(rng, n, c, h, w, o, k, stride, padding, groups)
    w_ihwo = np.ascontiguousarray(w_oihw.transpose(1, 2, 3, 0))
    oshape = kernels.conv2d_output_shape(x.shape, w_ihwo.shape, stride, padding)
    g = rng.standard_normal(oshape).astype(np.float32)
    cg, kh, kw, _ = w_ihwo.shape
    partial = np.full((splits, cg * kh * kw, o), np.nan, np.float32)  # every element must be written
    _run(emu, kernels.plan_conv2d_backward_weight(x, g, partial, w_ihwo.shape, stride, padding, groups,
                                                  tile=kernels.WEIGHT_GRAD_TILES[tile]))
    dw = np.full(w_ihwo.shape, np.nan, np.float32)
    _run(emu, kernels.plan_weight_grad_reduce(partial, dw, sms=1))
    _, ref = _conv_backward_ref(x, w_oihw, g, stride, padding, groups)
    _assert_close(dw, ref.transpose(1, 2, 3, 0), f"conv2d_backward weight[{case}, {tile}, splits={splits}]", tol=2e-6)
    again = np.empty_like(dw)
    _run(emu, kernels.plan_conv2d_backward_weight(x, g, partial, w_ihwo.shape, stride, padding, groups,
                                                  tile=kernels.WEIGHT_GRAD_TILES[tile]))
    _run(emu, kernels.plan_weight_grad_reduce(partial, again, sms=1))
    assert np.array_equal(again, dw), "the weight gradient must be the same bits on a rerun"


@pytest.fixture
def emulated_cupy(emu, monkeypatch):
    """``kernels`` with NumPy standing in for cupy and the emulation for the launches (132 SMs, an H100's
    count, so the weight gradient splits its reduction): the launch wrappers run as they do on a GPU."""
    monkeypatch.setitem(sys.modules, "cupy", np)
    monkeypatch.setattr(kernels, "device_facts", lambda device_id=None: {"sms": 132})
    monkeypatch.setattr(kernels, "_run", lambda plan: _run(emu, plan))
    return kernels


@pytest.mark.parametrize("relu", [False, True])
def test_conv2d_backward_wrapper_on_cpu(emulated_cupy, relu):
    """``kernels.conv2d_backward`` end to end: the ReLU mask, ``db``, the split-K weight gradient and its
    reduction, and ``dx`` through :func:`kernels.conv2d` on the dilated gradient — Winograd for the 3x3
    and 5x5 cases at stride 1, implicit GEMM otherwise, as on the GPU."""
    from alexnet_aa import reference

    algos = set()
    for case, (n, c, h, w, o, k, stride, padding, groups) in BACKWARD_CONVS.items():
        rng = np.random.default_rng(len(case) + relu)
        x, w_oihw, _ = _conv_case(rng, n, c, h, w, o, k, stride, padding, groups)
        w_ihwo = np.ascontiguousarray(w_oihw.transpose(1, 2, 3, 0))
        x64, w64 = x.astype(np.float64), w_oihw.astype(np.float64)
        y = reference.conv2d(x64, w64, None, stride, padding, groups, relu).astype(np.float32)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        dx, dw, db = emulated_cupy.conv2d_backward(x, w_ihwo, y, dy, stride, padding, groups, relu, True)
        want = reference.conv2d_backward(x64, w64, y.astype(np.float64), dy.astype(np.float64), stride, padding, groups, relu, True)
        for name, got, ref in (("dx", dx, want[0]), ("dw", dw, want[1].transpose(1, 2, 3, 0)), ("db", db, want[2])):
            _assert_close(got, ref, f"conv2d_backward {name}[{case}, relu={relu}]", tol=2e-6)
        algos.add(kernels.choose_conv_algo(kernels.transposed_conv_weight(w_ihwo, groups, np).shape, (1, 1)))
    assert algos == {"gemm", "winograd"}, f"the cases must reach both dx paths, reached {algos}"


@pytest.mark.parametrize("k", kernels.WINOGRAD_KERNELS)
def test_conv2d_winograd_wrapper_on_cpu(emulated_cupy, monkeypatch, k):
    """``kernels.conv2d`` on a prepared :class:`ConvWeight` (U of the default algorithm, as
    ``CupyBackend.prepare`` stores it) and on a plain IHWO array, for every algorithm: the carried U is
    used when it is that algorithm's and the weight transformed on the fly otherwise (``algo="winograd"``
    on a 5x5 layer, as the benchmark's sweep asks), the same bits either way; the default is
    :func:`kernels.choose_conv_algo`'s; every result is right; a U of the wrong shape is an error."""
    n, c, h, w, o, _, padding, groups = WINOGRAD_NONFINITE[k]
    x, w_oihw, b = _conv_case(np.random.default_rng(41 + k), n, c, h, w, o, (k, k), (1, 1), padding, groups)
    w_ihwo = np.ascontiguousarray(w_oihw.transpose(1, 2, 3, 0))
    default = kernels.choose_conv_algo(w_ihwo.shape, (1, 1))
    assert default == kernels.default_winograd_algo(w_ihwo.shape) == kernels.DEFAULT_WINOGRAD[k] == "winograd"
    prepared = kernels.ConvWeight(w_ihwo, kernels.winograd_weight(w_ihwo))
    assert prepared.winograd_algo == default and kernels.ConvWeight(w_ihwo).winograd_algo is None
    transformed = []
    original = kernels.winograd_weight
    monkeypatch.setattr(kernels, "winograd_weight", lambda w_, algo=None: transformed.append(algo) or original(w_, algo))
    ref = conv2d_ref(x, w_oihw, b, (1, 1), padding, groups, True)
    results = {}
    for algo in (None, *kernels.CONV_ALGOS):
        if algo in kernels.WINOGRAD_ALGOS and not kernels.winograd_applies(w_ihwo.shape, (1, 1), algo):
            with pytest.raises(ValueError, match=rf"algo='{algo}' needs a 5x5 kernel"):
                emulated_cupy.conv2d(x, prepared, b, (1, 1), padding, groups, True, algo=algo)
            continue
        transformed.clear()
        y = emulated_cupy.conv2d(x, prepared, b, (1, 1), padding, groups, True, algo=algo)
        on_the_fly = [] if (algo or default) in (default, "gemm") else [algo]
        assert transformed == on_the_fly, f"algo={algo}: weight transforms {transformed}, expected {on_the_fly}"
        plain = emulated_cupy.conv2d(x, w_ihwo, b, (1, 1), padding, groups, True, algo=algo)
        assert np.array_equal(y, plain), f"{k}x{k} algo={algo}: the prepared and the plain weight differ"
        _assert_close(y, ref, f"kernels.conv2d {k}x{k} algo={algo}", tol=1e-5)
        results[algo] = y
    assert np.array_equal(results[None], results[default])
    bad = kernels.ConvWeight(w_ihwo, np.zeros((prepared.winograd.shape[0], c // groups + 1, o), np.float32))
    with pytest.raises(ValueError, match=r"\[conv2d\] Winograd weight has shape"):
        emulated_cupy.conv2d(x, bad, b, (1, 1), padding, groups, True)


@pytest.mark.parametrize("data", ["normal", "ties", "nan"])
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_max_pool2d_backward_kernel_on_cpu(emu, case, data):
    """The gather: each window's gradient to its first maximum (row-major) — to its first NaN in a
    window holding NaN — ceil-mode windows clipped."""
    from alexnet_aa import reference

    shape, kernel, stride, ceil_mode, _ = POOL_CASES[case]
    rng = np.random.default_rng(11)
    x = (rng.integers(-1, 2, shape) if data == "ties" else rng.standard_normal(shape)).astype(np.float32)
    if data == "nan":
        x.flat[rng.choice(x.size, max(2, x.size // 50), replace=False)] = np.nan
    y = max_pool2d_ref(x, kernel, stride, ceil_mode)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = np.full(x.shape, np.nan, np.float32)
    _run(emu, kernels.plan_max_pool2d_backward(x, dy, dx, kernel, stride, sms=1))
    ref = reference.max_pool2d_backward(x.astype(np.float64), y, dy.astype(np.float64), kernel, stride, ceil_mode)
    _assert_close(dx, ref, f"max_pool2d_backward[{case}, {data}]", tol=1e-7)


@pytest.mark.parametrize("size", [1, 3, 4, 5])
def test_lrn_backward_kernel_on_cpu(emu, size):
    """One pass over the transposed window (even sizes reach one channel further down), batch != channels."""
    from alexnet_aa import reference

    x = (np.random.default_rng(size).standard_normal((2, 7, 3, 4)) * 2).astype(np.float32)
    args = (size, 0.5, 0.75, 1.5)
    y = lrn_ref(x, *args).astype(np.float32)
    dy = np.random.default_rng(size + 1).standard_normal(x.shape).astype(np.float32)
    dx = np.full(x.shape, np.nan, np.float32)
    _run(emu, kernels.plan_lrn_backward(x, y, dy, dx, *args, sms=1))
    ref = reference.lrn_backward(x.astype(np.float64), y.astype(np.float64), dy.astype(np.float64), *args)
    _assert_close(dx, ref, f"lrn_backward[size={size}]", tol=2e-6)


@pytest.mark.parametrize("batch", [1, 128])
@pytest.mark.parametrize("layer", ["paper-conv1", "paper-conv2", "tv-conv3"])
def test_weight_grad_plan_covers_alexnet_layers(layer, batch):
    """The real layers' weight-gradient launch: every (k, m) tile of every group has a block in every
    split, the splits cover the reduction without an empty range, and a split pays off (two waves on an
    H100's 132 SMs wanted, each range at least 64 slices)."""
    c, h, o, k, s, p, g = ALEXNET_CONVS[layer]
    x = np.empty((batch, c, h, h), np.float32)
    w_shape = (c // g, k, k, o)
    oshape = kernels.conv2d_output_shape(x.shape, w_shape, (s, s), (p, p))
    kk, m, reduction = c // g * k * k, o // g, batch * oshape[2] * oshape[3]
    tile, splits = kernels.weight_grad_split(kk, m, g, reduction, 132)
    plan = kernels.plan_conv2d_backward_weight(x, np.empty(oshape, np.float32), np.empty((splits, kk, o), np.float32),
                                               w_shape, (s, s), (p, p), g, tile=tile)
    assert plan.kernel == tile.kernel and plan.block == (tile.threads, 1, 1)
    assert plan.grid[0] * tile.bn >= m > (plan.grid[0] - 1) * tile.bn
    assert plan.grid[1] * tile.bm >= kk > (plan.grid[1] - 1) * tile.bm
    assert plan.grid[2] == g * splits
    chunk = int(plan.args[-1])
    assert chunk * splits >= reduction > chunk * (splits - 1), "a split with nothing to reduce, or rows left out"
    assert splits == 1 or chunk >= 64 * tile.bk
    if reduction >= 2 * 64 * tile.bk and plan.grid[0] * plan.grid[1] * g < 132:
        assert splits > 1, "an under-filled GPU must split the reduction"


# -- own linear kernels (float32): GEMV and tiled GEMM, the same bits ------------------

LINEAR_CASES = {
    # name: (batch, in, out): tails of every tile and chunk, several GEMV row groups
    "fc-like-tails": (3, 1100, 70),
    "one-chunk": (1, 300, 130),
    "rows-over-8": (11, 700, 33),
    "rows-over-128": (130, 520, 20),
    "exact-chunks": (2, 1024, 64),
}


def _linear_emu(lib, x, w_io, b, relu, algo, tile=None):
    """``kernels.linear``'s float32 launches in the emulation: partials, then their ordered sum (``tile``: the
    GEMM's, or the GEMV's rows per block)."""
    n, i = x.shape
    o = w_io.shape[1]
    p = np.full((kernels.linear_chunks(i), n, o), np.nan, np.float32)
    plan = (kernels.plan_linear_gemv(x, w_io, p, rows=tile) if algo == "gemv"
            else kernels.plan_linear_gemm(x, w_io, p, sms=1, tile=tile))
    _run(lib, plan)
    y = np.full((n, o), np.nan, np.float32)
    _run(lib, kernels.plan_linear_reduce(p, b, y, relu, sms=1))
    return y


@pytest.mark.parametrize("case", list(LINEAR_CASES))
def test_linear_kernels_on_cpu(emu, case):
    """``linear.cu``: GEMV and every GEMM tile agree with float64 and with each other bit for bit (the fixed
    chunks, each summed in input order: DESIGN.md §7), and an image's logits are the same alone."""
    n, i, o = LINEAR_CASES[case]
    rng = np.random.default_rng(len(case))
    x = rng.standard_normal((n, i)).astype(np.float32)
    w_io = (rng.standard_normal((i, o)) / np.sqrt(i)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    ref = x.astype(np.float64) @ w_io.astype(np.float64) + b
    gemv = _linear_emu(emu, x, w_io, b, True, "gemv")
    _assert_close(gemv, np.maximum(ref, 0), f"linear gemv[{case}]", tol=1e-6)
    for rows in kernels.LINEAR_GEMV_ROWS:
        other = _linear_emu(emu, x, w_io, b, True, "gemv", rows)
        assert np.array_equal(other, gemv), f"linear gemv with {rows} rows a block differs [{case}]"
    for tile in kernels.LINEAR_TILES:
        gemm = _linear_emu(emu, x, w_io, b, True, "gemm", tile)
        assert np.array_equal(gemm, gemv), f"linear gemm {tile} differs from the GEMV [{case}]: {np.abs(gemm - gemv).max():.3g}"
    alone = _linear_emu(emu, np.ascontiguousarray(x[-1:]), w_io, b, True, "gemv")
    assert np.array_equal(alone[0], gemv[-1]), f"linear[{case}]: the last row alone differs from its batch"


def test_linear_kernels_keep_nan_on_cpu(emu):
    """NaN and ±inf inputs: NaN where the float64 product has NaN (inf * 0 included), ±inf where it has ±inf."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 600)).astype(np.float32)
    x[0, 5], x[1, 599] = np.nan, np.inf
    w_io = rng.standard_normal((600, 9)).astype(np.float32)
    w_io[599, 2] = 0.0
    b = np.zeros(9, np.float32)
    with np.errstate(invalid="ignore"):
        ref = x.astype(np.float64) @ w_io.astype(np.float64)
    for algo in kernels.LINEAR_ALGOS:
        y = _linear_emu(emu, x, w_io, b, False, algo, None if algo == "gemv" else "64x64")
        assert np.array_equal(np.isnan(y), np.isnan(ref)) and np.array_equal(np.isinf(y), np.isinf(ref)), (algo, y, ref)


# -- half precision: conversions, tensor cores (emulated), pool and LRN -----------------

HALF = {"float16": np.float16}
try:
    import ml_dtypes

    HALF["bfloat16"] = ml_dtypes.bfloat16
except ImportError:  # ml_dtypes comes with onnx, a test dependency; without it bfloat16 cases skip
    ml_dtypes = None
#: Relative L2 error of one rounding to the dtype (float32 in between): the tolerance of results
#: computed in float32 from inputs already in the dtype, then rounded once (4x the unit roundoff).
HALF_TOL = {"float16": 4 * 2.0**-11, "bfloat16": 4 * 2.0**-8}
half_dtypes = pytest.mark.parametrize("dtype", ["float16", pytest.param("bfloat16", marks=pytest.mark.skipif(
    ml_dtypes is None, reason="ml_dtypes (bfloat16 for NumPy) is not installed"))])


def _half(a, dtype):
    return np.ascontiguousarray(np.asarray(a, np.float32).astype(HALF[dtype]))


def test_float16_conversions_on_cpu(emu):
    """precision.cuh without __CUDA_ARCH__: float16 → float for all 65,536 patterns, float → float16 and
    → bfloat16 (round to nearest even, overflow, subnormals, NaN) equal to NumPy's and ml_dtypes' rounding."""
    bits = np.arange(65536, dtype=np.uint16)
    f = np.empty(65536, np.float32)
    emu.emu_float16_to_float(bits.ctypes.data_as(ctypes.c_void_p), f.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(65536))
    want = bits.view(np.float16).astype(np.float32)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(f), nan) and np.array_equal(f[~nan].view(np.uint32), want[~nan].view(np.uint32))
    rng = np.random.default_rng(0)
    edges = [0.0, -0.0, 65504.0, 65519.99, 65520.0, -65520.0, 1e30, np.inf, -np.inf, np.nan, 2.0**-24, 2.0**-25,
             2.0**-25 * 1.0000001, 3 * 2.0**-26, 2.0**-14, 2.0**-14 * (1 - 2.0**-12), 1 + 2.0**-11, 1 + 3 * 2.0**-11]
    scaled = rng.standard_normal(20000) * 10.0 ** rng.integers(-9, 6, 20000)
    values = np.concatenate([np.array(edges, np.float32), scaled.astype(np.float32),
                             rng.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32).view(np.float32)])
    out = np.empty(values.size, np.uint16)
    for name, fn, ref in (("float16", emu.emu_float_to_float16, lambda v: v.astype(np.float16).view(np.uint16)),
                          ("bfloat16", emu.emu_float_to_bfloat16, None if ml_dtypes is None else
                           lambda v: v.astype(ml_dtypes.bfloat16).view(np.uint16))):
        if ref is None:
            continue
        fn(values.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(values.size))
        with np.errstate(over="ignore", invalid="ignore"):
            want = ref(values)
        got_f = out.view(np.float16) if name == "float16" else out.view(HALF["bfloat16"])
        want_f = want.view(np.float16) if name == "float16" else want.view(HALF["bfloat16"])
        isnan = np.isnan(want_f.astype(np.float32))
        assert np.array_equal(np.isnan(got_f.astype(np.float32)), isnan), f"float → {name}: NaN differs"
        bad = np.flatnonzero(out[~isnan] != want[~isnan])
        assert not bad.size, f"float → {name}: {bad.size} values round differently, e.g. {values[~isnan][bad[:3]]}"


MMA_CONV_CASES = {
    # name: (n, c, h, w, o, (kh, kw), stride, padding, groups): K % 8 == 0 (vector A loads) and not
    "11x11-s4-p2-scalar-a": (1, 3, 23, 21, 10, (11, 11), (4, 4), (2, 2), 1),
    "3x3-p1-g2-vector-a": (2, 16, 7, 9, 20, (3, 3), (1, 1), (1, 1), 2),
    "5x5-p2-m-over-64": (1, 8, 6, 7, 72, (5, 5), (1, 1), (2, 2), 1),
    "1x1-map-odd-k": (3, 5, 1, 1, 7, (1, 1), (1, 1), (0, 0), 1),
    "m-and-n-over-128": (1, 8, 13, 12, 136, (3, 3), (1, 1), (1, 1), 1),
}


@half_dtypes
@pytest.mark.parametrize("case", list(MMA_CONV_CASES))
def test_conv2d_mma_on_cpu(emu, case, dtype):
    """``conv2d_mma.cu`` (tensor cores emulated): against the float64 convolution of the same half inputs,
    within one rounding of the output; every tile gives the same bits, and an image alone its batch's bits."""
    n, c, h, w, o, k, stride, padding, groups = MMA_CONV_CASES[case]
    rng = np.random.default_rng(len(case))
    x32, w32, b32 = _conv_case(rng, n, c, h, w, o, k, stride, padding, groups)
    x, wt, b = _half(x32, dtype), _half(w32, dtype), _half(b32, dtype)
    ref = conv2d_ref(x.astype(np.float32), wt.astype(np.float32), b.astype(np.float32), stride, padding, groups, True)
    shape = kernels.conv2d_output_shape(x.shape, (c // groups, *k, o), stride, padding)
    results = {}
    for tile in kernels.MMA_CONV_TILES:
        y = np.full(shape, np.nan, np.float32).astype(HALF[dtype])
        _run(emu, kernels.plan_conv2d_mma(x, wt, b, y, stride, padding, groups, True, sms=1, tile=tile))
        _assert_close(y.astype(np.float32), ref, f"conv2d_mma[{case}, {tile}, {dtype}]", tol=HALF_TOL[dtype])
        results[tile] = y.view(np.uint16)
    first, *others = results.values()
    assert all(np.array_equal(first, r) for r in others), f"conv2d_mma[{case}, {dtype}]: tiles give different bits"
    alone = np.full((1, *shape[1:]), np.nan, np.float32).astype(HALF[dtype])
    _run(emu, kernels.plan_conv2d_mma(np.ascontiguousarray(x[-1:]), wt, b, alone, stride, padding, groups, True, sms=1))
    assert np.array_equal(alone.view(np.uint16)[0], first[-1]), f"conv2d_mma[{case}, {dtype}]: an image alone differs"


def _misaligned(a):
    """A copy of ``a`` that starts 2 bytes past a 16-byte boundary (a view into a larger buffer)."""
    buf = np.empty(a.size + 8, a.dtype)
    start = next(i for i in range(8) if (buf.ctypes.data + i * a.itemsize) % 16 == a.itemsize)
    out = buf[start:start + a.size].reshape(a.shape)
    out[...] = a
    return out


@half_dtypes
def test_mma_vector_loads_only_where_aligned_on_cpu(emu, dtype):
    """The plans read A (conv) and both operands (linear) as 16-byte vectors only where K % 8 == 0 and the
    arrays start 16-byte aligned; a view that does not gets element-wise loads, and the same bits."""
    rng = np.random.default_rng(31)
    n, c, h, w, o, k, stride, padding, groups = MMA_CONV_CASES["3x3-p1-g2-vector-a"]
    x32, w32, b32 = _conv_case(rng, n, c, h, w, o, k, stride, padding, groups)
    x, wt, b = _half(x32, dtype), _half(w32, dtype), _half(b32, dtype)
    shape = kernels.conv2d_output_shape(x.shape, (c // groups, *k, o), stride, padding)
    ys = []
    for weight, vec in ((wt, 1), (_misaligned(wt), 0)):
        plan = kernels.plan_conv2d_mma(x, weight, b, y := np.zeros(shape, HALF[dtype]), stride, padding, groups, True, sms=1)
        assert int(plan.args[-1]) == vec, f"vec_a={int(plan.args[-1])} for an array at {weight.ctypes.data % 16} mod 16"
        _run(emu, plan)
        ys.append(y.view(np.uint16))
    assert np.array_equal(*ys)
    xl, wl = _half(rng.standard_normal((3, 64)), dtype), _half(rng.standard_normal((20, 64)) / 8, dtype)
    outs = []
    for xi, vec in ((xl, 1), (_misaligned(xl), 0)):
        p = np.zeros((1, 3, 20), np.float32)
        plan = kernels.plan_linear_mma(xi, wl, p)
        assert int(plan.args[-1]) == vec
        _run(emu, plan)
        outs.append(p)
    assert np.array_equal(*outs)


@half_dtypes
def test_conv2d_mma_keeps_nan_on_cpu(emu, dtype):
    """NaN inputs give NaN exactly at the outputs whose window holds them, through the fused ReLU."""
    n, c, h, w, o, k, stride, padding, groups = CONV_CASES["3x3-p1-groups2-odd"]
    rng = np.random.default_rng(29)
    x32, w32, b32 = _conv_case(rng, n, c, h, w, o, k, stride, padding, groups)
    x = _half(_poison(x32, np.nan, NONFINITE_AT), dtype)
    wt, b = _half(w32, dtype), _half(b32, dtype)
    y = np.zeros(kernels.conv2d_output_shape(x.shape, (c // groups, *k, o), stride, padding), HALF[dtype])
    _run(emu, kernels.plan_conv2d_mma(x, wt, b, y, stride, padding, groups, True, sms=1))
    ref = conv2d_ref(x.astype(np.float32), wt.astype(np.float32), b.astype(np.float32), stride, padding, groups, True)
    assert np.array_equal(np.isnan(y.astype(np.float32)), np.isnan(ref)), "NaN where the reference has none, or missing"


LINEAR_MMA_CASES = {
    # name: (batch, in, out): I % 8 == 0 (vector loads) or not, chunk tails, rows over one 128x8 tile
    "vector-two-chunks": (3, 1040, 40),
    "scalar-odd-in": (2, 37, 130),
    "rows-over-8": (12, 64, 20),
}


@half_dtypes
@pytest.mark.parametrize("case", list(LINEAR_MMA_CASES))
def test_linear_mma_on_cpu(emu, case, dtype):
    """``linear_mma_forward_<tile>_<dtype>`` + ``linear_reduce_forward_<dtype>``: within one rounding of the
    float64 product of the same half inputs; both tiles give the same bits."""
    n, i, o = LINEAR_MMA_CASES[case]
    rng = np.random.default_rng(len(case) + 1)
    x = _half(rng.standard_normal((n, i)), dtype)
    w_oi = _half(rng.standard_normal((o, i)) / np.sqrt(i), dtype)
    b = _half(rng.standard_normal(o), dtype)
    ref = x.astype(np.float64) @ w_oi.astype(np.float64).T + b.astype(np.float64)
    bits = []
    for tile in kernels.LINEAR_MMA_TILES:
        p = np.full((kernels.linear_chunks(i), n, o), np.nan, np.float32)
        _run(emu, kernels.plan_linear_mma(x, w_oi, p, tile=tile))
        y = np.full((n, o), np.nan, np.float32).astype(HALF[dtype])
        _run(emu, kernels.plan_linear_reduce(p, b, y, False, sms=1))
        _assert_close(y.astype(np.float32), ref, f"linear_mma[{case}, {tile}, {dtype}]", tol=HALF_TOL[dtype])
        bits.append(y.view(np.uint16))
    assert np.array_equal(*bits), f"linear_mma[{case}, {dtype}]: the tiles give different bits"


@half_dtypes
def test_pool_and_lrn_half_on_cpu(emu, dtype):
    """max_pool2d keeps the window's element as it is (no rounding); LRN computes in float32 from the half
    input and rounds once."""
    rng = np.random.default_rng(13)
    x = _half(rng.standard_normal((2, 7, 9, 8)) * 2, dtype)
    y = np.zeros(kernels.max_pool2d_output_shape(x.shape, (3, 3), (2, 2), True), HALF[dtype])
    _run(emu, kernels.plan_max_pool2d(x, y, (3, 3), (2, 2), sms=1))
    assert np.array_equal(y.astype(np.float32), max_pool2d_ref(x.astype(np.float32), (3, 3), (2, 2), True).astype(np.float32))
    z = np.zeros_like(x)
    _run(emu, kernels.plan_lrn(x, z, 5, 0.5, 0.75, 2.0, sms=1))
    _assert_close(z.astype(np.float32), lrn_ref(x.astype(np.float32), 5, 0.5, 0.75, 2.0), f"lrn[{dtype}]", tol=HALF_TOL[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_linear_wrapper_on_cpu(emulated_cupy, dtype):
    """``kernels.linear`` end to end (partials buffer, algorithm or tile choice, reduce) in float32 (IO
    weights: GEMV for a small batch, GEMM for a large one, the same bits) and float16 (OI weights)."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal((20, 600)).astype(np.float32)
    w = (rng.standard_normal((600, 50)) / 25).astype(np.float32)
    b = rng.standard_normal(50).astype(np.float32)
    ref = np.maximum(x.astype(np.float64) @ w + b, 0)
    if dtype == "float32":
        y = emulated_cupy.linear(x, w, b, True)   # batch 20: the GEMM
        small = emulated_cupy.linear(np.ascontiguousarray(x[:3]), w, b, True)   # batch 3: the GEMV
        assert np.array_equal(small, y[:3]), "GEMV and GEMM rows differ"
        _assert_close(y, ref, "kernels.linear float32", tol=1e-6)
    else:
        xh, wh, bh = _half(x, dtype), _half(w.T, dtype), _half(b, dtype)
        y = emulated_cupy.linear(xh, wh, bh, True)
        assert y.dtype == np.float16 and y.shape == (20, 50)
        ref = np.maximum(xh.astype(np.float64) @ wh.astype(np.float64).T + bh, 0)
        _assert_close(y.astype(np.float32), ref, "kernels.linear float16", tol=HALF_TOL[dtype])


# -- 3. plans without any device -----------------------------------------------------

ALEXNET_CONVS = {
    # variant-layer: (c, h, o, k, stride, pad, groups)
    "paper-conv1": (3, 227, 96, 11, 4, 0, 1),
    "paper-conv2": (96, 27, 256, 5, 1, 2, 2),
    "paper-conv3": (256, 13, 384, 3, 1, 1, 1),
    "paper-conv4": (384, 13, 384, 3, 1, 1, 2),
    "paper-conv5": (384, 13, 256, 3, 1, 1, 2),
    "tv-conv1": (3, 224, 64, 11, 4, 2, 1),
    "tv-conv2": (64, 27, 192, 5, 1, 2, 1),
    "tv-conv3": (192, 13, 384, 3, 1, 1, 1),
    "tv-conv4": (384, 13, 256, 3, 1, 1, 1),
    "tv-conv5": (256, 13, 256, 3, 1, 1, 1),
}


@pytest.mark.parametrize("batch", [1, 128])
@pytest.mark.parametrize("layer", list(ALEXNET_CONVS))
def test_alexnet_layers_plan(layer, batch):
    c, h, o, k, s, p, g = ALEXNET_CONVS[layer]
    x = np.empty((batch, c, h, h), np.float32)
    w = np.empty((c // g, k, k, o), np.float32)
    b = np.empty((o,), np.float32)
    shape = kernels.conv2d_output_shape(x.shape, w.shape, (s, s), (p, p))
    y = np.empty(shape, np.float32)
    plan = kernels.plan_conv2d(x, w, b, y, (s, s), (p, p), g, True, sms=132)
    tile = next(t for t in kernels.CONV_TILES.values() if t.kernel == plan.kernel)
    assert plan.grid[2] == g and plan.grid[1] * tile.bm >= o // g and plan.grid[0] * tile.bn >= batch * shape[2] * shape[3]
    assert plan.block == (tile.threads, 1, 1)
    # the default algorithm, from the layer's shape alone: F(2x2, 3x3) for 3x3, F(2x2, 5x5) for 5x5 (stride 1;
    # F(4x4, 5x5) is opt-in: kernels.DEFAULT_WINOGRAD)
    algo = kernels.choose_conv_algo(w.shape, (s, s))
    assert algo == ("winograd" if k in (3, 5) and s == 1 else "gemm")
    assert kernels.conv2d_choice(x.shape, w.shape, (s, s), (p, p), g, 132)[0] == algo
    for wino in (name for name in kernels.WINOGRAD_ALGOS if kernels.winograd_applies(w.shape, (s, s), name)):
        wa = kernels.WINOGRAD_ALGOS[wino]
        u = np.empty(kernels.winograd_weight_shape(w.shape, wino), np.float32)
        assert u.shape[0] == wa.alpha(k) ** 2 == {(2, 3): 16, (2, 5): 36, (4, 5): 64}[(wa.m, k)]
        bufs = {n: np.empty(v, np.float32) for n, v in kernels.winograd_buffer_shapes(x.shape, w.shape, (p, p), wino).items()}
        th, tw, t, tp = kernels.winograd_tiles(x.shape, (p, p), k, wino)
        assert th * wa.m >= shape[2] > (th - 1) * wa.m and tw * wa.m >= shape[3] > (tw - 1) * wa.m
        assert t == batch * th * tw and tp % 4 == 0 and bufs["v_xct"].shape == (u.shape[0], c, tp)
        plans = kernels.plan_conv2d_winograd(x, u, b, y, bufs["v_xct"], bufs["m_xot"], (p, p), g, True, sms=132)
        assert [pl.kernel for pl in plans[::2]] == [wa.entry("input", k), wa.entry("output", k)]
        assert kernels.plan_winograd_weight(w, u, sms=132).kernel == wa.entry("weight", k)
        gemm = plans[1]
        tile = next(t for t in kernels.WINOGRAD_TILES.values() if t.kernel == gemm.kernel)
        assert gemm.grid[2] == wa.alpha(k) ** 2 * g <= 65535
        assert gemm.grid[1] * tile.bm >= o // g and gemm.grid[0] * tile.bn >= bufs["v_xct"].shape[2]


def test_conv2d_algo_errors_name_the_op_and_the_mismatch():
    """Argument validation is alexnet_aa.ops's; what is left here is the kernels' own ``algo`` option."""
    with pytest.raises(ValueError, match=r"\[conv2d\] algo='winograd' needs a 3x3 or 5x5 kernel and stride 1"):
        kernels.resolve_conv_algo((3, 3, 3, 4), (2, 2), "winograd")
    with pytest.raises(ValueError, match=r"\[conv2d\] algo='winograd' needs a 3x3 or 5x5 kernel and stride 1"):
        kernels.resolve_conv_algo((3, 11, 11, 4), (1, 1), "winograd")
    with pytest.raises(ValueError, match=r"\[conv2d\] algo='winograd_f4' needs a 5x5 kernel and stride 1, got kernel \(3, 3\)"):
        kernels.resolve_conv_algo((3, 3, 3, 4), (1, 1), "winograd_f4")
    with pytest.raises(ValueError, match=r"\[conv2d\] algo='winograd_f4' needs a 5x5 kernel and stride 1, .* stride \(2, 2\)"):
        kernels.resolve_conv_algo((3, 5, 5, 4), (2, 2), "winograd_f4")
    with pytest.raises(ValueError, match=r"\[conv2d\] algo must be one of"):
        kernels.resolve_conv_algo((3, 3, 3, 4), (1, 1), "fft")
    with pytest.raises(ValueError, match=r"\[conv2d\] Winograd weight has shape \(49, 2, 4\): expected 16 or 36 or 64 rows"):
        kernels.plan_winograd_weight(np.empty((2, 5, 5, 4), np.float32), np.empty((49, 2, 4), np.float32), sms=1)


# -- 4. the constructor, against a stand-in cupy (no GPU needed) ---------------------

def _backend_with_fake_cupy(monkeypatch, count, capability=(9, 0)):
    import types

    backend_mod = pytest.importorskip("alexnet_aa_cupy.backend", reason="alexnet_aa_cupy is not installed")
    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(
        getDeviceCount=lambda: count, getDevice=lambda: 0,
        getDeviceProperties=lambda device: {"major": capability[0], "minor": capability[1], "name": b"Fake GPU"}))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.delenv("CUPY_TF32", raising=False)
    return backend_mod.CupyBackend


def test_backend_rejects_a_missing_device(monkeypatch):
    from alexnet_aa.backend import BackendUnavailableError

    cls = _backend_with_fake_cupy(monkeypatch, 1)
    assert cls()._device == 0 and cls(device=0).dtype == "float32"
    with pytest.raises(BackendUnavailableError, match=r"^\[cupy\] device 3 does not exist: this machine has 1 CUDA device \(0\)$"):
        cls(device=3)
    with pytest.raises(BackendUnavailableError, match=r"device -1 does not exist"):
        cls(device=-1)


def test_backend_tf32_is_opt_in_by_name(monkeypatch):
    from alexnet_aa.backend import BackendError

    cls = _backend_with_fake_cupy(monkeypatch, 1)
    with pytest.raises(BackendError, match=r"tf32=True needs the environment variable CUPY_TF32=1"):
        cls(tf32=True)
    monkeypatch.setenv("CUPY_TF32", "1")
    with pytest.raises(BackendError, match=r"CUPY_TF32 is set: it makes cuBLAS use TF32 .* pass tf32=True"):
        cls()
    assert cls(tf32=True).dtype == "tf32" and cls.dtype == "float32"
    monkeypatch.setenv("CUPY_TF32", "0")
    assert cls().dtype == "float32"


def test_backend_without_cupy_names_the_install_hint(monkeypatch):
    from alexnet_aa.backend import INSTALL_HINTS, BackendUnavailableError

    cls = _backend_with_fake_cupy(monkeypatch, 1)
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(BackendUnavailableError, match=re.escape(INSTALL_HINTS["cupy"])):
        cls()


def test_backend_dtype_and_capture_options(monkeypatch):
    """Half precision by name: OIHW/OI weights, 'training' unsupported with the reason; float64 and unknown
    dtypes, TF32 outside float32 and capture with TF32 refused, each naming the fix."""
    from alexnet_aa.backend import BackendError, require_training

    cls = _backend_with_fake_cupy(monkeypatch, 1)
    half = cls(dtype="float16")
    assert (half.dtype, half.conv_weight_layout, half.linear_weight_layout) == ("float16", "OIHW", "OI")
    assert "training" in half.unsupported and "training" not in cls.unsupported and cls().linear_weight_layout == "IO"
    with pytest.raises(Exception, match=r"dtype='float16' cannot train: half-precision storage"):
        require_training(half, "gradients")
    with pytest.raises(BackendError, match=r"dtype='float64' is not supported: the CUDA kernels compute in float32"):
        cls(dtype="float64")
    with pytest.raises(ValueError, match=r"dtype: expected one of 'float32', 'float16', 'bfloat16', got 'int8'"):
        cls(dtype="int8")
    with pytest.raises(ValueError, match=r"tf32=True is a float32 mode"):
        cls(dtype="bfloat16", tf32=True)
    monkeypatch.setenv("CUPY_TF32", "1")
    with pytest.raises(BackendError, match=r"capture=True with tf32=True: .* pass capture=False"):
        cls(tf32=True, capture=True)
    assert cls(tf32=True).capture(lambda x: x, None) is None


def test_backend_half_needs_compute_capability_8(monkeypatch):
    """A GPU without mma.sync m16n8k16 (Turing, 7.5) runs float32 and refuses half dtypes up front."""
    from alexnet_aa.backend import BackendUnavailableError

    cls = _backend_with_fake_cupy(monkeypatch, 1, capability=(7, 5))
    assert cls().dtype == "float32"
    with pytest.raises(BackendUnavailableError, match=r"dtype='float16' needs tensor cores .* device 0 \(Fake GPU\) is 7\.5"):
        cls(dtype="float16")
