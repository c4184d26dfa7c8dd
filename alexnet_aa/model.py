"""AlexNet's forward pass, written once against the Python Array API.

The model walks its variant's layer table (:mod:`alexnet_aa.architecture`);
each layer applies itself through :class:`alexnet_aa.ops.BackendOps` — the
heavy ops on the chosen backend, the light ones (flatten, dropout, adaptive
average pool, softmax) as plain Array API code on the backend's namespace.
This module imports no array library: it learns the namespace from the
backend and from its input. Layout conversions are :mod:`alexnet_aa.layouts`'.

>>> from alexnet_aa import AlexNet, example_input
>>> model = AlexNet("torchvision", backend="numpy")
>>> x = example_input("torchvision", batch=2)
>>> model(x).shape
(2, 1000)
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from os import PathLike
from typing import Any, NamedTuple

import array_api_compat.numpy as compat_numpy
import numpy as np

from . import layouts, ops
from .architecture import count_macs, count_params, flat_feature_layers, flattened_map_shape, get_architecture
from .arrays import is_real_floating, to_numpy
from .backend import Backend, get_backend, require_training
from .bundles import AlexNetWeights
from .categories import class_names
from .preprocess import Preprocess, default_preprocess
from .training import dropout_masks
from .weights import (
    PREPROCESS_KEY,
    SOURCE_SHA256_KEY,
    VARIANT_KEY,
    WeightsError,
    WeightsFileError,
    check_weights,
    fitting_variants,
    init_weights,
    read_weights_file,
)


#: How many input shapes a model keeps a recorded forward pass for (:meth:`Backend.capture
#: <alexnet_aa.backend.Backend.capture>`), the least recently used dropped first: each holds its
#: activations on the device.
MAX_CAPTURED_SHAPES = 4


class NonFiniteLossError(ValueError):
    """The training forward's loss is NaN or infinite: no gradient is computed, no weight changed."""


class BackwardStep(NamedTuple):
    """One layer of the backward pass, native arrays: its input ``x`` and output ``y`` as the training
    forward saw them, the loss's gradient ``dy`` with respect to ``y``, and what the layer's backward
    twin returned: ``dx`` (``None`` for the first layer) and its weights' gradients by canonical name."""

    layer: Any
    x: Any
    y: Any
    dy: Any
    dx: Any
    grads: dict[str, Any]


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
        ``None`` for the paper's initialisation (seeded by ``seed``); a
        published bundle, :class:`~alexnet_aa.bundles.AlexNetWeights` (its
        cached, verified download: ``alexnet-aa weights download``); a path to
        a ``.safetensors`` or ``.npz`` file; or a mapping of canonical names to
        arrays. Checked against the variant: every missing, extra or
        misshapen tensor is reported in one :class:`~alexnet_aa.weights.WeightsError`.
    num_classes
        fc8's width: by default the bundle's number of categories, else the
        width of the weights' fc8 (a fine-tuned checkpoint's classes), else 1000.
    fresh_head
        Replace fc8 (whatever the weights hold there, if anything) by a fresh
        ``num_classes``-wide head with the paper's initialisation, seeded by
        ``seed``: transfer learning from fc7 features.
    backend_options
        Passed to the backend's constructor (e.g. ``dtype="float64"``).

    Attributes: ``arch`` (the layer table), ``backend``, ``preprocess`` (the
    :class:`~alexnet_aa.preprocess.Preprocess` the weights expect: the
    bundle's, the file's metadata, else the variant's default), ``categories``
    (the class names of the head). The weights are converted to the backend's
    native layout once, here; a model whose weights fail to load is never built.
    """

    def __init__(
        self,
        variant: str = "paper",
        backend: str | Backend = "numpy",
        *,
        weights: AlexNetWeights | str | PathLike | Mapping[str, Any] | None = None,
        seed: int = 0,
        num_classes: int | None = None,
        fresh_head: bool = False,
        **backend_options: Any,
    ) -> None:
        given, metadata, source = _weights_source(weights, variant)
        if num_classes is None:
            bundle = weights if isinstance(weights, AlexNetWeights) and not fresh_head else None
            head = None if given is None or fresh_head else np.shape(given.get("fc8.bias", ()))
            num_classes = (len(bundle.meta["categories"]) if bundle is not None
                           else head[0] if head is not None and len(head) == 1 and head[0] >= 1 else 1000)
        self.arch = get_architecture(variant, num_classes)
        self.variant = self.arch.variant
        self._state = self._checked(given, source, seed, fresh_head)
        self.preprocess: Preprocess = (
            weights.transforms() if isinstance(weights, AlexNetWeights)
            else Preprocess.from_json(metadata[PREPROCESS_KEY]) if PREPROCESS_KEY in metadata
            else default_preprocess(variant)
        )
        self.categories: list[str] = (
            list(weights.meta["categories"]) if isinstance(weights, AlexNetWeights) and not fresh_head
            else class_names({} if fresh_head else metadata, num_classes)
        )
        self.backend = get_backend(backend, **backend_options)
        self.ops = ops.BackendOps(self.backend)
        self._native = self.backend.prepare(layouts.fc6_to_flatten_order(self._state, self.arch, self.backend.layout))
        self._flat_map = flattened_map_shape(self.arch)
        self._flat_layers = frozenset(flat_feature_layers(self.arch))
        self._trained = False  # True once train_step has changed the native weights: _state is then stale
        self._owns_native = False  # True once the native weights are the model's own plain arrays (native_tensors)
        self.frozen: frozenset[str] = frozenset()
        self._train_from = 0
        self._captured: OrderedDict[tuple, Any] = OrderedDict()  # (shape, dtype) -> replay, or None: eager

    def _checked(self, given: dict[str, Any] | None, source: str, seed: int, fresh_head: bool) -> dict[str, Any]:
        if given is None:
            return init_weights(self.arch, seed)
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

    @property
    def native_params(self) -> dict[str, Any]:
        """The weights as the backend's ops take them (its layouts, its device), by canonical name."""
        return dict(self._native)

    def state_dict(self) -> dict[str, Any]:
        """Canonical float32 host arrays (copies), by canonical name: the trained weights after
        :meth:`train_step` (brought back from the backend here, not after every step)."""
        if self._trained:
            self._state, self._trained = self.canonical_params(self._native), False
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
        if not is_real_floating(x):
            raise TypeError(f"expected a floating-point input (float32), got dtype {x.dtype}")
        return layouts.to_layout(self.backend.asarray(x), self.backend.layout, self.backend.xp)

    def iter_layers(self, x) -> Iterator[tuple[str, Any]]:
        """Yield ``(layer name, output)`` for every layer, in order, each output in the backend's
        own layout and namespace (:meth:`canonical` converts one; :meth:`layers` converts all)."""
        x = self._native_input(x)
        for layer in self.arch.layers:
            x = layer.apply(self.ops, self._native, x)
            yield layer.name, x

    def __call__(self, x):
        """Logits ``(N, num_classes)`` for an NCHW float batch, as an array of the backend's namespace.

        Where the backend records forward passes (:meth:`Backend.capture
        <alexnet_aa.backend.Backend.capture>`: the ``cupy`` backend's CUDA graphs), the first batch of
        each shape is recorded and every later one replays it — the same kernels, the same bits; the
        model keeps the recordings of :data:`MAX_CAPTURED_SHAPES` shapes at most. A recording that
        fails is a ``RuntimeWarning`` with the reason, and that shape runs eagerly.
        """
        x = self._native_input(x)
        key = (tuple(x.shape), str(x.dtype))
        if key in self._captured:
            self._captured.move_to_end(key)
        else:
            while len(self._captured) >= MAX_CAPTURED_SHAPES:
                self._captured.popitem(last=False)
            try:
                self._captured[key] = self.backend.capture(self._forward, x)
            except Exception as exc:  # a recording that fails must not take the eager forward down with it
                warnings.warn(f"[{self.backend.name}] recording the forward for input {key[0]} failed "
                              f"({type(exc).__name__}: {exc}); this shape runs eagerly", RuntimeWarning, stacklevel=2)
                self._captured[key] = None
        replay = self._captured[key]
        return self._forward(x) if replay is None else replay(x)

    def _forward(self, x):
        """The forward pass on a native input: every layer of the table, in order."""
        for layer in self.arch.layers:
            x = layer.apply(self.ops, self._native, x)
        return x

    def canonical(self, layer_name: str, y):
        """A layer's native output in the canonical order: NCHW maps, (C, H, W)-flattened features.

        The identity for NCHW backends; for NHWC backends maps are transposed
        and the flattened features reordered (a copy, for inspection only).
        """
        xp, layout = self.backend.xp, self.backend.layout
        if y.ndim == 4:
            return layouts.to_canonical(y, layout, xp)
        if layer_name in self._flat_layers:
            return layouts.flat_to_canonical(y, self._flat_map, layout, xp)
        return y

    def layers(self, x) -> dict[str, Any]:
        """Every layer's output by name (``conv1``, ``lrn1``, ``pool1``, … ``fc8``), in order.

        Arrays of the backend's namespace, in the canonical order whatever the
        backend's layout (see :meth:`canonical`).
        """
        return {name: self.canonical(name, y) for name, y in self.iter_layers(x)}

    # -- training: the same network run the other way (DESIGN.md §8) --------------------------

    def gradients(self, x, labels, dropout_seed: int | None = None) -> tuple[float, dict[str, np.ndarray]]:
        """The loss of one batch and its gradient with respect to every weight: ``(loss, grads)``.

        ``loss`` is the mean softmax cross-entropy of the logits against the
        integer ``labels`` ``(N,)`` (:func:`alexnet_aa.ops.softmax_cross_entropy`),
        a Python float; ``grads`` maps every canonical name to a float32 host
        array in the canonical layout. Dropout applies the masks
        :func:`alexnet_aa.training.dropout_masks` draws on the host from
        ``dropout_seed`` (``None``: dropout is the identity), so every backend
        computes the same gradients. The model's weights are not changed.

        A backend without the backward ops, labels of the wrong length, dtype
        or range, and a non-finite loss are errors naming what was expected.
        """
        loss, steps = self.backward_steps(x, labels, dropout_seed)
        grads: dict[str, Any] = {}
        for step in steps:
            grads.update(step.grads)
        return loss, self.canonical_params(grads)

    def backward_steps(self, x, labels, dropout_seed: int | None = None, *, down_to: int = 0) -> tuple[float, Iterator[BackwardStep]]:
        """``(loss, steps)``: the training forward, its loss, and an iterator over the backward pass,
        last layer first, one :class:`BackwardStep` per layer (what :meth:`gradients` sums up; the
        conformance suite checks each step). The forward keeps each layer's input and output, which
        the backward twins need; conv1 computes no input gradient. With ``down_to=i`` the backward
        stops at layer ``i`` of the table, which computes no input gradient either (what a model
        frozen below layer ``i`` needs)."""
        require_training(self.backend, "gradients")
        h = self._native_input(x)
        n = int(x.shape[0])
        host_labels = ops.check_labels("gradients", labels, n, self.arch.num_classes)
        arrays = dict(self._native)
        for name, mask in dropout_masks(self.arch, n, dropout_seed, int(x.shape[2])).items():
            arrays[f"{name}.mask"] = self._native_mask(name, mask)
        saved = []
        for layer in self.arch.layers:
            y = layer.apply(self.ops, arrays, h)
            saved.append((layer, h, y))
            h = y
        loss, dz = ops.softmax_cross_entropy(self.backend, h, host_labels)
        if not math.isfinite(loss):
            raise NonFiniteLossError(f"[gradients] loss: expected a finite value, got {loss} (NaN or infinite inputs or weights?)")

        def steps(d) -> Iterator[BackwardStep]:
            for index in reversed(range(down_to, len(saved))):
                layer, layer_in, layer_out = saved[index]
                dx, grads = layer.backward(self.ops, arrays, layer_in, layer_out, d, need_dx=index > down_to)
                yield BackwardStep(layer, layer_in, layer_out, d, dx, grads)
                d = dx

        return loss, steps(dz)

    def _native_mask(self, layer_name: str, mask: np.ndarray):
        """A host dropout mask (canonical feature order) as the backend's array in its flatten order."""
        if layer_name in self._flat_layers:
            mask = np.ascontiguousarray(layouts.flat_to_layout(mask, self._flat_map, self.backend.layout, compat_numpy))
        return self.backend.asarray(mask)

    def canonical_params(self, tensors: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Native tensors shaped as the weights (the weights themselves, their gradients, the
        optimizer's velocity; some or all, by canonical name) → canonical float32 host arrays: the
        inverse of how the weights were prepared (:mod:`alexnet_aa.layouts`)."""
        be = self.backend
        host = {name: np.asarray(be.to_host(t)) for name, t in tensors.items()}
        host = layouts.weights_from(host, be.conv_weight_layout, be.linear_weight_layout)
        host = layouts.fc6_from_flatten_order(host, self.arch, be.layout)
        return {name: host[name].astype(np.float32) for name in self._state if name in host}

    def native_tensors(self, tensors: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Canonical host tensors shaped as the weights → plain native arrays in the backend's
        layouts (the base :meth:`Backend.prepare <alexnet_aa.backend.Backend.prepare>` conversion,
        without what a backend's own ``prepare`` adds for inference): what :class:`~alexnet_aa.training.SGD`
        updates."""
        return Backend.prepare(self.backend, layouts.fc6_to_flatten_order(dict(tensors), self.arch, self.backend.layout))

    # -- training steps ---------------------------------------------------------------------

    def freeze(self, up_to: str | None) -> None:
        """Keep every weight of the layers up to and including ``up_to`` (a layer of the table with
        weights: ``conv5``, ``fc7``, …) unchanged by :meth:`train_step`, whose backward pass then
        stops at the next layer with weights (which computes no input gradient); ``None`` trains
        every layer again."""
        names = [layer.name for layer in self.arch.layers]
        weighted = [layer.name for layer in self.arch.weighted_layers]
        if up_to is None:
            self.frozen, self._train_from = frozenset(), 0
            return
        if up_to not in weighted:
            raise ValueError(f"[freeze] layer: expected one of {', '.join(weighted)} (the {self.variant} "
                             f"variant's layers with weights), got {up_to!r}")
        if up_to == weighted[-1]:
            raise ValueError(f"[freeze] layer: freezing {up_to} leaves nothing to train (freeze {weighted[-2]} at most)")
        upto = names.index(up_to)
        self.frozen = frozenset(n for layer in self.arch.layers[: upto + 1] for n in layer.param_shapes())
        self._train_from = names.index(weighted[weighted.index(up_to) + 1])  # no gradient flows further down

    def train_step(self, x, labels, opt, dropout_seed: int | None = None, *, outputs: bool = False):
        """One training step in place: the gradients of :meth:`gradients`, then ``opt.step``
        (:class:`~alexnet_aa.training.SGD`) on the backend's own arrays for every weight not
        :meth:`frozen <freeze>`. Returns the batch's loss (a float) before the step; with
        ``outputs=True``, ``(loss, logits)``, the training forward's logits on the backend.
        :meth:`state_dict` then gives the trained weights."""
        self._captured.clear()  # recorded forward passes read the weights they were recorded with
        if not self._owns_native:  # copies: the update writes into them
            self._native = self.native_tensors({name: value.copy() for name, value in self._state.items()})
            self._owns_native = True
        loss, steps = self.backward_steps(x, labels, dropout_seed, down_to=self._train_from)
        grads: dict[str, Any] = {}
        logits = None
        for step in steps:
            logits = step.y if logits is None else logits
            grads.update((name, g) for name, g in step.grads.items() if name not in self.frozen)
        self._native.update(opt.step(self._native, grads))
        self._trained = True
        return (loss, logits) if outputs else loss

    def predict(self, x, top: int = 5) -> Prediction:
        """Top-``top`` classes and their softmax probabilities (:func:`alexnet_aa.ops.softmax`), as NumPy
        arrays. An image whose probabilities are not finite (a NaN or infinite input) is an error
        naming it, never an arbitrary class."""
        if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or not 1 <= top <= self.arch.num_classes:
            raise ValueError(f"[predict] top: expected an int between 1 and {self.arch.num_classes}, got {top!r}")
        probs = to_numpy(ops.softmax(self.backend, self(x)))  # sorted here: CuPy cannot sort bfloat16
        bad = np.flatnonzero(~np.isfinite(probs).all(axis=1))
        if bad.size:
            raise ValueError(f"[predict] image {', '.join(map(str, bad[:10].tolist()))}{' …' if bad.size > 10 else ''}: "
                             "the class probabilities are not finite (NaN or infinite input?): no class can be chosen")
        order = np.argsort(-probs, axis=1, kind="stable")[:, :int(top)]
        return Prediction(order.astype("int64"), np.take_along_axis(probs, order, axis=1))


def _weights_source(weights: Any, variant: str) -> tuple[dict[str, Any] | None, dict[str, str], str]:
    """``(tensors or None, file metadata, what to call the source in errors)`` for ``weights=``."""
    if weights is None:
        return None, {}, "the initialisation"
    if isinstance(weights, AlexNetWeights):
        return _bundle_weights(weights, variant)
    if isinstance(weights, Mapping):
        return dict(weights), {}, "the weights mapping"
    tensors, metadata = read_weights_file(weights)
    return tensors, metadata, str(weights)


def _bundle_weights(bundle: AlexNetWeights, variant: str) -> tuple[dict[str, Any], dict[str, str], str]:
    """The cached download of ``bundle``, checked to be the verified conversion of its published file."""
    from .download import cached_path

    short = bundle.meta["short_name"]
    if bundle.variant != variant:
        raise WeightsError(f"{bundle.name} holds {bundle.variant!r} weights, not {variant!r}: "
                           f"use AlexNet({bundle.variant!r}, weights=AlexNetWeights.{bundle.name})")
    path = cached_path(bundle)
    if not path.is_file():
        how = (f"run `alexnet-aa weights download {short}`" if bundle.sha256 else
               f"import a copy you trust: `alexnet-aa weights import {bundle.file_name} -o {path}`")
        raise WeightsFileError(f"{bundle.name} is not in the cache ({path}): {how}")
    tensors, metadata = read_weights_file(path)
    recorded = metadata.get(SOURCE_SHA256_KEY)
    if bundle.sha256 and recorded != bundle.sha256:
        raise WeightsFileError(
            f"{path} is not the verified download of {bundle.name}: its source SHA-256 is {recorded!r}, "
            f"the published file's is {bundle.sha256}; run `alexnet-aa weights download {short} --force`"
        )
    if metadata.get(VARIANT_KEY, bundle.variant) != bundle.variant:
        raise WeightsFileError(f"{path} holds {metadata[VARIANT_KEY]!r} weights, not {bundle.name}'s {bundle.variant!r}")
    return tensors, metadata, f"{bundle.name} ({path})"
