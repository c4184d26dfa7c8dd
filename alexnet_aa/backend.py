"""The Backend protocol, the registry of backends and their selection.

A backend is one object that owns an array namespace and computes AlexNet's
four heavy ops on arrays of that namespace, in its own layouts:

========================  ==========================================================
attribute                 meaning
========================  ==========================================================
``name``                  the name it is registered under (``"numpy"``, ``"mlx"``)
``layout``                ``"NCHW"`` or ``"NHWC"``: the activations its ops take and return
``conv_weight_layout``    the axis order of the conv weights its ``prepare`` returns
                          (a permutation of ``"OIHW"``; default ``"OIHW"``)
``linear_weight_layout``  ``"OI"`` (default) or ``"IO"``: the same for linear weights
``dtype``                 the compute dtype, ``"float32"`` unless asked otherwise
                          (``"float64"``, ``"tf32"``, ``"float16"``, ``"bfloat16"``: each
                          opt-in by name, each with its own conformance tolerances)
``unsupported``           ``{capability: reason}`` for each of :data:`CAPABILITIES` it
                          lacks: ops refuse those calls with :class:`UnsupportedError`
                          and the conformance suite skips the cases that need them
``xp``                    its array namespace (Array API standard)
========================  ==========================================================

Methods: :meth:`Backend.available`, :meth:`Backend.asarray`,
:meth:`Backend.to_host`, :meth:`Backend.prepare` (a default is provided), the
ops :meth:`Backend.conv2d`, :meth:`Backend.max_pool2d`, :meth:`Backend.lrn`,
:meth:`Backend.linear`, and the optional :meth:`Backend.capture` (a recorded forward pass, replayed),
:meth:`Backend.warmup` and :meth:`Backend.describe`.

The ops are called through :mod:`alexnet_aa.ops`, which has validated every
argument: a backend's op receives native arrays of the right ranks and
matching sizes, kernels, strides and paddings as pairs of ints and flags as
bools, and only computes. The math of every op is documented once, on the
reference op of the same name in :mod:`alexnet_aa.reference`; a backend's
docstrings say only how it computes it (layout, tiling, fusion).

Backends are found through the entry-point group ``alexnet_aa.backends``
(``name = "module:Class"``). Listing them imports nothing; a backend's module
is imported only when that backend is asked for, so ``import alexnet_aa``
never imports cupy or mlx.
"""

from __future__ import annotations

import abc
import ast
import functools
import inspect
import re
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

import numpy as np

from . import layouts

ENTRY_POINT_GROUP = "alexnet_aa.backends"

#: How to install each backend this project publishes as its own distribution (shown when one is
#: missing). ``array-api`` comes with ``alexnet-aa`` itself.
INSTALL_HINTS = {
    "numpy": "python -m pip install alexnet-aa-numpy",
    "mlx": "python -m pip install 'alexnet-aa-mlx[cpu]'  (macOS arm64, Metal: alexnet-aa-mlx)",
    "cupy": "python -m pip install 'alexnet-aa-cupy[cuda13]'",
}

#: The backward twins of the four ops (DESIGN.md §8): optional; a backend without them is inference only.
BACKWARD_OPS = ("conv2d_backward", "max_pool2d_backward", "lrn_backward", "linear_backward")

#: Optional capabilities, and what each one covers. A backend lists the ones it lacks in
#: ``unsupported`` with its reason.
CAPABILITIES = {
    "groups": "conv2d with groups > 1",
    "ceil_mode": "max_pool2d with ceil_mode=True where it differs from floor mode",
    "lrn_even_size": "lrn with an even window size",
    "float64": "computing in float64 (the constructor option dtype='float64')",
    "training": "the backward ops and training steps (model.gradients, model.train_step) on this instance "
                "(e.g. a half-precision one, which has no float32 master weights)",
}


class BackendError(RuntimeError):
    """Base class of the errors raised when choosing or loading a backend."""


class UnknownBackendError(BackendError, LookupError):
    """No backend is registered under the requested name."""


class BackendUnavailableError(BackendError):
    """The backend is registered but cannot run here (package or device missing)."""


class UnsupportedError(BackendError, NotImplementedError):
    """An op asked for a capability the backend declares it lacks; ``capability`` names it."""

    def __init__(self, capability: str, message: str) -> None:
        self.capability = capability
        super().__init__(message)


class Backend(abc.ABC):
    """Base class of every backend, ours and third parties'.

    Subclasses set ``name`` and ``layout`` (and the weight layouts and
    ``unsupported`` where the defaults do not hold) and implement the abstract
    methods. Options (a namespace, a dtype, a device) are keyword arguments of
    the constructor; :func:`get_backend` passes them through. A backend that
    computes in float64 takes ``dtype="float64"``.
    """

    name: str = ""
    layout: str = "NCHW"
    conv_weight_layout: str = "OIHW"
    linear_weight_layout: str = "OI"
    dtype: str = "float32"
    unsupported: Mapping[str, str] = {}

    # -- where it runs ------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def available(cls) -> tuple[bool, str]:
        """``(True, "")`` when this backend can run here, else ``(False, why)``.

        Never raises: a missing package or device is reported as the reason.
        """

    @property
    @abc.abstractmethod
    def xp(self) -> Any:
        """The backend's array namespace."""

    @abc.abstractmethod
    def asarray(self, x: Any) -> Any:
        """Host (NumPy) or native array → native array of the backend's storage dtype
        (float32; float64, float16 or bfloat16 for a backend of that dtype; ``"tf32"`` stores float32)."""

    @abc.abstractmethod
    def to_host(self, x: Any) -> np.ndarray:
        """Native array → NumPy array (a copy where the data lives on a device)."""

    def prepare(self, params: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Canonical host weights → native arrays, once per model.

        ``params`` maps names to float32 host arrays in the canonical layouts:
        4-D conv weights ``(out, in/groups, kh, kw)``, 2-D linear weights
        ``(out, in)``, 1-D biases. The result has the same keys, each tensor in
        the backend's declared ``conv_weight_layout`` / ``linear_weight_layout``
        (decided by its rank) and on its device. The model has already
        permuted fc6's input axis to this backend's flatten order.

        The default transposes on the host (:func:`alexnet_aa.layouts.weights_to`)
        and calls :meth:`asarray`; a backend overrides it to add what its ops
        precompute (a Winograd transform, an evaluation), starting from
        ``super().prepare(params)``.
        """
        host = layouts.weights_to(params, self.conv_weight_layout, self.linear_weight_layout)
        return {name: self.asarray(value) for name, value in host.items()}

    # -- the four ops: called by alexnet_aa.ops with validated, normalised arguments --
    @abc.abstractmethod
    def conv2d(self, x, w, b, stride: tuple[int, int], padding: tuple[int, int], groups: int, relu: bool):
        """Grouped 2-D cross-correlation + bias (+ ReLU). See :func:`alexnet_aa.reference.conv2d`.

        ``b`` may be ``None``; the output size is at least 1×1."""

    @abc.abstractmethod
    def max_pool2d(self, x, kernel: tuple[int, int], stride: tuple[int, int], ceil_mode: bool):
        """Max pooling, floor or ceil mode. See :func:`alexnet_aa.reference.max_pool2d`.

        The map is at least as large as the kernel."""

    @abc.abstractmethod
    def lrn(self, x, size: int, alpha: float, beta: float, k: float):
        """Local response normalisation across channels. See :func:`alexnet_aa.reference.lrn`."""

    @abc.abstractmethod
    def linear(self, x, w, b, relu: bool):
        """``x @ w.T + b`` (+ ReLU), ``w`` in ``linear_weight_layout``. See :func:`alexnet_aa.reference.linear`.

        ``b`` may be ``None``."""

    # -- the backward twins: optional (a backend without them is inference only) -----
    # ``y`` is the forward's output for the same ``x`` and arguments: the backend's own in
    # ``AlexNet.backward_steps``, the reference's rounded to the backend's dtype in the suite's
    # per-op cases (so both sides mask the same ReLU units; a window's maximum rounds to itself).
    # A twin may rely on it: as the ReLU mask, or as the window maxima to match.
    def conv2d_backward(self, x, w, y, dy, stride: tuple[int, int], padding: tuple[int, int], groups: int,
                        relu: bool, need_dx: bool):
        """Gradients of ``conv2d``: ``(dx or None, dw, db)``, ``dw`` in ``conv_weight_layout``.
        See :func:`alexnet_aa.reference.conv2d_backward`."""
        raise inference_only(self, "conv2d_backward")

    def max_pool2d_backward(self, x, y, dy, kernel: tuple[int, int], stride: tuple[int, int], ceil_mode: bool):
        """Gradient of ``max_pool2d`` with respect to ``x`` (ties: the window's first maximum).
        See :func:`alexnet_aa.reference.max_pool2d_backward`."""
        raise inference_only(self, "max_pool2d_backward")

    def lrn_backward(self, x, y, dy, size: int, alpha: float, beta: float, k: float):
        """Gradient of ``lrn`` with respect to ``x`` (the transposed window).
        See :func:`alexnet_aa.reference.lrn_backward`."""
        raise inference_only(self, "lrn_backward")

    def linear_backward(self, x, w, y, dy, relu: bool, need_dx: bool):
        """Gradients of ``linear``: ``(dx or None, dw, db)``, ``dw`` in ``linear_weight_layout``.
        See :func:`alexnet_aa.reference.linear_backward`."""
        raise inference_only(self, "linear_backward")

    # -- optional -----------------------------------------------------------
    def capture(self, forward, x):
        """``forward`` (native input → native output: the model's whole forward pass) recorded for
        inputs of ``x``'s shape and dtype, as a callable that replays it on a new such input and
        returns a new array; ``None`` (the default) where the backend records nothing, and the model
        then runs every call eagerly. A replay must give the bits ``forward`` gives (the same kernels);
        the model keeps the callable, with whatever buffers it holds, for as long as it uses it."""
        return None

    def warmup(self) -> float:
        """Compile or load whatever the ops need up front; return the seconds it took."""
        return 0.0

    def describe(self) -> dict[str, str]:
        """Facts for ``alexnet-aa backends``: library versions, device, which code paths are active."""
        return {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} layout={self.layout} dtype={self.dtype}>"


def missing_backward_ops(cls: type) -> list[str]:
    """The backward ops (:data:`BACKWARD_OPS`) that ``cls`` does not implement: all four for an
    inference-only backend, none for one that trains."""
    return [name for name in BACKWARD_OPS if getattr(cls, name) is getattr(Backend, name)]


def inference_only(backend: Backend | type, op: str) -> UnsupportedError:
    """The error for ``op`` on a backend without (all) backward ops; names every missing one."""
    cls = backend if isinstance(backend, type) else type(backend)
    missing = missing_backward_ops(cls)
    return UnsupportedError(
        "training",
        f"[{op}] the {cls.name!r} backend cannot train (inference only): it has no {', '.join(missing)} "
        f"(training needs all of {', '.join(BACKWARD_OPS)})",
    )


def require_training(backend: Backend, op: str) -> None:
    """Raise :func:`inference_only` for ``op`` where ``backend`` lacks any backward op, or
    :class:`UnsupportedError` where the instance declares ``unsupported["training"]`` (a backend
    built for half-precision inference); nothing where it trains."""
    if missing_backward_ops(type(backend)):
        raise inference_only(backend, op)
    reason = backend.unsupported.get("training")
    if reason is not None:
        raise UnsupportedError("training", f"[{op}] the {backend.name!r} backend built with dtype={backend.dtype!r} "
                                           f"cannot train: {reason}")


def protocol_problems(cls: type) -> list[str]:
    """What a backend class declares wrongly: its layouts and its ``unsupported`` capabilities
    (empty when all is well). The conformance suite checks it on every backend class."""
    problems = layouts.layout_problems(cls.layout, cls.conv_weight_layout, cls.linear_weight_layout)
    unsupported = cls.unsupported
    if "float64" not in (unsupported if isinstance(unsupported, Mapping) else {}):
        params = inspect.signature(cls.__init__).parameters
        if "dtype" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            problems.append("__init__: expected a dtype= option (the suite builds it with dtype='float64'), "
                            "or unsupported['float64'] with the reason")
    if not isinstance(unsupported, Mapping):
        problems.append(f"unsupported: expected a mapping of capability to reason, got {unsupported!r}")
        return problems
    for capability, reason in unsupported.items():
        if capability not in CAPABILITIES:
            problems.append(f"unsupported: expected capabilities among {sorted(CAPABILITIES)}, got {capability!r}")
        if not (isinstance(reason, str) and reason.strip()):
            problems.append(f"unsupported[{capability!r}]: expected the reason as a non-empty string, got {reason!r}")
    return problems


# -- the registry -------------------------------------------------------------


def registered_backends() -> dict[str, Any]:
    """``{name: EntryPoint}`` of every installed backend, sorted by name. Imports nothing."""
    eps = entry_points(group=ENTRY_POINT_GROUP)
    return {ep.name: ep for ep in sorted(eps, key=lambda ep: ep.name)}


def _known_list() -> str:
    names = registered_backends()
    lines = [f"  {n}  (installed)" for n in names]
    lines += [f"  {n}  (not installed: {hint})" for n, hint in INSTALL_HINTS.items() if n not in names]
    lines.append(f"(a third-party backend registers itself under the entry-point group {ENTRY_POINT_GROUP!r})")
    return "\n".join(lines)


@functools.lru_cache(maxsize=None)
def backend_class(name: str) -> type[Backend]:
    """The class registered as ``name``, importing its module now.

    Raises :class:`UnknownBackendError` (listing the known backends and how to
    install each) when no such entry point exists, and
    :class:`BackendUnavailableError` when its module cannot be imported.
    """
    eps = registered_backends()
    if name not in eps:
        if name in INSTALL_HINTS:
            raise UnknownBackendError(
                f"backend {name!r} is not installed: {INSTALL_HINTS[name]}\nknown backends:\n{_known_list()}"
            )
        raise UnknownBackendError(f"unknown backend {name!r}; known backends:\n{_known_list()}")
    try:
        cls = eps[name].load()
    except Exception as exc:  # a broken plugin must not take the registry down with it
        raise BackendUnavailableError(
            f"backend {name!r} is registered as {eps[name].value!r} but could not be loaded: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise BackendError(
            f"entry point {eps[name].value!r} for backend {name!r} is not a subclass of "
            f"alexnet_aa.backend.Backend (got {cls!r})"
        )
    return cls


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """A backend spec, ``NAME`` or ``NAME[key=value,...]``, as ``(name, constructor options)``: values that
    read as Python literals (numbers, ``True``, ``False``, ``None``) become them, anything else stays a
    string. ``"cupy[dtype=float16,capture=False]"`` → ``("cupy", {"dtype": "float16", "capture": False})``.

    >>> parse_spec("array-api[namespace=array_api_strict]")
    ('array-api', {'namespace': 'array_api_strict'})
    """
    m = re.fullmatch(r"\s*([\w.-]+)\s*(?:\[([^\]]*)\])?\s*", spec)
    if not m:
        raise ValueError(f"bad backend spec {spec!r}: expected NAME or NAME[key=value,...]")
    options: dict[str, Any] = {}
    for item in filter(str.strip, (m.group(2) or "").split(",")):
        key, eq, value = (part.strip() for part in item.partition("="))
        if not (eq and key.isidentifier()):
            raise ValueError(f"bad backend spec {spec!r}: expected key=value options, got {item.strip()!r}")
        try:
            options[key] = ast.literal_eval(value) if len(value) <= 100 else value
        except (ValueError, SyntaxError):
            options[key] = value
    return m.group(1), options


def get_backend(name: str | Backend = "numpy", **options) -> Backend:
    """The backend registered as ``name``, constructed with ``options``.

    ``name`` may carry options as a spec, ``"mlx[dtype=float16]"`` (:func:`parse_spec`); an option given
    both ways is an error. A :class:`Backend` instance is returned as it is (options must then be
    empty). A backend that cannot run here raises :class:`BackendUnavailableError` with its reason.
    """
    if isinstance(name, Backend):
        if options:
            raise TypeError("options can only be given with a backend name, not a Backend instance")
        return name
    if not isinstance(name, str):
        raise TypeError(f"backend must be a name (str) or a Backend instance, got {type(name).__name__}")
    name, spec_options = parse_spec(name)
    twice = sorted(set(spec_options) & set(options))
    if twice:
        raise TypeError(f"backend option{'s' if len(twice) > 1 else ''} {', '.join(twice)} given both in the spec "
                        f"and as keyword{'s' if len(twice) > 1 else ''}")
    options = {**spec_options, **options}
    cls = backend_class(name)
    ok, why = _availability(name)
    if not ok:
        hint = INSTALL_HINTS.get(name)
        raise BackendUnavailableError(
            f"backend {name!r} is not available here: {why}" + (f"\n  install: {hint}" if hint else "")
        )
    return cls(**options)


def available_backends() -> dict[str, tuple[bool, str]]:
    """``{name: (available, reason)}`` for every registered backend; never raises."""
    return {name: _availability(name) for name in registered_backends()}


def _availability(name: str) -> tuple[bool, str]:
    """``backend_class(name).available()``, with a broken plugin reported, never raised."""
    try:
        return backend_class(name).available()
    except BackendError as exc:
        return False, str(exc)
    except Exception as exc:  # a third party's available() must say why, not raise
        return False, f"available() raised {type(exc).__name__}: {exc}"
