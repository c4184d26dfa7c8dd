"""Importers: other projects' AlexNet weights → the project's canonical ``.safetensors``.

Formats read (by suffix):

``.pth`` / ``.pt`` — a torchvision AlexNet state dict
    keys ``features.{0,3,6,8,10}.{weight,bias}`` and ``classifier.{1,4,6}.{weight,bias}``
    → the ``torchvision`` variant. A ``.pth`` is a zip holding a pickle
    (``data.pkl``) and raw tensor storages; unpickling runs code, so it is read
    safely one of two ways:

    * with torch installed: ``torch.load(path, map_location="cpu", weights_only=True)``,
      only on torch >= 2.10 (``weights_only`` had a code-execution bypass,
      CVE-2025-32434, fixed in 2.6, and a memory-corruption bug, CVE-2026-24747,
      fixed in 2.10); older torch is refused with a message naming the fix;
    * without torch (or ``use_torch=False``): :class:`_StateDictUnpickler`, a
      ``pickle.Unpickler`` whose ``find_class`` allows only what a tensor state
      dict needs (``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2``,
      ``torch._utils._rebuild_parameter`` and the ``torch.*Storage`` dtype tags), each
      mapped to a NumPy rebuilder here; storages are read from ``<archive>/data/<key>``.

    Either way, a file whose pickle names anything else (``os.system`` through
    ``__reduce__``, ``builtins.eval``, a custom class) is refused before anything
    runs, and a state dict holding anything but tensors is refused.

``.onnx`` — the ONNX model zoo's BVLC AlexNet (``bvlcalexnet-*.onnx``)
    initializers ``conv1_w_0 [96,3,11,11]``, ``conv1_b_0``, … ``conv5_*``,
    ``fc6_w_0``, … ``fc8_b_0`` → the ``caffe`` variant, read with ``onnx.load`` and
    ``onnx.numpy_helper.to_array`` (``onnx`` is imported only here). **Only the
    weights are kept.** The zoo graph (Caffe → Caffe2 → ONNX) takes a 224×224
    input, and its pools carry explicit padding that stands in for Caffe's
    ceil-mode rounding at that size, so its feature maps are not those of the
    network the weights were trained in. alexnet_aa runs them in the ``caffe``
    variant — 227×227 input, unpadded ceil-mode pools, LRN α/n — which is BVLC's
    ``deploy.prototxt``, the original Caffe network. A ``Gemm`` with ``transB=0``
    (or a ``MatMul``) has its weight transposed to the canonical ``(out, in)``.

``.npz`` / ``.safetensors`` — canonical names already
    validated like the others; a safetensors file's ``alexnet_aa.variant`` metadata
    is honoured.

Every import validates names, shapes and dtypes against the variant with
:func:`alexnet_aa.weights.check_weights` and reports every problem at once;
weights that fit another variant than the one asked for are an error naming
the variant they fit.

>>> from alexnet_aa.importers import TORCHVISION_NAMES
>>> TORCHVISION_NAMES["features.0.weight"], TORCHVISION_NAMES["classifier.6.bias"]
('conv1.weight', 'fc8.bias')
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .architecture import VARIANTS, get_architecture, variant_name
from .preprocess import default_preprocess
from .weights import (
    CHECKPOINT_KEY,
    MAX_ARCHIVE_BYTES,
    MAX_TENSOR_ELEMENTS,
    PREPROCESS_KEY,
    SOURCE_SHA256_KEY,
    VARIANT_KEY,
    WeightsError,
    WeightsFileError,
    check_archive,
    check_weights,
    declared_elements,
    fitting_variants,
    read_weights_file,
    save_weights,
)

#: Oldest torch whose ``torch.load(weights_only=True)`` is trusted (CVE-2025-32434, CVE-2026-24747).
MIN_TORCH = (2, 10)

#: torchvision ``AlexNet`` state-dict keys → canonical names.
TORCHVISION_NAMES = {
    f"{prefix}.{index}.{kind}": f"{name}.{kind}"
    for prefix, index, name in [
        ("features", 0, "conv1"), ("features", 3, "conv2"), ("features", 6, "conv3"),
        ("features", 8, "conv4"), ("features", 10, "conv5"),
        ("classifier", 1, "fc6"), ("classifier", 4, "fc7"), ("classifier", 6, "fc8"),
    ]
    for kind in ("weight", "bias")
}

#: ONNX model zoo ``bvlcalexnet`` initializer names → canonical names.
ONNX_ZOO_NAMES = {
    f"{layer}_{short}_0": f"{layer}.{kind}"
    for layer in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
    for short, kind in (("w", "weight"), ("b", "bias"))
}

_MAX_PICKLE_BYTES = 64 * 1024 * 1024
_MAX_STORAGE_BYTES = 8 * 1024**3


@dataclass
class Imported:
    """What an importer read: canonical float32 tensors, their variant, where they came from."""

    params: dict[str, np.ndarray]
    variant: str
    source_format: str
    source: str
    metadata: dict[str, str] = field(default_factory=dict)


# -- variants ------------------------------------------------------------------------


def _num_classes(params: Mapping[str, Any]) -> int:
    w = params.get("fc8.weight")
    shape = np.shape(w) if w is not None else ()
    return int(shape[0]) if len(shape) == 2 and shape[0] >= 1 else 1000


def _passes(params: Mapping[str, Any], variant: str, num_classes: int) -> bool:
    try:
        check_weights(params, get_architecture(variant, num_classes))
    except WeightsError:
        return False
    return True


def validate(params: Mapping[str, Any], variant: str | None, source: str, *, natural: str | None = None) -> tuple[dict[str, np.ndarray], str]:
    """Check ``params`` against ``variant`` (default: ``natural``, else the variant they fit).

    Returns ``(float32 tensors, variant)``. Raises :class:`WeightsError` listing
    every problem, naming the variant the weights fit when it is another one.
    """
    if variant is not None:
        variant = variant_name(variant)
    fits = fitting_variants(params)
    target = variant or natural or (fits[-1] if fits else None)  # paper/caffe share shapes: caffe (VARIANTS order)
    num_classes = _num_classes(params)
    if target is None:
        # fits nothing: report against the variant with the fewest problems
        attempts = []
        for v in VARIANTS:
            try:
                check_weights(params, get_architecture(v, num_classes))
            except WeightsError as exc:
                attempts.append((len(exc.problems), v, exc.problems))
        _, closest, problems = min(attempts)
        raise WeightsError(f"{source}: the weights fit no AlexNet variant (closest: {closest!r})", problems)
    try:
        return check_weights(params, get_architecture(target, num_classes)), target
    except WeightsError as exc:
        hint = ""
        others = [v for v in fits if v != target and _passes(params, v, num_classes)]
        if others:
            hint = f"; they fit the {' or '.join(repr(v) for v in others)} variant"
            hint += f" (pass variant={others[-1]!r} / --variant {others[-1]})"
        raise WeightsError(f"{source}: weights do not fit the {target!r} variant{hint}", exc.problems) from None


# -- torch .pth ------------------------------------------------------------------------


def _torch_version(torch_module) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", getattr(torch_module, "__version__", "0.0"))
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _torch_or_none():
    try:
        import torch
    except ImportError:
        return None
    return torch


def read_pth(path: str | os.PathLike, *, use_torch: bool | None = None) -> dict[str, np.ndarray]:
    """The tensors of a torch state-dict file, as float NumPy arrays by their original keys.

    ``use_torch``: ``None`` uses torch when it is installed, ``False`` always
    uses the restricted unpickler here, ``True`` requires torch. Nothing but
    tensors (in dicts) is accepted; see the module docstring.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(f"weights file not found: {path}")
    torch = _torch_or_none() if use_torch in (None, True) else None
    if use_torch and torch is None:
        raise WeightsFileError(f"{path}: use_torch=True but torch is not installed")
    if zipfile.is_zipfile(path):  # bounded before torch (or we) inflate a single member
        try:
            with zipfile.ZipFile(path) as archive:
                check_archive(path, archive)
        except zipfile.BadZipFile as exc:
            raise WeightsFileError(f"{path}: not a readable torch zip archive: {exc}") from None
    try:
        obj = _load_with_torch(torch, path) if torch is not None else _load_without_torch(path)
        return _state_dict_arrays(obj, path)
    except RecursionError:
        raise WeightsFileError(f"{path}: refused: the pickle nests deeper than Python's recursion limit") from None


def _load_with_torch(torch, path: Path):
    version = _torch_version(torch)
    if version < MIN_TORCH:
        raise WeightsFileError(
            f"{path}: refusing to unpickle with torch {torch.__version__}: torch.load(weights_only=True) "
            f"is only trusted from torch {MIN_TORCH[0]}.{MIN_TORCH[1]} on (CVE-2025-32434 code execution, "
            "CVE-2026-24747 memory corruption); upgrade torch, or read the file with alexnet_aa's own "
            "restricted reader (use_torch=False, `alexnet-aa weights import --no-torch`)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()
        detail = next((line for line in first if "Unsupported" in line or "global" in line.lower()), first[0] if first else "")
        raise WeightsFileError(
            f"{path}: refused: the file holds more than tensors and was not unpickled "
            f"(torch weights_only: {detail.strip()})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise WeightsFileError(f"{path}: not a readable torch file: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from None


def _state_dict_arrays(obj, path: Path) -> dict[str, np.ndarray]:
    if isinstance(obj, Mapping) and set(obj) & {"state_dict", "model"} and not any(isinstance(v, np.ndarray) or _is_torch_tensor(v) for v in obj.values()):
        inner = obj.get("state_dict", obj.get("model"))
        if isinstance(inner, Mapping):
            obj = inner
    if not isinstance(obj, Mapping):
        raise WeightsFileError(f"{path}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    out: dict[str, np.ndarray] = {}
    problems = []
    total = 0
    for key, value in obj.items():
        if not isinstance(key, str):  # never repr'd: a key can nest deeper than Python's stack
            problems.append(f"a key of type {type(key).__name__}: expected tensor names (str)")
            continue
        if _is_torch_tensor(value) or isinstance(value, np.ndarray):
            count = declared_elements(value.shape)
            total += count * (value.element_size() if _is_torch_tensor(value) else value.itemsize)
            # before any copy: a view of a small storage (stride 0, overlapping) can declare far more elements
            stored = value.untyped_storage().nbytes() // max(1, value.element_size()) if _is_torch_tensor(value) else count
            if count > MAX_TENSOR_ELEMENTS or count > stored or total > MAX_ARCHIVE_BYTES:
                problems.append(f"{key!r}: shape {tuple(value.shape)} is more than any AlexNet tensor, more than its "
                                f"storage holds, or past the {MAX_ARCHIVE_BYTES:,} bytes of all the file's tensors")
                continue
        if _is_torch_tensor(value):
            value = value.detach().cpu()
            if str(value.dtype) == "torch.bfloat16":
                value = value.float()
            value = value.numpy()
        if not isinstance(value, np.ndarray):
            problems.append(f"{key!r}: expected a tensor, got {type(value).__name__}")
            continue
        out[str(key)] = value
    if problems:
        raise WeightsFileError(f"{path}: refused: the state dict holds more than tensors", problems)
    return out


def _is_torch_tensor(value) -> bool:
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


# The restricted unpickler ------------------------------------------------------------

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _StorageType:
    """Stands in for ``torch.FloatStorage`` and friends: a dtype tag, nothing callable."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """NumPy twin of ``torch._utils._rebuild_tensor_v2``: a strided view of ``storage``, bounds-checked, copied."""
    if not isinstance(storage, np.ndarray) or storage.ndim != 1:
        raise pickle.UnpicklingError("tensor rebuilt from something that is not a storage")
    try:
        size = tuple(int(s) for s in size)
        stride = tuple(int(s) for s in stride)
        offset = int(storage_offset)
    except (TypeError, ValueError):
        raise pickle.UnpicklingError("malformed tensor size/stride/offset") from None
    if len(size) != len(stride) or offset < 0 or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise pickle.UnpicklingError(f"malformed tensor: size {size}, stride {stride}, offset {offset}")
    if declared_elements(size) > min(MAX_TENSOR_ELEMENTS, storage.size - offset):
        raise pickle.UnpicklingError(f"tensor of size {size} is more than any AlexNet tensor (at most {MAX_TENSOR_ELEMENTS:,} "
                                     f"elements) or than its storage holds ({storage.size - offset} elements from offset {offset}):"
                                     " a stride-0 or overlapping view is not expanded")
    if 0 in size:
        return np.zeros(size, dtype=storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.size:
        raise pickle.UnpicklingError(f"tensor of size {size} (stride {stride}, offset {offset}) lies outside its storage of {storage.size} elements")
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=tuple(s * item for s in stride), writeable=False)
    return np.array(view)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    if not isinstance(data, np.ndarray):
        raise pickle.UnpicklingError("parameter rebuilt from something that is not a tensor")
    return data


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles a torch state dict into NumPy arrays; any other global is refused, never imported."""

    _ALLOWED = {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, big_endian: bool) -> None:
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix
        self._big_endian = big_endian
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed (a weights file may only hold tensors)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel = pid
        key = str(key)
        if key in self._storages:
            return self._storages[key]
        if not re.fullmatch(r"\w+", key):
            raise pickle.UnpicklingError(f"bad storage key {key!r}")
        name = f"{self._prefix}data/{key}"
        try:
            info = self._archive.getinfo(name)
        except KeyError:
            raise pickle.UnpicklingError(f"storage {name} is missing from the archive") from None
        if info.file_size > _MAX_STORAGE_BYTES:
            raise pickle.UnpicklingError(f"storage {name} is implausibly large ({info.file_size} bytes)")
        raw = self._archive.read(info)
        order = ">" if self._big_endian else "<"
        if storage_type.dtype == "bfloat16":
            half = np.frombuffer(raw, dtype=np.dtype(np.uint16).newbyteorder(order))
            array = (half.astype(np.uint32) << 16).view(np.float32)
        else:
            dtype = np.dtype(storage_type.dtype).newbyteorder(order) if np.dtype(storage_type.dtype).itemsize > 1 else np.dtype(storage_type.dtype)
            if len(raw) % dtype.itemsize:
                raise pickle.UnpicklingError(f"storage {name}: {len(raw)} bytes is not a whole number of {dtype} items")
            array = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))
        if int(numel) > array.size:
            raise pickle.UnpicklingError(f"storage {name} holds {array.size} items, the pickle says {numel} (truncated?)")
        self._storages[key] = array
        return array


def _load_without_torch(path: Path):
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        with open(path, "rb") as f:
            head = f.read(2)
        legacy = " (a legacy pre-1.6 torch.save file: convert it with torch >= 2.10)" if head[:1] == b"\x80" else ""
        raise WeightsFileError(f"{path}: not a torch zip archive{legacy}") from None
    with archive:
        pkls = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise WeightsFileError(f"{path}: not a torch state-dict archive (expected one <name>/data.pkl, found {len(pkls)})")
        prefix = pkls[0][: -len("data.pkl")]
        info = archive.getinfo(pkls[0])
        if info.file_size > _MAX_PICKLE_BYTES:
            raise WeightsFileError(f"{path}: data.pkl is implausibly large ({info.file_size} bytes)")
        big_endian = False
        if f"{prefix}byteorder" in archive.namelist():
            big_endian = archive.read(f"{prefix}byteorder").strip() == b"big"
        unpickler = _StateDictUnpickler(io.BytesIO(archive.read(info)), archive, prefix, big_endian)
        try:
            return unpickler.load()
        except pickle.UnpicklingError as exc:
            raise WeightsFileError(f"{path}: refused, not unpickled: {exc}") from None
        except (EOFError, ValueError, TypeError, KeyError, AttributeError, IndexError, zipfile.BadZipFile) as exc:
            raise WeightsFileError(f"{path}: corrupt torch archive: {type(exc).__name__}: {exc}") from None


def _from_torchvision(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    # A model wrapped in DataParallel saves "module."-prefixed keys.
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    # torchvision keys are renamed; canonical ones pass; anything else is reported as unexpected.
    return {TORCHVISION_NAMES.get(key, key): value for key, value in tensors.items()}


# -- ONNX --------------------------------------------------------------------------------


def read_onnx(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The zoo AlexNet's initializers by canonical name (fc weights as ``(out, in)``)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(f"weights file not found: {path}")
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise WeightsFileError(
            f"{path}: reading .onnx files needs the onnx package (pip install onnx)"
        ) from None
    try:
        model = onnx.load(str(path), load_external_data=True)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, OSError …
        raise WeightsFileError(f"{path}: not a readable ONNX model: {type(exc).__name__}: {exc}") from None
    graph = model.graph
    transposed = set()
    for node in graph.node:
        if node.op_type == "Gemm" and len(node.input) > 1:
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            if not trans_b:
                transposed.add(node.input[1])
        elif node.op_type == "MatMul" and len(node.input) > 1:
            transposed.add(node.input[1])
    params: dict[str, np.ndarray] = {}
    problems = []
    for init in graph.initializer:
        try:
            value = numpy_helper.to_array(init, base_dir=str(path.parent))
        except Exception as exc:
            problems.append(f"{init.name}: unreadable initializer ({type(exc).__name__}: {exc})")
            continue
        if init.name in ONNX_ZOO_NAMES:
            if init.name in transposed and value.ndim == 2:
                value = value.T
            params[ONNX_ZOO_NAMES[init.name]] = np.ascontiguousarray(value)
        elif value.dtype.kind in "iub":
            continue  # shape constants (Reshape targets) and the like
        else:
            params[init.name] = value  # reported by the validation as unexpected
    if problems:
        raise WeightsFileError(f"{path}: corrupt ONNX initializers", problems)
    return params


# -- entry points ------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_any(src: str | os.PathLike, variant: str | None = None, *, use_torch: bool | None = None) -> Imported:
    """Read and validate weights of any supported format; see the module docstring."""
    path = Path(src)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise WeightsFileError(f"weights file not found: {path}")
    metadata: dict[str, str] = {}
    if suffix in (".pth", ".pt", ".bin", ".ckpt"):
        fmt, natural = "torchvision .pth", "torchvision"
        params = _from_torchvision(read_pth(path, use_torch=use_torch))
    elif suffix == ".onnx":
        fmt, natural = "ONNX model zoo bvlcalexnet", "caffe"
        params = read_onnx(path)
    elif suffix in (".safetensors", ".npz"):
        params, metadata = read_weights_file(path)
        fmt, natural = f"canonical {suffix}", metadata.get(VARIANT_KEY)
        if natural is not None:
            try:
                natural = variant_name(natural)
            except ValueError as exc:
                raise WeightsFileError(f"{path}: metadata names an unknown variant {natural!r} ({exc})") from None
    else:
        raise WeightsFileError(
            f"{path}: unknown weights format {suffix!r}; expected .pth (torchvision state dict), "
            ".onnx (ONNX zoo bvlcalexnet), .safetensors or .npz (canonical names)"
        )
    checked, used = validate(params, variant, str(path), natural=natural)
    return Imported(checked, used, fmt, str(path), metadata)


def import_weights(src: str | os.PathLike, variant: str | None = None, *, use_torch: bool | None = None) -> dict[str, np.ndarray]:
    """Canonical float32 tensors from a ``.pth``, ``.onnx``, ``.npz`` or ``.safetensors`` file.

    ``variant`` defaults to the format's own (torchvision for ``.pth``, caffe for
    ``.onnx``, the file's metadata for safetensors, else the variant the shapes fit).
    """
    return read_any(src, variant, use_torch=use_torch).params


def convert(src: str | os.PathLike, out: str | os.PathLike, variant: str | None = None, *, use_torch: bool | None = None, extra_metadata: Mapping[str, str] | None = None) -> Path:
    """Import ``src`` and write it to ``out`` (``.safetensors``) with canonical names and metadata.

    The metadata records the variant (``alexnet_aa.variant``), the preprocessing
    its published weights expect (``alexnet_aa.preprocess``, JSON; kept from the
    source when it is an alexnet_aa file), and the source file's name, format and SHA-256.
    """
    return write_canonical(read_any(src, variant, use_torch=use_torch), out, extra_metadata)


def write_canonical(imported: Imported, out: str | os.PathLike, extra_metadata: Mapping[str, str] | None = None) -> Path:
    """Write what :func:`read_any` returned to ``out`` (``.safetensors``) with the metadata :func:`convert` describes."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"output must be a .safetensors file (it carries the preprocessing metadata), got {out}")
    src_path = Path(imported.source)
    metadata = {
        VARIANT_KEY: imported.variant,
        PREPROCESS_KEY: imported.metadata.get(PREPROCESS_KEY) or default_preprocess(imported.variant).to_json(),
        "alexnet_aa.source": src_path.name,
        "alexnet_aa.source_format": imported.source_format,
        SOURCE_SHA256_KEY: _sha256(src_path),
    }
    for key, value in imported.metadata.items():
        if key != CHECKPOINT_KEY:  # the weights only: a checkpoint's training state stays with its velocity
            metadata.setdefault(key, value)
    metadata.update(extra_metadata or {})
    out.parent.mkdir(parents=True, exist_ok=True)
    return save_weights(out, imported.params, metadata)
