r"""Reference ops in pure Array API: the math of every op, documented once.

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

Each op has its backward twin beside it (``conv2d_backward``, …), taking what
the forward saw — its input ``x``, its weights, its output ``y`` — and the
gradient of the loss with respect to that output, ``dy`` (:math:`\bar y`
below: :math:`\bar v = \partial L / \partial v`), and returning the
gradients with respect to its inputs and weights (DESIGN.md §8). With
``relu=True``, ``dy`` is first masked by ``y > 0``. These are the float64
oracle of the gradient conformance cases, checked against central finite
differences in ``tests/test_gradients.py``.
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


def _relu_mask(y, dy, relu: bool, xp):
    """``dy`` where ``y > 0`` and 0 elsewhere with ``relu``; ``dy`` itself without (ReLU's backward)."""
    return xp.where(y > 0, dy, xp.zeros_like(dy)) if relu else dy


def _slice_add(target, index: tuple, value, xp):
    """``target[index] += value``, as Array API setitem (a strided slice of ``target`` is updated)."""
    target[index] = target[index] + value
    return target


def _tap(i: int, j: int, sh: int, sw: int, ho: int, wo: int) -> tuple:
    """The index of tap ``(i, j)``'s strided view: ``[:, :, i : i + S_h(H_out−1)+1 : S_h, j : …]``."""
    return (slice(None), slice(None), slice(i, i + sh * (ho - 1) + 1, sh), slice(j, j + sw * (wo - 1) + 1, sw))


def conv2d_backward(x, w, y, dy, stride=(1, 1), padding=(0, 0), groups: int = 1, relu: bool = False,
                    need_dx: bool = True):
    r"""Gradients of :func:`conv2d`: ``(dx or None, dw, db)``.

    With :math:`\bar y` the output's gradient (masked by :math:`y > 0` when
    ``relu``), output channel ``o`` in group ``γ``, and :math:`\tilde x` the
    zero-padded input:

    .. math::

        \bar b_o = \sum_{n,i,j} \bar y_{n,o,i,j}, \qquad
        \bar w_{o,c,p,q} = \sum_{n,i,j} \bar y_{n,o,i,j} \; \tilde x_{n,\, γC/g + c,\, S_h i + p - P_h,\, S_w j + q - P_w}

    .. math::

        \bar x_{n,\, γC/g + c,\, h, w} = \sum_{o \in γ} \sum_{p,q} \sum_{(i,j) \,:\, S_h i + p - P_h = h,\; S_w j + q - P_w = w}
            w_{o,c,p,q} \; \bar y_{n,o,i,j}

    the transposed convolution: each output gradient is spread back over the
    window it came from, with the same weights. Computed as im2col for
    :math:`\bar w` (one matmul per group, summed over the batch) and col2im
    for :math:`\bar x`: ``wᵀ ȳ`` gives each tap's column, added into the
    padded input gradient at the tap's strided view (pixels no window reads,
    when :math:`(H + 2P - K) \bmod S \ne 0`, get 0), then cropped. ``need_dx=False``
    (AlexNet's conv1) skips :math:`\bar x`.

    >>> import numpy as np
    >>> x, w = np.ones((2, 4, 7, 7)), np.ones((6, 2, 3, 3))
    >>> y = conv2d(x, w, None, (2, 2), (1, 1), 2)
    >>> dx, dw, db = conv2d_backward(x, w, y, np.ones_like(y), (2, 2), (1, 1), 2)
    >>> dx.shape, dw.shape, db.shape, float(db[0])
    ((2, 4, 7, 7), (6, 2, 3, 3), (6,), 32.0)
    """
    xp = array_namespace(x, w, dy)
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    ho, wo = dy.shape[2], dy.shape[3]
    g = _relu_mask(y, dy, relu, xp)
    db = xp.sum(g, axis=(0, 2, 3))
    xpad = _pad_hw(x, ph, ph, pw, pw, 0.0, xp)
    cols = xp.reshape(xp.stack(_windows(xpad, kh, kw, sh, sw, ho, wo), axis=2), (n, c * kh * kw, ho * wo))
    og, rows = o // groups, cg * kh * kw
    gm = xp.reshape(g, (n, o, ho * wo))
    wmat = xp.reshape(w, (o, rows))
    dws, dcols = [], []
    for gi in range(groups):
        g_out, g_rows = gm[:, gi * og : (gi + 1) * og, :], cols[:, gi * rows : (gi + 1) * rows, :]
        dws.append(xp.sum(xp.matmul(g_out, xp.permute_dims(g_rows, (0, 2, 1))), axis=0))  # (O/g, rows)
        if need_dx:
            dcols.append(xp.matmul(xp.permute_dims(wmat[gi * og : (gi + 1) * og, :], (1, 0)), g_out))  # (N, rows, P)
    dw = xp.reshape(xp.concat(dws, axis=0), (o, cg, kh, kw))
    if not need_dx:
        return None, dw, db
    dcol = xp.reshape(xp.concat(dcols, axis=1), (n, c, kh * kw, ho, wo))
    dxpad = xp.zeros(tuple(xpad.shape), dtype=x.dtype, device=device(x))
    for t in range(kh * kw):
        dxpad = _slice_add(dxpad, _tap(t // kw, t % kw, sh, sw, ho, wo), dcol[:, :, t, :, :], xp)
    return dxpad[:, :, ph : ph + h, pw : pw + wd], dw, db


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


def max_pool2d_backward(x, y, dy, kernel=(3, 3), stride=(2, 2), ceil_mode: bool = False):
    r"""Gradient of :func:`max_pool2d` with respect to ``x``.

    Each window's gradient goes to **one** input element, the first maximum of
    the window in row-major order (Caffe's and PyTorch's rule; the Array API's
    ``argmax`` returns the first occurrence), never to every tied element:

    .. math::

        \bar x_{n,c,h,w} = \sum_{(i,j) \,:\, (h, w) = \arg\max_{(p,q)} \tilde x_{n,c,S_h i+p,\, S_w j+q}} \bar y_{n,c,i,j}

    so overlapping windows (``K > S``) may send several gradients to one
    element. Windows past the edge in ceil mode see −∞ there, as in the forward.

    >>> import numpy as np
    >>> x = np.array([[[[1.0, 3.0, 3.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0]]]])
    >>> max_pool2d_backward(x, max_pool2d(x, (2, 2), (1, 1)), np.ones((1, 1, 2, 2)), (2, 2), (1, 1))[0, 0]
    array([[0., 2., 0.],
           [0., 2., 0.],
           [0., 0., 0.]])

    (The top-right window holds two 3s: the left one, first in row-major
    order, takes its gradient.)
    """
    xp = array_namespace(x, dy)
    (kh, kw), (sh, sw) = kernel, stride
    n, c, h, w = x.shape
    ho, wo = dy.shape[2], dy.shape[3]
    xpad = _pad_hw(x, 0, pool_overhang(h, kh, sh, ceil_mode), 0, pool_overhang(w, kw, sw, ceil_mode), -float("inf"), xp)
    first = xp.argmax(xp.stack(_windows(xpad, kh, kw, sh, sw, ho, wo), axis=0), axis=0)  # (N, C, H_out, W_out)
    zero = xp.zeros_like(dy)
    dxpad = xp.zeros(tuple(xpad.shape), dtype=x.dtype, device=device(x))
    for t in range(kh * kw):
        dxpad = _slice_add(dxpad, _tap(t // kw, t % kw, sh, sw, ho, wo), xp.where(first == t, dy, zero), xp)
    return dxpad[:, :, :h, :w]


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
    lo = (size - 1) // 2
    return x / (k + (alpha / size) * _channel_window_sum(x * x, lo, size - 1 - lo, xp)) ** beta


def _channel_window_sum(a, lo: int, hi: int, xp):
    """``Σ a_{c'}`` over ``c' = c − lo … c + hi`` clipped to the channels (axis 1): ``lo + hi``
    shifted adds of the zero-padded array."""
    c = a.shape[1]
    zero = xp.zeros((a.shape[0], 1) + tuple(a.shape[2:]), dtype=a.dtype, device=device(a))
    padded = xp.concat([zero] * lo + [a] + [zero] * hi, axis=1)
    window = padded[:, 0:c, ...]
    for d in range(1, lo + hi + 1):
        window = window + padded[:, d : d + c, ...]
    return window


def lrn_backward(x, y, dy, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
    r"""Gradient of :func:`lrn` with respect to ``x``.

    With :math:`s_c = k + \frac{\alpha}{n} \sum_{c' \in W(c)} a_{c'}^2` and
    :math:`b_c = a_c s_c^{-\beta}`, where :math:`W(c) = [c - \ell, c + u]`,
    :math:`\ell = \lfloor (n-1)/2 \rfloor`, :math:`u = \lceil (n-1)/2 \rceil`:

    .. math::

        \bar a_c = \bar b_c \, s_c^{-\beta}
            - \frac{2 \alpha \beta}{n} \, a_c \sum_{j \,:\, c \in W(j)} \bar b_j \, \frac{b_j}{s_j}

    (:math:`b_j / s_j = a_j s_j^{-\beta - 1}`). The sum runs over the
    **transposed window** :math:`\{j : c \in W(j)\} = [c - u, c + \ell]`: for
    odd ``n`` it is :math:`W(c)` again; for even ``n`` it reaches one channel
    further *down*, not up. Clipped at the channel edges like the forward window.

    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal((1, 6, 2, 2))
    >>> lrn_backward(x, lrn(x, 4, 0.5, 0.75, 1.0), np.ones_like(x), 4, 0.5, 0.75, 1.0).shape
    (1, 6, 2, 2)
    """
    xp = array_namespace(x, dy)
    lo = (size - 1) // 2
    hi = size - 1 - lo
    s = k + (alpha / size) * _channel_window_sum(x * x, lo, hi, xp)
    return dy * s ** (-beta) - (2.0 * alpha * beta / size) * x * _channel_window_sum(dy * y / s, hi, lo, xp)


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


def linear_backward(x, w, y, dy, relu: bool = False, need_dx: bool = True):
    r"""Gradients of :func:`linear`: ``(dx or None, dw, db)``. With :math:`\bar y` masked by
    :math:`y > 0` when ``relu``:

    .. math::

        \bar x = \bar y \, W, \qquad \bar W = \bar y^\top x, \qquad \bar b = \textstyle\sum_n \bar y_n

    >>> import numpy as np
    >>> x, w = np.ones((2, 3)), np.ones((4, 3))
    >>> dx, dw, db = linear_backward(x, w, linear(x, w), np.ones((2, 4)))
    >>> dx.shape, dw.shape, db.tolist()
    ((2, 3), (4, 3), [2.0, 2.0, 2.0, 2.0])
    """
    xp = array_namespace(x, w, dy)
    g = _relu_mask(y, dy, relu, xp)
    dx = xp.matmul(g, w) if need_dx else None
    return dx, xp.matmul(xp.permute_dims(g, (1, 0)), x), xp.sum(g, axis=0)


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

    def conv2d_backward(self, x, w, y, dy, stride, padding, groups, relu, need_dx):
        return conv2d_backward(x, w, y, dy, stride, padding, groups, relu, need_dx)

    def max_pool2d_backward(self, x, y, dy, kernel, stride, ceil_mode):
        return max_pool2d_backward(x, y, dy, kernel, stride, ceil_mode)

    def lrn_backward(self, x, y, dy, size, alpha, beta, k):
        return lrn_backward(x, y, dy, size, alpha, beta, k)

    def linear_backward(self, x, w, y, dy, relu, need_dx):
        return linear_backward(x, w, y, dy, relu, need_dx)

    def describe(self) -> dict[str, str]:
        return {"namespace": self.namespace, "ops": "alexnet_aa.reference (im2col + matmul)"}
