"""Host-side array helpers: any backend's array to NumPy (importing no library), example inputs, and
whether a batch fits in memory."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from .architecture import batch_bytes, get_architecture


def _module_of(x: Any) -> str:
    return type(x).__module__.split(".", 1)[0]


def _is_bfloat16(dtype: Any) -> bool:
    """bfloat16 in every library's spelling: ``ml_dtypes``' (what NumPy and CuPy arrays carry),
    ``mlx.core.bfloat16``, ``torch.bfloat16``."""
    return str(dtype).rsplit(".", 1)[-1] == "bfloat16"


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy array holding the values of ``x``, an array of any backend.

    NumPy arrays are returned as they are; CuPy arrays are copied from the
    device (``x.get()``); MLX arrays through the buffer protocol; torch tensors through ``.numpy()``;
    bfloat16 widened to float32 (exactly) from all three, as NumPy has no bfloat16 of its own; anything
    else through DLPack, then ``np.asarray``. The libraries are recognised
    by the array's module name, so nothing is imported.
    """
    if isinstance(x, np.ndarray):
        return x
    module = _module_of(x)
    if module == "cupy" and "cupy" in sys.modules:
        host = x.get()
        return host.astype(np.float32) if _is_bfloat16(host.dtype) else host
    if module == "mlx" and "mlx" in sys.modules:
        mx = sys.modules["mlx.core"]
        return np.array(x.astype(mx.float32) if _is_bfloat16(x.dtype) else x, copy=True)
    if module == "torch" and "torch" in sys.modules:
        x = x.detach().cpu()
        return (x.float() if _is_bfloat16(x.dtype) else x).numpy()
    if hasattr(x, "__dlpack__"):
        try:
            return np.from_dlpack(x)
        except (BufferError, TypeError, RuntimeError):
            pass
    return np.asarray(x)


def is_real_floating(x: Any) -> bool:
    """Whether ``x``'s dtype is a real floating-point type: the Array API's ``isdtype(dtype, "real
    floating")``, and also bfloat16 (whose ``ml_dtypes`` spelling NumPy's and CuPy's ``isdtype`` refuse)."""
    return _is_bfloat16(x.dtype) or bool(array_namespace(x).isdtype(x.dtype, "real floating"))


def example_input(variant: str = "paper", batch: int = 1, seed: int = 0) -> np.ndarray:
    """A seeded standard-normal NCHW float32 batch at ``variant``'s input size."""
    size = get_architecture(variant).input_size
    return np.random.default_rng(seed).standard_normal((batch, 3, size, size), dtype=np.float32)


def _available_memory() -> int | None:
    """Bytes of memory available to this process now (Linux's MemAvailable), else ``None``."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_batch(variant: str, batch: int, *, training: bool = False, input_size: int | None = None,
                num_classes: int = 1000) -> None:
    """Refuse, before any work, a ``--batch`` whose activations alone would not fit in the memory
    available (:func:`alexnet_aa.architecture.batch_bytes`), with the estimate."""
    need = batch_bytes(get_architecture(variant, num_classes), batch, input_size, training=training)
    have = _available_memory()
    if have is not None and need > have:
        per_image = need / batch
        raise ValueError(f"--batch {batch}: the {variant} variant's activations need about {need / 1e9:.1f} GB "
                         f"({per_image / 1e6:.1f} MB an image{' while training' if training else ''}), more than the "
                         f"{have / 1e9:.1f} GB available: use --batch {max(1, int(have // per_image // 2))} or less")
