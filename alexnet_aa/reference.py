"""Reference ops in pure Array API: the math of every op, documented once.

These functions run on any namespace that follows the Python Array API
standard (NumPy, array-api-strict, CuPy, PyTorch through array-api-compat …)
and use only what the standard has: slicing with steps, ``concat``,
``stack``, ``reshape``, ``matmul``, ``maximum``. They are written for
clarity, not speed. :class:`ArrayAPIBackend` (registered as ``array-api``,
part of the core distribution) runs them as a backend; on NumPy in float64 it
is the oracle of the conformance suite (:mod:`alexnet_aa.testing`), with
nothing else installed.

Layout is NCHW throughout; conv weights are OIHW ``(O, C/g, K_h, K_w)``,
linear weights ``(F_out, F_in)``. The functions compute; their arguments are
validated by :mod:`alexnet_aa.ops` (call ``ops.conv2d(backend, …)`` for
checked arguments): kernels, strides and paddings are pairs of ints.

Notation: batch ``N``, channels ``C``, height and width ``H, W``; output
channels ``O``; kernel ``K_h × K_w``; stride ``S``; padding ``P``; groups ``g``.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
from array_api_compat import array_namespace, device

from .architecture import conv_output_size, pool_output_size, pool_overhang
from .arrays import to_numpy
from .backend import Backend


def _pad_hw(x, top: int, bottom: int, left: int, right: int, value: float, xp):
    """NCHW ``x`` padded on H and W with ``value`` (built with ``concat``: no item assignment)."""
    n, c, h, w = x.shape

    def block(rows: int, cols: int):
        return xp.full((n, c, rows, cols), value, dtype=x.dtype, device=device(x))

    if top or bottom:
        parts = ([block(top, w)] if top else []) + [x] + ([block(bottom, w)] if bottom else [])
        x = xp.concat(parts, axis=2)
    if left or right:
        hp = x.shape[2]
        parts = ([block(hp, left)] if left else []) + [x] + ([block(hp, right)] if right else [])
        x = xp.concat(parts, axis=3)
    return x


def _windows(x, kh: int, kw: int, sh: int, sw: int, ho: int, wo: int) -> list:
    """The ``kh·kw`` strided views ``x[:, :, i : i + sh·ho : sh, j : j + sw·wo : sw]``, row-major in (i, j)."""
    return [
        x[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]
        for i in range(kh)
        for j in range(kw)
    ]


def conv2d(x, w, b=None, stride=(1, 1), padding=(0, 0), groups: int = 1, relu: bool = False):
    r"""Grouped 2-D cross-correlation with bias, optionally followed by ReLU.

    Shapes: ``x`` is ``(N, C, H, W)``, ``w`` is ``(O, C/g, K_h, K_w)``,
    ``b`` is ``(O,)``; the result is ``(N, O, H_out, W_out)`` with

    .. math::

        H_{out} = \left\lfloor \frac{H + 2P_h - K_h}{S_h} \right\rfloor + 1, \qquad
        W_{out} = \left\lfloor \frac{W + 2P_w - K_w}{S_w} \right\rfloor + 1

    and, for output channel ``o`` in group ``γ = ⌊o / (O/g)⌋``,

    .. math::

        y_{n,o,i,j} = b_o + \sum_{c=0}^{C/g-1} \sum_{p=0}^{K_h-1} \sum_{q=0}^{K_w-1}
            w_{o,c,p,q} \; \tilde x_{n,\, γ C/g + c,\, S_h i + p - P_h,\, S_w j + q - P_w}

    where :math:`\tilde x` is ``x`` extended by zeros outside ``[0, H) × [0, W)``.
    With ``relu=True`` the result is :math:`\max(y, 0)`. This is what deep
    learning libraries call convolution (no kernel flip), as in Caffe and
    PyTorch. Groups split input and output channels into ``g`` independent
    convolutions: AlexNet's two-GPU split (Krizhevsky et al. 2012, §3.2).

    Implemented as im2col: the ``K_h·K_w`` strided views of the padded input
    are stacked into a ``(N, C·K_h·K_w, H_out·W_out)`` matrix (rows ordered
    ``(c, p, q)``, matching ``w.reshape(O, -1)``) and multiplied by each
    group's weight matrix.

    >>> import numpy as np
    >>> y = conv2d(np.ones((2, 4, 7, 7)), np.ones((6, 2, 3, 3)), np.zeros(6), stride=(2, 2), padding=(1, 1), groups=2)
    >>> y.shape
    (2, 6, 4, 4)
    """
    xp = array_namespace(x, w) if b is None else array_namespace(x, w, b)
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    ho, wo = conv_output_size(h, kh, sh, ph), conv_output_size(wd, kw, sw, pw)
    xpad = _pad_hw(x, ph, ph, pw, pw, 0.0, xp)
    cols = xp.stack(_windows(xpad, kh, kw, sh, sw, ho, wo), axis=2)  # (N, C, K_h·K_w, H_out, W_out)
    cols = xp.reshape(cols, (n, c * kh * kw, ho * wo))
    og, rows = o // groups, cg * kh * kw
    wmat = xp.reshape(w, (o, rows))
    ys = [
        xp.matmul(wmat[gi * og : (gi + 1) * og, :], cols[:, gi * rows : (gi + 1) * rows, :])
        for gi in range(groups)
    ]
    y = xp.reshape(xp.concat(ys, axis=1), (n, o, ho, wo))
    if b is not None:
        y = y + xp.reshape(b, (1, o, 1, 1))
    return xp.maximum(y, xp.zeros_like(y)) if relu else y


def max_pool2d(x, kernel=(3, 3), stride=(2, 2), ceil_mode: bool = False):
    r"""2-D max pooling without padding, in floor or ceil mode.

    ``x`` is ``(N, C, H, W)``; the result is ``(N, C, H_out, W_out)``,
    :math:`y_{n,c,i,j} = \max_{0 \le p < K_h,\, 0 \le q < K_w} \tilde x_{n,c,S_h i+p,\,S_w j+q}`.

    Floor mode (the default, PyTorch's and the paper's):

    .. math:: H_{out} = \left\lfloor \frac{H - K_h}{S_h} \right\rfloor + 1

    Ceil mode (Caffe's):

    .. math:: H_{out} = \left\lceil \frac{H - K_h}{S_h} \right\rceil + 1,

    less one when that last window would start at or beyond ``H`` (every
    window must start inside the input: the PyTorch/ONNX rule). Windows that
    run past the edge see :math:`\tilde x = -\infty` there, so they take the
    max of their in-range elements. AlexNet's pools are *overlapping*
    (``K = 3 > S = 2``, Krizhevsky et al. 2012, §3.4). At the canonical input
    sizes floor and ceil agree; at 54 they differ (26 vs 27).

    >>> import numpy as np
    >>> x = np.zeros((1, 2, 54, 54))
    >>> max_pool2d(x, (3, 3), (2, 2)).shape, max_pool2d(x, (3, 3), (2, 2), ceil_mode=True).shape
    ((1, 2, 26, 26), (1, 2, 27, 27))
    """
    xp = array_namespace(x)
    (kh, kw), (sh, sw) = kernel, stride
    n, c, h, w = x.shape
    ho = pool_output_size(h, kh, sh, ceil_mode)
    wo = pool_output_size(w, kw, sw, ceil_mode)
    x = _pad_hw(x, 0, pool_overhang(h, kh, sh, ceil_mode), 0, pool_overhang(w, kw, sw, ceil_mode), -float("inf"), xp)
    views = _windows(x, kh, kw, sh, sw, ho, wo)
    y = views[0]
    for v in views[1:]:
        y = xp.maximum(y, v)
    return y


def lrn(x, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
    r"""Local response normalisation across channels.

    ``x`` is ``(N, C, H, W)`` (any rank ≥ 2 with channels on axis 1 works);
    the result has the same shape:

    .. math::

        b_{m,c,i,j} = a_{m,c,i,j} \Big/ \Big(k + \frac{\alpha}{n}
            \sum_{c'=\max(0,\, c - \lfloor (n-1)/2 \rfloor)}^{\min(C-1,\, c + \lceil (n-1)/2 \rceil)}
            a_{m,c',i,j}^2\Big)^{\beta}

    with ``n = size`` and ``m`` the image of the batch. This is the ONNX / Caffe / PyTorch convention: α is
    divided by the window size. Krizhevsky et al. (2012, §3.3) write the sum
    without ``1/n`` (their α = 1e-4 with k = 2), so the ``paper`` variant
    passes ``alpha = 5 · 1e-4`` to this op. TensorFlow's
    ``local_response_normalization`` (``depth_radius``, no ``1/n``, window
    ``2r + 1``) is a different parametrisation of the same family. For even
    ``size`` the window reaches one channel further up than down, as ONNX
    specifies; PyTorch's ``local_response_norm`` reaches one further *down*
    (``c − ⌊n/2⌋ … c + ⌊(n−1)/2⌋``), so the two agree for odd sizes only
    (AlexNet's is 5; Caffe allows odd sizes only).

    >>> import numpy as np
    >>> float(lrn(np.full((1, 3, 1, 1), 2.0), size=3, alpha=3.0, beta=1.0, k=1.0)[0, 1, 0, 0])
    0.153846...
    """
    xp = array_namespace(x)
    c = x.shape[1]
    lo = (size - 1) // 2
    hi = size - 1 - lo
    sq = x * x
    zeros_shape = (x.shape[0], 1) + tuple(x.shape[2:])
    zero = xp.zeros(zeros_shape, dtype=x.dtype, device=device(x))
    padded = xp.concat([zero] * lo + [sq] + [zero] * hi, axis=1)
    window = padded[:, 0:c, ...]
    for d in range(1, size):
        window = window + padded[:, d : d + c, ...]
    return x / (k + (alpha / size) * window) ** beta


def linear(x, w, b=None, relu: bool = False):
    r"""Fully connected layer :math:`y = x W^\top + b`, optionally followed by ReLU.

    ``x`` is ``(N, F_in)``, ``w`` is ``(F_out, F_in)`` (PyTorch's and Caffe's
    order), ``b`` is ``(F_out,)``; the result is ``(N, F_out)``:
    :math:`y_{n,o} = b_o + \sum_f x_{n,f} w_{o,f}`.

    >>> import numpy as np
    >>> linear(np.ones((2, 3)), np.ones((4, 3)), np.zeros(4)).shape
    (2, 4)
    """
    xp = array_namespace(x, w) if b is None else array_namespace(x, w, b)
    y = xp.matmul(x, w.T)
    if b is not None:
        y = y + b
    return xp.maximum(y, xp.zeros_like(y)) if relu else y


# -- the reference as a backend -----------------------------------------------------------


def _resolve_namespace(namespace: str | Any) -> Any:
    """A module name or namespace → the namespace ``array_namespace`` gives for its arrays
    (``"numpy"`` and the ``numpy`` module both → ``array_api_compat.numpy``)."""
    if isinstance(namespace, str):
        try:
            namespace = importlib.import_module(namespace)
        except ImportError as exc:
            raise ValueError(f"[array-api] namespace: expected an importable array library, got {namespace!r}: {exc}") from exc
    try:
        return array_namespace(namespace.asarray(0.0))
    except (AttributeError, TypeError) as exc:
        raise ValueError(f"[array-api] namespace: expected an Array API namespace, got {namespace!r}: {exc}") from exc


class ArrayAPIBackend(Backend):
    """The reference ops above, NCHW, on the namespace of your choice.

    ``ArrayAPIBackend(namespace="numpy", dtype="float32")``: ``namespace`` is a
    module name (``"numpy"``, ``"array_api_strict"``, ``"cupy"``, ``"torch"``, …)
    or a module; NumPy, CuPy and PyTorch go through their array-api-compat
    wrappers. With ``dtype="float64"`` on NumPy it is the conformance oracle.
    Weights keep the canonical layouts (OIHW, ``(out, in)``).
    """

    name = "array-api"
    layout = "NCHW"

    def __init__(self, namespace: str | Any = "numpy", dtype: str = "float32") -> None:
        if dtype not in ("float32", "float64"):
            raise ValueError(f"[array-api] dtype: expected 'float32' or 'float64', got {dtype!r}")
        self._xp = _resolve_namespace(namespace)
        self.dtype = dtype
        self.namespace = getattr(self._xp, "__name__", repr(self._xp))

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return True, ""

    @property
    def xp(self) -> Any:
        return self._xp

    def asarray(self, x: Any) -> Any:
        xp = self._xp
        return xp.astype(xp.asarray(x), getattr(xp, self.dtype))

    def to_host(self, x: Any) -> np.ndarray:
        return to_numpy(x)

    def conv2d(self, x, w, b, stride, padding, groups, relu):
        return conv2d(x, w, b, stride, padding, groups, relu)

    def max_pool2d(self, x, kernel, stride, ceil_mode):
        return max_pool2d(x, kernel, stride, ceil_mode)

    def lrn(self, x, size, alpha, beta, k):
        return lrn(x, size, alpha, beta, k)

    def linear(self, x, w, b, relu):
        return linear(x, w, b, relu)

    def describe(self) -> dict[str, str]:
        return {"namespace": self.namespace, "ops": "alexnet_aa.reference (im2col + matmul)"}
