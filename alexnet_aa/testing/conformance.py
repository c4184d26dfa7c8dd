"""The conformance tests, written once and parametrized over backends.

Each test takes the ``alexnet_backend`` fixture (one backend instance; an
unavailable one is skipped with its reason), ``alexnet_backend_class`` (its
class, checked whether or not it can run here) or ``alexnet_backend_float64``,
and ``case_rng`` (a generator seeded from the run's seed and the test id:
fresh data each run, the same data when a run is repeated with
``--alexnet-seed``). Data parameters (the shapes) are separate from the
backend parameter. Every op runs through :mod:`alexnet_aa.ops` on the backend
under test and on the float64 oracle (:func:`alexnet_aa.testing.oracle`, part
of the core), so the suite needs nothing but ``alexnet-aa`` and that backend.

Import them into a test module to run them::

    from alexnet_aa.testing.conformance import *  # noqa: F403
"""

from __future__ import annotations

import inspect
import itertools

import numpy as np
import pytest
from array_api_compat import array_namespace
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .. import layouts, ops
from ..architecture import get_architecture
from ..backend import BACKWARD_OPS, Backend, UnsupportedError, protocol_problems, require_training
from ..model import AlexNet
from ..training import SGD, dropout_masks
from ..weights import he_weights
from .compare import ConformanceError, assert_conforms, decisive_rows, oracle, relative_error, tolerance

__all__ = [
    "test_backend_protocol",
    "test_declared_layouts",
    "test_conv2d",
    "test_conv2d_shape_space",
    "test_max_pool2d",
    "test_lrn",
    "test_linear",
    "test_activation",
    "test_ops_reject_bad_arguments",
    "test_ops_reject_foreign_arrays",
    "test_nonfinite",
    "test_network",
    "test_network_float64",
    "test_predict",
    "test_batch_independence",
    "test_conv2d_backward",
    "test_conv2d_backward_shape_space",
    "test_max_pool2d_backward",
    "test_max_pool2d_backward_nonfinite",
    "test_lrn_backward",
    "test_linear_backward",
    "test_activation_backward",
    "test_network_gradients",
    "test_network_gradients_float64",
    "test_sgd_steps",
]

# -- running one op on a backend from canonical host data --------------------------


def _to_native(backend: Backend, x: np.ndarray, noncontiguous: bool):
    """Host NCHW (or ``(N, F)``) ``x`` → the backend's array in its layout, read-only on the host;
    optionally a strided (non-contiguous) view of a wider array."""
    perm = layouts.permutation(layouts.CANONICAL, backend.layout) if x.ndim == 4 else tuple(range(x.ndim))
    axis = backend.layout.index("W") if x.ndim == 4 else x.ndim - 1
    if noncontiguous:
        x = np.repeat(x, 2, axis=-1)  # every column twice; the native view takes every other one
    x = x.transpose(perm).copy()
    x.setflags(write=False)  # a backend must never write into its input
    native = backend.asarray(x)
    if not noncontiguous:
        return native
    index = [slice(None)] * x.ndim
    index[axis] = slice(None, None, 2)
    return native[tuple(index)]


def run_op(backend: Backend, op: str, x: np.ndarray, params: dict[str, np.ndarray], *args, noncontiguous: bool = False):
    """``ops.<op>(backend, x, *prepared params, *args)`` on host NCHW data; the NCHW host result."""
    native = backend.prepare(params)
    y = np.asarray(backend.to_host(getattr(ops, op)(backend, _to_native(backend, x, noncontiguous), *native.values(), *args)))
    return y.transpose(layouts.permutation(backend.layout, layouts.CANONICAL)) if y.ndim == 4 else y


def _f32(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32)


def as_stored(backend: Backend, a: np.ndarray) -> np.ndarray:
    """Host float32 data as ``backend`` stores it, in float64: what the reference computes on.

    The identity for float32 and float64 storage. A half-precision backend (float16, bfloat16)
    rounds every input and weight when it stores them; that rounding is the dtype's, not an op's, and
    on a sum that cancels it alone can exceed any fixed relative tolerance. So the reference sees the
    stored values, and each op is held to what it computes from what it was given (DESIGN.md §5).
    """
    if backend.dtype in ("float32", "float64", "tf32"):  # tf32 stores float32
        return a.astype(np.float64)
    return np.asarray(backend.to_host(backend.asarray(a)), dtype=np.float64)


def _stored_params(backend: Backend, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: as_stored(backend, v) for k, v in params.items()}


#: Network tolerances up to this one are tight enough that random He-initialised logits almost always
#: have a row whose top-1 margin is decisive (> 10 × tolerance × max|logit|): there the suite requires
#: one. At looser (lower-precision) tolerances a decisive row is rare, and the top-1 agreement of such a
#: dtype is a statistic over many inputs (the benchmarks' "top-1 = float32's"), not a check on two rows.
TOP1_REQUIRED_UP_TO = 1e-3


def _f64(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.astype(np.float64) for k, v in params.items()}


def _check(backend, record, check, y, ref, context, tol_check=None):
    """Compare, record the measured error (also when it fails), and fail with the suite's message."""
    __tracebackhide__ = True
    tol = tolerance(backend, tol_check or check)
    try:
        err = assert_conforms(y, ref, backend=backend, check=tol_check or check, context=context)
    except ConformanceError as exc:
        record(check, context, exc.error, tol)
        raise
    record(check, context, err, tol)


def _against_oracle(backend, record, check, op, x, params, *args, context, noncontiguous=False):
    __tracebackhide__ = True
    ref = run_op(oracle(), op, as_stored(backend, x), _stored_params(backend, params), *args)
    y = run_op(backend, op, x, params, *args, noncontiguous=noncontiguous)
    _check(backend, record, check, y, ref, context)


# -- the protocol ----------------------------------------------------------------------

_PROTOCOL = ("available", "asarray", "to_host", "prepare", "conv2d", "max_pool2d", "lrn", "linear", *BACKWARD_OPS,
             "capture", "warmup", "describe")


def test_backend_protocol(alexnet_backend_class):
    """Same method names and parameter lists as :class:`~alexnet_aa.backend.Backend`, no extra public
    methods, valid declared layouts and capabilities, and ``available()`` answering without raising —
    checked on the class, whether or not the backend can run here."""
    cls = alexnet_backend_class
    assert isinstance(cls.name, str) and cls.name, f"{cls.__name__}.name must be a non-empty string"
    for name in _PROTOCOL:
        ours = list(inspect.signature(getattr(Backend, name)).parameters)
        theirs = list(inspect.signature(getattr(cls, name)).parameters)
        assert theirs == ours, f"{cls.__name__}.{name}{theirs} differs from Backend.{name}{ours}"
    extra = [n for n, v in vars(cls).items() if not n.startswith("_") and callable(v) and n not in _PROTOCOL]
    assert not extra, f"{cls.__name__} has public methods outside the protocol: {extra}"
    problems = protocol_problems(cls)
    assert not problems, f"{cls.__name__} declares: " + "; ".join(problems)
    answer = cls.available()
    assert isinstance(answer, tuple) and len(answer) == 2 and isinstance(answer[0], bool) and isinstance(answer[1], str), (
        f"{cls.__name__}.available() must return (bool, reason), got {answer!r}")
    assert answer[0] or answer[1], f"{cls.__name__}.available() says False without a reason"


def test_declared_layouts(alexnet_backend):
    """``prepare`` returns weights in the layouts the backend declares: every axis has its own size
    here, so reading the sizes through ``conv_weight_layout`` / ``linear_weight_layout`` finds them."""
    native = alexnet_backend.prepare({"conv.weight": np.ones((7, 2, 3, 5), np.float32),
                                      "fc.weight": np.ones((6, 9), np.float32), "fc.bias": np.ones(6, np.float32)})
    conv = layouts.conv_weight_dims(tuple(native["conv.weight"].shape), alexnet_backend.conv_weight_layout)
    assert conv == (7, 2, 3, 5), f"conv weight prepared as {tuple(native['conv.weight'].shape)} is not {alexnet_backend.conv_weight_layout}"
    fc = layouts.linear_weight_dims(tuple(native["fc.weight"].shape), alexnet_backend.linear_weight_layout)
    assert fc == (6, 9), f"linear weight prepared as {tuple(native['fc.weight'].shape)} is not {alexnet_backend.linear_weight_layout}"
    assert tuple(native["fc.bias"].shape) == (6,)


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
    "tv-conv2": (1, 64, 27, 27, 192, 5, 1, 2, 1),
    "tv-conv3-batch3": (3, 192, 13, 13, 384, 3, 1, 1, 1),
}


def _conv_data(rng, n, c, h, w, o, kh, groups, kw=None):
    x = rng.standard_normal((n, c, h, w))
    wt = rng.standard_normal((o, c // groups, kh, kw or kh)) / np.sqrt(c // groups * kh * (kw or kh))
    b = rng.standard_normal(o)
    return _f32(x), {"w.weight": _f32(wt), "w.bias": _f32(b)}


@pytest.mark.parametrize("relu", [False, True], ids=["no-relu", "relu"])
@pytest.mark.parametrize("noncontiguous", [False, True], ids=["contiguous", "strided"])
@pytest.mark.parametrize("case", list(CONV_CASES), ids=list(CONV_CASES))
def test_conv2d(alexnet_backend, case_rng, conformance_record, case, noncontiguous, relu):
    n, c, h, w, o, k, s, p, g = CONV_CASES[case]
    x, params = _conv_data(case_rng, n, c, h, w, o, k, g)
    _against_oracle(alexnet_backend, conformance_record, "conv2d", "conv2d", x, params, s, p, g, relu,
                    noncontiguous=noncontiguous,
                    context=f"case={case} x={x.shape} w={params['w.weight'].shape} stride={s} padding={p} groups={g} "
                    f"relu={relu} noncontiguous={noncontiguous}")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(1, 3), cg=st.integers(1, 5), og=st.integers(1, 5), groups=st.integers(1, 3),
    h=st.integers(1, 12), w=st.integers(1, 12), kh=st.integers(1, 5), kw=st.integers(1, 5),
    s=st.tuples(st.integers(1, 3), st.integers(1, 3)), p=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    seed=st.integers(0, 2**32 - 1),
)
def test_conv2d_shape_space(alexnet_backend, conformance_record, n, cg, og, groups, h, w, kh, kw, s, p, seed):
    """Hypothesis over the shape space: any stride, padding, (rectangular) kernel and group count that
    yields an output."""
    if h + 2 * p[0] < kh or w + 2 * p[1] < kw:
        return
    if "groups" in alexnet_backend.unsupported:  # one draw must not skip the whole search
        groups = 1
    x, params = _conv_data(np.random.default_rng(seed), n, cg * groups, h, w, og * groups, kh, groups, kw)
    _against_oracle(alexnet_backend, conformance_record, "conv2d", "conv2d", x, params, s, p, groups, True,
                    context=f"x={x.shape} w={params['w.weight'].shape} stride={s} padding={p} groups={groups} seed={seed}")


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
    _against_oracle(alexnet_backend, conformance_record, "max_pool2d", "max_pool2d", x, {}, k, s, ceil_mode,
                    noncontiguous=noncontiguous,
                    context=f"case={case} x={x.shape} kernel={k} stride={s} ceil_mode={ceil_mode} noncontiguous={noncontiguous}")


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
    _against_oracle(alexnet_backend, conformance_record, "lrn", "lrn", x, {}, size, alpha, beta, k,
                    noncontiguous=noncontiguous,
                    context=f"case={case} x={x.shape} size={size} alpha={alpha} beta={beta} k={k} noncontiguous={noncontiguous}")


# -- linear --------------------------------------------------------------------------------------

LINEAR_CASES = {"one-row": (1, 17, 5), "batch3": (3, 64, 33), "fc6-shape": (2, 9216, 128), "fc8-wide": (1, 4096, 1000)}


@pytest.mark.parametrize("relu", [False, True], ids=["no-relu", "relu"])
@pytest.mark.parametrize("noncontiguous", [False, True], ids=["contiguous", "strided"])
@pytest.mark.parametrize("case", list(LINEAR_CASES), ids=list(LINEAR_CASES))
def test_linear(alexnet_backend, case_rng, conformance_record, case, noncontiguous, relu):
    n, fi, fo = LINEAR_CASES[case]
    x = _f32(case_rng.standard_normal((n, fi)))
    params = {"w.weight": _f32(case_rng.standard_normal((fo, fi)) / np.sqrt(fi)), "w.bias": _f32(case_rng.standard_normal(fo))}
    _against_oracle(alexnet_backend, conformance_record, "linear", "linear", x, params, relu, noncontiguous=noncontiguous,
                    context=f"case={case} x={x.shape} w={(fo, fi)} relu={relu} noncontiguous={noncontiguous}")


# -- the ablations' activations (Array API glue on the backend's namespace) -------------------------

#: id: (shape, scale): maps and features, around zero and far into saturation (|x| up to ~200,
#: where float32's exp(-x) overflows and the sigmoid must still be finite).
ACTIVATION_CASES = {"map": ((2, 5, 7, 6), 3.0), "features": ((3, 33), 1.0), "saturated": ((2, 4, 5, 5), 50.0)}


def _activation_input(rng, case: str) -> np.ndarray:
    shape, scale = ACTIVATION_CASES[case]
    return _f32(scale * rng.standard_normal(shape))


@pytest.mark.parametrize("name", ["tanh", "sigmoid"])
@pytest.mark.parametrize("case", list(ACTIVATION_CASES), ids=list(ACTIVATION_CASES))
def test_activation(alexnet_backend, case_rng, conformance_record, case, name):
    """tanh and the sigmoid (the ablations' alternatives to ReLU), finite everywhere."""
    x = _activation_input(case_rng, case)
    _against_oracle(alexnet_backend, conformance_record, "activation", "activation", x, {}, name,
                    context=f"case={case} x={x.shape} name={name}")


# -- what ops refuse ---------------------------------------------------------------------------------

_W = {"w.weight": (4, 3, 3, 3), "w.bias": (4,)}
#: id: (op, x shape (canonical), weight shapes (canonical), arguments, message pattern)
BAD_ARGUMENTS = {
    "conv2d-channels": ("conv2d", (1, 5, 8, 8), _W, (1, 1, 1, False), r"\[conv2d\] x: expected 3 channels"),
    "conv2d-stride-0": ("conv2d", (1, 3, 8, 8), _W, (0, 1, 1, False), r"\[conv2d\] stride: expected an int >= 1"),
    "conv2d-padding-negative": ("conv2d", (1, 3, 8, 8), _W, (1, (1, -1), 1, False), r"\[conv2d\] padding: expected an int >= 0"),
    "conv2d-groups": ("conv2d", (1, 6, 8, 8), {"w.weight": (4, 2, 3, 3), "w.bias": (4,)}, (1, 1, 3, False),
                      r"\[conv2d\] groups: expected a divisor of w's 4 output channels, got 3"),
    "conv2d-kernel-larger": ("conv2d", (1, 3, 2, 2), {"w.weight": (4, 3, 5, 5), "w.bias": (4,)}, (1, 0, 1, False),
                             r"\[conv2d\] x: expected a padded map at least as large as the kernel 5x5, got 2x2"),
    "conv2d-bias": ("conv2d", (1, 3, 8, 8), {"w.weight": (4, 3, 3, 3), "w.bias": (5,)}, (1, 1, 1, False),
                    r"\[conv2d\] b: expected shape \(4,\) or None, got \(5,\)"),
    "conv2d-relu": ("conv2d", (1, 3, 8, 8), _W, (1, 1, 1, "yes"), r"\[conv2d\] relu: expected a bool"),
    "max_pool2d-kernel-0": ("max_pool2d", (1, 2, 8, 8), {}, ((0, 3), 2, False), r"\[max_pool2d\] kernel: expected an int >= 1"),
    "max_pool2d-map-smaller": ("max_pool2d", (1, 2, 2, 5), {}, (3, 2, False),
                               r"\[max_pool2d\] x: expected a map at least as large as the kernel 3x3, got 2x5"),
    "lrn-size-0": ("lrn", (1, 4, 3, 3), {}, (0, 1e-4, 0.75, 1.0), r"\[lrn\] size: expected a positive int, got 0"),
    "lrn-alpha-inf": ("lrn", (1, 4, 3, 3), {}, (5, float("inf"), 0.75, 1.0), r"\[lrn\] alpha: expected a finite real"),
    "linear-features": ("linear", (2, 5), {"w.weight": (3, 6), "w.bias": (3,)}, (False,), r"\[linear\] x: expected 6 features"),
    "linear-rank": ("linear", (2, 6, 1, 1), {"w.weight": (3, 6), "w.bias": (3,)}, (False,), r"\[linear\] x: expected a rank-2 array"),
}


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS), ids=list(BAD_ARGUMENTS))
def test_ops_reject_bad_arguments(alexnet_backend, case):
    """A clear ``ValueError`` prefixed by the op, naming what was expected and what came (DESIGN.md §6)."""
    op, shape, weights, args, match = BAD_ARGUMENTS[case]
    native = alexnet_backend.prepare({name: np.ones(s, np.float32) for name, s in weights.items()})
    x = _to_native(alexnet_backend, np.ones(shape, np.float32), False)
    with pytest.raises(ValueError, match=match):
        getattr(ops, op)(alexnet_backend, x, *native.values(), *args)


def test_ops_reject_foreign_arrays(alexnet_backend):
    """An array of another namespace or dtype is a ``TypeError`` that says what the backend takes."""
    be = alexnet_backend
    host = np.ones((1, 2, 3, 3), np.float32)
    foreign = [[[[1.0]]]]
    if be.xp is not array_namespace(host):  # a NumPy array is foreign to this backend
        foreign = host
    for x in (foreign, host.tolist()):
        with pytest.raises(TypeError, match=r"\[lrn\] x: expected an array of the .* backend's namespace"):
            ops.lrn(be, x, 5, 1e-4, 0.75, 1.0)
    wrong = be.xp.astype(_to_native(be, np.ones((1, 2, 3, 3), np.float32), False), be.xp.int32)
    with pytest.raises(TypeError, match=r"\[lrn\] x: expected dtype \w*float"):
        ops.lrn(be, wrong, 5, 1e-4, 0.75, 1.0)


# -- NaN and infinities ----------------------------------------------------------------------------------

#: id: (op, x shape, weight shapes, arguments): the conv cases reach every conv algorithm a backend
#: may pick by shape (3x3 and 5x5 stride 1, 11x11 stride 4).
NONFINITE_CASES = {
    "conv2d-3x3-g2": ("conv2d", (2, 4, 9, 9), {"w.weight": (8, 2, 3, 3), "w.bias": (8,)}, (1, 1, 2, True)),
    "conv2d-5x5": ("conv2d", (1, 4, 9, 9), {"w.weight": (8, 4, 5, 5), "w.bias": (8,)}, (1, 2, 1, False)),
    "conv2d-11x11-s4": ("conv2d", (1, 3, 23, 23), {"w.weight": (8, 3, 11, 11), "w.bias": (8,)}, (4, 0, 1, False)),
    "max_pool2d-ceil": ("max_pool2d", (2, 3, 9, 9), {}, (3, 2, True)),
    "lrn": ("lrn", (2, 7, 4, 4), {}, (5, 0.5, 0.75, 2.0)),
    "linear": ("linear", (3, 16), {"w.weight": (5, 16), "w.bias": (5,)}, (True,)),
}


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf - inf is the point here
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("case", list(NONFINITE_CASES), ids=list(NONFINITE_CASES))
def test_nonfinite(alexnet_backend, case_rng, conformance_record, case, value):
    """NaN and ±inf inputs give NaN and ±inf exactly where the float64 reference has them (DESIGN.md §5);
    the finite elements agree to the op's tolerance."""
    op, shape, weights, args = NONFINITE_CASES[case]
    x = case_rng.standard_normal(shape)
    # one element at a fixed place (the middle of the flattened input), one anywhere else
    x.flat[[x.size // 2, (x.size // 2 + 1 + case_rng.integers(x.size - 1)) % x.size]] = value
    params = {name: _f32(case_rng.standard_normal(s) / 2) for name, s in weights.items()}
    _against_oracle(alexnet_backend, conformance_record, op, op, _f32(x), params, *args,
                    context=f"case={case} x={shape} with two elements {value}")


# -- the whole network -------------------------------------------------------------------------------

#: id: (variant, input size): every variant at its size, torchvision at two others, where the
#: adaptive average pool really pools (pool5 7x7 → 6x6) and repeats (2x2 → 6x6), and two ablated
#: tables that change every axis :data:`~alexnet_aa.architecture.ABLATIONS` has.
NETWORK_CASES = {
    "paper": ("paper", 227),
    "caffe": ("caffe", 227),
    "torchvision": ("torchvision", 224),
    "torchvision-256": ("torchvision", 256),
    "torchvision-100": ("torchvision", 100),
    # ablated tables (alexnet-aa ablate) at the reduced size their runs train at
    "paper-ablated": ("paper+tanh+no-overlap+input=99", 99),
    "caffe-ablated": ("caffe+sigmoid+no-lrn+groups=1+dropout=0.3+input=99", 99),
}


def _network(backend, record, rng, case, batch=2, check="network"):
    __tracebackhide__ = True
    variant, size = NETWORK_CASES[case]
    weights = he_weights(get_architecture(variant), rng)
    x = _f32(rng.standard_normal((batch, 3, size, size)))
    model = AlexNet(variant, backend, weights=weights)
    got = {k: np.asarray(backend.to_host(v)) for k, v in model.layers(x).items()}
    ref_model = AlexNet(variant, oracle(), weights=_stored_params(backend, weights))
    want = {k: np.asarray(v) for k, v in ref_model.layers(as_stored(backend, x)).items()}
    per_layer = ", ".join(f"{k}={relative_error(got[k], want[k]):.1e}" for k in want)
    context = f"case={case} x={x.shape} per-layer errors: {per_layer}"
    logits, ref = got["fc8"], want["fc8"]
    _check(backend, record, check, logits, ref, context, tol_check="network")
    decided = decisive_rows(ref, tolerance(backend, "network"))
    assert decided.any() or tolerance(backend, "network") > TOP1_REQUIRED_UP_TO, (
        f"no row of the reference has a decisive top-1 margin: {np.sort(ref, axis=1)[:, -2:]}")
    assert np.array_equal(logits.argmax(1)[decided], ref.argmax(1)[decided]), (
        f"[network] backend={backend.name} top-1 {logits.argmax(1)} != reference {ref.argmax(1)} ({context})"
    )


@pytest.mark.parametrize("case", list(NETWORK_CASES), ids=list(NETWORK_CASES))
def test_network(alexnet_backend, case_rng, conformance_record, case):
    """Logits within the network tolerance, no stray NaN, and the same top-1 class wherever the
    reference's top-1 margin is larger than the tolerance allows to flip."""
    _network(alexnet_backend, conformance_record, case_rng, case)


@pytest.mark.parametrize("case", ["paper", "torchvision-100"])
def test_network_float64(alexnet_backend_float64, case_rng, conformance_record, case):
    """The backend built with ``dtype="float64"`` agrees to the float64 tolerances (skipped, with the
    reason, where it declares float64 unsupported)."""
    _network(alexnet_backend_float64, conformance_record, case_rng, case, batch=1, check="network-float64")


def test_predict(alexnet_backend, case_rng, conformance_record):
    """``predict`` — softmax, argsort and take on the backend's namespace — gives int64 classes best
    first, the reference's top-1 where it is decisive, and the reference's probabilities (every
    class, compared class by class) to the network tolerance."""
    variant, size = NETWORK_CASES["torchvision-100"]
    weights = he_weights(get_architecture(variant), case_rng)
    x = _f32(case_rng.standard_normal((4, 3, size, size)))
    model = AlexNet(variant, alexnet_backend, weights=weights)
    ref = AlexNet(variant, oracle(), weights=_stored_params(alexnet_backend, weights))
    top5 = model.predict(x, top=5)
    assert top5.indices.dtype == np.int64 and top5.indices.shape == top5.probabilities.shape == (4, 5)
    got, want = model.predict(x, top=model.arch.num_classes), ref.predict(as_stored(alexnet_backend, x), top=ref.arch.num_classes)
    assert np.array_equal(top5.indices, got.indices[:, :5]), "top=5 is not the first five of the full ranking"
    assert np.all(np.diff(got.probabilities, axis=1) <= 0), "probabilities are not sorted best first"
    p = want.probabilities
    decided = (p[:, 0] - p[:, 1]) > 10 * tolerance(alexnet_backend, "network")
    assert decided.any() or tolerance(alexnet_backend, "network") > TOP1_REQUIRED_UP_TO, (
        f"no row of the reference has a decisive top-1 margin: {p[:, :2]}")
    assert np.array_equal(got.indices[decided, 0], want.indices[decided, 0]), (got.indices[:, 0], want.indices[:, 0])

    def by_class(pred):
        return np.take_along_axis(np.asarray(pred.probabilities), np.argsort(pred.indices, axis=1), axis=1)

    _check(alexnet_backend, conformance_record, "predict", by_class(got), by_class(want),
           f"variant={variant} x={x.shape} softmax probabilities of every class", tol_check="network")


def test_batch_independence(alexnet_backend, case_rng, conformance_record):
    """Rows of a batch are independent (DESIGN.md §7): a batch split in two and concatenated gives
    the logits of the whole batch, to within the network tolerance (kernels may block GEMMs by
    their row count, so float32 rounding may differ; the math may not)."""
    weights = he_weights(get_architecture("torchvision"), case_rng)
    x = _f32(case_rng.standard_normal((3, 3, 224, 224)))
    model = AlexNet("torchvision", alexnet_backend, weights=weights)
    whole = np.asarray(alexnet_backend.to_host(model(x)))
    parts = np.concatenate([np.asarray(alexnet_backend.to_host(model(x[i:j]))) for i, j in ((0, 1), (1, 3))])
    err, tol = relative_error(parts, whole), tolerance(alexnet_backend, "network")
    conformance_record("batch-split", f"x={x.shape} split (0:1, 1:3) against the whole batch", err, tol)
    assert err <= tol, f"[network] backend={alexnet_backend.name}: batch split changes the logits by {err:.2e} > {tol:.0e}"


# -- the backward twins ------------------------------------------------------------------------------
#
# Each backward case runs the forward on the float64 reference, then the backward twin on both sides
# with the reference's output y (so both see the same ReLU masks and pooling maxima) and the same
# random dy, and compares dx, dw and db in the canonical layouts.


def run_backward(backend: Backend, op: str, x, params: dict, args: tuple, y, dy, need_dx: bool = True,
                 noncontiguous: bool = False) -> tuple:
    """``ops.<op>_backward`` on host NCHW data; ``(dx, dw, db)`` as canonical host arrays (``dw``/``db``
    ``None`` for the ops without weights, ``dx`` ``None`` when not asked for)."""
    native = list(backend.prepare(params).values())
    x_n, y_n = _to_native(backend, x, noncontiguous), _to_native(backend, y, False)
    dy_n = _to_native(backend, dy, noncontiguous)
    if op == "conv2d":
        grads = ops.conv2d_backward(backend, x_n, native[0], y_n, dy_n, *args, need_dx)
    elif op == "activation":  # the element-wise twin needs its output only
        grads = (ops.activation_backward(backend, y_n, dy_n, *args), None, None)
    elif op == "linear":
        grads = ops.linear_backward(backend, x_n, native[0], y_n, dy_n, *args, need_dx)
    else:
        grads = (getattr(ops, f"{op}_backward")(backend, x_n, y_n, dy_n, *args), None, None)
    dx, dw, db = (None if g is None else np.asarray(backend.to_host(g)) for g in grads)
    if dx is not None and dx.ndim == 4:
        dx = dx.transpose(layouts.permutation(backend.layout, layouts.CANONICAL))
    if dw is not None:
        dw = layouts.weights_from({"w": dw}, backend.conv_weight_layout, backend.linear_weight_layout)["w"]
    return dx, dw, db


def _backward_against_oracle(backend, record, rng, op, x, params, args, *, context, need_dx=True, noncontiguous=False):
    __tracebackhide__ = True
    require_training(backend, f"{op}_backward")
    y = run_op(oracle(), op, x.astype(np.float64), _f64(params), *args)  # the forward takes the same arguments
    dy = rng.standard_normal(y.shape)
    want = run_backward(oracle(), op, x.astype(np.float64), _f64(params), args, y, dy, need_dx)
    got = run_backward(backend, op, x, params, args, _f32(y), _f32(dy), need_dx, noncontiguous)
    for what, g, w in zip(("dx", "dw", "db"), got, want):
        if w is not None or g is not None:
            _check(backend, record, f"{op}_backward", g, w, f"{what} of {context}")


@pytest.mark.parametrize("relu", [False, True], ids=["no-relu", "relu"])
@pytest.mark.parametrize("case", list(CONV_CASES), ids=list(CONV_CASES))
def test_conv2d_backward(alexnet_backend, case_rng, conformance_record, case, relu):
    """dx, dw and db of every conv case, on strided dy too (the first layer's ``need_dx=False`` path on paper-conv1)."""
    n, c, h, w, o, k, s, p, g = CONV_CASES[case]
    x, params = _conv_data(case_rng, n, c, h, w, o, k, g)
    _backward_against_oracle(alexnet_backend, conformance_record, case_rng, "conv2d", x, params, (s, p, g, relu),
                             need_dx=case != "paper-conv1", noncontiguous=relu,
                             context=f"case={case} x={x.shape} w={params['w.weight'].shape} stride={s} padding={p} "
                             f"groups={g} relu={relu}")


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(1, 3), cg=st.integers(1, 4), og=st.integers(1, 4), groups=st.integers(1, 3),
    h=st.integers(1, 10), w=st.integers(1, 10), kh=st.integers(1, 5), kw=st.integers(1, 5),
    s=st.tuples(st.integers(1, 3), st.integers(1, 3)), p=st.tuples(st.integers(0, 3), st.integers(0, 3)),
    seed=st.integers(0, 2**32 - 1),
)
def test_conv2d_backward_shape_space(alexnet_backend, conformance_record, n, cg, og, groups, h, w, kh, kw, s, p, seed):
    """Hypothesis over the backward's shape space: strides that leave rows unread, padding wider than the kernel."""
    try:
        require_training(alexnet_backend, "conv2d_backward")
    except UnsupportedError as exc:  # a skip, not an error for Hypothesis to shrink
        pytest.skip(str(exc))
    if h + 2 * p[0] < kh or w + 2 * p[1] < kw:
        return
    if "groups" in alexnet_backend.unsupported:
        groups = 1
    rng = np.random.default_rng(seed)
    x, params = _conv_data(rng, n, cg * groups, h, w, og * groups, kh, groups, kw)
    _backward_against_oracle(alexnet_backend, conformance_record, rng, "conv2d", x, params, (s, p, groups, True),
                             context=f"x={x.shape} w={params['w.weight'].shape} stride={s} padding={p} groups={groups} seed={seed}")


@pytest.mark.parametrize("data", ["normal", "ties"])
@pytest.mark.parametrize("ceil_mode", [False, True], ids=["floor", "ceil"])
@pytest.mark.parametrize("case", list(POOL_CASES), ids=list(POOL_CASES))
def test_max_pool2d_backward(alexnet_backend, case_rng, conformance_record, case, ceil_mode, data):
    """Each window's gradient goes to its first maximum (row-major): ``ties`` draws from {-1, 0, 1},
    so most windows hold several (and comes as strided ``x`` and ``dy``)."""
    n, c, h, w, k, s = POOL_CASES[case]
    x = case_rng.standard_normal((n, c, h, w)) if data == "normal" else case_rng.integers(-1, 2, (n, c, h, w))
    _backward_against_oracle(alexnet_backend, conformance_record, case_rng, "max_pool2d", _f32(x), {}, (k, s, ceil_mode),
                             noncontiguous=data == "ties",
                             context=f"case={case} x={x.shape} kernel={k} stride={s} ceil_mode={ceil_mode} data={data}")


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_max_pool2d_backward_nonfinite(alexnet_backend, case_rng, conformance_record, value):
    """A window holding NaN has NaN as its maximum, and its gradient goes to the first NaN (the
    first-occurrence argmax's rule, as for ties); ±inf is an ordinary maximum. Ceil-mode windows."""
    x = case_rng.standard_normal((2, 3, 9, 9))
    x.flat[[x.size // 2, (x.size // 2 + 1 + case_rng.integers(x.size - 1)) % x.size]] = value
    x[1, 2, 4:6, 4:6] = value  # several in one window: only the first takes the gradient
    _backward_against_oracle(alexnet_backend, conformance_record, case_rng, "max_pool2d", _f32(x), {}, ((3, 3), (2, 2), True),
                             context=f"x={x.shape} with elements {value}, kernel=3 stride=2 ceil_mode=True")


@pytest.mark.parametrize("noncontiguous", [False, True], ids=["contiguous", "strided"])
@pytest.mark.parametrize("case", list(LRN_CASES), ids=list(LRN_CASES))
def test_lrn_backward(alexnet_backend, case_rng, conformance_record, case, noncontiguous):
    """The transposed window (odd and even sizes, batch != channels, windows wider than the channels)."""
    n, c, h, w, size, alpha, beta, k = LRN_CASES[case]
    x = _f32(3.0 * case_rng.standard_normal((n, c, h, w)))
    _backward_against_oracle(alexnet_backend, conformance_record, case_rng, "lrn", x, {}, (size, alpha, beta, k),
                             noncontiguous=noncontiguous,
                             context=f"case={case} x={x.shape} size={size} alpha={alpha} beta={beta} k={k} "
                             f"noncontiguous={noncontiguous}")


@pytest.mark.parametrize("relu", [False, True], ids=["no-relu", "relu"])
@pytest.mark.parametrize("case", list(LINEAR_CASES), ids=list(LINEAR_CASES))
def test_linear_backward(alexnet_backend, case_rng, conformance_record, case, relu):
    n, fi, fo = LINEAR_CASES[case]
    x = _f32(case_rng.standard_normal((n, fi)))
    params = {"w.weight": _f32(case_rng.standard_normal((fo, fi)) / np.sqrt(fi)), "w.bias": _f32(case_rng.standard_normal(fo))}
    _backward_against_oracle(alexnet_backend, conformance_record, case_rng, "linear", x, params, (relu,),
                             noncontiguous=relu, context=f"case={case} x={x.shape} w={(fo, fi)} relu={relu}")


@pytest.mark.parametrize("name", ["tanh", "sigmoid"])
@pytest.mark.parametrize("case", list(ACTIVATION_CASES), ids=list(ACTIVATION_CASES))
def test_activation_backward(alexnet_backend, case_rng, conformance_record, case, name):
    x = _activation_input(case_rng, case)
    _backward_against_oracle(alexnet_backend, conformance_record, case_rng, "activation", x, {}, (name,),
                             noncontiguous=case == "map", context=f"case={case} x={x.shape} name={name}")


def _gradient_case(rng, case: str, batch: int):
    variant, size = NETWORK_CASES[case]
    weights = he_weights(get_architecture(variant), rng)
    return variant, weights, _f32(rng.standard_normal((batch, 3, size, size))), rng.integers(0, 1000, batch)


#: (network case, dropout): every variant with dropout off and on, and torchvision where its adaptive
#: average pool has a backward to do.
GRADIENT_CASES = [(case, dropout) for case in ("paper", "caffe", "torchvision") for dropout in (False, True)]
GRADIENT_CASES += [("torchvision-100", True), ("paper-ablated", True), ("caffe-ablated", True)]


@pytest.mark.parametrize("case, dropout", GRADIENT_CASES,
                         ids=[f"{case}-{'dropout' if dropout else 'no-dropout'}" for case, dropout in GRADIENT_CASES])
def test_network_gradients(alexnet_backend, case_rng, conformance_record, case, dropout):
    """Training the whole network: every layer's backward inside it — on the activations and output
    gradients the backend itself saved (so a ReLU unit within float32 rounding of zero, whose
    gradient is discontinuous, cannot make a right backend look wrong), against the float64
    reference's backward of the same layer: ``dx`` and the weights' gradients, in the canonical
    layouts, with the host-drawn dropout masks — and the loss and its gradient on the backend's own
    logits (the logits themselves are ``test_network``'s)."""
    require_training(alexnet_backend, "gradients")
    variant, weights, x, labels = _gradient_case(case_rng, case, 2)
    seed = int(case_rng.integers(2**31)) if dropout else None
    model, ref = AlexNet(variant, alexnet_backend, weights=weights), AlexNet(variant, oracle(), weights=weights)
    loss, steps = model.backward_steps(x, labels, seed)
    o = oracle()
    first = next(steps)  # the last layer: its y are the logits, its dy the loss's gradient
    logits = o.asarray(np.asarray(alexnet_backend.to_host(first.y)))
    ref_loss, ref_dz = ops.softmax_cross_entropy(o, logits, labels)
    _check(alexnet_backend, conformance_record, "network_gradients", np.float64(loss), np.float64(ref_loss),
           f"case={case} loss", tol_check="network")
    _check(alexnet_backend, conformance_record, "network_gradients", np.asarray(alexnet_backend.to_host(first.dy)),
           np.asarray(ref_dz), f"case={case} the loss's gradient")
    arrays = {**ref.native_params, **{f"{name}.mask": o.asarray(mask) for name, mask in
                                     dropout_masks(ref.arch, len(labels), seed, x.shape[2]).items()}}
    names = [layer.name for layer in model.arch.layers]
    for step in itertools.chain([first], steps):
        index = names.index(step.layer.name)
        before = names[index - 1] if index else None

        def host(name, a):
            return x if name is None else np.asarray(alexnet_backend.to_host(model.canonical(name, a)))

        want_dx, want = step.layer.backward(ops.BackendOps(o), arrays, o.asarray(host(before, step.x)),
                                            o.asarray(host(step.layer.name, step.y)),
                                            o.asarray(host(step.layer.name, step.dy)), index > 0)
        context = f"case={case} dropout={dropout} layer={step.layer.name}"
        if index:
            _check(alexnet_backend, conformance_record, "network_gradients", host(before, step.dx), np.asarray(want_dx),
                   f"{context} dx")
        for name, grad in model.canonical_params(step.grads).items():
            _check(alexnet_backend, conformance_record, "network_gradients", grad, np.asarray(want[name]), f"{context} {name}")


@pytest.mark.parametrize("case", ["paper", "torchvision-100"])
def test_network_gradients_float64(alexnet_backend_float64, case_rng, conformance_record, case):
    """End to end in float64, where no ReLU unit sits within rounding of zero: ``model.gradients``
    against the reference's, every tensor, dropout on."""
    require_training(alexnet_backend_float64, "gradients")
    variant, weights, x, labels = _gradient_case(case_rng, case, 2)
    seed = int(case_rng.integers(2**31))
    loss, grads = AlexNet(variant, alexnet_backend_float64, weights=weights).gradients(x, labels, seed)
    ref_loss, ref_grads = AlexNet(variant, oracle(), weights=weights).gradients(x, labels, seed)
    _check(alexnet_backend_float64, conformance_record, "network_gradients", np.float64(loss), np.float64(ref_loss),
           f"case={case} loss", tol_check="network")
    for name, grad in grads.items():
        _check(alexnet_backend_float64, conformance_record, "network_gradients", grad, ref_grads[name], f"case={case} {name}")


def test_sgd_steps(alexnet_backend, case_rng, conformance_record):
    """Two ``model.train_step`` calls against the paper's rule computed on the host in float64 from
    the gradients the backend gives (``model.gradients`` at the weights before each step):
    :math:`v \\leftarrow \\mu v - \\lambda\\varepsilon w - \\varepsilon g,\\ w \\leftarrow w + v`,
    with Caffe's bias multipliers (lr ×2, no decay) and a weight decay large enough to matter; the
    update runs on the backend's own arrays. The second step, at a tenth of the rate, checks the
    momentum (PyTorch's rule would rescale it with the rate). Frozen layers (``model.freeze``) keep
    their bits."""
    require_training(alexnet_backend, "gradients")
    variant, weights, x, labels = _gradient_case(case_rng, "torchvision-100", 2)
    lr, momentum, decay = 1e-3, 0.9, 0.05
    model = AlexNet(variant, alexnet_backend, weights=weights)
    model.freeze("conv1")
    opt = SGD(lr, momentum, decay, bias_lr_mult=2.0, bias_decay_mult=0.0)
    before = {name: w.astype(np.float64) for name, w in weights.items()}
    velocity = dict.fromkeys(weights, 0.0)
    for step, opt.lr in ((1, lr), (2, lr / 10)):  # the rate drops: PyTorch's formula would scale the momentum too
        seed = int(case_rng.integers(2**31))
        _, grads = model.gradients(x, labels, seed)
        model.train_step(x, labels, opt, seed)
        after = model.state_dict()
        for name in weights:
            if name.startswith("conv1."):
                assert np.array_equal(after[name], weights[name]), f"{name} is frozen but changed in step {step}"
                continue
            bias = name.endswith(".bias")
            rate, rate_decay = opt.lr * (2.0 if bias else 1.0), 0.0 if bias else decay
            velocity[name] = momentum * velocity[name] - rate_decay * rate * before[name] - rate * grads[name]
            _check(alexnet_backend, conformance_record, "sgd", after[name] - before[name], velocity[name],
                   f"step={step} {name} (lr={opt.lr:g}, momentum={momentum}, weight_decay={decay}, bias multipliers 2 and 0)")
        before = {name: w.astype(np.float64) for name, w in after.items()}
