"""The public model API and its errors (DESIGN.md §6, §7)."""

import numpy as np
import pytest

import alexnet_aa
from alexnet_aa import AlexNet, WeightsError, WeightsFileError, example_input, save_weights
from alexnet_aa.architecture import get_architecture
from alexnet_aa.backend import BackendUnavailableError, UnknownBackendError
from alexnet_aa.testing import relative_error
from alexnet_aa.weights import PAPER_BIAS_ONE, he_weights


@pytest.fixture(scope="module")
def tv_model():
    return AlexNet("torchvision", "numpy", weights=he_weights(get_architecture("torchvision"), 1))


def test_logits_shape_and_predict(tv_model):
    x = example_input("torchvision", batch=3, seed=2)
    logits = alexnet_aa.to_numpy(tv_model(x))
    assert logits.shape == (3, 1000) and logits.dtype == np.float32
    pred = tv_model.predict(x, top=5)
    assert pred.indices.shape == pred.probabilities.shape == (3, 5)
    assert np.all(np.diff(pred.probabilities, axis=1) <= 0), "probabilities must be sorted, best first"
    np.testing.assert_array_equal(pred.indices[:, 0], logits.argmax(1))
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(pred.probabilities, np.take_along_axis(p, pred.indices, 1), rtol=1e-5)


def test_softmax_is_stable_for_huge_logits():
    from alexnet_aa import get_backend, ops

    p = ops.softmax(get_backend("numpy"), np.asarray([[1e4, 0.0, -1e4]], dtype=np.float32))
    assert np.all(np.isfinite(p)) and abs(float(p[0, 0]) - 1.0) < 1e-6


def test_rows_are_independent(tv_model):
    x = example_input("torchvision", batch=4, seed=3)
    whole = alexnet_aa.to_numpy(tv_model(x))
    halves = np.concatenate([alexnet_aa.to_numpy(tv_model(x[:2])), alexnet_aa.to_numpy(tv_model(x[2:]))])
    # BLAS blocks a GEMM by its row count, so float32 sums may round differently: compare, don't bit-match
    assert relative_error(halves, whole) < 1e-5


def test_layers_in_table_order_and_canonical_layout(tv_model):
    x = example_input("torchvision", batch=1)
    acts = tv_model.layers(x)
    assert list(acts) == [layer.name for layer in get_architecture("torchvision").layers]
    assert acts["conv1"].shape == (1, 64, 55, 55) and acts["flatten"].shape == (1, 9216)
    ref = AlexNet("torchvision", "array-api", weights=tv_model.state_dict()).layers(x)
    for name in ("conv1", "pool5", "flatten"):
        np.testing.assert_allclose(np.asarray(acts[name]), alexnet_aa.to_numpy(ref[name]), rtol=1e-4, atol=1e-4)


def test_paper_initialisation_is_seeded():
    a, b = AlexNet("paper", "numpy", seed=5).state_dict(), AlexNet("paper", "numpy", seed=5).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert abs(a["conv3.weight"].std() - 0.01) < 1e-3
    for layer in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
        assert np.all(a[f"{layer}.bias"] == (1.0 if layer in PAPER_BIAS_ONE else 0.0))


def test_state_dict_round_trip_through_files(tmp_path, tv_model):
    for suffix in (".safetensors", ".npz"):
        path = save_weights(tmp_path / f"w{suffix}", tv_model.state_dict())
        again = AlexNet("torchvision", "numpy", weights=path).state_dict()
        assert all(np.array_equal(again[k], v) for k, v in tv_model.state_dict().items())


# -- bad input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, match",
    [
        ((3, 224, 224), "rank 4"),
        ((1, 4, 224, 224), "3 channels"),
        ((0, 3, 224, 224), "N >= 1"),
        ((1, 3, 40, 40), "any size >= 63"),
    ],
)
def test_bad_input_shapes(tv_model, shape, match):
    with pytest.raises(ValueError, match=match):
        tv_model(np.zeros(shape, np.float32))


def test_paper_names_its_input_size():
    model = AlexNet("paper", "numpy")
    with pytest.raises(ValueError, match="227x227 input, got 224x224"):
        model(np.zeros((1, 3, 224, 224), np.float32))


def test_bfloat16_input_is_floating(tv_model):
    """ml_dtypes' bfloat16 (what NumPy and CuPy bfloat16 arrays carry) is a floating input, though NumPy's
    ``isdtype`` refuses it: the model runs it as the float32 of the same values."""
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes is not installed")
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(ml_dtypes.bfloat16)
    assert np.array_equal(tv_model(x), tv_model(x.astype(np.float32)))
    assert np.array_equal(tv_model.predict(x).indices, tv_model.predict(x.astype(np.float32)).indices)


def test_integer_input_is_a_type_error(tv_model):
    with pytest.raises(TypeError, match="floating-point"):
        tv_model(np.zeros((1, 3, 224, 224), np.uint8))
    with pytest.raises(TypeError, match="array"):
        tv_model([[1.0]])


def test_unknown_backend_lists_known_and_install_hints(monkeypatch):
    import alexnet_aa.backend as registry

    only_numpy = {"numpy": registry.registered_backends()["numpy"]}
    monkeypatch.setattr(registry, "registered_backends", lambda: only_numpy)
    with pytest.raises(UnknownBackendError) as info:
        AlexNet("paper", "tpu")
    message = str(info.value)
    assert "numpy  (installed)" in message
    assert "mlx  (not installed: python -m pip install 'alexnet-aa-mlx[cpu]'" in message
    assert "alexnet_aa.backends" in message


def test_default_backend_missing_names_its_distribution(monkeypatch):
    """The default backend (numpy) is its own distribution: without it, the error says what to install."""
    import alexnet_aa.backend as registry

    core_only = {"array-api": registry.registered_backends()["array-api"]}
    monkeypatch.setattr(registry, "registered_backends", lambda: core_only)
    monkeypatch.setattr(registry, "backend_class", registry.backend_class.__wrapped__)  # no cached class
    with pytest.raises(UnknownBackendError, match=r"^backend 'numpy' is not installed: python -m pip install alexnet-aa-numpy\n"):
        AlexNet("torchvision")
    assert AlexNet("torchvision", "array-api").backend.name == "array-api"  # the core's own backend


def test_unavailable_backend_says_why(monkeypatch):
    from alexnet_aa_numpy import NumpyBackend

    monkeypatch.setattr(NumpyBackend, "available", classmethod(lambda cls: (False, "no such device")))
    with pytest.raises(BackendUnavailableError, match="no such device"):
        AlexNet("torchvision", "numpy")


def test_weights_problems_listed_at_once():
    good = he_weights(get_architecture("paper"), 0)
    bad = dict(good)
    del bad["conv1.bias"]
    bad["conv2.weight"] = np.zeros((256, 96, 5, 5), np.float32)
    bad["fc9.weight"] = np.zeros((3, 3), np.float32)
    bad["fc7.bias"] = np.zeros(4096, np.int32)
    with pytest.raises(WeightsError) as info:
        AlexNet("paper", "numpy", weights=bad)
    problems = "\n".join(info.value.problems)
    for needle in ("missing: conv1.bias", "unexpected: fc9.weight", "conv2.weight: expected shape (256, 48, 5, 5)", "fc7.bias: expected a floating dtype"):
        assert needle in problems


def test_weights_of_another_variant_are_named():
    with pytest.raises(WeightsError, match="fits the 'torchvision' variant"):
        AlexNet("paper", "numpy", weights=he_weights(get_architecture("torchvision"), 0))


def test_nan_weights_refused():
    w = he_weights(get_architecture("torchvision"), 0)
    w["fc8.bias"][3] = np.nan
    with pytest.raises(WeightsError, match="NaN"):
        AlexNet("torchvision", "numpy", weights=w)


def test_the_head_width_comes_from_the_weights_unless_given():
    w = he_weights(get_architecture("torchvision", num_classes=10), 0)
    assert AlexNet("torchvision", "numpy", weights=w).arch.num_classes == 10  # a fine-tuned checkpoint's classes
    with pytest.raises(WeightsError, match="num_classes=10"):
        AlexNet("torchvision", "numpy", weights=w, num_classes=1000)
    fresh = AlexNet("torchvision", "numpy", weights=w, fresh_head=True)
    assert fresh.state_dict()["fc8.weight"].shape == (1000, 4096)
    assert np.array_equal(fresh.state_dict()["fc7.weight"], w["fc7.weight"])


def test_missing_truncated_and_corrupt_files(tmp_path):
    with pytest.raises(WeightsFileError, match="not found"):
        AlexNet("paper", "numpy", weights=tmp_path / "nope.safetensors")
    path = save_weights(tmp_path / "w.safetensors", he_weights(get_architecture("torchvision"), 0))
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsFileError, match="truncated"):
        AlexNet("torchvision", "numpy", weights=tmp_path / "cut.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(WeightsFileError, match="corrupt"):
        AlexNet("torchvision", "numpy", weights=tmp_path / "junk.safetensors")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04broken")
    with pytest.raises(WeightsFileError, match="npz"):
        AlexNet("torchvision", "numpy", weights=tmp_path / "junk.npz")
    with pytest.raises(WeightsFileError, match="unknown weights format"):
        AlexNet("torchvision", "numpy", weights=path.with_suffix(".bin").write_bytes(b"x") and path.with_suffix(".bin"))


def test_pickled_npz_refused(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, **{"conv1.weight": np.array([object()], dtype=object)})
    with pytest.raises(WeightsFileError):
        AlexNet("torchvision", "numpy", weights=path)


def test_broken_plugins_are_reported_not_raised(monkeypatch):
    from importlib.metadata import EntryPoint

    import alexnet_aa.backend as registry

    class Raising(registry.Backend):
        @classmethod
        def available(cls):
            raise OSError("driver exploded")

    eps = dict(registry.registered_backends())
    eps["missing-object"] = EntryPoint("missing-object", "alexnet_aa:NoSuchBackend", registry.ENTRY_POINT_GROUP)
    eps["raising"] = EntryPoint("raising", "x:y", registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "registered_backends", lambda: eps)
    real = registry.backend_class.__wrapped__
    monkeypatch.setattr(registry, "backend_class", lambda name: Raising if name == "raising" else real(name))
    status = registry.available_backends()
    assert status["missing-object"][0] is False and "AttributeError" in status["missing-object"][1]
    assert status["raising"] == (False, "available() raised OSError: driver exploded")
    assert status["numpy"] == (True, "")
    with pytest.raises(BackendUnavailableError, match="driver exploded"):
        registry.get_backend("raising")


# -- published bundles as weights= ----------------------------------------------------


def _cache_bundle(cache, bundle, params, **metadata):
    """Put ``params`` where ``alexnet-aa weights download`` caches ``bundle``, with download metadata."""
    from alexnet_aa.download import cached_path
    from alexnet_aa.weights import SOURCE_SHA256_KEY, VARIANT_KEY

    meta = {VARIANT_KEY: bundle.variant, SOURCE_SHA256_KEY: bundle.sha256 or "", "alexnet_aa.bundle": bundle.name}
    return save_weights(cached_path(bundle, cache), params, {**meta, **metadata})


def test_bundle_loads_the_verified_cache_with_its_meta(tmp_path, monkeypatch):
    from alexnet_aa import AlexNetWeights
    from alexnet_aa.categories import imagenet_categories
    from alexnet_aa.preprocess import torchvision_preprocess

    monkeypatch.setenv("ALEXNET_AA_CACHE", str(tmp_path))
    params = he_weights(get_architecture("torchvision"), 4)
    _cache_bundle(tmp_path, AlexNetWeights.DEFAULT, params)
    model = AlexNet("torchvision", "numpy", weights=AlexNetWeights.DEFAULT)
    assert model.arch.num_classes == len(AlexNetWeights.DEFAULT.meta["categories"]) == 1000
    assert model.preprocess == torchvision_preprocess() and model.categories == list(imagenet_categories())
    assert all(np.array_equal(model.state_dict()[k], v) for k, v in params.items())
    fresh = AlexNet("torchvision", "numpy", weights=AlexNetWeights.DEFAULT, fresh_head=True, num_classes=3)
    assert fresh.state_dict()["fc8.weight"].shape == (3, 4096) and fresh.categories == ["class 0", "class 1", "class 2"]


def test_bundle_not_downloaded_or_not_verified_says_what_to_run(tmp_path, monkeypatch):
    from alexnet_aa import AlexNetWeights
    from alexnet_aa.download import cached_path

    monkeypatch.setenv("ALEXNET_AA_CACHE", str(tmp_path))
    with pytest.raises(WeightsFileError, match=r"not in the cache .*: run `alexnet-aa weights download torchvision`"):
        AlexNet("torchvision", "numpy", weights=AlexNetWeights.DEFAULT)
    with pytest.raises(WeightsFileError, match=r"import a copy you trust: `alexnet-aa weights import bvlcalexnet-12.onnx -o "):
        AlexNet("caffe", "numpy", weights=AlexNetWeights.CAFFE_BVLC_IMAGENET1K)
    with pytest.raises(WeightsError, match=r"holds 'torchvision' weights, not 'paper'"):
        AlexNet("paper", "numpy", weights=AlexNetWeights.DEFAULT)
    _cache_bundle(tmp_path, AlexNetWeights.DEFAULT, he_weights(get_architecture("torchvision"), 4),
                  **{"alexnet_aa.source_sha256": "0" * 64})
    with pytest.raises(WeightsFileError, match=r"is not the verified download of TORCHVISION_IMAGENET1K_V1.*--force"):
        AlexNet("torchvision", "numpy", weights=AlexNetWeights.DEFAULT)
    assert cached_path(AlexNetWeights.DEFAULT).parent == tmp_path


class _Recorder(alexnet_aa.reference.ArrayAPIBackend):
    """The reference backend with a "recorded" forward: capture() runs the forward once and returns a
    replay that runs it again, counting both (what the cupy backend does with a CUDA graph)."""

    name = "recorder"

    def __init__(self) -> None:
        super().__init__()
        self.captures, self.replays = [], 0

    def capture(self, forward, x):
        self.captures.append(tuple(x.shape))
        forward(x)

        def replay(x_new):
            self.replays += 1
            return forward(x_new)

        return replay


def test_recorded_forward_per_shape_bounded_and_dropped_by_training():
    """``model(x)`` records the forward once per input shape (least recently used dropped beyond
    MAX_CAPTURED_SHAPES) and replays it with the eager bits; a training step drops every recording
    (they read the old weights); ``layers()`` and ``gradients`` stay eager."""
    from alexnet_aa.model import MAX_CAPTURED_SHAPES

    be = _Recorder()
    model = AlexNet("torchvision", be, weights=he_weights(get_architecture("torchvision"), np.random.default_rng(0)))
    eager = AlexNet("torchvision", "array-api", weights=model.state_dict())
    x = np.random.default_rng(1).standard_normal((2, 3, 70, 70)).astype(np.float32)
    first, again = model(x), model(x)
    assert be.captures == [(2, 3, 70, 70)] and be.replays == 2
    assert np.array_equal(np.asarray(first), np.asarray(eager(x))) and np.array_equal(np.asarray(again), np.asarray(first))
    for size in range(64, 64 + MAX_CAPTURED_SHAPES):  # fills the cache: (2, 3, 70, 70) is the oldest, dropped
        model(x[:1, :, :size, :size].copy())
    model(x)
    assert be.captures[-1] == (2, 3, 70, 70) and len(be.captures) == MAX_CAPTURED_SHAPES + 2
    model.layers(x)
    assert len(be.captures) == MAX_CAPTURED_SHAPES + 2, "layers() must run eagerly"
    replays = be.replays
    model.train_step(x, [1, 2], alexnet_aa.SGD(0.1))
    after = model(x)
    assert be.captures[-1] == (2, 3, 70, 70) and len(be.captures) == MAX_CAPTURED_SHAPES + 3 and be.replays == replays + 1
    assert np.array_equal(np.asarray(after), np.asarray(AlexNet("torchvision", "array-api", weights=model.state_dict())(x)))


def test_a_failed_recording_runs_eagerly():
    """A backend whose recording raises: a RuntimeWarning naming the reason, and that shape runs eagerly."""

    class Failing(_Recorder):
        def capture(self, forward, x):
            raise RuntimeError("capture refused")

    model = AlexNet("torchvision", Failing(), weights=he_weights(get_architecture("torchvision"), np.random.default_rng(0)))
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match=r"recording the forward for input \(1, 3, 64, 64\) failed \(RuntimeError: capture refused\)"):
        first = model(x)
    second = model(x)  # no second attempt, no second warning
    assert np.array_equal(np.asarray(first), np.asarray(second))


def test_backend_specs_carry_constructor_options():
    """``get_backend("name[key=value,...]")`` — what every ``--backend`` of the CLI and the suite's specs take:
    literals parsed, strings kept, an option given twice or a malformed spec refused naming it."""
    from alexnet_aa.backend import get_backend, parse_spec

    assert parse_spec(" array-api [ namespace=array_api_strict , dtype=float64 ]") == (
        "array-api", {"namespace": "array_api_strict", "dtype": "float64"})
    assert parse_spec("cupy[capture=False,device=1]") == ("cupy", {"capture": False, "device": 1})
    assert parse_spec("numpy") == ("numpy", {})
    be = get_backend("array-api[dtype=float64]")
    assert be.dtype == "float64" and be.name == "array-api"
    with pytest.raises(TypeError, match=r"backend option dtype given both in the spec and as keyword"):
        get_backend("array-api[dtype=float64]", dtype="float32")
    for bad, why in (("mlx[float16]", "expected key=value options, got 'float16'"),
                     ("mlx[dtype=float16", "expected NAME or NAME\\[key=value,...\\]"),
                     ("[dtype=float16]", "expected NAME or NAME\\[key=value,...\\]")):
        with pytest.raises(ValueError, match=why):
            get_backend(bad)
