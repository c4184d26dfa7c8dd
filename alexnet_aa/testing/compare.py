"""Metrics, tolerances and the assertion of the conformance suite."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..backend import Backend
from ..reference import ArrayAPIBackend

#: Relative L2 tolerances per compute dtype and check (DESIGN.md §5). A backend
#: may override any entry with a ``tolerances`` class attribute of the same
#: shape, e.g. ``tolerances = {"float32": {"network": 2e-4}}``.
#: The ``*_backward`` entries are the backward twins', checked on the reference's forward output (so
#: both sides see the same ReLU masks); ``network_gradients`` each layer's backward inside the whole
#: network, on the backend's own saved activations, and, for float64, the whole network's gradients
#: end to end (``model.gradients`` returns float32, so float64 is held to float32's rounding); ``sgd``
#: each tensor's update (new minus old weights) in a training step, where float32 storage rounds
#: ``w + v`` to a few ulps of ``w``, far more than of the update.
TOLERANCES: dict[str, dict[str, float]] = {
    "float32": {"conv2d": 1e-5, "max_pool2d": 1e-6, "lrn": 1e-5, "linear": 1e-5, "activation": 1e-6, "network": 1e-4,
                "activation_backward": 1e-6,
                "conv2d_backward": 1e-5, "max_pool2d_backward": 1e-6, "lrn_backward": 1e-5, "linear_backward": 1e-5,
                "network_gradients": 1e-4, "sgd": 1e-3},
    "float64": {"conv2d": 1e-12, "max_pool2d": 1e-14, "lrn": 1e-12, "linear": 1e-12, "activation": 1e-14,
                "network": 1e-10, "activation_backward": 1e-14,
                "conv2d_backward": 1e-12, "max_pool2d_backward": 1e-14, "lrn_backward": 1e-12, "linear_backward": 1e-12,
                "network_gradients": 1e-7, "sgd": 1e-9},
    # float32 storage with TF32 products (10-bit mantissa) in GEMMs: opt-in by name only.
    "tf32": {"conv2d": 2e-3, "max_pool2d": 1e-6, "lrn": 1e-5, "linear": 2e-3, "activation": 1e-6, "network": 1e-2,
             "activation_backward": 1e-6,
             "conv2d_backward": 2e-3, "max_pool2d_backward": 1e-6, "lrn_backward": 1e-5, "linear_backward": 2e-3,
             "network_gradients": 1e-2, "sgd": 1e-2},
    # Half-precision storage, opt-in by name only, inference only (no backward entries: such a backend
    # declares unsupported["training"]). The reference computes on the inputs and weights as the backend
    # stores them (conformance.as_stored), so an op is held to its own rounding: float32 accumulation
    # and one rounding of each result, at most the unit roundoff u (float16 2^-11 = 4.9e-4, bfloat16
    # 2^-8 = 3.9e-3) in relative L2; the tolerance is twice that. Max-pooling returns stored values: exact.
    # The network stores ~10 rounded activations in a row (logits: 1.5u measured on mlx[cpu]), and the same
    # tolerance holds predict's probabilities, where the softmax turns the logits' absolute error into a
    # relative one (measured 4.7u float16, 6.3u bfloat16): 20u.
    "float16": {"conv2d": 1e-3, "max_pool2d": 1e-6, "lrn": 1e-3, "linear": 1e-3, "activation": 1e-3, "network": 1e-2},
    "bfloat16": {"conv2d": 8e-3, "max_pool2d": 1e-6, "lrn": 8e-3, "linear": 8e-3, "activation": 8e-3, "network": 8e-2},
}


class ConformanceError(AssertionError):
    """A backend's result differs from the reference; ``error`` is the measured relative L2 error
    (``inf`` when the shapes or the non-finite elements differ)."""

    def __init__(self, message: str, error: float = float("inf")) -> None:
        self.error = error
        super().__init__(message)


def tolerance(backend: Backend, check: str) -> float:
    """The tolerance for ``check`` (an op name or ``"network"``) at ``backend``'s dtype."""
    dtype = backend.dtype
    own = getattr(backend, "tolerances", {}).get(dtype, {})
    if check in own:
        return float(own[check])
    try:
        return TOLERANCES[dtype][check]
    except KeyError:
        raise KeyError(f"no tolerance for {check!r} at dtype {dtype!r}; known dtypes: {list(TOLERANCES)}") from None


def decisive_rows(ref_logits: np.ndarray, tol: float) -> np.ndarray:
    """The rows of ``(N, classes)`` reference logits whose top-1 cannot flip within a relative L2 error of
    ``tol``: margin between the first and second class over 10 × ``tol`` × max|logit| (a near-tie may flip)."""
    top2 = np.sort(ref_logits, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) > 10 * tol * np.abs(ref_logits).max(axis=1)


def relative_error(y: np.ndarray, ref: np.ndarray) -> float:
    """``‖y − ref‖₂ / ‖ref‖₂`` in float64 (``‖y − ref‖₂`` where ``ref`` is all zeros)."""
    diff = np.subtract(y, ref, dtype=np.float64).ravel()  # one pass, whatever the dtypes
    r64 = np.asarray(ref, dtype=np.float64).ravel()
    num, den = float(np.sqrt(np.dot(diff, diff))), float(np.sqrt(np.dot(r64, r64)))
    return num / den if den > 0 else num


@functools.lru_cache(maxsize=1)
def oracle() -> Backend:
    """The reference: :class:`alexnet_aa.reference.ArrayAPIBackend` on NumPy in float64 — part of
    the core, so the suite needs nothing but ``alexnet-aa`` and the backend under test."""
    return ArrayAPIBackend(namespace="numpy", dtype="float64")


def assert_conforms(y: Any, ref: np.ndarray, *, backend: Backend, check: str, context: str) -> float:
    """Compare ``y`` (already on the host, canonical layout) with ``ref``; return the measured error.

    Checks shape first, then that NaN and ±inf sit exactly where the
    reference has them (with the same sign), then the relative L2 error of the
    finite elements against :func:`tolerance`; the message names op, backend,
    dtype, shapes, the measured error and ``context`` (the case and its seed,
    enough to rerun it).
    """
    __tracebackhide__ = True
    y = np.asarray(y)
    where = f"[{check}] backend={backend.name} dtype={backend.dtype} {context}"
    if y.shape != ref.shape:
        raise ConformanceError(f"{where}: out.shape={y.shape}, but should be {ref.shape}")
    ok = np.isfinite(ref)
    all_finite = bool(ok.all()) and bool(np.isfinite(y).all())
    for what, test in (() if all_finite else (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf))):
        got, want = test(y), test(ref)
        if not np.array_equal(got, want):
            first = tuple(map(int, np.argwhere(got != want)[0]))
            raise ConformanceError(
                f"{where}: {int(got.sum())} {what} in the result, {int(want.sum())} in the reference "
                f"(first difference at {first}: got {float(y[first])!r}, reference {float(ref[first])!r})"
            )
    err = relative_error(y, ref) if all_finite else relative_error(y[ok], ref[ok])
    tol = tolerance(backend, check)
    if not err <= tol:
        worst = np.unravel_index(np.argmax(np.abs(np.where(ok, y - ref, 0))), y.shape)
        raise ConformanceError(
            f"{where}: relative L2 error {err:.3e} > tolerance {tol:.0e} "
            f"(shape {y.shape}; worst element {tuple(map(int, worst))}: got {float(y[worst])!r}, reference {float(ref[worst])!r})",
            err,
        )
    return err
