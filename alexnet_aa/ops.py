"""The op layer: one public function per op, between the model and the backends.

``ops.conv2d(backend, x, w, b, stride, padding, groups, relu)`` — and
``max_pool2d``, ``lrn``, ``linear`` — validates every argument once, in one
message style (``[op] what: expected …, got …``), computes the output shape
with the formulas of :mod:`alexnet_aa.architecture`, refuses what the backend
declares it cannot do (``Backend.unsupported``), calls the backend's op with
the arguments normalised (kernels, strides and paddings as pairs of ints,
flags as bools) and checks the shape it returns. A backend only computes.
This is the pattern of Keras 3's ``keras/src/ops/nn.py`` over
``keras/src/backend/<name>/nn.py``.

Arrays are native: of the backend's namespace and dtype, activations in its
``layout``, weights as its ``prepare`` returned them (their sizes are read
through its declared ``conv_weight_layout`` and ``linear_weight_layout``, see
:mod:`alexnet_aa.layouts`). The math of the four heavy ops — notation,
formula, output size, conventions — is documented once, on the reference op
of the same name in :mod:`alexnet_aa.reference`.

The light ops — :func:`adaptive_avg_pool2d`, :func:`flatten`,
:func:`dropout`, :func:`activation` (tanh, sigmoid), :func:`softmax` — are plain Array API code on the
backend's namespace, written here once for every backend; their formulas are
in their docstrings.

:class:`BackendOps` binds one backend: it is what the layer specs of
:mod:`alexnet_aa.architecture` apply themselves through, forward and
backward. Each op's backward twin sits beside it (``conv2d_backward``, …,
validated the same way, plus ``y`` and ``dy`` of the forward's output shape);
a backend without the four backward ops is inference only
(:func:`alexnet_aa.backend.missing_backward_ops`), and they raise
:class:`~alexnet_aa.backend.UnsupportedError` naming what is missing.
:func:`softmax_cross_entropy` is the loss.

>>> import numpy as np
>>> from alexnet_aa.reference import ArrayAPIBackend
>>> be = ArrayAPIBackend()
>>> w = be.prepare({"w": np.ones((6, 2, 3, 3), np.float32)})["w"]
>>> conv2d(be, be.asarray(np.ones((2, 4, 7, 7))), w, None, stride=2, padding=1, groups=2).shape
(2, 6, 4, 4)
>>> conv2d(be, be.asarray(np.ones((2, 5, 7, 7))), w, None, groups=2)
Traceback (most recent call last):
...
ValueError: [conv2d] x: expected 4 channels (groups=2 × 2 per group in w), got 5
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from . import layouts
from .architecture import adaptive_pool_bins, conv_output_size, pool_output_size
from .backend import Backend, BackendError, UnsupportedError, require_training

# -- validation helpers (each check lives here once) ----------------------------------------


def pair(value: Any, what: str, op: str, minimum: int) -> tuple[int, int]:
    """``3 → (3, 3)``; ``(3, 2)`` stays; anything else, or a value below ``minimum``, is a
    ``ValueError``: ``[max_pool2d] kernel: expected an int >= 1 or a pair of them, got (0, 3)``."""
    ints = (int, np.integer)
    if isinstance(value, ints) and not isinstance(value, (bool, np.bool_)):
        out = (int(value), int(value))
    elif (isinstance(value, tuple) and len(value) == 2
          and all(isinstance(v, ints) and not isinstance(v, (bool, np.bool_)) for v in value)):
        out = (int(value[0]), int(value[1]))
    else:
        out = None
    if out is None or min(out) < minimum:
        raise ValueError(f"[{op}] {what}: expected an int >= {minimum} or a pair of them, got {value!r}")
    return out


def _flag(value: Any, what: str, op: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"[{op}] {what}: expected a bool, got {value!r}")
    return bool(value)


def _positive_int(value: Any, what: str, op: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"[{op}] {what}: expected a positive int, got {value!r}")
    return int(value)


def _finite(value: Any, what: str, op: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"[{op}] {what}: expected a finite real number, got {value!r}")
    return float(value)


#: ``type(array) → namespace``: ``array_namespace`` costs ~15 µs on NumPy arrays, and the
#: namespace of an array depends on its type only.
_NAMESPACES: dict[type, Any] = {}


def _namespace(x: Any) -> Any:
    kind = type(x)
    xp = _NAMESPACES.get(kind)
    if xp is None:
        try:
            xp = array_namespace(x)
        except TypeError:
            xp = None
        _NAMESPACES[kind] = xp
    return xp


def _storage_dtype(backend: Backend) -> str:
    """The dtype a backend's arrays hold: its ``dtype``, except ``"tf32"``, stored as float32."""
    return "float32" if backend.dtype == "tf32" else backend.dtype


def native_dtype(backend: Backend) -> Any:
    """The dtype object of ``backend``'s arrays in its namespace: ``xp.<storage dtype>``, or, for
    bfloat16 in a NumPy-like namespace without one (CuPy), ``ml_dtypes.bfloat16``, the extension
    dtype CuPy's bfloat16 arrays carry."""
    name = _storage_dtype(backend)
    dtype = getattr(backend.xp, name, None)
    if dtype is None and name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            raise BackendError(f"[{backend.name}] bfloat16 arrays of {getattr(backend.xp, '__name__', backend.xp)} "
                               "need ml_dtypes: python -m pip install ml_dtypes") from None
        dtype = np.dtype(ml_dtypes.bfloat16)
    if dtype is None:
        raise BackendError(f"[{backend.name}] its namespace has no dtype {name!r}")
    return dtype


def _axes(layout: str) -> str:
    return "(" + ", ".join(layout) + ")"


def check_array(backend: Backend, op: str, what: str, a: Any, rank: int, axes: str, *, prepared: bool = False) -> None:
    """``a`` is an array of ``backend``'s namespace and dtype, of rank ``rank``; else a typed error.

    ``prepared``: a weight or bias as the backend's ``prepare`` returned it, which may be an object of
    the backend's own with ``shape`` and ``dtype`` (the ``cupy`` backend's conv weights carry their
    Winograd transform); an array among them must still be of the backend's namespace.
    """
    xp = _namespace(a)
    foreign = xp is not backend.xp if not prepared else (xp is not None and xp is not backend.xp)
    if foreign or not hasattr(a, "shape") or not hasattr(a, "dtype"):
        source = "its prepare() returns" if prepared else "backend.asarray returns"
        raise TypeError(
            f"[{op}] {what}: expected an array of the {backend.name!r} backend's namespace "
            f"({getattr(backend.xp, '__name__', backend.xp)}), as {source}, got {type(a).__module__}.{type(a).__name__}"
        )
    if a.dtype != native_dtype(backend):
        raise TypeError(f"[{op}] {what}: expected dtype {_storage_dtype(backend)} (the backend's), got {a.dtype}")
    if len(a.shape) != rank:
        raise ValueError(f"[{op}] {what}: expected a rank-{rank} array {axes}, got shape {tuple(a.shape)}")


def check_activation(backend: Backend, op: str, what: str, x: Any, rank: int) -> None:
    """An activation: rank 4 in the backend's layout, or ``(N, F)``."""
    layout = backend.layout if rank == 4 else "NF"
    check_array(backend, op, what, x, rank, f"{_axes(layout)} in the backend's {layout} layout")


def _check_bias(backend: Backend, op: str, b: Any, out: int) -> None:
    if b is not None:
        check_array(backend, op, "b", b, 1, f"({out},)", prepared=True)
        if tuple(b.shape) != (out,):
            raise ValueError(f"[{op}] b: expected shape ({out},) or None, got {tuple(b.shape)}")


def _require(backend: Backend, capability: str, op: str, detail: str) -> None:
    reason = backend.unsupported.get(capability)
    if reason is not None:
        raise UnsupportedError(capability, f"[{op}] the {backend.name!r} backend does not support {detail}: {reason}")


def _returned(backend: Backend, op: str, y: Any, shape: tuple[int, ...], what: str = "") -> Any:
    """``y``, checked to be what ``backend``'s op had to return: ``shape``, the backend's dtype."""
    label = f"{what} " if what else ""
    if getattr(y, "shape", None) is None or tuple(y.shape) != shape:
        raise BackendError(f"[{op}] the {backend.name!r} backend returned {label}shape "
                           f"{tuple(getattr(y, 'shape', ())) if y is not None else None}, expected {shape}")
    if y.dtype != native_dtype(backend):
        raise BackendError(f"[{op}] the {backend.name!r} backend returned {label}dtype {y.dtype}, expected {_storage_dtype(backend)}")
    return y


def _dx(backend: Backend, op: str, dx: Any, x: Any, needed: bool) -> Any:
    """A returned input gradient: ``x``'s shape, or ``None`` where it was not asked for."""
    if not needed:
        if dx is not None:
            raise BackendError(f"[{op}] the {backend.name!r} backend returned dx although need_dx=False")
        return None
    return _returned(backend, op, dx, tuple(x.shape), "dx")


def _check_output(backend: Backend, op: str, shape: tuple[int, ...], **arrays: Any) -> None:
    """The forward's output ``y`` and its gradient ``dy`` (those given) have the forward's output shape."""
    for what, a in arrays.items():
        check_array(backend, op, what, a, len(shape), f"{shape} (the forward's output)")
        if tuple(a.shape) != shape:
            raise ValueError(f"[{op}] {what}: expected shape {shape} (the forward's output for this x), got {tuple(a.shape)}")


def _native_shape(layout: str, n: int, c: int, h: int, w: int) -> tuple[int, ...]:
    sizes = {"N": n, "C": c, "H": h, "W": w}
    return tuple(sizes[axis] for axis in layout)


def _nchw(backend: Backend, x: Any) -> tuple[int, int, int, int]:
    return tuple(int(x.shape[backend.layout.index(axis)]) for axis in "NCHW")


# -- the four heavy ops ------------------------------------------------------------------------


def _conv_args(backend: Backend, op: str, x, w, b, stride, padding, groups):
    """Validate a convolution's operands; ``(stride, padding, groups, native output shape)``."""
    check_activation(backend, op, "x", x, 4)
    layout = backend.conv_weight_layout
    check_array(backend, op, "w", w, 4, f"{_axes(layout)} in the backend's {layout} conv weight layout", prepared=True)
    stride = pair(stride, "stride", op, 1)
    padding = pair(padding, "padding", op, 0)
    groups = _positive_int(groups, "groups", op)
    n, c, h, wd = _nchw(backend, x)
    o, cg, kh, kw = layouts.conv_weight_dims(tuple(w.shape), layout)
    if min(o, cg, kh, kw) < 1:
        raise ValueError(f"[{op}] w: expected sizes >= 1 (O, C/g, K_h, K_w), got {(o, cg, kh, kw)}")
    if o % groups:
        raise ValueError(f"[{op}] groups: expected a divisor of w's {o} output channels, got {groups}")
    if c != cg * groups:
        raise ValueError(f"[{op}] x: expected {cg * groups} channels (groups={groups} × {cg} per group in w), got {c}")
    _check_bias(backend, op, b, o)
    ho, wo = conv_output_size(h, kh, stride[0], padding[0]), conv_output_size(wd, kw, stride[1], padding[1])
    if ho < 1 or wo < 1:
        raise ValueError(
            f"[{op}] x: expected a padded map at least as large as the kernel {kh}x{kw}, "
            f"got {h}x{wd} with padding {padding}"
        )
    if groups > 1:
        _require(backend, "groups", op, f"groups={groups}")
    return stride, padding, groups, _native_shape(backend.layout, n, o, ho, wo)


def conv2d(backend: Backend, x, w, b=None, stride=1, padding=0, groups: int = 1, relu: bool = False):
    """Grouped 2-D cross-correlation + bias (+ ReLU) on ``backend``: :func:`alexnet_aa.reference.conv2d`.

    ``x`` ``(N, C, H, W)`` in the backend's layout; ``w`` ``(O, C/g, K_h, K_w)``
    in its ``conv_weight_layout``; ``b`` ``(O,)`` or ``None``; ``stride`` (≥ 1)
    and ``padding`` (≥ 0) ints or pairs. Returns ``(N, O, H_out, W_out)`` in the
    backend's layout.
    """
    op = "conv2d"
    stride, padding, groups, out = _conv_args(backend, op, x, w, b, stride, padding, groups)
    y = backend.conv2d(x, w, b, stride, padding, groups, _flag(relu, "relu", op))
    return _returned(backend, op, y, out)


def conv2d_backward(backend: Backend, x, w, y, dy, stride=1, padding=0, groups: int = 1, relu: bool = False,
                    need_dx: bool = True):
    """Gradients of :func:`conv2d` on ``backend``: ``(dx or None, dw, db)``, :func:`alexnet_aa.reference.conv2d_backward`.

    ``x`` and ``w`` as the forward saw them, ``y`` its output and ``dy`` the
    loss's gradient with respect to it (both the forward's output shape);
    ``dw`` comes back in the backend's ``conv_weight_layout``, ``dx`` in its
    layout (``None`` with ``need_dx=False``: a first layer's input needs none).
    """
    op = "conv2d_backward"
    require_training(backend, op)
    stride, padding, groups, out = _conv_args(backend, op, x, w, None, stride, padding, groups)
    relu, need_dx = _flag(relu, "relu", op), _flag(need_dx, "need_dx", op)
    _check_output(backend, op, out, y=y, dy=dy)
    dx, dw, db = backend.conv2d_backward(x, w, y, dy, stride, padding, groups, relu, need_dx)
    o = layouts.conv_weight_dims(tuple(w.shape), backend.conv_weight_layout)[0]
    return _dx(backend, op, dx, x, need_dx), _returned(backend, op, dw, tuple(w.shape), "dw"), _returned(backend, op, db, (o,), "db")


def _pool_args(backend: Backend, op: str, x, kernel, stride, ceil_mode):
    """Validate a pooling's operands; ``(kernel, stride, ceil_mode, native output shape)`` with
    ``ceil_mode`` True only where it changes the output size."""
    check_activation(backend, op, "x", x, 4)
    kernel = pair(kernel, "kernel", op, 1)
    stride = pair(stride, "stride", op, 1)
    ceil_mode = _flag(ceil_mode, "ceil_mode", op)
    n, c, h, w = _nchw(backend, x)
    if h < kernel[0] or w < kernel[1]:
        raise ValueError(f"[{op}] x: expected a map at least as large as the kernel {kernel[0]}x{kernel[1]}, got {h}x{w}")
    ho = pool_output_size(h, kernel[0], stride[0], ceil_mode)
    wo = pool_output_size(w, kernel[1], stride[1], ceil_mode)
    ceil_mode = ceil_mode and (ho, wo) != (pool_output_size(h, kernel[0], stride[0]), pool_output_size(w, kernel[1], stride[1]))
    if ceil_mode:
        _require(backend, "ceil_mode", op, f"ceil_mode=True where it differs from floor mode ({h}x{w} → {ho}x{wo})")
    return kernel, stride, ceil_mode, _native_shape(backend.layout, n, c, ho, wo)


def max_pool2d(backend: Backend, x, kernel=3, stride=2, ceil_mode: bool = False):
    """Max pooling without padding, floor or ceil mode, on ``backend``: :func:`alexnet_aa.reference.max_pool2d`.

    ``x`` ``(N, C, H, W)`` in the backend's layout; ``kernel`` and ``stride``
    (≥ 1) ints or pairs. Returns ``(N, C, H_out, W_out)`` in the backend's layout.
    Where both roundings give the same size the windows are the same, and the
    backend is called with ``ceil_mode=False`` (so one without ceil mode runs it).
    """
    op = "max_pool2d"
    kernel, stride, ceil_mode, out = _pool_args(backend, op, x, kernel, stride, ceil_mode)
    return _returned(backend, op, backend.max_pool2d(x, kernel, stride, ceil_mode), out)


def max_pool2d_backward(backend: Backend, x, y, dy, kernel=3, stride=2, ceil_mode: bool = False):
    """Gradient of :func:`max_pool2d` on ``backend`` with respect to ``x``:
    :func:`alexnet_aa.reference.max_pool2d_backward` (each window's gradient to its first maximum)."""
    op = "max_pool2d_backward"
    require_training(backend, op)
    kernel, stride, ceil_mode, out = _pool_args(backend, op, x, kernel, stride, ceil_mode)
    _check_output(backend, op, out, y=y, dy=dy)
    return _dx(backend, op, backend.max_pool2d_backward(x, y, dy, kernel, stride, ceil_mode), x, True)


def _lrn_args(backend: Backend, op: str, x, size, alpha, beta, k):
    check_activation(backend, op, "x", x, 4)
    size = _positive_int(size, "size", op)
    alpha, beta, k = _finite(alpha, "alpha", op), _finite(beta, "beta", op), _finite(k, "k", op)
    if size % 2 == 0:
        _require(backend, "lrn_even_size", op, f"an even window size ({size})")
    return size, alpha, beta, k


def lrn(backend: Backend, x, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
    """Local response normalisation across channels on ``backend``: :func:`alexnet_aa.reference.lrn`
    (the α/n convention; the paper's α is ours divided by ``size``).

    ``x`` ``(N, C, H, W)`` in the backend's layout; ``size`` a positive int;
    ``alpha``, ``beta``, ``k`` finite. Returns an array of ``x``'s shape.
    """
    op = "lrn"
    args = _lrn_args(backend, op, x, size, alpha, beta, k)
    return _returned(backend, op, backend.lrn(x, *args), tuple(x.shape))


def lrn_backward(backend: Backend, x, y, dy, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
    """Gradient of :func:`lrn` on ``backend`` with respect to ``x``:
    :func:`alexnet_aa.reference.lrn_backward` (the transposed window)."""
    op = "lrn_backward"
    require_training(backend, op)
    args = _lrn_args(backend, op, x, size, alpha, beta, k)
    _check_output(backend, op, tuple(x.shape), y=y, dy=dy)
    return _dx(backend, op, backend.lrn_backward(x, y, dy, *args), x, True)


def _linear_args(backend: Backend, op: str, x, w, b):
    """Validate a fully connected layer's operands; its output shape."""
    check_activation(backend, op, "x", x, 2)
    layout = backend.linear_weight_layout
    check_array(backend, op, "w", w, 2, f"{_axes(layout)} in the backend's {layout} linear weight layout", prepared=True)
    f_out, f_in = layouts.linear_weight_dims(tuple(w.shape), layout)
    if min(f_out, f_in) < 1:
        raise ValueError(f"[{op}] w: expected sizes >= 1 (F_out, F_in), got {(f_out, f_in)}")
    if x.shape[1] != f_in:
        raise ValueError(f"[{op}] x: expected {f_in} features (w is {f_out}x{f_in}, out x in), got {x.shape[1]}")
    _check_bias(backend, op, b, f_out)
    return (int(x.shape[0]), f_out)


def linear(backend: Backend, x, w, b=None, relu: bool = False):
    """Fully connected layer ``x Wᵀ + b`` (+ ReLU) on ``backend``: :func:`alexnet_aa.reference.linear`.

    ``x`` ``(N, F_in)``; ``w`` ``(F_out, F_in)`` in the backend's
    ``linear_weight_layout``; ``b`` ``(F_out,)`` or ``None``. Returns ``(N, F_out)``.
    """
    op = "linear"
    out = _linear_args(backend, op, x, w, b)
    return _returned(backend, op, backend.linear(x, w, b, _flag(relu, "relu", op)), out)


def linear_backward(backend: Backend, x, w, y, dy, relu: bool = False, need_dx: bool = True):
    """Gradients of :func:`linear` on ``backend``: ``(dx or None, dw, db)``,
    :func:`alexnet_aa.reference.linear_backward`; ``dw`` in the backend's ``linear_weight_layout``."""
    op = "linear_backward"
    require_training(backend, op)
    out = _linear_args(backend, op, x, w, None)
    relu, need_dx = _flag(relu, "relu", op), _flag(need_dx, "need_dx", op)
    _check_output(backend, op, out, y=y, dy=dy)
    dx, dw, db = backend.linear_backward(x, w, y, dy, relu, need_dx)
    return _dx(backend, op, dx, x, need_dx), _returned(backend, op, dw, tuple(w.shape), "dw"), _returned(backend, op, db, (out[1],), "db")


# -- the light ops: Array API code on the backend's namespace --------------------------------


def adaptive_avg_pool2d(backend: Backend, x, output_size: int):
    r"""Average pooling to ``output_size × output_size`` bins (torchvision's ``AdaptiveAvgPool2d``).

    Bin :math:`i` of :math:`s` over :math:`H` rows spans
    :math:`[\lfloor iH/s \rfloor, \lceil (i+1)H/s \rceil)` (columns likewise), so
    bins overlap when :math:`s` does not divide :math:`H` and repeat rows when
    :math:`H < s`; :math:`y_{n,c,i,j}` is the mean of ``x`` over bin
    :math:`(i, j)`. The identity when the map is already ``s × s`` (AlexNet's
    6×6 at 224×224). ``x`` in the backend's layout; the result too.
    """
    op = "adaptive_avg_pool2d"
    check_activation(backend, op, "x", x, 4)
    size = _positive_int(output_size, "output_size", op)
    xp, layout = backend.xp, backend.layout
    n, c, h, w = _nchw(backend, x)
    if (h, w) == (size, size):
        return x
    h_axis, w_axis = layouts.spatial_axes(layout)
    cells = []
    for h0, h1 in adaptive_pool_bins(h, size):
        for w0, w1 in adaptive_pool_bins(w, size):
            index = [slice(None)] * 4
            index[h_axis], index[w_axis] = slice(h0, h1), slice(w0, w1)
            cells.append(xp.mean(x[tuple(index)], axis=(h_axis, w_axis)))  # (N, C)
    pooled = xp.reshape(xp.stack(cells, axis=2), (n, c, size, size))  # NCHW
    return layouts.to_layout(pooled, layout, xp)


def adaptive_avg_pool2d_backward(backend: Backend, x, dy, output_size: int):
    r"""Gradient of :func:`adaptive_avg_pool2d` with respect to ``x``: each bin's gradient spread
    evenly over the bin, :math:`\bar x_{h,w} = \sum_{(i,j) \ni (h,w)} \bar y_{i,j} / |\text{bin}_{i,j}|`
    (overlapping bins add). The identity where the forward was."""
    op = "adaptive_avg_pool2d_backward"
    check_activation(backend, op, "x", x, 4)
    size = _positive_int(output_size, "output_size", op)
    n, c, h, w = _nchw(backend, x)
    _check_output(backend, op, _native_shape(backend.layout, n, c, size, size), dy=dy)
    if (h, w) == (size, size):
        return dy
    xp = backend.xp
    dy = layouts.to_canonical(dy, backend.layout, xp)
    dx = xp.zeros((n, c, h, w), dtype=dy.dtype)
    for i, (h0, h1) in enumerate(adaptive_pool_bins(h, size)):
        for j, (w0, w1) in enumerate(adaptive_pool_bins(w, size)):
            share = dy[:, :, i : i + 1, j : j + 1] / float((h1 - h0) * (w1 - w0))
            dx[:, :, h0:h1, w0:w1] = dx[:, :, h0:h1, w0:w1] + share
    return layouts.to_layout(dx, backend.layout, xp)


def flatten(backend: Backend, x):
    """``(N, C, H, W) → (N, C·H·W)``: the backend's layout order (NHWC flattens (H, W, C); fc6's
    weights are permuted once to match, :func:`alexnet_aa.layouts.fc6_to_flatten_order`)."""
    check_activation(backend, "flatten", "x", x, 4)
    return backend.xp.reshape(x, (x.shape[0], -1))


def dropout(backend: Backend, x, p: float, mask=None):
    """Dropout with drop probability ``p``: ``x · mask`` in training, with ``mask`` the scaled keep
    mask ``keep / (1 − p)`` drawn on the host (:func:`alexnet_aa.training.dropout_masks`, DESIGN.md §8:
    every backend computes the same step); the identity in evaluation (``mask=None``)."""
    if not (isinstance(p, Real) and 0 <= p < 1):
        raise ValueError(f"[dropout] p: expected a probability in [0, 1), got {p!r}")
    if mask is None:
        return x
    _check_mask(backend, "dropout", mask, "x", x)
    return x * mask


def _check_mask(backend: Backend, op: str, mask: Any, what: str, like: Any) -> None:
    """``like`` (``x`` or ``dy``) and ``mask`` are arrays of the backend, and ``mask`` has ``like``'s shape."""
    shape = tuple(getattr(like, "shape", ()))
    check_array(backend, op, what, like, len(shape), f"{shape}")
    check_array(backend, op, "mask", mask, len(shape), f"{shape} ({what}'s)")
    if tuple(mask.shape) != shape:
        raise ValueError(f"[{op}] mask: expected {what}'s shape {shape}, got {tuple(mask.shape)}")


def softmax(backend: Backend, z):
    r"""Row-wise softmax, computed stably on the backend's namespace:
    :math:`p_i = e^{z_i - \max_j z_j} / \sum_k e^{z_k - \max_j z_j}` (``exp`` never overflows)."""
    check_activation(backend, "softmax", "z", z, 2)
    xp = backend.xp
    e = xp.exp(z - xp.max(z, axis=1, keepdims=True))
    return e / xp.sum(e, axis=1, keepdims=True)


def _activation_name(op: str, name: Any) -> str:
    if name not in ("tanh", "sigmoid"):
        raise ValueError(f"[{op}] name: expected 'tanh' or 'sigmoid' (ReLU is the heavy ops' relu flag), got {name!r}")
    return name


def activation(backend: Backend, x, name: str):
    r"""A saturating activation, element-wise on the backend's namespace (the ablations' alternative
    to ReLU, :data:`alexnet_aa.architecture.ABLATIONS`):

    .. math::

        \tanh(x) = \frac{e^x - e^{-x}}{e^x + e^{-x}}, \qquad
        \sigma(x) = \frac{1}{1 + e^{-x}} = \tfrac12 \left(1 + \tanh \tfrac{x}{2}\right)

    ``name`` is ``"tanh"`` or ``"sigmoid"``; the sigmoid is computed through ``tanh``, which never
    overflows (``exp(-x)`` does for ``x < -88`` in float32). ``x`` of any rank, in the backend's
    layout; the result too.
    """
    op = "activation"
    name = _activation_name(op, name)
    check_array(backend, op, "x", x, len(getattr(x, "shape", ())), "(any shape)")
    xp = backend.xp
    return xp.tanh(x) if name == "tanh" else 0.5 * (xp.tanh(0.5 * x) + 1.0)


def activation_backward(backend: Backend, y, dy, name: str):
    r"""Gradient of :func:`activation` from its output :math:`y`, for tanh and for the sigmoid:

    .. math::

        \bar x = \bar y \, (1 - y^2), \qquad \bar x = \bar y \, y \, (1 - y)
    """
    op = "activation_backward"
    name = _activation_name(op, name)
    shape = tuple(getattr(y, "shape", ()))
    check_array(backend, op, "y", y, len(shape), "(the forward's output)")
    _check_output(backend, op, shape, dy=dy)
    return dy * (1.0 - y * y) if name == "tanh" else dy * (y * (1.0 - y))


def flatten_backward(backend: Backend, x, dy):
    """Gradient of :func:`flatten`: ``dy`` ``(N, C·H·W)`` reshaped to ``x``'s shape."""
    op = "flatten_backward"
    check_activation(backend, op, "x", x, 4)
    _check_output(backend, op, (int(x.shape[0]), math.prod(int(d) for d in x.shape[1:])), dy=dy)
    return backend.xp.reshape(dy, tuple(x.shape))


def dropout_backward(backend: Backend, dy, mask):
    """Gradient of :func:`dropout`: ``dy · mask`` (``dy`` itself where the forward had no mask)."""
    if mask is None:
        return dy
    _check_mask(backend, "dropout_backward", mask, "dy", dy)
    return dy * mask


def check_labels(op: str, labels: Any, n: int, k: int) -> np.ndarray:
    """``labels`` as a host int64 array of ``n`` class indices in ``[0, k)``; else a ``ValueError``."""
    from .arrays import to_numpy

    host = to_numpy(labels) if hasattr(labels, "shape") else np.asarray(labels)
    got = f"{host.dtype} of shape {host.shape}"
    if host.dtype.kind in "iu" and host.size:
        got += f" with values {host.min()}..{host.max()}"
    if host.shape != (n,) or host.dtype.kind not in "iu" or (n and (host.min() < 0 or host.max() >= k)):
        raise ValueError(f"[{op}] labels: expected {n} integer class indices in [0, {k}), got {got}")
    return host.astype(np.int64)


def softmax_cross_entropy(backend: Backend, z, labels) -> tuple[float, Any]:
    r"""The mean softmax cross-entropy of logits ``z`` ``(N, K)`` against integer ``labels``
    ``(N,)`` (host), and its gradient with respect to ``z`` (DESIGN.md §8):

    .. math::

        L = -\frac{1}{N} \sum_n \log p_{n, t_n}, \qquad
        \frac{\partial L}{\partial z} = \frac{p - \mathrm{onehot}(t)}{N}

    .. math::

        \log p_{n,i} = z_{n,i} - \max_j z_{n,j} - \log \sum_k e^{z_{n,k} - \max_j z_{n,j}}

    computed stably (the max subtracted first). ``L`` comes back as a Python float.
    """
    from .arrays import to_numpy

    op = "softmax_cross_entropy"
    check_activation(backend, op, "z", z, 2)
    n, k = int(z.shape[0]), int(z.shape[1])
    host = check_labels(op, labels, n, k)
    xp = backend.xp
    t = xp.asarray(host)
    shifted = z - xp.max(z, axis=1, keepdims=True)
    e = xp.exp(shifted)
    total = xp.sum(e, axis=1, keepdims=True)
    log_p = shifted - xp.log(total)
    picked = xp.take_along_axis(log_p, xp.reshape(t, (n, 1)), axis=1)
    loss = -float(to_numpy(xp.sum(picked))) / n
    onehot = xp.astype(xp.reshape(xp.arange(k), (1, k)) == xp.reshape(t, (n, 1)), z.dtype)
    return loss, (e / total - onehot) / float(n)


class BackendOps:
    """The ops of this module with one backend bound: what a layer spec's ``apply`` calls.

    ``BackendOps(be).conv2d(x, …)`` is ``ops.conv2d(be, x, …)``; other
    interpreters of the layer table (the PyTorch oracle of the tests) provide
    the same eight forward methods.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def conv2d(self, x, w, b, stride, padding, groups, relu):
        return conv2d(self.backend, x, w, b, stride, padding, groups, relu)

    def max_pool2d(self, x, kernel, stride, ceil_mode):
        return max_pool2d(self.backend, x, kernel, stride, ceil_mode)

    def lrn(self, x, size, alpha, beta, k):
        return lrn(self.backend, x, size, alpha, beta, k)

    def linear(self, x, w, b, relu):
        return linear(self.backend, x, w, b, relu)

    def adaptive_avg_pool2d(self, x, output_size):
        return adaptive_avg_pool2d(self.backend, x, output_size)

    def flatten(self, x):
        return flatten(self.backend, x)

    def dropout(self, x, p, mask=None):
        return dropout(self.backend, x, p, mask)

    def activation(self, x, name):
        return activation(self.backend, x, name)

    # the backward twins, for the layer specs' backward
    def conv2d_backward(self, x, w, y, dy, stride, padding, groups, relu, need_dx):
        return conv2d_backward(self.backend, x, w, y, dy, stride, padding, groups, relu, need_dx)

    def max_pool2d_backward(self, x, y, dy, kernel, stride, ceil_mode):
        return max_pool2d_backward(self.backend, x, y, dy, kernel, stride, ceil_mode)

    def lrn_backward(self, x, y, dy, size, alpha, beta, k):
        return lrn_backward(self.backend, x, y, dy, size, alpha, beta, k)

    def linear_backward(self, x, w, y, dy, relu, need_dx):
        return linear_backward(self.backend, x, w, y, dy, relu, need_dx)

    def adaptive_avg_pool2d_backward(self, x, dy, output_size):
        return adaptive_avg_pool2d_backward(self.backend, x, dy, output_size)

    def flatten_backward(self, x, dy):
        return flatten_backward(self.backend, x, dy)

    def dropout_backward(self, dy, mask):
        return dropout_backward(self.backend, dy, mask)

    def activation_backward(self, y, dy, name):
        return activation_backward(self.backend, y, dy, name)
