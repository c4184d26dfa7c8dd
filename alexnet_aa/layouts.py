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
    conv = permutation(CANONICAL_CONV_WEIGHT, conv_weight_layout)
    linear = permutation(CANONICAL_LINEAR_WEIGHT, linear_weight_layout)
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
    if layout == CANONICAL:
        return dict(params)
    c, h, w = flattened_map_shape(arch)
    first = next(layer for layer in arch.weighted_layers if len(layer.param_shapes()[f"{layer.name}.weight"]) == 2)
    name = f"{first.name}.weight"
    fc6 = np.asarray(params[name])
    order = permutation("CHW", layout.replace("N", ""))
    permuted = fc6.reshape(fc6.shape[0], c, h, w).transpose(0, *(1 + a for a in order)).reshape(fc6.shape[0], -1)
    return {**params, name: np.ascontiguousarray(permuted)}


# -- activations, on the backend's namespace ------------------------------------------------


def to_layout(x: Any, layout: str, xp: Any) -> Any:
    """A canonical NCHW activation in ``layout`` (``xp.permute_dims``; the identity for NCHW)."""
    return x if layout == CANONICAL else xp.permute_dims(x, permutation(CANONICAL, layout))


def to_canonical(y: Any, layout: str, xp: Any) -> Any:
    """A 4-D activation in ``layout`` back in NCHW (the identity for NCHW)."""
    return y if layout == CANONICAL else xp.permute_dims(y, permutation(layout, CANONICAL))


def flat_to_canonical(y: Any, map_shape: tuple[int, int, int], layout: str, xp: Any) -> Any:
    """Features ``(N, C·H·W)`` flattened in ``layout``'s order → the canonical (C, H, W) order."""
    if layout == CANONICAL:
        return y
    c, h, w = map_shape
    native = tuple({"C": c, "H": h, "W": w}[axis] for axis in layout[1:])
    maps = xp.reshape(y, (y.shape[0], *native))
    return xp.reshape(to_canonical(maps, layout, xp), (y.shape[0], -1))

