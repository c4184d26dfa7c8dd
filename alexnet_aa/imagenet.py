"""ImageNet inputs and outputs: reading images, preprocessing, class names, weight bundles.

* :func:`load_image` opens any image Pillow reads as an RGB ``PIL.Image``:
  EXIF orientation applied, every mode (``RGB``, ``L``, ``RGBA``, ``LA``,
  ``P``, ``CMYK``, ``I;16``, ``1``, ``YCbCr`` …) converted to RGB, images
  over Pillow's pixel limit refused (see :func:`load_image`).
* :class:`Preprocess` is one preprocessing recipe as data (resize, crop,
  channel order, value range, mean, std); it turns an RGB image into the
  ``(3, S, S)`` float32 array a variant takes, and travels as JSON in a
  weights file's metadata (key :data:`PREPROCESS_KEY`).
* :class:`AlexNetWeights` is the enum of published weight bundles (source
  URL, SHA-256, variant, preprocessing factory, meta with categories,
  parameter and MAC counts), with a ``DEFAULT``, after torchvision's
  ``AlexNet_Weights``.
* :func:`imagenet_categories` are the 1000 ILSVRC-2012 class names shipped
  with the package (``data/imagenet_classes.txt``), in the index order of
  torchvision's ``_IMAGENET_CATEGORIES`` (the order of both torchvision's and
  BVLC Caffe's ``synset_words.txt`` outputs).

>>> from alexnet_aa.imagenet import AlexNetWeights, imagenet_categories
>>> AlexNetWeights.DEFAULT.variant
'torchvision'
>>> len(imagenet_categories()), imagenet_categories()[281]
(1000, 'tabby')
"""

from __future__ import annotations

import enum
import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

#: safetensors ``__metadata__`` key holding the :class:`Preprocess` JSON.
PREPROCESS_KEY = "alexnet_aa.preprocess"
#: safetensors ``__metadata__`` key holding the variant the weights were made for.
VARIANT_KEY = "alexnet_aa.variant"
#: safetensors ``__metadata__`` key holding the class names (a JSON list), when not ImageNet's 1000.
CATEGORIES_KEY = "alexnet_aa.categories"

#: File suffixes :func:`iter_image_files` picks up when walking a directory.
IMAGE_SUFFIXES = (
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".dib", ".tif", ".tiff",
    ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".jp2", ".j2k",
)


class ImageError(ValueError):
    """An image that cannot be read or is refused; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class PreprocessError(ValueError):
    """A preprocessing spec that is malformed (bad JSON, unknown field, impossible value)."""


# -- class names ----------------------------------------------------------------------


@lru_cache(maxsize=1)
def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet (ILSVRC-2012) class names, index order = torchvision's ``_IMAGENET_CATEGORIES``."""
    text = resources.files("alexnet_aa").joinpath("data/imagenet_classes.txt").read_text(encoding="utf-8")
    names = tuple(line for line in text.splitlines() if line)
    if len(names) != 1000:  # a packaging mistake, not a user error
        raise RuntimeError(f"alexnet_aa/data/imagenet_classes.txt holds {len(names)} names, expected 1000")
    return names


def class_names(metadata: Mapping[str, str], num_classes: int) -> list[str]:
    """The names of a head's classes: the weights file's own list (metadata key
    :data:`CATEGORIES_KEY`) when it has one of the right length, else ImageNet's
    for a 1000-class head, else ``class 0``, ``class 1``, …"""
    if CATEGORIES_KEY in metadata:
        try:
            names = json.loads(metadata[CATEGORIES_KEY])
            if isinstance(names, list) and len(names) == num_classes:
                return [str(n) for n in names]
        except ValueError:
            pass
    if num_classes == 1000:
        return list(imagenet_categories())
    return [f"class {i}" for i in range(num_classes)]


# -- preprocessing --------------------------------------------------------------------

_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


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
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                problems.append(f"{name} must be a positive int, got {v!r}")
        if not problems and self.resize_size < self.crop_size:
            problems.append(f"resize_size ({self.resize_size}) must be >= crop_size ({self.crop_size})")
        if self.resize not in ("shorter", "square"):
            problems.append(f"resize must be 'shorter' or 'square', got {self.resize!r}")
        if self.interpolation not in _INTERPOLATIONS:
            problems.append(f"interpolation must be one of {', '.join(_INTERPOLATIONS)}, got {self.interpolation!r}")
        if self.channels not in ("RGB", "BGR"):
            problems.append(f"channels must be 'RGB' or 'BGR', got {self.channels!r}")
        if not isinstance(self.value_range, (int, float)) or not self.value_range > 0:
            problems.append(f"value_range must be a positive number, got {self.value_range!r}")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if not (isinstance(v, (tuple, list)) and len(v) == 3 and all(isinstance(c, (int, float)) for c in v)):
                problems.append(f"{name} must be 3 numbers, got {v!r}")
            else:
                object.__setattr__(self, name, tuple(float(c) for c in v))
        if not problems and any(s <= 0 for s in self.std):
            problems.append(f"std must be positive, got {self.std}")
        if problems:
            raise PreprocessError("[Preprocess] " + "; ".join(problems))

    # -- JSON -------------------------------------------------------------------------

    def to_json(self) -> str:
        """The spec as a JSON object (what weights files store under :data:`PREPROCESS_KEY`)."""
        return json.dumps({"format": "alexnet_aa.preprocess/1", **asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Preprocess:
        """Parse :meth:`to_json`'s output; unknown or missing fields are an error."""
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as exc:
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

    def resized(self, img):
        """The image after steps 1–2 (resize and center crop), still a ``PIL.Image``."""
        from PIL import Image

        resample = getattr(Image.Resampling, self.interpolation.upper())
        w, h = img.size
        if self.resize == "square":
            size = (self.resize_size, self.resize_size)
        elif w <= h:
            size = (self.resize_size, int(self.resize_size * h / w))
        else:
            size = (int(self.resize_size * w / h), self.resize_size)
        if size != (w, h):
            img = img.resize(size, resample)
        w, h = img.size
        top, left = int(round((h - self.crop_size) / 2.0)), int(round((w - self.crop_size) / 2.0))
        return img.crop((left, top, left + self.crop_size, top + self.crop_size))

    def __call__(self, img) -> np.ndarray:
        """``(3, crop_size, crop_size)`` float32 for an RGB ``PIL.Image`` (see :func:`load_image`)."""
        if getattr(img, "mode", None) != "RGB":
            raise TypeError(f"[Preprocess] expected an RGB PIL image (use load_image), got {getattr(img, 'mode', type(img).__name__)!r}")
        x = np.asarray(self.resized(img), dtype=np.float32)  # (H, W, 3) RGB, 0..255
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
    """The preprocessing a variant's published weights expect (``paper`` shares Caffe's)."""
    if variant == "torchvision":
        return torchvision_preprocess()
    if variant in ("caffe", "paper"):
        return caffe_preprocess()
    raise ValueError(f"unknown variant {variant!r}")


# -- weight bundles ---------------------------------------------------------------------


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


# -- reading images -------------------------------------------------------------------


def _to_rgb(img):
    """Any Pillow mode → RGB. Transparent pixels are composited on white."""
    from PIL import Image

    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        # 16-bit (or 32-bit int) grey: scale 0..65535 to 0..255; Pillow's own convert clips instead.
        a = np.asarray(img, dtype=np.float64)
        a = np.clip(a / 257.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(a, mode="L").convert("RGB")
    if mode == "F":
        a = np.clip(np.asarray(img, dtype=np.float64), 0, 255).round().astype(np.uint8)
        return Image.fromarray(a, mode="L").convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK (Pillow's conversion, no ICC profile), YCbCr, LAB, HSV


def load_image(path: str | os.PathLike):
    """Open ``path`` as an RGB ``PIL.Image``, fully decoded, EXIF orientation applied.

    * Modes: RGB as is; ``L``/``1`` replicated to three channels; ``I;16``
      (16-bit grey) scaled by 1/257 to 8 bits; ``P`` through its palette;
      ``CMYK`` by Pillow's conversion; ``RGBA``/``LA``/``PA`` and palette
      transparency **composited on a white background** (dropping alpha would
      show whatever colours hide under transparent pixels, often black).
      Multi-frame files (GIF, TIFF): the first frame.
    * Decompression bombs: an image with more pixels than Pillow's
      ``PIL.Image.MAX_IMAGE_PIXELS`` (89,478,485 by default, about
      1024 × 1024 × 1024 // 4 // 3) is refused with :class:`ImageError` — Pillow only
      warns between 1× and 2× that limit; here its ``DecompressionBombWarning``
      is turned into the error. Set ``MAX_IMAGE_PIXELS`` to change the limit.
    * A file Pillow cannot identify, or a truncated or corrupt one, raises
      :class:`ImageError` with the reason.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as img:
                img.load()  # decode now: truncation and corrupt data surface here
                img = ImageOps.exif_transpose(img)
                rgb = _to_rgb(img)
                rgb.load()
                return rgb
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise ImageError(
                path,
                f"refused as a possible decompression bomb: {exc} "
                f"(limit PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS:,} pixels)",
            ) from None
        except FileNotFoundError:
            raise ImageError(path, "no such file") from None
        except IsADirectoryError:
            raise ImageError(path, "is a directory") from None
        except PermissionError as exc:
            raise ImageError(path, f"cannot be read: {exc.strerror}") from None
        except UnidentifiedImageError:
            raise ImageError(path, "not an image file Pillow can identify") from None
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError) as exc:
            raise ImageError(path, f"truncated or corrupt image: {exc or type(exc).__name__}") from None


def iter_image_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Files to classify: each path given as is; directories walked (recursively, sorted) for image suffixes."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = [f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
            out.extend(sorted(found))
        else:
            out.append(p)
    return out
