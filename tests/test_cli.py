"""The alexnet-aa command: summary, backends, run, compare (its exit status included)."""

import subprocess
import sys

import pytest

from alexnet_aa.cli import main


def test_summary_explain(capsys):
    assert main(["summary", "--variant", "paper", "--explain"]) == 0
    out = capsys.readouterr().out
    assert "60,965,224" in out and "724,406,816" in out
    assert "floor((227 - 11 + 2*0) / 4) + 1 = 55" in out
    assert main(["summary", "--variant", "torchvision"]) == 0
    out = capsys.readouterr().out
    assert "61,100,840" in out and "714,188,480" in out


def test_backends_lists_every_registered_one(capsys):
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    for name in ("array-api", "numpy", "cupy"):
        assert name in out
    assert "cupy       unavailable: " in out or "cupy       available" in out


def test_run_prints_shape_top5_and_time(capsys):
    assert main(["run", "--backend", "numpy", "--variant", "torchvision", "--batch", "2", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "output (2, 1000)" in out and "ms per image" in out and "image 1: top-5 classes" in out
    from alexnet_aa.categories import imagenet_categories

    top = out.split("image 0: top-5 classes ")[1].splitlines()[0]
    name, index = top.split(" (")[0].rsplit(" [", 1)  # "albatross [146] (0.591), ..." : the class name, then its index
    assert imagenet_categories()[int(index.rstrip("]"))] == name


def test_compare_agrees_and_reports_per_layer(capsys):
    assert main(["compare", "--variant", "caffe", "--backend", "numpy", "--backend", "array-api"]) == 0
    out = capsys.readouterr().out
    assert "numpy: agrees" in out and "array-api: agrees" in out
    assert out.count("\nconv") == 5 and "lrn2" in out and "fc8" in out


def test_compare_exit_status_when_a_backend_disagrees(monkeypatch, capsys):
    import alexnet_aa.backend as registry
    from alexnet_aa_numpy import NumpyBackend

    class Sloppy(NumpyBackend):
        def lrn(self, x, size, alpha, beta, k):
            return super().lrn(x, size, alpha * 10, beta, k)

    real = registry.backend_class
    monkeypatch.setattr(registry, "backend_class", lambda name: Sloppy if name == "numpy" else real(name))
    assert main(["compare", "--variant", "paper", "--backend", "numpy"]) == 1
    assert "numpy: DISAGREES" in capsys.readouterr().out


def test_unknown_backend_is_a_clear_error(capsys):
    assert main(["run", "--backend", "tpu"]) == 2
    assert "unknown backend 'tpu'" in capsys.readouterr().err


def test_python_dash_m():
    out = subprocess.run([sys.executable, "-m", "alexnet_aa", "summary", "--variant", "caffe"], capture_output=True, text=True)
    assert out.returncode == 0 and "ceil" in out.stdout


@pytest.mark.parametrize("argv", [["run", "--batch", "0"], ["compare", "--batch", "0"], ["run", "--repeats", "0"]])
def test_counts_must_be_positive(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and "must be >= 1, got 0" in capsys.readouterr().err


def test_compare_mistyped_backend_is_an_error(capsys):
    assert main(["compare", "--backend", "numpy", "--backend", "nmupy"]) == 2
    assert "unknown backend 'nmupy'" in capsys.readouterr().err


def test_a_closed_pipe_ends_quietly():
    """``alexnet-aa summary | head``: the reader goes away; no BrokenPipeError traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "alexnet_aa", "summary", "--explain"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the command writes: every write meets a closed pipe
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 1 and err == "", err
