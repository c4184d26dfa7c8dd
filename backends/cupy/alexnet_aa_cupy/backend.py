"""The ``cupy`` backend: AlexNet's heavy ops as hand-written CUDA kernels on NVIDIA GPUs.

Layout: **NCHW** activations. An implicit-GEMM convolution on NCHW gathers
each K-slice along the output-pixel axis, so a warp reads consecutive pixels of
one input plane (coalesced for stride 1, and for any stride it stays within a
few cache lines) and writes consecutive pixels of one output plane; LRN runs
across planes with coalesced per-plane reads, max-pool is plane-local, and
the flatten before fc6 is the canonical ``(C, H, W)`` order, so fc6 needs no
permutation. NHWC would make the K-gather contiguous along channels instead,
but AlexNet's first layer has 3 channels and the other gathers are already
coalesced along pixels, so NHWC buys little here.

Native weights, converted once by :meth:`CupyBackend.prepare`:

- conv: ``(in/groups, kh, kw, out)`` ("IHWO"), i.e. the GEMM's A operand
  ``(K, out)`` with rows contiguous along the output channels; group ``g`` is
  the column block ``[g*out/groups, (g+1)*out/groups)``, so the layout does
  not depend on ``groups``. A 3x3 or 5x5 weight comes as a
  :class:`~.kernels.ConvWeight` holding that array and its Winograd transform
  ``U = G g Gᵀ`` ``(ALPHA², in/groups, out)`` for the kernel's default Winograd
  algorithm (:func:`.kernels.default_winograd_algo`): ALPHA = 4 for 3x3 (F(2x2, 3x3)),
  6 for 5x5 (F(2x2, 5x5)) (prepare does not know the stride; the Winograd path runs
  at stride 1, the implicit GEMM at any other; ``algo="winograd_f4"`` on a 5x5 layer
  transforms the weight on the fly);
- linear: ``(in, out)`` ("IO"): rows contiguous along the outputs, so the GEMV reads the weight in one
  coalesced pass and the tiled GEMM's A operand is the array itself;
- biases: ``(out,)``.

Half precision (``CupyBackend(dtype="float16")`` or ``"bfloat16"``, inference only): activations, weights
and biases stored in the dtype, conv and linear weights in the canonical OIHW and OI (the tensor cores'
A operand, K contiguous), every product summed in float32 on tensor cores (``mma.sync``), the epilogue
(+ bias, ReLU) and LRN in float32, each result rounded once when stored. bfloat16 arrays are CuPy
arrays of ``ml_dtypes.bfloat16`` (CuPy has no bfloat16 of its own); :meth:`CupyBackend.to_host` widens
them to float32 (NumPy has none either).

Kernels (see the header comment of each ``.cu`` file and :mod:`.kernels`):

- ``conv2d``: implicit GEMM, 128×128 / 64×128 / 64×64 output tiles
  (channels × pixels), 8×8 (4×4) register micro-tiles, K-slices of 8 staged
  in double-buffered shared memory, float4 shared-memory reads, zero padding
  gathered on the fly, bias + ReLU fused in the epilogue; float32 accumulators.
  3x3 and 5x5 stride-1 layers (conv2–5) use Winograd instead (``conv2d_winograd.cu``:
  input transform, ALPHA²·groups batched GEMMs with float4 loads, output transform
  with fused bias + ReLU): F(2x2, 3x3) for 3x3 (16·groups GEMMs, 2.25× fewer
  multiplications), F(2x2, 5x5) for 5x5 (36·groups GEMMs, 2.78× fewer); the choice
  depends on the layer's shape only (:func:`.kernels.choose_conv_algo`), never on the
  batch size. F(4x4, 5x5) (``algo="winograd_f4"``: 64·groups GEMMs, 6.25× fewer, and
  less than half F(2x2, 5x5)'s memory traffic) is built and tested but opt-in
  (:data:`.kernels.DEFAULT_WINOGRAD`): its NaN reach, gap (1) below, is a
  conformance exception worth taking only once a GPU shows it is faster.
- ``max_pool2d``: one thread per output, floor or ceil mode.
- ``lrn``: one pass across channels, one thread per output.
- ``linear``: split-K over fixed chunks of 512 inputs: a GEMV (batches up to 16: one coalesced pass over
  the weight per 8 rows) or a register-blocked GEMM writes each chunk's partial sums, and one kernel
  adds them in chunk order, the bias and ReLU (``linear.cu``); both sum every output in the same order,
  so an image's logits do not depend on its batch, bit for bit. Our own kernels, not cuBLAS: CUDA
  graphs cannot capture CuPy's cuBLAS calls. With ``tf32=True`` linear is cuBLAS SGEMM through
  ``cupy.matmul`` with TF32 products, then one kernel for bias + ReLU. TF32 is opt-in by name
  (DESIGN.md §5, §7): CuPy makes cuBLAS use TF32 for float32 products when the
  environment variable ``CUPY_TF32`` is a positive integer (read by CuPy once per
  process, at the first float32 matmul, and cached; CuPy's per-dtype switch,
  ``cupy._core._routines_linalg.set_compute_type``, is private, so the variable is
  the only supported control). ``CupyBackend(tf32=False)`` (the default) refuses
  to start when ``CUPY_TF32`` is set; ``CupyBackend(tf32=True)`` requires it and
  reports ``dtype = "tf32"``, so the conformance suite applies the ``"tf32"``
  tolerances. Only ``linear`` is affected: the conv, pool and LRN kernels are
  hand-written float32 FMA code and never use TF32.

A captured forward (``capture=True``, the default without ``tf32``): :meth:`CupyBackend.capture` records
the model's whole forward pass for one input shape as a CUDA graph (:mod:`.graph`) and the model replays
it, one launch per call instead of one per kernel; the same kernels, so the same bits as the eager
forward. ``capture=False`` runs every call eagerly.

Non-finite values (DESIGN.md §5): NaN propagates as in the reference — the
fused ReLU is ``v < 0 ? 0 : v`` (``maximum(v, 0)``: NaN stays NaN, -inf → 0),
max-pool keeps a NaN in its window, LRN and the GEMMs carry it. A NaN input
makes NaN exactly the outputs whose direct window holds it under the implicit
GEMM and F(2x2, 3x3) / F(2x2, 5x5) (their transforms B^T, A^T have the window's
support and add no zero-coefficient products). **Known gaps, Winograd only.**
(1) F(4x4, 5x5) (opt-in, ``algo="winograd_f4"``): a NaN at padded position p
with p % 4 in (1, 2) along an axis reaches the 8 outputs of the two 4-wide
tiles whose inputs hold it, up to 3 beyond its 5-wide window (at p % 4 in
(0, 3) it is exact); the default F(2x2, 5x5) and ``algo="gemm"`` conform.
(2) 3x3 / 5x5 stride-1 layers, conv2–5: an infinite input gives NaN where
the reference gives ±inf — the input and output transforms
subtract entries (e.g. ``v[0] = d[0] - d[2]``, ``y[1] = m[1] - m[2] - m[3]``),
so one ±inf pixel turns into inf - inf inside the outputs it reaches (its windows;
under F(4x4, 5x5) the wider reach of (1)); all other outputs stay finite and
correct. Both break "no element is NaN unless the reference's is";
``algo="gemm"`` conforms. Exception (2), the one the default algorithms have, ships
beside this module in ``conformance-xfails.txt`` (the suite applies it to this backend
only); ``tests/test_cuda_kernels.py`` pins both in the CPU emulation, and
``docs/backends/cupy.md`` gives the counts measured there.

The math of each op is documented once, on :mod:`alexnet_aa.reference`; the
arguments arrive validated by :mod:`alexnet_aa.ops`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from alexnet_aa.arrays import to_numpy
from alexnet_aa.backend import INSTALL_HINTS, Backend, BackendError, BackendUnavailableError

from . import kernels

# cudaError_t values (CUDA runtime API).
_CUDA_ERROR_INSUFFICIENT_DRIVER = 35
_CUDA_ERROR_NO_DEVICE = 100


def _tf32_requested() -> bool:
    """Whether ``CUPY_TF32`` makes CuPy's cuBLAS use TF32: CuPy's own test, ``int(os.getenv("CUPY_TF32", "0")) > 0``."""
    raw = os.environ.get("CUPY_TF32", "").strip()
    if not raw:
        return False
    try:
        return int(raw) > 0
    except ValueError:
        raise BackendError(
            f"[cupy] CUPY_TF32={raw!r} is not an integer (CuPy reads it with int() at the first float32 matmul); "
            "unset it for true float32, or set CUPY_TF32=1 and pass tf32=True"
        ) from None


#: The storage dtypes of :class:`CupyBackend` (``dtype=``): float32 (default), and the half-precision ones.
DTYPES = ("float32", "float16", "bfloat16")
_HALF_TRAINING = ("half-precision storage has no float32 master weights and the backward kernels are float32: "
                  "train with dtype='float32'")


class CupyBackend(Backend):
    """AlexNet ops as CUDA kernels compiled by NVRTC through CuPy (NCHW; float32, float16 or bfloat16).

    ``device``: the CUDA device ordinal to run on (default: CuPy's current device);
    :class:`~alexnet_aa.backend.BackendUnavailableError` when there is no such device.

    ``tf32``: opt in to TF32 in cuBLAS (``linear`` only; the conv, pool and LRN
    kernels are always true float32). CuPy's only public control is the
    environment variable ``CUPY_TF32=1``, read once per process at the first
    float32 matmul, so ``tf32=True`` requires it to be set (before that matmul)
    and sets :attr:`dtype` to ``"tf32"`` (the conformance suite's ``"tf32"``
    tolerances); ``tf32=False`` (the default) raises
    :class:`~alexnet_aa.backend.BackendError` when it is set, so TF32 is never
    used unnamed.

    ``dtype``: ``"float32"`` (default), or ``"float16"`` / ``"bfloat16"`` for half-precision
    inference on tensor cores (sm_80 or newer; float32 accumulation; training refused, see
    :data:`_HALF_TRAINING`). The conformance suite applies the tolerances of the dtype's name.

    ``capture``: record the forward pass as a CUDA graph per input shape and replay it
    (:meth:`capture`); default on, except with ``tf32=True`` (cuBLAS, which graphs cannot
    capture: ``capture=True`` is then an error).
    """

    name = "cupy"
    layout = "NCHW"
    conv_weight_layout = "IHWO"
    linear_weight_layout = "IO"
    dtype = "float32"
    unsupported = {"float64": "the CUDA kernels compute in float32 (float32 accumulators, float32 storage)"}

    def __init__(self, *, device: int | None = None, dtype: str = "float32", tf32: bool = False,
                 capture: bool | None = None) -> None:
        if dtype == "float64":
            raise BackendError(f"[cupy] dtype='float64' is not supported: {self.unsupported['float64']}")
        if dtype not in DTYPES:
            raise ValueError(f"[cupy] dtype: expected one of {', '.join(map(repr, DTYPES))}, got {dtype!r}")
        if tf32 and dtype != "float32":
            raise ValueError(f"[cupy] tf32=True is a float32 mode (TF32 products in cuBLAS); got dtype={dtype!r}")
        if capture and tf32:
            raise BackendError("[cupy] capture=True with tf32=True: TF32 runs linear through cuBLAS, which CuPy "
                               "cannot record in a CUDA graph; pass capture=False (or drop tf32)")
        try:
            import cupy
        except ImportError as exc:
            raise BackendUnavailableError(f"[cupy] cupy is not installed ({exc}): {INSTALL_HINTS['cupy']}") from exc
        except Exception as exc:  # a broken install (e.g. two cupy wheels)
            raise BackendUnavailableError(
                f"[cupy] cupy failed to import: {type(exc).__name__}: {exc}; reinstall: {INSTALL_HINTS['cupy']}"
            ) from exc
        requested = _tf32_requested()
        if requested and not tf32:
            raise BackendError(
                "[cupy] CUPY_TF32 is set: it makes cuBLAS use TF32 (10-bit mantissa) for the float32 products in "
                "linear; pass tf32=True to opt in (conformance then uses the 'tf32' tolerances), or unset CUPY_TF32"
            )
        if tf32 and not requested:
            raise BackendError(
                "[cupy] tf32=True needs the environment variable CUPY_TF32=1, set before the process's first float32 "
                "matmul (CuPy reads it once and offers no public per-call switch)"
            )
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:
            raise BackendUnavailableError(
                f"[cupy] CUDA is not usable here: {type(exc).__name__}: {exc}"
            ) from exc
        if device is None:
            device = cupy.cuda.runtime.getDevice()
        elif isinstance(device, bool) or not isinstance(device, (int, np.integer)):
            raise TypeError(f"[cupy] device must be an int (a CUDA device ordinal), got {type(device).__name__}")
        device = int(device)
        if not 0 <= device < count:
            have = "no CUDA device" if count == 0 else (
                f"{count} CUDA device{'s' if count > 1 else ''} ({', '.join(map(str, range(count)))})")
            raise BackendUnavailableError(f"[cupy] device {device} does not exist: this machine has {have}")
        if dtype != "float32":
            props = cupy.cuda.runtime.getDeviceProperties(device)
            if (props["major"], props["minor"]) < (8, 0):
                name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
                raise BackendUnavailableError(
                    f"[cupy] dtype={dtype!r} needs tensor cores with mma.sync m16n8k16 (compute capability 8.0 or "
                    f"newer); device {device} ({name}) is {props['major']}.{props['minor']}: use dtype='float32'")
        if dtype == "bfloat16":
            try:
                import ml_dtypes
            except ImportError:
                raise BackendUnavailableError("[cupy] dtype='bfloat16' needs ml_dtypes (CuPy's bfloat16 arrays are "
                                              "ml_dtypes.bfloat16): python -m pip install ml_dtypes") from None
            self._np_dtype = np.dtype(ml_dtypes.bfloat16)
        else:
            self._np_dtype = np.dtype(dtype)
        self._cupy = cupy
        self._device = device
        self._tf32 = bool(tf32)
        self._capture = (not tf32) if capture is None else bool(capture)
        if self._tf32:
            self.dtype = "tf32"
        elif dtype != "float32":
            self.dtype = dtype
            self.conv_weight_layout, self.linear_weight_layout = "OIHW", "OI"
            self.unsupported = {**type(self).unsupported, "training": _HALF_TRAINING}
        self._xp = None

    # -- where it runs ------------------------------------------------------
    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import cupy
        except ImportError as exc:
            return False, f"cupy not installed ({exc}): {INSTALL_HINTS['cupy']}"
        except Exception as exc:  # a broken install (e.g. two cupy wheels) must not crash the caller
            return False, f"cupy failed to import: {type(exc).__name__}: {exc}"
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:
            status = getattr(exc, "status", None)
            if status == _CUDA_ERROR_INSUFFICIENT_DRIVER:
                return False, (
                    "no CUDA driver / no NVIDIA GPU found (the CUDA runtime reports a missing or too old "
                    f"NVIDIA driver; cupy {cupy.__version__} is built for CUDA {_runtime_version(cupy)} and "
                    "needs a driver of that CUDA major version)"
                )
            if status == _CUDA_ERROR_NO_DEVICE:
                return False, "no NVIDIA GPU found (the CUDA driver sees no device; check CUDA_VISIBLE_DEVICES)"
            return False, f"CUDA is not usable here: {type(exc).__name__}: {exc}"
        if count < 1:
            return False, "no NVIDIA GPU found (CUDA reports 0 devices; check CUDA_VISIBLE_DEVICES)"
        try:
            cupy.cuda.nvrtc.getVersion()
        except Exception as exc:
            return False, (
                f"NVRTC (libnvrtc, the CUDA runtime compiler) not found: {exc}; "
                "pip install 'nvidia-cuda-nvrtc' matching your CUDA major version"
            )
        return True, ""

    # -- arrays -----------------------------------------------------------------
    @property
    def xp(self) -> Any:
        """``array_api_compat.cupy`` when installed (what ``array_namespace`` returns for cupy arrays), else ``cupy``."""
        if self._xp is None:
            try:
                import array_api_compat.cupy as xp
            except ImportError:
                xp = self._cupy
            self._xp = xp
        return self._xp

    def asarray(self, x: Any) -> Any:
        """To the storage dtype (rounded to nearest even), contiguous, on the backend's device; a host
        array is converted on the host (``ml_dtypes`` for bfloat16) and copied once."""
        cp = self._cupy
        with cp.cuda.Device(self._device):
            if isinstance(x, cp.ndarray):
                return cp.ascontiguousarray(x.astype(self._np_dtype, copy=False))
            host = np.asarray(x)
            if self._np_dtype != np.float32 and host.dtype != self._np_dtype:
                host = host.astype(np.float32).astype(self._np_dtype)
            return cp.asarray(np.ascontiguousarray(host, dtype=self._np_dtype))

    def to_host(self, x: Any) -> np.ndarray:
        """A NumPy copy (:func:`alexnet_aa.arrays.to_numpy`): float32 and float16 as they are, bfloat16
        widened to float32 (exactly)."""
        return to_numpy(x)

    def prepare(self, params: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """The base class's conversion (float32: conv weights IHWO, linear IO; half: OIHW and OI), then, in
        float32, 3x3 and 5x5 conv weights with the Winograd transform of their default algorithm (F(2x2, 3x3),
        F(2x2, 5x5)), as :class:`~.kernels.ConvWeight` (see the module docstring)."""
        out = super().prepare(params)
        if self.dtype in ("float16", "bfloat16"):
            return out
        with self._cupy.cuda.Device(self._device):
            for name, value in out.items():
                if value.ndim == 4 and kernels.winograd_kernel_applies(value.shape) and value.size:
                    algo = kernels.default_winograd_algo(value.shape)
                    out[name] = kernels.ConvWeight(value, kernels.winograd_weight(value, algo))
        return out

    def _contiguous(self, a: Any) -> Any:
        return self._cupy.ascontiguousarray(a)

    # -- the four ops -----------------------------------------------------------
    def conv2d(self, x, w, b, stride, padding, groups: int, relu: bool):
        """float32: NCHW × IHWO weights with fused bias (+ ReLU): implicit GEMM (``conv2d.cu``), or
        Winograd F(2x2, 3x3) / F(2x2, 5x5) for 3x3 / 5x5 stride-1 layers (``conv2d_winograd.cu``);
        half: NCHW × OIHW on tensor cores (``conv2d_mma.cu``)."""
        cp = self._cupy
        if isinstance(w, kernels.ConvWeight):
            w = kernels.ConvWeight(self._contiguous(w.ihwo), None if w.winograd is None else self._contiguous(w.winograd))
        else:
            w = self._contiguous(w)
        out = w.shape[-1] if self.conv_weight_layout == "IHWO" else w.shape[0]
        b = cp.zeros((out,), dtype=self._np_dtype) if b is None else self._contiguous(b)
        with cp.cuda.Device(self._device):
            return kernels.conv2d(self._contiguous(x), w, b, stride, padding, groups, relu)

    def max_pool2d(self, x, kernel, stride, ceil_mode: bool):
        """NCHW, one thread per output, in the storage dtype: ``max_pool2d.cu``."""
        with self._cupy.cuda.Device(self._device):
            return kernels.max_pool2d(self._contiguous(x), kernel, stride, ceil_mode)

    def lrn(self, x, size: int, alpha: float, beta: float, k: float):
        """NCHW, across channels in one pass, computed in float32: ``lrn.cu``."""
        with self._cupy.cuda.Device(self._device):
            return kernels.lrn(self._contiguous(x), size, alpha, beta, k)

    def linear(self, x, w, b, relu: bool):
        """Split-K GEMV or GEMM (float32, IO weights) or tensor-core GEMM (half, OI weights), then the
        chunks summed in order with bias and ReLU: ``linear.cu``; with ``tf32=True``, cuBLAS with TF32
        products and the bias/ReLU kernel."""
        cp = self._cupy
        out = w.shape[1] if self.linear_weight_layout == "IO" else w.shape[0]
        b = cp.zeros((out,), dtype=self._np_dtype) if b is None else self._contiguous(b)
        with cp.cuda.Device(self._device):
            if self._tf32:
                return kernels.linear_cublas(self._contiguous(x), self._contiguous(w), b, relu)
            return kernels.linear(self._contiguous(x), self._contiguous(w), b, relu)

    # -- the backward twins -------------------------------------------------------
    def conv2d_backward(self, x, w, y, dy, stride, padding, groups: int, relu: bool, need_dx: bool):
        """``dw`` by ``conv2d_backward.cu`` (split-K GEMM over the batch, partials summed in a fixed
        order: deterministic); ``dx`` by the forward kernels on the dilated gradient with the flipped,
        group-transposed weights; ``db`` a CuPy sum. ``dw`` comes back IHWO, a plain array."""
        with self._cupy.cuda.Device(self._device):
            return kernels.conv2d_backward(self._contiguous(x), w, self._contiguous(y), self._contiguous(dy),
                                           stride, padding, groups, relu, need_dx)

    def max_pool2d_backward(self, x, y, dy, kernel, stride, ceil_mode: bool):
        """NCHW, one thread per input element gathering over the windows that cover it: ``max_pool2d.cu``."""
        with self._cupy.cuda.Device(self._device):
            return kernels.max_pool2d_backward(self._contiguous(x), self._contiguous(dy), kernel, stride)

    def lrn_backward(self, x, y, dy, size: int, alpha: float, beta: float, k: float):
        """NCHW, the transposed window in one pass: ``lrn.cu``."""
        with self._cupy.cuda.Device(self._device):
            return kernels.lrn_backward(self._contiguous(x), self._contiguous(y), self._contiguous(dy), size, alpha, beta, k)

    def linear_backward(self, x, w, y, dy, relu: bool, need_dx: bool):
        """cuBLAS GEMMs for ``dx`` and ``dw`` (IO, as the weight; TF32 only with ``tf32=True``); ``db`` a CuPy sum."""
        with self._cupy.cuda.Device(self._device):
            return kernels.linear_backward(self._contiguous(x), self._contiguous(w), self._contiguous(y),
                                           self._contiguous(dy), relu, need_dx)

    # -- optional ---------------------------------------------------------------
    def capture(self, forward, x):
        """``forward`` recorded for ``x``'s shape as a CUDA graph (:class:`.graph.CapturedForward`), or
        ``None`` with ``capture=False`` (and with ``tf32=True``)."""
        if not self._capture:
            return None
        from .graph import CapturedForward

        with self._cupy.cuda.Device(self._device):
            return CapturedForward(self._cupy, forward, x)

    def warmup(self) -> float:
        """Compile (or load from ``CUPY_CACHE_DIR``) every kernel; return the seconds it took."""
        t0 = time.perf_counter()
        with self._cupy.cuda.Device(self._device):
            kernels.compile_all(self._device)
            kernels.device_facts(self._device)
            self._cupy.cuda.Device(self._device).synchronize()
        return time.perf_counter() - t0

    def describe(self) -> dict[str, str]:
        cp = self._cupy
        props = cp.cuda.runtime.getDeviceProperties(self._device)
        name = props["name"]
        facts = {
            "cupy": cp.__version__,
            "device": f"{self._device}: {name.decode() if isinstance(name, bytes) else name}",
            "compute capability": f"{props['major']}.{props['minor']}",
            "CUDA runtime": _fmt_cuda_version(cp.cuda.runtime.runtimeGetVersion()),
            "CUDA driver": _fmt_cuda_version(cp.cuda.runtime.driverGetVersion()),
            "dtype": self.dtype if self.dtype != "tf32" else "float32 (TF32 products in linear)",
            "conv2d": ("implicit GEMM on tensor cores (mma.sync, float32 accumulation), tiles "
                       + "/".join(kernels.MMA_CONV_TILES) + ", fused bias+ReLU in float32"
                       if self.dtype in ("float16", "bfloat16") else
                       "implicit GEMM, tiles " + "/".join(kernels.CONV_TILES) + ", fused bias+ReLU; "
                       "3x3/5x5 stride 1: Winograd F(2x2,3x3)/F(2x2,5x5) (F(4x4,5x5) opt-in), GEMM tiles " + "/".join(kernels.WINOGRAD_TILES)),
            "linear": "cuBLAS (TF32 products) + bias/ReLU kernel" if self._tf32 else
            f"own kernels: split-K in chunks of {kernels.LINEAR_K_CHUNK}, "
            + ("tensor-core GEMM" if self.dtype in ("float16", "bfloat16") else
               f"GEMV up to batch {kernels.LINEAR_GEMV_MAX_BATCH}, tiled GEMM above") + ", chunks summed in order",
            "captured forward": "on (a CUDA graph per input shape, replayed)" if self._capture else
            "off" + (" (tf32=True: cuBLAS cannot be captured)" if self._tf32 else " (capture=False)"),
            "tf32": "on (tf32=True, CUPY_TF32=1: cuBLAS uses TF32 in linear; conv/pool/LRN stay float32)"
            if self._tf32 else "off (true float32 everywhere)" if self.dtype == "float32" else "off",
            "cache dir": os.environ.get("CUPY_CACHE_DIR", "~/.cupy/kernel_cache (default)"),
        }
        try:
            facts["NVRTC"] = ".".join(map(str, cp.cuda.nvrtc.getVersion()))
        except Exception as exc:  # describe() is informational: report, don't raise
            facts["NVRTC"] = f"unavailable ({type(exc).__name__})"
        return facts


def _fmt_cuda_version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def _runtime_version(cupy) -> str:
    try:
        return _fmt_cuda_version(cupy.cuda.runtime.runtimeGetVersion())
    except Exception:
        return "?"
