"""Published weight bundles, after torchvision's ``AlexNet_Weights``: an enum of dataclasses.

Each bundle carries its source URL, SHA-256 and size, its variant, its
preprocessing factory and its meta (categories, parameter and MAC counts,
published metrics, docs). ``AlexNet(variant, weights=AlexNetWeights.<X>)``
loads the cached, verified download (``alexnet-aa weights download <short
name>``) and takes ``num_classes``, the class names and the preprocessing from
the bundle; the docs' bundle table is generated from the same meta.

>>> AlexNetWeights.DEFAULT.variant, AlexNetWeights.get("caffe").name
('torchvision', 'CAFFE_BVLC_IMAGENET1K')
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .categories import imagenet_categories
from .preprocess import Preprocess, caffe_preprocess, torchvision_preprocess


@dataclass(frozen=True)
class WeightsBundle:
    """One published set of weights: where it comes from, how to check it, what it expects."""

    url: str | None
    sha256: str | None
    file_size: int | None
    variant: str
    transforms: Callable[[], Preprocess]
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def file_name(self) -> str | None:
        return self.url.rsplit("/", 1)[-1] if self.url else None


class AlexNetWeights(enum.Enum):
    """Published AlexNet weights, by bundle (after torchvision's ``AlexNet_Weights``).

    ``num_params`` and ``ops`` (GMACs per image at the variant's input size)
    are tested against what :mod:`alexnet_aa.architecture` computes.
    """

    TORCHVISION_IMAGENET1K_V1 = WeightsBundle(
        url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        # Full SHA-256 of the published file. Its name carries the first 8 hex digits
        # (torch hub's convention; tests check they agree); the full digest and
        # the size agree across independent public pins of this file (e.g. LPIPS
        # evaluation setups) and with torchvision's `_file_size` of 233.087 MiB.
        sha256="7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
        file_size=244_408_911,
        variant="torchvision",
        transforms=torchvision_preprocess,
        meta={
            "short_name": "torchvision",
            "categories": imagenet_categories(),
            "num_params": 61_100_840,
            "ops": 0.714,
            "min_size": (63, 63),
            "format": "torch state dict (.pth, zip + pickle)",
            "metrics": {"ImageNet-1K": {"acc@1": 56.522, "acc@5": 79.066}},
            "source": "torchvision.models.AlexNet_Weights.IMAGENET1K_V1",
            "docs": "torchvision's one-weird-trick AlexNet, trained with its simplified recipe "
            "(references/classification#alexnet-and-vgg); metrics as published by torchvision.",
        },
    )
    CAFFE_BVLC_IMAGENET1K = WeightsBundle(
        url="https://github.com/onnx/models/raw/main/validated/vision/classification/alexnet/model/bvlcalexnet-12.onnx",
        sha256=None,  # not pinned here: import a copy you trust with `alexnet-aa weights import`
        file_size=None,
        variant="caffe",
        transforms=caffe_preprocess,
        meta={
            "short_name": "caffe",
            "categories": imagenet_categories(),
            "num_params": 60_965_224,
            "ops": 0.724,
            "min_size": (227, 227),
            "format": "ONNX model zoo bvlcalexnet-*.onnx (weights only are kept)",
            "metrics": {"ImageNet-1K": {"acc@1": 57.1, "acc@5": 80.2}},
            "source": "BVLC Caffe models/bvlc_alexnet (iteration 360,000), via the ONNX model zoo",
            "docs": "BVLC's reference AlexNet (Caffe), trained by Evan Shelhamer; metrics are BVLC's "
            "center-crop numbers. Run in the caffe variant at 227x227 with ceil-mode pools.",
        },
    )
    DEFAULT = TORCHVISION_IMAGENET1K_V1

    def __getattr__(self, name: str) -> Any:  # bundle fields read through the member
        if name in {f.name for f in fields(WeightsBundle)} or name == "file_name":
            return getattr(self.value, name)
        raise AttributeError(name)

    @classmethod
    def get(cls, name: str) -> AlexNetWeights:
        """A bundle by member name (``"TORCHVISION_IMAGENET1K_V1"``, ``"DEFAULT"``) or short name (``"torchvision"``)."""
        for member_name, member in cls.__members__.items():
            if name.upper() == member_name or name == member.value.meta.get("short_name"):
                return member
        shorts = [m.value.meta["short_name"] for m in cls]
        raise ValueError(f"unknown weights bundle {name!r}; known: {', '.join(shorts + list(cls.__members__))}")
