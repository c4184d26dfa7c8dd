"""Importers: torchvision .pth (both readers), ONNX zoo .onnx, canonical files, safety."""

from __future__ import annotations

import builtins
import os
import re
import sys

import numpy as np
import pytest

from alexnet_aa import AlexNet
from alexnet_aa.architecture import count_macs, count_params, get_architecture, param_shapes
from alexnet_aa.bundles import AlexNetWeights
from alexnet_aa.cli import main
from alexnet_aa.importers import ONNX_ZOO_NAMES, TORCHVISION_NAMES, convert, import_weights, read_pth
from alexnet_aa.preprocess import Preprocess, caffe_preprocess
from alexnet_aa.weights import PREPROCESS_KEY, VARIANT_KEY, WeightsError, WeightsFileError, read_weights_file, save_weights

torch = pytest.importorskip("torch")
F = torch.nn.functional

READERS = [pytest.param(None, id="torch"), pytest.param(False, id="restricted-unpickler")]


def random_weights(variant: str, seed: int) -> dict[str, np.ndarray]:
    """He-uniform float32 weights, U(±sqrt(6/fan_in)), biases U(±0.1): quick to draw for 61M parameters."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in param_shapes(get_architecture(variant)).items():
        bound = np.float32(np.sqrt(6.0 / np.prod(shape[1:])) if len(shape) > 1 else 0.1)
        w = rng.random(shape, dtype=np.float32)
        w *= 2 * bound
        w -= bound
        out[name] = w
    return out


@pytest.fixture(scope="module")
def tv_weights():
    return random_weights("torchvision", 1)


@pytest.fixture(scope="module")
def tv_pth(tmp_path_factory, tv_weights):
    path = tmp_path_factory.mktemp("pth") / "alexnet-random.pth"
    inverse = {v: k for k, v in TORCHVISION_NAMES.items()}
    torch.save({inverse[n]: torch.from_numpy(w) for n, w in tv_weights.items()}, path)
    return path


def torch_alexnet(x, sd):
    """torchvision's AlexNet forward in torch.nn.functional, on the torchvision-keyed state dict."""
    t = lambda k: torch.from_numpy(sd[k])  # noqa: E731
    for i, pad in ((0, 2), (3, 2), (6, 1), (8, 1), (10, 1)):
        x = F.relu(F.conv2d(x, t(f"features.{i}.weight"), t(f"features.{i}.bias"), stride=4 if i == 0 else 1, padding=pad))
        if i in (0, 3, 10):
            x = F.max_pool2d(x, 3, 2)
    x = torch.flatten(F.adaptive_avg_pool2d(x, 6), 1)
    x = F.relu(F.linear(x, t("classifier.1.weight"), t("classifier.1.bias")))
    x = F.relu(F.linear(x, t("classifier.4.weight"), t("classifier.4.bias")))
    return F.linear(x, t("classifier.6.weight"), t("classifier.6.bias"))


@pytest.mark.parametrize("use_torch", READERS)
def test_pth_import_gives_torchs_logits(tv_pth, tv_weights, use_torch):
    params = import_weights(tv_pth, use_torch=use_torch)
    assert set(params) == set(tv_weights)
    for name, w in tv_weights.items():  # bit-identical to what torch.save wrote
        assert params[name].dtype == np.float32 and np.array_equal(params[name].view(np.uint32), w.view(np.uint32)), name
    x = np.random.default_rng(7).standard_normal((2, 3, 224, 224), dtype=np.float32)
    ours = np.asarray(AlexNet("torchvision", "numpy", weights=params)(x))
    inverse = {v: k for k, v in TORCHVISION_NAMES.items()}
    with torch.no_grad():
        theirs = torch_alexnet(torch.from_numpy(x), {inverse[n]: w for n, w in tv_weights.items()}).numpy()
    err = np.linalg.norm(ours - theirs) / np.linalg.norm(theirs)
    assert err < 1e-4, f"relative L2 error of logits {err:.2e} (reader {use_torch})"
    assert np.array_equal(ours.argmax(1), theirs.argmax(1))


def test_pth_for_wrong_variant_names_the_variant_it_fits(tv_pth):
    with pytest.raises(WeightsError, match=r"do not fit the 'caffe' variant; they fit the 'torchvision' variant") as info:
        import_weights(tv_pth, "caffe")
    assert any("conv1.weight" in p for p in info.value.problems)


class _SystemPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _OpenPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (str(self.marker), "w"))


@pytest.mark.parametrize("payload", [_SystemPayload, _OpenPayload], ids=["os.system", "builtins.open"])
@pytest.mark.parametrize("use_torch", READERS)
def test_malicious_pickle_is_refused_without_executing(tmp_path, payload, use_torch):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pth"
    torch.save({"features.0.weight": torch.zeros(2), "features.0.bias": payload(marker)}, path)
    with pytest.raises(WeightsFileError, match="refused"):
        import_weights(path, use_torch=use_torch)
    assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize("use_torch", READERS)
def test_state_dict_with_non_tensors_is_refused(tmp_path, use_torch):
    path = tmp_path / "mixed.pth"
    torch.save({"features.0.weight": torch.zeros(3), "epoch": 5, "note": "hello"}, path)
    with pytest.raises(WeightsFileError, match="holds more than tensors") as info:
        read_pth(path, use_torch=use_torch)
    assert len(info.value.problems) == 2


def test_restricted_unpickler_refuses_a_hand_made_pickle(tmp_path):
    """A protocol-0 GLOBAL opcode, not through torch.save at all."""
    import zipfile

    path = tmp_path / "crafted.pth"
    marker = tmp_path / "executed"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", f"cos\nsystem\n(Vtouch {marker}\ntR.".encode())
    with pytest.raises(WeightsFileError, match=r"global os\.system is not allowed"):
        read_pth(path, use_torch=False)
    assert not marker.exists()


@pytest.mark.parametrize("use_torch", READERS)
def test_truncated_pth_is_a_clear_error(tmp_path, tv_pth, use_torch):
    path = tmp_path / "cut.pth"
    path.write_bytes(tv_pth.read_bytes()[: 1 << 20])
    with pytest.raises(WeightsFileError):
        read_pth(path, use_torch=use_torch)


def test_old_torch_is_refused(monkeypatch, tv_pth):
    monkeypatch.setattr(torch, "__version__", "2.5.1")
    with pytest.raises(WeightsFileError, match=r"torch 2\.5\.1.*CVE-2025-32434"):
        read_pth(tv_pth)
    assert read_pth(tv_pth, use_torch=False)  # the restricted reader still works


def test_no_torch_path_when_torch_is_missing(monkeypatch, tv_pth, tv_weights):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    params = import_weights(tv_pth)
    assert np.array_equal(params["fc8.bias"], tv_weights["fc8.bias"])


# -- ONNX ---------------------------------------------------------------------------------


def test_onnx_zoo_import_matches_exactly(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    canonical = random_weights("caffe", 2)
    inverse = {v: k for k, v in ONNX_ZOO_NAMES.items()}
    inits = []
    for name, w in canonical.items():
        stored = w.T if name == "fc8.weight" else w  # fc8 as a Gemm with transB=0: (in, out)
        inits.append(numpy_helper.from_array(np.ascontiguousarray(stored), inverse[name]))
    inits.append(numpy_helper.from_array(np.array([1, 9216], dtype=np.int64), "OC2_DUMMY_1"))
    nodes = [
        helper.make_node("Conv", ["data_0", "conv1_w_0", "conv1_b_0"], ["conv1_1"], kernel_shape=[11, 11], strides=[4, 4]),
        helper.make_node("Reshape", ["conv1_1", "OC2_DUMMY_1"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc6_w_0", "fc6_b_0"], ["fc6_1"], transB=1),
        helper.make_node("Gemm", ["fc6_1", "fc8_w_0", "fc8_b_0"], ["fc8_1"], transB=0),
    ]
    graph = helper.make_graph(
        nodes, "bvlcalexnet-like",
        [helper.make_tensor_value_info("data_0", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("fc8_1", TensorProto.FLOAT, [1, 1000])],
        initializer=inits,
    )
    path = tmp_path / "bvlcalexnet-12.onnx"
    onnx.save(helper.make_model(graph), path)

    out = tmp_path / "caffe.safetensors"
    assert main(["weights", "import", str(path), "-o", str(out)]) == 0  # import_weights + save, by the CLI
    tensors, meta = read_weights_file(out)
    assert set(tensors) == set(canonical)
    for name, w in canonical.items():
        assert tensors[name].shape == w.shape and np.array_equal(tensors[name], w), name
    assert meta[VARIANT_KEY] == "caffe" and meta["alexnet_aa.source_format"].startswith("ONNX")
    assert Preprocess.from_json(meta[PREPROCESS_KEY]) == caffe_preprocess()


def test_caffe_shapes_for_torchvision_name_both_fitting_variants(tv_weights):
    caffe_like = {n: np.zeros(s, np.float32) for n, s in param_shapes(get_architecture("caffe")).items()}
    with pytest.raises(WeightsError, match="fit the 'paper' or 'caffe' variant"):
        from alexnet_aa.importers import validate

        validate(caffe_like, "torchvision", "caffe-like")


def test_onnx_without_the_onnx_package(tmp_path, monkeypatch):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07")
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(WeightsFileError, match="pip install onnx"):
        import_weights(path)


# -- canonical files, round trips ---------------------------------------------------------


def test_convert_round_trip_is_bit_identical(tmp_path, tv_pth, tv_weights):
    out = convert(tv_pth, tmp_path / "tv.safetensors")
    tensors, meta = read_weights_file(out)
    for name, w in tv_weights.items():
        assert np.array_equal(tensors[name].view(np.uint32), w.view(np.uint32)), name
    assert meta[VARIANT_KEY] == "torchvision" and meta["alexnet_aa.source"] == tv_pth.name
    assert re.fullmatch(r"[0-9a-f]{64}", meta["alexnet_aa.source_sha256"])


def test_npz_problems_are_listed_at_once(tmp_path, tv_weights):
    bad = dict(tv_weights)
    del bad["conv2.bias"]
    bad["conv3.weight"] = bad["conv3.weight"][:10]
    bad["fc7.bias"] = bad["fc7.bias"].astype(np.int32)
    bad["extra.weight"] = np.zeros(3, np.float32)
    path = tmp_path / "bad.npz"
    save_weights(path, bad)
    with pytest.raises(WeightsError) as info:
        import_weights(path, "torchvision")
    text = str(info.value)
    for needle in ("conv2.bias", "conv3.weight", "fc7.bias", "extra.weight"):
        assert needle in text


def test_unknown_format(tmp_path):
    path = tmp_path / "weights.h5"
    path.write_bytes(b"x")
    with pytest.raises(WeightsFileError, match=r"unknown weights format '\.h5'"):
        import_weights(path)


def test_cli_import_errors_exit_nonzero(tmp_path, tv_pth, capsys):
    assert main(["weights", "import", str(tv_pth), "-o", str(tmp_path / "x.safetensors"), "--variant", "paper"]) == 2
    err = capsys.readouterr().err
    assert "alexnet-aa weights import: error" in err and "'torchvision' variant" in err
    assert main(["weights", "import", str(tv_pth), "-o", str(tmp_path / "x.npz")]) == 2


# -- bundles ------------------------------------------------------------------------------


@pytest.mark.parametrize("bundle", [b for b in AlexNetWeights if b.name != "DEFAULT"], ids=lambda b: b.name)
def test_bundle_meta_matches_the_architecture(bundle):
    meta = bundle.meta
    assert meta["num_params"] == count_params(bundle.variant)
    assert meta["ops"] == round(count_macs(bundle.variant) / 1e9, 3)
    assert len(meta["categories"]) == 1000
    spec = bundle.transforms()
    assert spec.crop_size == get_architecture(bundle.variant).input_size
    assert Preprocess.from_json(spec.to_json()) == spec


def test_default_bundle_and_digest():
    bundle = AlexNetWeights.DEFAULT
    assert bundle is AlexNetWeights.TORCHVISION_IMAGENET1K_V1 and bundle.variant == "torchvision"
    prefix = re.search(r"-([0-9a-f]{8})\.pth$", bundle.url).group(1)
    assert re.fullmatch(r"[0-9a-f]{64}", bundle.sha256) and bundle.sha256.startswith(prefix)

