"""LRN across channels for NHWC MLX arrays: the fused Metal kernel and its plain-``mx`` reference.

Two implementations of :func:`alexnet_aa.reference.lrn` (where the math is
documented), both on NHWC arrays (channels on the last axis):

``lrn_composed``
    plain ``mlx.core`` ops: square, zero-pad the channel axis by
    ``⌊(size−1)/2⌋`` below and ``⌈(size−1)/2⌉`` above, add the ``size``
    shifted slices (no cumulative sum: a cumsum difference loses float32
    digits when the running sum is large), then ``x · (k + α/n · Σ)^(−β)``.
    Runs on every MLX device; the backend's fallback and the kernel's oracle.

``lrn``
    one ``mx.fast.metal_kernel``, ``lrn_forward_nhwc_float32``: one thread per
    output element, the window sum of squares accumulated in float32 registers,
    ``metal::precise::pow`` for the power. Metal only (Apple silicon).

The kernel takes and returns float32 only; a half-precision backend casts its
input up before calling either implementation and the result back down
(``MLXBackend.lrn``), so the window sum and the power are float32 on every path.

Kernel conventions: the source below is only the kernel *body* (MLX generates
the signature); arguments carry layout suffixes (``x_nhwc``, ``y_nhwc``);
``params = [k, α/n, β]`` is a 3-element float32 array; the window size is the
template parameter ``SIZE``, so each size is its own instantiation of the one
library. The kernel object is built once per name (module-level, lazily) and
reused: MLX keyed its kernel cache by name (ml-explore/mlx PRs 2242, 3833), so
each variant has a distinct name, ``lrn_forward_nhwc_<dtype>``.

A kernel that fails to build or disagrees with :func:`lrn_composed` on a
small probe is reported by :func:`metal_lrn_status` and never used: callers
fall back to :func:`lrn_composed` with a warning.
"""

from __future__ import annotations

import functools
import threading
import warnings
from typing import Any

__all__ = ["KERNEL_NAMES", "lrn", "lrn_backward_composed", "lrn_composed", "lrn_differentiable", "metal_lrn_status"]

#: One kernel per compute dtype: the names MLX caches libraries under.
KERNEL_NAMES = {"float32": "lrn_forward_nhwc_float32"}

#: Body of ``lrn_forward_nhwc_<dtype>``; MLX writes the signature
#: ``(const device float* x_nhwc, const constant float* params, device float* y_nhwc, uint3 thread_position_in_grid)``.
LRN_FORWARD_NHWC_SOURCE = """
    // lrn_forward_nhwc: y[n,h,w,c] = x[n,h,w,c] * (k + alpha_n * sum_{c' in window(c)} x[n,h,w,c']^2)^(-beta)
    // window(c) = [c - (SIZE-1)/2, c + SIZE/2] clipped to [0, C).  One thread per element.
    const uint64_t elem = thread_position_in_grid.x;
    const int C = x_nhwc_shape[3];
    const uint64_t total = uint64_t(x_nhwc_shape[0]) * x_nhwc_shape[1] * x_nhwc_shape[2] * C;
    if (elem >= total) {
        return;
    }
    const int c = int(elem % uint64_t(C));
    const uint64_t pixel = elem - uint64_t(c);
    const int lo = metal::max(c - (SIZE - 1) / 2, 0);
    const int hi = metal::min(c + SIZE / 2, C - 1);
    float acc = 0.0f;
    for (int cc = lo; cc <= hi; ++cc) {
        const float a = float(x_nhwc[pixel + uint64_t(cc)]);
        acc = metal::fma(a, a, acc);
    }
    const float base = params[0] + params[1] * acc;
    y_nhwc[elem] = T(float(x_nhwc[elem]) * metal::precise::pow(base, -params[2]));
"""

_THREADS_PER_GROUP = 256

_lock = threading.Lock()
_kernels: dict[str, Any] = {}
#: ``None`` until probed; then ``(True, "")`` or ``(False, why)``.
_status: tuple[bool, str] | None = None


def _window_sum(a, lo: int, hi: int):
    """``Σ a[..., c']`` over ``c' = c − lo … c + hi`` clipped to the last axis: zero-pad, then shifted adds."""
    import mlx.core as mx

    c = a.shape[-1]
    if lo or hi:
        a = mx.pad(a, [(0, 0)] * (a.ndim - 1) + [(lo, hi)])
    window = a[..., 0:c]
    for d in range(1, lo + hi + 1):
        window = window + a[..., d : d + c]
    return window


def _base(x_nhwc, size: int, alpha: float, k: float):
    """``s = k + α/n · Σ_{W(c)} x²`` over the forward window."""
    lo = (size - 1) // 2
    return k + (alpha / size) * _window_sum(x_nhwc * x_nhwc, lo, size - 1 - lo)


def lrn_composed(x_nhwc, size: int, alpha: float, beta: float, k: float):
    """LRN across the last axis with plain ``mx`` ops (shifted adds). See :func:`alexnet_aa.reference.lrn`."""
    import mlx.core as mx

    return x_nhwc * mx.power(_base(x_nhwc, size, alpha, k), -beta)


def lrn_backward_composed(x_nhwc, y_nhwc, dy_nhwc, size: int, alpha: float, beta: float, k: float):
    """The gradient of LRN with plain ``mx`` ops: ``dy·s^−β − (2αβ/n)·x·Σ_T(dy·y/s)`` over the
    transposed window ``T``. See :func:`alexnet_aa.reference.lrn_backward`."""
    import mlx.core as mx

    lo = (size - 1) // 2
    s = _base(x_nhwc, size, alpha, k)
    transposed = _window_sum(dy_nhwc * y_nhwc / s, size - 1 - lo, lo)
    return dy_nhwc * mx.power(s, -beta) - (2.0 * alpha * beta / size) * x_nhwc * transposed


def lrn_differentiable(x_nhwc, size: int, alpha: float, beta: float, k: float):
    """The Metal kernel (:func:`lrn`) as an MLX function ``mx.grad`` and ``mx.vjp`` can differentiate
    (what the backend's forward ``lrn`` runs under Metal, so a model built on it stays
    differentiable by MLX's own autodiff): a ``mx.fast.metal_kernel`` has no VJP of its own, so an
    ``mx.custom_function`` gives it :func:`lrn_backward_composed`; built once per set of arguments."""
    return _differentiable_lrn(size, alpha, beta, k)(x_nhwc)


@functools.cache
def _differentiable_lrn(size: int, alpha: float, beta: float, k: float):
    import mlx.core as mx

    @mx.custom_function
    def forward(x):
        return lrn(x, size, alpha, beta, k)

    @forward.vjp
    def backward(x, dy, y):  # one input: MLX passes the arrays themselves
        return (lrn_backward_composed(x, y, dy, size, alpha, beta, k),)

    return forward


def _kernel(dtype_name: str):
    """The ``lrn_forward_nhwc_<dtype>`` kernel object, built on first use and reused."""
    name = KERNEL_NAMES[dtype_name]
    kernel = _kernels.get(name)
    if kernel is None:
        import mlx.core as mx

        with _lock:
            kernel = _kernels.get(name)
            if kernel is None:
                kernel = mx.fast.metal_kernel(
                    name=name,
                    input_names=["x_nhwc", "params"],
                    output_names=["y_nhwc"],
                    source=LRN_FORWARD_NHWC_SOURCE,
                    ensure_row_contiguous=True,
                )
                _kernels[name] = kernel
    return kernel


def lrn(x_nhwc, size: int, alpha: float, beta: float, k: float):
    """LRN across the last axis with the fused Metal kernel ``lrn_forward_nhwc_float32``.

    Metal only; call :func:`metal_lrn_status` first (the backend does). ``x_nhwc`` must be
    float32 (the only instantiation): a half-precision caller casts up first.
    See :func:`alexnet_aa.reference.lrn` for the math.
    """
    import mlx.core as mx

    if x_nhwc.dtype != mx.float32:
        raise TypeError(f"[lrn] {KERNEL_NAMES['float32']}: expected a float32 x_nhwc (cast half precision up first), "
                        f"got {x_nhwc.dtype}")
    params = mx.array([k, alpha / size, beta], dtype=mx.float32)
    (y_nhwc,) = _kernel("float32")(
        inputs=[x_nhwc, params],
        template=[("T", mx.float32), ("SIZE", int(size))],
        grid=(x_nhwc.size, 1, 1),
        threadgroup=(min(_THREADS_PER_GROUP, max(1, x_nhwc.size)), 1, 1),
        output_shapes=[x_nhwc.shape],
        output_dtypes=[mx.float32],
    )
    return y_nhwc


def metal_lrn_status() -> tuple[bool, str]:
    """``(True, "")`` when the Metal LRN kernel builds and matches :func:`lrn_composed` here.

    Probed once per process (lazily): without Metal it answers
    ``(False, "Metal not available on this machine")`` without building
    anything; a kernel that fails to compile or to agree is reported with
    a :class:`RuntimeWarning` and its reason, never raised.
    """
    global _status
    if _status is not None:
        return _status
    import mlx.core as mx

    if not mx.metal.is_available():
        _status = (False, "Metal not available on this machine")
        return _status
    try:
        x = mx.random.normal((2, 3, 2, 7), key=mx.random.key(0)) * 3.0
        worst = 0.0
        for size, alpha, beta, k in ((5, 0.5, 0.75, 2.0), (4, 0.3, 0.5, 1.0), (1, 0.2, 1.0, 1.5)):
            got = lrn(x, size, alpha, beta, k)
            want = lrn_composed(x, size, alpha, beta, k)
            err = (mx.linalg.norm((got - want).flatten()) / mx.linalg.norm(want.flatten())).item()
            worst = max(worst, err)
        if not worst < 1e-5:
            raise RuntimeError(f"disagrees with the composed LRN (relative L2 error {worst:.3g})")
        _status = (True, "")
    except Exception as exc:  # noqa: BLE001 - any failure means: do not use the kernel
        _status = (False, f"Metal LRN kernel unusable ({type(exc).__name__}: {exc})")
        warnings.warn(f"[lrn] {_status[1]}; falling back to composed mx ops", RuntimeWarning, stacklevel=3)
    return _status
