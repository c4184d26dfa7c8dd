"""Layouts: what NCHW, NHWC and each weight layout mean, and every conversion between them.

The canonical layouts (DESIGN.md §2) are those of the weights files and of
everything the model hands back to its user:

============================  ============  ==================================
tensor                        canonical     a backend may declare instead
============================  ============  ==================================
activations                   ``NCHW``      ``NHWC`` (``Backend.layout``)
conv weights                  ``OIHW``      any order of the letters ``O I H W``
                                            (``Backend.conv_weight_layout``)
linear weights                ``OI``        ``IO`` (``Backend.linear_weight_layout``)
fc6's input features          (C, H, W)     the flatten order of the activation
                                            layout: (H, W, C) for ``NHWC``
============================  ============  ==================================

A layout is a string of axis letters, so every conversion is one
permutation, computed by :func:`permutation`, and every size is read off a
native shape by letter (:func:`conv_weight_dims`), whatever the backend.

``O`` is the output channel, ``I`` the input channel *of one group* (``C/g``),
``H``/``W`` the kernel's rows and columns; for linear weights ``O``/``I`` are
output and input features.

>>> permutation("NCHW", "NHWC")
(0, 2, 3, 1)
>>> conv_weight_dims((11, 11, 3, 96), "HWIO")
(96, 3, 11, 11)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import array_api_compat.numpy as compat_numpy
import numpy as np

from .architecture import Architecture, flattened_map_shape

#: Activation layouts a backend can declare, and the canonical one.
ACTIVATION_LAYOUTS = ("NCHW", "NHWC")
CANONICAL = "NCHW"
#: The canonical conv and linear weight layouts (those of weights files).
CANONICAL_CONV_WEIGHT = "OIHW"
CANONICAL_LINEAR_WEIGHT = "OI"


def permutation(src: str, dst: str) -> tuple[int, ...]:
    """The axes ``p`` with ``transpose(a, p)`` turning an ``src``-ordered array into ``dst`` order."""
    if sorted(src) != sorted(dst) or len(set(src)) != len(src):
        raise ValueError(f"layouts {src!r} and {dst!r} are not orders of the same distinct axes")
    return tuple(src.index(axis) for axis in dst)


def layout_problems(layout: Any, conv_weight_layout: Any, linear_weight_layout: Any) -> list[str]:
    """What is wrong with a backend's declared layouts (empty when all three are valid)."""
    problems = []
    if layout not in ACTIVATION_LAYOUTS:
        problems.append(f"layout: expected one of {ACTIVATION_LAYOUTS}, got {layout!r}")
    if not (isinstance(conv_weight_layout, str) and sorted(conv_weight_layout) == sorted(CANONICAL_CONV_WEIGHT)):
        problems.append(f"conv_weight_layout: expected an order of the letters 'OIHW', got {conv_weight_layout!r}")
    if linear_weight_layout not in ("OI", "IO"):
        problems.append(f"linear_weight_layout: expected 'OI' or 'IO', got {linear_weight_layout!r}")
    return problems


def conv_weight_dims(shape: tuple[int, ...], layout: str) -> tuple[int, int, int, int]:
    """``(O, C/g, K_h, K_w)`` of a conv weight of ``shape`` stored in ``layout``."""
    return tuple(int(shape[layout.index(axis)]) for axis in CANONICAL_CONV_WEIGHT)


def linear_weight_dims(shape: tuple[int, ...], layout: str) -> tuple[int, int]:
    """``(F_out, F_in)`` of a linear weight of ``shape`` stored in ``layout``."""
    return int(shape[layout.index("O")]), int(shape[layout.index("I")])


def spatial_axes(layout: str) -> tuple[int, int]:
    """The axes of H and W in an activation of ``layout``."""
    return layout.index("H"), layout.index("W")


# -- weights (host, NumPy), once per model ---------------------------------------------


def weights_to(params: Mapping[str, np.ndarray], conv_weight_layout: str, linear_weight_layout: str) -> dict[str, np.ndarray]:
    """Canonical host weights with every 4-D tensor in ``conv_weight_layout`` and every 2-D one in
    ``linear_weight_layout`` (contiguous copies where they move); biases as they are."""
    return _weights_moved(params, permutation(CANONICAL_CONV_WEIGHT, conv_weight_layout),
                          permutation(CANONICAL_LINEAR_WEIGHT, linear_weight_layout))


def weights_from(params: Mapping[str, np.ndarray], conv_weight_layout: str, linear_weight_layout: str) -> dict[str, np.ndarray]:
    """The inverse of :func:`weights_to`: host tensors (weights or their gradients) in a backend's
    layouts back in the canonical OIHW / ``(out, in)``."""
    return _weights_moved(params, permutation(conv_weight_layout, CANONICAL_CONV_WEIGHT),
                          permutation(linear_weight_layout, CANONICAL_LINEAR_WEIGHT))


def _weights_moved(params: Mapping[str, np.ndarray], conv: tuple[int, ...], linear: tuple[int, ...]) -> dict[str, np.ndarray]:
    out = {}
    for name, value in params.items():
        value = np.asarray(value)
        if value.ndim == 4:
            value = value.transpose(conv)
        elif value.ndim == 2:
            value = value.transpose(linear)
        out[name] = np.ascontiguousarray(value)
    return out


def fc6_to_flatten_order(params: Mapping[str, np.ndarray], arch: Architecture, layout: str) -> dict[str, np.ndarray]:
    """``params`` with the first linear layer's input axis permuted from the (C, H, W) flatten order
    to ``layout``'s, so that its product with the backend's own flatten equals the canonical one.

    An NHWC backend flattens pool5's ``(H, W, C)`` map; permuting fc6's
    columns once, here, spares a transpose of every batch.
    """
    return _fc6_permuted(params, arch, "CHW", layout.replace("N", ""))


def fc6_from_flatten_order(params: Mapping[str, np.ndarray], arch: Architecture, layout: str) -> dict[str, np.ndarray]:
    """The inverse of :func:`fc6_to_flatten_order` (for fc6's weight gradient on an NHWC backend)."""
    return _fc6_permuted(params, arch, layout.replace("N", ""), "CHW")


def _fc6_permuted(params: Mapping[str, np.ndarray], arch: Architecture, src: str, dst: str) -> dict[str, np.ndarray]:
    """``params`` with the first linear layer's input axis reordered from the map order ``src`` to ``dst``
    (``params`` as they are when they hold no such weight)."""
    first = next(layer for layer in arch.weighted_layers if len(layer.param_shapes()[f"{layer.name}.weight"]) == 2)
    name = f"{first.name}.weight"
    if src == dst or name not in params:
        return dict(params)
    fc6 = np.asarray(params[name])
    return {**params, name: np.ascontiguousarray(_reorder_features(fc6, flattened_map_shape(arch), src, dst, compat_numpy))}


def _reorder_features(a, map_shape: tuple[int, int, int], src: str, dst: str, xp):
    """``a`` ``(R, C·H·W)`` with its features flattened in the map order ``src`` (``"CHW"``,
    ``"HWC"``) → flattened in ``dst`` order."""
    sizes = dict(zip("CHW", map_shape))
    maps = xp.reshape(a, (a.shape[0], *(sizes[axis] for axis in src)))
    return xp.reshape(xp.permute_dims(maps, (0, *(1 + i for i in permutation(src, dst)))), (a.shape[0], -1))


# -- activations, on the backend's namespace ------------------------------------------------


def to_layout(x: Any, layout: str, xp: Any) -> Any:
    """A canonical NCHW activation in ``layout`` (``xp.permute_dims``; the identity for NCHW)."""
    return x if layout == CANONICAL else xp.permute_dims(x, permutation(CANONICAL, layout))


def to_canonical(y: Any, layout: str, xp: Any) -> Any:
    """A 4-D activation in ``layout`` back in NCHW (the identity for NCHW)."""
    return y if layout == CANONICAL else xp.permute_dims(y, permutation(layout, CANONICAL))


def flat_to_canonical(y: Any, map_shape: tuple[int, int, int], layout: str, xp: Any) -> Any:
    """Features ``(N, C·H·W)`` flattened in ``layout``'s order → the canonical (C, H, W) order."""
    return y if layout == CANONICAL else _reorder_features(y, map_shape, layout[1:], "CHW", xp)


def flat_to_layout(y: Any, map_shape: tuple[int, int, int], layout: str, xp: Any) -> Any:
    """The inverse of :func:`flat_to_canonical`: canonical (C, H, W)-flattened features (a dropout
    mask over pool5's features, say) in ``layout``'s flatten order."""
    return y if layout == CANONICAL else _reorder_features(y, map_shape, "CHW", layout[1:], xp)

