"""Launch wrappers for the CUDA kernels in the ``*.cu`` files beside this module.

One name at every hop: ``CupyBackend.lrn`` → :func:`lrn` → ``lrn.cu: lrn_forward``.

The ``.cu`` files are read once, concatenated into one source (after the
header they share, ``gemm_tile.cuh``, inlined once: :func:`source`) and compiled by
NVRTC into one :class:`cupy.RawModule` per device, on first use (CuPy keeps the
cubin on disk under ``CUPY_CACHE_DIR``, so later processes only load it). Every
entry point is listed in :data:`NAME_EXPRESSIONS`; ``tests/test_cuda_kernels.py``
compiles each file with ``nvcc`` and checks that every listed name exists.

Each op is split into a *plan* (``plan_<op>``: the launch geometry and the
exact kernel arguments, and the limits of the kernels' 32-bit offsets) and a
launch. The arguments were validated by :mod:`alexnet_aa.ops`; output shapes
come from the formulas of :mod:`alexnet_aa.architecture`.
Plans are pure Python on array shapes — they run without a GPU, which is how the
CPU emulation test (``backends/cupy/tests``) drives the very same argument lists
through the kernels compiled with g++.

This module imports numpy and :mod:`alexnet_aa.architecture` (the output-size
rules) only; cupy is imported on first launch.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alexnet_aa.architecture import conv_output_size, pool_output_size, transposed_conv_rows

HERE = Path(__file__).resolve().parent

#: The ``.cu`` files, in the order they are concatenated into the module.
SOURCES = ("conv2d.cu", "conv2d_mma.cu", "conv2d_winograd.cu", "conv2d_backward.cu", "max_pool2d.cu", "lrn.cu",
           "linear.cu")
#: The headers beside them that they ``#include "..."`` (a header only those before it); :func:`source`
#: inlines each once, first, in this order.
HEADERS = ("gemm_tile.cuh", "precision.cuh", "mma_tile.cuh")

#: Storage dtypes of the forward kernels, and the suffix of their entry points (float32: none).
DTYPES = {"float32": "", "float16": "_float16", "bfloat16": "_bfloat16"}

#: NVRTC options (CuPy adds ``-ftz=true`` and ``--device-as-default-execution-space``).
OPTIONS = ("-std=c++17",)


@dataclass(frozen=True)
class ConvTile:
    """A compile-time tile configuration of a GEMM kernel (one entry point each): ``gemm_tile.cuh``'s
    block of ``bm × bn`` results, accumulated over slices of ``bk`` of the reduction."""

    kernel: str
    bm: int  # the block's rows: output channels (conv2d, Winograd), k = in/groups·kh·kw (weight gradient)
    bn: int  # the block's columns: output pixels N·OH·OW (conv2d), tiles (Winograd), out/groups (weight gradient)
    threads: int
    bk: int  # the reduction slice per shared-memory stage (the template's BK)


#: Tile configurations, largest first; see :func:`choose_conv_tile`.
CONV_TILES = {
    "128x128": ConvTile("conv2d_forward_128x128", 128, 128, 256, 8),
    "64x128": ConvTile("conv2d_forward_64x128", 64, 128, 128, 8),
    "64x64": ConvTile("conv2d_forward_64x64", 64, 64, 256, 8),
}

#: Tile configurations of ``conv2d_winograd.cu``'s batched GEMM (same keys as :data:`CONV_TILES`).
WINOGRAD_TILES = {
    "128x128": ConvTile("conv2d_winograd_gemm_128x128", 128, 128, 256, 16),
    "64x128": ConvTile("conv2d_winograd_gemm_64x128", 64, 128, 128, 16),
    "64x64": ConvTile("conv2d_winograd_gemm_64x64", 64, 64, 256, 16),
}
#: The Winograd GEMM with scalar loads of U, for out/groups not a multiple of 4.
WINOGRAD_SCALAR_TILE = ConvTile("conv2d_winograd_gemm_64x64_scalar", 64, 64, 256, 16)

#: Tile configurations of ``conv2d_backward.cu``'s weight gradient (BM along k = in/groups·kh·kw, BN along out/groups).
WEIGHT_GRAD_TILES = {
    "128x128": ConvTile("conv2d_backward_weight_128x128", 128, 128, 256, 8),
    "64x64": ConvTile("conv2d_backward_weight_64x64", 64, 64, 256, 8),
}

#: Tile configurations of ``conv2d_mma.cu`` (half precision, tensor cores): ``bk`` is mma_tile.cuh's slice
#: (32); the kernel is named ``<kernel>_<dtype>``.
MMA_CONV_TILES = {
    "128x128": ConvTile("conv2d_mma_forward_128x128", 128, 128, 256, 32),
    "64x64": ConvTile("conv2d_mma_forward_64x64", 64, 64, 128, 32),
}

#: ``linear.cu``: the fixed chunks of the split reduction, the GEMV's threads per block and the rows of x
#: one GEMV block can take (an entry point ``linear_gemv_forward_<rows>`` each).
LINEAR_K_CHUNK = 512
LINEAR_GEMV_THREADS = 256
LINEAR_GEMV_ROWS = (1, 2, 4, 8)
#: Batches up to this run the float32 GEMV (one pass over the weight per 8 rows), larger ones the tiled GEMM.
LINEAR_GEMV_MAX_BATCH = 16
#: Tile configurations of ``linear.cu``'s float32 GEMM (bm along the outputs, bn along the rows of x).
LINEAR_TILES = {
    "128x128": ConvTile("linear_gemm_forward_128x128", 128, 128, 256, 8),
    "64x64": ConvTile("linear_gemm_forward_64x64", 64, 64, 256, 8),
}
#: ... and of its half-precision GEMM on tensor cores (``<kernel>_<dtype>``): 128x8 for batches up to 8.
LINEAR_MMA_TILES = {
    "128x8": ConvTile("linear_mma_forward_128x8", 128, 8, 128, 32),
    "128x128": ConvTile("linear_mma_forward_128x128", 128, 128, 256, 32),
}
#: The float32 linear algorithms :func:`linear` can run (``algo=``): the same sums, bit for bit.
LINEAR_ALGOS = ("gemv", "gemm")

#: The conv2d algorithms :func:`conv2d` can run (``algo=``); see :func:`choose_conv_algo`.
CONV_ALGOS = ("gemm", "winograd", "winograd_f4")


@dataclass(frozen=True)
class WinogradAlgo:
    """A Winograd algorithm of ``conv2d_winograd.cu``: F(m×m, R×R) for each kernel size R in ``kernels``
    (square kernels, stride 1): m×m output tiles from ALPHA×ALPHA input tiles, ALPHA = m + R − 1, and
    ALPHA² independent GEMMs per group."""

    m: int
    kernels: tuple[int, ...]

    def alpha(self, r: int) -> int:
        return self.m + r - 1

    def entry(self, step: str, r: int) -> str:
        """The transform's entry point (``step``: weight, input, output): F(2x2, R) is named by R alone."""
        return f"conv2d_winograd_{step}_{r}x{r}" if self.m == 2 else f"conv2d_winograd_{step}_{self.m}x{self.m}_{r}x{r}"


#: ``algo=`` name → Winograd algorithm: ``"winograd"`` F(2x2, 3x3) and F(2x2, 5x5), ``"winograd_f4"`` F(4x4, 5x5).
WINOGRAD_ALGOS = {"winograd": WinogradAlgo(2, (3, 5)), "winograd_f4": WinogradAlgo(4, (5,))}
#: Kernel sizes R some Winograd algorithm takes (``CupyBackend.prepare`` transforms these weights).
WINOGRAD_KERNELS = tuple(sorted({r for a in WINOGRAD_ALGOS.values() for r in a.kernels}))  # (3, 5)
#: The transform a U (ALPHA², in/groups, out) holds, by its ALPHA²: ``(algo, R)`` (the ALPHAs differ).
_WINOGRAD_BY_ROWS = {a.alpha(r) ** 2: (name, r) for name, a in WINOGRAD_ALGOS.items() for r in a.kernels}
assert len(_WINOGRAD_BY_ROWS) == sum(len(a.kernels) for a in WINOGRAD_ALGOS.values())

#: Every entry point of the module (extern "C", so each name is its own lowered name).
NAME_EXPRESSIONS = (
    *(t.kernel for t in CONV_TILES.values()),
    *(a.entry(step, r) for a in WINOGRAD_ALGOS.values() for r in a.kernels for step in ("weight", "input", "output")),
    *(t.kernel for t in WINOGRAD_TILES.values()),
    WINOGRAD_SCALAR_TILE.kernel,
    *(t.kernel for t in WEIGHT_GRAD_TILES.values()),
    "conv2d_backward_weight_reduce",
    *(t.kernel + DTYPES[d] for t in MMA_CONV_TILES.values() for d in ("float16", "bfloat16")),
    *("max_pool2d_forward" + suffix for suffix in DTYPES.values()),
    "max_pool2d_backward",
    *("lrn_forward" + suffix for suffix in DTYPES.values()),
    "lrn_backward",
    *(f"linear_gemv_forward_{rows}" for rows in LINEAR_GEMV_ROWS),
    *(t.kernel for t in LINEAR_TILES.values()),
    *(t.kernel + DTYPES[d] for t in LINEAR_MMA_TILES.values() for d in ("float16", "bfloat16")),
    *("linear_reduce_forward" + suffix for suffix in DTYPES.values()),
    "linear_bias_act_forward",
)

_ELEMENTWISE_THREADS = 256
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class Launch:
    """One kernel launch: entry point, grid, block and the argument tuple."""

    kernel: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    args: tuple[Any, ...]


# -- the module ---------------------------------------------------------------


_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"]*)"[ \t]*$', re.MULTILINE)


def _inline_includes(name: str, text: str) -> str:
    """``text`` with its ``#include "<header>"`` lines commented out (the headers are inlined by :func:`source`)."""
    def repl(m: re.Match) -> str:
        if m.group(1) not in HEADERS:
            raise ValueError(f"{name} includes {m.group(1)!r}, which is not in kernels.HEADERS")
        return f"// (inlined above) {m.group(0).strip()}"

    return _INCLUDE.sub(repl, text)


def source() -> str:
    """The concatenated CUDA source handed to NVRTC: :data:`HEADERS`, then :data:`SOURCES`.

    Self-contained (no ``-I``): each header is inlined once at the top and the
    ``#include`` lines of the headers and ``.cu`` files become comments, so the text CuPy
    hashes for its disk cache covers the headers too.
    """
    parts = [f"// ---- {name} ----\n" + _inline_includes(name, (HERE / name).read_text()) for name in HEADERS]
    parts += [f"// ---- {name} ----\n" + _inline_includes(name, (HERE / name).read_text()) for name in SOURCES]
    return "\n".join(parts)


_lock = threading.Lock()
_modules: dict[int, Any] = {}  # device id -> RawModule (functions loaded)
_device_facts: dict[int, dict[str, int]] = {}


def module(device_id: int | None = None):
    """The compiled :class:`cupy.RawModule` for ``device_id`` (default: the current device).

    Compiled (or loaded from CuPy's disk cache) once per device and process.
    """
    import cupy

    if device_id is None:
        device_id = cupy.cuda.runtime.getDevice()
    mod = _modules.get(device_id)
    if mod is None:
        with _lock:
            mod = _modules.get(device_id)
            if mod is None:
                with cupy.cuda.Device(device_id):
                    mod = cupy.RawModule(code=source(), options=OPTIONS, name_expressions=list(NAME_EXPRESSIONS))
                    for name in NAME_EXPRESSIONS:  # forces the compile and loads every function
                        mod.get_function(name)
                _modules[device_id] = mod
    return mod


def compile_all(device_id: int | None = None) -> None:
    """Compile and load every kernel now (what ``CupyBackend.warmup`` times)."""
    module(device_id)


def device_facts(device_id: int | None = None) -> dict[str, int]:
    """``{"sms": multiprocessor count}`` of the device, cached."""
    import cupy

    if device_id is None:
        device_id = cupy.cuda.runtime.getDevice()
    facts = _device_facts.get(device_id)
    if facts is None:
        attrs = cupy.cuda.Device(device_id).attributes
        facts = {"sms": int(attrs["MultiProcessorCount"])}
        _device_facts[device_id] = facts
    return facts


def _run(plan: Launch) -> None:
    fn = module().get_function(plan.kernel)
    fn(plan.grid, plan.block, plan.args)


def _elementwise_grid(total: int, sms: int) -> tuple[int, int, int]:
    blocks = max(1, min(-(-total // _ELEMENTWISE_THREADS), 32 * sms))
    return (blocks, 1, 1)


def aligned16(*arrays) -> bool:
    """Whether every array starts on a 16-byte boundary (the 16-byte vector loads' requirement): a CuPy
    array's device pointer, or a NumPy array's (the CPU emulation)."""
    return all((a.ctypes.data if isinstance(a, np.ndarray) else a.data.ptr) % 16 == 0 for a in arrays)


def storage_dtype(a) -> str:
    """The key of :data:`DTYPES` for an array's dtype (NumPy's or CuPy's float32 and float16, and
    ml_dtypes' bfloat16, whose name is ``"bfloat16"``)."""
    name = getattr(a.dtype, "name", str(a.dtype))
    if name not in DTYPES:
        raise TypeError(f"the CUDA kernels take {', '.join(DTYPES)} arrays, got {name}")
    return name


# -- conv2d ---------------------------------------------------------------------


def choose_conv_tile(m: int, n: int, groups: int, sms: int, *, tiles: dict[str, ConvTile] | None = None) -> ConvTile:
    """The tile for a GEMM of ``groups`` × (M=m) × (N=n).

    Among the tiles that give at least two waves of blocks on ``sms``
    multiprocessors, take the one that wastes the least of M (e.g. 64-row
    tiles for M = 192, 128-row tiles for M = 384), the larger tile on a tie;
    when none fills the GPU (batch 1, small maps), the one with the most blocks,
    the smaller tile on a tie (less work per block on a latency-bound launch).
    ``tiles``: :data:`CONV_TILES` (default) or :data:`WINOGRAD_TILES`. (How
    it fared against the measured best tile: ``docs/backends/cupy.md``.)
    """
    best, best_key = None, None
    for tile in (CONV_TILES if tiles is None else tiles).values():
        m_tiles = -(-m // tile.bm)
        blocks = m_tiles * -(-n // tile.bn) * groups
        m_use = m / (m_tiles * tile.bm)
        full = blocks >= 2 * sms
        key = (full, m_use, tile.bm * tile.bn) if full else (full, blocks, -tile.bm * tile.bn)
        if best_key is None or key > best_key:
            best, best_key = tile, key
    assert best is not None
    return best


def plan_conv2d(x, w_ihwo, b_o, y, stride, padding, groups: int, relu: bool, *, sms: int, tile: str | None = None) -> Launch:
    """Validate and plan ``conv2d_forward_<tile>`` on contiguous float32 arrays.

    ``x`` is NCHW, ``w_ihwo`` is (in/groups, kh, kw, out), ``b_o`` is (out,),
    ``y`` is the NCHW output (:func:`conv2d_output_shape`).
    """
    n, c, h, w_ = x.shape
    cg, kh, kw, o = w_ihwo.shape
    sh, sw = stride
    ph, pw = padding
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w_, kw, sw, pw)
    assert tuple(y.shape) == (n, o, oh, ow), (y.shape, (n, o, oh, ow))
    cfg = CONV_TILES[tile] if tile is not None else choose_conv_tile(o // groups, n * oh * ow, groups, sms)
    p = oh * ow
    images_per_block = min(n, cfg.bn // p + 2)
    if images_per_block * c * h * w_ > _INT32_MAX or images_per_block * o * p > _INT32_MAX:
        raise ValueError(
            f"[conv2d] maps too large for 32-bit offsets: {images_per_block} images × "
            f"max(C*H*W={c * h * w_}, O*OH*OW={o * p}) must be < 2^31"
        )
    if max(h + ph, w_ + pw) >= 2**15:
        raise ValueError(f"[conv2d] height/width + padding must be < 32768, got {(h, w_)} + {(ph, pw)}")
    if cg * kh * kw * o > _INT32_MAX:
        raise ValueError(f"[conv2d] weight too large for 32-bit offsets: {cg}*{kh}*{kw}*{o} elements")
    grid = (-(-(n * p) // cfg.bn), -(-(o // groups) // cfg.bm), groups)
    i32 = np.int32
    args = (x, w_ihwo, b_o, y, *(i32(v) for v in (n, c, h, w_, o, oh, ow, kh, kw, sh, sw, ph, pw, groups, int(bool(relu)))))
    return Launch(cfg.kernel, grid, (cfg.threads, 1, 1), args)


def conv2d_output_shape(x_shape, w_shape, stride, padding) -> tuple[int, int, int, int]:
    """The NCHW output shape of an NCHW ``x_shape`` convolved with an IHWO ``w_shape``."""
    n, _, h, w_ = x_shape
    _, kh, kw, o = w_shape
    return (n, o, conv_output_size(h, kh, stride[0], padding[0]), conv_output_size(w_, kw, stride[1], padding[1]))


@dataclass(frozen=True, eq=False)
class ConvWeight:
    """A conv weight as ``CupyBackend.prepare`` returns it for 3x3 and 5x5 kernels.

    ``ihwo``: (in/groups, kh, kw, out), the implicit GEMM's operand (every
    stride); ``winograd``: U = G g Gᵀ, (ALPHA², in/groups, out), for the Winograd
    algorithm :func:`choose_conv_algo` runs this kernel with at stride 1
    (:func:`default_winograd_algo`: F(2x2, 3x3) for 3x3, F(4x4, 5x5) for 5x5), or None.
    Its ALPHA² says which transform it holds (:attr:`winograd_algo`); :func:`conv2d`
    transforms the weight on the fly for another algorithm (``algo="winograd"`` on a
    5x5 layer). ``shape`` and ``dtype`` are those of ``ihwo``.
    """

    ihwo: Any
    winograd: Any = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.ihwo.shape)

    @property
    def dtype(self) -> Any:
        return self.ihwo.dtype

    @property
    def winograd_algo(self) -> str | None:
        """The ``algo=`` name whose U :attr:`winograd` holds (None when it holds none)."""
        return None if self.winograd is None else _winograd_kind(self.winograd.shape)[0]


def winograd_kernel_applies(w_shape, algo: str | None = None) -> bool:
    """True for the IHWO weight shapes ``conv2d_winograd.cu`` transforms: square kernels of one of
    ``algo``'s sizes (:data:`WINOGRAD_ALGOS`; None: of any Winograd algorithm, 3x3 or 5x5)."""
    kh, kw = w_shape[1:3]
    return kh == kw and kh in (WINOGRAD_KERNELS if algo is None else WINOGRAD_ALGOS[algo].kernels)


def winograd_applies(w_shape, stride, algo: str | None = None) -> bool:
    """True where ``conv2d_winograd.cu`` computes the op: ``algo``'s kernel sizes (None: 3x3 or 5x5) at
    stride 1 (any padding, groups)."""
    return winograd_kernel_applies(w_shape, algo) and tuple(stride) == (1, 1)


#: The Winograd algorithm :func:`choose_conv_algo` runs for each kernel size at stride 1. 5x5 stays on
#: F(2x2, 5x5) until a GPU measurement shows F(4x4, 5x5) (``algo="winograd_f4"``) pays: F(4x4)'s NaN
#: reaches outputs outside the input's window (a conformance exception to ship with it), F(2x2)'s does not.
DEFAULT_WINOGRAD = {3: "winograd", 5: "winograd"}


def default_winograd_algo(w_shape) -> str:
    """The Winograd algorithm :func:`choose_conv_algo` runs a 3x3 or 5x5 kernel with at stride 1
    (:data:`DEFAULT_WINOGRAD`), whose U ``CupyBackend.prepare`` stores."""
    kh, kw = w_shape[1:3]
    if kh != kw or kh not in DEFAULT_WINOGRAD:
        raise ValueError(f"[conv2d] no Winograd algorithm takes a {(kh, kw)} kernel (3x3 and 5x5 only)")
    return DEFAULT_WINOGRAD[kh]


def choose_conv_algo(w_shape, stride) -> str:
    """:func:`default_winograd_algo` for 3x3 and 5x5 kernels at stride 1 (F(2x2, 3x3), F(2x2, 5x5)), else
    ``"gemm"``.

    Depends on the layer's shape only, never on the batch size: the
    algorithms round differently, and an image's result must not depend on the
    batch it comes in (DESIGN §7). Within an algorithm the tile may depend on
    the batch: every tile sums over k in the same order. 5x5: F(4x4, 5x5)
    (``algo="winograd_f4"``) does 6.25x fewer multiplications than the implicit GEMM
    (64 per 16 outputs per channel, against 25 per output) and 2.25x fewer than
    F(2x2, 5x5) (36 per 4), and its transformed planes hold 4 values per output and
    channel against F(2x2, 5x5)'s 9; its float32 error is about 1.6x F(2x2, 5x5)'s
    (both within the op tolerance: ``tests/test_cuda_kernels.py``), but a NaN input
    reaches outputs beyond its window (``conv2d_winograd.cu``'s "non-finite"), so it
    is opt-in (:data:`DEFAULT_WINOGRAD`). ``benchmarks/bench_cupy.py``'s sweep times
    every algorithm on every layer.
    """
    return default_winograd_algo(w_shape) if winograd_applies(w_shape, stride) else "gemm"


def resolve_conv_algo(w_shape, stride, algo: str | None) -> str:
    """``algo`` checked against the layer (None: :func:`choose_conv_algo`)."""
    if algo is None:
        return choose_conv_algo(w_shape, stride)
    if algo not in CONV_ALGOS:
        raise ValueError(f"[conv2d] algo must be one of {CONV_ALGOS} or None, got {algo!r}")
    if algo in WINOGRAD_ALGOS and not winograd_applies(w_shape, stride, algo):
        sizes = " or ".join(f"{r}x{r}" for r in WINOGRAD_ALGOS[algo].kernels)
        raise ValueError(
            f"[conv2d] algo={algo!r} needs a {sizes} kernel and stride 1, got kernel {tuple(w_shape[1:3])}, "
            f"stride {tuple(stride)}"
        )
    return algo


def winograd_weight_shape(w_shape, algo: str) -> tuple[int, int, int]:
    """U's shape (ALPHA², in/groups, out) for an IHWO weight shape under the Winograd ``algo``
    (ALPHA = m + kh − 1: 4 or 6 for ``"winograd"``, 8 for ``"winograd_f4"``)."""
    cg, kh, kw, o = w_shape
    if algo not in WINOGRAD_ALGOS or not winograd_kernel_applies(w_shape, algo):
        raise ValueError(f"[conv2d] no {algo!r} Winograd weight transform for a {(kh, kw)} kernel")
    return (WINOGRAD_ALGOS[algo].alpha(kh) ** 2, cg, o)


def _winograd_kind(u_shape) -> tuple[str, int]:
    """``(algo, R)`` of a transformed weight U (ALPHA², in/groups, out), from its ALPHA²."""
    kind = _WINOGRAD_BY_ROWS.get(u_shape[0])
    if kind is None:
        raise ValueError(f"[conv2d] Winograd weight has shape {tuple(u_shape)}: expected "
                         f"{' or '.join(map(str, _WINOGRAD_BY_ROWS))} rows (3x3, 5x5, 4x4 tiles of 5x5)")
    return kind


def winograd_tiles(x_shape, padding, r: int, algo: str) -> tuple[int, int, int, int]:
    """(TH, TW, T, Tp): ``algo``'s m×m output tiles per column and row (m = 2 or 4), tiles in the batch,
    T rounded up to a multiple of 4; ``r`` is the kernel size."""
    n, _, h, w = x_shape
    m = WINOGRAD_ALGOS[algo].m
    oh, ow = conv_output_size(h, r, 1, padding[0]), conv_output_size(w, r, 1, padding[1])
    th, tw = -(-oh // m), -(-ow // m)
    t = n * th * tw
    return th, tw, t, -(-t // 4) * 4


def winograd_buffer_shapes(x_shape, w_shape, padding, algo: str) -> dict[str, tuple[int, int, int]]:
    """Shapes of ``algo``'s per-call buffers: V ``v_xct`` (ALPHA², in, Tp) and M ``m_xot`` (ALPHA², out, Tp)."""
    xi = winograd_weight_shape(w_shape, algo)[0]
    *_, tp = winograd_tiles(x_shape, padding, w_shape[1], algo)
    return {"v_xct": (xi, x_shape[1], tp), "m_xot": (xi, w_shape[3], tp)}


def plan_winograd_weight(w_ihwo, u_xco, *, sms: int) -> Launch:
    """Plan the weight transform ``conv2d_winograd_weight_RxR`` (F(2x2, R)) or ``conv2d_winograd_weight_4x4_5x5``,
    as ``u_xco``'s ALPHA² says: IHWO ``w_ihwo`` (Cg, R, R, out) → ``u_xco`` (ALPHA², Cg, out)."""
    cg, r, _, o = w_ihwo.shape
    algo, r_u = _winograd_kind(u_xco.shape)
    assert r_u == r and tuple(u_xco.shape) == winograd_weight_shape(w_ihwo.shape, algo), (u_xco.shape, w_ihwo.shape)
    args = (w_ihwo, u_xco, np.int32(cg), np.int32(o))
    return Launch(WINOGRAD_ALGOS[algo].entry("weight", r), _elementwise_grid(cg * o, sms), (_ELEMENTWISE_THREADS, 1, 1),
                  args)


def choose_winograd_tile(m: int, tp: int, gemms: int, sms: int) -> ConvTile:
    """The batched-GEMM tile: as :func:`choose_conv_tile` over ``gemms`` = ALPHA²·groups GEMMs; scalar loads if ``m % 4``."""
    if m % 4:
        return WINOGRAD_SCALAR_TILE
    return choose_conv_tile(m, tp, gemms, sms, tiles=WINOGRAD_TILES)


def plan_conv2d_winograd(x, u_xco, b_o, y, v_xct, m_xot, padding, groups: int, relu: bool, *, sms: int,
                         tile: str | None = None) -> list[Launch]:
    """Plan the three launches of the Winograd path (input transform, batched GEMM, output transform).

    ``x`` NCHW, ``u_xco`` (ALPHA², in/groups, out) (its ALPHA picks the algorithm:
    4 F(2x2, 3x3), 6 F(2x2, 5x5), 8 F(4x4, 5x5)), ``b_o`` (out,), ``y`` the NCHW
    output; ``v_xct`` and ``m_xot`` are scratch buffers of the shapes
    :func:`winograd_buffer_shapes` gives. All contiguous float32.
    """
    n, c, h, w_ = x.shape
    xi, cg, o = u_xco.shape
    algo, r = _winograd_kind(u_xco.shape)
    wa = WINOGRAD_ALGOS[algo]
    ph, pw = padding
    oh, ow = conv_output_size(h, r, 1, ph), conv_output_size(w_, r, 1, pw)
    assert tuple(y.shape) == (n, o, oh, ow), (y.shape, (n, o, oh, ow))
    th, tw, t, tp = winograd_tiles(x.shape, padding, r, algo)
    assert tuple(v_xct.shape) == (xi, c, tp) and tuple(m_xot.shape) == (xi, o, tp), (v_xct.shape, m_xot.shape)
    m = o // groups
    if max(cg * o, cg * tp, m * tp, h * w_, oh * ow) > _INT32_MAX:
        raise ValueError(
            f"[conv2d] Winograd buffers too large for 32-bit offsets: in/groups={cg}, out={o}, tiles={tp}, map={h}x{w_}"
        )
    if xi * groups > 65535:
        raise ValueError(f"[conv2d] Winograd F({wa.m}x{wa.m}, {r}x{r}) takes at most {65535 // xi} groups "
                         f"(one grid z per GEMM), got {groups}")
    if tile is None:
        cfg = choose_winograd_tile(m, tp, xi * groups, sms)
    elif m % 4:
        raise ValueError(f"[conv2d] out/groups={m} is not a multiple of 4: the Winograd GEMM takes no tile= then")
    else:
        cfg = WINOGRAD_TILES[tile]
    i32, i64 = np.int32, np.int64
    block = (_ELEMENTWISE_THREADS, 1, 1)
    return [
        Launch(wa.entry("input", r), _elementwise_grid(c * tp, sms), block,
               (x, v_xct, *(i32(v) for v in (c, h, w_, th, tw, ph, pw)), i64(t), i64(tp))),
        Launch(cfg.kernel, (-(-tp // cfg.bn), -(-m // cfg.bm), xi * groups), (cfg.threads, 1, 1),
               (u_xco, v_xct, m_xot, i32(cg), i32(o), i32(groups), i32(tp))),
        Launch(wa.entry("output", r), _elementwise_grid(o * t, sms), block,
               (m_xot, b_o, y, *(i32(v) for v in (o, oh, ow, th, tw)), i64(t), i64(tp), i32(int(bool(relu))))),
    ]


def choose_mma_conv_tile(m: int, n: int, groups: int, sms: int) -> ConvTile:
    """The half-precision conv tile: as :func:`choose_conv_tile` over :data:`MMA_CONV_TILES`."""
    return choose_conv_tile(m, n, groups, sms, tiles=MMA_CONV_TILES)


def plan_conv2d_mma(x, w_oihw, b_o, y, stride, padding, groups: int, relu: bool, *, sms: int,
                    tile: str | None = None) -> Launch:
    """Plan ``conv2d_mma_forward_<tile>_<dtype>`` (``conv2d_mma.cu``) on contiguous half-precision arrays:
    ``x`` NCHW, ``w_oihw`` the canonical (out, in/groups, kh, kw), ``b_o`` (out,), ``y`` the NCHW output."""
    dtype = storage_dtype(x)
    if dtype == "float32":
        raise TypeError("[conv2d] the tensor-core kernels take float16 or bfloat16 arrays, got float32")
    n, c, h, w_ = x.shape
    o, cg, kh, kw = w_oihw.shape
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w_, kw, sw, pw)
    assert tuple(y.shape) == (n, o, oh, ow), (y.shape, (n, o, oh, ow))
    cfg = MMA_CONV_TILES[tile] if tile is not None else choose_mma_conv_tile(o // groups, n * oh * ow, groups, sms)
    if max(c * h * w_, cg * kh * kw * o) > _INT32_MAX:
        raise ValueError(f"[conv2d] too large for 32-bit offsets: C*H*W={c * h * w_}, weight {cg * kh * kw * o} elements")
    if max(h + ph, w_ + pw) >= 2**15:
        raise ValueError(f"[conv2d] height/width + padding must be < 32768, got {(h, w_)} + {(ph, pw)}")
    grid = (-(-(n * oh * ow) // cfg.bn), -(-(o // groups) // cfg.bm), groups)
    if grid[2] > 65535:
        raise ValueError(f"[conv2d] at most 65535 groups, got {groups}")
    i32 = np.int32
    vec_a = (cg * kh * kw) % 8 == 0 and aligned16(w_oihw)  # A read as 16-byte vectors
    args = (x, w_oihw, b_o, y, *(i32(v) for v in (n, c, h, w_, o, oh, ow, kh, kw, sh, sw, ph, pw, groups, int(bool(relu)),
                                                  int(vec_a))))
    return Launch(cfg.kernel + DTYPES[dtype], grid, (cfg.threads, 1, 1), args)


def conv2d(x, w, b_o, stride, padding, groups: int, relu: bool, *, algo: str | None = None, tile: str | None = None):
    """Convolution on contiguous float32 cupy arrays; returns NCHW.

    ``w`` is a :class:`ConvWeight` from ``CupyBackend.prepare`` or a plain IHWO
    array. ``algo`` (default :func:`choose_conv_algo`): ``"gemm"`` runs
    ``conv2d.cu: conv2d_forward_<tile>``; ``"winograd"`` (F(2x2, 3x3) or F(2x2, 5x5))
    and ``"winograd_f4"`` (F(4x4, 5x5)), stride 1 only, run ``conv2d_winograd.cu``
    (weight transform, unless ``w`` carries this algorithm's U; input transform;
    batched GEMM ``conv2d_winograd_gemm_<tile>``; output transform). ``tile``
    (default :func:`choose_conv_tile`) names a key of :data:`CONV_TILES` /
    :data:`WINOGRAD_TILES`.
    """
    import cupy

    if storage_dtype(x) != "float32":
        return conv2d_mma(x, w, b_o, stride, padding, groups, relu, tile=tile)
    w_ihwo = w.ihwo if isinstance(w, ConvWeight) else w
    shape = conv2d_output_shape(x.shape, w_ihwo.shape, stride, padding)
    algo = resolve_conv_algo(w_ihwo.shape, stride, algo)
    y = cupy.empty(shape, dtype=cupy.float32)
    if y.size == 0:
        return y
    sms = device_facts()["sms"]
    if algo == "gemm":
        _run(plan_conv2d(x, w_ihwo, b_o, y, stride, padding, groups, relu, sms=sms, tile=tile))
        return y
    # U as prepared, or transformed now: no U carried (a plain array), or one for the other Winograd algorithm
    u_xco = w.winograd if isinstance(w, ConvWeight) and w.winograd_algo == algo else winograd_weight(w_ihwo, algo)
    if tuple(u_xco.shape) != winograd_weight_shape(w_ihwo.shape, algo):
        raise ValueError(f"[conv2d] Winograd weight has shape {tuple(u_xco.shape)}, expected "
                         f"{winograd_weight_shape(w_ihwo.shape, algo)}")
    bufs = winograd_buffer_shapes(x.shape, w_ihwo.shape, padding, algo)
    v_xct = cupy.empty(bufs["v_xct"], dtype=cupy.float32)
    m_xot = cupy.empty(bufs["m_xot"], dtype=cupy.float32)
    for plan in plan_conv2d_winograd(x, u_xco, b_o, y, v_xct, m_xot, padding, groups, relu, sms=sms, tile=tile):
        _run(plan)
    return y


def conv2d_mma(x, w_oihw, b_o, stride, padding, groups: int, relu: bool, *, tile: str | None = None):
    """``conv2d_mma.cu`` on contiguous float16 or bfloat16 cupy arrays (``w_oihw`` canonical OIHW); returns NCHW
    in the same dtype. ``tile``: a key of :data:`MMA_CONV_TILES` (default :func:`choose_mma_conv_tile`)."""
    import cupy

    n, _, h, w_ = x.shape
    o, _, kh, kw = w_oihw.shape
    shape = (n, o, conv_output_size(h, kh, stride[0], padding[0]), conv_output_size(w_, kw, stride[1], padding[1]))
    y = cupy.empty(shape, dtype=x.dtype)
    if y.size:
        _run(plan_conv2d_mma(x, w_oihw, b_o, y, stride, padding, groups, relu, sms=device_facts()["sms"], tile=tile))
    return y


def conv2d_choice(x_shape, w_shape, stride, padding, groups: int, sms: int) -> tuple[str, str]:
    """``(algo, tile key)`` that :func:`conv2d` runs by default for these shapes (what the benchmark stars)."""
    algo = choose_conv_algo(w_shape, stride)
    n, _, h, w_ = x_shape
    _, kh, kw, o = w_shape
    if algo in WINOGRAD_ALGOS:
        *_, tp = winograd_tiles(x_shape, padding, kh, algo)
        cfg = choose_winograd_tile(o // groups, tp, WINOGRAD_ALGOS[algo].alpha(kh) ** 2 * groups, sms)
        tiles = WINOGRAD_TILES
    else:
        oh, ow = conv_output_size(h, kh, stride[0], padding[0]), conv_output_size(w_, kw, stride[1], padding[1])
        cfg = choose_conv_tile(o // groups, n * oh * ow, groups, sms)
        tiles = CONV_TILES
    return algo, next((key for key, t in tiles.items() if t == cfg), cfg.kernel)


def winograd_weight(w_ihwo, algo: str | None = None):
    """``conv2d_winograd.cu``'s weight transform for ``algo`` (None: :func:`default_winograd_algo`, the one
    ``CupyBackend.prepare`` stores): IHWO (Cg, R, R, out) → U (ALPHA², Cg, out), a new cupy array."""
    import cupy

    algo = default_winograd_algo(w_ihwo.shape) if algo is None else algo
    u_xco = cupy.empty(winograd_weight_shape(w_ihwo.shape, algo), dtype=cupy.float32)
    if u_xco.size:
        _run(plan_winograd_weight(w_ihwo, u_xco, sms=device_facts()["sms"]))
    return u_xco


# -- conv2d backward --------------------------------------------------------------


def choose_weight_grad_tile(k: int, m: int) -> ConvTile:
    """The weight-gradient tile: 128x128 where both sides fill it (conv2–conv5), else 64x64."""
    return WEIGHT_GRAD_TILES["128x128" if min(k, m) >= 128 else "64x64"]


def weight_grad_split(k: int, m: int, groups: int, reduction: int, sms: int,
                      tile: str | None = None) -> tuple[ConvTile, int]:
    """The weight gradient's tile (``tile``, a key of :data:`WEIGHT_GRAD_TILES`, or
    :func:`choose_weight_grad_tile`) and how many fixed ranges its reduction (``N·OH·OW``) is cut into:
    enough blocks for two waves on ``sms`` multiprocessors, each range at least 64 slices long. The
    split depends on the shapes and the SM count only, so the same shapes give the same bits on every
    run on one GPU model (another SM count may split, and so round, differently)."""
    cfg = WEIGHT_GRAD_TILES[tile] if tile is not None else choose_weight_grad_tile(k, m)
    blocks = -(-m // cfg.bn) * -(-k // cfg.bm) * groups
    return cfg, max(1, min(-(-2 * sms // blocks), reduction // (64 * cfg.bk)))


def plan_conv2d_backward_weight(x, g, partial_sko, w_shape, stride, padding, groups: int, *, tile: ConvTile) -> Launch:
    """Plan ``tile``'s kernel (``conv2d_backward_weight_<tile>``): NCHW ``x`` and ``g`` (dy masked by
    the ReLU) → the partial sums ``partial_sko`` (splits, in/groups·kh·kw, out) for an IHWO weight of
    ``w_shape``, one range of the reduction per split, summed by :func:`plan_weight_grad_reduce`."""
    n, c, h, w_ = x.shape
    _, o, oh, ow = g.shape
    splits, k, _ = partial_sko.shape
    cg, kh, kw, _ = w_shape
    assert partial_sko.shape == (splits, cg * kh * kw, o), (partial_sko.shape, w_shape)
    chunk = -(-(n * oh * ow) // splits)
    if max(c * h * w_, o * oh * ow, chunk) > _INT32_MAX:
        raise ValueError(f"[conv2d_backward] too large for 32-bit offsets: C*H*W={c * h * w_}, O*OH*OW={o * oh * ow}, "
                         f"reduction range {chunk} (each must be < 2^31)")
    grid = (-(-(o // groups) // tile.bn), -(-k // tile.bm), groups * splits)
    if grid[2] > 65535:
        raise ValueError(f"[conv2d_backward] groups x splits = {grid[2]} exceeds the grid's 65535 z-blocks")
    i32 = np.int32
    args = (x, g, partial_sko, *(i32(v) for v in (n, c, h, w_, o, oh, ow, kh, kw, *stride, *padding, groups)), np.int64(chunk))
    return Launch(tile.kernel, grid, (tile.threads, 1, 1), args)


def plan_weight_grad_reduce(partial_sko, dw_ko, *, sms: int) -> Launch:
    """Plan ``conv2d_backward_weight_reduce``: the partials summed, in split order, into ``dw_ko``."""
    splits, k, o = partial_sko.shape
    assert dw_ko.size == k * o, (dw_ko.shape, partial_sko.shape)
    return Launch("conv2d_backward_weight_reduce", _elementwise_grid(k * o, sms), (_ELEMENTWISE_THREADS, 1, 1),
                  (partial_sko, dw_ko, np.int64(k * o), np.int32(splits)))


def transposed_conv_weight(w_ihwo, groups: int, xp):
    """IHWO ``(C/g, kh, kw, O)`` → the transposed convolution's IHWO weights ``(O/g, kh, kw, C)``: the
    kernel flipped in both axes and, group by group, input and output channels swapped (``xp``: cupy,
    or NumPy for the CPU emulation)."""
    cg, kh, kw, o = w_ihwo.shape
    grouped = xp.reshape(w_ihwo[:, ::-1, ::-1, :], (cg, kh, kw, groups, o // groups))
    return xp.ascontiguousarray(xp.reshape(xp.transpose(grouped, (4, 1, 2, 3, 0)), (o // groups, kh, kw, groups * cg)))


def dilated_output_grad(g, x_shape, w_shape, stride, padding, xp):
    """The input buffer of the transposed convolution: NCHW ``g`` (dy masked) dilated by the stride, in
    ``(H + kh − 1) × (W + kw − 1)`` zeros (:func:`alexnet_aa.architecture.transposed_conv_rows`)."""
    n, _, h, w_ = x_shape
    _, kh, kw, o = w_shape
    (i0, i1, r0), (j0, j1, c0) = (transposed_conv_rows(h, g.shape[2], kh, stride[0], padding[0]),
                                  transposed_conv_rows(w_, g.shape[3], kw, stride[1], padding[1]))
    buf = xp.zeros((n, o, h + kh - 1, w_ + kw - 1), dtype=xp.float32)
    buf[:, :, r0 : r0 + stride[0] * (i1 - i0) : stride[0], c0 : c0 + stride[1] * (j1 - j0) : stride[1]] = g[:, :, i0:i1, j0:j1]
    return buf


def conv2d_backward(x, w, y, dy, stride, padding, groups: int, relu: bool, need_dx: bool):
    """Gradients of :func:`conv2d` on contiguous float32 cupy arrays: ``(dx or None, dw_ihwo, db)``.

    ``g = dy`` masked by ``y > 0`` (with ``relu``); ``db = Σ g`` (CuPy's reduction); ``dw`` by
    ``conv2d_backward.cu`` (split-K partials, then their fixed-order sum); ``dx`` = :func:`conv2d`
    of :func:`dilated_output_grad` with :func:`transposed_conv_weight` — the forward's implicit-GEMM
    (or Winograd) kernels, stride 1, no padding.
    """
    import cupy

    w_ihwo = w.ihwo if isinstance(w, ConvWeight) else w
    g = cupy.ascontiguousarray(cupy.where(y > 0, dy, cupy.float32(0)) if relu else dy)
    n, c, h, w_ = x.shape
    cg, kh, kw, o = w_ihwo.shape
    db = cupy.sum(g, axis=(0, 2, 3), dtype=cupy.float32)
    sms = device_facts()["sms"]
    k = cg * kh * kw
    tile, splits = weight_grad_split(k, o // groups, groups, n * g.shape[2] * g.shape[3], sms)
    partial = cupy.empty((splits, k, o), dtype=cupy.float32)
    dw = cupy.empty(w_ihwo.shape, dtype=cupy.float32)
    _run(plan_conv2d_backward_weight(x, g, partial, w_ihwo.shape, stride, padding, groups, tile=tile))
    _run(plan_weight_grad_reduce(partial, dw, sms=sms))
    dx = None
    if need_dx:
        buf = dilated_output_grad(g, x.shape, w_ihwo.shape, stride, padding, cupy)
        dx = conv2d(buf, transposed_conv_weight(w_ihwo, groups, cupy), cupy.zeros((c,), cupy.float32),
                    (1, 1), (0, 0), groups, False)
    return dx, dw, db


# -- max_pool2d -----------------------------------------------------------------


def max_pool2d_output_shape(x_shape, kernel, stride, ceil_mode: bool) -> tuple[int, int, int, int]:
    """The NCHW output shape of max pooling an NCHW ``x_shape``, floor or ceil mode."""
    n, c, h, w = x_shape
    return (n, c, pool_output_size(h, kernel[0], stride[0], ceil_mode), pool_output_size(w, kernel[1], stride[1], ceil_mode))


def plan_max_pool2d(x, y, kernel, stride, *, sms: int) -> Launch:
    n, c, h, w = x.shape
    _, _, oh, ow = y.shape
    total = n * c * oh * ow
    args = (x, y, np.int64(n * c), *(np.int32(v) for v in (h, w, oh, ow, kernel[0], kernel[1], stride[0], stride[1])))
    return Launch("max_pool2d_forward" + DTYPES[storage_dtype(x)], _elementwise_grid(total, sms), (_ELEMENTWISE_THREADS, 1, 1), args)


def max_pool2d(x, kernel, stride, ceil_mode: bool):
    """``max_pool2d.cu: max_pool2d_forward[_<dtype>]`` on a contiguous NCHW cupy array (float32, float16, bfloat16)."""
    import cupy

    shape = max_pool2d_output_shape(x.shape, kernel, stride, ceil_mode)
    y = cupy.empty(shape, dtype=x.dtype)
    if y.size:
        _run(plan_max_pool2d(x, y, kernel, stride, sms=device_facts()["sms"]))
    return y


def plan_max_pool2d_backward(x, dy, dx, kernel, stride, *, sms: int) -> Launch:
    n, c, h, w = x.shape
    _, _, oh, ow = dy.shape
    args = (x, dy, dx, np.int64(n * c), *(np.int32(v) for v in (h, w, oh, ow, kernel[0], kernel[1], stride[0], stride[1])))
    return Launch("max_pool2d_backward", _elementwise_grid(x.size, sms), (_ELEMENTWISE_THREADS, 1, 1), args)


def max_pool2d_backward(x, dy, kernel, stride):
    """``max_pool2d.cu: max_pool2d_backward`` (a gather, each window's first maximum) on NCHW cupy arrays."""
    import cupy

    dx = cupy.empty_like(x)
    if dx.size:
        _run(plan_max_pool2d_backward(x, dy, dx, kernel, stride, sms=device_facts()["sms"]))
    return dx


# -- lrn --------------------------------------------------------------------------


def plan_lrn(x, y, size: int, alpha: float, beta: float, k: float, *, sms: int) -> Launch:
    n, c, h, w = x.shape
    args = (
        x, y, np.int64(n), np.int32(c), np.int64(h * w), np.int32(size),
        np.float32(float(alpha) / int(size)), np.float32(beta), np.float32(k),
    )
    return Launch("lrn_forward" + DTYPES[storage_dtype(x)], _elementwise_grid(x.size, sms), (_ELEMENTWISE_THREADS, 1, 1), args)


def lrn(x, size: int, alpha: float, beta: float, k: float):
    """``lrn.cu: lrn_forward[_<dtype>]`` on a contiguous NCHW cupy array (float32, float16, bfloat16; computed in float32)."""
    import cupy

    y = cupy.empty_like(x)
    if y.size:
        _run(plan_lrn(x, y, size, alpha, beta, k, sms=device_facts()["sms"]))
    return y


def plan_lrn_backward(x, y, dy, dx, size: int, alpha: float, beta: float, k: float, *, sms: int) -> Launch:
    n, c, h, w = x.shape
    args = (
        x, y, dy, dx, np.int64(n), np.int32(c), np.int64(h * w), np.int32(size),
        np.float32(float(alpha) / int(size)), np.float32(beta), np.float32(k),
    )
    return Launch("lrn_backward", _elementwise_grid(x.size, sms), (_ELEMENTWISE_THREADS, 1, 1), args)


def lrn_backward(x, y, dy, size: int, alpha: float, beta: float, k: float):
    """``lrn.cu: lrn_backward`` (the transposed window, one pass) on contiguous float32 NCHW cupy arrays."""
    import cupy

    dx = cupy.empty_like(x)
    if dx.size:
        _run(plan_lrn_backward(x, y, dy, dx, size, alpha, beta, k, sms=device_facts()["sms"]))
    return dx


# -- linear -----------------------------------------------------------------------


def linear_chunks(in_features: int) -> int:
    """How many fixed chunks of :data:`LINEAR_K_CHUNK` the reduction over ``in_features`` is cut into."""
    return max(1, -(-in_features // LINEAR_K_CHUNK))


def choose_linear_algo(batch: int) -> str:
    """``"gemv"`` for batches up to :data:`LINEAR_GEMV_MAX_BATCH`, else ``"gemm"`` (both sum in the same order)."""
    return "gemv" if batch <= LINEAR_GEMV_MAX_BATCH else "gemm"


def _check_linear_sizes(n: int, i: int, o: int) -> None:
    """The sizes the kernels take (int sizes, long long offsets) and their grids' y and z limits (65535)."""
    most = LINEAR_GEMV_ROWS[-1]
    if -(-n // most) > 65535 or linear_chunks(i) > 65535 or -(-o // 64) > 65535:
        raise ValueError(f"[linear] at most {65535 * most} rows, {65535 * LINEAR_K_CHUNK} inputs and "
                         f"{65535 * 64} outputs, got batch {n}, in {i}, out {o}")


def plan_linear_gemv(x_ni, w_io, p_cno, *, rows: int | None = None) -> Launch:
    """Plan ``linear_gemv_forward_<rows>``: float32 ``x_ni`` (N, I), ``w_io`` (I, O) → partials ``p_cno``
    (chunks, N, O). ``rows`` (of :data:`LINEAR_GEMV_ROWS`) per block; default the fewest that hold the
    batch, 8 beyond (each block then reads its weight columns once for 8 rows)."""
    n, i = x_ni.shape
    o = w_io.shape[1]
    assert tuple(p_cno.shape) == (linear_chunks(i), n, o), (p_cno.shape, x_ni.shape, w_io.shape)
    _check_linear_sizes(n, i, o)
    if rows is None:
        rows = next((r for r in LINEAR_GEMV_ROWS if r >= n), LINEAR_GEMV_ROWS[-1])
    elif rows not in LINEAR_GEMV_ROWS:
        raise ValueError(f"[linear] rows must be one of {LINEAR_GEMV_ROWS}, got {rows!r}")
    grid = (-(-o // LINEAR_GEMV_THREADS), linear_chunks(i), -(-n // rows))
    return Launch(f"linear_gemv_forward_{rows}", grid, (LINEAR_GEMV_THREADS, 1, 1),
                  (x_ni, w_io, p_cno, *map(np.int32, (n, i, o))))


def plan_linear_gemm(x_ni, w_io, p_cno, *, sms: int, tile: str | None = None) -> Launch:
    """Plan ``linear_gemm_forward_<tile>``: the same partials as :func:`plan_linear_gemv` by the tiled GEMM
    (``tile``: a key of :data:`LINEAR_TILES`, default as :func:`choose_conv_tile` over the chunks)."""
    n, i = x_ni.shape
    o = w_io.shape[1]
    chunks = linear_chunks(i)
    assert tuple(p_cno.shape) == (chunks, n, o), (p_cno.shape, x_ni.shape, w_io.shape)
    _check_linear_sizes(n, i, o)
    cfg = LINEAR_TILES[tile] if tile is not None else choose_conv_tile(o, n, chunks, sms, tiles=LINEAR_TILES)
    grid = (-(-n // cfg.bn), -(-o // cfg.bm), chunks)
    return Launch(cfg.kernel, grid, (cfg.threads, 1, 1), (x_ni, w_io, p_cno, *map(np.int32, (n, i, o))))


def choose_linear_mma_tile(batch: int) -> ConvTile:
    """The half-precision linear tile: 128x8 (the weight read once per 8 rows) up to 8 rows, else 128x128."""
    return LINEAR_MMA_TILES["128x8" if batch <= 8 else "128x128"]


def plan_linear_mma(x_ni, w_oi, p_cno, *, tile: str | None = None) -> Launch:
    """Plan ``linear_mma_forward_<tile>_<dtype>``: float16 or bfloat16 ``x_ni`` (N, I), ``w_oi`` (O, I) →
    float32 partials ``p_cno`` (chunks, N, O)."""
    dtype = storage_dtype(x_ni)
    n, i = x_ni.shape
    o = w_oi.shape[0]
    chunks = linear_chunks(i)
    assert tuple(p_cno.shape) == (chunks, n, o), (p_cno.shape, x_ni.shape, w_oi.shape)
    _check_linear_sizes(n, i, o)
    cfg = LINEAR_MMA_TILES[tile] if tile is not None else choose_linear_mma_tile(n)
    grid = (-(-n // cfg.bn), -(-o // cfg.bm), chunks)
    vec = i % 8 == 0 and aligned16(x_ni, w_oi)  # rows read as 16-byte vectors
    return Launch(cfg.kernel + DTYPES[dtype], grid, (cfg.threads, 1, 1),
                  (x_ni, w_oi, p_cno, *map(np.int32, (n, i, o, int(vec)))))


def plan_linear_reduce(p_cno, b_o, y_no, relu: bool, *, sms: int) -> Launch:
    """Plan ``linear_reduce_forward[_<dtype>]``: ``y_no`` = the chunks of ``p_cno`` summed in order, + ``b_o``,
    ReLU where asked, in ``y_no``'s dtype."""
    chunks, n, o = p_cno.shape
    assert tuple(y_no.shape) == (n, o) and tuple(b_o.shape) == (o,), (p_cno.shape, y_no.shape, b_o.shape)
    args = (p_cno, b_o, y_no, np.int64(n * o), np.int32(o), np.int32(chunks), np.int32(int(bool(relu))))
    return Launch("linear_reduce_forward" + DTYPES[storage_dtype(y_no)], _elementwise_grid(n * o, sms),
                  (_ELEMENTWISE_THREADS, 1, 1), args)


def linear(x, w, b_o, relu: bool, *, algo: str | None = None, tile: str | None = None):
    """``x @ wᵀ + b`` (+ ReLU) by this module's own kernels (capturable in a CUDA graph; no cuBLAS).

    float32: ``w`` is IO (in, out); the partial sums by ``linear_gemv_forward_<rows>`` or ``linear_gemm_forward_<tile>``
    (``algo``: ``"gemv"`` or ``"gemm"``, default :func:`choose_linear_algo`; the two give the same bits).
    float16 / bfloat16: ``w`` is OI (out, in); ``linear_mma_forward_<tile>_<dtype>`` on tensor cores.
    Then ``linear_reduce_forward[_<dtype>]``.
    """
    import cupy

    n, i = x.shape
    dtype = storage_dtype(x)
    o = w.shape[1] if dtype == "float32" else w.shape[0]
    y = cupy.empty((n, o), dtype=x.dtype)
    if y.size == 0:
        return y
    sms = device_facts()["sms"]
    p = cupy.empty((linear_chunks(i), n, o), dtype=cupy.float32)
    if dtype != "float32":
        _run(plan_linear_mma(x, w, p, tile=tile))
    else:
        algo = choose_linear_algo(n) if algo is None else algo
        if algo not in LINEAR_ALGOS:
            raise ValueError(f"[linear] algo must be one of {LINEAR_ALGOS} or None, got {algo!r}")
        _run(plan_linear_gemv(x, w, p) if algo == "gemv" else plan_linear_gemm(x, w, p, sms=sms, tile=tile))
    _run(plan_linear_reduce(p, b_o, y, relu, sms=sms))
    return y


def plan_linear_bias_act(y, b_f, relu: bool, *, sms: int) -> Launch:
    total, f = y.size, y.shape[1]
    args = (y, b_f, np.int64(total), np.int32(f), np.int32(int(bool(relu))))
    return Launch("linear_bias_act_forward", _elementwise_grid(total, sms), (_ELEMENTWISE_THREADS, 1, 1), args)


def linear_cublas(x, w_io, b_f, relu: bool):
    """``x @ w_io`` by cuBLAS (TF32 where ``CUPY_TF32=1``: ``CupyBackend(tf32=True)``), then
    ``linear.cu: linear_bias_act_forward`` in place."""
    import cupy

    y = cupy.matmul(x, w_io)
    if not y.flags.c_contiguous:  # cupy.matmul returns C-contiguous output; keep the kernel safe anyway
        y = cupy.ascontiguousarray(y)
    if y.size:
        _run(plan_linear_bias_act(y, b_f, relu, sms=device_facts()["sms"]))
    return y


def linear_backward(x, w_io, y, dy, relu: bool, need_dx: bool):
    """``g = dy`` masked by ``y > 0``; with ``w_io`` (in, out): ``dx = g·w_ioᵀ``, ``dw = xᵀ·g`` (in, out) by
    cuBLAS (true float32 unless TF32 was opted in); ``db = Σ g`` (CuPy's reduction)."""
    import cupy

    g = cupy.where(y > 0, dy, cupy.float32(0)) if relu else dy
    dx = cupy.matmul(g, w_io.T) if need_dx else None
    return dx, cupy.matmul(x.T, g), cupy.sum(g, axis=0, dtype=cupy.float32)
