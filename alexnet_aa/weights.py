"""Canonical weights: names and shapes, the paper's initialisation, files.

One name per tensor, from the layer table: ``conv1.weight``, ``conv1.bias``,
… ``conv5.*``, ``fc6.*``, ``fc7.*``, ``fc8.*``. Conv weights are OIHW
``(out, in/groups, kh, kw)``, linear weights ``(out, in)``, biases
``(out,)``, float32 on the host. fc6's input axis is in the NCHW flatten order
``(C, H, W)``, the order of torchvision's and Caffe's weights.

Files: ``.safetensors`` (the project's format; read and written here
without the ``safetensors`` package, never executing anything) and NumPy
``.npz`` (read with ``allow_pickle=False``). A ``.safetensors`` file's
metadata (a str → str map) carries what the weights were made for, under the
keys below.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from .architecture import VARIANTS, Architecture, get_architecture, param_shapes
from .arrays import to_numpy
from .files import atomic_write

#: safetensors ``__metadata__`` key holding the variant the weights were made for.
VARIANT_KEY = "alexnet_aa.variant"
#: ... holding the :class:`alexnet_aa.preprocess.Preprocess` JSON the weights expect.
PREPROCESS_KEY = "alexnet_aa.preprocess"
#: ... holding the class names (a JSON list), when they are not ImageNet's 1000.
CATEGORIES_KEY = "alexnet_aa.categories"
#: ... holding the SHA-256 of the file the weights were imported from.
SOURCE_SHA256_KEY = "alexnet_aa.source_sha256"
#: ... holding a training checkpoint's state (JSON, format ``alexnet_aa.checkpoint/1``; :mod:`alexnet_aa.training`).
CHECKPOINT_KEY = "alexnet_aa.checkpoint"
#: Tensor names of a training checkpoint's optimizer state (``velocity.conv1.weight``, …): a
#: checkpoint is a weights file whose readers skip these (:func:`read_weights_file`).
VELOCITY_PREFIX = "velocity."


class WeightsError(ValueError):
    """Weights that do not fit the architecture; ``problems`` lists every mismatch."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = list(problems or [])
        if self.problems:
            message = message + ":\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


class WeightsFileError(WeightsError):
    """A weights file that is missing, truncated, corrupt or of an unknown format."""


# -- initialisation ---------------------------------------------------------------

#: Layers whose biases the paper initialises to 1 ("accelerates the early stages
#: of learning by providing the ReLUs with positive inputs", §5); the rest get 0.
PAPER_BIAS_ONE = ("conv2", "conv4", "conv5", "fc6", "fc7")


def init_weights(arch: Architecture, seed: int = 0, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """The paper's initialisation (§5): weights ~ N(0, 0.01²); biases 1 in
    conv2, conv4, conv5, fc6, fc7 and 0 elsewhere. Deterministic in ``seed``.

    Each tensor has its own random stream (``seed`` and its position in the
    table), so ``names`` can draw a subset — fc8 alone for a fresh head —
    with the values the full initialisation would give it.
    """
    wanted = None if names is None else set(names)
    params: dict[str, np.ndarray] = {}
    for index, (name, shape) in enumerate(param_shapes(arch).items()):
        if wanted is not None and name not in wanted:
            continue
        layer = name.split(".")[0]
        if name.endswith(".weight"):
            params[name] = np.random.default_rng([seed, index]).normal(0.0, 0.01, size=shape).astype(np.float32)
        else:
            params[name] = np.full(shape, 1.0 if layer in PAPER_BIAS_ONE else 0.0, dtype=np.float32)
    return params


def he_weights(arch: Architecture, rng: np.random.Generator | int = 0) -> dict[str, np.ndarray]:
    """Random weights for testing: N(0, 2/fan_in) (He et al. 2015) and N(0, 0.1²) biases.

    Unlike the paper's N(0, 0.01²), these keep activations from vanishing or
    saturating through the untrained network, so its logits (and top-1) are
    well separated: what comparisons between backends need.
    """
    rng = np.random.default_rng(rng)
    params: dict[str, np.ndarray] = {}
    for name, shape in param_shapes(arch).items():
        if name.endswith(".weight"):
            fan_in = int(np.prod(shape[1:]))
            params[name] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        else:
            params[name] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
    return params


# -- validation -----------------------------------------------------------------


def check_weights(params: Mapping[str, object], arch: Architecture) -> dict[str, np.ndarray]:
    """Validate ``params`` against ``arch`` and return them as float32 host arrays.

    Every problem — a missing, extra or misshapen tensor, a non-floating dtype,
    a NaN or infinity — is listed in one :class:`WeightsError`.
    """
    expected = param_shapes(arch)
    problems: list[str] = []
    missing = [n for n in expected if n not in params]
    extra = [n for n in params if n not in expected]
    if missing:
        problems.append(f"missing: {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected: {', '.join(map(str, extra))}")
    out: dict[str, np.ndarray] = {}
    for name, shape in expected.items():
        if name not in params:
            continue
        value = to_numpy(params[name])
        if tuple(value.shape) != shape:
            hint = ""
            if name == "fc8.weight" and value.ndim == 2 and value.shape[1] == shape[1]:
                hint = f" (a {value.shape[0]}-class head: pass num_classes={value.shape[0]})"
            problems.append(f"{name}: expected shape {shape}, got {tuple(value.shape)}{hint}")
            continue
        if value.dtype.kind != "f":
            problems.append(f"{name}: expected a floating dtype, got {value.dtype}")
            continue
        if not np.all(np.isfinite(value)):
            problems.append(f"{name}: contains NaN or infinity")
            continue
        out[name] = np.ascontiguousarray(value, dtype=np.float32)
    if problems:
        raise WeightsError(f"weights do not fit the {arch.variant!r} variant (num_classes={arch.num_classes})", problems)
    return out


def fitting_variants(params: Mapping[str, object]) -> list[str]:
    """The variants whose canonical shapes ``params`` has (fc8's width aside).

    ``paper`` and ``caffe`` share every shape (they differ in LRN constants
    and pool rounding), so weights that fit one fit both.
    """
    fits = []
    for variant in VARIANTS:
        expected = param_shapes(get_architecture(variant))
        if set(expected) == set(params) and all(
            tuple(np.shape(params[n])) == s for n, s in expected.items() if not n.startswith("fc8")
        ):
            fits.append(variant)
    return fits


# -- safetensors, read and written by hand -----------------------------------------

_ST_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U8": np.uint8, "BOOL": np.bool_,
}
_ST_NAMES = {np.dtype(v): k for k, v in _ST_DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024

#: The most elements a tensor of a weights file may declare, checked before anything is allocated:
#: AlexNet's largest is fc6's 4096 × 9216 = 37.7 M, and fc8 at 32,768 classes is 134 M (2^27).
MAX_TENSOR_ELEMENTS = 1 << 27
#: The most dimensions a tensor of a weights file may declare (AlexNet's have at most 4).
MAX_DIMS = 8
#: The most bytes an archive (``.npz``, torch's zip ``.pth``) may inflate to, all members together,
#: and the most one member may inflate per byte stored (a deflate bomb packs ~1000:1).
MAX_ARCHIVE_BYTES = 4 * MAX_TENSOR_ELEMENTS * 8
MAX_INFLATION = 100
#: Members inflating to less than this are not held to :data:`MAX_INFLATION`: a zero-initialised
#: head (16 MB of zeros, ~1000:1) is an ordinary ``np.savez_compressed`` member.
_INFLATION_FLOOR = 64 * 1024 * 1024


def check_archive(path: Path, archive: zipfile.ZipFile) -> None:
    """Refuse a zip archive whose members would inflate past :data:`MAX_ARCHIVE_BYTES` in all, one
    member past a tensor's most bytes, or one member of more than 64 MiB by more than
    :data:`MAX_INFLATION` times its stored size — read from the archive's directory, before any
    member is decompressed."""
    total = 0
    for info in archive.infolist():
        total += info.file_size
        if info.file_size > MAX_TENSOR_ELEMENTS * 8 + (1 << 20):
            raise WeightsFileError(f"{path}: member {info.filename} inflates to {info.file_size:,} bytes, more than "
                                   "any AlexNet tensor needs")
        if (info.compress_type != zipfile.ZIP_STORED and info.file_size > _INFLATION_FLOOR
                and info.file_size > MAX_INFLATION * max(info.compress_size, 1)):
            raise WeightsFileError(f"{path}: member {info.filename} inflates {info.compress_size:,} stored bytes to "
                                   f"{info.file_size:,} (more than {MAX_INFLATION}x): refused as a zip bomb")
    if total > MAX_ARCHIVE_BYTES:
        raise WeightsFileError(f"{path}: the archive inflates to {total:,} bytes, more than the {MAX_ARCHIVE_BYTES:,} "
                               "any AlexNet weights file needs")


def declared_elements(shape: tuple[int, ...]) -> int:
    """The element count of ``shape`` (Python ints: no int64 wrap-around), to compare with
    :data:`MAX_TENSOR_ELEMENTS` before allocating."""
    return math.prod(int(s) for s in shape)


def save_weights(path: str | os.PathLike, params: Mapping[str, object], metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``params`` to ``path``: ``.safetensors`` (with string ``metadata``) or ``.npz``.

    Written through :func:`~alexnet_aa.files.atomic_write`: a crash never leaves
    a half-written file under ``path``, two writers never share one temporary
    file, and a failed write removes its own.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".safetensors"):
        raise ValueError(f"unknown weights format {path.suffix!r}: expected .safetensors or .npz")
    if metadata and suffix == ".npz":
        raise ValueError("metadata can only be stored in .safetensors files")
    bad = [repr(n) for n in params if not isinstance(n, str) or n == "__metadata__" or not n]
    if bad:
        raise ValueError(f"tensor names must be non-empty strings other than '__metadata__', got {', '.join(bad)}")
    arrays = {name: np.ascontiguousarray(to_numpy(v)) for name, v in params.items()}
    with atomic_write(path) as f:
        if suffix == ".npz":
            np.savez(f, **arrays)
        else:
            _write_safetensors(f, arrays, metadata)
    return path


def _write_safetensors(f, arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None) -> None:
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, a in arrays.items():
        if a.dtype not in _ST_NAMES:
            raise TypeError(f"cannot store {name} of dtype {a.dtype} in safetensors")
        header[name] = {"dtype": _ST_NAMES[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for a in arrays.values():
        f.write(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())


def _read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise WeightsFileError(f"{path}: not a safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > min(_MAX_HEADER, size - 8):
            raise WeightsFileError(f"{path}: corrupt safetensors header (header length {n}, file {size} bytes)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:  # nesting deeper than Python's stack
            raise WeightsFileError(f"{path}: corrupt safetensors header: {exc}") from exc
        if not isinstance(header, dict):
            raise WeightsFileError(f"{path}: corrupt safetensors header (not a JSON object)")
        data = f.read()
    metadata = header.pop("__metadata__", None) or {}
    problems: list[str] = []
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        problems.append(f"__metadata__ must map strings to strings, got {metadata!r:.80}")
        metadata = {}
    entries: list[tuple[int, int, str, str, tuple[int, ...]]] = []
    for name, entry in header.items():
        try:
            dtype = entry["dtype"]
            shape = tuple(int(s) for s in entry["shape"])
            begin, end = (int(o) for o in entry["data_offsets"])
            if not isinstance(dtype, str) or min(shape, default=0) < 0:
                raise ValueError
        except (KeyError, TypeError, ValueError, OverflowError):
            problems.append(f"{name}: malformed header entry {entry!r:.80}")
            continue
        if dtype not in _ST_DTYPES:
            problems.append(f"{name}: unsupported dtype {dtype} (store float32)")
            continue
        count = declared_elements(shape)
        if len(shape) > MAX_DIMS or max(shape, default=0) > MAX_TENSOR_ELEMENTS or count > MAX_TENSOR_ELEMENTS:
            problems.append(f"{name}: shape {shape} declares {count:,} elements, more than any AlexNet tensor "
                            f"(at most {MAX_TENSOR_ELEMENTS:,})")
            continue
        if end > len(data) or not 0 <= begin <= end:
            problems.append(f"{name}: data {begin}..{end} lies past the end of the file (truncated?)")
            continue
        if end - begin != np.dtype(_ST_DTYPES[dtype]).itemsize * count:
            problems.append(f"{name}: {end - begin} bytes do not hold a {dtype} tensor of shape {shape}")
            continue
        entries.append((begin, end, name, dtype, shape))
    # the safetensors rule: the tensors tile the data, in order, without gaps or overlaps (so that no
    # byte is read twice: aliased offsets would make a small file expand into many large tensors)
    at = 0
    for begin, end, name, _, _ in sorted(entries):
        if begin != at:
            problems.append(f"{name}: data starts at byte {begin}, expected {at} "
                            f"({'overlaps the tensor before it' if begin < at else 'leaves a gap'})")
        at = max(at, end)
    if not problems and at != len(data):
        problems.append(f"{len(data) - at} bytes after the last tensor belong to none")
    if problems:
        raise WeightsFileError(f"{path}: corrupt safetensors file", problems)
    tensors = {}
    for begin, end, name, dtype, shape in entries:
        np_dtype = np.dtype(_ST_DTYPES[dtype]).newbyteorder("<")
        tensors[name] = np.frombuffer(data, dtype=np_dtype, count=declared_elements(shape), offset=begin).reshape(shape).astype(np_dtype.newbyteorder("="))
    return tensors, {str(k): str(v) for k, v in metadata.items()}


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Each ``.npy`` member's header (shape, dtype) is read and bounded before its data."""
    tensors: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            check_archive(path, archive)
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    raise WeightsFileError(f"{path}: member {info.filename} is not a .npy array")
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read_header(member)
                    if dtype.kind not in "fiub" or dtype.fields is not None or dtype.subdtype is not None:
                        raise WeightsFileError(f"{path}: member {info.filename} has dtype {dtype.str}, not a plain number type")
                    count = declared_elements(shape)
                    if (len(shape) > MAX_DIMS or max(shape, default=0) > MAX_TENSOR_ELEMENTS or count > MAX_TENSOR_ELEMENTS
                            or count * dtype.itemsize > info.file_size):
                        raise WeightsFileError(f"{path}: member {info.filename} declares shape {shape} of {dtype.str}: more "
                                               f"than any AlexNet tensor (at most {MAX_TENSOR_ELEMENTS:,} elements), "
                                               "or more bytes than the member holds")
                with archive.open(info) as member:
                    tensors[info.filename[: -len(".npy")]] = np.lib.format.read_array(member, allow_pickle=False)
    except WeightsFileError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, OverflowError) as exc:
        raise WeightsFileError(f"{path}: not a readable .npz file: {exc}") from None
    return tensors


def read_weights_file(path: str | os.PathLike, *, optimizer_state: bool = False) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``(tensors, metadata)`` of a ``.safetensors`` or ``.npz`` file, not yet validated. A training
    checkpoint's optimizer state (names starting :data:`VELOCITY_PREFIX`) is left out unless
    ``optimizer_state``."""
    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        tensors, metadata = _read_safetensors(path)
        if not optimizer_state:
            tensors = {name: t for name, t in tensors.items() if not name.startswith(VELOCITY_PREFIX)}
        return tensors, metadata
    if suffix == ".npz":
        return _read_npz(path), {}
    raise WeightsFileError(
        f"{path}: unknown weights format {path.suffix!r}; expected .safetensors or .npz "
        "(import other formats with `alexnet-aa weights import`)"
    )


def load_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The tensors of a ``.safetensors`` or ``.npz`` weights file, by canonical name."""
    return read_weights_file(path)[0]
