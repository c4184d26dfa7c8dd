"""AlexNet's three variants as layer tables, and the formulas that size them.

Each variant is data: a tuple of layer specs that reads like the paper's
table. Everything printed about a layer — its output shape, parameter count,
multiply-accumulates, activation memory — is computed from these specs by the
formulas below, and the model is built from the same specs, so the numbers
in ``alexnet-aa summary`` and in the docs are the ones the code runs.

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
from dataclasses import dataclass

# -- layer specs ----------------------------------------------------------------


@dataclass(frozen=True)
class Conv:
    """Convolution + bias + ReLU: ``in_channels → out_channels``, square kernel."""

    name: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    relu: bool = True


@dataclass(frozen=True)
class LRN:
    """Local response normalisation across channels (ONNX/Caffe/PyTorch convention)."""

    name: str
    size: int
    alpha: float
    beta: float
    k: float


@dataclass(frozen=True)
class MaxPool:
    """Max pooling without padding; ``ceil_mode`` chooses the output-size rounding."""

    name: str
    kernel: int
    stride: int
    ceil_mode: bool = False


@dataclass(frozen=True)
class AdaptiveAvgPool:
    """Average pooling to a fixed ``output_size`` (torchvision's ``AdaptiveAvgPool2d``)."""

    name: str
    output_size: int


@dataclass(frozen=True)
class Flatten:
    """``(N, C, H, W) → (N, C·H·W)`` in (C, H, W) order, the order of canonical fc6 weights."""

    name: str


@dataclass(frozen=True)
class Dropout:
    """Dropout with drop probability ``p``; the identity in evaluation."""

    name: str
    p: float = 0.5


@dataclass(frozen=True)
class Linear:
    """Fully connected layer ``in_features → out_features`` (+ ReLU)."""

    name: str
    in_features: int
    out_features: int
    relu: bool = True


Layer = Conv | LRN | MaxPool | AdaptiveAvgPool | Flatten | Dropout | Linear


@dataclass(frozen=True)
class Architecture:
    """One variant: its input size, layer table and where it comes from."""

    variant: str
    input_size: int
    layers: tuple[Layer, ...]
    source: str
    notes: str = ""
    min_input_size: int = 0

    @property
    def weighted_layers(self) -> tuple[Conv | Linear, ...]:
        return tuple(layer for layer in self.layers if isinstance(layer, (Conv, Linear)))

    @property
    def num_classes(self) -> int:
        return self.weighted_layers[-1].out_features


# -- the three variants --------------------------------------------------------

# The paper writes LRN as a_c / (k + α Σ a²)^β with no 1/n; the op follows the
# ONNX/Caffe/PyTorch convention α/n · Σ a², so the paper's α = 1e-4 becomes
# n · α = 5e-4 here (Krizhevsky et al. 2012, section 3.3).
_PAPER_LRN = dict(size=5, alpha=5 * 1e-4, beta=0.75, k=2.0)
_CAFFE_LRN = dict(size=5, alpha=1e-4, beta=0.75, k=1.0)


def _classifier(num_classes: int, dropout_first: bool) -> tuple[Layer, ...]:
    fc6 = Linear("fc6", 256 * 6 * 6, 4096)
    fc7 = Linear("fc7", 4096, 4096)
    fc8 = Linear("fc8", 4096, num_classes, relu=False)
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


def architecture(variant: str = "paper", num_classes: int = 1000) -> Architecture:
    """The layer table of ``variant`` (one of :data:`VARIANTS`) with a ``num_classes`` head."""
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if variant == "paper":
        return Architecture(
            "paper", 227, _krizhevsky(_PAPER_LRN, False, num_classes),
            source="Krizhevsky, Sutskever, Hinton (2012), ImageNet Classification with Deep "
            "Convolutional Neural Networks, sections 3.1-3.5 and figure 2",
            notes="LRN k=2, n=5, alpha=1e-4 (paper, no 1/n) = 5e-4 in the alpha/n convention, "
            "beta=0.75; overlapping pooling 3x3 stride 2; conv2/4/5 grouped (the two GPUs).",
        )
    if variant == "caffe":
        return Architecture(
            "caffe", 227, _krizhevsky(_CAFFE_LRN, True, num_classes),
            source="BVLC Caffe models/bvlc_alexnet/deploy.prototxt",
            notes="LRN local_size=5, alpha=1e-4 (alpha/n convention), beta=0.75, k=1; "
            "pooling in ceil mode (Caffe's rule); conv2/4/5 grouped.",
        )
    if variant == "torchvision":
        return Architecture(
            "torchvision", 224, _torchvision(num_classes),
            source="torchvision.models.alexnet, after Krizhevsky (2014), One weird trick for "
            "parallelizing convolutional neural networks",
            notes="no LRN, no groups, 64/192/384/256/256 channels, adaptive average pool to 6x6 "
            "(so any input >= 63x63 runs); dropout before fc6 and fc7.",
            min_input_size=63,
        )
    raise ValueError(f"unknown variant {variant!r}; known variants: {', '.join(VARIANTS)}")


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


@dataclass(frozen=True)
class LayerInfo:
    """One row of the summary: a layer with its shapes and costs (per image)."""

    layer: Layer
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    params: int
    macs: int
    explain: str

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def activation_bytes(self) -> int:
        return 4 * math.prod(self.out_shape)


def _conv_info(layer: Conv, shape: tuple[int, ...]) -> LayerInfo:
    c, h, w = shape
    if c != layer.in_channels:
        raise ValueError(f"{layer.name} expects {layer.in_channels} input channels, got {c}")
    k, s, p = layer.kernel, layer.stride, layer.padding
    ho, wo = conv_output_size(h, k, s, p), conv_output_size(w, k, s, p)
    cg = layer.in_channels // layer.groups
    params = layer.out_channels * cg * k * k + layer.out_channels
    macs = ho * wo * layer.out_channels * cg * k * k
    explain = (
        f"H_out = floor(({h} - {k} + 2*{p}) / {s}) + 1 = {ho}; "
        f"params = {layer.out_channels}*({layer.in_channels}/{layer.groups})*{k}*{k} + {layer.out_channels}"
        f" = {params:,}; MACs = {ho}*{wo}*{layer.out_channels}*{cg}*{k}*{k} = {macs:,}"
    )
    return LayerInfo(layer, shape, (layer.out_channels, ho, wo), params, macs, explain)


def _pool_info(layer: MaxPool, shape: tuple[int, ...]) -> LayerInfo:
    c, h, w = shape
    k, s = layer.kernel, layer.stride
    ho = pool_output_size(h, k, s, layer.ceil_mode)
    wo = pool_output_size(w, k, s, layer.ceil_mode)
    rounding = "ceil" if layer.ceil_mode else "floor"
    explain = f"H_out = {rounding}(({h} - {k}) / {s}) + 1 = {ho}"
    return LayerInfo(layer, shape, (c, ho, wo), 0, 0, explain)


def _linear_info(layer: Linear, shape: tuple[int, ...]) -> LayerInfo:
    (f,) = shape
    if f != layer.in_features:
        raise ValueError(f"{layer.name} expects {layer.in_features} input features, got {f}")
    params = layer.in_features * layer.out_features + layer.out_features
    macs = layer.in_features * layer.out_features
    explain = (
        f"params = {layer.in_features}*{layer.out_features} + {layer.out_features} = {params:,}; "
        f"MACs = {layer.in_features}*{layer.out_features} = {macs:,}"
    )
    return LayerInfo(layer, shape, (layer.out_features,), params, macs, explain)


def layer_infos(arch: Architecture, input_size: int | None = None) -> list[LayerInfo]:
    """Walk the table from a ``(3, S, S)`` input, computing every row.

    Raises ``ValueError`` when a layer cannot take the shape it receives
    (too small an input, a wrong channel count).
    """
    size = arch.input_size if input_size is None else input_size
    shape: tuple[int, ...] = (3, size, size)
    rows: list[LayerInfo] = []
    for layer in arch.layers:
        if isinstance(layer, Conv):
            info = _conv_info(layer, shape)
        elif isinstance(layer, MaxPool):
            info = _pool_info(layer, shape)
        elif isinstance(layer, Linear):
            info = _linear_info(layer, shape)
        elif isinstance(layer, LRN):
            info = LayerInfo(
                layer, shape, shape, 0, 0,
                f"b_c = a_c / ({layer.k:g} + {layer.alpha:g}/{layer.size} * sum of a^2 over "
                f"{layer.size} channels)^{layer.beta:g}",
            )
        elif isinstance(layer, AdaptiveAvgPool):
            c = shape[0]
            o = layer.output_size
            info = LayerInfo(layer, shape, (c, o, o), 0, 0, f"average over bins of {shape[1]}/{o}")
        elif isinstance(layer, Flatten):
            flat = (math.prod(shape),)
            info = LayerInfo(layer, shape, flat, 0, 0, f"{' * '.join(map(str, shape))} = {flat[0]}")
        else:  # Dropout
            info = LayerInfo(layer, shape, shape, 0, 0, f"p = {layer.p} in training; identity in eval")
        if min(info.out_shape) < 1:
            raise ValueError(
                f"input {size}x{size} is too small for {arch.variant}: {layer.name} would output "
                f"{info.out_shape}"
            )
        rows.append(info)
        shape = info.out_shape
    return rows


def count_params(variant: str = "paper", num_classes: int = 1000) -> int:
    """Total learnable parameters (weights + biases)."""
    return sum(r.params for r in layer_infos(architecture(variant, num_classes)))


def count_macs(variant: str = "paper", num_classes: int = 1000, input_size: int | None = None) -> int:
    """Multiply-accumulates of one image's forward pass (conv + linear)."""
    return sum(r.macs for r in layer_infos(architecture(variant, num_classes), input_size))


def flatten_input_shape(arch: Architecture) -> tuple[int, int, int]:
    """``(C, H, W)`` of the map the flatten layer turns into fc6's input (``(256, 6, 6)``)."""
    info = next(i for i in layer_infos(arch) if isinstance(i.layer, Flatten))
    return info.in_shape


def param_shapes(arch: Architecture) -> dict[str, tuple[int, ...]]:
    """Canonical tensor names → shapes: conv ``(O, C/g, K, K)``, linear ``(out, in)``, bias ``(O,)``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in arch.weighted_layers:
        if isinstance(layer, Conv):
            cg = layer.in_channels // layer.groups
            shapes[f"{layer.name}.weight"] = (layer.out_channels, cg, layer.kernel, layer.kernel)
            shapes[f"{layer.name}.bias"] = (layer.out_channels,)
        else:
            shapes[f"{layer.name}.weight"] = (layer.out_features, layer.in_features)
            shapes[f"{layer.name}.bias"] = (layer.out_features,)
    return shapes
