"""The op layer (alexnet_aa.ops) and the layouts (alexnet_aa.layouts): one validation, one meaning of each layout."""

from __future__ import annotations

import numpy as np
import pytest

from alexnet_aa import BackendError, UnsupportedError, get_architecture, layouts, ops
from alexnet_aa.backend import protocol_problems
from alexnet_aa.reference import ArrayAPIBackend
from alexnet_aa.testing import relative_error
from alexnet_aa.weights import he_weights


class Limited(ArrayAPIBackend):
    """The reference, declaring every optional capability missing."""

    name = "limited"
    unsupported = {"groups": "one group only", "ceil_mode": "floor only", "lrn_even_size": "odd sizes only"}


class Shrinking(ArrayAPIBackend):
    """A broken backend: its pool drops the last output row."""

    name = "shrinking"

    def max_pool2d(self, x, kernel, stride, ceil_mode):
        return super().max_pool2d(x, kernel, stride, ceil_mode)[:, :, :-1]


@pytest.fixture(scope="module")
def be():
    return ArrayAPIBackend()


def _x(be, *shape):
    return be.asarray(np.random.default_rng(0).standard_normal(shape))


def test_pair_normalises_and_names_the_op():
    assert ops.pair(3, "kernel", "max_pool2d", 1) == (3, 3)
    assert ops.pair((3, np.int64(2)), "kernel", "max_pool2d", 1) == (3, 2)
    for bad in (0, (0, 3), (1, 2, 3), 2.0, True, "3"):
        with pytest.raises(ValueError, match=r"^\[max_pool2d\] kernel: expected an int >= 1 or a pair of them, got "):
            ops.pair(bad, "kernel", "max_pool2d", 1)


def test_normalised_arguments_reach_the_backend(be, monkeypatch):
    seen = {}
    monkeypatch.setattr(ArrayAPIBackend, "max_pool2d",
                        lambda self, x, kernel, stride, ceil_mode: seen.update(k=kernel, s=stride, c=ceil_mode) or
                        x[:, :, :3, :3])
    ops.max_pool2d(be, _x(be, 1, 2, 7, 7), np.int32(3), 2, np.bool_(False))
    assert seen == {"k": (3, 3), "s": (2, 2), "c": False} and type(seen["c"]) is bool


@pytest.mark.parametrize("call, error, match", [
    (lambda be: ops.lrn(be, _x(be, 1, 4, 3, 3), 5, float("nan"), 0.75, 1.0), ValueError, r"^\[lrn\] alpha: expected a finite real number, got nan$"),
    (lambda be: ops.lrn(be, _x(be, 1, 4, 3, 3), True, 1e-4, 0.75, 1.0), ValueError, r"^\[lrn\] size: expected a positive int, got True$"),
    (lambda be: ops.lrn(be, _x(be, 4, 3), 5, 1e-4, 0.75, 1.0), ValueError, r"^\[lrn\] x: expected a rank-4 array \(N, C, H, W\) in the backend's NCHW layout, got shape \(4, 3\)$"),
    (lambda be: ops.lrn(be, np.ones((1, 4, 3, 3), np.float64), 5, 1e-4, 0.75, 1.0), TypeError, r"^\[lrn\] x: expected dtype float32 \(the backend's\), got float64$"),
    (lambda be: ops.linear(be, _x(be, 2, 5), be.asarray(np.ones((3, 5, 1))), None), ValueError, r"^\[linear\] w: expected a rank-2 array \(O, I\) in the backend's OI linear weight layout, got shape \(3, 5, 1\)$"),
    (lambda be: ops.dropout(be, _x(be, 2, 5), 1.0), ValueError, r"^\[dropout\] p: expected a probability in \[0, 1\), got 1.0$"),
    (lambda be: ops.adaptive_avg_pool2d(be, _x(be, 1, 2, 5, 5), 0), ValueError, r"^\[adaptive_avg_pool2d\] output_size: expected a positive int, got 0$"),
])
def test_one_message_style(be, call, error, match):
    """``[op] what: expected …, got …`` for every argument of every op."""
    with pytest.raises(error, match=match):
        call(be)


def test_unsupported_capabilities_are_typed_errors_naming_the_reason():
    be = Limited()
    assert protocol_problems(Limited) == []
    w = be.prepare({"w": np.ones((4, 2, 3, 3), np.float32)})["w"]
    with pytest.raises(UnsupportedError, match=r"^\[conv2d\] the 'limited' backend does not support groups=2: one group only$") as info:
        ops.conv2d(be, _x(be, 1, 4, 5, 5), w, None, 1, 1, 2)
    assert info.value.capability == "groups" and isinstance(info.value, NotImplementedError)
    with pytest.raises(UnsupportedError, match=r"does not support an even window size \(4\): odd sizes only"):
        ops.lrn(be, _x(be, 1, 4, 3, 3), 4, 1e-4, 0.75, 1.0)
    with pytest.raises(UnsupportedError, match=r"ceil_mode=True where it differs from floor mode \(54x54 → 27x27\)"):
        ops.max_pool2d(be, _x(be, 1, 2, 54, 54), 3, 2, True)
    # where both roundings agree the windows are the same: a backend without ceil mode runs it
    assert ops.max_pool2d(be, _x(be, 1, 2, 55, 55), 3, 2, True).shape == (1, 2, 27, 27)


def test_protocol_problems_name_each_bad_declaration():
    class Bad(ArrayAPIBackend):
        layout = "CHWN"
        conv_weight_layout = "OIHX"
        linear_weight_layout = "IOX"
        unsupported = {"fp8": "", "groups": 3}

    problems = "\n".join(protocol_problems(Bad))
    for needle in ("layout: expected one of ('NCHW', 'NHWC'), got 'CHWN'", "conv_weight_layout: expected an order of the letters 'OIHW', got 'OIHX'",
                   "linear_weight_layout: expected 'OI' or 'IO', got 'IOX'", "capabilities among", "got 'fp8'",
                   "unsupported['fp8']: expected the reason as a non-empty string", "unsupported['groups']"):
        assert needle in problems


def test_a_wrong_shape_from_a_backend_is_caught():
    be = Shrinking()
    with pytest.raises(BackendError, match=r"^\[max_pool2d\] the 'shrinking' backend returned shape \(1, 2, 2, 3\), expected \(1, 2, 3, 3\)$"):
        ops.max_pool2d(be, _x(be, 1, 2, 7, 7), 3, 2, False)


@pytest.mark.parametrize("h, size", [(13, 6), (7, 6), (6, 6), (2, 6), (5, 3)])
def test_adaptive_avg_pool2d_matches_torch_in_both_layouts(h, size):
    torch = pytest.importorskip("torch")
    from alexnet_aa import get_backend

    x = np.random.default_rng(h).standard_normal((2, 3, h, h + 1)).astype(np.float32)
    want = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x), size).numpy()
    for be in (ArrayAPIBackend(), get_backend("numpy")):
        native = layouts.to_layout(be.asarray(x), be.layout, be.xp)
        got = layouts.to_canonical(ops.adaptive_avg_pool2d(be, native, size), be.layout, be.xp)
        assert relative_error(np.asarray(got), want) < 1e-6, (be.layout, h, size)


# -- layouts ------------------------------------------------------------------------


def test_permutations_round_trip():
    x = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    for layout in ("NHWC", "NCHW", "HWCN"):
        there = x.transpose(layouts.permutation("NCHW", layout))
        assert there.shape == tuple(dict(zip("NCHW", x.shape))[a] for a in layout)
        assert np.array_equal(there.transpose(layouts.permutation(layout, "NCHW")), x)
    with pytest.raises(ValueError, match="not orders of the same distinct axes"):
        layouts.permutation("NCHW", "NCH")


@pytest.mark.parametrize("layout", ["OIHW", "HWIO", "OHWI", "IHWO"])
def test_conv_weight_dims_read_every_declared_layout(layout):
    w = np.zeros((7, 2, 3, 5), np.float32)  # O, C/g, K_h, K_w, all different
    native = layouts.weights_to({"w": w}, layout, "OI")["w"]
    assert native.flags.c_contiguous and layouts.conv_weight_dims(native.shape, layout) == (7, 2, 3, 5)
    assert layouts.linear_weight_dims(layouts.weights_to({"w": np.zeros((6, 9))}, layout, "IO")["w"].shape, "IO") == (6, 9)


def test_fc6_permutation_makes_the_nhwc_flatten_equal_the_canonical_one():
    """pool5 flattened in (H, W, C) order times the permuted fc6 = pool5 flattened in (C, H, W) times fc6."""
    arch = get_architecture("paper")
    params = he_weights(arch, 0)
    pool5 = np.random.default_rng(1).standard_normal((2, 256, 6, 6)).astype(np.float32)
    canonical = pool5.reshape(2, -1) @ params["fc6.weight"].T
    permuted = layouts.fc6_to_flatten_order(params, arch, "NHWC")
    nhwc = pool5.transpose(0, 2, 3, 1).reshape(2, -1) @ permuted["fc6.weight"].T
    assert relative_error(nhwc, canonical) < 1e-6
    assert layouts.fc6_to_flatten_order(params, arch, "NCHW")["fc6.weight"] is params["fc6.weight"]
    import array_api_compat.numpy as xp

    flat = pool5.transpose(0, 2, 3, 1).reshape(2, -1)
    assert np.array_equal(layouts.flat_to_canonical(flat, (256, 6, 6), "NHWC", xp), pool5.reshape(2, -1))


def test_model_and_torch_oracle_apply_the_same_table():
    """Every layer spec applies itself through an op set; the model's and the torch oracle's are two of them."""
    from alexnet_aa.testing.torch_reference import TorchOps

    forward = {m for m in vars(ops.BackendOps) if not m.startswith("_") and not m.endswith("_backward")}
    assert forward == {m for m in vars(TorchOps) if not m.startswith("_")}


def test_weights_and_biases_are_checked_like_activations(be):
    x = _x(be, 1, 3, 5, 5)
    w = be.prepare({"w": np.ones((4, 3, 3, 3), np.float32)})["w"]
    with pytest.raises(TypeError, match=r"^\[conv2d\] w: expected dtype float32 \(the backend's\), got float64$"):
        ops.conv2d(be, x, np.ones((4, 3, 3, 3)), None)
    with pytest.raises(TypeError, match=r"^\[conv2d\] b: expected an array of the 'array-api' backend's namespace .* got builtins.list$"):
        ops.conv2d(be, x, w, [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match=r"^\[conv2d\] w: expected sizes >= 1 \(O, C/g, K_h, K_w\), got \(4, 3, 0, 0\)$"):
        ops.conv2d(be, x, be.asarray(np.ones((4, 3, 0, 0))), None)
    with pytest.raises(ValueError, match=r"^\[linear\] w: expected sizes >= 1 \(F_out, F_in\), got \(0, 5\)$"):
        ops.linear(be, _x(be, 2, 5), be.asarray(np.ones((0, 5))), None)


def test_a_wrong_dtype_from_a_backend_is_caught():
    class Widening(ArrayAPIBackend):
        def lrn(self, x, size, alpha, beta, k):
            return self.xp.astype(super().lrn(x, size, alpha, beta, k), self.xp.float64)

    be = Widening()
    with pytest.raises(BackendError, match=r"^\[lrn\] the 'array-api' backend returned dtype float64, expected float32$"):
        ops.lrn(be, _x(be, 1, 4, 3, 3), 5, 1e-4, 0.75, 1.0)


def test_ceil_mode_is_passed_only_where_it_changes_the_size(be, monkeypatch):
    seen = []
    real = ArrayAPIBackend.max_pool2d
    monkeypatch.setattr(ArrayAPIBackend, "max_pool2d", lambda self, *a: seen.append(a[-1]) or real(self, *a))
    ops.max_pool2d(be, _x(be, 1, 1, 55, 55), 3, 2, True)
    ops.max_pool2d(be, _x(be, 1, 1, 54, 54), 3, 2, True)
    assert seen == [False, True]


def test_float64_needs_a_dtype_option_or_a_reason():
    class NoDtype(ArrayAPIBackend):
        def __init__(self, namespace="numpy"):
            super().__init__(namespace)

    assert any("expected a dtype= option" in p for p in protocol_problems(NoDtype))
    NoDtype.unsupported = {"float64": "float32 hardware"}
    assert protocol_problems(NoDtype) == []
