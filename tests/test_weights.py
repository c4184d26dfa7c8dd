"""Our hand-written safetensors reader and writer agree with the safetensors package, bit for bit."""

import numpy as np
import pytest

from alexnet_aa.weights import read_weights_file, save_weights

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def _tensors():
    rng = np.random.default_rng(0)
    return {"a.weight": rng.standard_normal((3, 4, 5)).astype(np.float32), "a.bias": np.arange(7, dtype=np.float32),
            "b": np.arange(6, dtype=np.int64).reshape(2, 3), "c": rng.standard_normal(3)}


def test_ours_read_by_safetensors(tmp_path):
    path = save_weights(tmp_path / "w.safetensors", _tensors(), metadata={"variant": "paper"})
    theirs = safetensors_numpy.load_file(path)
    for k, v in _tensors().items():
        assert theirs[k].dtype == v.dtype and np.array_equal(theirs[k], v)
    from safetensors import safe_open

    with safe_open(path, "np") as f:
        assert f.metadata() == {"variant": "paper"}


def test_theirs_read_by_ours(tmp_path):
    path = tmp_path / "t.safetensors"
    safetensors_numpy.save_file(_tensors(), path, metadata={"k": "v"})
    tensors, meta = read_weights_file(path)
    assert meta == {"k": "v"}
    for k, v in _tensors().items():
        assert tensors[k].dtype == v.dtype and np.array_equal(tensors[k], v)


def test_no_partial_file_left(tmp_path):
    save_weights(tmp_path / "w.safetensors", _tensors())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


@pytest.mark.parametrize(
    "header",
    [
        {"a": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}},
        {"a": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}},
        {"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}},
        {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "__metadata__": ["not", "a", "map"]},
        {"a": "not an entry"},
    ],
)
def test_malformed_headers_are_typed_errors(tmp_path, header):
    import json
    import struct

    from alexnet_aa.weights import WeightsFileError

    blob = json.dumps(header).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * 4)
    with pytest.raises(WeightsFileError):
        read_weights_file(path)


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(TypeError):
        save_weights(tmp_path / "w.safetensors", {"a": np.array(["text"])})
    assert list(tmp_path.iterdir()) == []


def test_suffix_is_case_insensitive(tmp_path):
    path = save_weights(tmp_path / "W.SAFETENSORS", _tensors())
    assert np.array_equal(read_weights_file(path)[0]["a.bias"], _tensors()["a.bias"])
