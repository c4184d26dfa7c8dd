"""Reference ops in pure Array API: the math of every op, documented once.

These functions run on any namespace that follows the Python Array API
standard (NumPy, array-api-strict, CuPy, PyTorch through array-api-compat …)
and use only what the standard has: slicing with steps, ``concat``,
``stack``, ``reshape``, ``matmul``, ``maximum``. They are written for
clarity, not speed. Run on NumPy in float64 they are the oracle of the
conformance suite (:mod:`alexnet_aa.testing`).

Layout is NCHW throughout; conv weights are OIHW ``(O, C/g, K_h, K_w)``,
linear weights ``(F_out, F_in)``.

Notation: batch ``N``, channels ``C``, height and width ``H, W``; output
channels ``O``; kernel ``K_h × K_w``; stride ``S``; padding ``P``; groups ``g``.
"""

from __future__ import annotations

from array_api_compat import array_namespace, device

from .architecture import pool_output_size
from .backend import pair


def _check_rank(x, rank: int, what: str, op: str) -> None:
    if x.ndim != rank:
        raise ValueError(f"[{op}] {what} must have rank {rank}, got shape {tuple(x.shape)}")


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


def conv2d(x, w, b=None, stride=1, padding=0, groups: int = 1, relu: bool = False):
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
    >>> y = conv2d(np.ones((2, 4, 7, 7)), np.ones((6, 2, 3, 3)), np.zeros(6), stride=2, padding=1, groups=2)
    >>> y.shape
    (2, 6, 4, 4)
    """
    xp = array_namespace(x, w) if b is None else array_namespace(x, w, b)
    _check_rank(x, 4, "x", "conv2d")
    _check_rank(w, 4, "w", "conv2d")
    sh, sw = pair(stride, "stride", "conv2d", minimum=1)
    ph, pw = pair(padding, "padding", "conv2d")
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    if groups < 1 or c % groups or o % groups:
        raise ValueError(f"[conv2d] groups={groups} must divide in_channels={c} and out_channels={o}")
    if cg * groups != c:
        raise ValueError(
            f"[conv2d] x has {c} channels but w expects {cg * groups} (groups={groups} × {cg})"
        )
    if b is not None and tuple(b.shape) != (o,):
        raise ValueError(f"[conv2d] b must have shape ({o},), got {tuple(b.shape)}")
    ho = (h + 2 * ph - kh) // sh + 1
    wo = (wd + 2 * pw - kw) // sw + 1
    if ho < 1 or wo < 1:
        raise ValueError(
            f"[conv2d] input {h}x{wd} with padding {ph},{pw} is smaller than the kernel {kh}x{kw}"
        )
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


def max_pool2d(x, kernel=3, stride=2, ceil_mode: bool = False):
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
    >>> max_pool2d(np.zeros((1, 2, 54, 54)), 3, 2).shape, max_pool2d(np.zeros((1, 2, 54, 54)), 3, 2, ceil_mode=True).shape
    ((1, 2, 26, 26), (1, 2, 27, 27))
    """
    xp = array_namespace(x)
    _check_rank(x, 4, "x", "max_pool2d")
    kh, kw = pair(kernel, "kernel", "max_pool2d", minimum=1)
    sh, sw = pair(stride, "stride", "max_pool2d", minimum=1)
    n, c, h, w = x.shape
    if h < kh or w < kw:
        raise ValueError(f"[max_pool2d] input {h}x{w} is smaller than the kernel {kh}x{kw}")
    ho = pool_output_size(h, kh, sh, ceil_mode)
    wo = pool_output_size(w, kw, sw, ceil_mode)
    x = _pad_hw(x, 0, max(0, (ho - 1) * sh + kh - h), 0, max(0, (wo - 1) * sw + kw - w), -float("inf"), xp)
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
    if x.ndim < 2:
        raise ValueError(f"[lrn] x must have a channel axis 1, got shape {tuple(x.shape)}")
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"[lrn] size must be a positive int, got {size!r}")
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
    _check_rank(x, 2, "x", "linear")
    _check_rank(w, 2, "w", "linear")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"[linear] x has {x.shape[1]} features but w expects {w.shape[1]}")
    if b is not None and tuple(b.shape) != (w.shape[0],):
        raise ValueError(f"[linear] b must have shape ({w.shape[0]},), got {tuple(b.shape)}")
    y = xp.matmul(x, w.T)
    if b is not None:
        y = y + b
    return xp.maximum(y, xp.zeros_like(y)) if relu else y
