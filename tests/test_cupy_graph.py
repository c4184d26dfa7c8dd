"""The cupy backend's captured forward and own linear kernels, on a GPU (skipped, with the reason, without one).

A replayed CUDA graph runs the eager forward's kernels with the same arguments: its logits must be the
eager logits bit for bit, at every dtype, at batch 1 and above, on every replay; a returned array is
the caller's (later replays never write into it). The float32 linear's GEMV and GEMM give the same bits.
What the CPU can check of the same code runs in tests/test_cuda_kernels.py (the kernels, emulated) and
tests/test_model.py (the model's per-shape recordings).
"""

from __future__ import annotations

import numpy as np
import pytest

from alexnet_aa import AlexNet
from alexnet_aa.architecture import get_architecture
from alexnet_aa.backend import backend_class
from alexnet_aa.weights import he_weights

try:
    _cls = backend_class("cupy")
    _ok, _why = _cls.available()
except Exception as exc:  # not installed, or a broken install: the reason is the skip's
    _ok, _why = False, f"{type(exc).__name__}: {exc}"
pytestmark = pytest.mark.skipif(not _ok, reason=f"cupy backend unavailable: {_why}")


def _model(variant, seed, **options):
    weights = he_weights(get_architecture(variant), np.random.default_rng(seed))
    return AlexNet(variant, "cupy", weights=weights, **options), weights


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("variant", ["paper", "torchvision"])
@pytest.mark.parametrize("batch", [1, 3])
def test_replayed_graph_is_bitwise_the_eager_forward(variant, batch, dtype):
    import cupy as cp

    captured, weights = _model(variant, batch, dtype=dtype)
    eager = AlexNet(variant, "cupy", weights=weights, dtype=dtype, capture=False)
    size = captured.arch.input_size
    rng = np.random.default_rng(7)
    xs = [rng.standard_normal((batch, 3, size, size)).astype(np.float32) for _ in range(3)]
    outs = [captured(x) for x in xs]  # the first records, the others replay
    kept = [o.copy() for o in outs]
    for x, out, copy in zip(xs, outs, kept):
        want = captured.backend.to_host(eager(x))
        assert np.array_equal(captured.backend.to_host(out), want, equal_nan=True), (
            f"{variant} batch {batch} {dtype}: replay differs from the eager forward by "
            f"{np.nanmax(np.abs(captured.backend.to_host(out).astype(np.float64) - want)):.3g}")
        assert bool(cp.all((out == copy) | cp.isnan(out))), "a later replay wrote into an earlier result"
    assert [replay is not None for replay in captured._captured.values()] == [True], "one recording, replayed"


def test_capture_is_off_with_capture_false_and_with_tf32(monkeypatch):
    model, _ = _model("torchvision", 0, capture=False)
    assert model.backend.capture(lambda x: x, None) is None
    monkeypatch.setenv("CUPY_TF32", "1")
    assert _cls(tf32=True).capture(lambda x: x, None) is None


@pytest.mark.parametrize("batch", [1, 8, 17, 128])
def test_linear_gemv_and_gemm_give_the_same_bits(batch):
    import cupy as cp

    from alexnet_aa_cupy import kernels

    rng = np.random.default_rng(batch)
    x = cp.asarray(rng.standard_normal((batch, 9216)).astype(np.float32))
    w_io = cp.asarray((rng.standard_normal((9216, 4096)) / 96).astype(np.float32))
    b = cp.asarray(rng.standard_normal(4096).astype(np.float32))
    gemv = kernels.linear(x, w_io, b, True, algo="gemv")
    for tile in kernels.LINEAR_TILES:
        assert bool(cp.array_equal(kernels.linear(x, w_io, b, True, algo="gemm", tile=tile), gemv)), tile
    ref = np.maximum(cp.asnumpy(x).astype(np.float64) @ cp.asnumpy(w_io).astype(np.float64) + cp.asnumpy(b), 0)
    err = np.linalg.norm(cp.asnumpy(gemv) - ref) / np.linalg.norm(ref)
    assert err < 1e-6, err
