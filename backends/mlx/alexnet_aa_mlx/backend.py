"""The ``mlx`` backend: AlexNet's heavy ops on ``mlx.core``, NHWC.

``MLXBackend(lrn="auto", compile=True)``

* Layout: activations NHWC; conv weights OHWI ``(O, K_h, K_w, C/g)``;
  linear weights ``(F_in, F_out)`` (transposed once, contiguous: ``x @ w``
  ran 1.3× faster than ``x @ w.T`` on the Linux CPU wheel). :meth:`prepare`
  converts the canonical weights once; the ops never transpose weights.
* conv2d: ``mx.conv2d`` per group on channel slices, then ``mx.concatenate``
  (MLX's own ``groups=`` path measured 1.2–1.9× slower here, mlx 0.32.4 CPU);
  bias (+ ReLU) fused by a shapeless ``mx.compile``'d epilogue.
* max_pool2d: separable strided slices + ``mx.maximum`` (first along W, then
  H); ceil mode pads the bottom/right edge with ``-inf`` so that the last
  window, which starts inside the input, takes the max of its real elements.
  MLX's ``nn.MaxPool2d`` has no ceil mode.
* lrn: the fused Metal kernel ``lrn_forward_nhwc_float32`` where Metal is
  available and the kernel passed its probe, else composed ``mx`` ops
  (:mod:`alexnet_aa_mlx.lrn_metal`), run eagerly (compiling it was slower).
* linear: ``mx.addmm(b, x, w)``, then ``mx.maximum`` where ReLU is asked.

The math of every op is on :mod:`alexnet_aa.reference`. Everything is
float32. ``mlx`` is imported only when the backend is constructed or asked
whether it is available.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from alexnet_aa.architecture import pool_output_size
from alexnet_aa.backend import INSTALL_HINTS, Backend, BackendUnavailableError, pair

__all__ = ["MLXBackend", "MIN_MLX_VERSION"]

#: Oldest MLX this backend supports: 0.32.1 fixed Metal custom-kernel cache
#: collisions (PR 3833) and concurrent cache lookups (PR 4043), and integer
#: overflows in conv shape arithmetic and padding (PRs 3938, 4258). See docs/backends/mlx.md.
MIN_MLX_VERSION = (0, 32, 1)


def _version_tuple(text: str) -> tuple[int, ...]:
    """``"0.32.4"`` → ``(0, 32, 4)``; ``"0.33.0.dev2026+abc"`` → ``(0, 33, 0)``."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(g or 0) for g in match.groups()) if match else (0,)


@functools.lru_cache(maxsize=None)
def _bias_relu():
    """``max(y + b, 0)`` as one ``mx.compile``'d (shapeless) kernel, built once.

    Measured on the Linux CPU wheel (mlx 0.32.4): 0.10 ms vs 0.16 ms eager at
    (1, 55, 55, 96), 1.2 ms vs 2.2 ms at batch 8. Compiling the composed LRN
    was slower than running it eagerly (4.7 ms vs 3.0 ms at (1, 55, 55, 96);
    ``mx.power`` is most of either), so the LRN is not compiled.
    """
    import mlx.core as mx

    return mx.compile(lambda y, b: mx.maximum(y + b, 0.0), shapeless=True)


class MLXBackend(Backend):
    """NHWC ops on ``mlx.core`` (Apple silicon GPU, or the CPU / CUDA builds of MLX).

    ``lrn``: ``"auto"`` (the Metal kernel when Metal is available and the
    kernel builds, else composed ops), ``"composed"`` or ``"metal"`` (an error
    where Metal is absent). ``compile``: fuse the conv epilogue (bias + ReLU)
    into one ``mx.compile``'d kernel; results are identical either way.
    """

    name = "mlx"
    layout = "NHWC"
    dtype = "float32"

    def __init__(self, *, lrn: str = "auto", compile: bool = True) -> None:
        if lrn not in ("auto", "composed", "metal"):
            raise ValueError(f"[mlx] lrn must be 'auto', 'composed' or 'metal', got {lrn!r}")
        ok, why = self.available()
        if not ok:
            raise BackendUnavailableError(f"[mlx] backend not available: {why}")
        import mlx.core as mx

        from . import lrn_metal

        self._mx = mx
        self._lrn_metal = lrn_metal
        self._compile = bool(compile)
        self._lrn_mode = lrn
        self._use_metal_lrn: bool | None = None  # decided on first use
        self._lrn_why = ""
        if lrn == "metal" and not mx.metal.is_available():
            raise BackendUnavailableError("[mlx] lrn='metal' asked for, but Metal is not available on this machine")

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
        mx = self._mx
        if isinstance(x, mx.array):
            return x if x.dtype == mx.float32 else x.astype(mx.float32)
        host = np.asarray(x)
        if host.dtype != np.float32 or not host.flags.c_contiguous:
            host = np.ascontiguousarray(host, dtype=np.float32)
        return mx.array(host, dtype=mx.float32)

    def to_host(self, x: Any) -> np.ndarray:
        if isinstance(x, np.ndarray):
            return x
        return np.array(x, copy=True)

    def prepare(self, params: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """4-D OIHW → OHWI, 2-D ``(out, in)`` → ``(in, out)``, 1-D as is; all float32, contiguous, evaluated."""
        mx = self._mx
        out: dict[str, Any] = {}
        for key, value in params.items():
            host = np.asarray(value, dtype=np.float32)
            if host.ndim == 4:
                host = host.transpose(0, 2, 3, 1)
            elif host.ndim == 2:
                host = host.T
            elif host.ndim != 1:
                raise ValueError(f"[prepare] {key}: expected a 1-, 2- or 4-D array, got shape {host.shape}")
            out[key] = mx.array(np.ascontiguousarray(host), dtype=mx.float32)
        mx.eval(list(out.values()))
        return out

    # -- the four ops ---------------------------------------------------------------
    def _epilogue(self, y, b, relu: bool):
        if b is not None and relu and self._compile:
            return _bias_relu()(y, b)
        if b is not None:
            y = y + b
        return self._mx.maximum(y, 0.0) if relu else y

    def conv2d(self, x, w, b, stride, padding, groups: int, relu: bool):
        """NHWC ``x``, OHWI ``w``: ``mx.conv2d`` per group + concatenate, then bias (+ ReLU)."""
        mx = self._mx
        sh, sw = pair(stride, "stride", "conv2d", minimum=1)
        ph, pw = pair(padding, "padding", "conv2d")
        if x.ndim != 4 or w.ndim != 4:
            raise ValueError(
                f"[conv2d] expected NHWC x and OHWI w of rank 4, got x {tuple(x.shape)}, w {tuple(w.shape)}"
            )
        n, h, wd, c = x.shape
        o, kh, kw, cg = w.shape
        if not isinstance(groups, int) or groups < 1 or c % groups or o % groups:
            raise ValueError(f"[conv2d] groups={groups!r} must divide in_channels={c} and out_channels={o}")
        if cg * groups != c:
            raise ValueError(
                f"[conv2d] x has {c} channels (NHWC) but w (OHWI {tuple(w.shape)}) expects "
                f"{cg * groups} (groups={groups} × {cg})"
            )
        if b is not None and tuple(b.shape) != (o,):
            raise ValueError(f"[conv2d] b must have shape ({o},), got {tuple(b.shape)}")
        if (h + 2 * ph - kh) // sh + 1 < 1 or (wd + 2 * pw - kw) // sw + 1 < 1:
            raise ValueError(f"[conv2d] input {h}x{wd} with padding {ph},{pw} is smaller than the kernel {kh}x{kw}")
        if groups == 1:
            y = mx.conv2d(x, w, stride=(sh, sw), padding=(ph, pw))
        else:
            og = o // groups
            y = mx.concatenate(
                [
                    mx.conv2d(
                        x[..., g * cg : (g + 1) * cg], w[g * og : (g + 1) * og], stride=(sh, sw), padding=(ph, pw)
                    )
                    for g in range(groups)
                ],
                axis=-1,
            )
        return self._epilogue(y, b, relu)

    def max_pool2d(self, x, kernel, stride, ceil_mode: bool):
        """NHWC; separable strided slices + ``mx.maximum``; ceil mode pads bottom/right with ``-inf``."""
        mx = self._mx
        kh, kw = pair(kernel, "kernel", "max_pool2d", minimum=1)
        sh, sw = pair(stride, "stride", "max_pool2d", minimum=1)
        if x.ndim != 4:
            raise ValueError(f"[max_pool2d] expected NHWC x of rank 4, got shape {tuple(x.shape)}")
        n, h, w, c = x.shape
        if h < kh or w < kw:
            raise ValueError(f"[max_pool2d] input {h}x{w} is smaller than the kernel {kh}x{kw}")
        ho = pool_output_size(h, kh, sh, ceil_mode)
        wo = pool_output_size(w, kw, sw, ceil_mode)
        pad_h = max(0, (ho - 1) * sh + kh - h)
        pad_w = max(0, (wo - 1) * sw + kw - w)
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
        """NHWC, across the last axis: Metal kernel ``lrn_forward_nhwc_float32`` or composed ``mx`` ops."""
        if x.ndim < 2:
            raise ValueError(
                f"[lrn] expected channels on the last axis of an array of rank >= 2, got shape {tuple(x.shape)}"
            )
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"[lrn] size must be a positive int, got {size!r}")
        size = int(size)
        if x.ndim == 4 and x.dtype == self._mx.float32 and self._metal_lrn_active():
            return self._lrn_metal.lrn(x, size, float(alpha), float(beta), float(k))
        return self._lrn_metal.lrn_composed(x, size, float(alpha), float(beta), float(k))

    def linear(self, x, w, b, relu: bool):
        """``x (N, F_in) @ w (F_in, F_out) + b`` with ``mx.addmm`` (+ ReLU)."""
        mx = self._mx
        if x.ndim != 2 or w.ndim != 2:
            raise ValueError(
                "[linear] expected x (N, F_in) and w (F_in, F_out) of rank 2, "
                f"got x {tuple(x.shape)}, w {tuple(w.shape)}"
            )
        if x.shape[1] != w.shape[0]:
            raise ValueError(
                f"[linear] x has {x.shape[1]} features but w (prepared as (F_in, F_out) = {tuple(w.shape)}) "
                f"expects {w.shape[0]}"
            )
        if b is not None and tuple(b.shape) != (w.shape[1],):
            raise ValueError(f"[linear] b must have shape ({w.shape[1]},), got {tuple(b.shape)}")
        y = mx.matmul(x, w) if b is None else mx.addmm(b, x, w)
        if relu:
            y = mx.maximum(y, 0.0)
        return y

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
        return {
            "mlx": mx.__version__,
            "device": str(mx.default_device()),
            "metal": "yes" if metal else "no",
            "layout": "NHWC activations, OHWI conv weights, (F_in, F_out) linear weights",
            "conv2d": "mx.conv2d per group + concatenate",
            "max_pool2d": "strided slices + mx.maximum (floor and ceil mode)",
            "lrn": lrn,
            "compile": "mx.compile'd conv bias + ReLU epilogue" if self._compile else "off",
        }

