"""The ``numpy`` backend: AlexNet on any CPU, fast, with NumPy and its BLAS.

Layout NHWC, conv weights HWIO ``(K_h, K_w, C/g, O)``, linear weights IO
``(F_in, F_out)``, converted once by the base class's ``prepare``. The
math of each op is on the reference op of the same name in
:mod:`alexnet_aa.reference`; the arguments arrive validated by
:mod:`alexnet_aa.ops`; this module says only how it computes.

* **conv2d** — im2col + GEMM. In NHWC an image patch ``(K_h, K_w, C)`` is
  ``K_h`` runs of ``K_w·C`` contiguous floats, so the patch matrix is one
  strided gather, and ``patches (N·H_out·W_out, K_h·K_w·C/g) @ w_g (K_h·K_w·C/g, O/g)``
  writes group ``g``'s columns of the NHWC output directly (no transposes),
  in blocks of output rows (whole images where one is small) whose patch
  matrix stays in the L2 cache (:data:`IM2COL_BLOCK_BYTES`). Bias and ReLU
  are applied in place on each block. Ungrouped 3×3 and 5×5 stride-1 layers
  (torchvision's conv2–conv5) run Winograd F(2×2, r×r) instead where the
  batch has :data:`WINOGRAD_MIN_TILES` output tiles per worker
  (:mod:`.winograd`; each weight is transformed once, on first use).
* **max_pool2d** — separable: a running ``np.maximum`` over the ``K_w``
  strided column views, then over the ``K_h`` row views of that
  (``K_h + K_w − 2`` passes instead of ``K_h·K_w − 1``); ceil mode pads the
  edge with −∞ only when needed.
* **lrn** — the window sum of squares as ``size − 1`` in-place shifted adds
  along the channel axis (views, no copy per window element), then
  ``x · (k + α/n · s)^(−β)`` with ``β = 0.75`` as two square roots (NumPy's
  ``power`` is scalar code; ``sqrt`` is SIMD), in blocks of pixels of
  :data:`LRN_BLOCK_BYTES` so every pass stays in cache.
* **linear** — one BLAS GEMM ``x · w`` per slice of output features (GEMV for
  a single row), bias and ReLU in place.

Every op is cut into blocks for a small thread pool (:data:`WORKERS` threads;
NumPy releases the GIL in its loops), with BLAS held to one thread meanwhile
(why: ``docs/backends/numpy.md``): blocks of images or output rows for a conv
(its gather, GEMM and epilogue in cache) and for pooling, drawn by the workers
from one queue (:func:`_each_block`; per-thread scratch, :func:`_scratch`);
feature columns of a linear layer and pixel blocks of LRN as one slice per
worker.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from alexnet_aa.architecture import conv_output_size, pool_output_size, pool_overhang
from alexnet_aa.arrays import to_numpy
from alexnet_aa.backend import Backend

from . import winograd

__all__ = [
    "COL2IM_BYTES",
    "IM2COL_BLOCK_BYTES",
    "IM2COL_MIN_ROWS",
    "LRN_BLOCK_BYTES",
    "SCRATCH_BYTES",
    "WINOGRAD_BLOCK_TILES",
    "WINOGRAD_MIN_TILES",
    "WORKERS",
    "NumpyBackend",
]

#: About the bytes of one block's patch matrix in conv2d's im2col path, per worker: it stays in the
#: L2 cache from its gather to its GEMM. conv1 at batch 32 (55×55 outputs, 363 wide) took 50 ms in
#: blocks of 1 MiB, 63 ms in whole images (4.4 MB) and 95 ms in 32 MB micro-batches (2-core Zen 3).
IM2COL_BLOCK_BYTES = 1024 * 1024
#: The fewest GEMM rows (output pixels) of an im2col block, where the batch allows: OpenBLAS packs
#: the whole weight (conv3–5: 2–3.5 MB) once per GEMM, which fewer rows do not amortise.
IM2COL_MIN_ROWS = 256
#: The fewest 2×2 output tiles (the rows of its α² GEMMs) of a Winograd block, where the batch
#: allows: one core's OpenBLAS ran conv4's GEMMs at 27 GFLOP/s in blocks of one 13×13 image (49
#: tiles) and at 63 GFLOP/s in blocks of 8 (392 tiles) (2-core Zen 3).
WINOGRAD_BLOCK_TILES = 384
#: Upper bound on one micro-batch's patch matrix in conv2d_backward's weight gradient.
SCRATCH_BYTES = 32 * 1024 * 1024
#: LRN works on blocks of pixels this large, so its passes stay in the L2 cache.
LRN_BLOCK_BYTES = 256 * 1024
#: Winograd runs where a layer's batch gives each worker at least this many 2×2 output tiles; with
#: fewer (batch 1 on a 13×13 map: 49 tiles) its GEMMs are too short to beat im2col's.
WINOGRAD_MIN_TILES = 64
#: Upper bound on the tap gradients a conv's input gradient adds from at a time (at least one image's).
COL2IM_BYTES = 4 * 1024 * 1024


def _micro_batch(n: int, bytes_per_image: int) -> int:
    return max(1, min(n, SCRATCH_BYTES // max(1, bytes_per_image)))


#: Threads every op is split over (GEMMs included, with BLAS held to one thread
#: meanwhile): one per core this process may use.
WORKERS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@functools.lru_cache(maxsize=1)
def _executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="alexnet_aa_numpy")


@functools.lru_cache(maxsize=1)
def _blas_libraries() -> list:
    """threadpoolctl's controllers of the BLAS libraries NumPy loaded (read once)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="blas").lib_controllers


@functools.lru_cache(maxsize=1)
def _blas_thread_setters() -> list[Callable[[int], Any]]:
    """One thread-count setter per BLAS library NumPy loaded, callable from whichever thread (read once).

    OpenBLAS's ``openblas_set_num_threads`` (what threadpoolctl calls) takes
    effect only from the main thread: from any other it is ignored, and a
    forward pass run from a worker thread then gave other bits (NumPy 2.4's
    OpenBLAS 0.3.31, pthreads build). ``openblas_set_num_threads_local``
    (0.3.27 on) sets the same process-wide count from any thread there, so it
    is used where it exists."""
    setters = []
    for lib in _blas_libraries():
        setter = getattr(lib.dynlib, "openblas_set_num_threads_local", None) if lib.internal_api == "openblas" else None
        if setter is None:
            setters.append(lib.set_num_threads)
        else:
            setter.argtypes, setter.restype = [ctypes.c_int], ctypes.c_int
            setters.append(setter)
    return setters


class _BlasSingleThreaded:
    """While any op of this backend runs, BLAS is held to one thread: our workers split the GEMMs.

    OpenBLAS's own threads spin for a while after every call; left running,
    they took the cores from the workers and the split gained nothing. The
    setting is process-wide, so it is reference-counted under a lock (ops in
    several threads at once restore it only when the last one ends), made
    from whichever thread calls (:func:`_blas_thread_setters`), and the previous
    thread counts are restored afterwards.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved: list[int] = []

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        libraries = _blas_libraries()
        with self._lock:
            if self._users == 0:
                self._saved = [lib.num_threads for lib in libraries]
                for set_threads in _blas_thread_setters():
                    set_threads(1)
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    for set_threads, n in zip(_blas_thread_setters(), self._saved, strict=True):
                        set_threads(n)


_blas_single_threaded = _BlasSingleThreaded()


def _parallel(fn: Callable[[int, int], None], n: int) -> None:
    """Run ``fn(start, stop)`` over ``range(n)`` cut into one contiguous slice per worker.

    NumPy releases the GIL inside its loops, so the slices run on all cores.
    Element-wise results do not depend on the split; GEMM results may differ
    in the last bits, since BLAS blocks a product by its size (well inside the
    conformance tolerances, which the suite checks for batch splits too).
    """
    parts = min(WORKERS, n)
    if parts <= 1:
        fn(0, n)
        return
    bounds = [n * i // parts for i in range(parts + 1)]
    for future in [_executor().submit(fn, a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]:
        future.result()


def _blocks(n: int, rows: int, per_row: int, least: int) -> list[tuple[int, int, int, int]]:
    """``n`` images of ``rows`` rows, each row ``per_row`` rows of a GEMM, cut into blocks
    ``(i0, i1, r0, r1)`` of images ``i0..i1-1``, rows ``r0..r1-1``: whole images when one image has
    fewer than ``least`` GEMM rows, else even runs of rows of one image with at least ``least``
    (or one per row); no block bigger than one worker's share of the rows, at least one block per
    worker where there are images or rows enough, and two per worker where rows of one image are
    cut, so that :func:`_each_block` keeps every worker busy."""
    per = min(max(1, -(-least // per_row)), -(-n * rows // WORKERS))
    if per >= rows:
        count = min(n, max(-(-n // (per // rows)), WORKERS))
        return [(n * j // count, n * (j + 1) // count, 0, rows) for j in range(count)]
    split = -(-rows // per)
    while n * split < 2 * WORKERS and split < rows:
        split += 1
    return [(i, i + 1, rows * j // split, rows * (j + 1) // split) for i in range(n) for j in range(split)]


def _each_block(run_blocks: Callable[[Iterator[int]], None], count: int) -> None:
    """Run ``run_blocks(indices)`` once per worker, each drawing block indices ``0..count-1`` from one
    shared queue as it gets free (so blocks of unequal cost still balance); a worker allocates its
    scratch once, before its first block. Which worker computes a block does not change its bits."""
    lock, queue = threading.Lock(), iter(range(count))

    def indices() -> Iterator[int]:
        while True:
            with lock:
                index = next(queue, None)
            if index is None:
                return
            yield index

    if min(WORKERS, count) <= 1:
        run_blocks(indices())
        return
    for future in [_executor().submit(run_blocks, indices()) for _ in range(min(WORKERS, count))]:
        future.result()


_thread_scratch = threading.local()


def _scratch(dtype: np.dtype, *sizes: int) -> list[np.ndarray]:
    """Flat scratch arrays of ``sizes`` elements for the calling thread, each 64-byte aligned, carved
    from one buffer that the thread keeps and grows to its largest request (a few tens of MB per
    worker thread). A fresh allocation of that size faults in and zeroes every page again: 2–4 ms
    per conv layer at batch 32."""
    step = 64 // dtype.itemsize
    spans = [-(-size // step) * step for size in sizes]
    buffer = getattr(_thread_scratch, "buffer", None)
    if buffer is None or buffer.size < (sum(spans) + step) * dtype.itemsize:
        buffer = _thread_scratch.buffer = np.empty((sum(spans) + step) * dtype.itemsize, dtype=np.uint8)
    start = -buffer.ctypes.data % 64
    arrays = []
    for size, span in zip(sizes, spans, strict=True):
        arrays.append(buffer[start : start + size * dtype.itemsize].view(dtype))
        start += span * dtype.itemsize
    return arrays


def _bias_relu(y: np.ndarray, b: np.ndarray | None, relu: bool) -> None:
    """The epilogue of conv2d and linear, in place on a block of their output: ``y += b``, then ReLU."""
    if b is not None:
        y += b
    if relu:
        np.maximum(y, 0, out=y)


def _ceil_padded(x: np.ndarray, kernel, stride, ceil_mode: bool) -> np.ndarray:
    """NHWC ``x`` with the −∞ rows and columns a ceil-mode pool's last windows reach into (``x`` itself in floor mode)."""
    n, h, w, c = x.shape
    pad_h, pad_w = (pool_overhang(size, k, s, ceil_mode) for size, k, s in zip((h, w), kernel, stride))
    if not (pad_h or pad_w):
        return x
    padded = np.full((n, h + pad_h, w + pad_w, c), -np.inf, dtype=x.dtype)
    padded[:, :h, :w, :] = x
    return padded


def _window_sum(a: np.ndarray, lo: int, hi: int, out: np.ndarray | None = None) -> np.ndarray:
    """``Σ a[:, c']`` over ``c' = c − lo … c + hi`` clipped to the channels (last axis), as shifted
    adds, into ``out`` (a new array without it)."""
    c = a.shape[-1]
    t = a.copy() if out is None else out
    if out is not None:
        t[...] = a
    for d in range(1, min(lo, c - 1) + 1):  # channels below c
        t[:, d:] += a[:, :-d]
    for d in range(1, min(hi, c - 1) + 1):  # channels above c
        t[:, :-d] += a[:, d:]
    return t


class NumpyBackend(Backend):
    """NHWC float32 ops on NumPy arrays; GEMMs through NumPy's BLAS."""

    name = "numpy"
    layout = "NHWC"
    conv_weight_layout = "HWIO"
    linear_weight_layout = "IO"

    def __init__(self, dtype: str = "float32") -> None:
        if dtype not in ("float32", "float64"):
            raise ValueError(f"[numpy] dtype: expected 'float32' or 'float64', got {dtype!r}")
        self.dtype = dtype
        self._np_dtype = np.dtype(dtype)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return True, ""

    @property
    def xp(self) -> Any:
        import array_api_compat.numpy

        return array_api_compat.numpy

    def asarray(self, x: Any) -> np.ndarray:
        return np.asarray(to_numpy(x), dtype=self._np_dtype)

    def to_host(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def prepare(self, params):
        """The base class's conversion (conv weights HWIO), each 3×3 and 5×5 conv weight wrapped as
        a :class:`~.winograd.ConvWeight` (its transform is computed the first time Winograd runs it)."""
        out = super().prepare(params)
        for name, value in out.items():
            if value.ndim == 4 and winograd.applies(value.shape, (1, 1)) and value.size:
                out[name] = winograd.ConvWeight(value)
        return out

    def conv2d(self, x, w, b, stride, padding, groups, relu):
        """NHWC ``x``, HWIO ``w``: Winograd F(2×2, r×r) for ungrouped 3×3 and 5×5 at stride 1
        (:mod:`.winograd`) where the batch has :data:`WINOGRAD_MIN_TILES` output tiles per worker;
        im2col + one GEMM per block and group otherwise, and for the images or weights holding a
        NaN or ±inf. Grouped layers always take im2col: the paper's and Caffe's conv2, conv4 and
        conv5 (48–192 channels per group) took 1.1–1.45× its time in Winograd at batch 8–32 (2-core
        Zen 3). The two algorithms round differently (both well inside the suite's tolerance; its
        batch-split check measures an image alone against it in a batch)."""
        hwio = w.hwio if isinstance(w, winograd.ConvWeight) else w
        if groups != 1 or not winograd.applies(hwio.shape, stride):
            return self._conv2d_im2col(x, hwio, b, stride, padding, groups, relu)
        n, h, wd, _ = x.shape
        r, (ph, pw) = hwio.shape[0], padding
        th, tw = winograd.tiles(conv_output_size(h, r, 1, ph), conv_output_size(wd, r, 1, pw))
        if n * th * tw < WORKERS * WINOGRAD_MIN_TILES:
            return self._conv2d_im2col(x, hwio, b, stride, padding, groups, relu)
        u = w.winograd() if isinstance(w, winograd.ConvWeight) else winograd.weight_transform(hwio)
        if u is None:  # a NaN or ±inf in the weight
            return self._conv2d_im2col(x, hwio, b, stride, padding, groups, relu)
        out, finite = self._conv2d_winograd(x, r, u, b, padding, relu)
        if not finite.all():
            odd = np.flatnonzero(~finite)
            out[odd] = self._conv2d_im2col(x[odd], hwio, b, stride, padding, groups, relu)
        return out

    def _conv2d_winograd(self, x, r, u, b, padding, relu):
        """F(2×2, r×r), stride 1, ungrouped: the output and which images were finite (their rows are
        the result; the others' the caller recomputes). Blocks of tiles — whole images, or tile rows
        of one image — of at least :data:`WINOGRAD_BLOCK_TILES` tiles where the batch allows run on
        the workers: gather, input transform, ``α²`` GEMMs, output transform with bias and ReLU,
        scatter."""
        (ph, pw), m = padding, winograd.TILE
        n, h, wd, c = x.shape
        a2, _, o = u.shape
        alpha = r + m - 1
        ho, wo = conv_output_size(h, r, 1, ph), conv_output_size(wd, r, 1, pw)
        th, tw = winograd.tiles(ho, wo)
        xpad = self._zero_padded(x, ph, pw, th * m + r - 1 - h - ph, tw * m + r - 1 - wd - pw)  # to whole tiles
        finite = winograd.finite_images(xpad)
        if not finite.all():  # recomputed by the direct path; zeros keep the transforms quiet meanwhile
            xpad = np.where(finite[:, None, None, None], xpad, self._np_dtype.type(0))
        out = np.empty((n, ho, wo, o), dtype=self._np_dtype)
        kb, ka = (winograd.kronecker(r, side, self._np_dtype.name) for side in ("input", "output"))
        blocks = _blocks(n, th, tw, WINOGRAD_BLOCK_TILES)  # in tile rows
        most = max((i1 - i0) * (t1 - t0) for i0, i1, t0, t1 in blocks) * tw
        s_n, s_h, s_w, s_c = xpad.strides

        def run_blocks(indices: Iterator[int]) -> None:
            d_buf, v_buf, m_buf, y_buf = _scratch(self._np_dtype, a2 * most * c, a2 * most * c, a2 * most * o, m * m * most * o)
            for i0, i1, t0, t1 in (blocks[j] for j in indices):
                k, rows = i1 - i0, t1 - t0
                t = k * rows * tw
                tiles_view = as_strided(xpad[i0:, t0 * m :], shape=(alpha, alpha, k, rows, tw, c),
                                        strides=(s_h, s_w, s_n, m * s_h, m * s_w, s_c), writeable=False)
                d = d_buf[: a2 * t * c].reshape(a2, t * c)
                np.copyto(d.reshape(alpha, alpha, k, rows, tw, c), tiles_view)
                v = np.matmul(kb, d, out=v_buf[: a2 * t * c].reshape(a2, t * c)).reshape(a2, t, c)
                mm = np.matmul(v, u, out=m_buf[: a2 * t * o].reshape(a2, t, o))
                y = np.matmul(ka, mm.reshape(a2, t * o), out=y_buf[: m * m * t * o].reshape(m * m, t * o))
                y = y.reshape(m, m, k, rows, tw, o)
                _bias_relu(y, b, relu)
                for i in range(m):
                    target = out[i0:i1, t0 * m + i : min(t1 * m, ho) : m]
                    for j in range(m):
                        part = target[:, :, j::m]
                        part[...] = y[i, j, :, : part.shape[1], : part.shape[2]]

        with _blas_single_threaded():
            _each_block(run_blocks, len(blocks))
        return out, finite

    def _conv2d_im2col(self, x, w, b, stride, padding, groups, relu):
        """NHWC ``x``, HWIO ``w``: im2col per block of output rows (:data:`IM2COL_BLOCK_BYTES` of
        patches, :data:`IM2COL_MIN_ROWS` GEMM rows at least) and group, one GEMM each, on the workers."""
        (sh, sw), (ph, pw) = stride, padding
        n, h, wd, c = x.shape
        kh, kw, cg, o = w.shape
        ho, wo = conv_output_size(h, kh, sh, ph), conv_output_size(wd, kw, sw, pw)

        xpad = self._zero_padded(x, ph, pw)
        s_n, s_h, s_w, s_c = xpad.strides
        windows = as_strided(xpad, shape=(n, ho, wo, kh, kw, c),
                             strides=(s_n, s_h * sh, s_w * sw, s_h, s_w, s_c), writeable=False)
        og, k = o // groups, kh * kw * cg
        wmat = w.reshape(k, o)  # HWIO is already (K_h·K_w·C/g, O), rows ordered (p, q, c)
        out = np.empty((n, ho, wo, o), dtype=self._np_dtype)
        least = max(IM2COL_MIN_ROWS, IM2COL_BLOCK_BYTES // (k * self._np_dtype.itemsize))
        blocks = _blocks(n, ho, wo, least)
        most = max((i1 - i0) * (r1 - r0) for i0, i1, r0, r1 in blocks) * wo

        def run_blocks(indices: Iterator[int]) -> None:
            """Gather, GEMM and epilogue per block, while its patches are in cache."""
            (patches,) = _scratch(self._np_dtype, most * k)
            for i0, i1, r0, r1 in (blocks[j] for j in indices):
                pixels = (i1 - i0) * (r1 - r0) * wo
                cols = patches[: pixels * k].reshape(pixels, k)
                y = out[i0:i1, r0:r1].reshape(pixels, o)  # a view: whole images, or rows of one
                for g in range(groups):
                    np.copyto(cols.reshape(i1 - i0, r1 - r0, wo, kh, kw, cg), windows[i0:i1, r0:r1, ..., g * cg : (g + 1) * cg])
                    np.matmul(cols, wmat[:, g * og : (g + 1) * og], out=y[:, g * og : (g + 1) * og])
                _bias_relu(y, b, relu)

        with _blas_single_threaded():
            _each_block(run_blocks, len(blocks))
        return out

    def _zero_padded(self, x: np.ndarray, ph: int, pw: int, bottom: int | None = None, right: int | None = None) -> np.ndarray:
        """NHWC ``x`` with ``ph`` rows of zeros above, ``bottom`` (default ``ph``) below, ``pw`` columns
        on the left and ``right`` (default ``pw``) on the right, as a contiguous copy made per image in
        parallel; ``x`` itself where all four are 0 and it is contiguous in the backend's dtype.

        The network's input arrives as an NCHW array seen as NHWC (a transposed view): it is copied
        one channel plane at a time, 3× faster than NumPy's copy of the view (224×224×3, batch 32)."""
        bottom, right = ph if bottom is None else bottom, pw if right is None else right
        padded = bool(ph or pw or bottom or right)
        if not padded and x.flags.c_contiguous and x.dtype == self._np_dtype:
            return x
        n, h, wd, c = x.shape
        xpad = (np.zeros if padded else np.empty)((n, h + ph + bottom, wd + pw + right, c), dtype=self._np_dtype)
        planes = x.strides[3] > x.strides[2]  # channels are not the innermost axis in memory

        def pad(a: int, b: int) -> None:
            if planes:
                for i in range(a, b):
                    for ch in range(c):
                        xpad[i, ph : ph + h, pw : pw + wd, ch] = x[i, :, :, ch]
            else:
                xpad[a:b, ph : ph + h, pw : pw + wd, :] = x[a:b]

        _parallel(pad, n)
        return xpad

    def max_pool2d(self, x, kernel, stride, ceil_mode):
        """NHWC, separable: a running maximum over the ``K_w`` column views, then over the ``K_h`` row
        views, per image (or run of output rows of one image) on the workers, so each pass is in cache."""
        (kh, kw), (sh, sw) = kernel, stride
        n, h, w, c = x.shape
        ho, wo = pool_output_size(h, kh, sh, ceil_mode), pool_output_size(w, kw, sw, ceil_mode)
        x = _ceil_padded(x, kernel, stride, ceil_mode)
        out = np.empty((n, ho, wo, c), dtype=x.dtype)

        blocks = _blocks(n, ho, 1, ho)  # whole images, or runs of output rows of one
        most = max((i1 - i0) * ((r1 - r0 - 1) * sh + kh) for i0, i1, r0, r1 in blocks) * wo * c  # column-pass floats

        def pool_blocks(indices: Iterator[int]) -> None:
            (buffer,) = _scratch(x.dtype, most)
            for i0, i1, a, b in (blocks[j] for j in indices):  # output rows a..b-1 read rows a·S_h .. (b-1)·S_h + K_h - 1
                rows = x[i0:i1, a * sh : (b - 1) * sh + kh]
                cols = buffer[: rows.shape[0] * rows.shape[1] * wo * c].reshape(rows.shape[0], rows.shape[1], wo, c)
                np.copyto(cols, rows[:, :, 0 : sw * (wo - 1) + 1 : sw, :])
                for j in range(1, kw):
                    np.maximum(cols, rows[:, :, j : j + sw * (wo - 1) + 1 : sw, :], out=cols)
                y = out[i0:i1, a:b]
                y[...] = cols[:, 0 : sh * (b - a - 1) + 1 : sh]
                for i in range(1, kh):
                    np.maximum(y, cols[:, i : i + sh * (b - a - 1) + 1 : sh], out=y)

        _each_block(pool_blocks, len(blocks))
        return out

    def lrn(self, x, size, alpha, beta, k):
        """NHWC: shifted in-place adds along C for the window sum, in cache-sized blocks of pixels."""
        c = x.shape[-1]
        lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
        rows = np.ascontiguousarray(x, dtype=self._np_dtype).reshape(-1, c)
        out = np.empty_like(rows)
        block = max(1, LRN_BLOCK_BYTES // (c * self._np_dtype.itemsize))

        def lrn_blocks(first: int, last: int) -> None:  # blocks first..last-1 of `block` pixels each
            sq = np.empty((min(block, len(rows)), c), dtype=self._np_dtype)
            s = np.empty_like(sq)
            for r0 in range(first * block, min(last * block, len(rows)), block):
                xs = rows[r0 : r0 + block]
                q, t = sq[: len(xs)], s[: len(xs)]
                np.square(xs, out=q)
                _window_sum(q, lo, hi, out=t)
                t *= alpha / size
                t += k
                if beta == 0.75:
                    np.sqrt(t, out=q)
                    np.sqrt(q, out=t)
                    t *= q  # t^(3/4) = √t · √√t
                    np.divide(xs, t, out=out[r0 : r0 + block])
                else:
                    np.log(t, out=t)
                    t *= -beta
                    np.exp(t, out=t)
                    np.multiply(xs, t, out=out[r0 : r0 + block])

        _parallel(lrn_blocks, -(-len(rows) // block))
        return out.reshape(x.shape)

    def linear(self, x, w, b, relu):
        """``x · w`` through BLAS, ``w`` ``(F_in, F_out)`` (GEMV for one row); bias and ReLU in place.

        Each worker multiplies ``x`` by its columns of ``w``. The weight is stored ``IO``
        (:attr:`linear_weight_layout`) so that BLAS reads it as a plain row-major second operand:
        with the canonical ``(F_out, F_in)`` as ``x · wᵀ`` or ``(w · xᵀ)ᵀ``, fc6 (151 MB) took 1.3×
        as long at batch 32 and 1.2× at batch 1 (OpenBLAS 0.3.31, Zen 3)."""
        y = np.empty((x.shape[0], w.shape[1]), dtype=self._np_dtype)

        def features(start: int, stop: int) -> None:
            part = y[:, start:stop]
            if x.shape[0] == 1:  # GEMV: memory-bound, each worker streams its columns of w
                np.matmul(x[0], w[:, start:stop], out=part[0])
            else:
                np.matmul(x, w[:, start:stop], out=part)
            _bias_relu(part, None if b is None else b[start:stop], relu)

        with _blas_single_threaded():
            _parallel(features, w.shape[1])
        return y

    # -- the backward twins -------------------------------------------------------------------

    def _relu_masked(self, y: np.ndarray, dy: np.ndarray, relu: bool) -> np.ndarray:
        """``dy`` where ``y > 0`` (a contiguous copy, per image in parallel) with ``relu``; ``dy`` without."""
        if not relu:
            return np.ascontiguousarray(dy, dtype=self._np_dtype)
        g = np.empty(dy.shape, dtype=self._np_dtype)

        def mask(a: int, b: int) -> None:
            np.multiply(dy[a:b], y[a:b] > 0, out=g[a:b])

        _parallel(mask, len(g))
        return g

    def conv2d_backward(self, x, w, y, dy, stride, padding, groups, relu, need_dx):
        """NHWC, HWIO. ``dw``: the forward's im2col gather again, per micro-batch and slice of output
        rows, and ``patchesᵀ · dy`` per group into one partial sum per slice, the partials added in
        slice order (deterministic). ``dx``: col2im — per micro-batch of images and group, one GEMM
        ``dy · wᵀ`` gives every tap's contribution, added into the padded input gradient at the tap's
        strided view (``K_h·K_w`` adds; split over images, which never share a pixel), then cropped.
        ``db``: summed in float64."""
        w = w.hwio if isinstance(w, winograd.ConvWeight) else w
        (sh, sw), (ph, pw) = stride, padding
        n, h, wd, c = x.shape
        kh, kw, cg, o = w.shape
        ho, wo = dy.shape[1], dy.shape[2]
        g = self._relu_masked(y, dy, relu)
        db = g.reshape(-1, o).sum(axis=0, dtype=np.float64).astype(self._np_dtype)
        xpad = self._zero_padded(x, ph, pw)
        s_n, s_h, s_w, s_c = xpad.strides
        og, rows = o // groups, kh * kw * cg
        nb = _micro_batch(n, ho * wo * rows * self._np_dtype.itemsize)
        patches = np.empty(nb * ho * wo * rows, dtype=self._np_dtype)
        dw = np.zeros((rows, o), dtype=self._np_dtype)

        def rows_of_output(m: int, windows: np.ndarray, g3: np.ndarray, partials: dict, start: int, stop: int) -> None:
            cols = patches[m * start * wo * rows : m * stop * wo * rows].reshape(m * (stop - start) * wo, rows)
            dys = g3[:, start * wo : stop * wo].reshape(-1, o)
            part = np.empty((rows, o), dtype=self._np_dtype)
            for gi in range(groups):
                np.copyto(cols.reshape(m, stop - start, wo, kh, kw, cg), windows[:, start:stop, ..., gi * cg : (gi + 1) * cg])
                np.matmul(cols.T, dys[:, gi * og : (gi + 1) * og], out=part[:, gi * og : (gi + 1) * og])
            partials[start] = part

        with _blas_single_threaded():
            for n0 in range(0, n, nb):
                m = min(nb, n - n0)
                windows = as_strided(xpad[n0:], shape=(m, ho, wo, kh, kw, c),
                                     strides=(s_n, s_h * sh, s_w * sw, s_h, s_w, s_c), writeable=False)
                partials: dict[int, np.ndarray] = {}
                _parallel(functools.partial(rows_of_output, m, windows, g[n0 : n0 + m].reshape(m, ho * wo, o), partials), ho)
                for start in sorted(partials):
                    dw += partials[start]
        dx = None
        if need_dx:
            dxpad = np.zeros(xpad.shape, dtype=self._np_dtype)
            # the taps are re-read K_h·K_w times by the adds: a few MB of them at a time, in cache
            mb = max(1, COL2IM_BYTES // (ho * wo * rows * self._np_dtype.itemsize))
            wmat = w.reshape(rows, o)

            def images(a: int, b: int) -> None:  # col2im: images a..b-1, mb at a time, each GEMM into its own columns
                for i0 in range(a, b, mb):
                    i1 = min(b, i0 + mb)
                    gs = g[i0:i1].reshape(-1, o)
                    for gi in range(groups):
                        cols = np.matmul(gs[:, gi * og : (gi + 1) * og], wmat[:, gi * og : (gi + 1) * og].T)
                        taps = cols.reshape(i1 - i0, ho, wo, kh, kw, cg)
                        for p in range(kh):
                            for q in range(kw):
                                view = dxpad[i0:i1, p : p + sh * (ho - 1) + 1 : sh, q : q + sw * (wo - 1) + 1 : sw,
                                             gi * cg : (gi + 1) * cg]
                                view += taps[:, :, :, p, q, :]

            with _blas_single_threaded():
                _parallel(images, n)
            dx = dxpad[:, ph : ph + h, pw : pw + wd]
        return dx, dw.reshape(kh, kw, cg, o), db

    def max_pool2d_backward(self, x, y, dy, kernel, stride, ceil_mode):
        """NHWC. The forward's output ``y`` is each window's maximum, so the first tap (row-major)
        whose strided view equals ``y`` there — or is NaN where ``y`` is, the maximum of a window
        holding NaN — takes the window's gradient: per tap, one comparison, the windows not yet
        taken, and one masked add into the tap's strided view of ``dx``; split over images (windows
        overlap across rows, never across images)."""
        (kh, kw), (sh, sw) = kernel, stride
        n, h, w, c = x.shape
        ho, wo = dy.shape[1], dy.shape[2]
        xs_all = _ceil_padded(x, kernel, stride, ceil_mode)
        dx = np.zeros(xs_all.shape, dtype=self._np_dtype)

        def images(a: int, b: int) -> None:
            xs, ys, dys = xs_all[a:b], y[a:b], dy[a:b]
            nan_max = np.isnan(ys)
            nan_max = nan_max if nan_max.any() else None  # NaN never equals NaN: matched apart
            open_ = np.ones(ys.shape, dtype=bool)  # windows whose maximum has not been found yet
            hit = np.empty(ys.shape, dtype=bool)
            share = np.empty(ys.shape, dtype=self._np_dtype)
            for t in range(kh * kw):
                i, j = divmod(t, kw)
                rows, cols = slice(i, i + sh * (ho - 1) + 1, sh), slice(j, j + sw * (wo - 1) + 1, sw)
                np.equal(xs[:, rows, cols], ys, out=hit)
                if nan_max is not None:
                    hit |= np.isnan(xs[:, rows, cols]) & nan_max
                np.logical_and(hit, open_, out=hit)
                np.greater(open_, hit, out=open_)  # open and not hit
                np.multiply(dys, hit, out=share)  # (a masked add, np.add(where=), is 4x slower on random masks)
                target = dx[a:b, rows, cols]
                target += share

        _parallel(images, n)
        return dx[:, :h, :w]

    def lrn_backward(self, x, y, dy, size, alpha, beta, k):
        """NHWC, in cache-sized blocks of pixels: ``s`` again by the forward's shifted adds, then
        ``dx = dy·s^−β − (2αβ/n)·x·Σ_T(dy·y/s)`` with the transposed window ``T``."""
        c = x.shape[-1]
        lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
        flat = (np.ascontiguousarray(a, dtype=self._np_dtype).reshape(-1, c) for a in (x, y, dy))
        xs_all, ys_all, dys_all = flat
        out = np.empty_like(xs_all)
        block = max(1, LRN_BLOCK_BYTES // (c * self._np_dtype.itemsize))

        def blocks(first: int, last: int) -> None:
            for r0 in range(first * block, min(last * block, len(xs_all)), block):
                xs, ys, dys = xs_all[r0 : r0 + block], ys_all[r0 : r0 + block], dys_all[r0 : r0 + block]
                s = _window_sum(np.square(xs), lo, hi)
                s *= alpha / size
                s += k
                u = _window_sum(dys * ys / s, hi, lo)  # the transposed window
                u *= (2.0 * alpha * beta / size) * xs
                np.power(s, -beta, out=s)
                np.multiply(dys, s, out=out[r0 : r0 + block])
                out[r0 : r0 + block] -= u

        _parallel(blocks, -(-len(xs_all) // block))
        return out.reshape(x.shape)

    def linear_backward(self, x, w, y, dy, relu, need_dx):
        """``dw = xᵀ·dy`` (``IO``) split over output features, ``dx = dy·wᵀ`` over input features, through BLAS;
        ``db`` summed in float64."""
        g = self._relu_masked(y, dy, relu)
        dw = np.empty(w.shape, dtype=self._np_dtype)
        dx = np.empty(x.shape, dtype=self._np_dtype) if need_dx else None

        def out_features(a: int, b: int) -> None:
            np.matmul(x.T, g[:, a:b], out=dw[:, a:b])

        def in_features(a: int, b: int) -> None:
            np.matmul(g, w[a:b].T, out=dx[:, a:b])

        with _blas_single_threaded():
            _parallel(out_features, w.shape[1])
            if need_dx:
                _parallel(in_features, w.shape[0])
        return dx, dw, g.sum(axis=0, dtype=np.float64).astype(self._np_dtype)

    def describe(self) -> dict[str, str]:
        blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
        return {
            "numpy": np.__version__,
            "blas": f"{blas.get('name', '?')} {blas.get('version', '')}".strip(),
        }
