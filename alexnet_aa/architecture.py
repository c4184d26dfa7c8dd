"""AlexNet's three variants as layer tables, and the formulas that size them.

Each variant is data: a tuple of layer specs that reads like the paper's
table. Each spec knows what it is — its output shape, canonical parameter
shapes, multiply-accumulates, one-line configuration and formula — and how to
apply itself through an op set (:class:`alexnet_aa.ops.BackendOps` for the
model, another interpreter such as the PyTorch oracle for tests), so nothing
else switches on the layer's type. Everything printed about a layer in
``alexnet-aa summary``, the diagrams and the docs is computed here, from the
same specs the model runs.

Notation: input ``(N, C, H, W)``; kernel ``K``, stride ``S``, padding ``P``,
groups ``g``, output channels ``O``.

* Convolution output size: :math:`H_{out} = \\lfloor (H + 2P - K) / S \\rfloor + 1`.
* Max-pool output size (no padding), floor mode:
  :math:`\\lfloor (H - K) / S \\rfloor + 1`; ceil mode:
  :math:`\\lceil (H - K) / S \\rceil + 1`, minus one if that last window
  would start outside the input (the PyTorch/ONNX rule).
* Convolution parameters: :math:`O \\cdot (C/g) \\cdot K_h K_w + O`;
  MACs per image: :math:`H_{out} W_{out} \\cdot O \\cdot (C/g) \\cdot K_h K_w`.
* Linear parameters: :math:`F_{in} F_{out} + F_{out}`; MACs: :math:`F_{in} F_{out}`.
* Activation memory: output elements × 4 bytes (float32), per image.

MACs count the multiply-accumulates of convolutions and linear layers only
(bias, ReLU, LRN and pooling are not counted), the usual convention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

Shape = tuple[int, ...]

# -- the formulas ---------------------------------------------------------------


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """``⌊(size + 2·padding − kernel) / stride⌋ + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


def pool_output_size(size: int, kernel: int, stride: int, ceil_mode: bool = False) -> int:
    """``⌊(size − kernel)/stride⌋ + 1``, or in ceil mode ``⌈(size − kernel)/stride⌉ + 1``
    less one when the last window would start at or past ``size``."""
    if not ceil_mode:
        return (size - kernel) // stride + 1
    out = -(-(size - kernel) // stride) + 1
    if (out - 1) * stride >= size:
        out -= 1
    return out


def pool_overhang(size: int, kernel: int, stride: int, ceil_mode: bool) -> int:
    """How far the last pooling window reaches past the input (0 in floor mode): the −∞ padding a
    ceil-mode pool needs on the bottom/right edge, ``(out − 1)·stride + kernel − size``."""
    return max(0, (pool_output_size(size, kernel, stride, ceil_mode) - 1) * stride + kernel - size)


def transposed_conv_rows(size: int, out: int, kernel: int, stride: int, padding: int) -> tuple[int, int, int]:
    """Where a convolution's output rows go in its transposed convolution (the input gradient).

    ``dx[h] = Σ_p w[p]·ȳ'[h + P − p]`` with ``ȳ'`` the output gradient dilated by the
    stride: a stride-1 correlation, with the flipped kernel, of a buffer of
    ``size + kernel − 1`` rows holding output row ``i`` at ``stride·i + kernel − 1 − padding``.
    Returns ``(i0, i1, row of i0)``: the output rows ``i0 … i1 − 1`` that land inside it (with
    ``padding > kernel − 1`` the first and last rows read only padding and are dropped).
    """
    i0 = max(0, -(-(padding - kernel + 1) // stride))
    i1 = min(out, (size + padding - 1) // stride + 1)
    return i0, i1, stride * i0 + kernel - 1 - padding


def adaptive_pool_bins(size: int, output_size: int) -> list[tuple[int, int]]:
    """The ``[start, stop)`` of each of ``output_size`` bins over ``size`` positions:
    bin ``i`` spans ``[⌊i·size/out⌋, ⌈(i+1)·size/out⌉)`` (torchvision's ``AdaptiveAvgPool2d``)."""
    return [((i * size) // output_size, -(-((i + 1) * size) // output_size)) for i in range(output_size)]


# -- layer specs ----------------------------------------------------------------
#
# Every spec has a ``name`` and the same methods: ``output_shape(shape)``
# (per image, (C, H, W) or (F,)), ``param_shapes()`` (canonical names →
# shapes), ``macs(shape)``, ``config()`` (the one-line configuration),
# ``explain(shape)`` (its formula with its numbers), ``apply(ops, arrays, x)``
# and its twin ``backward(ops, arrays, x, y, dy, need_dx) -> (dx, {name: grad})``,
# where ``arrays`` holds the layer's weights by canonical name (and, in a
# training step, a dropout layer's mask under ``<name>.mask``).


class _LayerSpec:
    """What every spec has; the defaults are those of a layer without weights or MACs."""

    @property
    def kind(self) -> str:
        """The layer's type as the summary and the diagrams name it: its spec's class name."""
        return type(self).__name__

    def param_shapes(self) -> dict[str, Shape]:
        return {}

    def macs(self, shape: Shape) -> int:
        return 0

    def output_size_latex(self, shape: Shape) -> str | None:
        """The output-size formula with this layer's numbers, as LaTeX (``None``: the size is kept or fixed)."""
        return None

    def ablated(self, change: str, value: Any = None) -> Any:
        """This layer with the ablation ``change`` of :data:`ABLATIONS` made (``value``: its number),
        ``None`` where the ablation removes it; the layer itself where it does not apply."""
        return self

    def fitted(self, shape: Shape) -> Any:
        """This layer taking input of ``shape`` where its weights follow the input (a linear layer's
        ``in_features``); itself otherwise."""
        return self


class _Activated(_LayerSpec):
    """A conv or linear layer followed by its ``activation`` (one of :data:`ACTIVATIONS`, or ``None``).

    ReLU is fused into the heavy op (the protocol's ``relu`` flag, DESIGN.md §4); tanh and sigmoid
    are the Array API ops :func:`alexnet_aa.ops.activation` and its backward twin, applied after it
    (the heavy op's backward then gets ``relu=False`` and the activated output as ``y``, which it uses
    for its shape only)."""

    activation: str | None

    @property
    def relu(self) -> bool:
        """The heavy op's fusion flag: this layer's activation is ReLU."""
        return self.activation == "relu"

    def _suffix(self) -> str:
        return f" +{ACTIVATIONS[self.activation]}" if self.activation else ""

    def ablated(self, change: str, value: Any = None) -> Any:
        return replace(self, activation=change) if change in ("tanh", "sigmoid") and self.relu else self

    def _activate(self, ops: Any, y: Any) -> Any:
        return y if self.activation in (None, "relu") else ops.activation(y, self.activation)

    def _pre_activation_grad(self, ops: Any, y: Any, dy: Any) -> Any:
        """The gradient at the heavy op's output: ``dy`` itself where the op fuses ReLU (or has none)."""
        return dy if self.activation in (None, "relu") else ops.activation_backward(y, dy, self.activation)


#: The activations a conv or linear layer may end with, as the summary names them.
ACTIVATIONS = {"relu": "ReLU", "tanh": "tanh", "sigmoid": "sigmoid"}


@dataclass(frozen=True)
class Conv(_Activated):
    """Convolution + bias + activation (ReLU): ``in_channels → out_channels``, square kernel."""

    name: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    activation: str | None = "relu"

    def output_shape(self, shape: Shape) -> Shape:
        c, h, w = shape
        if c != self.in_channels:
            raise ValueError(f"{self.name} expects {self.in_channels} input channels, got {c}")
        k, s, p = self.kernel, self.stride, self.padding
        return (self.out_channels, conv_output_size(h, k, s, p), conv_output_size(w, k, s, p))

    def param_shapes(self) -> dict[str, Shape]:
        cg = self.in_channels // self.groups
        return {f"{self.name}.weight": (self.out_channels, cg, self.kernel, self.kernel),
                f"{self.name}.bias": (self.out_channels,)}

    def macs(self, shape: Shape) -> int:
        _, ho, wo = self.output_shape(shape)
        return ho * wo * self.out_channels * (self.in_channels // self.groups) * self.kernel**2

    def config(self) -> str:
        k = self.kernel
        return f"{k}x{k} /{self.stride} p{self.padding} g{self.groups}" + self._suffix()

    def explain(self, shape: Shape) -> str:
        h = shape[1]
        k, s, p, o, c, g = self.kernel, self.stride, self.padding, self.out_channels, self.in_channels, self.groups
        _, ho, wo = self.output_shape(shape)
        params = sum(math.prod(v) for v in self.param_shapes().values())
        return (
            f"H_out = floor(({h} - {k} + 2*{p}) / {s}) + 1 = {ho}; "
            f"params = {o}*({c}/{g})*{k}*{k} + {o} = {params:,}; "
            f"MACs = {ho}*{wo}*{o}*{c // g}*{k}*{k} = {self.macs(shape):,}"
        )

    def ablated(self, change: str, value: Any = None) -> Any:
        return replace(self, groups=1) if change == "groups=1" else super().ablated(change, value)

    def output_size_latex(self, shape: Shape) -> str:
        h, k, s, p = shape[1], self.kernel, self.stride, self.padding
        return (rf"H_{{out}} = \left\lfloor \frac{{{h} - {k} + 2 \cdot {p}}}{{{s}}} \right\rfloor + 1 "
                rf"= \lfloor {(h - k + 2 * p) / s:g} \rfloor + 1 = {conv_output_size(h, k, s, p)}")

    def apply(self, ops: Any, params: dict[str, Any], x: Any) -> Any:
        return self._activate(ops, ops.conv2d(x, params[f"{self.name}.weight"], params[f"{self.name}.bias"],
                                              self.stride, self.padding, self.groups, self.relu))

    def backward(self, ops: Any, params: dict[str, Any], x: Any, y: Any, dy: Any, need_dx: bool) -> tuple[Any, dict]:
        dx, dw, db = ops.conv2d_backward(x, params[f"{self.name}.weight"], y, self._pre_activation_grad(ops, y, dy),
                                         self.stride, self.padding, self.groups, self.relu, need_dx)
        return dx, {f"{self.name}.weight": dw, f"{self.name}.bias": db}


@dataclass(frozen=True)
class LRN(_LayerSpec):
    """Local response normalisation across channels (ONNX/Caffe/PyTorch convention)."""

    name: str
    size: int
    alpha: float
    beta: float
    k: float

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def config(self) -> str:
        return f"n={self.size} a={self.alpha:g} b={self.beta:g} k={self.k:g}"

    def explain(self, shape: Shape) -> str:
        return (f"b_c = a_c / ({self.k:g} + {self.alpha:g}/{self.size} * sum of a^2 over "
                f"{self.size} channels)^{self.beta:g}")

    def ablated(self, change: str, value: Any = None) -> Any:
        return None if change == "no-lrn" else self

    def apply(self, ops: Any, params: dict[str, Any], x: Any) -> Any:
        return ops.lrn(x, self.size, self.alpha, self.beta, self.k)

    def backward(self, ops: Any, params: dict[str, Any], x: Any, y: Any, dy: Any, need_dx: bool) -> tuple[Any, dict]:
        return (ops.lrn_backward(x, y, dy, self.size, self.alpha, self.beta, self.k) if need_dx else None), {}


@dataclass(frozen=True)
class MaxPool(_LayerSpec):
    """Max pooling without padding; ``ceil_mode`` chooses the output-size rounding."""

    name: str
    kernel: int
    stride: int
    ceil_mode: bool = False

    def output_shape(self, shape: Shape) -> Shape:
        c, h, w = shape
        k, s = self.kernel, self.stride
        return (c, pool_output_size(h, k, s, self.ceil_mode), pool_output_size(w, k, s, self.ceil_mode))

    def config(self) -> str:
        return f"{self.kernel}x{self.kernel} /{self.stride} {'ceil' if self.ceil_mode else 'floor'}"

    def explain(self, shape: Shape) -> str:
        h = shape[1]
        rounding = "ceil" if self.ceil_mode else "floor"
        return f"H_out = {rounding}(({h} - {self.kernel}) / {self.stride}) + 1 = {self.output_shape(shape)[1]}"

    def output_size_latex(self, shape: Shape) -> str:
        h, k, s = shape[1], self.kernel, self.stride
        left, right = (r"\lceil", r"\rceil") if self.ceil_mode else (r"\lfloor", r"\rfloor")
        return (rf"H_{{out}} = \left{left} \frac{{{h} - {k}}}{{{s}}} \right{right} + 1 "
                rf"= {left} {(h - k) / s:g} {right} + 1 = {pool_output_size(h, k, s, self.ceil_mode)}")

    def ablated(self, change: str, value: Any = None) -> Any:
        """``no-overlap``: an overlapping stride-2 window (3×3) becomes 2×2, the stride kept, in floor
        mode: the maps keep the sizes 3×3 windows give (the paper's "equivalent dimensions")."""
        if change == "no-overlap" and self.kernel > self.stride == 2:
            return replace(self, kernel=2, ceil_mode=False)
        return self

    def apply(self, ops: Any, params: dict[str, Any], x: Any) -> Any:
        return ops.max_pool2d(x, self.kernel, self.stride, self.ceil_mode)

    def backward(self, ops: Any, params: dict[str, Any], x: Any, y: Any, dy: Any, need_dx: bool) -> tuple[Any, dict]:
        return (ops.max_pool2d_backward(x, y, dy, self.kernel, self.stride, self.ceil_mode) if need_dx else None), {}


@dataclass(frozen=True)
class AdaptiveAvgPool(_LayerSpec):
    """Average pooling to a fixed ``output_size`` (torchvision's ``AdaptiveAvgPool2d``)."""

    name: str
    output_size: int

    def output_shape(self, shape: Shape) -> Shape:
        return (shape[0], self.output_size, self.output_size)

    def config(self) -> str:
        return f"-> {self.output_size}x{self.output_size}"

    def explain(self, shape: Shape) -> str:
        return f"average over bins of {shape[1]}/{self.output_size}"

    def apply(self, ops: Any, params: dict[str, Any], x: Any) -> Any:
        return ops.adaptive_avg_pool2d(x, self.output_size)

    def backward(self, ops: Any, params: dict[str, Any], x: Any, y: Any, dy: Any, need_dx: bool) -> tuple[Any, dict]:
        return (ops.adaptive_avg_pool2d_backward(x, dy, self.output_size) if need_dx else None), {}


@dataclass(frozen=True)
class Flatten(_LayerSpec):
    """``(N, C, H, W) → (N, C·H·W)`` in (C, H, W) order, the order of canonical fc6 weights."""

    name: str

    def output_shape(self, shape: Shape) -> Shape:
        return (math.prod(shape),)

    def config(self) -> str:
        return "(C, H, W) order"

    def explain(self, shape: Shape) -> str:
        return f"{' * '.join(map(str, shape))} = {math.prod(shape)}"

    def apply(self, ops: Any, params: dict[str, Any], x: Any) -> Any:
        return ops.flatten(x)

    def backward(self, ops: Any, params: dict[str, Any], x: Any, y: Any, dy: Any, need_dx: bool) -> tuple[Any, dict]:
        return (ops.flatten_backward(x, dy) if need_dx else None), {}


@dataclass(frozen=True)
class Dropout(_LayerSpec):
    """Dropout with drop probability ``p``; the identity in evaluation."""

    name: str
    p: float = 0.5

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def config(self) -> str:
        return f"p={self.p} (eval: identity)"

    def explain(self, shape: Shape) -> str:
        return f"p = {self.p} in training; identity in eval"

    def ablated(self, change: str, value: Any = None) -> Any:
        return replace(self, p=value) if change == "dropout=P" else self

    def apply(self, ops: Any, params: dict[str, Any], x: Any) -> Any:
        return ops.dropout(x, self.p, params.get(f"{self.name}.mask"))

    def backward(self, ops: Any, params: dict[str, Any], x: Any, y: Any, dy: Any, need_dx: bool) -> tuple[Any, dict]:
        return (ops.dropout_backward(dy, params.get(f"{self.name}.mask")) if need_dx else None), {}


@dataclass(frozen=True)
class Linear(_Activated):
    """Fully connected layer ``in_features → out_features`` (+ activation: ReLU, none for fc8)."""

    name: str
    in_features: int
    out_features: int
    activation: str | None = "relu"

    def output_shape(self, shape: Shape) -> Shape:
        (f,) = shape
        if f != self.in_features:
            raise ValueError(f"{self.name} expects {self.in_features} input features, got {f}")
        return (self.out_features,)

    def fitted(self, shape: Shape) -> Any:
        return replace(self, in_features=shape[0])

    def param_shapes(self) -> dict[str, Shape]:
        return {f"{self.name}.weight": (self.out_features, self.in_features),
                f"{self.name}.bias": (self.out_features,)}

    def macs(self, shape: Shape) -> int:
        return self.in_features * self.out_features

    def config(self) -> str:
        return f"{self.in_features}->{self.out_features}" + self._suffix()

    def explain(self, shape: Shape) -> str:
        fi, fo = self.in_features, self.out_features
        return f"params = {fi}*{fo} + {fo} = {fi * fo + fo:,}; MACs = {fi}*{fo} = {fi * fo:,}"

    def apply(self, ops: Any, params: dict[str, Any], x: Any) -> Any:
        return self._activate(ops, ops.linear(x, params[f"{self.name}.weight"], params[f"{self.name}.bias"], self.relu))

    def backward(self, ops: Any, params: dict[str, Any], x: Any, y: Any, dy: Any, need_dx: bool) -> tuple[Any, dict]:
        dx, dw, db = ops.linear_backward(x, params[f"{self.name}.weight"], y, self._pre_activation_grad(ops, y, dy),
                                         self.relu, need_dx)
        return dx, {f"{self.name}.weight": dw, f"{self.name}.bias": db}


Layer = Conv | LRN | MaxPool | AdaptiveAvgPool | Flatten | Dropout | Linear


@dataclass(frozen=True)
class Architecture:
    """One variant: its input size, layer table, head width and where it comes from."""

    variant: str
    input_size: int
    layers: tuple[Layer, ...]
    num_classes: int
    source: str
    notes: str = ""
    min_input_size: int = 0
    ablations: tuple[str, ...] = ()

    @property
    def base(self) -> str:
        """The variant this table was derived from (``"paper"`` for ``"paper+tanh"``)."""
        return self.variant.partition("+")[0]

    def layers_of(self, *kinds: type) -> tuple[Layer, ...]:
        """The layers that are one of ``kinds`` (spec classes), in table order."""
        return tuple(layer for layer in self.layers if isinstance(layer, kinds))

    @property
    def weighted_layers(self) -> tuple[Layer, ...]:
        """The layers with parameters (conv1 … fc8), in table order."""
        return tuple(layer for layer in self.layers if layer.param_shapes())


# -- the three variants --------------------------------------------------------

# The paper writes LRN as a_c / (k + α Σ a²)^β with no 1/n; the op follows the
# ONNX/Caffe/PyTorch convention α/n · Σ a², so the paper's α = 1e-4 becomes
# n · α = 5e-4 here (Krizhevsky et al. 2012, section 3.3).
_PAPER_LRN = dict(size=5, alpha=5 * 1e-4, beta=0.75, k=2.0)
_CAFFE_LRN = dict(size=5, alpha=1e-4, beta=0.75, k=1.0)


def _classifier(num_classes: int, dropout_first: bool) -> tuple[Layer, ...]:
    fc6 = Linear("fc6", 256 * 6 * 6, 4096)
    fc7 = Linear("fc7", 4096, 4096)
    fc8 = Linear("fc8", 4096, num_classes, activation=None)
    if dropout_first:  # torchvision: Dropout → Linear → ReLU
        return (Dropout("drop6"), fc6, Dropout("drop7"), fc7, fc8)
    return (fc6, Dropout("drop6"), fc7, Dropout("drop7"), fc8)  # paper, Caffe: fc → ReLU → dropout


def _krizhevsky(lrn: dict, ceil_mode: bool, num_classes: int) -> tuple[Layer, ...]:
    return (
        Conv("conv1", 3, 96, kernel=11, stride=4, padding=0),
        LRN("lrn1", **lrn),
        MaxPool("pool1", kernel=3, stride=2, ceil_mode=ceil_mode),
        Conv("conv2", 96, 256, kernel=5, padding=2, groups=2),
        LRN("lrn2", **lrn),
        MaxPool("pool2", kernel=3, stride=2, ceil_mode=ceil_mode),
        Conv("conv3", 256, 384, kernel=3, padding=1),
        Conv("conv4", 384, 384, kernel=3, padding=1, groups=2),
        Conv("conv5", 384, 256, kernel=3, padding=1, groups=2),
        MaxPool("pool5", kernel=3, stride=2, ceil_mode=ceil_mode),
        Flatten("flatten"),
        *_classifier(num_classes, dropout_first=False),
    )


def _torchvision(num_classes: int) -> tuple[Layer, ...]:
    return (
        Conv("conv1", 3, 64, kernel=11, stride=4, padding=2),
        MaxPool("pool1", kernel=3, stride=2),
        Conv("conv2", 64, 192, kernel=5, padding=2),
        MaxPool("pool2", kernel=3, stride=2),
        Conv("conv3", 192, 384, kernel=3, padding=1),
        Conv("conv4", 384, 256, kernel=3, padding=1),
        Conv("conv5", 256, 256, kernel=3, padding=1),
        MaxPool("pool5", kernel=3, stride=2),
        AdaptiveAvgPool("avgpool", 6),
        Flatten("flatten"),
        *_classifier(num_classes, dropout_first=True),
    )


VARIANTS = ("paper", "caffe", "torchvision")


def get_architecture(variant: str = "paper", num_classes: int = 1000) -> Architecture:
    """The layer table of ``variant`` with a ``num_classes`` head: one of :data:`VARIANTS`, or one of
    them with ablations, ``"paper+tanh+no-lrn"`` (:data:`ABLATIONS`, :func:`ablate`)."""
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(variant, str):
        raise ValueError(f"variant: expected a name such as {VARIANTS[0]!r} or 'paper+tanh', got {variant!r}")
    base, *changes = variant.split("+")
    arch = _base_architecture(base, num_classes)
    return ablate(arch, changes) if changes else arch


def variant_name(variant: str) -> str:
    """``variant``'s canonical spelling (``"paper+no-lrn+tanh"`` → ``"paper+tanh+no-lrn"``), or the
    ``ValueError`` of :func:`get_architecture` for a name that is not one."""
    return get_architecture(variant).variant


def _base_architecture(variant: str, num_classes: int) -> Architecture:
    if variant == "paper":
        return Architecture(
            "paper", 227, _krizhevsky(_PAPER_LRN, False, num_classes), num_classes,
            source="Krizhevsky, Sutskever, Hinton (2012), ImageNet Classification with Deep "
            "Convolutional Neural Networks, sections 3.1-3.5 and figure 2",
            notes="LRN k=2, n=5, alpha=1e-4 (paper, no 1/n) = 5e-4 in the alpha/n convention, "
            "beta=0.75; overlapping pooling 3x3 stride 2; conv2/4/5 grouped (the two GPUs).",
        )
    if variant == "caffe":
        return Architecture(
            "caffe", 227, _krizhevsky(_CAFFE_LRN, True, num_classes), num_classes,
            source="BVLC Caffe models/bvlc_alexnet/deploy.prototxt",
            notes="LRN local_size=5, alpha=1e-4 (alpha/n convention), beta=0.75, k=1; "
            "pooling in ceil mode (Caffe's rule); conv2/4/5 grouped.",
        )
    if variant == "torchvision":
        return Architecture(
            "torchvision", 224, _torchvision(num_classes), num_classes,
            source="torchvision.models.alexnet, after Krizhevsky (2014), One weird trick for "
            "parallelizing convolutional neural networks",
            notes="no LRN, no groups, 64/192/384/256/256 channels, adaptive average pool to 6x6 "
            "(so any input >= 63x63 runs); dropout before fc6 and fc7.",
            min_input_size=63,
        )
    raise ValueError(f"unknown variant {variant!r}; known variants: {', '.join(VARIANTS)} "
                     f"(each with ablations: {', '.join(ABLATIONS)}, as in 'paper+tanh')")


# -- ablations: the table varied, one named change at a time -------------------------------
#
# A variant name with ``+change`` parts is the base table with each change made (in the order of
# ABLATIONS, so that a name has one canonical spelling): the paper's claims measured on its own
# table (``alexnet-aa ablate``). Each change is a transformation of the layer specs, not a new code
# path: the same ops run the ablated table on every backend.

#: ``name: what it changes`` (``P`` a probability in [0, 1), ``S`` an input side).
ABLATIONS = {
    "tanh": "tanh instead of ReLU after every conv and fc6/fc7 (the paper's Figure 1 compares the two)",
    "sigmoid": "the logistic sigmoid instead of ReLU, likewise",
    "no-lrn": "the LRN layers removed (the paper: LRN lowers top-1/top-5 error by 1.4%/1.2%)",
    "no-overlap": "every 3x3 stride-2 max pool made 2x2 stride 2 (floor mode), not overlapping (the paper: overlap -0.4% top-1)",
    "dropout=P": "every dropout layer with drop probability P (dropout=0: off)",
    "groups=1": "every grouped convolution ungrouped, one tower (the paper's two GPUs were two groups)",
    "input=S": "the table at an SxS input; in the paper and Caffe tables fc6 takes the map pool5 then gives",
}


def _kind(name: str) -> str:
    """What an ablation changes: the two activations change the same thing, each other one its own."""
    return "activation" if name in ("tanh", "sigmoid") else name


def _parse_change(change: str) -> tuple[str, str]:
    """``"dropout=0.2"`` → ``("dropout=P", "0.2")``; ``"tanh"`` → ``("tanh", "")``; else a ValueError."""
    key, eq, value = change.partition("=")
    name = f"{key}={'P' if key == 'dropout' else 'S' if key == 'input' else '1'}" if eq else key
    if name not in ABLATIONS or (name == "groups=1" and value != "1"):
        raise ValueError(f"unknown ablation {change!r}; known: {', '.join(ABLATIONS)}")
    return name, value


def _number(change: str, value: str, kind: type, ok) -> Any:
    try:
        number = kind(value)
    except ValueError:
        number = None
    if number is None or not ok(number):
        what = "a probability in [0, 1)" if kind is float else "an input side >= 1"
        raise ValueError(f"ablation {change!r}: expected {what}, got {value!r}")
    return number


def ablate(arch: Architecture, changes: list[str] | tuple[str, ...]) -> Architecture:
    """``arch`` with each of ``changes`` (names of :data:`ABLATIONS`, with their numbers) made.

    The result's ``variant`` is the canonical name (``paper+tanh+no-lrn``: changes in the order of
    :data:`ABLATIONS`). A change that would not change the table (no LRN to remove, no grouped conv,
    the base's own input size), two changes of the same thing and an input too small for the table
    are each a ``ValueError`` naming them.
    """
    parsed: dict[str, tuple[str, str]] = {}
    for change in changes:
        name, text = _parse_change(change)
        kind = _kind(name)
        if kind in parsed:
            raise ValueError(f"ablations {parsed[kind][0]!r} and {change!r} change the same thing: give one")
        parsed[kind] = (change, text)
    layers, size = list(arch.layers), arch.input_size
    done = []
    for name in ABLATIONS:
        kind = _kind(name)
        if kind not in parsed or (kind == "activation" and parsed[kind][0] != name):
            continue
        change, text = parsed[kind]
        before, value = tuple(layers), None
        if name == "dropout=P":
            value = _number(change, text, float, lambda p: 0 <= p < 1)
            change = f"dropout={value:g}" if float(f"{value:g}") == value else f"dropout={value!r}"  # the name keeps p
        elif name == "input=S":
            size = _number(change, text, int, lambda s: s >= 1)
            change = f"input={size}"
        layers = [new for layer in layers if (new := layer.ablated(name, value)) is not None]
        if tuple(layers) == before and size == arch.input_size:
            raise ValueError(f"ablation {change!r} changes nothing in the {arch.variant} table")
        done.append(change)
    if arch.min_input_size and size < arch.min_input_size:
        raise ValueError(f"ablation 'input={size}': the {arch.variant} table takes inputs >= {arch.min_input_size}")
    layers = _fitted(tuple(layers), size, arch.variant)
    return replace(arch, variant="+".join([arch.variant, *done]), input_size=size, layers=layers,
                   ablations=arch.ablations + tuple(done))


def _fitted(layers: tuple[Layer, ...], size: int, variant: str) -> tuple[Layer, ...]:
    """``layers`` walked from a ``size``×``size`` input, each :meth:`fitted <_LayerSpec.fitted>` to the
    shape it receives (fc6 takes the features the flatten before it gives: 256·6·6 at the canonical
    sizes, or behind an adaptive pool)."""
    shape: Shape = (3, size, size)
    out = []
    for layer in layers:
        layer = layer.fitted(shape)
        shape = layer.output_shape(shape)
        if min(shape) < 1:
            raise ValueError(f"input {size}x{size} is too small for {variant}: {layer.name} would output {shape}")
        out.append(layer)
    return tuple(out)


# -- walking the table ------------------------------------------------------------


@dataclass(frozen=True)
class LayerInfo:
    """One row of the summary: a layer with its shapes and costs (per image)."""

    layer: Layer
    in_shape: Shape
    out_shape: Shape
    params: int
    macs: int
    explain: str

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def activation_bytes(self) -> int:
        return 4 * math.prod(self.out_shape)


def layer_infos(arch: Architecture, input_size: int | None = None) -> list[LayerInfo]:
    """Walk the table from a ``(3, S, S)`` input, computing every row.

    Raises ``ValueError`` when a layer cannot take the shape it receives
    (too small an input, a wrong channel count).
    """
    size = arch.input_size if input_size is None else input_size
    shape: Shape = (3, size, size)
    rows: list[LayerInfo] = []
    for layer in arch.layers:
        out = layer.output_shape(shape)
        if min(out) < 1:
            raise ValueError(
                f"input {size}x{size} is too small for {arch.variant}: {layer.name} would output {out}"
            )
        params = sum(math.prod(s) for s in layer.param_shapes().values())
        rows.append(LayerInfo(layer, shape, out, params, layer.macs(shape), layer.explain(shape)))
        shape = out
    return rows


def batch_bytes(arch: Architecture, batch: int, input_size: int | None = None, *, training: bool = False) -> int:
    """An estimate of the activation memory of one batch, float32: every layer's output at once
    (what a training step keeps for its backward pass, and an upper bound for a forward pass), twice
    over when training (the gradients flowing back), plus the input."""
    infos = layer_infos(arch, input_size)
    per_image = 4 * math.prod(infos[0].in_shape) + sum(i.activation_bytes for i in infos) * (2 if training else 1)
    return batch * per_image


def count_params(variant: str = "paper", num_classes: int = 1000) -> int:
    """Total learnable parameters (weights + biases)."""
    return sum(r.params for r in layer_infos(get_architecture(variant, num_classes)))


def count_macs(variant: str = "paper", num_classes: int = 1000, input_size: int | None = None) -> int:
    """Multiply-accumulates of one image's forward pass (conv + linear)."""
    return sum(r.macs for r in layer_infos(get_architecture(variant, num_classes), input_size))


def flattened_map_shape(arch: Architecture) -> Shape:
    """``(C, H, W)`` of the map that becomes fc6's input features (``(256, 6, 6)``): the input
    of the layer that turns a map into a vector."""
    return next(i.in_shape for i in layer_infos(arch) if len(i.in_shape) == 3 and len(i.out_shape) == 1)


def flat_feature_layers(arch: Architecture) -> tuple[str, ...]:
    """The layers whose output is the flattened map itself, in its (C, H, W) order: the flatten and
    the parameterless layers after it, up to the first weighted layer (torchvision's ``drop6``)."""
    names: list[str] = []
    for info in layer_infos(arch):
        if names and info.params:
            break
        if names or (len(info.in_shape) == 3 and len(info.out_shape) == 1):
            names.append(info.name)
    return tuple(names)


def param_shapes(arch: Architecture) -> dict[str, Shape]:
    """Canonical tensor names → shapes: conv ``(O, C/g, K, K)``, linear ``(out, in)``, bias ``(O,)``."""
    return {name: shape for layer in arch.layers for name, shape in layer.param_shapes().items()}
