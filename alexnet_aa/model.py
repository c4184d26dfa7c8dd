"""AlexNet's forward pass, written once against the Python Array API.

The model walks its variant's layer table (:mod:`alexnet_aa.architecture`)
and hands each heavy layer to the chosen backend; the light ones (flatten,
dropout, adaptive average pool, softmax, top-k) are plain Array API code on
whatever namespace the backend works in. This module imports no array
library: it learns the namespace from the backend and from its input.

>>> from alexnet_aa import AlexNet, example_input
>>> model = AlexNet("torchvision", backend="numpy")
>>> x = example_input("torchvision", batch=2)
>>> model(x).shape
(2, 1000)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from os import PathLike
from typing import Any, NamedTuple

from array_api_compat import array_namespace

from .architecture import (
    LRN,
    AdaptiveAvgPool,
    Conv,
    Dropout,
    Flatten,
    Linear,
    MaxPool,
    architecture,
    count_macs,
    count_params,
    flatten_input_shape,
)
from .arrays import to_numpy
from .backend import Backend, get_backend
from .weights import (
    WeightsError,
    check_weights,
    fc6_to_layout,
    fitting_variants,
    init_weights,
    read_weights_file,
)


class Prediction(NamedTuple):
    """Top-k classes of each image: ``indices`` ``(N, k)`` int64 and ``probabilities`` ``(N, k)``, best first (NumPy)."""

    indices: Any
    probabilities: Any


class AlexNet:
    """AlexNet of one variant on one backend, in evaluation mode.

    Parameters
    ----------
    variant
        ``"paper"`` (Krizhevsky et al. 2012: LRN, grouped convs, 227×227),
        ``"caffe"`` (BVLC's reference: LRN α/n, ceil-mode pools) or
        ``"torchvision"`` (the one-weird-trick layout of most pretrained weights, 224×224).
    backend
        A registered backend's name (see ``alexnet-aa backends``) or a
        :class:`~alexnet_aa.backend.Backend` instance.
    weights
        ``None`` for the paper's initialisation (seeded by ``seed``), a path to
        a ``.safetensors`` or ``.npz`` file, or a mapping of canonical names to
        arrays. Checked against the variant: every missing, extra or
        misshapen tensor is reported in one :class:`~alexnet_aa.weights.WeightsError`.
    num_classes
        fc8's width (default 1000).
    fresh_head
        Replace fc8 (whatever the weights hold there, if anything) by a fresh
        ``num_classes``-wide head with the paper's initialisation, seeded by
        ``seed``: transfer learning from fc7 features.
    backend_options
        Passed to the backend's constructor (e.g. ``dtype="float64"``).

    The weights are converted to the backend's native layout once, here; a
    model whose weights fail to load is never built.
    """

    def __init__(
        self,
        variant: str = "paper",
        backend: str | Backend = "numpy",
        *,
        weights: str | PathLike | Mapping[str, Any] | None = None,
        seed: int = 0,
        num_classes: int = 1000,
        fresh_head: bool = False,
        **backend_options: Any,
    ) -> None:
        self.arch = architecture(variant, num_classes)
        self.variant = variant
        canonical = self._canonical_weights(weights, seed, fresh_head)
        self.backend = get_backend(backend, **backend_options)
        self._state = canonical
        self._params = self.backend.prepare(fc6_to_layout(canonical, self.arch, self.backend.layout))

    def _canonical_weights(self, weights, seed: int, fresh_head: bool) -> dict[str, Any]:
        if weights is None:
            return init_weights(self.arch, seed)
        if isinstance(weights, Mapping):
            given, source = dict(weights), "the weights mapping"
        else:
            given, source = read_weights_file(weights)[0], str(weights)
        if fresh_head:
            given.update(init_weights(self.arch, seed, names=("fc8.weight", "fc8.bias")))
        try:
            return check_weights(given, self.arch)
        except WeightsError as exc:
            fits = [v for v in fitting_variants(given) if v != self.variant]
            hint = f"; {source} fits the {' or '.join(map(repr, fits))} variant" if fits else ""
            raise WeightsError(f"{source} cannot be loaded into AlexNet({self.variant!r}){hint}", exc.problems) from None

    # -- introspection ----------------------------------------------------------

    @property
    def num_params(self) -> int:
        return count_params(self.variant, self.arch.num_classes)

    @property
    def macs(self) -> int:
        """Multiply-accumulates per image at the variant's input size."""
        return count_macs(self.variant, self.arch.num_classes)

    def state_dict(self) -> dict[str, Any]:
        """Canonical float32 host arrays (copies), by canonical name."""
        return {name: value.copy() for name, value in self._state.items()}

    def __repr__(self) -> str:
        return f"AlexNet(variant={self.variant!r}, backend={self.backend.name!r}, num_classes={self.arch.num_classes})"

    # -- the forward pass -------------------------------------------------------------

    def _native_input(self, x):
        if not (hasattr(x, "shape") and hasattr(x, "dtype")):
            raise TypeError(f"expected an array of shape (N, 3, H, W), got {type(x).__name__}")
        size = self.arch.input_size
        shape = tuple(x.shape)
        if len(shape) != 4:
            raise ValueError(f"expected NCHW input of rank 4, (N, 3, {size}, {size}), got shape {shape}")
        if shape[0] < 1 or shape[1] != 3:
            raise ValueError(f"expected NCHW input (N >= 1, 3 channels, {size}, {size}), got shape {shape}")
        h, w = shape[2:]
        if self.arch.min_input_size:
            if min(h, w) < self.arch.min_input_size:
                raise ValueError(
                    f"the {self.variant} variant takes {size}x{size} input (any size >= "
                    f"{self.arch.min_input_size}x{self.arch.min_input_size} runs), got {h}x{w}"
                )
        elif (h, w) != (size, size):
            raise ValueError(f"the {self.variant} variant takes {size}x{size} input, got {h}x{w} (shape {shape})")
        if not array_namespace(x).isdtype(x.dtype, "real floating"):
            raise TypeError(f"expected a floating-point input (float32), got dtype {x.dtype}")
        x = self.backend.asarray(x)
        if self.backend.layout == "NHWC":
            x = self.backend.xp.permute_dims(x, (0, 2, 3, 1))
        return x

    def _forward(self, x) -> Iterator[tuple[str, Any]]:
        """Yield ``(layer name, output)`` for every layer, in the backend's layout."""
        be, p = self.backend, self._params
        x = self._native_input(x)
        for layer in self.arch.layers:
            name = layer.name
            if isinstance(layer, Conv):
                x = be.conv2d(x, p[f"{name}.weight"], p[f"{name}.bias"], layer.stride, layer.padding, layer.groups, layer.relu)
            elif isinstance(layer, LRN):
                x = be.lrn(x, layer.size, layer.alpha, layer.beta, layer.k)
            elif isinstance(layer, MaxPool):
                x = be.max_pool2d(x, layer.kernel, layer.stride, layer.ceil_mode)
            elif isinstance(layer, AdaptiveAvgPool):
                x = _adaptive_avg_pool2d(x, layer.output_size, be.layout, be.xp)
            elif isinstance(layer, Flatten):
                x = be.xp.reshape(x, (x.shape[0], -1))
            elif isinstance(layer, Linear):
                x = be.linear(x, p[f"{name}.weight"], p[f"{name}.bias"], layer.relu)
            elif not isinstance(layer, Dropout):  # dropout: the identity in evaluation
                raise TypeError(f"unknown layer {layer!r}")
            yield name, x

    def __call__(self, x):
        """Logits ``(N, num_classes)`` for an NCHW float batch, as an array of the backend's namespace."""
        for _, x in self._forward(x):
            pass
        return x

    def canonical(self, layer_name: str, y):
        """A layer's native output in the canonical order: NCHW maps, (C, H, W)-flattened features.

        The identity for NCHW backends; for NHWC backends maps are transposed
        and the flatten layer's features reordered (a copy, for inspection only).
        """
        if self.backend.layout == "NCHW":
            return y
        xp = self.backend.xp
        if y.ndim == 4:
            return xp.permute_dims(y, (0, 3, 1, 2))
        if layer_name in self._flat_feature_layers:
            c, h, w = flatten_input_shape(self.arch)
            return xp.reshape(xp.permute_dims(xp.reshape(y, (y.shape[0], h, w, c)), (0, 3, 1, 2)), (y.shape[0], -1))
        return y

    @property
    def _flat_feature_layers(self) -> tuple[str, ...]:
        """Layers whose output is the flattened pool5 map: flatten, up to fc6 (dropout, in torchvision)."""
        names = [layer.name for layer in self.arch.layers]
        first = next(i for i, layer in enumerate(self.arch.layers) if isinstance(layer, Flatten))
        fc6 = next(i for i, layer in enumerate(self.arch.layers) if isinstance(layer, Linear))
        return tuple(names[first:fc6])

    def layers(self, x) -> dict[str, Any]:
        """Every layer's output by name (``conv1``, ``lrn1``, ``pool1``, … ``fc8``), in order.

        Arrays of the backend's namespace, in the canonical order whatever the
        backend's layout (see :meth:`canonical`).
        """
        return {name: self.canonical(name, y) for name, y in self._forward(x)}

    def predict(self, x, top: int = 5) -> Prediction:
        """Top-``top`` classes and their softmax probabilities, as NumPy arrays.

        Softmax is computed stably on the backend's namespace:
        :math:`p_i = e^{z_i - \\max z} / \\sum_j e^{z_j - \\max z}`.
        """
        if not 1 <= top <= self.arch.num_classes:
            raise ValueError(f"top must be between 1 and {self.arch.num_classes}, got {top}")
        xp = self.backend.xp
        probs = softmax(self(x), xp)
        order = xp.argsort(-probs, axis=1)[:, :top]
        return Prediction(to_numpy(order).astype("int64"), to_numpy(xp.take_along_axis(probs, order, axis=1)))


def softmax(z, xp):
    """Row-wise softmax with the max subtracted first, so ``exp`` never overflows."""
    e = xp.exp(z - xp.max(z, axis=1, keepdims=True))
    return e / xp.sum(e, axis=1, keepdims=True)


def _adaptive_avg_pool2d(x, size: int, layout: str, xp):
    """Average over ``size × size`` bins, bin ``i`` spanning ``[⌊iH/size⌋, ⌈(i+1)H/size⌉)``
    (torchvision's ``AdaptiveAvgPool2d``); the identity when the map is already ``size × size``."""
    h_axis = 2 if layout == "NCHW" else 1
    h, w = x.shape[h_axis], x.shape[h_axis + 1]
    if (h, w) == (size, size):
        return x
    cells = []
    for i in range(size):
        h0, h1 = (i * h) // size, -(-((i + 1) * h) // size)
        for j in range(size):
            w0, w1 = (j * w) // size, -(-((j + 1) * w) // size)
            if layout == "NCHW":
                cells.append(xp.mean(x[:, :, h0:h1, w0:w1], axis=(2, 3)))
            else:
                cells.append(xp.mean(x[:, h0:h1, w0:w1, :], axis=(1, 2)))
    n, c = x.shape[0], x.shape[1 if layout == "NCHW" else 3]
    if layout == "NCHW":
        return xp.reshape(xp.stack(cells, axis=2), (n, c, size, size))
    return xp.reshape(xp.stack(cells, axis=1), (n, size, size, c))
