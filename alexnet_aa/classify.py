"""Image files in, classes or one layer's features out: the job behind ``alexnet-aa classify`` and
``alexnet-aa features``, run here in one process, and per worker by :mod:`alexnet_aa.distributed`.

A :class:`Classifier` is a model built from a weights file together with what
the file records: the variant, the preprocessing (else the variant's default,
with a note saying so), the class names. Its batch methods take file paths and
answer one entry per path, in order::

    {"path": "photos/cat.jpg", "top": [{"index": 281, "name": "tabby", "probability": 0.62}, ...], "error": None}

An image that cannot be read or preprocessed is that entry's ``error`` (the
reason, as the local command prints it) and never stops the others.

>>> from alexnet_aa.classify import FEATURE_LAYERS
>>> FEATURE_LAYERS["torchvision"][-4:]
('fc6', 'drop7', 'fc7', 'fc8')
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .architecture import VARIANTS, get_architecture, layer_infos
from .arrays import check_batch
from .model import AlexNet
from .weights import PREPROCESS_KEY

#: The layers whose outputs ``features`` can keep, per variant, in the order the network computes them.
FEATURE_LAYERS: dict[str, tuple[str, ...]] = {v: tuple(layer.name for layer in get_architecture(v).layers) for v in VARIANTS}


def feature_layers(variant: str) -> tuple[str, ...]:
    """The layer names of ``variant``'s table, ablated ones included (:data:`FEATURE_LAYERS` for the three)."""
    return FEATURE_LAYERS.get(variant) or tuple(layer.name for layer in get_architecture(variant).layers)


class ClusterError(RuntimeError):
    """The cluster cannot run the job: the scheduler does not answer, no worker joins, a worker cannot
    build the model, or the workers' models differ (:mod:`alexnet_aa.distributed`)."""


def params_digest(params: dict[str, np.ndarray]) -> str:
    """SHA-256 of canonical tensors (names sorted; each name, shape and float32 bytes): equal for equal
    weights whatever file format held them (workers that read other files at one path differ here)."""
    h = hashlib.sha256()
    for name in sorted(params):
        t = np.ascontiguousarray(params[name], dtype=np.float32)
        h.update(f"{name}{t.shape}".encode())
        h.update(memoryview(t).cast("B"))
    return h.hexdigest()


def _reason(exc: BaseException) -> str:
    """What an image's entry says went wrong: the image's own reason, else the exception."""
    from .images import ImageError
    from .preprocess import PreprocessError

    if isinstance(exc, ImageError):
        return exc.reason
    if isinstance(exc, PreprocessError):  # e.g. a strip too thin to resize within the pixel cap
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class Classifier:
    """A model built from the weights file at ``weights`` (any format ``alexnet-aa weights import``
    reads), with the file's preprocessing and class names.

    ``note`` is the line to show when the file records no preprocessing (the
    variant's default is used then), else None; :meth:`describe` says what
    was built, in plain values (what a worker sends back to a client).
    """

    def __init__(self, weights: str | os.PathLike, *, variant: str | None = None, backend: str = "numpy",
                 label: str | None = None) -> None:
        from .categories import class_names
        from .importers import read_any
        from .preprocess import Preprocess, default_preprocess

        imported = read_any(weights, variant)
        self.weights = label or str(weights)  # how messages name the file (a worker reads it by its absolute path)
        self.variant = imported.variant
        if PREPROCESS_KEY in imported.metadata:
            self.preprocess, self.note = Preprocess.from_json(imported.metadata[PREPROCESS_KEY]), None
        else:
            self.preprocess = default_preprocess(imported.variant)
            self.note = (f"note: {self.weights} has no preprocessing metadata; using the {imported.variant} default "
                         f"({self.preprocess.source})")
        self.params_sha256 = params_digest(imported.params)
        self.num_classes = int(imported.params["fc8.weight"].shape[0])
        self.model = AlexNet(imported.variant, backend, weights=imported.params, num_classes=self.num_classes)
        self.names = class_names(imported.metadata, self.num_classes)

    @property
    def input_size(self) -> int | None:
        """The crop side when it is not the variant's own (torchvision takes any), else None."""
        return self.preprocess.crop_size if get_architecture(self.variant).min_input_size else None

    def describe(self) -> dict[str, Any]:
        return {"weights": self.weights, "params_sha256": self.params_sha256, "variant": self.variant,
                "num_classes": self.num_classes, "backend": self.model.backend.name, "input_size": self.input_size,
                "note": self.note}

    def check(self, *, batch: int, top: int | None = None, layer: str | None = None) -> None:
        """Refuse, before any image is read, a batch whose activations would not fit in this machine's
        memory, a ``top`` outside 1…num_classes and a layer the variant does not have."""
        check_batch(self.variant, batch, num_classes=self.num_classes, input_size=self.input_size)
        if top is not None and not 1 <= top <= self.num_classes:
            raise ValueError(f"--top must be between 1 and {self.num_classes}, got {top}")
        if layer is not None and layer not in feature_layers(self.variant):
            raise ValueError(f"--layer: the {self.variant} variant has no layer {layer!r}; "
                             f"expected one of {', '.join(feature_layers(self.variant))}")

    def load(self, paths: Sequence[str | os.PathLike]) -> tuple[list[dict[str, Any]], np.ndarray, list[int]]:
        """``(entries, batch, rows)``: one entry per path (``error`` set for an image that failed), the
        preprocessed NCHW float32 batch of those that did not, and the entry index of each of its rows."""
        from .images import load_image

        entries, arrays, rows = [], [], []
        for path in paths:
            entry = {"path": str(path), "top": [], "error": None}
            try:
                arrays.append(self.preprocess(load_image(path)))
                rows.append(len(entries))
            except Exception as exc:  # noqa: BLE001 — one image's failure (MemoryError included) is that image's
                entry["error"] = _reason(exc)
            entries.append(entry)
        batch = np.stack(arrays) if arrays else np.empty((0,), np.float32)
        return entries, batch, rows

    def classify(self, paths: Sequence[str | os.PathLike], top: int = 5) -> list[dict[str, Any]]:
        """One entry per path: its ``top`` classes with their softmax probabilities, or its error."""
        entries, batch, rows = self.load(paths)
        if rows:
            pred = self.model.predict(batch, top=top)
            for row, idx, prob in zip(rows, pred.indices, pred.probabilities):
                entries[row]["top"] = [{"index": int(i), "name": self.names[int(i)], "probability": float(p)}
                                       for i, p in zip(idx, prob)]
        return entries

    def features(self, paths: Sequence[str | os.PathLike], layer: str = "fc7") -> tuple[list[dict[str, Any]], np.ndarray]:
        """``(entries, features)``: ``features[i]`` is ``layer``'s output for ``paths[i]`` in the canonical
        order (NCHW maps, (C, H, W)-flattened vectors), float32; NaN rows for the images that failed.
        The forward stops at ``layer``."""
        entries, batch, rows = self.load(paths)
        shape = layer_shape(self.describe(), layer)
        out = np.full((len(entries), *shape), np.nan, np.float32)
        if rows:
            for name, y in self.model.iter_layers(batch):
                if name == layer:
                    out[rows] = self.model.backend.to_host(self.model.canonical(name, y))
                    break
        for entry in entries:
            del entry["top"]
        return entries, out

    # the same interface as :class:`alexnet_aa.distributed.ClusterModel`'s
    def classify_batches(self, paths: Iterable[str | os.PathLike], *, batch: int = 32, top: int = 5,
                         ) -> Iterator[list[dict[str, Any]]]:
        """:meth:`classify` on each batch of ``batch`` paths, in order, as each is done (checked now)."""
        self.check(batch=batch, top=top)
        return (self.classify(chunk, top) for chunk in batches(paths, batch))

    def feature_batches(self, paths: Iterable[str | os.PathLike], *, batch: int = 32, layer: str = "fc7",
                        ) -> Iterator[tuple[list[dict[str, Any]], np.ndarray]]:
        """:meth:`features` on each batch of ``batch`` paths, in order (for :func:`write_features`; checked now)."""
        self.check(batch=batch, layer=layer)
        return (self.features(chunk, layer) for chunk in batches(paths, batch))


def layer_shape(info: dict[str, Any], layer: str) -> tuple[int, ...]:
    """One image's output shape at ``layer`` (canonical order) for the model :meth:`Classifier.describe` describes."""
    for row in layer_infos(get_architecture(info["variant"], info["num_classes"]), info["input_size"]):
        if row.name == layer:
            return tuple(row.out_shape)
    raise ValueError(f"the {info['variant']} variant has no layer {layer!r}")


def batches(paths: Iterable[str | os.PathLike], size: int) -> Iterator[list[str]]:
    """``paths`` cut in order into lists of ``size`` (the last may be shorter), as strings; read lazily,
    so a generator of a million paths is never a list."""
    it = iter(paths)
    while chunk := [str(p) for p in itertools.islice(it, size)]:
        yield chunk


def classify(paths: Iterable[str | os.PathLike], *, weights: str | os.PathLike, variant: str | None = None,
             backend: str = "numpy", batch: int = 32, top: int = 5) -> Iterator[dict[str, Any]]:
    """Classify ``paths`` in this process: one entry per image, in order, as each batch is done.
    :func:`alexnet_aa.distributed.classify` is the same on a Dask cluster."""
    for entries in Classifier(weights, variant=variant, backend=backend).classify_batches(paths, batch=batch, top=top):
        yield from entries


# -- the features store -----------------------------------------------------------------------

#: What the root group's ``alexnet_aa`` attribute says the store holds (``format`` is this number).
FEATURES_FORMAT = 1


def _zarr():
    try:
        import zarr
    except ModuleNotFoundError:
        raise ModuleNotFoundError("writing features needs Zarr 3 (Python >= 3.11): "
                                  "pip install 'alexnet-aa[features]'") from None
    return zarr


def check_out(out: str | os.PathLike) -> Path:
    """``out`` as a Path, refused if it exists or another job is writing it (its ``.partial`` exists);
    before any model is built (:func:`write_features` claims it)."""
    out = Path(out)
    if out.exists():
        raise ValueError(f"--out {out} exists: remove it or choose another directory")
    if _partial(out).exists():
        raise ValueError(f"--out {out}: {_partial(out)} exists: another job is writing it (or one died "
                         "while writing: then remove that folder)")
    return out


def _partial(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def write_features(out: str | os.PathLike, info: dict[str, Any], layer: str, batch: int,
                   results: Iterable[tuple[list[dict[str, Any]], np.ndarray]]) -> Iterator[list[dict[str, Any]]]:
    """Write ``results`` (each batch's entries and features, in input order) to a Zarr group at ``out``,
    yielding each batch's entries once it is written. Dask reads it as it is::

        dask.array.from_zarr(out, component=layer)   # (N, *layer shape) float32, one chunk per batch

    The group holds ``layer`` (NaN rows where an image failed), ``path`` and ``error`` (``""`` where
    it did not), one row per image in input order, and the ``alexnet_aa`` attribute (layer, variant,
    weights and their tensors' SHA-256, backend, counts). It is written in ``OUT.partial``, claimed
    here with an atomic ``mkdir`` (a second writer of ``out`` is refused), and renamed to ``out``
    only when every batch is in: an interrupted job leaves no store under that name, and removes
    its ``.partial``. An existing ``out`` is refused here, before any batch is computed.
    """
    zarr = _zarr()
    out = check_out(out)
    try:
        _partial(out).mkdir()
    except FileExistsError:
        check_out(out)  # says who is there
        raise
    return _write_features(zarr, out, info, layer, batch, results)


def _write_features(zarr, out: Path, info: dict[str, Any], layer: str, batch: int,
                    results: Iterable[tuple[list[dict[str, Any]], np.ndarray]]) -> Iterator[list[dict[str, Any]]]:
    partial = _partial(out)
    shape = layer_shape(info, layer)
    try:
        group = zarr.open_group(partial, mode="w")
        data = group.create_array(layer, shape=(0, *shape), chunks=(batch, *shape), dtype="float32", fill_value=np.nan)
        paths = group.create_array("path", shape=(0,), chunks=(batch,), dtype=str)
        errors = group.create_array("error", shape=(0,), chunks=(batch,), dtype=str)
        n = failed = 0
        for entries, block in results:
            data.append(block)
            paths.append(np.array([e["path"] for e in entries], dtype=str))
            errors.append(np.array([e["error"] or "" for e in entries], dtype=str))
            n += len(entries)
            failed += sum(1 for e in entries if e["error"])
            yield entries
        group.attrs["alexnet_aa"] = {
            "format": FEATURES_FORMAT, "layer": layer, "shape": list(shape), "images": n, "failed": failed,
            **{k: info[k] for k in ("weights", "params_sha256", "variant", "backend", "num_classes", "input_size")}}
        partial.rename(out)  # fails, keeping nothing, if `out` appeared meanwhile and is not an empty folder
    finally:
        if partial.exists():
            shutil.rmtree(partial)


def extract_features(model, paths: Iterable[str | os.PathLike], out: str | os.PathLike, *, layer: str = "fc7",
                     batch: int = 32) -> dict[str, Any]:
    """Write ``layer``'s features of ``paths`` computed by ``model`` (a :class:`Classifier`, or an
    :class:`alexnet_aa.distributed.ClusterModel`) to the Zarr group ``out`` (:func:`write_features`);
    returns what the group's ``alexnet_aa`` attribute records (the counts included)."""
    check_out(out)
    for _ in write_features(out, model.describe(), layer, batch, model.feature_batches(paths, batch=batch, layer=layer)):
        pass
    return dict(_zarr().open_group(out, mode="r").attrs["alexnet_aa"])


def features(paths: Iterable[str | os.PathLike], out: str | os.PathLike, *, weights: str | os.PathLike,
             layer: str = "fc7", variant: str | None = None, backend: str = "numpy", batch: int = 32) -> dict[str, Any]:
    """:func:`extract_features` in this process; :func:`alexnet_aa.distributed.features` is the same on a cluster."""
    check_out(out)
    return extract_features(Classifier(weights, variant=variant, backend=backend), paths, out, layer=layer, batch=batch)
