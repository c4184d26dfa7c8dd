"""Host-side array helpers: any backend's array to NumPy (importing no library), example inputs."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from .architecture import get_architecture


def _module_of(x: Any) -> str:
    return type(x).__module__.split(".", 1)[0]


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy array holding the values of ``x``, an array of any backend.

    NumPy arrays are returned as they are; CuPy arrays are copied from the
    device (``x.get()``); MLX arrays through the buffer protocol; anything
    else through DLPack, then ``np.asarray``. The libraries are recognised
    by the array's module name, so nothing is imported.
    """
    if isinstance(x, np.ndarray):
        return x
    module = _module_of(x)
    if module == "cupy" and "cupy" in sys.modules:
        return x.get()
    if module == "mlx" and "mlx" in sys.modules:
        return np.array(x, copy=True)
    if module == "torch" and "torch" in sys.modules:
        return x.detach().cpu().numpy()
    if hasattr(x, "__dlpack__"):
        try:
            return np.from_dlpack(x)
        except (BufferError, TypeError, RuntimeError):
            pass
    return np.asarray(x)


def example_input(variant: str = "paper", batch: int = 1, seed: int = 0) -> np.ndarray:
    """A seeded standard-normal NCHW float32 batch at ``variant``'s input size."""
    size = get_architecture(variant).input_size
    return np.random.default_rng(seed).standard_normal((batch, 3, size, size), dtype=np.float32)
