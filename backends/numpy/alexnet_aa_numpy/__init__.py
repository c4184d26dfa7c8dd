"""The ``numpy`` backend: AlexNet on any CPU, fast, with NumPy and its BLAS.

Layout NHWC, conv weights HWIO ``(K_h, K_w, C/g, O)``, linear weights as
given ``(F_out, F_in)``, converted once by the base class's ``prepare``. The
math of each op is on the reference op of the same name in
:mod:`alexnet_aa.reference`; the arguments arrive validated by
:mod:`alexnet_aa.ops`; this module says only how it computes.

* **conv2d** — im2col + GEMM. In NHWC an image patch ``(K_h, K_w, C)`` is
  ``K_h`` runs of ``K_w·C`` contiguous floats, so the patch matrix is one
  strided gather, and ``patches (N·H_out·W_out, K_h·K_w·C/g) @ w_g (K_h·K_w·C/g, O/g)``
  writes group ``g``'s columns of the NHWC output directly (no transposes).
  The batch is folded into the GEMM's M dimension, in micro-batches whose
  patch matrix stays under :data:`SCRATCH_BYTES`. Bias and ReLU are applied
  in place on the output. 3×3 and 5×5 stride-1 layers (conv2–conv5) run
  Winograd F(2×2, r×r) instead where the batch has :data:`WINOGRAD_MIN_TILES`
  output tiles per worker (:mod:`.winograd`; ``prepare`` transforms their
  weights once).
* **max_pool2d** — separable: a running ``np.maximum`` over the ``K_w``
  strided column views, then over the ``K_h`` row views of that
  (``K_h + K_w − 2`` passes instead of ``K_h·K_w − 1``); ceil mode pads the
  edge with −∞ only when needed.
* **lrn** — the window sum of squares as ``size − 1`` in-place shifted adds
  along the channel axis (views, no copy per window element), then
  ``x · (k + α/n · s)^(−β)`` with ``β = 0.75`` as two square roots (NumPy's
  ``power`` is scalar code; ``sqrt`` is SIMD), in blocks of pixels of
  :data:`LRN_BLOCK_BYTES` so every pass stays in cache.
* **linear** — one BLAS GEMM ``(w · xᵀ)ᵀ`` per slice of features (GEMV for a
  single row), bias and ReLU in place.

Every op is cut into one slice per core (output rows of a conv, with their
im2col gather, GEMM and epilogue; feature columns of a linear layer; pixel
blocks of LRN; output rows of pooling) and run on a small thread pool
(:data:`WORKERS` threads; NumPy releases the GIL in its loops), with BLAS held
to one thread meanwhile (why: ``docs/backends/numpy.md``).
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
    "COL2IM_BYTES", "LRN_BLOCK_BYTES", "NumpyBackend", "SCRATCH_BYTES", "WINOGRAD_BLOCK_BYTES", "WINOGRAD_MIN_TILES", "WORKERS",
]

#: Upper bound on one micro-batch's patch matrix in conv2d.
SCRATCH_BYTES = 32 * 1024 * 1024
#: LRN works on blocks of pixels this large, so its passes stay in the L2 cache.
LRN_BLOCK_BYTES = 256 * 1024
#: About the bytes of one block of Winograd tiles (their transformed input and output), per worker.
WINOGRAD_BLOCK_BYTES = 2 * 1024 * 1024
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
        """The base class's conversion (conv weights HWIO), then each 3×3 and 5×5 conv weight with its
        Winograd transform, as a :class:`~.winograd.ConvWeight`."""
        out = super().prepare(params)
        for name, value in out.items():
            if value.ndim == 4 and winograd.applies(value.shape, (1, 1)) and value.size:
                out[name] = winograd.ConvWeight(value, winograd.weight_transform(value))
        return out

    def conv2d(self, x, w, b, stride, padding, groups, relu):
        """NHWC ``x``, HWIO ``w``: Winograd F(2×2, r×r) for 3×3 and 5×5 at stride 1
        (:mod:`.winograd`) where the batch has :data:`WINOGRAD_MIN_TILES` output tiles per worker;
        im2col + one GEMM per micro-batch and group otherwise, and for the images or weights
        holding a NaN or ±inf. The two algorithms round differently (both well inside the suite's
        tolerance; its batch-split check measures an image alone against it in a batch)."""
        hwio = w.hwio if isinstance(w, winograd.ConvWeight) else w
        if not winograd.applies(hwio.shape, stride):
            return self._conv2d_im2col(x, hwio, b, stride, padding, groups, relu)
        n, h, wd, _ = x.shape
        r, (ph, pw) = hwio.shape[0], padding
        th, tw = winograd.tiles(conv_output_size(h, r, 1, ph), conv_output_size(wd, r, 1, pw))
        if n * th * tw < WORKERS * WINOGRAD_MIN_TILES:
            return self._conv2d_im2col(x, hwio, b, stride, padding, groups, relu)
        u = w.winograd if isinstance(w, winograd.ConvWeight) else winograd.weight_transform(hwio)
        if u is None:  # a NaN or ±inf in the weight
            return self._conv2d_im2col(x, hwio, b, stride, padding, groups, relu)
        out, finite = self._conv2d_winograd(x, r, u, b, padding, groups, relu)
        if not finite.all():
            odd = np.flatnonzero(~finite)
            out[odd] = self._conv2d_im2col(x[odd], hwio, b, stride, padding, groups, relu)
        return out

    def _conv2d_winograd(self, x, r, u, b, padding, groups, relu):
        """F(2×2, r×r), stride 1: the output and which images were finite (their rows are the result;
        the others' the caller recomputes). Blocks of tiles — whole images, or tile rows of one
        image — of about :data:`WINOGRAD_BLOCK_BYTES` each run on the workers: gather, input
        transform, ``α²`` GEMMs per group, output transform with bias and ReLU, scatter, all in cache."""
        (ph, pw), m = padding, winograd.TILE
        n, h, wd, c = x.shape
        a2, cg, o = u.shape
        alpha = r + m - 1
        ho, wo = conv_output_size(h, r, 1, ph), conv_output_size(wd, r, 1, pw)
        th, tw = winograd.tiles(ho, wo)
        xpad = self._zero_padded(x, ph, pw, th * m + r - 1 - h - ph, tw * m + r - 1 - wd - pw)  # to whole tiles
        finite = winograd.finite_images(xpad)
        if not finite.all():  # recomputed by the direct path; zeros keep the transforms quiet meanwhile
            xpad = np.where(finite[:, None, None, None], xpad, self._np_dtype.type(0))
        out = np.empty((n, ho, wo, o), dtype=self._np_dtype)
        og = o // groups
        kb, ka = (winograd.kronecker(r, side, self._np_dtype.name) for side in ("input", "output"))
        per_tile = a2 * (c + o) * self._np_dtype.itemsize
        tiles = max(1, min(WINOGRAD_BLOCK_BYTES // per_tile, -(-n * th * tw // WORKERS)))
        if tiles >= th * tw:  # whole images per block
            per = tiles // (th * tw)
            blocks = [(i, min(n, i + per), 0, th) for i in range(0, n, per)]
        else:  # tile rows of one image per block
            rows = max(1, tiles // tw)
            blocks = [(i, i + 1, t, min(th, t + rows)) for i in range(n) for t in range(0, th, rows)]
        s_n, s_h, s_w, s_c = xpad.strides

        def run_blocks(first: int, last: int) -> None:
            most = max((i1 - i0) * (t1 - t0) for i0, i1, t0, t1 in blocks[first:last]) * tw
            d_buf = np.empty(a2 * most * c, dtype=self._np_dtype)
            v_buf, m_buf = np.empty_like(d_buf), np.empty(a2 * most * o, dtype=self._np_dtype)
            y_buf = np.empty(m * m * most * o, dtype=self._np_dtype)
            for i0, i1, t0, t1 in blocks[first:last]:
                k, rows = i1 - i0, t1 - t0
                t = k * rows * tw
                tiles_view = as_strided(xpad[i0:, t0 * m :], shape=(alpha, alpha, k, rows, tw, c),
                                        strides=(s_h, s_w, s_n, m * s_h, m * s_w, s_c), writeable=False)
                d = d_buf[: a2 * t * c].reshape(a2, t * c)
                np.copyto(d.reshape(alpha, alpha, k, rows, tw, c), tiles_view)
                v = np.matmul(kb, d, out=v_buf[: a2 * t * c].reshape(a2, t * c)).reshape(a2, t, c)
                mm = m_buf[: a2 * t * o].reshape(a2, t, o)
                for g in range(groups):
                    np.matmul(v[:, :, g * cg : (g + 1) * cg], u[:, :, g * og : (g + 1) * og], out=mm[:, :, g * og : (g + 1) * og])
                y = np.matmul(ka, mm.reshape(a2, t * o), out=y_buf[: m * m * t * o].reshape(m * m, t * o))
                y = y.reshape(m, m, k, rows, tw, o)
                if b is not None:
                    y += b
                if relu:
                    np.maximum(y, 0, out=y)
                for i in range(m):
                    target = out[i0:i1, t0 * m + i : min(t1 * m, ho) : m]
                    for j in range(m):
                        part = target[:, :, j::m]
                        part[...] = y[i, j, :, : part.shape[1], : part.shape[2]]

        with _blas_single_threaded():
            _parallel(run_blocks, len(blocks))
        return out, finite

    def _conv2d_im2col(self, x, w, b, stride, padding, groups, relu):
        """NHWC ``x``, HWIO ``w``: im2col per micro-batch and group, one GEMM each."""
        (sh, sw), (ph, pw) = stride, padding
        n, h, wd, c = x.shape
        kh, kw, cg, o = w.shape
        ho, wo = conv_output_size(h, kh, sh, ph), conv_output_size(wd, kw, sw, pw)

        xpad = self._zero_padded(x, ph, pw)
        s_n, s_h, s_w, s_c = xpad.strides
        og, rows = o // groups, kh * kw * cg
        wmat = w.reshape(rows, o)  # HWIO is already (K_h·K_w·C/g, O), rows ordered (p, q, c)
        out = np.empty((n, ho, wo, o), dtype=self._np_dtype)
        nb = _micro_batch(n, ho * wo * rows * self._np_dtype.itemsize)
        patches = np.empty(nb * ho * wo * rows, dtype=self._np_dtype)

        def rows_of_output(m: int, windows: np.ndarray, out3: np.ndarray, start: int, stop: int) -> None:
            """Output rows start..stop-1 of a micro-batch of m images: gather, GEMM, epilogue, in cache."""
            cols = patches[m * start * wo * rows : m * stop * wo * rows].reshape(m, (stop - start) * wo, rows)
            y = out3[:, start * wo : stop * wo]
            for g in range(groups):
                np.copyto(cols.reshape(m, stop - start, wo, kh, kw, cg), windows[:, start:stop, ..., g * cg : (g + 1) * cg])
                np.matmul(cols, wmat[:, g * og : (g + 1) * og], out=y[..., g * og : (g + 1) * og])
            if b is not None:
                y += b
            if relu:
                np.maximum(y, 0, out=y)

        with _blas_single_threaded():
            for n0 in range(0, n, nb):
                m = min(nb, n - n0)
                windows = as_strided(
                    xpad[n0:],
                    shape=(m, ho, wo, kh, kw, c),
                    strides=(s_n, s_h * sh, s_w * sw, s_h, s_w, s_c),
                    writeable=False,
                )
                _parallel(functools.partial(rows_of_output, m, windows, out[n0 : n0 + m].reshape(m, ho * wo, o)), ho)
        return out

    def _zero_padded(self, x: np.ndarray, ph: int, pw: int, bottom: int | None = None, right: int | None = None) -> np.ndarray:
        """NHWC ``x`` with ``ph`` rows of zeros above, ``bottom`` (default ``ph``) below, ``pw`` columns
        on the left and ``right`` (default ``pw``) on the right, copied per image in parallel; ``x``
        itself (contiguous) where all four are 0."""
        bottom, right = ph if bottom is None else bottom, pw if right is None else right
        if not (ph or pw or bottom or right):
            return np.ascontiguousarray(x, dtype=self._np_dtype)
        n, h, wd, c = x.shape
        xpad = np.zeros((n, h + ph + bottom, wd + pw + right, c), dtype=self._np_dtype)

        def pad(a: int, b: int) -> None:
            xpad[a:b, ph : ph + h, pw : pw + wd, :] = x[a:b]

        _parallel(pad, n)
        return xpad

    def max_pool2d(self, x, kernel, stride, ceil_mode):
        """NHWC, separable: a running maximum over the ``K_w`` column views, then over the ``K_h`` row views."""
        (kh, kw), (sh, sw) = kernel, stride
        n, h, w, c = x.shape
        ho, wo = pool_output_size(h, kh, sh, ceil_mode), pool_output_size(w, kw, sw, ceil_mode)
        x = _ceil_padded(x, kernel, stride, ceil_mode)
        out = np.empty((n, ho, wo, c), dtype=x.dtype)

        def pool_rows(a: int, b: int) -> None:  # output rows a..b-1 read input rows a·S_h .. (b-1)·S_h + K_h - 1
            rows = x[:, a * sh : (b - 1) * sh + kh]
            cols = np.array(rows[:, :, 0 : sw * (wo - 1) + 1 : sw, :])  # (N, rows, W_out, C)
            for j in range(1, kw):
                np.maximum(cols, rows[:, :, j : j + sw * (wo - 1) + 1 : sw, :], out=cols)
            y = out[:, a:b]
            y[...] = cols[:, 0 : sh * (b - a - 1) + 1 : sh]
            for i in range(1, kh):
                np.maximum(y, cols[:, i : i + sh * (b - a - 1) + 1 : sh], out=y)

        _parallel(pool_rows, ho)
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
        """``x @ w.T`` through BLAS, as ``(w · xᵀ)ᵀ`` (GEMV for one row); bias and ReLU in place.

        Each worker multiplies its rows of ``w`` by ``xᵀ``: with ``w`` as BLAS's first operand the
        weight (fc6's 151 MB) is streamed once, where ``x · wᵀ`` for a few rows of ``x`` was 1.4×
        slower (OpenBLAS 0.3.31, batch 32: it repacks the weight as the second operand)."""
        y = np.empty((x.shape[0], w.shape[0]), dtype=self._np_dtype)

        def features(start: int, stop: int) -> None:
            part = y[:, start:stop]
            if x.shape[0] == 1:  # GEMV: memory-bound, each worker streams its rows of w
                np.matmul(w[start:stop], x[0], out=part[0])
            else:
                part[...] = np.matmul(w[start:stop], x.T).T
            if b is not None:
                part += b[start:stop]
            if relu:
                np.maximum(part, 0, out=part)

        with _blas_single_threaded():
            _parallel(features, w.shape[0])
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
        """``dw = dyᵀ·x`` split over output features, ``dx = dy·w`` over input features, through BLAS;
        ``db`` summed in float64."""
        g = self._relu_masked(y, dy, relu)
        dw = np.empty(w.shape, dtype=self._np_dtype)
        dx = np.empty(x.shape, dtype=self._np_dtype) if need_dx else None

        def out_features(a: int, b: int) -> None:
            np.matmul(g[:, a:b].T, x, out=dw[a:b])

        def in_features(a: int, b: int) -> None:
            np.matmul(g, w[:, a:b], out=dx[:, a:b])

        with _blas_single_threaded():
            _parallel(out_features, w.shape[0])
            if need_dx:
                _parallel(in_features, w.shape[1])
        return dx, dw, g.sum(axis=0, dtype=np.float64).astype(self._np_dtype)

    def describe(self) -> dict[str, str]:
        blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
        return {
            "numpy": np.__version__,
            "blas": f"{blas.get('name', '?')} {blas.get('version', '')}".strip(),
        }
