"""Training data: an image folder, a stratified validation split, the paper's augmentation, and a
loader that decodes on the host in background threads so that the backend never waits.

A dataset is a folder with one subfolder per class (torchvision's
``ImageFolder`` convention); the classes are the sorted subfolder names. Every
random choice — the split, the order of an epoch, each image's crop, flip and
colour noise — is a function of the run's seed and the choice's place (epoch,
image), never of thread timing, so a run (and a resumed one) is reproducible.

>>> Augment("none").describe()
'none (center crop)'
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .images import IMAGE_SUFFIXES, ImageError, load_image
from .preprocess import Preprocess, PreprocessError
from .training import AUGMENT, ORDER, PCA_SAMPLE, SPLIT

#: ImageNet's RGB pixel covariance (pixels in [0, 1]) as published with fb.resnet.torch's
#: ``datasets/imagenet.lua`` (the "Lighting" transform): eigenvalues, then eigenvectors as columns.
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                   (-0.5808, -0.0045, -0.8140),
                   (-0.5836, -0.6948, 0.4203))


class DataError(ValueError):
    """A data folder that cannot be trained on: empty, one class, a class without images, …"""


class Sample(NamedTuple):
    path: Path
    label: int


@dataclass(frozen=True)
class ImageFolder:
    """The image files of ``root/<class>/…`` (any depth below the class folder), labelled by the
    index of ``<class>`` in the sorted class names. At least two classes, each with an image file."""

    root: Path
    classes: tuple[str, ...] = field(init=False)
    samples: tuple[Sample, ...] = field(init=False)

    def __post_init__(self) -> None:
        root = Path(self.root)
        object.__setattr__(self, "root", root)
        if not root.is_dir():
            raise DataError(f"[data] {root}: expected a folder with one subfolder of images per class")
        classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not classes:
            raise DataError(f"[data] {root}: expected one subfolder of images per class, found no subfolder")
        if len(classes) < 2:
            raise DataError(f"[data] {root}: expected at least 2 class folders, found only {classes[0]!r}")
        samples, empty = [], []
        for label, name in enumerate(classes):
            files = sorted(f for f in (root / name).rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                empty.append(name)
            samples.extend(Sample(f, label) for f in files)
        if empty:
            raise DataError(f"[data] {root}: class folders without image files ({', '.join(IMAGE_SUFFIXES[:5])}, …): "
                            f"{', '.join(empty)}")
        object.__setattr__(self, "classes", tuple(classes))
        object.__setattr__(self, "samples", tuple(samples))

    def of_class(self, label: int) -> list[Sample]:
        """The samples of class ``label``, in the folder's order."""
        return [s for s in self.samples if s.label == label]

    def check_readable(self) -> None:
        """Each class has at least one image that decodes (its files are tried in order until one
        does); a class of unreadable files only is a :class:`DataError` naming it."""
        unreadable = []
        for label, name in enumerate(self.classes):
            mine = self.of_class(label)
            for sample in mine:
                try:
                    load_image(sample.path)
                    break
                except ImageError:
                    continue
            else:
                unreadable.append(f"{name} ({len(mine)} files)")
        if unreadable:
            raise DataError(f"[data] {self.root}: class folders without a readable image: {', '.join(unreadable)}")

    def fingerprint(self) -> str:
        """SHA-256 of the classes and every sample's path (relative to the root) and label: what a
        resumed run checks, so that the same split and order are drawn from the same images."""
        digest = hashlib.sha256(json.dumps(self.classes).encode())
        for s in self.samples:
            digest.update(f"{s.path.relative_to(self.root).as_posix()}\0{s.label}\n".encode())
        return digest.hexdigest()

    def split(self, fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
        """``(train, validation)``: per class, ``round(fraction · n)`` of its ``n`` images (at least one
        when ``fraction > 0``, and never all of them), drawn with ``numpy.random.default_rng([seed, SPLIT, label])``."""
        if not (isinstance(fraction, (int, float)) and 0 <= fraction < 1):
            raise ValueError(f"[data] val_split: expected a fraction in [0, 1), got {fraction!r}")
        train, val = [], []
        for label in range(len(self.classes)):
            mine = self.of_class(label)
            k = 0 if fraction == 0 else min(len(mine) - 1, max(1, round(fraction * len(mine))))
            if fraction > 0 and k < 1:
                raise DataError(f"[data] class {self.classes[label]!r} has {len(mine)} image(s): "
                                "a validation split needs at least 2 per class")
            chosen = set(np.random.default_rng([seed, SPLIT, label]).permutation(len(mine))[:k].tolist())
            for i, s in enumerate(mine):
                (val if i in chosen else train).append(s)
        return train, val


# -- augmentation ------------------------------------------------------------------------------


def pca_lighting(samples: Sequence[Sample], preprocess: Preprocess, max_images: int = 256,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(eigval, eigvec)`` of the RGB covariance of the pixels (in [0, 1]) of up to ``max_images``
    of ``samples`` after the resize of ``preprocess``: what the paper's colour noise follows (§4.1,
    "PCA on the set of RGB pixel values throughout the ImageNet training set"). Eigenvalues in
    descending order, eigenvectors as columns. Unreadable images are passed over."""
    pick = np.random.default_rng([seed, PCA_SAMPLE]).permutation(len(samples))[:max_images]
    count, total, outer = 0, np.zeros(3), np.zeros((3, 3))
    for i in pick:
        try:
            p = np.asarray(preprocess.scaled(load_image(samples[i].path)), dtype=np.float64).reshape(-1, 3) / 255.0
        except ImageError:
            continue
        count, total, outer = count + len(p), total + p.sum(0), outer + p.T @ p
    if count == 0:
        raise DataError("[data] no readable image to estimate the colour covariance from")
    mean = total / count
    eigval, eigvec = np.linalg.eigh(outer / count - np.outer(mean, mean))
    order = np.argsort(eigval)[::-1]
    return np.clip(eigval[order], 0.0, None), eigvec[:, order]


@dataclass(frozen=True)
class Augment:
    r"""What an image becomes for training: ``"none"`` (the preprocessing as for evaluation: center
    crop) or ``"paper"`` (Krizhevsky et al. 2012, §4.1):

    1. a random ``crop_size`` crop (224, 227 for paper/caffe) of the resized image (256 a side),
       every offset equally likely;
    2. a horizontal flip with probability ½;
    3. colour noise along the principal components of the RGB pixel values, the same shift for
       every pixel of the image,

    then the channel order and normalisation of the preprocessing. The shift of step 3:

    .. math::

        [R, G, B]^T \leftarrow [R, G, B]^T + [p_1, p_2, p_3]\,[\alpha_1\lambda_1, \alpha_2\lambda_2, \alpha_3\lambda_3]^T,
        \qquad \alpha_i \sim N(0, 0.1^2)

    with the :math:`\alpha_i` drawn once per image and :math:`p_i, \lambda_i` the eigenvectors and
    eigenvalues of the pixels' 3×3 covariance (pixels in [0, 1]; ``lighting``: :func:`pca_lighting`
    of the training set, or ImageNet's, :data:`IMAGENET_EIGVAL`).
    """

    kind: str = "none"
    lighting: tuple[np.ndarray, np.ndarray] | None = None
    alpha_std: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in ("none", "paper"):
            raise ValueError(f"[augment] expected 'paper' or 'none', got {self.kind!r}")

    def describe(self) -> str:
        if self.kind == "none":
            return "none (center crop)"
        return f"paper: random crops, horizontal flips, PCA colour noise (α ~ N(0, {self.alpha_std:g}²))"

    def __call__(self, img, preprocess: Preprocess, rng: np.random.Generator) -> np.ndarray:
        """``(3, S, S)`` float32 for an RGB image, the random choices drawn from ``rng``."""
        if self.kind == "none":
            return preprocess(img)
        scaled = np.asarray(preprocess.scaled(img), dtype=np.float32)
        h, w = scaled.shape[:2]
        s = preprocess.crop_size
        top, left = int(rng.integers(h - s + 1)), int(rng.integers(w - s + 1))
        x = scaled[top:top + s, left:left + s]
        if rng.random() < 0.5:
            x = x[:, ::-1]
        if self.lighting is not None:
            eigval, eigvec = (np.asarray(a, dtype=np.float64) for a in self.lighting)
            alpha = rng.normal(0.0, self.alpha_std, size=3)
            x = x + (255.0 * (eigvec @ (alpha * eigval))).astype(np.float32)
        return preprocess.normalize(x)


def ten_crops(img, preprocess: Preprocess) -> np.ndarray:
    """``(10, 3, S, S)``: the four corner and the center ``S × S`` crops of the resized image and their
    horizontal flips, the paper's test-time average (§4.1)."""
    scaled = np.asarray(preprocess.scaled(img), dtype=np.float32)
    h, w = scaled.shape[:2]
    s = preprocess.crop_size
    center = (int(round((h - s) / 2.0)), int(round((w - s) / 2.0)))  # Preprocess.resized's rounding
    corners = [(0, 0), (0, w - s), (h - s, 0), (h - s, w - s), center]
    crops = [scaled[t:t + s, l:l + s] for t, l in corners]
    return np.stack([preprocess.normalize(c) for c in crops + [c[:, ::-1] for c in crops]])


# -- loading ------------------------------------------------------------------------------------


class Batch(NamedTuple):
    """Images ``x`` ``(N, 3, S, S)`` float32 (``(N, 10, 3, S, S)`` for ten crops), their ``labels`` ``(N,)``
    int64, and the images of this batch that could not be read: ``(path, reason)``."""

    x: np.ndarray
    labels: np.ndarray
    skipped: list[tuple[str, str]]


def batches(samples: Sequence[Sample], batch: int, preprocess: Preprocess, *, augment: Augment | None = None,
            ten_crop: bool = False, seed: int = 0, epoch: int = 0, shuffle: bool = False,
            workers: int = 2, prefetch: int = 2) -> Iterator[Batch]:
    """The batches of one pass over ``samples``, decoded ahead in ``workers`` threads (at most
    ``max(prefetch, workers)`` batches decoded ahead of the one being used: bounded memory). ``shuffle``:
    the order is ``default_rng([seed, ORDER, epoch]).permutation``; image ``i``'s augmentation draws
    from ``default_rng([seed, AUGMENT, epoch, i])``. An unreadable image is left out of its batch and reported in
    ``Batch.skipped`` (a batch of unreadable images only has ``len(labels) == 0``)."""
    if batch < 1:
        raise ValueError(f"[data] batch: expected a positive number of images, got {batch}")
    order = np.random.default_rng([seed, ORDER, epoch]).permutation(len(samples)) if shuffle else np.arange(len(samples))
    chunks = [order[i:i + batch] for i in range(0, len(order), batch)]

    def load(chunk: np.ndarray) -> Batch:
        arrays, labels, skipped = [], [], []
        for i in chunk.tolist():
            sample = samples[i]
            try:
                img = load_image(sample.path)
                if ten_crop:
                    arrays.append(ten_crops(img, preprocess))
                elif augment is None:
                    arrays.append(preprocess(img))
                else:
                    arrays.append(augment(img, preprocess, np.random.default_rng([seed, AUGMENT, epoch, i])))
                labels.append(sample.label)
            except ImageError as exc:
                skipped.append((str(sample.path), exc.reason))
            except PreprocessError as exc:  # e.g. a strip too thin to resize within the pixel cap
                skipped.append((str(sample.path), str(exc)))
        x = np.stack(arrays) if arrays else np.zeros((0,), np.float32)
        return Batch(x, np.asarray(labels, dtype=np.int64), skipped)

    ahead = max(prefetch, workers, 1)
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="alexnet-aa-data")
    try:
        pending = [pool.submit(load, c) for c in chunks[:ahead]]
        for k in range(len(chunks)):
            got = pending.pop(0).result()
            if k + ahead < len(chunks):
                pending.append(pool.submit(load, chunks[k + ahead]))
            yield got
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
