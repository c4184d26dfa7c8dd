"""Training: what every backend must draw the same way, on the host (DESIGN.md §8).

:func:`dropout_masks` draws the dropout masks of one training step from one
seed, in the layer table's order, so that a step computes the same thing on
every backend; the model moves them to the backend (in its flatten order) and
its dropout layers multiply by them.
"""

from __future__ import annotations

import numpy as np

from .architecture import Architecture, Dropout, layer_infos


def dropout_masks(arch: Architecture, batch: int, seed: int | None, input_size: int | None = None) -> dict[str, np.ndarray]:
    r"""The scaled keep masks of every dropout layer for a batch of ``batch`` images, by layer name.

    ``rng = numpy.random.default_rng(seed)``; for each dropout layer in table
    order, ``keep = rng.random((N, F)) >= p`` (float64 draws) and the mask is
    ``keep / (1 − p)`` in float32 — inverted dropout: kept units are scaled up
    in training so that evaluation is the identity, where the paper (§4.2)
    instead multiplies the outputs by :math:`1 - p` at test time; the two agree
    in expectation. ``F`` is the layer's feature count, in the canonical
    (C, H, W) order for features that are a flattened map (torchvision's drop6).
    ``seed=None``: no masks — dropout is the identity.

    >>> from alexnet_aa import get_architecture
    >>> masks = dropout_masks(get_architecture("paper"), 2, seed=0)
    >>> {name: m.shape for name, m in masks.items()}, sorted(set(masks["drop6"].ravel().tolist()))
    ({'drop6': (2, 4096), 'drop7': (2, 4096)}, [0.0, 2.0])
    """
    if seed is None:
        return {}
    rng = np.random.default_rng(seed)
    dropouts = set(arch.layers_of(Dropout))
    masks = {}
    for info in layer_infos(arch, input_size):
        if info.layer in dropouts:
            keep = rng.random((batch, *info.in_shape)) >= info.layer.p
            masks[info.name] = (keep / (1.0 - info.layer.p)).astype(np.float32)
    return masks
