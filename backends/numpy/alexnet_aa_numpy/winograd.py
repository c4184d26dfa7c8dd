r"""Winograd F(2×2, 3×3) and F(2×2, 5×5): the numpy backend's 3×3 and 5×5 stride-1 convolutions.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2016). Each
2×2 output tile ``Y`` of a channel comes from the ``α × α`` input tile ``d``
(``α = r + 1``) whose top-left corner is ``(2·t_h − p_h, 2·t_w − p_w)`` of the
image (zeros outside it):

.. math::

    U = G\, g\, G^\top \qquad V = B^\top d\, B \qquad
    M_\xi = \sum_c V_\xi[t, c]\; U_\xi[c, o] \qquad Y = A^\top M A

``U`` per weight ``(c, o)`` (``r × r → α × α``), ``V`` per input tile and
channel, ``M`` as ``α²`` GEMMs ``(tiles, C) · (C, O)`` (ungrouped layers only), ``Y``
per output tile and channel (``α × α → 2 × 2``). The two transforms of a block
of tiles are one GEMM each, by ``vec(Bᵀ d B) = (Bᵀ ⊗ Bᵀ) vec(d)``:
``(α², α²) · (α², tiles·C)`` and ``(4, α²) · (α², tiles·O)``. Multiplications
per output against direct convolution: 16/4 against 9 for 3×3 (2.25× fewer),
36/4 against 25 for 5×5 (2.78× fewer), less the tiles' overhang at an odd map
size (13 → 14: 1.16× for AlexNet's conv3–5).

``U`` is computed in float64 from the float32 weight and rounded once
(:func:`weight_transform`, by :meth:`ConvWeight.winograd` the first time the
path runs a prepared weight and, for a plain weight array, by ``conv2d`` itself
per call: the same bits either way). The error against the float64 reference
is measured by ``tests/test_numpy_winograd.py`` and, of the conformance suite's
cases, by ``tv-conv2`` (5×5) and ``tv-conv3-batch3`` (3×3), the two with tiles
enough for the path to run on two cores (``tests/test_numpy_blocks.py`` checks
that they do); the numbers are in ``docs/backends/numpy.md``.

Non-finite values: the Kronecker GEMMs multiply every entry of a tile by a
coefficient, zeros included, so one NaN or ±inf input makes its whole tile NaN
(and ``inf − inf`` is NaN where direct convolution gives ±inf). The backend
therefore computes an image holding one (:func:`finite_images`) by the direct
im2col path, and a weight holding one is never transformed; every output
conforms (DESIGN.md §5).
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["KERNELS", "TILE", "ConvWeight", "applies", "finite_images", "kronecker", "tiles", "weight_transform"]

#: Output tile side: F(2×2, r×r).
TILE = 2

#: The 1-D matrices ``(Bᵀ, G, Aᵀ)`` of F(2, r) per kernel size ``r``.
#: F(2, 3), points 0, 1, −1, ∞; F(2, 5), points 0, 1, −1, 2, −2, ∞ (``Bᵀ`` is
#: F(4, 3)'s: the same six points). ``Bᵀ`` and ``Aᵀ`` are small integers, exact in
#: float32; ``G`` holds the fractions and is applied once, in float64.
KERNELS: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {
    3: (
        np.array([[1, 0, -1, 0],
                  [0, 1, 1, 0],
                  [0, -1, 1, 0],
                  [0, 1, 0, -1]], dtype=np.float64),
        np.array([[1, 0, 0],
                  [1 / 2, 1 / 2, 1 / 2],
                  [1 / 2, -1 / 2, 1 / 2],
                  [0, 0, 1]], dtype=np.float64),
        np.array([[1, 1, 1, 0],
                  [0, 1, -1, -1]], dtype=np.float64),
    ),
    5: (
        np.array([[4, 0, -5, 0, 1, 0],
                  [0, -4, -4, 1, 1, 0],
                  [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0],
                  [0, 2, -1, -2, 1, 0],
                  [0, 4, 0, -5, 0, 1]], dtype=np.float64),
        np.array([[1 / 4, 0, 0, 0, 0],
                  [-1 / 6, -1 / 6, -1 / 6, -1 / 6, -1 / 6],
                  [-1 / 6, 1 / 6, -1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6, 1 / 3, 2 / 3],
                  [1 / 24, -1 / 12, 1 / 6, -1 / 3, 2 / 3],
                  [0, 0, 0, 0, 1]], dtype=np.float64),
        np.array([[1, 1, 1, 1, 1, 0],
                  [0, 1, -1, 2, -2, 1]], dtype=np.float64),
    ),
}


def tiles(ho: int, wo: int) -> tuple[int, int]:
    """The rows and columns of 2×2 output tiles covering an ``ho × wo`` output (the last ones overhang)."""
    return -(-ho // TILE), -(-wo // TILE)


def applies(w_shape: tuple[int, ...], stride: tuple[int, int]) -> bool:
    """True for the HWIO weight shapes and strides this module computes: square 3×3 or 5×5, stride 1."""
    kh, kw = w_shape[:2]
    return kh == kw and kh in KERNELS and tuple(stride) == (1, 1)


@functools.lru_cache(maxsize=None)
def kronecker(r: int, side: str, dtype: str) -> np.ndarray:
    """The 2-D transform of one tile as a matrix, read-only: ``Bᵀ ⊗ Bᵀ`` ``(α², α²)`` for
    ``side="input"`` (row ``(ξ, ν)``, column ``(i, j)`` of the tile, both row-major), ``Aᵀ ⊗ Aᵀ``
    ``(4, α²)`` for ``side="output"`` (row ``(a, b)`` of the 2×2 output tile, column ``(ξ, ν)``)."""
    one_d = KERNELS[r][{"input": 0, "output": 2}[side]]
    k = np.kron(one_d, one_d).astype(dtype)
    k.setflags(write=False)
    return k


def weight_transform(w: np.ndarray) -> np.ndarray | None:
    """HWIO ``w`` ``(r, r, C/g, O)`` → ``U = G g Gᵀ`` ``(α², C/g, O)`` in ``w``'s dtype (computed in
    float64, rounded once); ``None`` where ``w`` holds a NaN or ±inf (the direct path computes it)."""
    if not np.isfinite(w).all():
        return None
    r, _, cg, o = w.shape
    g = KERNELS[r][1]
    u = np.einsum("ip,jq,pqco->ijco", g, g, w.astype(np.float64))
    return u.reshape(len(g) ** 2, cg, o).astype(w.dtype)


def finite_images(x: np.ndarray) -> np.ndarray:
    """Per image of NHWC ``x``: True where its float sum is finite — no NaN or ±inf, and no sum that
    overflows (values near the dtype's largest, which the transforms could overflow too)."""
    return np.isfinite(x.reshape(len(x), -1).sum(axis=1))


class ConvWeight:
    """A 3×3 or 5×5 conv weight as ``NumpyBackend.prepare`` returns it: the HWIO array, and its
    Winograd transform ``U`` once :meth:`winograd` has been asked for it (the first time the
    Winograd path runs the layer; grouped layers and small batches never ask). ``shape`` and
    ``dtype`` are the HWIO array's, which is what every other op and the backward read."""

    __slots__ = ("_transform", "hwio")

    def __init__(self, hwio: np.ndarray) -> None:
        self.hwio, self._transform = hwio, None

    def winograd(self) -> np.ndarray | None:
        """``U`` (:func:`weight_transform`, computed on the first call and kept; ``None`` for a
        weight holding a NaN or ±inf). Two threads asking at once compute the same bits."""
        if self._transform is None:
            self._transform = (weight_transform(self.hwio),)
        return self._transform[0]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.hwio.shape

    @property
    def dtype(self) -> np.dtype:
        return self.hwio.dtype

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self.hwio if dtype is None else self.hwio.astype(dtype)
