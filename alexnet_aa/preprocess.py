"""Preprocessing as data: one recipe (resize, crop, channel order, value range, mean, std).

A :class:`Preprocess` turns an RGB ``PIL.Image`` (see
:func:`alexnet_aa.images.load_image`) into the ``(3, S, S)`` float32 array a
variant takes, and travels as JSON in a weights file's metadata (key
:data:`alexnet_aa.weights.PREPROCESS_KEY`). Pillow is imported only when an
image is resized.

>>> torchvision_preprocess().crop_size, caffe_preprocess().channels
(224, 'BGR')
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace

import numpy as np


class PreprocessError(ValueError):
    """A preprocessing spec that is malformed (bad JSON, unknown field, impossible value)."""


_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")

#: The largest ``crop_size`` / ``resize_size`` a recipe may ask for (a weights file's metadata is input too).
MAX_SIDE = 4096
#: The most pixels the resize of step 1 may produce: a strip one pixel wide resized to 256 on its
#: short side would otherwise ask for gigabytes. Refused per image with :class:`PreprocessError`.
MAX_RESIZED_PIXELS = 16 * 1024 * 1024


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class Preprocess:
    """One preprocessing recipe: RGB image → ``(3, crop_size, crop_size)`` float32 (CHW).

    Steps, in order:

    1. resize: ``resize="shorter"`` scales the shorter side to ``resize_size``
       keeping the aspect ratio (the longer side ``int(resize_size · long / short)``,
       torchvision's rule); ``resize="square"`` warps the image to
       ``resize_size × resize_size`` (how Caffe's ImageNet training images were made);
       Pillow's ``interpolation`` filter, antialiased when shrinking (what
       torchvision's ``antialias=True`` does on PIL images);
    2. center crop ``crop_size`` (top/left offset ``round((H − crop) / 2)``, torchvision's rule);
    3. channels in ``channels`` order (``"RGB"`` or ``"BGR"``);
    4. values: pixel ``p ∈ 0..255`` becomes ``x = (p · value_range / 255 − mean) / std``,
       per channel, ``mean``/``std`` given in ``channels`` order.
    """

    crop_size: int
    resize_size: int = 256
    resize: str = "shorter"
    interpolation: str = "bilinear"
    channels: str = "RGB"
    value_range: float = 1.0
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    source: str = ""

    def __post_init__(self) -> None:
        problems = []
        for name in ("crop_size", "resize_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_SIDE:
                problems.append(f"{name} must be an int in [1, {MAX_SIDE}], got {v!r}")
        if not problems and self.resize_size < self.crop_size:
            problems.append(f"resize_size ({self.resize_size}) must be >= crop_size ({self.crop_size})")
        if self.resize not in ("shorter", "square"):
            problems.append(f"resize must be 'shorter' or 'square', got {self.resize!r}")
        if self.interpolation not in _INTERPOLATIONS:
            problems.append(f"interpolation must be one of {', '.join(_INTERPOLATIONS)}, got {self.interpolation!r}")
        if self.channels not in ("RGB", "BGR"):
            problems.append(f"channels must be 'RGB' or 'BGR', got {self.channels!r}")
        if not _finite(self.value_range) or not self.value_range > 0:
            problems.append(f"value_range must be a positive finite number, got {self.value_range!r}")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if not (isinstance(v, (tuple, list)) and len(v) == 3 and all(map(_finite, v))):
                problems.append(f"{name} must be 3 finite numbers, got {v!r}")
            else:
                object.__setattr__(self, name, tuple(float(c) for c in v))
        if not problems and not all(1e-6 <= s <= 1e6 for s in self.std):
            problems.append(f"std must be in [1e-6, 1e6], got {self.std}")
        if not problems and not all(abs(m) <= 1e6 for m in self.mean):
            problems.append(f"mean must be in [-1e6, 1e6], got {self.mean}")
        if problems:
            raise PreprocessError("[Preprocess] " + "; ".join(problems))

    def summary(self) -> str:
        """One line: ``shorter side 256, bilinear → center crop 224 → RGB [0, 1] → mean (…), std (…)``."""
        resize = (f"shorter side {self.resize_size}" if self.resize == "shorter"
                  else f"{self.resize_size}×{self.resize_size}")
        values = "[0, 1]" if self.value_range == 1 else f"0–{self.value_range:g}"
        norm = f"mean ({', '.join(f'{m:g}' for m in self.mean)})"
        if any(s != 1 for s in self.std):
            norm += f", std ({', '.join(f'{s:g}' for s in self.std)})"
        return f"{resize}, {self.interpolation} → center crop {self.crop_size} → {self.channels} {values} → {norm}"

    # -- JSON -------------------------------------------------------------------------

    def to_json(self) -> str:
        """The spec as a JSON object (what weights files store under :data:`PREPROCESS_KEY`)."""
        return json.dumps({"format": "alexnet_aa.preprocess/1", **asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Preprocess:
        """Parse :meth:`to_json`'s output; unknown or missing fields are an error."""
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError, RecursionError) as exc:  # nesting deeper than Python's stack
            raise PreprocessError(f"[Preprocess] not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise PreprocessError(f"[Preprocess] expected a JSON object, got {type(data).__name__}")
        fmt = data.pop("format", None)
        if fmt != "alexnet_aa.preprocess/1":
            raise PreprocessError(f"[Preprocess] expected format 'alexnet_aa.preprocess/1', got {fmt!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PreprocessError(f"[Preprocess] unknown fields: {', '.join(unknown)}")
        if "crop_size" not in data:
            raise PreprocessError("[Preprocess] missing field crop_size")
        return cls(**data)

    # -- applying it --------------------------------------------------------------------

    def scaled(self, img):
        """The image after step 1 (resize), still a ``PIL.Image``: what training crops at random."""
        from PIL import Image

        if getattr(img, "mode", None) != "RGB":
            raise TypeError(f"[Preprocess] expected an RGB PIL image (use load_image), got {getattr(img, 'mode', type(img).__name__)!r}")
        resample = getattr(Image.Resampling, self.interpolation.upper())
        w, h = img.size
        if self.resize == "square":
            size = (self.resize_size, self.resize_size)
        elif w <= h:
            size = (self.resize_size, int(self.resize_size * h / w))
        else:
            size = (int(self.resize_size * w / h), self.resize_size)
        if size[0] * size[1] > MAX_RESIZED_PIXELS:
            raise PreprocessError(f"[Preprocess] a {w}x{h} image would be resized to {size[0]}x{size[1]}, "
                                  f"more than {MAX_RESIZED_PIXELS:,} pixels (aspect ratio {max(w, h) / min(w, h):.0f}:1)")
        return img.resize(size, resample) if size != (w, h) else img

    def resized(self, img):
        """The image after steps 1–2 (resize and center crop), still a ``PIL.Image``."""
        img = self.scaled(img)
        w, h = img.size
        top, left = int(round((h - self.crop_size) / 2.0)), int(round((w - self.crop_size) / 2.0))
        return img.crop((left, top, left + self.crop_size, top + self.crop_size))

    def __call__(self, img) -> np.ndarray:
        """``(3, crop_size, crop_size)`` float32 for an RGB ``PIL.Image`` (see :func:`load_image`)."""
        return self.normalize(np.asarray(self.resized(img), dtype=np.float32))

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """Steps 3–4 on an ``(H, W, 3)`` RGB array of 0..255 values: ``(3, H, W)`` float32."""
        x = np.asarray(x, dtype=np.float32)
        if self.channels == "BGR":
            x = x[..., ::-1]
        if self.value_range != 255:
            x = x / np.float32(255.0 / self.value_range)  # for [0, 1]: x / 255, as torchvision's to_tensor
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)

    def batch(self, images: Sequence) -> np.ndarray:
        """``(N, 3, crop_size, crop_size)`` float32 for a sequence of RGB images."""
        return np.stack([self(img) for img in images])


def torchvision_preprocess() -> Preprocess:
    """torchvision's ``ImageClassification(crop_size=224)``: shorter side 256 (bilinear,
    antialiased) → center crop 224 → RGB in [0, 1] → ImageNet mean/std."""
    return Preprocess(
        crop_size=224, resize_size=256, resize="shorter", interpolation="bilinear", channels="RGB",
        value_range=1.0, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
        source="torchvision.transforms._presets.ImageClassification(crop_size=224) "
        "(AlexNet_Weights.IMAGENET1K_V1.transforms)",
    )


def caffe_preprocess() -> Preprocess:
    """BVLC Caffe's ImageNet input: 256×256 → center crop 227 → BGR, 0–255, minus the mean pixel.

    The mean pixel ``(B, G, R) = (104, 117, 123)`` is the per-channel average of
    Caffe's ILSVRC-2012 mean image (``data/ilsvrc12/imagenet_mean.binaryproto``,
    ``python/caffe/imagenet/ilsvrc_2012_mean.npy``; BVLC's
    ``include/caffe/imagenet_mean.hpp`` gives B 104.00, G 116.66, R 122.67),
    rounded as in Caffe's ``mean_value: 104 / 117 / 123`` prototxts. Caffe's
    ImageNet tutorial resizes every image to 256×256 (no aspect kept) before
    training, so ``resize="square"``.
    """
    return Preprocess(
        crop_size=227, resize_size=256, resize="square", interpolation="bilinear", channels="BGR",
        value_range=255.0, mean=(104.0, 117.0, 123.0), std=(1.0, 1.0, 1.0),
        source="BVLC Caffe models/bvlc_alexnet: images resized to 256x256, center crop 227, BGR 0-255, "
        "minus the ILSVRC-2012 mean pixel (B 104, G 117, R 123; include/caffe/imagenet_mean.hpp)",
    )


def default_preprocess(variant: str) -> Preprocess:
    """The preprocessing a variant's published weights expect (``paper`` shares Caffe's); an ablated
    variant takes its base's, at its own input size (:func:`scaled`)."""
    from .architecture import get_architecture

    arch = get_architecture(variant)
    pre = torchvision_preprocess() if arch.base == "torchvision" else caffe_preprocess()
    return scaled(pre, arch.input_size)


def scaled(pre: Preprocess, crop_size: int) -> Preprocess:
    """``pre`` cropping ``crop_size`` pixels, resized to 8/7 of that first (torchvision's 256/224);
    ``pre`` itself at its own crop size."""
    if crop_size == pre.crop_size:
        return pre
    return replace(pre, crop_size=crop_size, resize_size=round(crop_size * 8 / 7),
                               source=f"{pre.source}, scaled to {crop_size}")
