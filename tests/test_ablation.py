"""Ablations: the layer table varied by name (``paper+tanh``), listed by ``summary``, trained arm by arm by
``alexnet-aa ablate`` on every CPU backend, and the JSON and plot it writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from alexnet_aa import AlexNet, get_architecture
from alexnet_aa.ablation import EXPERIMENTS, arm_variant, chosen_lr, epochs_to, summarize
from alexnet_aa.architecture import ABLATIONS, LRN, Conv, Dropout, Linear, MaxPool, count_params, variant_name
from alexnet_aa.cli import main
from alexnet_aa.preprocess import default_preprocess

PIL = pytest.importorskip("PIL.Image")

# -- the table, varied ---------------------------------------------------------------------------------


def test_each_ablation_changes_what_it_names():
    paper = get_architecture("paper")
    tanh = get_architecture("paper+tanh")
    assert [getattr(layer, "activation", "-") for layer in tanh.layers_of(Conv, Linear)] == ["tanh"] * 7 + [None]
    assert not get_architecture("paper+no-lrn").layers_of(LRN) and len(paper.layers_of(LRN)) == 2
    assert {(p.kernel, p.stride) for p in get_architecture("paper+no-overlap").layers_of(MaxPool)} == {(2, 2)}
    assert {d.p for d in get_architecture("paper+dropout=0.25").layers_of(Dropout)} == {0.25}
    assert {c.groups for c in get_architecture("paper+groups=1").layers_of(Conv)} == {1}
    # groups=1 doubles the weights of conv2, conv4 and conv5: O·(C/g)·K² with g 2 → 1
    grouped = [c for c in paper.layers_of(Conv) if c.groups == 2]
    added = sum(c.out_channels * c.in_channels // 2 * c.kernel**2 for c in grouped)
    assert count_params("paper+groups=1") - count_params("paper") == added == 1_413_120
    # input=S: the map pool5 gives at 67x67 is 1x1, so fc6 takes 256 features
    small = get_architecture("paper+input=67")
    assert small.input_size == 67 and small.layers_of(Linear)[0].in_features == 256
    assert get_architecture("torchvision+input=64").layers_of(Linear)[0].in_features == 9216  # the adaptive pool
    # 2x2 windows in floor mode keep Caffe's ceil-mode maps (27, 13, 6): the same fc6
    caffe = get_architecture("caffe+no-overlap")
    assert {p.ceil_mode for p in caffe.layers_of(MaxPool)} == {False} and count_params("caffe+no-overlap") == count_params("caffe")
    # fc6 follows the map where the sizes do change
    assert get_architecture("paper+no-overlap+input=99").layers_of(Linear)[0].in_features == 256 * 2 * 2
    assert variant_name("paper+dropout=0.123456789") == "paper+dropout=0.123456789"  # the name keeps p exactly
    assert set(ABLATIONS) == {"tanh", "sigmoid", "no-lrn", "no-overlap", "dropout=P", "groups=1", "input=S"}


def test_ablated_names_are_canonical_and_carry_through():
    assert variant_name("paper+input=67+no-lrn+tanh") == "paper+tanh+no-lrn+input=67"
    model = AlexNet("paper+no-lrn+tanh", "numpy")
    assert model.variant == "paper+tanh+no-lrn" and model.arch.base == "paper"
    pre = default_preprocess("paper+input=67")
    assert (pre.crop_size, pre.resize_size) == (67, 77) and pre.channels == "BGR"  # the base's recipe, scaled
    x = np.random.default_rng(0).standard_normal((1, 3, 67, 67)).astype(np.float32)
    assert AlexNet("paper+sigmoid+input=67", "numpy", num_classes=3)(x).shape == (1, 3)
    with pytest.raises(ValueError, match="takes 67x67 input, got 227x227"):
        AlexNet("paper+input=67", "numpy")(np.zeros((1, 3, 227, 227), np.float32))


@pytest.mark.parametrize("variant, message", [
    ("paper+relu", r"unknown ablation 'relu'; known: tanh, sigmoid, no-lrn"),
    ("paper+tanh+sigmoid", r"ablations 'tanh' and 'sigmoid' change the same thing"),
    ("torchvision+no-lrn", r"ablation 'no-lrn' changes nothing in the torchvision table"),
    ("torchvision+groups=1", r"ablation 'groups=1' changes nothing"),
    ("paper+dropout=0.5", r"ablation 'dropout=0.5' changes nothing"),
    ("paper+dropout=1", r"ablation 'dropout=1': expected a probability in \[0, 1\), got '1'"),
    ("paper+input=x", r"ablation 'input=x': expected an input side >= 1"),
    ("paper+input=40", r"input 40x40 is too small for paper: pool5 would output"),
    ("torchvision+input=50", r"the torchvision table takes inputs >= 63"),
    ("paper+groups=2", r"unknown ablation 'groups=2'"),
    ("alexnet+tanh", r"unknown variant 'alexnet'"),
])
def test_an_ablation_that_is_not_one_is_refused(variant, message):
    with pytest.raises(ValueError, match=message):
        get_architecture(variant)


def test_summary_lists_the_ablations_with_their_costs(capsys):
    assert main(["summary", "--ablations"]) == 0
    out = capsys.readouterr().out
    assert "Ablations of AlexNet (paper): 60,965,224 parameters, 724,406,816 MACs" in out
    assert "groups=1      +1,413,120 (+2.3%)" in out and "no-lrn" in out
    assert main(["summary", "--variant", "torchvision", "--ablations"]) == 0
    assert "not applicable: ablation 'no-lrn' changes nothing in the torchvision table" in capsys.readouterr().out
    assert main(["summary", "--variant", "paper", "--ablate", "tanh", "--ablate", "groups=1"]) == 0
    out = capsys.readouterr().out
    assert "AlexNet (paper+tanh+groups=1)" in out and "groups=1: params +1,413,120 (+2.3%)" in out
    assert "11x11 /4 p0 g1 +tanh" in out and "4096->1000 " in out.replace("4096->1000\n", "4096->1000 ")
    assert main(["summary", "--ablate", "relu"]) == 2
    assert "unknown ablation 'relu'" in capsys.readouterr().err


# -- alexnet-aa ablate -----------------------------------------------------------------------------------


def _folder(root: Path, per_class: int = 6) -> Path:
    """Noisy images of one colour per class (three classes)."""
    rng = np.random.default_rng(0)
    for name, colour in (("blue", (40, 60, 200)), ("red", (200, 50, 40)), ("green", (40, 190, 60))):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(colour, 40, size=(24 + i, 30 - i, 3)), 0, 255).astype(np.uint8)
            PIL.fromarray(pixels).save(root / name / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return _folder(tmp_path_factory.mktemp("data"))


SMALL = ["--variant", "paper", "--input-size", "67", "--init", "he", "--epochs", "2", "--batch", "6", "--val-split", "0.34"]


@pytest.mark.parametrize("backend", ["numpy", "mlx", "array-api"])
def test_ablate_writes_the_json_and_plot_of_every_arm(data, tmp_path, capsys, backend):
    """Every CPU backend trains both arms over two seeds; the JSON holds each run's epochs and the
    spread per arm; the PNG is a real image."""
    pytest.importorskip("matplotlib")
    if backend == "mlx":
        pytest.importorskip("mlx.core", reason="the mlx backend needs mlx")
    out = tmp_path / "out"
    status = main(["ablate", str(data), "--what", "lrn", *SMALL, "--seeds", "0,1", "--lr", "1e-4",
                   "--backend", backend, "--out", str(out)])
    stdout, err = capsys.readouterr()
    assert status == 0, err
    result = json.loads((out / "ablate-lrn.json").read_text())
    assert result["format"] == "alexnet_aa.ablation/1" and result["config"]["backend"] == backend
    assert [a["variant"] for a in result["arms"]] == ["paper+input=67", "paper+no-lrn+input=67"]
    for arm in result["arms"]:
        assert [(r["seed"], r["lr"]) for r in arm["runs"]] == [(0, 1e-4), (1, 1e-4)]
        for run in arm["runs"]:
            assert [e["epoch"] for e in run["history"]] == [1, 2]
            assert all(0 <= e["train_error"] <= 1 and 0 <= e["val_error"] <= 1 and math.isfinite(e["train_loss"])
                       for e in run["history"])
        s = arm["summary"]
        finals = [r["history"][-1]["train_error"] for r in arm["runs"]]
        assert s["final_train_error"] == {"mean": pytest.approx(np.mean(finals)), "min": min(finals), "max": max(finals),
                                          "missing": 0}
    assert arm["params"] == count_params("paper+no-lrn+input=67", 3)
    png = PIL.open(out / "ablate-lrn.png")
    assert png.size[0] > 800 and png.getextrema() != ((255, 255),) * 3
    assert "lrn: local response normalisation lowers the error" in stdout
    assert "paper+no-lrn+input=67" in stdout and "wrote" in stdout
    assert not list(out.glob("**/*.safetensors"))  # the checkpoints lived in a temporary folder


def test_ablate_keeps_finished_runs_and_its_checkpoints_load(data, tmp_path, capsys):
    """A rerun of the same configuration trains nothing again; another configuration starts afresh; a
    kept checkpoint of an ablated arm is a weights file like any other (its variant in its metadata)."""
    out = tmp_path / "out"
    args = ["ablate", str(data), "--what", "relu-vs-tanh", *SMALL, "--epochs", "1", "--seeds", "3", "--lr", "1e-4",
            "--out", str(out), "--keep-checkpoints"]
    assert main(args) == 0
    first = json.loads((out / "ablate-relu-vs-tanh.json").read_text())
    capsys.readouterr()
    assert main(args) == 0
    _, err = capsys.readouterr()
    assert "keeping its 3 finished run(s)" in err and "training AlexNet" not in err
    assert json.loads((out / "ablate-relu-vs-tanh.json").read_text())["arms"] == first["arms"]
    checkpoint = out / "checkpoints" / "tanh-seed3-lr0.0001.safetensors"
    model = AlexNet("paper+tanh+input=67", "numpy", weights=checkpoint)
    assert model.arch.num_classes == 3 and model.preprocess.crop_size == 67
    assert main(["classify", str(next(data.glob("red/*.png"))), "--weights", str(checkpoint), "--top", "2"]) == 0
    assert "red" in capsys.readouterr().out
    assert main([*args[:-3], "--batch", "4", "--out", str(out)]) == 0  # another recipe: none of the runs hold
    assert "holds another configuration's runs; starting afresh" in capsys.readouterr().err
    assert main([*args[:-3], "--batch", "4", "--seeds", "3,4", "--out", str(out)]) == 0  # one seed more: 3 runs more
    err = capsys.readouterr().err
    assert "keeping its 3 finished run(s)" in err and err.count("training AlexNet") == 3


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning", "ignore:invalid value encountered:RuntimeWarning")
def test_the_learning_rate_sweep_keeps_each_arms_fastest_and_records_a_divergence(data, tmp_path, capsys):
    """``--lr A,B``: the first seed trains at each rate; a rate whose loss stops being finite is a
    recorded result, ranked last, and the other seeds train at the kept rate."""
    out = tmp_path / "out"
    assert main(["ablate", str(data), "--what", "dropout", *SMALL, "--seeds", "0,1", "--lr", "1e6,1e-4",
                 "--out", str(out)]) == 0
    result = json.loads((out / "ablate-dropout.json").read_text())
    for arm in result["arms"]:
        assert arm["lr"] == 1e-4
        diverged, kept = arm["sweep"]
        assert diverged["lr"] == 1e6 and "finite" in diverged["stopped"] and kept["stopped"] is None
        assert sorted((r["seed"], r["lr"]) for r in arm["runs"]) == [(0, 1e-4), (0, 1e6), (1, 1e-4)]
        assert arm["summary"]["diverged"] == 0  # the summary covers the kept rate's runs
    assert "lr 1e+06" in capsys.readouterr().err
    assert main(["ablate", str(data), "--what", "dropout", *SMALL, "--seeds", "0,1", "--lr", "1e6,1e7",
                 "--out", str(tmp_path / "diverged")]) == 0
    result = json.loads((tmp_path / "diverged" / "ablate-dropout.json").read_text())
    for arm in result["arms"]:
        assert [r["seed"] for r in arm["runs"]] == [0, 0] and arm["summary"]["diverged"] == 1
        assert arm["summary"]["final_train_error"] == {"mean": None, "min": None, "max": None, "missing": 1}
    out, err = capsys.readouterr()
    assert "diverged at every rate of the sweep (1e+06, 1e+07): seed 1 is not trained" in err
    assert "diverged in 1 run(s)" in out


def test_chosen_lr_and_the_summary_rules():
    def run(seed, lr, errors, stopped=False):
        r = {"seed": seed, "lr": lr, "history": [{"train_error": e, "train_loss": e, "val_error": e, "val_loss": e,
                                                 "seconds": 1.0} for e in errors]}
        return {**r, "stopped": "diverged"} if stopped else r

    runs = [run(0, 0.1, [0.5, 0.1], stopped=True), run(0, 0.01, [0.6, 0.3]), run(0, 0.001, [0.7, 0.3])]
    assert chosen_lr(runs, 0, [0.1, 0.01, 0.001]) == 0.01  # the diverged one ranks last; a tie goes to the first
    assert epochs_to([0.9, 0.3, 0.2, 0.1], 0.25) == 3 and epochs_to([0.9], 0.25) is None
    s = summarize([run(0, 0.01, [0.6, 0.2]), run(1, 0.01, [0.5, 0.4])], 0.25)
    assert s["final_train_error"] == {"mean": pytest.approx(0.3), "min": 0.2, "max": 0.4, "missing": 0}
    assert s["epochs_to_0.25"] == {"mean": None, "min": None, "max": None, "missing": 1}
    s = summarize([run(0, 0.01, [0.6, 0.2]), run(1, 0.01, [0.5], stopped=True)], 0.25)
    assert s["diverged"] == 1 and s["final_train_error"]["missing"] == 1  # a diverged run has no last epoch


@pytest.mark.parametrize("args, message", [
    (["--what", "lrn", "--variant", "torchvision"], "--what lrn on the torchvision variant: ablation 'no-lrn' changes nothing"),
    (["--what", "groups", "--input-size", "30"], "input 30x30 is too small for paper"),
    (["--what", "lrn", "--target-error", "1.5"], "--target-error: expected a training error in (0, 1)"),
    (["--what", "lrn", "--seeds", "1,1"], "--seeds: expected distinct seeds >= 0, got [1, 1]"),
    (["--what", "lrn", "--lr", "1e-3,0"], "--lr: expected distinct positive learning rates, got [0.001, 0.0]"),
])
def test_ablate_refuses_what_cannot_run_before_training(data, tmp_path, capsys, args, message):
    assert main(["ablate", str(data), *args, "--out", str(tmp_path / "out")]) == 2
    _, err = capsys.readouterr()
    assert message in err and "training AlexNet" not in err


def test_every_experiment_names_arms_the_paper_table_takes():
    for what, (claim, arms) in EXPERIMENTS.items():
        assert claim and arms[0].ablations == () and len(arms) >= 2
        assert len({arm_variant("paper", arm, 67) for arm in arms}) == len(arms), what
