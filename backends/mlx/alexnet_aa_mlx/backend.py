"""The ``mlx`` backend: AlexNet's heavy ops on ``mlx.core``, NHWC.

``MLXBackend(dtype="float32", lrn="auto", compile=True)``

* Layout: activations NHWC; conv weights OHWI ``(O, K_h, K_w, C/g)``;
  linear weights IO ``(F_in, F_out)`` (transposed once, contiguous: ``x @ w``
  is faster than ``x @ w.T``). The base class's ``prepare`` converts the
  canonical weights once; the ops never transpose weights.
* conv2d: ``mx.conv2d`` per group on channel slices, then ``mx.concatenate``
  (faster than MLX's own ``groups=`` path); bias (+ ReLU) fused by a
  shapeless ``mx.compile``'d epilogue.
* max_pool2d: separable strided slices + ``mx.maximum`` (first along W, then
  H); ceil mode pads the bottom/right edge with ``-inf`` so that the last
  window, which starts inside the input, takes the max of its real elements.
  MLX's ``nn.MaxPool2d`` has no ceil mode.
* lrn: the fused Metal kernel ``lrn_forward_nhwc_float32`` where Metal is
  available and the kernel passed its probe, else composed ``mx`` ops
  (:mod:`alexnet_aa_mlx.lrn_metal`), run eagerly (compiling it was slower).
* linear: ``mx.addmm(b, x, w)``, then ``mx.maximum`` where ReLU is asked.

Precision: float32 by default. ``dtype="float16"`` or ``"bfloat16"`` (opt-in, inference only)
stores activations and weights in that dtype; every op rounds its result once: the GEMMs
(``mx.addmm``: MLX accumulates half inputs in float32, adds the bias and rounds once: measured,
see the docs) and pooling run on the half arrays; the convs (whose bias MLX would add after
rounding the sum) and the LRN are computed in float32 from the stored values and rounded once (cast
up, computed, cast down; the LRN on the composed and the Metal path alike). ``to_host`` widens bfloat16 to
float32 (NumPy has no bfloat16). A half-precision instance declares ``unsupported["training"]``:
there are no float32 master weights to update.

The math of every op is on :mod:`alexnet_aa.reference`; arguments arrive
validated by :mod:`alexnet_aa.ops`. ``mlx`` is imported only when the backend
is constructed or asked whether it is available. The measurements behind
these choices are in ``docs/backends/mlx.md``.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from alexnet_aa.architecture import pool_output_size, pool_overhang
from alexnet_aa.arrays import to_numpy
from alexnet_aa.backend import (
    INSTALL_HINTS,
    Backend,
    BackendError,
    BackendUnavailableError,
    UnsupportedError,
)

__all__ = ["DTYPES", "MIN_MLX_VERSION", "MLXBackend"]

#: Oldest MLX this backend supports: 0.32.1 fixed Metal custom-kernel cache
#: collisions (PR 3833) and concurrent cache lookups (PR 4043), and integer
#: overflows in conv shape arithmetic and padding (PRs 3938, 4258). See docs/backends/mlx.md.
MIN_MLX_VERSION = (0, 32, 1)

#: The storage dtypes the constructor takes (``dtype=``); the first is the default.
DTYPES = ("float32", "float16", "bfloat16")

#: Why a half-precision instance cannot train (its ``unsupported["training"]``).
HALF_TRAINING_REASON = ("half-precision storage has no float32 master weights (an SGD update far smaller than "
                        "a weight's half-precision ulp would be lost); train in float32")


def _version_tuple(text: str) -> tuple[int, ...]:
    """``"0.32.4"`` → ``(0, 32, 4)``; ``"0.33.0.dev2026+abc"`` → ``(0, 33, 0)``."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(g or 0) for g in match.groups()) if match else (0,)


@functools.cache
def _bias_relu():
    """``max(y + b, 0)`` as one ``mx.compile``'d (shapeless) kernel, built once (the LRN is not
    compiled: eager was faster, see ``docs/backends/mlx.md``)."""
    import mlx.core as mx

    return mx.compile(lambda y, b: mx.maximum(y + b, 0.0), shapeless=True)


class MLXBackend(Backend):
    """NHWC ops on ``mlx.core`` (Apple silicon GPU, or the CPU / CUDA builds of MLX).

    ``dtype``: the storage dtype of activations and weights, ``"float32"``
    (default), ``"float16"`` or ``"bfloat16"``; the last two are inference
    only (``unsupported["training"]``) and compute the LRN in float32.
    ``lrn``: ``"auto"`` (the Metal kernel when Metal is available and the
    kernel builds, else composed ops), ``"composed"`` or ``"metal"`` (an error
    where Metal is absent). ``compile``: fuse the conv epilogue (bias + ReLU)
    into one ``mx.compile``'d kernel; results are identical either way.
    """

    name = "mlx"
    layout = "NHWC"
    conv_weight_layout = "OHWI"
    linear_weight_layout = "IO"
    dtype = "float32"
    unsupported = {"float64": "the backend computes in float32 (MLX has float64 on the CPU only, never on the GPU)"}

    def __init__(self, *, dtype: str = "float32", lrn: str = "auto", compile: bool = True) -> None:
        if isinstance(dtype, str) and dtype == "float64":
            raise UnsupportedError("float64", f"[mlx] dtype: 'float64' is not supported: {self.unsupported['float64']}; "
                                              f"expected 'float32', 'float16' or 'bfloat16'")
        if not (isinstance(dtype, str) and dtype in DTYPES):
            raise ValueError(f"[mlx] dtype: expected 'float32', 'float16' or 'bfloat16', got {dtype!r}")
        if lrn not in ("auto", "composed", "metal"):
            raise ValueError(f"[mlx] lrn: expected 'auto', 'composed' or 'metal', got {lrn!r}")
        ok, why = self.available()
        if not ok:
            raise BackendUnavailableError(f"[mlx] backend not available: {why}")
        import mlx.core as mx

        from . import lrn_metal

        self._mx = mx
        self._lrn_metal = lrn_metal
        self._dtype = getattr(mx, dtype)  # the storage dtype's mx object
        if dtype != "float32":  # per instance: the class stays float32 and trainable
            self.dtype = dtype
            self.unsupported = {**type(self).unsupported, "training": HALF_TRAINING_REASON}
        self._compile = bool(compile)
        self._lrn_mode = lrn
        self._use_metal_lrn: bool | None = None  # decided on first use
        self._lrn_why = ""
        if lrn == "metal" and not mx.metal.is_available():
            raise BackendUnavailableError("[mlx] lrn='metal' asked for, but Metal is not available on this machine")
        self._thread = threading.get_ident()

    def _check_thread(self) -> None:
        """MLX's streams belong to the thread that made them: arrays made here cannot be computed in
        another thread ("There is no Stream(cpu, 1) in current thread", then an abort at exit, mlx
        0.32.4). So a backend, and a model on it, is used from the thread that made it; another
        thread makes its own."""
        if threading.get_ident() != self._thread:
            raise BackendError(f"[mlx] this backend was made in thread {self._thread} and MLX's streams belong to "
                               f"that thread; called from thread {threading.get_ident()}: make one model per thread")

    # -- where it runs -----------------------------------------------------------
    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import mlx.core as mx
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] == "mlx":
                return False, f"mlx not installed: {INSTALL_HINTS['mlx']}"
            return False, f"mlx failed to import: {exc}"
        except Exception as exc:  # noqa: BLE001 - e.g. mlx[cuda13] without libcuda
            return False, f"mlx failed to import: {type(exc).__name__}: {exc}"
        version = getattr(mx, "__version__", "0")
        if _version_tuple(version) < MIN_MLX_VERSION:
            need = ".".join(map(str, MIN_MLX_VERSION))
            return False, f"mlx {version} is older than the {need} this backend needs: {INSTALL_HINTS['mlx']}"
        return True, ""

    @property
    def xp(self) -> Any:
        return self._mx

    def asarray(self, x: Any) -> Any:
        """Cast to the storage dtype: an MLX array with ``astype`` (unless it already is), a host
        array through a contiguous float32 copy (float64 is rounded to float32 first, then to a half dtype)."""
        self._check_thread()  # every forward and training step starts here
        mx, dtype = self._mx, self._dtype
        if isinstance(x, mx.array):
            return x if x.dtype == dtype else x.astype(dtype)
        host = np.asarray(x)
        if host.dtype != np.float32 or not host.flags.c_contiguous:
            host = np.ascontiguousarray(host, dtype=np.float32)
        return mx.array(host, dtype=dtype)

    def to_host(self, x: Any) -> np.ndarray:
        """A NumPy copy (:func:`alexnet_aa.arrays.to_numpy`): bfloat16 widened to float32 (exactly: NumPy has
        no bfloat16), float16 stays float16."""
        return to_numpy(x)

    def prepare(self, params: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """The base class's conversion (OHWI, IO) to the storage dtype, evaluated now so that the
        first forward does not pay for it."""
        out = super().prepare(params)
        self._mx.eval(list(out.values()))
        return out

    # -- the four ops ---------------------------------------------------------------
    def _epilogue(self, y, b, relu: bool):
        """``y + b`` (+ ReLU) in ``y``'s dtype (a Python ``0.0`` never promotes a half array)."""
        if b is not None and relu and self._compile:
            return _bias_relu()(y, b)
        if b is not None:
            y = y + b
        return self._mx.maximum(y, 0.0) if relu else y

    def conv2d(self, x, w, b, stride, padding, groups: int, relu: bool):
        """NHWC ``x``, OHWI ``w``: ``mx.conv2d`` per group + concatenate, then bias (+ ReLU). Half
        precision: convolved in float32 from the stored half values, bias and ReLU in float32, rounded
        once (MLX's half conv rounds its sum before the bias is added: a second rounding, unbounded in
        relative terms where the bias cancels the sum)."""
        if self.dtype == "float32":
            return self._epilogue(self._conv(x, w, stride, padding, groups), b, relu)
        f32 = self._mx.float32
        y = self._conv(x.astype(f32), w.astype(f32), stride, padding, groups)
        return self._epilogue(y, None if b is None else b.astype(f32), relu).astype(self._dtype)

    def _conv(self, x, w, stride, padding, groups: int):
        """The cross-correlation alone (no bias, no ReLU): ``mx.conv2d`` per group + concatenate."""
        mx = self._mx
        if groups == 1:
            return mx.conv2d(x, w, stride=stride, padding=padding)
        og, cg = w.shape[0] // groups, w.shape[3]
        return mx.concatenate(
            [mx.conv2d(x[..., g * cg : (g + 1) * cg], w[g * og : (g + 1) * og], stride=stride, padding=padding)
             for g in range(groups)],
            axis=-1,
        )

    def max_pool2d(self, x, kernel, stride, ceil_mode: bool):
        """NHWC; separable strided slices + ``mx.maximum``; ceil mode pads bottom/right with ``-inf``."""
        mx = self._mx
        (kh, kw), (sh, sw) = kernel, stride
        _, h, w, _ = x.shape
        ho = pool_output_size(h, kh, sh, ceil_mode)
        wo = pool_output_size(w, kw, sw, ceil_mode)
        pad_h, pad_w = pool_overhang(h, kh, sh, ceil_mode), pool_overhang(w, kw, sw, ceil_mode)
        if pad_h or pad_w:
            x = mx.pad(x, [(0, 0), (0, pad_h), (0, pad_w), (0, 0)], constant_values=-float("inf"))
        # columns first (reduces W to wo), then rows
        y = x[:, :, 0 : (wo - 1) * sw + 1 : sw, :]
        for j in range(1, kw):
            y = mx.maximum(y, x[:, :, j : j + (wo - 1) * sw + 1 : sw, :])
        z = y[:, 0 : (ho - 1) * sh + 1 : sh]
        for i in range(1, kh):
            z = mx.maximum(z, y[:, i : i + (ho - 1) * sh + 1 : sh])
        return z

    def lrn(self, x, size: int, alpha: float, beta: float, k: float):
        """NHWC, across the last axis: Metal kernel ``lrn_forward_nhwc_float32`` or composed ``mx`` ops,
        always in float32 (a half-precision ``x`` is cast up, and the result back down)."""
        mx = self._mx
        x32 = x if x.dtype == mx.float32 else x.astype(mx.float32)
        if self._metal_lrn_active():
            y = self._lrn_metal.lrn_differentiable(x32, size, alpha, beta, k)
        else:
            y = self._lrn_metal.lrn_composed(x32, size, alpha, beta, k)
        return y if y.dtype == self._dtype else y.astype(self._dtype)

    def linear(self, x, w, b, relu: bool):
        """``x (N, F_in) @ w (F_in, F_out) + b`` with ``mx.addmm`` (+ ReLU)."""
        mx = self._mx
        y = mx.matmul(x, w) if b is None else mx.addmm(b, x, w)
        if relu:
            y = mx.maximum(y, 0.0)
        return y

    # -- the backward twins -----------------------------------------------------------------
    def _masked(self, y, dy, relu: bool):
        return self._mx.where(y > 0, dy, 0.0) if relu else dy

    def conv2d_backward(self, x, w, y, dy, stride, padding, groups: int, relu: bool, need_dx: bool):
        """``mx.vjp`` of the per-group ``mx.conv2d`` (w only when ``need_dx`` is False); ``db`` a sum."""
        mx = self._mx
        g = self._masked(y, dy, relu)
        if need_dx:
            _, (dx, dw) = mx.vjp(lambda x_, w_: self._conv(x_, w_, stride, padding, groups), [x, w], [g])
        else:
            dx = None
            _, (dw,) = mx.vjp(lambda w_: self._conv(x, w_, stride, padding, groups), [w], [g])
        return dx, dw, mx.sum(g, axis=(0, 1, 2))

    def max_pool2d_backward(self, x, y, dy, kernel, stride, ceil_mode: bool):
        """``mx.vjp`` of the pool written as a selection of each window's first maximum
        (``mx.argmax`` of the stacked window views, held constant), so the gradient follows the tie rule."""
        mx = self._mx
        (kh, kw), (sh, sw) = kernel, stride
        _, h, w, _ = x.shape
        ho, wo = dy.shape[1], dy.shape[2]
        pad_h, pad_w = pool_overhang(h, kh, sh, ceil_mode), pool_overhang(w, kw, sw, ceil_mode)

        def pooled(x_):
            if pad_h or pad_w:
                x_ = mx.pad(x_, [(0, 0), (0, pad_h), (0, pad_w), (0, 0)], constant_values=-float("inf"))
            views = [x_[:, i : i + (ho - 1) * sh + 1 : sh, j : j + (wo - 1) * sw + 1 : sw, :]
                     for i in range(kh) for j in range(kw)]
            first = mx.argmax(mx.stop_gradient(mx.stack(views, axis=0)), axis=0)
            out = mx.zeros_like(views[0])
            for t, view in enumerate(views):
                out = out + mx.where(first == t, view, 0.0)
            return out

        _, (dx,) = mx.vjp(pooled, [x], [dy])
        return dx

    def lrn_backward(self, x, y, dy, size: int, alpha: float, beta: float, k: float):
        """The explicit formula in plain ``mx`` ops (:func:`.lrn_metal.lrn_backward_composed`), on every device."""
        return self._lrn_metal.lrn_backward_composed(x, y, dy, size, alpha, beta, k)

    def linear_backward(self, x, w, y, dy, relu: bool, need_dx: bool):
        """With ``w`` ``(F_in, F_out)``: ``dx = g·wᵀ``, ``dw = xᵀ·g``, ``db = Σ g``."""
        mx = self._mx
        g = self._masked(y, dy, relu)
        return (mx.matmul(g, w.T) if need_dx else None), mx.matmul(x.T, g), mx.sum(g, axis=0)

    # -- optional -------------------------------------------------------------------
    def _metal_lrn_active(self) -> bool:
        if self._use_metal_lrn is None:
            if self._lrn_mode == "composed":
                self._use_metal_lrn, self._lrn_why = False, "asked for (lrn='composed')"
            else:
                ok, why = self._lrn_metal.metal_lrn_status()
                if not ok and self._lrn_mode == "metal" and self._mx.metal.is_available():
                    raise BackendUnavailableError(f"[lrn] lrn='metal' asked for, but {why}")
                self._use_metal_lrn, self._lrn_why = ok, why
        return self._use_metal_lrn

    def warmup(self) -> float:
        """Probe (build) the Metal LRN kernel where Metal is available; seconds taken."""
        import time

        t0 = time.perf_counter()
        self._metal_lrn_active()
        return time.perf_counter() - t0

    def describe(self) -> dict[str, str]:
        mx = self._mx
        metal = mx.metal.is_available()
        if self._metal_lrn_active():
            lrn = f"Metal kernel {self._lrn_metal.KERNEL_NAMES['float32']}"
        else:
            lrn = f"composed mx ops ({self._lrn_why})"
        if self.dtype == "float32":
            dtype = "float32 (training too)"
        else:
            lrn += f", in float32 (cast from and back to {self.dtype})"
            dtype = (f"{self.dtype} storage, inference only; float32 in the LRN, and in the conv/matmul "
                     f"accumulation where MLX accumulates so (its CPU build: measured); to_host gives "
                     + ("float32 (bfloat16 widened)" if self.dtype == "bfloat16" else "float16"))
        return {
            "mlx": mx.__version__,
            "device": str(mx.default_device()),
            "metal": "yes" if metal else "no",
            "dtype": dtype,
            "conv2d": "mx.conv2d per group + concatenate",
            "max_pool2d": "strided slices + mx.maximum (floor and ceil mode)",
            "lrn": lrn,
            "compile": "mx.compile'd conv bias + ReLU epilogue" if self._compile else "off",
        }

