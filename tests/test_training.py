"""Training: the optimizer and its schedule, the image folder and its augmentation, and
``alexnet-aa train`` end to end — learning, checkpoints, bitwise resume, Ctrl-C, bad input.

The update rule itself is checked on every backend by the conformance suite's ``test_sgd_steps``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from alexnet_aa import AlexNet, get_architecture
from alexnet_aa.cli import main
from alexnet_aa.data import Augment, DataError, ImageFolder, batches, pca_lighting, ten_crops
from alexnet_aa.images import load_image
from alexnet_aa.model import NonFiniteLossError
from alexnet_aa.preprocess import torchvision_preprocess
from alexnet_aa.training import SGD, Schedule, load_checkpoint
from alexnet_aa.weights import WeightsFileError, he_weights, load_weights, save_weights

PIL = pytest.importorskip("PIL.Image")
pytest.importorskip("matplotlib", reason="the training plot needs matplotlib (alexnet-aa[train])")

#: What every run of these tests shares: small inputs (the torchvision variant takes any size >= 63).
FAST = ["--variant", "torchvision", "--input-size", "64", "--batch", "6", "--no-progress"]


def _folder(root: Path, per_class: int = 8, classes=(("blue", (40, 60, 200)), ("red", (200, 50, 40)))) -> Path:
    """Noisy images of one colour per class, of varied sizes and aspect ratios."""
    rng = np.random.default_rng(0)
    for name, colour in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = 40 + 4 * i, 56 - 2 * i
            pixels = np.clip(rng.normal(colour, 40, size=(h, w, 3)), 0, 255).astype(np.uint8)
            PIL.fromarray(pixels).save(root / name / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return _folder(tmp_path_factory.mktemp("data"))


def _train(args: list[str], capsys) -> tuple[int, str, str]:
    status = main(["train", *map(str, args)])
    out, err = capsys.readouterr()
    return status, out, err


# -- the optimizer and the schedule ------------------------------------------------------------


def test_sgd_rejects_bad_hyper_parameters():
    for kwargs, message in (({"lr": 0}, r"\[SGD\] lr: expected a finite number in \(0, inf\), got 0"),
                            ({"lr": 0.1, "momentum": 1.0}, r"\[SGD\] momentum: expected a finite number in \[0, 1\)"),
                            ({"lr": 0.1, "weight_decay": -1}, r"\[SGD\] weight_decay"),
                            ({"lr": float("nan")}, r"\[SGD\] lr")):
        with pytest.raises(ValueError, match=message):
            SGD(**kwargs)


def test_sgd_is_pytorchs_while_lr_is_constant_and_not_after_a_drop():
    """The docs' claim: the paper's rule and ``torch.optim.SGD`` give the same weights while the
    learning rate is constant (``v = −lr·b``) and different ones after it changes."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    w0, grads = rng.standard_normal(50), rng.standard_normal((8, 50))
    ours, opt = {"fc8.weight": w0.copy()}, SGD(0.1, 0.9, 5e-4)
    theirs = torch.tensor(w0.copy(), requires_grad=True)
    peer = torch.optim.SGD([theirs], lr=0.1, momentum=0.9, weight_decay=5e-4)
    gaps = []
    for step, g in enumerate(grads):
        if step == 4:
            opt.lr = 0.01
            for group in peer.param_groups:
                group["lr"] = 0.01
        # the same gradient, at the same weights: each side's own (they agree until the drop)
        ours = opt.step(ours, {"fc8.weight": g + ours["fc8.weight"] ** 2})
        theirs.grad = torch.tensor(g) + theirs.detach() ** 2
        peer.step()
        gaps.append(float(np.abs(ours["fc8.weight"] - theirs.detach().numpy()).max()))
    assert max(gaps[:4]) < 1e-12 and min(gaps[4:]) > 1e-3, gaps


def test_bias_multipliers_are_caffes():
    opt = SGD(0.1, momentum=0.0, weight_decay=0.5, bias_lr_mult=2.0, bias_decay_mult=0.0)
    assert opt.rates("fc6.weight") == (0.1, 0.05) and opt.rates("fc6.bias") == (0.2, 0.0)


def test_step_and_plateau_schedules():
    step = Schedule.parse("step:2")
    assert [step.after_epoch(e, 1.0, None) for e in (1, 2, 3, 4)] == [1.0, 0.1, 1.0, 0.1]
    plateau, lr, rates = Schedule.parse("plateau:2"), 1.0, []
    for err in (0.5, 0.4, 0.45, 0.41, 0.3, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5):
        lr = plateau.after_epoch(0, lr, err)
        rates.append(lr)
    # two epochs without a new best: ÷10, at most three times (the paper's)
    assert [round(r, 6) for r in rates] == [1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 0.001, 0.001, 0.001]
    assert Schedule.from_json(plateau.to_json()) == plateau
    for bad in ("step", "step:0", "plateau:x", "cosine", "none:3"):
        with pytest.raises(ValueError, match=r"\[schedule\]"):
            Schedule.parse(bad)
    with pytest.raises(ValueError, match="needs a validation error"):
        Schedule.parse("plateau").after_epoch(1, 0.1, None)


# -- the data ---------------------------------------------------------------------------------


def test_image_folder_classes_and_stratified_split(tmp_path):
    root = _folder(tmp_path / "d", per_class=10, classes=(("b", (0, 0, 255)), ("a", (255, 0, 0)), ("c", (0, 255, 0))))
    (root / "a" / "deeper").mkdir()
    PIL.fromarray(np.zeros((9, 9, 3), np.uint8)).save(root / "a" / "deeper" / "x.jpg")
    (root / "a" / "notes.txt").write_text("not an image")
    folder = ImageFolder(root)
    assert folder.classes == ("a", "b", "c") and len(folder.samples) == 31
    train, val = folder.split(0.2, seed=3)
    assert sorted(s.label for s in val) == [0, 0, 1, 1, 2, 2]  # round(0.2 * n) of every class
    assert set(train).isdisjoint(val) and len(train) + len(val) == 31
    assert folder.split(0.2, seed=3) == (train, val) and folder.split(0.2, seed=4) != (train, val)
    assert folder.split(0.0, seed=3) == (list(folder.samples), [])


@pytest.mark.parametrize("layout, message", [
    ({}, "found no subfolder"),
    ({"only": 2}, "at least 2 class folders, found only 'only'"),
    ({"cats": 2, "dogs": 0}, "class folders without image files .*: dogs"),
])
def test_image_folder_refuses_what_cannot_be_trained_on(tmp_path, layout, message):
    for name, n in layout.items():
        (tmp_path / name).mkdir()
        for i in range(n):
            PIL.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / name / f"{i}.png")
    with pytest.raises(DataError, match=message):
        ImageFolder(tmp_path)


def test_a_split_needs_two_images_per_class(tmp_path):
    root = _folder(tmp_path, per_class=1)
    with pytest.raises(DataError, match="needs at least 2 per class"):
        ImageFolder(root).split(0.5, seed=0)


def test_paper_augmentation_is_a_crop_a_flip_and_one_colour_shift(data):
    pre = torchvision_preprocess()
    img = load_image(next((data / "red").iterdir()))
    scaled = np.asarray(pre.scaled(img), dtype=np.float32)
    eigval, eigvec = np.array([0.2, 0.02, 0.004]), np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))[0]
    x = Augment("paper", (eigval, eigvec))(img, pre, np.random.default_rng(7))
    rng = np.random.default_rng(7)  # the same draws, in the documented order
    top, left = int(rng.integers(scaled.shape[0] - 223)), int(rng.integers(scaled.shape[1] - 223))
    crop = scaled[top:top + 224, left:left + 224]
    crop = crop[:, ::-1] if rng.random() < 0.5 else crop
    shift = 255.0 * (eigvec @ (rng.normal(0.0, 0.1, 3) * eigval))
    np.testing.assert_allclose(x, pre.normalize(crop + shift.astype(np.float32)), rtol=0, atol=1e-5)
    assert not np.allclose(x, pre.normalize(crop)), "the colour noise must show"
    np.testing.assert_array_equal(Augment("none")(img, pre, np.random.default_rng(7)), pre(img))
    crops = ten_crops(img, pre)
    assert crops.shape == (10, 3, 224, 224)
    np.testing.assert_array_equal(crops[5:], crops[:5, :, :, ::-1])  # the flips of the first five
    np.testing.assert_allclose(crops[4], pre(img), atol=1e-5)  # the fifth is the center crop


def test_pca_lighting_finds_the_colour_axis(tmp_path):
    """Pixels that vary along one RGB direction: the first principal component is that direction."""
    axis = np.array([1.0, 2.0, -1.0]) / math.sqrt(6)
    rng = np.random.default_rng(0)
    (tmp_path / "c").mkdir()
    for i in range(4):
        t = rng.uniform(-60, 60, size=(30, 30, 1))
        PIL.fromarray(np.clip(128 + t * axis, 0, 255).astype(np.uint8)).save(tmp_path / "c" / f"{i}.png")
    samples = [(p, 0) for p in sorted((tmp_path / "c").iterdir())]
    eigval, eigvec = pca_lighting([type("S", (), {"path": p})() for p, _ in samples], torchvision_preprocess())
    assert eigval[0] > 50 * eigval[1] and abs(abs(eigvec[:, 0] @ axis) - 1) < 1e-3


def test_loader_order_is_the_seeds_and_not_the_threads(tmp_path):
    root = _folder(tmp_path / "d", per_class=5)
    bad = root / "red" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    folder, pre = ImageFolder(root), torchvision_preprocess()

    def run(workers):
        return list(batches(folder.samples, 3, pre, augment=Augment("paper"), seed=5, epoch=2, shuffle=True, workers=workers))

    one, four = run(1), run(4)
    assert [b.labels.tolist() for b in one] == [b.labels.tolist() for b in four]
    assert all(np.array_equal(a.x, b.x) for a, b in zip(one, four))
    skipped = [s for b in one for s in b.skipped]
    assert len(skipped) == 1 and skipped[0][0] == str(bad) and "not an image in one of the accepted formats" in skipped[0][1]
    assert sum(len(b.labels) for b in one) == len(folder.samples) - 1


# -- alexnet-aa train ----------------------------------------------------------------------------


def test_train_learns_and_writes_a_checkpoint_others_read(data, tmp_path, capsys):
    """From He's initialisation with the features frozen and no dropout (logistic regression on
    fc7's random features): the colours are learnt; the checkpoint is a weights file ``AlexNet`` and
    ``classify`` read, naming the folders. (With dropout, the noise of untrained features swamps
    so few steps; the paper's initialisation gives fc7 features of nearly one value: see the docs.)"""
    out = tmp_path / "run" / "ck.safetensors"
    status, stdout, err = _train([data, *FAST, "--batch", "4", "--init", "he", "--freeze", "fc7", "--no-dropout",
                                  "--lr", "0.00002", "--epochs", "8", "--val-split", "0.25", "--augment", "none",
                                  "--out", out], capsys)
    assert status == 0, err
    lines = [json.loads(line) for line in out.with_suffix(".metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == list(range(1, 9)) and lines[-1]["train_loss"] < lines[0]["train_loss"] / 3
    assert lines[-1]["train_accuracy"] >= 0.9 and lines[-1]["val_accuracy"] == 1.0, lines
    assert stdout.count("epoch ") >= 8 and "frozen up to fc7" in err and "2 classes, 12 training and 4 validation" in err
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = AlexNet("torchvision", weights=out)
    assert model.arch.num_classes == 2 and model.categories == ["blue", "red"] and model.preprocess.crop_size == 64
    start = he_weights(get_architecture("torchvision", 2), 0)
    trained = model.state_dict()
    assert all(np.array_equal(trained[n], start[n]) for n in start if not n.startswith("fc8"))
    assert not np.array_equal(trained["fc8.weight"], start["fc8.weight"])
    assert main(["classify", str(data / "red" / "00.png"), "--weights", str(out), "--top", "1"]) == 0
    assert "red" in capsys.readouterr().out


def _tensors(path: Path) -> dict[str, np.ndarray]:
    ckpt = load_checkpoint(path)
    return {**ckpt.weights, **{f"velocity.{n}": v for n, v in ckpt.velocity.items()}}


def test_one_epoch_then_resume_is_two_epochs_bit_for_bit(data, tmp_path, capsys):
    """Paper augmentation, dropout, momentum: every draw is keyed by seed and place, so the resumed
    run's weights and velocity equal the uninterrupted run's, bit for bit (numpy backend)."""
    common = [data, *FAST, "--init", "he", "--lr", "0.0005", "--seed", "4", "--schedule", "step:1"]
    assert _train([*common, "--epochs", "2", "--out", tmp_path / "straight.safetensors"], capsys)[0] == 0
    assert _train([*common, "--epochs", "1", "--out", tmp_path / "half.safetensors"], capsys)[0] == 0
    status, _, err = _train([*common, "--epochs", "2", "--resume", tmp_path / "half.safetensors",
                             "--out", tmp_path / "resumed.safetensors"], capsys)
    assert status == 0 and "resuming" in err and "after epoch 1" in err
    straight, resumed = _tensors(tmp_path / "straight.safetensors"), _tensors(tmp_path / "resumed.safetensors")
    assert straight.keys() == resumed.keys() and len(straight) == 32
    assert all(np.array_equal(straight[n], resumed[n]) for n in straight)
    a, b = (load_checkpoint(tmp_path / f"{n}.safetensors").state for n in ("straight", "resumed"))
    assert a["lr"] == b["lr"] == pytest.approx(0.0005 * 0.01)  # the schedule's state came along
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]


def test_ctrl_c_keeps_the_last_whole_checkpoint(data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "ck.safetensors"
    args = [data, *FAST, "--init", "he", "--lr", "0.0005", "--val-split", "0", "--out", out]
    assert _train([*args, "--epochs", "1"], capsys)[0] == 0
    first = out.read_bytes()
    calls = {"n": 0}
    original = AlexNet.train_step

    def interrupted(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(AlexNet, "train_step", interrupted)
    status, _, err = _train([*args, "--epochs", "3", "--resume", out], capsys)
    assert status == 130 and f"continue with --resume {out}" in err
    assert out.read_bytes() == first and not list(tmp_path.glob("*.partial"))


def test_a_non_finite_loss_stops_naming_the_step_and_keeps_the_checkpoint(data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "ck.safetensors"
    args = [data, *FAST, "--init", "he", "--lr", "0.0005", "--val-split", "0", "--out", out]
    assert _train([*args, "--epochs", "1"], capsys)[0] == 0
    first = out.read_bytes()
    original = AlexNet.train_step

    def poisoned(self, x, *a, **k):
        return original(self, x * np.float32("nan"), *a, **k)

    monkeypatch.setattr(AlexNet, "train_step", poisoned)
    status, _, err = _train([*args, "--epochs", "2", "--resume", out], capsys)
    assert status == 2 and "epoch 2, step 1 (lr 0.0005)" in err and "loss: expected a finite value, got nan" in err
    assert f"last good checkpoint, of epoch 1, is {out}" in err and out.read_bytes() == first


def test_fine_tuning_from_a_weights_file(data, tmp_path, capsys):
    """``--weights`` of another head needs ``--fresh-head``; ``--freeze conv5`` keeps every conv tensor."""
    start = tmp_path / "start.safetensors"
    save_weights(start, he_weights(get_architecture("torchvision"), 3))
    out = tmp_path / "tuned.safetensors"
    args = [data, *FAST, "--weights", start, "--epochs", "1", "--lr", "0.0005", "--out", out]
    status, _, err = _train(args, capsys)
    assert status == 2 and "has a 1000-class head" in err and "--fresh-head" in err
    status, out_text, err = _train([*args, "--fresh-head", "--freeze", "conv5", "--val-split", "0.25", "--ten-crop"], capsys)
    assert status == 0, err
    assert json.loads(out.with_suffix(".metrics.jsonl").read_text())["val_accuracy"] is not None  # ten-crop averages
    before, after = load_weights(start), load_weights(out)
    assert all(np.array_equal(after[n], before[n]) for n in before if n.startswith("conv"))
    assert not np.array_equal(after["fc6.weight"], before["fc6.weight"]) and after["fc8.bias"].shape == (2,)
    assert "along ImageNet's principal components" in err  # fine-tuning's default colour noise


@pytest.mark.parametrize("extra, message", [
    (["--freeze", "fc9"], r"\[freeze\] layer: expected one of conv1, conv2, conv3, conv4, conv5, fc6, fc7, fc8"),
    (["--freeze", "fc8"], "leaves nothing to train"),
    (["--schedule", "plateau", "--val-split", "0"], "needs --val-split > 0"),
    (["--variant", "paper"], "the paper variant takes 227x227 input only"),
    (["--out", "ck.npz"], "expected a .safetensors path"),
    (["--val-split", "1.5"], r"val_split: expected a fraction in \[0, 1\)"),
])
def test_bad_options_fail_before_any_step(data, tmp_path, capsys, extra, message):
    status, _, err = _train([data, *FAST, "--epochs", "1", "--out", tmp_path / "ck.safetensors", *extra], capsys)
    assert status == 2 and "alexnet-aa train: error:" in err
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "ck.safetensors").exists()


def test_bad_data_and_bad_resumes(data, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    status, _, err = _train([tmp_path / "empty", *FAST, "--out", tmp_path / "x.safetensors"], capsys)
    assert status == 2 and "found no subfolder" in err
    out = tmp_path / "ck.safetensors"
    assert _train([data, *FAST, "--epochs", "1", "--lr", "0.0005", "--init", "he", "--out", out], capsys)[0] == 0
    status, _, err = _train([data, "--variant", "paper", "--epochs", "2", "--resume", out, "--out", out], capsys)
    assert status == 2 and "the checkpoint holds a 'torchvision' model, not 'paper'" in err
    other = _folder(tmp_path / "three", per_class=3, classes=(("a", (1, 2, 3)), ("b", (9, 9, 9)), ("c", (200, 0, 0))))
    status, _, err = _train([other, *FAST, "--epochs", "2", "--resume", out, "--out", out], capsys)
    assert status == 2 and "its classes ['blue', 'red'] are not the classes of" in err
    status, _, err = _train([data, *FAST, "--epochs", "1", "--resume", out, "--out", out], capsys)
    assert status == 2 and "holds epoch 1 already" in err
    weights_only = tmp_path / "w.safetensors"
    save_weights(weights_only, he_weights(get_architecture("torchvision", 2), 0))
    with pytest.raises(WeightsFileError, match="not a training checkpoint"):
        load_checkpoint(weights_only)


def test_unreadable_images_are_reported_skipped_and_counted(data, tmp_path, capsys):
    root = tmp_path / "d"
    for cls in ("blue", "red"):
        (root / cls).mkdir(parents=True)
        for f in (data / cls).iterdir():
            (root / cls / f.name).write_bytes(f.read_bytes())
    (root / "red" / "zz-broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    status, out, err = _train([root, *FAST, "--epochs", "1", "--lr", "0.0005", "--init", "he", "--val-split", "0",
                               "--out", tmp_path / "ck.safetensors"], capsys)
    assert status == 0 and "skipped " in err and "zz-broken.jpg" in err and "(1 skipped)" in out


def test_train_step_refuses_a_non_finite_loss_without_changing_weights():
    model = AlexNet("torchvision", weights=he_weights(get_architecture("torchvision", 3), 0), num_classes=3)
    before = model.state_dict()
    x = np.full((2, 3, 64, 64), np.nan, np.float32)
    with pytest.raises(NonFiniteLossError):
        model.train_step(x, np.array([0, 2]), SGD(0.01))
    assert all(np.array_equal(v, before[n]) for n, v in model.state_dict().items())


def test_the_offline_demo_folder(tmp_path):
    """``examples/lfw_folder.py`` writes scikit-image's 200 photos as a folder ``train`` reads."""
    pytest.importorskip("skimage", reason="the demo's photos ship with scikit-image (alexnet-aa[demo])")
    import importlib.util

    spec = importlib.util.spec_from_file_location("lfw_folder", Path(__file__).parents[1] / "examples" / "lfw_folder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.write_lfw_folder(tmp_path) == {"face": 100, "non_face": 100}
    folder = ImageFolder(tmp_path)
    assert folder.classes == ("face", "non_face") and len(folder.samples) == 200
    img = load_image(folder.samples[0].path)
    assert img.size == (25, 25) and img.mode == "RGB"


# -- what a review found -------------------------------------------------------------------------


def test_a_class_of_unreadable_files_only_is_refused(tmp_path, capsys):
    root = _folder(tmp_path / "d", per_class=3, classes=(("blue", (40, 60, 200)),))
    (root / "red").mkdir()
    for i in range(3):
        (root / "red" / f"{i}.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    status, _, err = _train([root, *FAST, "--epochs", "1", "--out", tmp_path / "ck.safetensors"], capsys)
    assert status == 2 and "class folders without a readable image: red (3 files)" in err


def test_decoding_in_threads_leaves_the_warning_filters_alone(data, monkeypatch):
    """The pixel limit is checked on the image's size, not by turning Pillow's warning into an error
    with warnings.catch_warnings() (not thread-safe: the loader decodes in threads). With a limit
    every image exceeds, every image is refused, whatever the threads' timing."""
    import warnings

    before = list(warnings.filters)
    monkeypatch.setattr(PIL, "MAX_IMAGE_PIXELS", 100)
    folder = ImageFolder(data)
    got = list(batches(folder.samples, 2, torchvision_preprocess(), workers=4))
    assert sum(len(b.labels) for b in got) == 0 and all("decompression bomb" in r for b in got for _, r in b.skipped)
    assert warnings.filters == before


def test_a_checkpoint_without_its_velocity_cannot_resume(data, tmp_path, capsys):
    """``weights import`` of a checkpoint keeps the weights only (no training state); a checkpoint
    whose velocity does not match the trained tensors is refused for --resume."""
    out = tmp_path / "ck.safetensors"
    args = [data, *FAST, "--lr", "0.0005", "--init", "he", "--freeze", "conv5"]
    assert _train([*args, "--epochs", "1", "--out", out], capsys)[0] == 0
    imported = tmp_path / "imported.safetensors"
    assert main(["weights", "import", str(out), "-o", str(imported)]) == 0
    capsys.readouterr()
    status, _, err = _train([data, *FAST, "--epochs", "2", "--resume", imported, "--out", out], capsys)
    assert status == 2 and "not a training checkpoint" in err
    ckpt = load_checkpoint(out)
    assert set(ckpt.velocity) == {n for n in ckpt.weights if n.startswith("fc")}  # frozen tensors have none
    tensors = {**ckpt.weights, **{f"velocity.{n}": v for n, v in ckpt.velocity.items() if n != "fc7.bias"}}
    partial = tmp_path / "partial.safetensors"
    save_weights(partial, tensors, ckpt.metadata)
    status, _, err = _train([data, *FAST, "--epochs", "2", "--resume", partial, "--out", out], capsys)
    assert status == 2 and "optimizer state does not match" in err and "missing ['fc7.bias']" in err


def test_resume_into_another_file_names_the_right_checkpoint(data, tmp_path, capsys, monkeypatch):
    first, second = tmp_path / "a.safetensors", tmp_path / "b" / "b.safetensors"
    args = [data, *FAST, "--lr", "0.0005", "--init", "he", "--val-split", "0"]
    assert _train([*args, "--epochs", "1", "--out", first], capsys)[0] == 0
    original = AlexNet.train_step
    monkeypatch.setattr(AlexNet, "train_step", lambda self, x, *a, **k: original(self, x * np.float32("nan"), *a, **k))
    status, _, err = _train([data, *FAST[2:], "--epochs", "2", "--resume", first, "--out", second], capsys)
    assert status == 2 and f"last good checkpoint, of epoch 1, is {first}" in err and not second.exists()

    def interrupted(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(AlexNet, "train_step", interrupted)
    status, _, err = _train([data, "--epochs", "2", "--resume", first, "--out", second, "--no-progress"], capsys)
    assert status == 130 and f"{first} holds epoch 1, the last whole one (continue with --resume {first})" in err


def test_input_size_applies_to_a_weights_files_recipe(data, tmp_path, capsys):
    start = tmp_path / "start.safetensors"
    save_weights(start, he_weights(get_architecture("torchvision", 2), 0),
                 {"alexnet_aa.preprocess": torchvision_preprocess().to_json()})
    status, _, err = _train([data, *FAST, "--weights", start, "--epochs", "1", "--lr", "0.0005",
                             "--out", tmp_path / "ck.safetensors"], capsys)
    assert status == 0 and "center crop 64" in err, err
    status, _, err = _train([data, "--input-size", "96", "--epochs", "2", "--resume", tmp_path / "ck.safetensors",
                             "--out", tmp_path / "ck.safetensors"], capsys)
    assert status == 2 and "the run trains at 64x64, not --input-size 96" in err


def test_a_changed_folder_cannot_resume(tmp_path, capsys):
    root = _folder(tmp_path / "d", per_class=6)
    out = tmp_path / "ck.safetensors"
    assert _train([root, *FAST, "--epochs", "1", "--lr", "0.0005", "--init", "he", "--out", out], capsys)[0] == 0
    assert load_checkpoint(out).state["step"] == 2  # 10 training images, batches of 6
    (root / "red" / "00.png").rename(root / "red" / "zz.png")
    status, _, err = _train([root, "--epochs", "2", "--resume", out, "--out", out], capsys)
    assert status == 2 and "no longer holds the images the run started with" in err


def test_a_failed_write_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    """The checkpoint is written through a temporary file and a rename: an error in the middle of
    the write (a full disk, Ctrl-C) leaves the old file whole and no temporary file."""
    import alexnet_aa.weights as weights_module

    path = tmp_path / "w.safetensors"
    save_weights(path, {"a": np.ones(1000, np.float32)})
    before = path.read_bytes()

    def failing(f, arrays, metadata):
        f.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(weights_module, "_write_safetensors", failing)
    with pytest.raises(OSError, match="No space left"):
        save_weights(path, {"a": np.zeros(1000, np.float32)})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_ten_crops_center_is_the_evaluation_crop():
    """An odd margin (256×259 after the resize): the fifth crop is exactly Preprocess's center crop."""
    pre = torchvision_preprocess()
    img = PIL.fromarray(np.random.default_rng(0).integers(0, 255, (259, 256, 3), dtype=np.uint8))
    np.testing.assert_array_equal(ten_crops(img, pre)[4], pre(img))


def test_bad_seed_is_refused(data, tmp_path, capsys):
    status, _, err = _train([data, *FAST, "--seed", "-1", "--out", tmp_path / "ck.safetensors"], capsys)
    assert status == 2 and "the seed >= 0" in err
