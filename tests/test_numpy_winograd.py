"""The numpy backend's Winograd F(2×2, 3×3) / F(2×2, 5×5) path (``alexnet_aa_numpy.winograd``):
the transforms are exact, the op agrees with the float64 reference where the path runs, and NaN or
±inf inputs and weights give what direct convolution gives."""

import numpy as np
import pytest

from alexnet_aa.testing import relative_error

nb = pytest.importorskip("alexnet_aa_numpy")
winograd = nb.winograd


def _direct(x, w, b, pad, groups):
    return nb.NumpyBackend("float64")._conv2d_im2col(x.astype(np.float64), w.astype(np.float64),
                                                     None if b is None else b.astype(np.float64),
                                                     (1, 1), (pad, pad), groups, False)


@pytest.mark.parametrize("r", sorted(winograd.KERNELS))
def test_transforms_are_exact_in_float64(r):
    """``Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A`` is the 2×2 correlation of ``d`` with ``g``, to float64 rounding."""
    bt, g, at = winograd.KERNELS[r]
    rng = np.random.default_rng(r)
    d, k = rng.standard_normal((r + 1, r + 1)), rng.standard_normal((r, r))
    y = at @ ((g @ k @ g.T) * (bt @ d @ bt.T)) @ at.T
    want = np.array([[np.sum(d[i:i + r, j:j + r] * k) for j in range(2)] for i in range(2)])
    np.testing.assert_allclose(y, want, rtol=0, atol=1e-12)


@pytest.fixture(autouse=True)
def _always_winograd(monkeypatch):
    """The path runs for every 3×3 / 5×5 stride-1 case here, whatever the core count."""
    monkeypatch.setattr(nb, "WINOGRAD_MIN_TILES", 1)


CASES = {  # n, h, w, c, o, r, padding, groups
    "3x3-13x13-batch3": (3, 13, 13, 32, 48, 3, 1, 1),
    "3x3-13x13-c48-to-24": (3, 13, 13, 48, 24, 3, 1, 1),
    "3x3-odd-no-pad": (4, 15, 10, 8, 8, 3, 0, 1),
    "5x5-27x27-pad2": (2, 27, 27, 16, 24, 5, 2, 1),
    "5x5-odd": (2, 21, 19, 12, 8, 5, 2, 1),
}


def _case(name, seed=0):
    n, h, w, c, o, r, pad, groups = CASES[name]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    hwio = (rng.standard_normal((r, r, c // groups, o)) / np.sqrt(r * r * c / groups)).astype(np.float32)
    return x, hwio, rng.standard_normal(o).astype(np.float32), pad, groups


@pytest.mark.parametrize("relu", [False, True], ids=["no-relu", "relu"])
@pytest.mark.parametrize("name", list(CASES))
def test_winograd_agrees_with_the_reference(name, relu):
    x, hwio, b, pad, groups = _case(name)
    be = nb.NumpyBackend()
    prepared = be.prepare({"w": np.ascontiguousarray(hwio.transpose(3, 2, 0, 1))})["w"]
    assert isinstance(prepared, winograd.ConvWeight) and prepared._transform is None, "transformed on first use only"
    y = be.conv2d(x, prepared, b, (1, 1), (pad, pad), groups, relu)
    assert prepared.winograd() is not None and prepared._transform is not None
    ref = _direct(x, hwio, b, pad, groups)
    ref = np.maximum(ref, 0) if relu else ref
    assert relative_error(y, ref) <= 1e-5
    assert relative_error(be._conv2d_im2col(x, hwio, b, (1, 1), (pad, pad), groups, relu), ref) <= 1e-5
    assert np.array_equal(y, be.conv2d(x, hwio, b, (1, 1), (pad, pad), groups, relu)), \
        "a plain HWIO weight (transformed per call) must give the prepared weight's bits"


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("name", ["3x3-13x13-batch3", "5x5-27x27-pad2"])
def test_nonfinite_inputs_and_weights_conform(name, value):
    """An image with a NaN or ±inf goes the direct way (its neighbours in the batch stay on Winograd);
    a weight with one is never transformed: NaN and ±inf exactly where the float64 reference has them."""
    x, hwio, b, pad, groups = _case(name, seed=1)
    x[1, 4, 5, 0] = value
    be = nb.NumpyBackend()
    y, ref = be.conv2d(x, hwio, b, (1, 1), (pad, pad), groups, False), _direct(x, hwio, b, pad, groups)
    for test in (np.isnan, np.isposinf, np.isneginf):
        assert np.array_equal(test(y), test(ref)), test.__name__
    finite = np.isfinite(ref)
    assert relative_error(y[finite], ref[finite]) <= 1e-5
    x, hwio, b, pad, groups = _case(name, seed=2)
    hwio[1, 1, 0, 3] = value
    assert be.prepare({"w": np.ascontiguousarray(hwio.transpose(3, 2, 0, 1))})["w"].winograd() is None
    y, ref = be.conv2d(x, hwio, b, (1, 1), (pad, pad), groups, False), _direct(x, hwio, b, pad, groups)
    for test in (np.isnan, np.isposinf, np.isneginf):
        assert np.array_equal(test(y), test(ref)), test.__name__


def test_grouped_layers_take_im2col(monkeypatch):
    """Winograd runs ungrouped layers only: a grouped 3×3 never asks for its weight's transform."""
    x, hwio, b, pad, _ = _case("3x3-13x13-batch3")
    hwio = np.ascontiguousarray(hwio[:, :, :16])
    be = nb.NumpyBackend()
    prepared = be.prepare({"w": np.ascontiguousarray(hwio.transpose(3, 2, 0, 1))})["w"]
    monkeypatch.setattr(nb.NumpyBackend, "_conv2d_winograd", lambda *a: pytest.fail("grouped conv took Winograd"))
    y = be.conv2d(x, prepared, b, (1, 1), (pad, pad), 2, False)
    assert prepared._transform is None
    assert relative_error(y, _direct(x, hwio, b, pad, 2)) <= 1e-5
