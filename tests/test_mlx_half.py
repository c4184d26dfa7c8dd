"""The MLX backend's half precision (issue 16): ``MLXBackend(dtype="float16" | "bfloat16")``.

What the conformance suite does not check by itself: the constructor's errors, that every op returns
exactly the storage dtype (and casts nothing it should not), that the LRN runs in float32, what
``to_host`` gives back, that training is refused on a half instance, and that the float32 path is
bit for bit what it was. The accuracy of the half paths is the suite's (``--alexnet-backend
"mlx[dtype=float16]"``); its measurements are in ``docs/backends/mlx.md``.
"""

from __future__ import annotations

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core", reason="mlx is not installed: python -m pip install -e 'backends/mlx[cpu]'")

from alexnet_aa_mlx import lrn_metal
from alexnet_aa_mlx.backend import MLXBackend

from alexnet_aa import (
    SGD,
    AlexNet,
    UnsupportedError,
    get_architecture,
    get_backend,
    ops,
)
from alexnet_aa.weights import he_weights

HALF = ["float16", "bfloat16"]
ALL = ["float32", *HALF]


def _bf16_round(a: np.ndarray) -> np.ndarray:
    """float32 → the nearest bfloat16 (ties to even), as float32: an oracle independent of MLX."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16 << 16
    return u.astype(np.uint32).view(np.float32)


def _rounded(a: np.ndarray, dtype: str) -> np.ndarray:
    """``a`` rounded to ``dtype`` as NumPy holds it: float16 as float16, bfloat16 widened to float32."""
    a = np.asarray(a, dtype=np.float32)
    return {"float32": a, "float16": a.astype(np.float16), "bfloat16": _bf16_round(a)}[dtype]


def _host(a) -> np.ndarray:
    """An MLX array's values as float64 (bfloat16 too), without going through the backend."""
    return np.array(a.astype(mx.float32), dtype=np.float64)


@pytest.fixture(scope="module", params=ALL)
def backend(request):
    return MLXBackend(dtype=request.param)


# -- the constructor -------------------------------------------------------------------------------


def test_float64_names_the_declared_reason():
    with pytest.raises(UnsupportedError) as info:
        MLXBackend(dtype="float64")
    assert info.value.capability == "float64"
    assert MLXBackend.unsupported["float64"] in str(info.value)
    assert "'float32', 'float16' or 'bfloat16'" in str(info.value)


@pytest.mark.parametrize("dtype", ["float8", "half", "Float16", "", None, 16, np.float16, mx.float16])
def test_unknown_dtype_is_a_value_error(dtype):
    with pytest.raises(ValueError, match=r"^\[mlx\] dtype: expected 'float32', 'float16' or 'bfloat16', got ") as info:
        MLXBackend(dtype=dtype)
    assert repr(dtype) in str(info.value)


@pytest.mark.parametrize("dtype", HALF)
def test_half_instance_declares_itself_and_leaves_the_class_alone(dtype):
    be = get_backend("mlx", dtype=dtype)
    assert be.dtype == dtype and be.xp is mx
    assert set(be.unsupported) == {"float64", "training"}
    assert "float32 master weights" in be.unsupported["training"]
    assert be.unsupported["float64"] == MLXBackend.unsupported["float64"]
    # the class, and a float32 instance made afterwards, are untouched
    assert MLXBackend.dtype == "float32" and set(MLXBackend.unsupported) == {"float64"}
    plain = MLXBackend()
    assert plain.dtype == "float32" and "training" not in plain.unsupported
    facts = be.describe()
    assert facts["dtype"].startswith(f"{dtype} storage, inference only")
    assert "in float32" in facts["lrn"]
    assert plain.describe()["dtype"].startswith("float32")


# -- host transfer ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ALL)
def test_asarray_rounds_to_the_storage_dtype(dtype):
    be = MLXBackend(dtype=dtype)
    rng = np.random.default_rng(0)
    x32 = (rng.standard_normal((3, 5, 7)) * 100).astype(np.float32)
    want = _rounded(x32, dtype).astype(np.float64)
    native = getattr(mx, dtype)
    for source in (x32, x32.astype(np.float64), x32[:, ::-1, :], x32.tolist(), mx.array(x32)):
        a = be.asarray(source)
        assert a.dtype == native, (type(source), a.dtype)
        expected = want[:, ::-1, :] if isinstance(source, np.ndarray) and source.strides[1] < 0 else want
        np.testing.assert_array_equal(_host(a), expected)
    assert be.asarray(np.ones(3, np.float64)).dtype == native
    assert be.asarray(np.ones(3, np.float16)).dtype == native
    assert be.asarray(mx.ones(3, dtype=mx.bfloat16)).dtype == native
    same = be.asarray(mx.ones(3, dtype=native))
    assert be.asarray(same) is same  # already the storage dtype: no copy


@pytest.mark.parametrize("dtype, host_dtype", [("float32", np.float32), ("float16", np.float16), ("bfloat16", np.float32)])
def test_to_host_dtype_and_values(dtype, host_dtype):
    be = MLXBackend(dtype=dtype)
    x = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32) * 7
    y = be.to_host(be.asarray(x))
    assert isinstance(y, np.ndarray) and y.dtype == host_dtype and y.shape == x.shape
    np.testing.assert_array_equal(y, _rounded(x, dtype))  # bfloat16 widens to float32 exactly


# -- the ops return exactly the storage dtype -------------------------------------------------------


def _data(be, rng):
    x = be.asarray(rng.standard_normal((2, 9, 9, 4)).astype(np.float32))  # NHWC
    params = be.prepare({
        "conv.weight": (rng.standard_normal((6, 2, 3, 3)) / 3).astype(np.float32),  # OIHW, groups 2
        "conv.bias": rng.standard_normal(6).astype(np.float32),
        "fc.weight": (rng.standard_normal((5, 24)) / 5).astype(np.float32),
        "fc.bias": rng.standard_normal(5).astype(np.float32),
    })
    return x, params


def test_every_op_returns_the_storage_dtype(backend):
    be, native = backend, getattr(mx, backend.dtype)
    x, p = _data(be, np.random.default_rng(2))
    assert all(a.dtype == native for a in p.values())
    outputs = {}
    for relu in (False, True):
        for b in (p["conv.bias"], None):
            for compile_ in (True, False):
                be._compile = compile_
                try:
                    outputs[f"conv2d relu={relu} bias={b is not None} compile={compile_}"] = be.conv2d(
                        x, p["conv.weight"], b, (2, 1), (1, 0), 2, relu)
                finally:
                    be._compile = True
    outputs["max_pool2d floor"] = be.max_pool2d(x, (3, 3), (2, 2), False)
    outputs["max_pool2d ceil"] = be.max_pool2d(x[:, :8, :8], (3, 3), (2, 2), True)  # -inf padding
    outputs["lrn odd"] = be.lrn(x, 5, 0.5, 0.75, 2.0)
    outputs["lrn even"] = be.lrn(x, 4, 0.3, 0.6, 1.0)
    flat = mx.reshape(x[:, :2, :3], (2, 24))
    for relu in (False, True):
        outputs[f"linear relu={relu}"] = be.linear(flat, p["fc.weight"], p["fc.bias"], relu)
        outputs[f"linear relu={relu} no bias"] = be.linear(flat, p["fc.weight"], None, relu)
    wrong = {name: y.dtype for name, y in outputs.items() if y.dtype != native}
    assert not wrong, f"ops returning another dtype than {native}: {wrong}"
    # through the op layer, which checks it as well
    assert ops.conv2d(be, x, p["conv.weight"], p["conv.bias"], 1, 1, 2, True).dtype == native
    assert ops.max_pool2d(be, x, 3, 2, True).dtype == native
    assert ops.lrn(be, x, 5, 1e-4, 0.75, 1.0).dtype == native
    assert ops.linear(be, flat, p["fc.weight"], p["fc.bias"], True).dtype == native


@pytest.mark.parametrize("variant, size", [("caffe+input=99", 99), ("torchvision", 100)])
def test_every_layer_of_the_network_keeps_the_storage_dtype(backend, variant, size):
    """Each layer's output (LRN, adaptive average pool and flatten included) in the storage dtype,
    finite, and close to the float32 network's (a loose bound: the suite measures the real error)."""
    rng = np.random.default_rng(3)
    weights = he_weights(get_architecture(variant), rng)
    x = rng.standard_normal((1, 3, size, size)).astype(np.float32)
    native = getattr(mx, backend.dtype)
    got = AlexNet(variant, backend, weights=weights).layers(x)
    want = AlexNet(variant, MLXBackend(), weights=weights).layers(x)
    assert list(got) == list(want)
    for name, y in got.items():
        assert y.dtype == native, f"{name}: {y.dtype}"
        h, r = _host(y), _host(want[name])
        assert np.isfinite(h).all(), name
        err = np.linalg.norm(h - r) / np.linalg.norm(r)
        assert err < {"float32": 1e-6, "float16": 5e-3, "bfloat16": 5e-2}[backend.dtype], f"{name}: {err:.2e}"


# -- where float32 is used -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("size, alpha, beta, k", [(5, 0.5, 0.75, 2.0), (4, 2.0, 0.6, 1.0), (5, 5e-4, 0.75, 2.0)])
def test_half_lrn_is_float32_lrn_rounded_once(dtype, size, alpha, beta, k):
    """The half LRN is exactly the float32 LRN of the half input, rounded once to the storage dtype;
    a LRN computed in half precision (its window sum and power rounded) differs from it."""
    be, be32 = MLXBackend(dtype=dtype, lrn="composed"), MLXBackend(lrn="composed")
    x = be.asarray(3.0 * np.random.default_rng(4).standard_normal((2, 6, 5, 32)).astype(np.float32))
    got = be.lrn(x, size, alpha, beta, k)
    want = be32.lrn(x.astype(mx.float32), size, alpha, beta, k).astype(getattr(mx, dtype))
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(_host(got), _host(want))
    in_half = lrn_metal.lrn_composed(x, size, alpha, beta, k)  # what computing in the storage dtype gives
    assert in_half.dtype == x.dtype and not np.array_equal(_host(in_half), _host(want))


def test_the_metal_kernel_takes_float32_only():
    with pytest.raises(TypeError, match=r"\[lrn\] lrn_forward_nhwc_float32: expected a float32 x_nhwc .* got .*float16"):
        lrn_metal.lrn(mx.ones((1, 2, 2, 3), dtype=mx.float16), 5, 1e-4, 0.75, 1.0)


@pytest.mark.parametrize("dtype", HALF)
def test_conv_and_matmul_accumulate_in_float32(dtype):
    """K = 9216 products of ~1: accumulating in the half dtype stalls (float16 at 2048 or 4096,
    bfloat16 at 256); MLX's conv2d and matmul give the exact sum rounded once to the storage dtype
    (what docs/backends/mlx.md reports). Guards the claim the backend's docstring makes."""
    be = MLXBackend(dtype=dtype)
    rng = np.random.default_rng(5)
    x = be.asarray((1 + 0.01 * rng.standard_normal((8, 9216))).astype(np.float32))
    w = be.asarray((1 + 0.01 * rng.standard_normal((9216, 4))).astype(np.float32))
    exact = _host(x) @ _host(w)
    got = _host(be.linear(x, w, None, False))
    assert np.max(np.abs(got - exact) / exact) < {"float16": 2 ** -11, "bfloat16": 2 ** -8}[dtype] * 1.01
    conv = be.conv2d(mx.reshape(x, (8, 3, 3, 1024)), mx.reshape(mx.transpose(w), (4, 3, 3, 1024)), None,
                     (1, 1), (0, 0), 1, False)
    got = _host(conv).reshape(8, 4)
    assert np.max(np.abs(got - exact) / exact) < {"float16": 2 ** -11, "bfloat16": 2 ** -8}[dtype] * 1.01


# -- inference only -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", HALF)
def test_training_is_refused(dtype):
    be = MLXBackend(dtype=dtype)
    rng = np.random.default_rng(6)
    weights = he_weights(get_architecture("torchvision"), rng)
    model = AlexNet("torchvision", be, weights=weights)
    x = rng.standard_normal((1, 3, 100, 100)).astype(np.float32)
    before = np.asarray(be.to_host(model(x)))
    for call in (lambda: model.gradients(x, [3]), lambda: model.train_step(x, [3], SGD(0.01)),
                 lambda: model.gradients(x, [3], dropout_seed=1)):
        with pytest.raises(UnsupportedError) as info:
            call()
        assert info.value.capability == "training"
        message = str(info.value)
        assert f"dtype={dtype!r}" in message and "cannot train" in message and "train in float32" in message
    # nothing changed: the weights are intact and the model still runs
    np.testing.assert_array_equal(np.asarray(be.to_host(model(x))), before)
    assert all(np.array_equal(v, weights[k]) for k, v in model.state_dict().items())
    xn, p = _data(be, rng)
    y = be.conv2d(xn, p["conv.weight"], p["conv.bias"], (1, 1), (1, 1), 2, True)
    with pytest.raises(UnsupportedError, match=r"\[conv2d_backward\] .*cannot train"):
        ops.conv2d_backward(be, xn, p["conv.weight"], y, y, 1, 1, 2, True)


# -- float32 is what it was ------------------------------------------------------------------------------


def test_float32_ops_are_plain_mlx_float32_bit_for_bit():
    """The default instance and ``dtype="float32"`` give the same bits, and those are the bits of the
    plain ``mx`` calls the float32 backend made before half precision existed (no cast anywhere)."""
    default, explicit, half = MLXBackend(), MLXBackend(dtype="float32"), MLXBackend(dtype="float16")
    results = []
    for be in (default, explicit, half):
        x, p = _data(be, np.random.default_rng(8))
        conv = be.conv2d(x, p["conv.weight"], p["conv.bias"], (1, 1), (1, 1), 2, True)
        flat = mx.reshape(x[:, :2, :3], (2, 24))
        results.append([conv, be.max_pool2d(x, (3, 3), (2, 2), True), be.lrn(x, 5, 0.5, 0.75, 2.0),
                        be.linear(flat, p["fc.weight"], p["fc.bias"], True)])
    for a, b in zip(results[0], results[1]):
        assert a.dtype == b.dtype == mx.float32
        np.testing.assert_array_equal(np.array(a), np.array(b))
    assert not all(np.array_equal(_host(a), _host(c)) for a, c in zip(results[0], results[2]))
    # the same four ops written with plain mx calls in float32
    x, p = _data(default, np.random.default_rng(8))
    w = p["conv.weight"]
    conv = mx.maximum(mx.concatenate([mx.conv2d(x[..., :2], w[:3], padding=(1, 1)),
                                      mx.conv2d(x[..., 2:], w[3:], padding=(1, 1))], axis=-1) + p["conv.bias"], 0.0)
    flat = mx.reshape(x[:, :2, :3], (2, 24))
    plain = [conv, None, lrn_metal.lrn_composed(x, 5, 0.5, 0.75, 2.0),
             mx.maximum(mx.addmm(p["fc.bias"], flat, p["fc.weight"]), 0.0)]
    for name, a, b in zip(("conv2d", "max_pool2d", "lrn", "linear"), results[0], plain):
        if b is not None:
            np.testing.assert_array_equal(np.array(a), np.array(b), err_msg=name)


def test_float32_network_unchanged_by_half_instances():
    """A float32 model's logits are the same bits before and after half instances run in the process,
    and a default model's equal an explicit ``dtype="float32"`` one's."""
    rng = np.random.default_rng(9)
    weights = he_weights(get_architecture("torchvision"), rng)
    x = rng.standard_normal((2, 3, 100, 100)).astype(np.float32)
    model = AlexNet("torchvision", MLXBackend(), weights=weights)
    first = np.array(model(x))
    for dtype in HALF:
        AlexNet("torchvision", MLXBackend(dtype=dtype), weights=weights)(x)
    assert first.dtype == np.float32
    np.testing.assert_array_equal(np.array(model(x)), first)
    np.testing.assert_array_equal(np.array(AlexNet("torchvision", MLXBackend(dtype="float32"), weights=weights)(x)), first)


# -- predict: the core's host conversion ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_predict_on_half(dtype):
    rng = np.random.default_rng(10)
    weights = he_weights(get_architecture("torchvision"), rng)
    x = rng.standard_normal((2, 3, 100, 100)).astype(np.float32)
    got = AlexNet("torchvision", MLXBackend(dtype=dtype), weights=weights).predict(x, top=5)
    want = AlexNet("torchvision", MLXBackend(), weights=weights).predict(x, top=5)
    assert got.indices.dtype == np.int64 and got.indices.shape == (2, 5)
    np.testing.assert_allclose(got.probabilities.astype(np.float64)[:, 0], want.probabilities[:, 0], rtol=0.05)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_native_half_input(dtype):
    """An MLX array already in the storage dtype is a floating input (bfloat16 included) and runs as the
    host float32 of the same values does."""
    be = MLXBackend(dtype=dtype)
    model = AlexNet("torchvision", be, weights=he_weights(get_architecture("torchvision"), np.random.default_rng(11)))
    x = be.asarray(np.random.default_rng(12).standard_normal((2, 3, 64, 64)).astype(np.float32))
    np.testing.assert_array_equal(be.to_host(model(x)), be.to_host(model(be.to_host(x).astype(np.float32))))
    assert np.array_equal(model.predict(x).indices, model.predict(be.to_host(x).astype(np.float32)).indices)
