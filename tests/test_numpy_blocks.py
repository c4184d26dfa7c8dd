"""How the numpy backend cuts an op into blocks for its workers (``_blocks``, ``_each_block``,
``_scratch``): every output pixel is computed exactly once, whatever the block sizes, and the
result agrees with the float64 reference at each."""

import threading

import numpy as np
import pytest

from alexnet_aa.testing import relative_error
from alexnet_aa.testing.conformance import CONV_CASES

nb = pytest.importorskip("alexnet_aa_numpy")


@pytest.mark.parametrize("workers", [1, 2, 3, 8])
@pytest.mark.parametrize("n, rows, per_row, least", [
    (1, 55, 55, 722), (32, 55, 55, 722), (1, 13, 13, 256), (3, 7, 7, 384), (32, 7, 7, 384),
    (1, 27, 1, 27), (5, 27, 1, 27), (2, 1, 1, 1), (7, 3, 100, 1), (1, 1, 1, 10**9), (5, 1, 1, 10**9),
])
def test_blocks_cover_every_row_once(monkeypatch, workers, n, rows, per_row, least):
    monkeypatch.setattr(nb, "WORKERS", workers)
    blocks = nb._blocks(n, rows, per_row, least)
    seen = np.zeros((n, rows), dtype=int)
    for i0, i1, r0, r1 in blocks:
        assert 0 <= i0 < i1 <= n and 0 <= r0 < r1 <= rows
        assert (r0, r1) == (0, rows) or i1 == i0 + 1, "a block is whole images or rows of one image"
        seen[i0:i1, r0:r1] += 1
    assert (seen == 1).all()
    assert max((i1 - i0) * (r1 - r0) for i0, i1, r0, r1 in blocks) <= -(-n * rows // workers), "at most one worker's share"
    assert len(blocks) >= min(workers, n * rows), "every worker gets a block where there are rows enough"


def test_each_block_runs_every_index_once_across_workers(monkeypatch):
    monkeypatch.setattr(nb, "WORKERS", 3)
    seen, threads, lock = [], set(), threading.Lock()

    def run(indices):
        for i in indices:
            with lock:
                seen.append(i)
                threads.add(threading.get_ident())

    nb._each_block(run, 50)
    assert sorted(seen) == list(range(50)) and len(threads) >= 1


def test_scratch_arrays_are_aligned_disjoint_and_reused():
    a, b, c = nb._scratch(np.dtype(np.float32), 3, 17, 5)
    assert [x.size for x in (a, b, c)] == [3, 17, 5]
    assert all(x.ctypes.data % 64 == 0 for x in (a, b, c))
    a[:], b[:], c[:] = 1, 2, 3
    assert (a == 1).all() and (b == 2).all() and (c == 3).all()
    (again,) = nb._scratch(np.dtype(np.float32), 3)
    assert again.ctypes.data == a.ctypes.data, "a smaller request reuses the thread's buffer"


def _conv_case(name):
    n, c, h, w, o, k, s, p, g = CONV_CASES[name]
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    hwio = (rng.standard_normal((k, k, c // g, o)) / np.sqrt(k * k * c / g)).astype(np.float32)
    return x, hwio, rng.standard_normal(o).astype(np.float32), (s, s), (p, p), g


def _reference_conv(x, hwio, b, stride, padding, groups):
    return nb.NumpyBackend("float64")._conv2d_im2col(x.astype(np.float64), hwio.astype(np.float64),
                                                     b.astype(np.float64), stride, padding, groups, True)


@pytest.mark.parametrize("block_bytes, min_rows", [(1, 1), (4096, 3), (1 << 30, 1)], ids=["row", "few-rows", "whole"])
@pytest.mark.parametrize("name", ["tv-conv1-s4-p2", "groups2-k5-pad2", "tv-conv3-batch3"])
def test_im2col_agrees_whatever_the_blocks(monkeypatch, name, block_bytes, min_rows):
    monkeypatch.setattr(nb, "IM2COL_BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(nb, "IM2COL_MIN_ROWS", min_rows)
    x, hwio, b, stride, padding, groups = _conv_case(name)
    y = nb.NumpyBackend()._conv2d_im2col(x, hwio, b, stride, padding, groups, True)
    assert relative_error(y, _reference_conv(x, hwio, b, stride, padding, groups)) <= 1e-5


@pytest.mark.parametrize("tiles", [1, 9, 10**6], ids=["tile-row", "rows", "whole"])
@pytest.mark.parametrize("name", ["tv-conv2", "tv-conv3-batch3"])
def test_winograd_agrees_whatever_the_blocks(monkeypatch, name, tiles):
    monkeypatch.setattr(nb, "WINOGRAD_BLOCK_TILES", tiles)
    x, hwio, b, stride, padding, groups = _conv_case(name)
    be = nb.NumpyBackend()
    out, finite = be._conv2d_winograd(x, hwio.shape[0], nb.winograd.weight_transform(hwio), b, padding, True)
    assert finite.all()
    assert relative_error(out, _reference_conv(x, hwio, b, stride, padding, groups)) <= 1e-5


@pytest.mark.parametrize("name", ["tv-conv2", "tv-conv3-batch3"])
def test_the_suite_runs_winograd_on_two_cores(monkeypatch, name):
    """On a 2-core machine (CI's) these two conformance cases take the Winograd path, so its error
    is on the suite report's conv2d line; ``paper-conv2`` (grouped) does not."""
    monkeypatch.setattr(nb, "WORKERS", 2)
    calls = []
    original = nb.NumpyBackend._conv2d_winograd
    monkeypatch.setattr(nb.NumpyBackend, "_conv2d_winograd", lambda self, *a: calls.append(1) or original(self, *a))
    for case in (name, "paper-conv2"):
        x, hwio, b, stride, padding, groups = _conv_case(case)
        be = nb.NumpyBackend()
        w = be.prepare({"w": np.ascontiguousarray(hwio.transpose(3, 2, 0, 1))})["w"]
        be.conv2d(x, w, b, stride, padding, groups, True)
    assert calls == [1]
