"""The conformance tests, written once and parametrized over backends.

Each test takes the ``alexnet_backend`` fixture (one registered backend; an
unavailable one is skipped with its reason) and ``case_rng`` (a generator
seeded from the run's seed and the test id: fresh data each run, the same
data when a run is repeated with ``--alexnet-seed``). Data parameters (the
shapes) are separate from the backend parameter.

Import them into a test module to run them::

    from alexnet_aa.testing.conformance import *  # noqa: F403
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .. import reference
from ..architecture import VARIANTS, architecture
from ..backend import Backend
from ..model import AlexNet
from ..weights import he_weights
from .compare import assert_conforms, oracle, relative_error, tolerance

__all__ = [
    "test_backend_protocol",
    "test_conv2d",
    "test_conv2d_shape_space",
    "test_conv2d_rejects_bad_arguments",
    "test_max_pool2d",
    "test_lrn",
    "test_linear",
    "test_network",
    "test_batch_independence",
]

# -- running one op on a backend from canonical host data --------------------------


def _to_native(backend: Backend, x: np.ndarray, noncontiguous: bool):
    """Host NCHW ``x`` → the backend's array in its layout; optionally a strided (non-contiguous) view."""
    nhwc = backend.layout == "NHWC" and x.ndim == 4
    if not noncontiguous:
        x = x.copy()
        x.setflags(write=False)  # a backend must never write into its input
        return backend.asarray(x.transpose(0, 2, 3, 1) if nhwc else x)
    wide = np.repeat(x, 2, axis=-1)  # every column twice; the native view takes every other one
    wide.setflags(write=False)
    native = backend.asarray(wide.transpose(0, 2, 3, 1) if nhwc else wide)
    return native[:, :, ::2, :] if nhwc else native[..., ::2]


def run_op(backend: Backend, op: str, x: np.ndarray, params: dict[str, np.ndarray], *args, noncontiguous: bool = False):
    """Run ``backend.<op>(x, *params, *args)`` on host NCHW data; return the NCHW host result."""
    native = backend.prepare(params)
    y = getattr(backend, op)(_to_native(backend, x, noncontiguous), *native.values(), *args)
    y = backend.to_host(y)
    if backend.layout == "NHWC" and y.ndim == 4:
        y = y.transpose(0, 3, 1, 2)
    return np.asarray(y)


def _f32(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32)


def _check(backend, record, check, y, ref, context):
    __tracebackhide__ = True
    err = assert_conforms(y, ref, backend=backend, check=check, context=context)
    record(check, context, err, tolerance(backend, check))


# -- the protocol ----------------------------------------------------------------------

_PROTOCOL = ("available", "asarray", "to_host", "prepare", "conv2d", "max_pool2d", "lrn", "linear", "warmup", "describe")


def test_backend_protocol(alexnet_backend):
    """Same method names and parameter lists as :class:`~alexnet_aa.backend.Backend`, no extra public methods."""
    cls = type(alexnet_backend)
    assert alexnet_backend.layout in ("NCHW", "NHWC"), f"layout must be NCHW or NHWC, got {alexnet_backend.layout!r}"
    assert isinstance(alexnet_backend.name, str) and alexnet_backend.name
    for name in _PROTOCOL:
        ours = list(inspect.signature(getattr(Backend, name)).parameters)
        theirs = list(inspect.signature(getattr(cls, name)).parameters)
        assert theirs == ours, f"{cls.__name__}.{name}{theirs} differs from Backend.{name}{ours}"
    extra = [
        n for n, v in vars(cls).items()
        if not n.startswith("_") and callable(v) and n not in _PROTOCOL
    ]
    assert not extra, f"{cls.__name__} has public methods outside the protocol: {extra}"
    ok, why = cls.available()
    assert ok is True and why == "", "an instantiated backend must report itself available"


# -- conv2d ------------------------------------------------------------------------------

#             N  C   H   W   O  K  S  P  G
CONV_CASES = {
    "odd-spatial": (2, 3, 11, 13, 8, 3, 1, 1, 1),
    "groups2-in-ne-out": (1, 4, 9, 9, 6, 3, 2, 0, 2),
    "groups2-k5-pad2": (2, 6, 7, 5, 4, 5, 1, 2, 2),
    "groups4": (1, 8, 6, 6, 12, 3, 1, 1, 4),
    "map-1x1": (3, 5, 1, 1, 7, 1, 1, 0, 1),
    "k3-on-1x1-pad1": (1, 16, 1, 1, 8, 3, 1, 1, 1),
    "tv-conv1-s4-p2": (1, 3, 63, 63, 64, 11, 4, 2, 1),
    "paper-conv1": (1, 3, 227, 227, 96, 11, 4, 0, 1),
    "paper-conv2": (2, 96, 27, 27, 256, 5, 1, 2, 2),
    "paper-conv4": (1, 384, 13, 13, 384, 3, 1, 1, 2),
}


def _conv_data(rng, n, c, h, w, o, k, groups):
    x = rng.standard_normal((n, c, h, w))
    wt = rng.standard_normal((o, c // groups, k, k)) / np.sqrt(c // groups * k * k)
    b = rng.standard_normal(o)
    return _f32(x), _f32(wt), _f32(b)


@pytest.mark.parametrize("relu", [False, True], ids=["no-relu", "relu"])
@pytest.mark.parametrize("noncontiguous", [False, True], ids=["contiguous", "strided"])
@pytest.mark.parametrize("case", list(CONV_CASES), ids=list(CONV_CASES))
def test_conv2d(alexnet_backend, case_rng, conformance_record, case, noncontiguous, relu):
    n, c, h, w, o, k, s, p, g = CONV_CASES[case]
    x, wt, b = _conv_data(case_rng, n, c, h, w, o, k, g)
    ref = reference.conv2d(x.astype(np.float64), wt.astype(np.float64), b.astype(np.float64), s, p, g, relu)
    y = run_op(alexnet_backend, "conv2d", x, {"w.weight": wt, "w.bias": b}, s, p, g, relu, noncontiguous=noncontiguous)
    _check(alexnet_backend, conformance_record, "conv2d", y, ref, f"case={case} x={x.shape} w={wt.shape} stride={s} padding={p} groups={g} relu={relu} noncontiguous={noncontiguous}")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(1, 3), cg=st.integers(1, 5), og=st.integers(1, 5), groups=st.integers(1, 3),
    h=st.integers(1, 12), w=st.integers(1, 12), k=st.integers(1, 5), s=st.integers(1, 3), p=st.integers(0, 2),
    seed=st.integers(0, 2**32 - 1),
)
def test_conv2d_shape_space(alexnet_backend, conformance_record, n, cg, og, groups, h, w, k, s, p, seed):
    """Hypothesis over the shape space: any stride, padding, kernel and group count that yields an output."""
    if h + 2 * p < k or w + 2 * p < k:
        return
    rng = np.random.default_rng(seed)
    x, wt, b = _conv_data(rng, n, cg * groups, h, w, og * groups, k, groups)
    ref = reference.conv2d(x.astype(np.float64), wt.astype(np.float64), b.astype(np.float64), s, p, groups, True)
    y = run_op(alexnet_backend, "conv2d", x, {"w.weight": wt, "w.bias": b}, s, p, groups, True)
    _check(alexnet_backend, conformance_record, "conv2d", y, ref, f"x={x.shape} w={wt.shape} stride={s} padding={p} groups={groups} seed={seed}")


@pytest.mark.parametrize(
    "shape, stride, padding, match",
    [
        ((1, 5, 8, 8), 1, 1, "channels"),
        ((1, 3, 8, 8), 0, 1, "stride"),
        ((1, 3, 8, 8), 1, -1, "padding"),
    ],
    ids=["channel-mismatch", "stride-0", "padding-negative"],
)
def test_conv2d_rejects_bad_arguments(alexnet_backend, shape, stride, padding, match):
    """A clear ``ValueError`` prefixed by the op, naming what is wrong (DESIGN.md §6)."""
    native = alexnet_backend.prepare({"w.weight": np.ones((4, 3, 3, 3), np.float32), "w.bias": np.ones(4, np.float32)})
    x = _to_native(alexnet_backend, np.ones(shape, np.float32), False)
    with pytest.raises(ValueError, match=rf"\[conv2d\].*{match}"):
        alexnet_backend.conv2d(x, *native.values(), stride, padding, 1, False)


# -- max_pool2d -----------------------------------------------------------------------------

#              N  C  H   W   K  S
POOL_CASES = {
    "54": (2, 3, 54, 54, 3, 2),
    "55": (1, 4, 55, 55, 3, 2),
    "56": (2, 3, 56, 56, 3, 2),
    "13x14": (3, 5, 13, 14, 3, 2),
    "k2s2-odd": (1, 2, 7, 9, 2, 2),
    "k3s3": (1, 3, 10, 11, 3, 3),
    "whole-map": (2, 3, 3, 3, 3, 2),
}


@pytest.mark.parametrize("ceil_mode", [False, True], ids=["floor", "ceil"])
@pytest.mark.parametrize("noncontiguous", [False, True], ids=["contiguous", "strided"])
@pytest.mark.parametrize("case", list(POOL_CASES), ids=list(POOL_CASES))
def test_max_pool2d(alexnet_backend, case_rng, conformance_record, case, noncontiguous, ceil_mode):
    n, c, h, w, k, s = POOL_CASES[case]
    x = _f32(case_rng.standard_normal((n, c, h, w)))  # negative values too: padding must act as -inf
    ref = reference.max_pool2d(x.astype(np.float64), k, s, ceil_mode)
    y = run_op(alexnet_backend, "max_pool2d", x, {}, k, s, ceil_mode, noncontiguous=noncontiguous)
    _check(alexnet_backend, conformance_record, "max_pool2d", y, ref, f"case={case} x={x.shape} kernel={k} stride={s} ceil_mode={ceil_mode} noncontiguous={noncontiguous}")


# -- lrn ----------------------------------------------------------------------------------------

#                  N  C   H  W  size alpha beta  k
LRN_CASES = {
    "size5-N2-C7": (2, 7, 5, 3, 5, 0.5, 0.75, 2.0),
    "size3-N3-C16": (3, 16, 4, 4, 3, 0.2, 0.75, 1.0),
    "size4-even": (1, 9, 3, 5, 4, 0.3, 0.6, 1.0),
    "size5-C3-edges": (4, 3, 2, 2, 5, 1.0, 0.75, 1.0),
    "size1": (2, 4, 3, 3, 1, 0.4, 0.9, 1.5),
    "paper-lrn1": (1, 96, 11, 11, 5, 5e-4, 0.75, 2.0),
    "caffe-lrn2": (2, 256, 6, 5, 5, 1e-4, 0.75, 1.0),
}


@pytest.mark.parametrize("noncontiguous", [False, True], ids=["contiguous", "strided"])
@pytest.mark.parametrize("case", list(LRN_CASES), ids=list(LRN_CASES))
def test_lrn(alexnet_backend, case_rng, conformance_record, case, noncontiguous):
    n, c, h, w, size, alpha, beta, k = LRN_CASES[case]
    x = _f32(3.0 * case_rng.standard_normal((n, c, h, w)))  # large enough that the window sum matters
    ref = reference.lrn(x.astype(np.float64), size, alpha, beta, k)
    y = run_op(alexnet_backend, "lrn", x, {}, size, alpha, beta, k, noncontiguous=noncontiguous)
    _check(alexnet_backend, conformance_record, "lrn", y, ref, f"case={case} x={x.shape} size={size} alpha={alpha} beta={beta} k={k} noncontiguous={noncontiguous}")


# -- linear --------------------------------------------------------------------------------------

LINEAR_CASES = {"one-row": (1, 17, 5), "batch3": (3, 64, 33), "fc6-shape": (2, 9216, 128), "fc8-wide": (1, 4096, 1000)}


@pytest.mark.parametrize("relu", [False, True], ids=["no-relu", "relu"])
@pytest.mark.parametrize("noncontiguous", [False, True], ids=["contiguous", "strided"])
@pytest.mark.parametrize("case", list(LINEAR_CASES), ids=list(LINEAR_CASES))
def test_linear(alexnet_backend, case_rng, conformance_record, case, noncontiguous, relu):
    n, fi, fo = LINEAR_CASES[case]
    x = _f32(case_rng.standard_normal((n, fi)))
    w = _f32(case_rng.standard_normal((fo, fi)) / np.sqrt(fi))
    b = _f32(case_rng.standard_normal(fo))
    ref = reference.linear(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), relu)
    y = run_op(alexnet_backend, "linear", x, {"w.weight": w, "w.bias": b}, relu, noncontiguous=noncontiguous)
    _check(alexnet_backend, conformance_record, "linear", y, ref, f"case={case} x={x.shape} w={w.shape} relu={relu} noncontiguous={noncontiguous}")


# -- the whole network -------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_network(alexnet_backend, case_rng, conformance_record, variant):
    """Logits within the network tolerance, no stray NaN, and the same top-1 class wherever the
    reference's top-1 margin is larger than the tolerance allows to flip."""
    weights = he_weights(architecture(variant), case_rng)
    size = architecture(variant).input_size
    x = _f32(case_rng.standard_normal((2, 3, size, size)))
    model = AlexNet(variant, alexnet_backend, weights=weights)
    ref_model = AlexNet(variant, oracle(), weights=weights)
    got = {k: alexnet_backend.to_host(v) for k, v in model.layers(x).items()}
    want = {k: np.asarray(v) for k, v in ref_model.layers(x).items()}
    per_layer = ", ".join(
        f"{k}={relative_error(np.asarray(got[k]), want[k]):.1e}" for k in want
    )
    context = f"variant={variant} x={x.shape} per-layer errors: {per_layer}"
    logits, ref = np.asarray(got["fc8"]), want["fc8"]
    _check(alexnet_backend, conformance_record, "network", logits, ref, context)
    top2 = np.sort(ref, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    decided = margin > 10 * tolerance(alexnet_backend, "network") * np.abs(ref).max(axis=1)
    assert decided.any(), f"no row of the reference has a decisive top-1 margin: {margin}"
    assert np.array_equal(logits.argmax(1)[decided], ref.argmax(1)[decided]), (
        f"[network] backend={alexnet_backend.name} top-1 {logits.argmax(1)} != reference {ref.argmax(1)} ({context})"
    )


def test_batch_independence(alexnet_backend, case_rng):
    """Rows of a batch are independent (DESIGN.md §7): a batch split in two and concatenated gives
    the logits of the whole batch, to within the network tolerance (kernels may block GEMMs by
    their row count, so float32 rounding may differ; the math may not)."""
    weights = he_weights(architecture("torchvision"), case_rng)
    x = _f32(case_rng.standard_normal((3, 3, 224, 224)))
    model = AlexNet("torchvision", alexnet_backend, weights=weights)
    whole = np.asarray(alexnet_backend.to_host(model(x)))
    parts = np.concatenate([np.asarray(alexnet_backend.to_host(model(x[i:j]))) for i, j in ((0, 1), (1, 3))])
    err = relative_error(parts, whole)
    tol = tolerance(alexnet_backend, "network")
    assert err <= tol, f"[network] backend={alexnet_backend.name}: batch split changes the logits by {err:.2e} > {tol:.0e}"
