"""The ``array-api`` backend: :mod:`alexnet_aa.reference` on any Array API namespace.

``ArrayAPIBackend(namespace="numpy", dtype="float32")``. ``namespace`` is a
module name (``"numpy"``, ``"array_api_strict"``, ``"cupy"``, ``"torch"``, …)
or a namespace object; NumPy, CuPy and PyTorch go through their
array-api-compat wrappers. Run on NumPy with ``dtype="float64"`` it is the
oracle of the conformance suite.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from alexnet_aa import reference
from alexnet_aa.arrays import to_numpy
from alexnet_aa.backend import Backend

__all__ = ["ArrayAPIBackend"]

_COMPAT_WRAPPED = ("numpy", "cupy", "torch", "dask.array")


def _resolve_namespace(namespace: str | Any) -> Any:
    if not isinstance(namespace, str):
        return namespace
    if namespace in _COMPAT_WRAPPED:
        return importlib.import_module(f"array_api_compat.{namespace}")
    try:
        return importlib.import_module(namespace)
    except ImportError as exc:
        raise ValueError(f"[array-api] cannot import array namespace {namespace!r}: {exc}") from exc


class ArrayAPIBackend(Backend):
    """The reference ops, NCHW, on the namespace of your choice."""

    name = "array-api"
    layout = "NCHW"

    def __init__(self, namespace: str | Any = "numpy", dtype: str = "float32") -> None:
        if dtype not in ("float32", "float64"):
            raise ValueError(f"[array-api] dtype must be 'float32' or 'float64', got {dtype!r}")
        self._xp = _resolve_namespace(namespace)
        self.dtype = dtype
        self.namespace = getattr(self._xp, "__name__", repr(self._xp))

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return True, ""

    @property
    def xp(self) -> Any:
        return self._xp

    def asarray(self, x: Any) -> Any:
        xp = self._xp
        return xp.astype(xp.asarray(x), getattr(xp, self.dtype))

    def to_host(self, x: Any) -> np.ndarray:
        return to_numpy(x)

    def prepare(self, params: Mapping[str, np.ndarray]) -> dict[str, Any]:
        return {name: self.asarray(value) for name, value in params.items()}

    def conv2d(self, x, w, b, stride, padding, groups, relu):
        return reference.conv2d(x, w, b, stride, padding, groups, relu)

    def max_pool2d(self, x, kernel, stride, ceil_mode):
        return reference.max_pool2d(x, kernel, stride, ceil_mode)

    def lrn(self, x, size, alpha, beta, k):
        return reference.lrn(x, size, alpha, beta, k)

    def linear(self, x, w, b, relu):
        return reference.linear(x, w, b, relu)

    def describe(self) -> dict[str, str]:
        return {"namespace": self.namespace, "dtype": self.dtype, "ops": "alexnet_aa.reference (im2col + matmul)"}
