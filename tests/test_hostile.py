"""Hostile input, one class of failure per section: each gets a typed error naming what was
expected, bounded memory, and nothing lost. (Downloads: ``tests/test_download.py``.)"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from alexnet_aa import AlexNet, get_architecture, get_backend
from alexnet_aa.cli import main
from alexnet_aa.images import IMAGE_FORMATS, ImageError, load_image
from alexnet_aa.preprocess import MAX_RESIZED_PIXELS, Preprocess, PreprocessError, torchvision_preprocess
from alexnet_aa.weights import (
    MAX_TENSOR_ELEMENTS,
    PREPROCESS_KEY,
    WeightsFileError,
    he_weights,
    load_weights,
    save_weights,
)

PIL = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def tv_weights():
    return he_weights(get_architecture("torchvision"), 0)


def _safetensors(path, header: dict, data: bytes) -> None:
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)


# -- 1. concurrent writers ------------------------------------------------------------------------


def test_two_writers_to_one_path_leave_one_whole_file(tmp_path):
    """Each ``save_weights`` writes its own temporary file and renames it: the file read afterwards
    is one writer's, never a mix, and no temporary file is left."""
    path = tmp_path / "w.safetensors"
    ones = {f"t{i}": np.full(1 << 18, 1.0, np.float32) for i in range(8)}
    twos = {f"t{i}": np.full(1 << 18, 2.0, np.float32) for i in range(8)}
    for _ in range(3):
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda p: save_weights(path, p), [ones, twos]))
        got = load_weights(path)
        values = {float(v) for t in got.values() for v in np.unique(t)}
        assert values in ({1.0}, {2.0}), values
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


# -- 2. tiny images, huge work --------------------------------------------------------------------


def test_an_extreme_aspect_ratio_is_refused_per_image(tmp_path, capsys, tv_weights):
    """A 1×20000 strip would resize to 256×5,120,000: refused with the sizes, the other images classified."""
    strip, good = tmp_path / "strip.png", tmp_path / "good.png"
    PIL.fromarray(np.zeros((20000, 1, 3), np.uint8)).save(strip)
    PIL.fromarray(np.full((300, 400, 3), 128, np.uint8)).save(good)
    with pytest.raises(PreprocessError, match=rf"1x20000 image would be resized to 256x5120000, more than {MAX_RESIZED_PIXELS:,}"):
        torchvision_preprocess()(load_image(strip))
    weights = tmp_path / "w.safetensors"
    save_weights(weights, tv_weights, {PREPROCESS_KEY: torchvision_preprocess().to_json()})
    status = main(["classify", str(strip), str(good), "--weights", str(weights), "--top", "1"])
    out, err = capsys.readouterr()
    assert status == 1 and str(good) in out and "1 of 2 images could not be classified" in err
    assert "strip.png: error: [Preprocess] a 1x20000 image would be resized" in err


def test_any_failure_of_one_image_is_that_images_error(tmp_path, capsys, tv_weights, monkeypatch):
    """A MemoryError (or any other exception) while preparing one image is reported for it."""
    import alexnet_aa.preprocess as pre

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    for p in (a, b):
        PIL.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(p)
    weights = tmp_path / "w.safetensors"
    save_weights(weights, tv_weights, {PREPROCESS_KEY: torchvision_preprocess().to_json()})
    original = pre.Preprocess.__call__

    def flaky(self, img):
        if img.size == (64, 64) and not flaky.done:
            flaky.done = True
            raise MemoryError
        return original(self, img)

    flaky.done = False
    monkeypatch.setattr(pre.Preprocess, "__call__", flaky)
    status = main(["classify", str(a), str(b), "--weights", str(weights), "--top", "1"])
    out, err = capsys.readouterr()
    assert status == 1 and "a.png: error: MemoryError" in err and str(b) in out


# -- 3. decoding by content -----------------------------------------------------------------------


def test_only_raster_formats_are_decoded_whatever_the_name(tmp_path):
    eps = tmp_path / "photo.jpg"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\n%%EOF\n")
    with pytest.raises(ImageError, match=r"not an image in one of the accepted formats \(JPEG, PNG"):
        load_image(eps)
    assert "EPS" not in IMAGE_FORMATS and "PDF" not in IMAGE_FORMATS
    png_named_jpg = tmp_path / "really.jpg"
    PIL.fromarray(np.zeros((4, 4, 3), np.uint8)).save(png_named_jpg, format="PNG")
    assert load_image(png_named_jpg).size == (4, 4)  # by content: a PNG is a PNG


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "image.png"
    os.mkfifo(fifo)
    result = subprocess.run([sys.executable, "-c", f"from alexnet_aa.images import load_image; load_image({str(fifo)!r})"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "not a regular file" in result.stderr


# -- 4. small files that expand -------------------------------------------------------------------


def test_safetensors_with_aliased_offsets_is_refused(tmp_path):
    path = tmp_path / "alias.safetensors"
    header = {f"t{i}": {"dtype": "F32", "shape": [1024], "data_offsets": [0, 4096]} for i in range(1000)}
    _safetensors(path, header, b"\x00" * 4096)
    with pytest.raises(WeightsFileError, match="overlaps the tensor before it"):
        load_weights(path)


@pytest.mark.parametrize("shape, message", [
    ([MAX_TENSOR_ELEMENTS + 1], "more than any AlexNet tensor"),
    ([2**32, 2**32], "more than any AlexNet tensor"),  # the product wraps to 0 in int64
    ([0, 10**30], "more than any AlexNet tensor"),  # no elements, an impossible dimension
    ([1] * 64, "more than any AlexNet tensor"),  # too many dimensions
])
def test_safetensors_declaring_huge_shapes_is_refused(tmp_path, shape, message):
    path = tmp_path / "huge.safetensors"
    _safetensors(path, {"t": {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}}, b"")
    with pytest.raises(WeightsFileError, match=message):
        load_weights(path)


def test_a_deflate_bomb_in_an_npz_is_refused_before_inflating(tmp_path):
    """400 MB of zeros deflate to ~400 kB: refused from the zip directory, before inflating."""
    path = tmp_path / "bomb.npz"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (100_000_000,)})
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z, z.open("fc6.weight.npy", "w", force_zip64=True) as m:
        m.write(header.getvalue())
        zeros = bytes(1 << 22)
        for _ in range(100):
            m.write(zeros)
    assert path.stat().st_size < 2_000_000
    with pytest.raises(WeightsFileError, match=r"inflates .* refused as a zip bomb"):
        load_weights(path)


def test_compressed_npz_of_a_zero_head_still_loads(tmp_path, tv_weights):
    """np.savez_compressed of weights with a zero-initialised fc8 (16 MB deflating ~1000:1) is ordinary."""
    weights = dict(tv_weights, **{"fc8.weight": np.zeros_like(tv_weights["fc8.weight"])})
    np.savez_compressed(tmp_path / "w.npz", **weights)
    assert np.array_equal(load_weights(tmp_path / "w.npz")["fc8.weight"], weights["fc8.weight"])


@pytest.mark.parametrize("header", [
    {"descr": "|V2000000000", "fortran_order": False, "shape": (1000,)},  # 2 TB of voids
    {"descr": [("a", "<f8", (10000, 10000))], "fortran_order": False, "shape": (1000,)},  # a subarray dtype
    {"descr": "<f4", "fortran_order": False, "shape": (0, 10**30)},  # no elements, an impossible dimension
])
def test_npz_headers_declaring_what_the_member_cannot_hold_are_refused(tmp_path, header):
    path = tmp_path / "h.npz"
    blob = io.BytesIO()
    np.lib.format.write_array_header_1_0(blob, header)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("t.npy", blob.getvalue())
    with pytest.raises(WeightsFileError):
        load_weights(path)


def test_json_nested_deeper_than_the_stack_is_a_typed_error(tmp_path):
    path = tmp_path / "nest.safetensors"
    blob = b"[" * 100_000 + b"]" * 100_000
    path.write_bytes(struct.pack("<Q", len(blob)) + blob)
    with pytest.raises(WeightsFileError, match="corrupt safetensors header"):
        load_weights(path)
    with pytest.raises(PreprocessError, match="not valid JSON"):
        Preprocess.from_json("[" * 50_000 + "]" * 50_000)


def test_npz_members_that_are_not_arrays_are_refused(tmp_path):
    path = tmp_path / "mixed.npz"
    np.savez(path, **{"fc8.bias": np.zeros(3, np.float32)})
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("notes.txt", b"hello")
    with pytest.raises(WeightsFileError, match="member notes.txt is not a .npy array"):
        load_weights(path)


@pytest.mark.parametrize("use_torch", [True, False], ids=["torch.load", "restricted-unpickler"])
def test_a_stride_0_view_in_a_pth_is_refused_before_any_copy(tmp_path, use_torch):
    torch = pytest.importorskip("torch")
    from alexnet_aa.importers import read_pth

    path = tmp_path / "view.pth"
    torch.save({"classifier.1.weight": torch.zeros(1).expand(MAX_TENSOR_ELEMENTS * 4)}, path)
    assert path.stat().st_size < 10_000
    with pytest.raises(WeightsFileError, match="more than any AlexNet tensor"):
        read_pth(path, use_torch=use_torch)


@pytest.mark.parametrize("use_torch", [True, False], ids=["torch.load", "restricted-unpickler"])
def test_views_larger_than_their_storage_are_refused_even_below_the_cap(tmp_path, use_torch):
    """Three keys, each a stride-0 view of one element as 2^27 float64s: 1 GiB apiece from a 2 kB file."""
    torch = pytest.importorskip("torch")
    from alexnet_aa.importers import read_pth

    path = tmp_path / "views.pth"
    one = torch.zeros(1, dtype=torch.float64)
    torch.save({f"k{i}": one.expand(MAX_TENSOR_ELEMENTS) for i in range(3)}, path)
    with pytest.raises(WeightsFileError, match="than its storage"):
        read_pth(path, use_torch=use_torch)


@pytest.mark.parametrize("no_torch", [False, True], ids=["torch.load", "restricted-unpickler"])
def test_a_key_nested_deeper_than_the_stack_is_a_typed_error(tmp_path, capsys, no_torch):
    path = tmp_path / "nestkey.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02})" + b"\x85" * 3000 + b"K\x01s.")
    args = ["weights", "import", str(path), "-o", str(tmp_path / "o.safetensors"), *(["--no-torch"] if no_torch else [])]
    assert main(args) == 2 and "alexnet-aa weights import: error:" in capsys.readouterr().err


def test_a_compressed_storage_in_a_pth_is_refused(tmp_path):
    """A storage member of 400 MB of zeros, deflated to ~400 kB: refused before torch (or we) inflate it."""
    torch = pytest.importorskip("torch")
    from alexnet_aa.importers import read_pth

    plain = tmp_path / "plain.pth"
    torch.save({"w": torch.zeros(10)}, plain)
    packed = tmp_path / "packed.pth"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(packed, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename.endswith("/data/0"):
                with dst.open(info.filename, "w", force_zip64=True) as m:
                    for _ in range(100):
                        m.write(bytes(1 << 22))
            else:
                dst.writestr(info.filename, src.read(info))
    assert packed.stat().st_size < 2_000_000
    with pytest.raises(WeightsFileError, match="refused as a zip bomb"):
        read_pth(packed)


# -- 5. preprocessing from a file is input ------------------------------------------------------------


@pytest.mark.parametrize("field, value, message", [
    ("crop_size", 10**7, r"crop_size must be an int in \[1, 4096\]"),
    ("resize_size", 10**7, r"resize_size must be an int in \[1, 4096\]"),
    ("mean", [float("nan"), 0, 0], "mean must be 3 finite numbers"),
    ("std", [1, float("inf"), 1], "std must be 3 finite numbers"),
    ("value_range", float("nan"), "value_range must be a positive finite number"),
    ("std", [1e-300, 1, 1], r"std must be in \[1e-6, 1e6\]"),
    ("mean", [1e300, 0, 0], r"mean must be in \[-1e6, 1e6\]"),
])
def test_preprocessing_metadata_is_bounded(tmp_path, capsys, tv_weights, field, value, message):
    spec = json.loads(torchvision_preprocess().to_json())
    spec[field] = value
    with pytest.raises(PreprocessError, match=message):
        Preprocess.from_json(json.dumps(spec))
    weights, image = tmp_path / "w.safetensors", tmp_path / "i.png"
    save_weights(weights, tv_weights, {PREPROCESS_KEY: json.dumps(spec)})
    PIL.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    assert main(["classify", str(image), "--weights", str(weights)]) == 2
    assert "alexnet-aa classify: error: [Preprocess]" in capsys.readouterr().err


# -- 6. the CLI never shows a traceback ---------------------------------------------------------------


def test_environment_errors_are_one_line(tmp_path, capsys):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    status = main(["visualize", "--variant", "torchvision", "--out", str(not_a_dir / "pictures")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and err.startswith("alexnet-aa visualize: error: ")
    assert main(["run", "--batch", "10000000"]) == 2
    err = capsys.readouterr().err
    assert "--batch 10000000: the paper variant's activations need about" in err and "use --batch" in err


def test_a_full_stdout_is_one_line_on_stderr():
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "alexnet_aa", "summary"], stdout=full, stderr=subprocess.PIPE,
                                text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.strip() == "alexnet-aa summary: error: No space left on device"


# -- 8. threads --------------------------------------------------------------------------------------


def test_numpy_results_do_not_depend_on_the_calling_thread(tv_weights):
    """OpenBLAS takes a process-wide thread count from the main thread only: the backend holds the
    calling thread's own count, so a forward pass from a worker thread gives the same bits."""
    model = AlexNet("torchvision", "numpy", weights=tv_weights)
    x = np.random.default_rng(0).standard_normal((4, 3, 100, 100), dtype=np.float32)
    here = model(x)
    with ThreadPoolExecutor(2) as pool:
        there = list(pool.map(model, [x, x, x]))
    assert all(np.array_equal(here, t) for t in there)


def test_an_mlx_model_refuses_other_threads_cleanly():
    pytest.importorskip("mlx.core")
    code = (
        "import numpy as np, threading\n"
        "from alexnet_aa import AlexNet, get_architecture\n"
        "from alexnet_aa.weights import he_weights\n"
        "m = AlexNet('torchvision', 'mlx', weights=he_weights(get_architecture('torchvision'), 0))\n"
        "x = np.zeros((1, 3, 64, 64), np.float32)\n"
        "m(x)\n"
        "box = []\n"
        "def other():\n"
        "    try:\n"
        "        m(x)\n"
        "    except Exception as exc:\n"
        "        box.append(f'{type(exc).__name__}: {exc}')\n"
        "t = threading.Thread(target=other); t.start(); t.join()\n"
        "print(box[0])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]  # no abort at exit
    assert "BackendError: [mlx] this backend was made in thread" in result.stdout and "one model per thread" in result.stdout


# -- 9. smaller typed-error gaps -------------------------------------------------------------------------


def test_bfloat16_torch_tensors_load(tv_weights):
    torch = pytest.importorskip("torch")
    model = AlexNet("torchvision", weights={k: torch.tensor(v).to(torch.bfloat16) for k, v in tv_weights.items()})
    assert model.state_dict()["fc8.bias"].dtype == np.float32


@pytest.mark.parametrize("top", [2.5, True, "3", 0, 1001])
def test_predict_top_must_be_an_int_in_range(tv_weights, top):
    model = AlexNet("torchvision", weights=tv_weights)
    with pytest.raises(ValueError, match=r"\[predict\] top: expected an int between 1 and 1000"):
        model.predict(np.zeros((1, 3, 224, 224), np.float32), top=top)


def test_predict_on_nan_input_is_an_error_not_class_0(tv_weights):
    model = AlexNet("torchvision", weights=tv_weights)
    x = np.zeros((3, 3, 224, 224), np.float32)
    x[1, 0, 5, 5] = np.nan
    with pytest.raises(ValueError, match=r"\[predict\] image 1: the class probabilities are not finite"):
        model.predict(x)


def test_a_namespace_that_is_not_an_array_library():
    for name in ("os", "json", "no_such_module_here"):
        with pytest.raises(ValueError, match=r"\[array-api\] namespace: expected"):
            get_backend("array-api", namespace=name)


def test_a_tensor_named_metadata_is_refused(tmp_path):
    with pytest.raises(ValueError, match="other than '__metadata__'"):
        save_weights(tmp_path / "m.safetensors", {"__metadata__": np.zeros(3, np.float32)})
    assert not list(tmp_path.iterdir())


def test_ctrl_c_in_any_command_is_status_130(monkeypatch, capsys):
    import alexnet_aa.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_summary", interrupted)
    assert main(["summary"]) == 130 and capsys.readouterr().err == "alexnet-aa summary: interrupted\n"
