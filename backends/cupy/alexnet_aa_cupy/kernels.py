"""Launch wrappers for the CUDA kernels in the ``*.cu`` files beside this module.

One name at every hop: ``CupyBackend.lrn`` → :func:`lrn` → ``lrn.cu: lrn_forward``.

The ``.cu`` files are read once, concatenated into one source and compiled by
NVRTC into one :class:`cupy.RawModule` per device, on first use (CuPy keeps the
cubin on disk under ``CUPY_CACHE_DIR``, so later processes only load it). Every
entry point is listed in :data:`NAME_EXPRESSIONS`; ``tests/test_cuda_kernels.py``
compiles each file with ``nvcc`` and checks that every listed name exists.

Each op is split into a *plan* (``plan_<op>``: validate shapes, compute the
output shape, launch geometry and the exact kernel arguments) and a launch.
Plans are pure Python on array shapes — they run without a GPU, which is how the
CPU emulation test (``backends/cupy/tests``) drives the very same argument lists
through the kernels compiled with g++.

This module imports numpy only; cupy is imported on first launch.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent

#: The ``.cu`` files, in the order they are concatenated into the module.
SOURCES = ("conv2d.cu", "max_pool2d.cu", "lrn.cu", "linear.cu")

#: NVRTC options (CuPy adds ``-ftz=true`` and ``--device-as-default-execution-space``).
OPTIONS = ("-std=c++17",)


@dataclass(frozen=True)
class ConvTile:
    """A compile-time tile configuration of ``conv2d.cu`` (one entry point each)."""

    kernel: str
    bm: int  # output channels per block (GEMM M)
    bn: int  # output pixels per block (GEMM N = batch*OH*OW)
    threads: int


#: Tile configurations, largest first; see :func:`choose_conv_tile`.
CONV_TILES = {
    "128x128": ConvTile("conv2d_forward_128x128", 128, 128, 256),
    "64x128": ConvTile("conv2d_forward_64x128", 64, 128, 128),
    "64x64": ConvTile("conv2d_forward_64x64", 64, 64, 256),
}

#: Every entry point of the module (extern "C", so each name is its own lowered name).
NAME_EXPRESSIONS = (
    *(t.kernel for t in CONV_TILES.values()),
    "max_pool2d_forward",
    "lrn_forward",
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


def source() -> str:
    """The concatenated CUDA source handed to NVRTC."""
    return "\n".join(f"// ---- {name} ----\n" + (HERE / name).read_text() for name in SOURCES)


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


# -- conv2d ---------------------------------------------------------------------


def conv_out_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """``floor((size + 2*pad - kernel) / stride) + 1``."""
    return (size + 2 * pad - kernel) // stride + 1


def choose_conv_tile(m: int, n: int, groups: int, sms: int) -> ConvTile:
    """The tile for a GEMM of ``groups`` × (M=m) × (N=n).

    Among the tiles that give at least two waves of blocks on ``sms``
    multiprocessors, take the one that wastes the least of M (e.g. 64-row
    tiles for M = 192, 128-row tiles for M = 384), the larger tile on a tie;
    when none fills the GPU (batch 1, small maps), the one with the most blocks.
    """
    best, best_key = None, None
    for tile in CONV_TILES.values():
        m_tiles = -(-m // tile.bm)
        blocks = m_tiles * -(-n // tile.bn) * groups
        m_use = m / (m_tiles * tile.bm)
        full = blocks >= 2 * sms
        key = (full, m_use if full else blocks, tile.bm * tile.bn)
        if best_key is None or key > best_key:
            best, best_key = tile, key
    assert best is not None
    return best


def plan_conv2d(x, w_ihwo, b_o, y, stride, padding, groups: int, relu: bool, *, sms: int, tile: str | None = None) -> Launch:
    """Validate and plan ``conv2d_forward_<tile>`` on contiguous float32 arrays.

    ``x`` is NCHW, ``w_ihwo`` is (in/groups, kh, kw, out), ``b_o`` is (out,),
    ``y`` is the NCHW output (see :func:`conv2d_output_shape`).
    """
    n, c, h, w_ = x.shape
    cg, kh, kw, o = w_ihwo.shape
    sh, sw = stride
    ph, pw = padding
    oh, ow = conv_out_size(h, kh, sh, ph), conv_out_size(w_, kw, sw, pw)
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


def check_conv2d(x_shape, w_shape, b_shape, stride, padding, groups: int) -> tuple[int, int, int, int]:
    """Validate conv2d operands (native layouts); return the NCHW output shape."""
    if len(x_shape) != 4:
        raise ValueError(f"[conv2d] x must be 4-D NCHW, got shape {tuple(x_shape)}")
    if len(w_shape) != 4:
        raise ValueError(
            f"[conv2d] w must be 4-D (in/groups, kh, kw, out) as returned by prepare(), got shape {tuple(w_shape)}"
        )
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"[conv2d] groups must be a positive int, got {groups!r}")
    n, c, h, w_ = x_shape
    cg, kh, kw, o = w_shape
    if b_shape is not None and tuple(b_shape) != (o,):
        hint = ""
        if tuple(b_shape) == (cg,):
            hint = " (is w a canonical OIHW weight? pass the weights through backend.prepare() first)"
        raise ValueError(f"[conv2d] b has shape {tuple(b_shape)} but w has {o} output channels{hint}")
    if c != groups * cg:
        raise ValueError(f"[conv2d] x has {c} channels but w expects {groups * cg} (groups={groups} × {cg})")
    if o % groups:
        raise ValueError(f"[conv2d] output channels {o} are not divisible by groups={groups}")
    if min(stride) < 1 or min(padding) < 0 or min(kh, kw) < 1:
        raise ValueError(f"[conv2d] need stride >= 1 and padding >= 0, got stride={stride}, padding={padding}")
    oh, ow = conv_out_size(h, kh, stride[0], padding[0]), conv_out_size(w_, kw, stride[1], padding[1])
    if oh < 1 or ow < 1:
        raise ValueError(
            f"[conv2d] kernel {(kh, kw)} does not fit the padded input {(h + 2 * padding[0], w_ + 2 * padding[1])}"
        )
    return (n, o, oh, ow)


def conv2d(x, w_ihwo, b_o, stride, padding, groups: int, relu: bool, *, tile: str | None = None):
    """``conv2d.cu: conv2d_forward_<tile>`` on contiguous float32 cupy arrays; returns NCHW."""
    import cupy

    shape = check_conv2d(x.shape, w_ihwo.shape, b_o.shape, stride, padding, groups)
    y = cupy.empty(shape, dtype=cupy.float32)
    if y.size == 0:
        return y
    _run(plan_conv2d(x, w_ihwo, b_o, y, stride, padding, groups, relu, sms=device_facts()["sms"], tile=tile))
    return y


# -- max_pool2d -----------------------------------------------------------------


def pool_out_size(size: int, kernel: int, stride: int, ceil_mode: bool) -> int:
    """Floor: ``(size - kernel) // stride + 1``; ceil: rounded up, minus one if
    the last window would start outside the input (PyTorch/ONNX rule)."""
    if not ceil_mode:
        return (size - kernel) // stride + 1
    out = -(-(size - kernel) // stride) + 1
    if (out - 1) * stride >= size:
        out -= 1
    return out


def check_max_pool2d(x_shape, kernel, stride, ceil_mode: bool) -> tuple[int, int, int, int]:
    if len(x_shape) != 4:
        raise ValueError(f"[max_pool2d] x must be 4-D NCHW, got shape {tuple(x_shape)}")
    if min(kernel) < 1:
        raise ValueError(f"[max_pool2d] kernel must be positive, got {kernel}")
    if min(stride) < 1:
        raise ValueError(f"[max_pool2d] stride must be positive, got {stride}")
    n, c, h, w = x_shape
    oh, ow = pool_out_size(h, kernel[0], stride[0], ceil_mode), pool_out_size(w, kernel[1], stride[1], ceil_mode)
    if oh < 1 or ow < 1:
        raise ValueError(f"[max_pool2d] kernel {kernel} does not fit the input {(h, w)} (ceil_mode={ceil_mode})")
    return (n, c, oh, ow)


def plan_max_pool2d(x, y, kernel, stride, *, sms: int) -> Launch:
    n, c, h, w = x.shape
    _, _, oh, ow = y.shape
    total = n * c * oh * ow
    args = (x, y, np.int64(n * c), *(np.int32(v) for v in (h, w, oh, ow, kernel[0], kernel[1], stride[0], stride[1])))
    return Launch("max_pool2d_forward", _elementwise_grid(total, sms), (_ELEMENTWISE_THREADS, 1, 1), args)


def max_pool2d(x, kernel, stride, ceil_mode: bool):
    """``max_pool2d.cu: max_pool2d_forward`` on a contiguous float32 NCHW cupy array."""
    import cupy

    shape = check_max_pool2d(x.shape, kernel, stride, ceil_mode)
    y = cupy.empty(shape, dtype=cupy.float32)
    if y.size:
        _run(plan_max_pool2d(x, y, kernel, stride, sms=device_facts()["sms"]))
    return y


# -- lrn --------------------------------------------------------------------------


def check_lrn(x_shape, size, alpha, beta, k) -> None:
    if len(x_shape) != 4:
        raise ValueError(f"[lrn] x must be 4-D NCHW, got shape {tuple(x_shape)}")
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise ValueError(f"[lrn] size must be a positive int, got {size!r}")
    for what, v in (("alpha", alpha), ("beta", beta), ("k", k)):
        if not math.isfinite(float(v)):
            raise ValueError(f"[lrn] {what} must be finite, got {v!r}")


def plan_lrn(x, y, size: int, alpha: float, beta: float, k: float, *, sms: int) -> Launch:
    n, c, h, w = x.shape
    args = (
        x, y, np.int64(n), np.int32(c), np.int64(h * w), np.int32(size),
        np.float32(float(alpha) / int(size)), np.float32(beta), np.float32(k),
    )
    return Launch("lrn_forward", _elementwise_grid(x.size, sms), (_ELEMENTWISE_THREADS, 1, 1), args)


def lrn(x, size: int, alpha: float, beta: float, k: float):
    """``lrn.cu: lrn_forward`` on a contiguous float32 NCHW cupy array."""
    import cupy

    check_lrn(x.shape, size, alpha, beta, k)
    y = cupy.empty_like(x)
    if y.size:
        _run(plan_lrn(x, y, size, alpha, beta, k, sms=device_facts()["sms"]))
    return y


# -- linear -----------------------------------------------------------------------


def check_linear(x_shape, w_shape, b_shape) -> tuple[int, int]:
    if len(x_shape) != 2:
        raise ValueError(f"[linear] x must be 2-D (batch, in), got shape {tuple(x_shape)}")
    if len(w_shape) != 2:
        raise ValueError(f"[linear] w must be 2-D (out, in), got shape {tuple(w_shape)}")
    if x_shape[1] != w_shape[1]:
        raise ValueError(f"[linear] x has {x_shape[1]} features but w expects {w_shape[1]} (w is (out, in) = {tuple(w_shape)})")
    if b_shape is not None and tuple(b_shape) != (w_shape[0],):
        raise ValueError(f"[linear] b has shape {tuple(b_shape)} but w has {w_shape[0]} outputs")
    return (x_shape[0], w_shape[0])


def plan_linear_bias_act(y, b_f, relu: bool, *, sms: int) -> Launch:
    total, f = y.size, y.shape[1]
    args = (y, b_f, np.int64(total), np.int32(f), np.int32(int(bool(relu))))
    return Launch("linear_bias_act_forward", _elementwise_grid(total, sms), (_ELEMENTWISE_THREADS, 1, 1), args)


def linear(x, w_oi, b_f, relu: bool):
    """``x @ w_oi.T`` by cuBLAS (true float32), then ``linear.cu: linear_bias_act_forward`` in place."""
    import cupy

    check_linear(x.shape, w_oi.shape, b_f.shape)
    y = cupy.matmul(x, w_oi.T)
    if not y.flags.c_contiguous:  # cupy.matmul returns C-contiguous output; keep the kernel safe anyway
        y = cupy.ascontiguousarray(y)
    if y.size:
        _run(plan_linear_bias_act(y, b_f, relu, sms=device_facts()["sms"]))
    return y
