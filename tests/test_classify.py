"""Images in, class names out: image modes, preprocessing metadata, bad files, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from alexnet_aa import AlexNet
from alexnet_aa.architecture import get_architecture
from alexnet_aa.cli import main
from alexnet_aa.categories import imagenet_categories
from alexnet_aa.images import ImageError, load_image
from alexnet_aa.preprocess import Preprocess, PreprocessError, torchvision_preprocess
from alexnet_aa.weights import PREPROCESS_KEY, VARIANT_KEY, he_weights, save_weights


@pytest.fixture(scope="module")
def tv_params():
    return he_weights(get_architecture("torchvision"), 5)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory, tv_params):
    path = tmp_path_factory.mktemp("w") / "tv-random.safetensors"
    save_weights(path, tv_params, {VARIANT_KEY: "torchvision", PREPROCESS_KEY: torchvision_preprocess().to_json()})
    return path


def _gradient(w, h, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) % 256], axis=-1)
    return np.clip(rgb + rng.integers(-20, 20, rgb.shape), 0, 255).astype(np.uint8)


def make_images(folder):
    """One file per mode, several sizes; returns {name: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    rgb = Image.fromarray(_gradient(300, 200))
    paths["rgb"] = folder / "a_rgb.jpg"
    rgb.save(paths["rgb"], quality=90)
    paths["l"] = folder / "b_gray.png"
    rgb.convert("L").resize((64, 80)).save(paths["l"])
    rgba = Image.fromarray(_gradient(500, 500, 1)).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.arange(500, dtype=np.uint8)[None] // 2, (500, 1))))
    paths["rgba"] = folder / "c_rgba.png"
    rgba.save(paths["rgba"])
    paths["p"] = folder / "d_palette.gif"
    rgb.resize((257, 300)).convert("P").save(paths["p"])
    paths["cmyk"] = folder / "e_cmyk.jpg"
    rgb.resize((320, 240)).convert("CMYK").save(paths["cmyk"])
    paths["la"] = folder / "f_la.png"
    rgba.convert("LA").resize((120, 90)).save(paths["la"])
    paths["i16"] = folder / "g_gray16.png"
    Image.fromarray((np.asarray(rgb.convert("L"), np.uint16) * 257)).save(paths["i16"])
    return paths


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    return folder, make_images(folder)


def test_class_names_ship_with_the_package():
    names = imagenet_categories()
    assert len(names) == 1000 and len(set(names)) == 1000
    assert (names[0], names[281], names[999]) == ("tench", "tabby", "toilet tissue")


@pytest.mark.parametrize("mode", ["rgb", "l", "rgba", "p", "cmyk", "la", "i16"])
def test_load_image_gives_rgb(image_dir, mode):
    img = load_image(image_dir[1][mode])
    assert img.mode == "RGB"
    x = torchvision_preprocess()(img)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32 and np.isfinite(x).all()


def test_transparency_is_composited_on_white(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (10, 10), (0, 0, 0, 0)).save(path)
    assert load_image(path).getpixel((3, 3)) == (255, 255, 255)


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "g16.png"
    Image.fromarray(np.full((4, 4), 32896, np.uint16)).save(path)  # 128 * 257
    assert load_image(path).getpixel((0, 0)) == (128, 128, 128)


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    Image.fromarray(_gradient(40, 20)).save(path, exif=exif)
    assert load_image(path).size == (20, 40)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow warns below 2x its limit; we refuse
def test_decompression_bomb_is_refused(monkeypatch, image_dir, tmp_path, weights_file, capsys):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(image_dir[1]["l"])  # 64 x 80 = 5120 pixels: over 2x the limit
    small = tmp_path / "warn_zone.png"
    Image.new("RGB", (40, 30)).save(small)  # 1200 pixels: Pillow only warns; we refuse
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(small)
    assert main(["classify", str(small), "--weights", str(weights_file), "--json"]) == 1
    (entry,) = json.loads(capsys.readouterr().out)
    assert "MAX_IMAGE_PIXELS" in entry["error"] and entry["top"] == []


def test_preprocess_torchvision_by_hand(tmp_path):
    img = Image.fromarray(_gradient(300, 200, 3))
    x = torchvision_preprocess()(img)
    resized = img.resize((384, 256), Image.Resampling.BILINEAR)  # shorter side 256: int(256 * 300 / 200)
    crop = np.asarray(resized, np.float32)[16:240, 80:304] / 255.0
    want = ((crop - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).transpose(2, 0, 1)
    assert np.allclose(x, want, atol=1e-6)


def test_preprocess_json_round_trip_and_errors():
    spec = Preprocess(crop_size=227, resize="square", channels="BGR", value_range=255.0, mean=(104, 117, 123), std=(1, 1, 1))
    assert Preprocess.from_json(spec.to_json()) == spec
    with pytest.raises(PreprocessError, match="unknown fields: bogus"):
        Preprocess.from_json(json.dumps({**json.loads(spec.to_json()), "bogus": 1}))
    with pytest.raises(PreprocessError, match="resize_size"):
        Preprocess(crop_size=300, resize_size=256)
    with pytest.raises(PreprocessError, match="not valid JSON"):
        Preprocess.from_json("{")


def test_classify_every_mode_via_cli(image_dir, weights_file, capsys):
    folder, paths = image_dir
    assert main(["classify", str(folder), "--weights", str(weights_file), "--batch", "3", "--top", "3", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in results] == sorted(str(p) for p in paths.values())
    names = imagenet_categories()
    for r in results:
        assert r["error"] is None and len(r["top"]) == 3
        probs = [t["probability"] for t in r["top"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert all(names[t["index"]] == t["name"] for t in r["top"])


def test_the_files_preprocessing_is_applied(tmp_path, tv_params, image_dir, capsys):
    """A file whose metadata asks for BGR, 0-255, crop 200: classify must use exactly that."""
    spec = Preprocess(crop_size=200, resize_size=230, channels="BGR", value_range=255.0, mean=(100, 110, 120), std=(50, 60, 70))
    path = tmp_path / "custom.safetensors"
    save_weights(path, tv_params, {VARIANT_KEY: "torchvision", PREPROCESS_KEY: spec.to_json()})
    image = image_dir[1]["rgb"]
    assert main(["classify", str(image), "--weights", str(path), "--top", "5", "--json"]) == 0
    (got,) = json.loads(capsys.readouterr().out)
    want = AlexNet("torchvision", "numpy", weights=tv_params).predict(spec(load_image(image))[None], top=5)
    assert [t["index"] for t in got["top"]] == want.indices[0].tolist()
    assert np.allclose([t["probability"] for t in got["top"]], want.probabilities[0], rtol=1e-5)


def test_corrupt_files_are_reported_and_the_rest_classified(tmp_path, image_dir, weights_file, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = image_dir[1]
    (folder / "1_good.jpg").write_bytes(good["rgb"].read_bytes())
    (folder / "2_truncated.jpg").write_bytes(good["rgb"].read_bytes()[:600])
    (folder / "3_text.png").write_text("this is not a picture\n")
    (folder / "4_good.png").write_bytes(good["l"].read_bytes())
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    code = main(["classify", str(folder), "--weights", str(weights_file), "--batch", "2", "--json"])
    captured = capsys.readouterr()
    assert code == 1
    results = {r["path"].rsplit("/", 1)[-1]: r for r in json.loads(captured.out)}
    assert sorted(results) == ["1_good.jpg", "2_truncated.jpg", "3_text.png", "4_good.png"]
    assert results["1_good.jpg"]["top"] and results["4_good.png"]["top"]
    assert "truncated" in results["2_truncated.jpg"]["error"]
    assert "not an image" in results["3_text.png"]["error"]
    assert "2 of 4 images could not be classified" in captured.err


def test_text_output_without_a_progress_bar_when_piped(image_dir, weights_file, capsys):
    assert main(["classify", str(image_dir[1]["rgb"]), str(image_dir[1]["cmyk"]), "--weights", str(weights_file), "--top", "2"]) == 0
    out, err = capsys.readouterr()
    assert out.count("  1. ") == 2 and out.count("  2. ") == 2
    assert "img/s" not in err and "%|" not in err  # no tqdm bar: stdout is not a TTY


def test_weights_for_the_wrong_variant(image_dir, weights_file, capsys):
    assert main(["classify", str(image_dir[1]["rgb"]), "--weights", str(weights_file), "--variant", "caffe"]) == 2
    err = capsys.readouterr().err
    assert "do not fit the 'caffe' variant" in err and "'torchvision' variant" in err


def test_malicious_pth_is_refused_by_classify(tmp_path, image_dir, capsys):
    torch = pytest.importorskip("torch")
    import os

    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    torch.save({"features.0.weight": Payload()}, path)
    assert main(["classify", str(image_dir[1]["rgb"]), "--weights", str(path)]) == 2
    assert "refused" in capsys.readouterr().err
    assert not marker.exists()


def test_no_images_found(tmp_path, weights_file, capsys):
    assert main(["classify", str(tmp_path), "--weights", str(weights_file)]) == 2
    assert "no image files" in capsys.readouterr().err
