"""The ``numpy`` backend: AlexNet on any CPU, fast, with NumPy and its BLAS.

Layout NHWC, conv weights HWIO ``(K_h, K_w, C/g, O)``, linear weights as
given ``(F_out, F_in)``. The math of each op is on the reference op of the
same name in :mod:`alexnet_aa.reference`; this module says only how.

* **conv2d** — im2col + GEMM. In NHWC an image patch ``(K_h, K_w, C)`` is
  ``K_h`` runs of ``K_w·C`` contiguous floats, so the patch matrix is one
  strided gather, and ``patches (N·H_out·W_out, K_h·K_w·C/g) @ w_g (K_h·K_w·C/g, O/g)``
  writes group ``g``'s columns of the NHWC output directly (no transposes).
  The batch is folded into the GEMM's M dimension, in micro-batches whose
  patch matrix stays under :data:`SCRATCH_BYTES`. Bias and ReLU are applied
  in place on the output.
* **max_pool2d** — separable: a running ``np.maximum`` over the ``K_w``
  strided column views, then over the ``K_h`` row views of that
  (``K_h + K_w − 2`` passes instead of ``K_h·K_w − 1``); ceil mode pads the
  edge with −∞ only when needed.
* **lrn** — the window sum of squares as ``size − 1`` in-place shifted adds
  along the channel axis (views, no copy per window element), then
  ``x · (k + α/n · s)^(−β)`` with ``β = 0.75`` as two square roots (NumPy's
  ``power`` is scalar code; ``sqrt`` is SIMD), in blocks of pixels of
  :data:`LRN_BLOCK_BYTES` so every pass stays in cache.
* **linear** — one BLAS GEMM ``x @ w.T`` (GEMV for a single row), bias and
  ReLU in place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from alexnet_aa.architecture import pool_output_size
from alexnet_aa.arrays import to_numpy
from alexnet_aa.backend import Backend, pair

__all__ = ["LRN_BLOCK_BYTES", "NumpyBackend", "SCRATCH_BYTES"]

#: Upper bound on one micro-batch's patch matrix in conv2d.
SCRATCH_BYTES = 32 * 1024 * 1024
#: LRN works on blocks of pixels this large, so its passes stay in the L2 cache.
LRN_BLOCK_BYTES = 256 * 1024


def _check(cond: bool, op: str, message: str) -> None:
    if not cond:
        raise ValueError(f"[{op}] {message}")


def _micro_batch(n: int, bytes_per_image: int) -> int:
    return max(1, min(n, SCRATCH_BYTES // max(1, bytes_per_image)))


class NumpyBackend(Backend):
    """NHWC float32 ops on NumPy arrays; GEMMs through NumPy's BLAS."""

    name = "numpy"
    layout = "NHWC"

    def __init__(self, dtype: str = "float32") -> None:
        if dtype not in ("float32", "float64"):
            raise ValueError(f"[numpy] dtype must be 'float32' or 'float64', got {dtype!r}")
        self.dtype = dtype
        self._np_dtype = np.dtype(dtype)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return True, ""

    @property
    def xp(self) -> Any:
        import array_api_compat.numpy

        return array_api_compat.numpy

    def asarray(self, x: Any) -> np.ndarray:
        return np.asarray(to_numpy(x), dtype=self._np_dtype)

    def to_host(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def prepare(self, params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """OIHW conv weights → HWIO; linear weights and biases kept, as contiguous ``dtype`` arrays."""
        out = {}
        for name, value in params.items():
            value = np.asarray(value, dtype=self._np_dtype)
            if value.ndim == 4:
                value = value.transpose(2, 3, 1, 0)
            out[name] = np.ascontiguousarray(value)
        return out

    def conv2d(self, x, w, b, stride, padding, groups, relu):
        """NHWC ``x``, HWIO ``w``: im2col per micro-batch and group, one GEMM each."""
        sh, sw = pair(stride, "stride", "conv2d")
        ph, pw = pair(padding, "padding", "conv2d")
        _check(x.ndim == 4 and w.ndim == 4, "conv2d", f"x and w must be 4-D (NHWC, HWIO), got {x.shape} and {w.shape}")
        n, h, wd, c = x.shape
        kh, kw, cg, o = w.shape
        _check(groups >= 1 and o % groups == 0, "conv2d", f"groups={groups} must divide out_channels={o}")
        _check(cg * groups == c, "conv2d", f"x has {c} channels but w expects {cg * groups} (groups={groups} × {cg})")
        _check(b is None or b.shape == (o,), "conv2d", f"b must have shape ({o},), got {None if b is None else b.shape}")
        ho, wo = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
        _check(ho >= 1 and wo >= 1, "conv2d", f"input {h}x{wd} with padding {ph},{pw} is smaller than the kernel {kh}x{kw}")

        if ph or pw:
            xpad = np.zeros((n, h + 2 * ph, wd + 2 * pw, c), dtype=self._np_dtype)
            xpad[:, ph : ph + h, pw : pw + wd, :] = x
        else:
            xpad = np.ascontiguousarray(x, dtype=self._np_dtype)
        s_n, s_h, s_w, s_c = xpad.strides
        og, rows = o // groups, kh * kw * cg
        wmat = w.reshape(rows, o)  # HWIO is already (K_h·K_w·C/g, O), rows ordered (p, q, c)
        out = np.empty((n, ho, wo, o), dtype=self._np_dtype)
        out2d = out.reshape(n * ho * wo, o)
        nb = _micro_batch(n, ho * wo * rows * self._np_dtype.itemsize)
        patches = np.empty((nb * ho * wo, rows), dtype=self._np_dtype)
        for n0 in range(0, n, nb):
            m = min(nb, n - n0)
            m_rows = slice(n0 * ho * wo, (n0 + m) * ho * wo)
            windows = as_strided(
                xpad[n0:],
                shape=(m, ho, wo, kh, kw, c),
                strides=(s_n, s_h * sh, s_w * sw, s_h, s_w, s_c),
                writeable=False,
            )
            cols = patches[: m * ho * wo]
            for g in range(groups):
                np.copyto(cols.reshape(m, ho, wo, kh, kw, cg), windows[..., g * cg : (g + 1) * cg])
                np.matmul(cols, wmat[:, g * og : (g + 1) * og], out=out2d[m_rows, g * og : (g + 1) * og])
        if b is not None:
            out2d += b
        if relu:
            np.maximum(out2d, 0, out=out2d)
        return out

    def max_pool2d(self, x, kernel, stride, ceil_mode):
        """NHWC, separable: a running maximum over the ``K_w`` column views, then over the ``K_h`` row views."""
        kh, kw = pair(kernel, "kernel", "max_pool2d")
        sh, sw = pair(stride, "stride", "max_pool2d")
        _check(min(kh, kw, sh, sw) >= 1, "max_pool2d", f"kernel and stride must be positive, got kernel={kernel}, stride={stride}")
        _check(x.ndim == 4, "max_pool2d", f"x must be 4-D NHWC, got shape {x.shape}")
        n, h, w, c = x.shape
        _check(h >= kh and w >= kw, "max_pool2d", f"input {h}x{w} is smaller than the kernel {kh}x{kw}")
        ho, wo = pool_output_size(h, kh, sh, ceil_mode), pool_output_size(w, kw, sw, ceil_mode)
        need_h, need_w = (ho - 1) * sh + kh, (wo - 1) * sw + kw
        if need_h > h or need_w > w:
            padded = np.full((n, max(h, need_h), max(w, need_w), c), -np.inf, dtype=x.dtype)
            padded[:, :h, :w, :] = x
            x = padded
        cols = np.array(x[:, :need_h, 0 : sw * (wo - 1) + 1 : sw, :])  # (N, rows, W_out, C)
        for j in range(1, kw):
            np.maximum(cols, x[:, :need_h, j : j + sw * (wo - 1) + 1 : sw, :], out=cols)
        out = np.array(cols[:, 0 : sh * (ho - 1) + 1 : sh])
        for i in range(1, kh):
            np.maximum(out, cols[:, i : i + sh * (ho - 1) + 1 : sh], out=out)
        return out

    def lrn(self, x, size, alpha, beta, k):
        """NHWC: shifted in-place adds along C for the window sum, in cache-sized blocks of pixels."""
        _check(isinstance(size, int) and size >= 1, "lrn", f"size must be a positive int, got {size!r}")
        _check(x.ndim >= 2, "lrn", f"x must have a channel axis, got shape {x.shape}")
        c = x.shape[-1]
        lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
        rows = np.ascontiguousarray(x, dtype=self._np_dtype).reshape(-1, c)
        out = np.empty_like(rows)
        block = max(1, LRN_BLOCK_BYTES // (c * self._np_dtype.itemsize))
        sq = np.empty((min(block, len(rows)), c), dtype=self._np_dtype)
        s = np.empty_like(sq)
        for r0 in range(0, len(rows), block):
            xs = rows[r0 : r0 + block]
            q, t = sq[: len(xs)], s[: len(xs)]
            np.square(xs, out=q)
            t[...] = q
            for d in range(1, min(lo, c - 1) + 1):  # channels below c
                t[:, d:] += q[:, :-d]
            for d in range(1, min(hi, c - 1) + 1):  # channels above c
                t[:, :-d] += q[:, d:]
            t *= alpha / size
            t += k
            if beta == 0.75:
                np.sqrt(t, out=q)
                np.sqrt(q, out=t)
                t *= q  # t^(3/4) = √t · √√t
                np.divide(xs, t, out=out[r0 : r0 + block])
            else:
                np.log(t, out=t)
                t *= -beta
                np.exp(t, out=t)
                np.multiply(xs, t, out=out[r0 : r0 + block])
        return out.reshape(x.shape)

    def linear(self, x, w, b, relu):
        """``x @ w.T`` through BLAS (GEMV for one row); bias and ReLU in place."""
        _check(x.ndim == 2 and w.ndim == 2, "linear", f"x and w must be 2-D, got {x.shape} and {w.shape}")
        _check(x.shape[1] == w.shape[1], "linear", f"x has {x.shape[1]} features but w expects {w.shape[1]}")
        _check(b is None or b.shape == (w.shape[0],), "linear", f"b must have shape ({w.shape[0]},), got {None if b is None else b.shape}")
        y = (w @ x[0])[None, :] if x.shape[0] == 1 else x @ w.T
        if b is not None:
            y += b
        if relu:
            np.maximum(y, 0, out=y)
        return y

    def describe(self) -> dict[str, str]:
        blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
        return {
            "numpy": np.__version__,
            "blas": f"{blas.get('name', '?')} {blas.get('version', '')}".strip(),
            "dtype": self.dtype,
            "layout": "NHWC activations, HWIO conv weights",
        }
