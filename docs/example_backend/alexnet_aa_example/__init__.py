"""An example third-party backend for alexnet_aa: AlexNet on array-api-strict.

The whole backend is this one class plus one entry point in ``pyproject.toml``::

    [project.entry-points."alexnet_aa.backends"]
    example = "alexnet_aa_example:ExampleBackend"

It keeps the reference ops (:mod:`alexnet_aa.reference`) for ``conv2d`` and
``max_pool2d`` and brings its own ``lrn`` and ``linear``, to show where a
backend plugs in its own code. The math of every op is documented on the
reference op of the same name, and :mod:`alexnet_aa.ops` has validated every
argument before an op here is called: this module only says how it computes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from alexnet_aa import reference
from alexnet_aa.arrays import to_numpy
from alexnet_aa.backend import Backend

__all__ = ["ExampleBackend"]


class ExampleBackend(Backend):
    """NCHW on array-api-strict: reference conv and pool, its own LRN and linear."""

    name = "example"
    layout = "NCHW"
    #: linear weights as (F_in, F_out): the base class's prepare transposes them once.
    linear_weight_layout = "IO"
    #: what it cannot do: ops refuse such calls with this reason and the suite skips those cases.
    unsupported = {"lrn_even_size": "its LRN window is symmetric (radius size // 2): odd sizes only"}

    def __init__(self, dtype: str = "float32") -> None:
        if dtype not in ("float32", "float64"):
            raise ValueError(f"[example] dtype: expected 'float32' or 'float64', got {dtype!r}")
        import array_api_strict

        self._xp = array_api_strict
        self.dtype = dtype

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import array_api_strict  # noqa: F401
        except ImportError as exc:  # the reason is shown, the backend skipped
            return False, f"array-api-strict is not installed ({exc}): pip install array-api-strict"
        return True, ""

    @property
    def xp(self) -> Any:
        return self._xp

    def asarray(self, x: Any) -> Any:
        xp = self._xp
        return xp.astype(xp.asarray(x), getattr(xp, self.dtype))

    def to_host(self, x: Any) -> np.ndarray:
        return to_numpy(x)

    def conv2d(self, x, w, b, stride, padding, groups, relu):
        return reference.conv2d(x, w, b, stride, padding, groups, relu)

    def max_pool2d(self, x, kernel, stride, ceil_mode):
        return reference.max_pool2d(x, kernel, stride, ceil_mode)

    def lrn(self, x, size, alpha, beta, k):
        """The channel-window sum of squares as a difference of two cumulative sums: one pass
        whatever the window size (odd sizes: see ``unsupported``)."""
        xp, c, r = self._xp, x.shape[1], size // 2
        csum = xp.cumulative_sum(x * x, axis=1, include_initial=True)  # csum[:, j] = Σ_{c' < j} x²
        upper = xp.asarray([min(i + r + 1, c) for i in range(c)])
        lower = xp.asarray([max(i - r, 0) for i in range(c)])
        window = xp.take(csum, upper, axis=1) - xp.take(csum, lower, axis=1)
        return x / (k + (alpha / size) * window) ** beta

    def linear(self, x, w, b, relu):
        """``x @ w + b`` with ``w`` already ``(F_in, F_out)``."""
        xp = self._xp
        y = xp.matmul(x, w)
        if b is not None:
            y = y + b
        return xp.maximum(y, xp.zeros_like(y)) if relu else y

    def describe(self) -> dict[str, str]:
        return {
            "namespace": f"array_api_strict {self._xp.__version__}",
            "conv2d, max_pool2d": "alexnet_aa.reference",
            "lrn": "cumulative-sum window (odd sizes)",
            "linear": "matmul with weights transposed once in prepare",
        }
