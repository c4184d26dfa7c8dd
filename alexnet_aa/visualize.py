"""Pictures of a model: conv1's filters and every layer's activation maps, as PNG.

:func:`visualize` (the ``alexnet-aa visualize`` command) writes into a directory:

* ``conv1_filters.png`` — conv1's kernels as a grid of RGB tiles, each filter
  min-max normalised on its own, with 1-pixel gaps: the look of Krizhevsky et
  al. (2012), figure 3. 96 filters (paper, caffe) are 8 rows of 12, the first
  48 (the paper's GPU 1) in the top four rows; torchvision's 64 are 8×8.
* ``input.png`` — the image the network saw: resized and centre-cropped by
  the weights' preprocessing (from the file's metadata, else the variant's
  default, :func:`alexnet_aa.preprocess.default_preprocess`), before normalisation.
* ``activations_<layer>.png`` for every layer whose output is a map
  (:func:`pictured_layers`: conv, LRN, pooling) — one grey tile per channel
  (min-max normalised per channel; a channel that is constant, e.g. dead
  after ReLU, is black), from :meth:`~alexnet_aa.model.AlexNet.layers`, the
  one path to per-layer outputs.

Without ``--weights`` the weights are seeded random (He-scaled) and the
filters are noise; without ``--image`` a synthetic test image is used. Both
are said in the command's output. Pillow writes the PNGs; nothing else is
needed.

>>> import numpy as np
>>> grid = filter_grid(np.random.default_rng(0).standard_normal((96, 3, 11, 11)), scale=2)
>>> grid.shape, grid.dtype  # 8 rows and 12 columns of 22-pixel tiles, 1-pixel gaps
((185, 277, 3), dtype('uint8'))
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import ops
from .architecture import Architecture, get_architecture, layer_infos
from .files import atomic_write
from .model import AlexNet

#: The colour of the gaps between tiles.
GAP_VALUE = 255
#: Activation tiles are scaled up (nearest neighbour) until they are at least this many pixels wide.
MIN_TILE = 24


def grid_shape(n: int) -> tuple[int, int]:
    """``(rows, cols)`` for ``n`` tiles: the factorisation closest to square with
    ``rows ≤ cols`` (96 → 8×12, 64 → 8×8, 384 → 16×24), else ⌈√n⌉ columns."""
    if n < 1:
        raise ValueError(f"need at least one tile, got {n}")
    for rows in range(math.isqrt(n), 0, -1):
        if n % rows == 0 and n // rows <= 2 * rows:
            return rows, n // rows
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def tile_grid(tiles: np.ndarray, rows: int | None = None, cols: int | None = None, *, scale: int = 1,
              gap: int = 1) -> np.ndarray:
    """``tiles`` ``(n, h, w)`` or ``(n, h, w, 3)`` with values in ``[0, 1]`` → a uint8 image.

    Tiles go row by row, each scaled up ``scale`` times (nearest neighbour),
    separated and surrounded by ``gap`` pixels of :data:`GAP_VALUE`; the image
    is ``rows·h·scale + (rows + 1)·gap`` pixels high (width likewise).
    """
    tiles = np.asarray(tiles, dtype=np.float64)
    if tiles.ndim not in (3, 4):
        raise ValueError(f"tiles must be (n, h, w) or (n, h, w, 3), got shape {tiles.shape}")
    n, h, w = tiles.shape[:3]
    if rows is None or cols is None:
        rows, cols = grid_shape(n)
    if rows * cols < n:
        raise ValueError(f"a {rows}x{cols} grid cannot hold {n} tiles")
    if scale < 1 or gap < 0:
        raise ValueError(f"scale must be >= 1 and gap >= 0, got scale={scale}, gap={gap}")
    th, tw = h * scale, w * scale
    image = np.full((rows * th + (rows + 1) * gap, cols * tw + (cols + 1) * gap) + tiles.shape[3:], GAP_VALUE, np.uint8)
    pixels = np.round(np.clip(tiles, 0.0, 1.0) * 255).astype(np.uint8)
    pixels = pixels.repeat(scale, axis=1).repeat(scale, axis=2)
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = gap + r * (th + gap), gap + c * (tw + gap)
        image[y : y + th, x : x + tw] = pixels[i]
    return image


def _minmax(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """``a`` scaled to ``[0, 1]`` over ``axes`` independently for each remaining index; constant parts → 0."""
    lo, hi = a.min(axis=axes, keepdims=True), a.max(axis=axes, keepdims=True)
    span = hi - lo
    return np.where(span > 0, (a - lo) / np.where(span > 0, span, 1.0), 0.0)


def filter_grid(w_oihw: np.ndarray, *, scale: int = 4, gap: int = 1) -> np.ndarray:
    """conv1's weights ``(O, 3, K, K)`` → an RGB uint8 grid, each filter min-max normalised on its own."""
    w = np.asarray(w_oihw, dtype=np.float64)
    if w.ndim != 4 or w.shape[1] != 3:
        raise ValueError(f"expected RGB filters (O, 3, K, K), got shape {w.shape}")
    return tile_grid(_minmax(w, (1, 2, 3)).transpose(0, 2, 3, 1), scale=scale, gap=gap)


def activation_grid(a_chw: np.ndarray, *, scale: int | None = None, gap: int = 1) -> np.ndarray:
    """One image's activations ``(C, H, W)`` → a grey uint8 grid, one tile per channel, min-max per channel."""
    a = np.asarray(a_chw, dtype=np.float64)
    if a.ndim != 3:
        raise ValueError(f"expected one image's maps (C, H, W), got shape {a.shape}")
    if scale is None:
        scale = max(1, math.ceil(MIN_TILE / max(1, a.shape[2])))
    return tile_grid(_minmax(a, (1, 2)), scale=scale, gap=gap)


# -- the input image ---------------------------------------------------------------


def synthetic_image(size: int, seed: int = 0) -> np.ndarray:
    """A ``(size, size, 3)`` uint8 test card: colour gradients, rings, stripes and a few seeded discs,
    so that edge and colour detectors have something to respond to."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / max(1, size - 1)
    r = np.hypot(xx - 0.35, yy - 0.4)
    img = np.stack([xx, yy, 1.0 - 0.5 * (xx + yy)], axis=-1) * 0.6
    img[..., 0] += 0.3 * (np.sin(40 * r) > 0)  # rings
    img[..., 2] += 0.3 * (np.sin(60 * (xx + 2 * yy)) > 0.5) * (xx > 0.55)  # diagonal stripes, right half
    for _ in range(4):
        cx, cy, rad = rng.uniform(0.15, 0.85, 2).tolist() + [rng.uniform(0.06, 0.14)]
        img[np.hypot(xx - cx, yy - cy) < rad] = rng.uniform(0.0, 1.0, 3)
    return np.round(np.clip(img, 0.0, 1.0) * 255).astype(np.uint8)


# -- the pictures -------------------------------------------------------------------


def pictured_layers(arch: Architecture) -> tuple[str, ...]:
    """The layers whose activations are pictured: every layer whose output is a (C, H, W) map."""
    return tuple(i.name for i in layer_infos(arch) if len(i.out_shape) == 3)


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 ``(H, W)`` or ``(H, W, 3)`` array as PNG."""
    from PIL import Image

    path = Path(path)
    Image.fromarray(np.ascontiguousarray(image)).save(path)
    return path


class Pictures(NamedTuple):
    """What :func:`visualize` wrote (``{name: path}``, in order) and the top-5 ``(class, probability)``."""

    paths: dict[str, Path]
    top5: list[tuple[int, float]]


def visualize(out_dir: str | Path, *, variant: str = "paper", weights=None, image=None, preprocess=None,
              backend: str = "numpy", seed: int = 0, filter_scale: int = 4) -> Pictures:
    """Write the filter grid, the input and the activation grids into ``out_dir``.

    ``weights`` is a mapping of canonical names to arrays (``None``: seeded
    He-scaled random weights; fc8's width sets ``num_classes``); ``image`` an
    RGB ``PIL.Image`` (``None``: :func:`synthetic_image`); ``preprocess`` an
    :class:`alexnet_aa.preprocess.Preprocess` (``None``: the variant's default).
    """
    from PIL import Image

    from .preprocess import default_preprocess
    from .weights import he_weights

    arch = get_architecture(variant)
    if weights is None:
        weights = he_weights(arch, seed)
    preprocess = preprocess or default_preprocess(variant)
    if image is None:
        image = Image.fromarray(synthetic_image(preprocess.resize_size, seed))
    model = AlexNet(variant, backend, weights=weights, num_classes=int(weights["fc8.weight"].shape[0]))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {
        "conv1_filters": save_png(filter_grid(model.state_dict()["conv1.weight"], scale=filter_scale),
                                  out / "conv1_filters.png"),
        "input": save_png(np.asarray(preprocess.resized(image)), out / "input.png"),
    }
    outputs = model.layers(preprocess(image)[None])
    pictured = pictured_layers(arch)
    for name, y in outputs.items():
        if name in pictured:
            maps = np.asarray(model.backend.to_host(y))[0]
            written[name] = save_png(activation_grid(maps), out / f"activations_{name}.png")
    probs = np.asarray(model.backend.to_host(ops.softmax(model.backend, outputs[arch.layers[-1].name])))[0]
    return Pictures(written, [(int(i), float(probs[i])) for i in np.argsort(-probs, kind="stable")[:5]])


def plot_history(history: list[dict], path: str | Path, *, title: str = "") -> Path:
    """A PNG of a training run: loss (left) and accuracy (right) per epoch, training and validation
    (the records of :mod:`alexnet_aa.trainer`'s metrics file). Needs matplotlib (``alexnet-aa[train]``)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(9, 3.6), dpi=110, layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    for ax, key, label in ((loss_ax, "loss", "cross-entropy"), (acc_ax, "accuracy", "top-1 accuracy")):
        ax.plot(epochs, [r[f"train_{key}"] for r in history], "o-", label="training")
        val = [(e, r[f"val_{key}"]) for e, r in zip(epochs, history) if r[f"val_{key}"] is not None]
        if val:
            ax.plot(*zip(*val), "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    acc_ax.set_ylim(0, 1)
    if title:
        fig.suptitle(title)
    with atomic_write(path) as f:
        fig.savefig(f, format="png")
    return Path(path)


def plot_ablation(result: dict, path: str | Path) -> Path:
    """A PNG of an ablation (:func:`alexnet_aa.ablation.run_ablation`'s JSON) in the style of the
    paper's Figure 1: training error (left) and validation error (right) against epochs, one curve
    per arm, the mean over its seeds with the band from the best to the worst seed; the dashed
    line is the target training error."""
    import matplotlib

    from .ablation import kept_runs

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(10, 4), dpi=110, layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key, label in zip(axes, ("train_error", "val_error"), ("training error", "validation error")):
        for index, arm in enumerate(result["arms"]):
            curves = [[r[key] for r in run["history"]] for run in kept_runs(arm)]
            curves = [c for c in curves if c and None not in c]
            if not curves:
                continue
            # at each epoch, the seeds still running (one that diverged stops early)
            at = [[c[e] for c in curves if len(c) > e] for e in range(max(map(len, curves)))]
            epochs = np.arange(1, len(at) + 1)
            colour = f"C{index}"
            ax.plot(epochs, [np.mean(v) for v in at], arm["style"], color=colour, lw=2,
                    label=f"{arm['label']}, lr {arm['lr']:g} ({len(curves)} seeds)")
            ax.fill_between(epochs, [min(v) for v in at], [max(v) for v in at], color=colour, alpha=0.18, lw=0)
        ax.set_xlabel("epochs")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(label)
        ax.grid(alpha=0.3)
    target = result["config"]["target_error"]
    axes[0].axhline(target, color="0.4", ls="--", lw=1, label=f"{target:.0%} training error")
    axes[0].set_ylabel("error rate")
    axes[0].set_ylim(0, 1)
    axes[0].legend()
    size = result["config"]["input_size"]
    fig.suptitle(f"{result['what']}: {result['config']['base']}{f' at {size}x{size}' if size else ''} on {Path(result['data']).name}, "
                 f"{result['config']['epochs']} epochs, batch {result['config']['batch']}")
    with atomic_write(path) as f:
        fig.savefig(f, format="png")
    return Path(path)
