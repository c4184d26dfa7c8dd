"""Training (DESIGN.md §8): the dropout masks, the optimizer and the learning-rate schedule.

:func:`dropout_masks` draws the dropout masks of one training step from one
seed, in the layer table's order, so that a step computes the same thing on
every backend; the model moves them to the backend (in its flatten order) and
its dropout layers multiply by them. :class:`SGD` is the paper's update rule,
:class:`Schedule` its learning-rate drops; :meth:`AlexNet.train_step
<alexnet_aa.model.AlexNet.train_step>` runs one step with them, and
:mod:`alexnet_aa.trainer` whole epochs from an image folder.

>>> import numpy as np
>>> opt, w = SGD(lr=0.01), {"fc8.weight": np.ones(2, np.float32)}
>>> w = opt.step(w, {"fc8.weight": np.full(2, 10.0, np.float32)})
>>> [round(float(v), 6) for v in w["fc8.weight"]]  # 1 - 0.0005·0.01·1 - 0.01·10
[0.899995, 0.899995]
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np

from .architecture import Architecture, Dropout, layer_infos
from .weights import (
    CATEGORIES_KEY,
    CHECKPOINT_KEY,
    PREPROCESS_KEY,
    VARIANT_KEY,
    VELOCITY_PREFIX,
    WeightsFileError,
    read_weights_file,
    save_weights,
)


def dropout_masks(arch: Architecture, batch: int, seed: int | None, input_size: int | None = None) -> dict[str, np.ndarray]:
    r"""The scaled keep masks of every dropout layer for a batch of ``batch`` images, by layer name.

    ``rng = numpy.random.default_rng(seed)``; for each dropout layer in table
    order, ``keep = rng.random((N, F)) >= p`` (float64 draws) and the mask is
    ``keep / (1 − p)`` in float32 — inverted dropout: kept units are scaled up
    in training so that evaluation is the identity, where the paper (§4.2)
    instead multiplies the outputs by :math:`1 - p` at test time; the two agree
    in expectation. ``F`` is the layer's feature count, in the canonical
    (C, H, W) order for features that are a flattened map (torchvision's drop6).
    ``seed=None``: no masks — dropout is the identity.

    >>> from alexnet_aa import get_architecture
    >>> masks = dropout_masks(get_architecture("paper"), 2, seed=0)
    >>> {name: m.shape for name, m in masks.items()}, sorted(set(masks["drop6"].ravel().tolist()))
    ({'drop6': (2, 4096), 'drop7': (2, 4096)}, [0.0, 2.0])
    """
    if seed is None:
        return {}
    rng = np.random.default_rng(seed)
    dropouts = set(arch.layers_of(Dropout))
    masks = {}
    for info in layer_infos(arch, input_size):
        if info.layer in dropouts:
            keep = rng.random((batch, *info.in_shape)) >= info.layer.p
            masks[info.name] = (keep / (1.0 - info.layer.p)).astype(np.float32)
    return masks


# -- the optimizer ---------------------------------------------------------------------------------


def _checked_number(owner: str, name: str, value: Any, low: float, high: float = math.inf, *, open_low: bool = False) -> float:
    """``value`` as a float in ``[low, high)`` (``(low, high)`` with ``open_low``), else a ValueError
    in the project's message style."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if open_low else value >= low) and value < high
    if not ok:
        bounds = f"{'(' if open_low else '['}{low:g}, {high:g})"
        raise ValueError(f"[{owner}] {name}: expected a finite number in {bounds}, got {value!r}")
    return float(value)


class SGD:
    r"""Stochastic gradient descent with momentum and weight decay, the paper's rule (Krizhevsky et
    al. 2012, §5; Caffe's ``SGDSolver``), for every tensor :math:`w` with gradient :math:`\partial L/\partial w`:

    .. math::

        v \leftarrow \mu\, v - \lambda\, \varepsilon\, w - \varepsilon\, \frac{\partial L}{\partial w},
        \qquad w \leftarrow w + v, \qquad v_0 = 0

    with learning rate :math:`\varepsilon` (``lr``), momentum :math:`\mu`
    (0.9) and weight decay :math:`\lambda` (0.0005). Caffe's per-blob
    multipliers scale :math:`\varepsilon` and :math:`\lambda` for biases
    (``bias_lr_mult=2, bias_decay_mult=0`` in BVLC's AlexNet prototxt).

    PyTorch's ``torch.optim.SGD`` keeps :math:`b \leftarrow \mu b + \partial L/\partial w + \lambda w`
    and steps :math:`w \leftarrow w - \varepsilon b`: the same weights while
    :math:`\varepsilon` is constant (:math:`v = -\varepsilon b`), not after a
    change of learning rate, which PyTorch applies to the whole accumulated
    momentum and this rule only to the new gradient.

    :meth:`step` runs on the backend's own arrays (Array API code on their
    namespace) and updates them in place; ``velocity`` holds :math:`v` by
    canonical name, in the same native layout as the weights.
    """

    def __init__(self, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4, *,
                 bias_lr_mult: float = 1.0, bias_decay_mult: float = 1.0) -> None:
        self.lr = _checked_number("SGD", "lr", lr, 0.0, open_low=True)
        self.momentum = _checked_number("SGD", "momentum", momentum, 0.0, 1.0)
        self.weight_decay = _checked_number("SGD", "weight_decay", weight_decay, 0.0)
        self.bias_lr_mult = _checked_number("SGD", "bias_lr_mult", bias_lr_mult, 0.0)
        self.bias_decay_mult = _checked_number("SGD", "bias_decay_mult", bias_decay_mult, 0.0)
        self.velocity: dict[str, Any] = {}

    def rates(self, name: str) -> tuple[float, float]:
        """``(ε, λ·ε)`` of the tensor ``name``: a bias's with the bias multipliers."""
        bias = name.endswith(".bias")
        lr = self.lr * (self.bias_lr_mult if bias else 1.0)
        return lr, self.weight_decay * (self.bias_decay_mult if bias else 1.0) * lr

    def step(self, params: Mapping[str, Any], grads: Mapping[str, Any]) -> dict[str, Any]:
        """The updated tensors of ``params`` named in ``grads``; ``velocity`` updated.

        The Array API's in-place operators (``v *= μ``, ``w += v``): where a
        namespace's arrays are mutable (NumPy, CuPy) the update writes into
        ``params``' own arrays and the velocity — no new copy of either; the
        scaled terms ``λεw`` and ``εg`` are temporaries of one tensor's size at
        a time — and where they are not, Python rebinds the name to the new
        array; either way the returned mapping holds the updated tensors."""
        out = {}
        for name, g in grads.items():
            w = params[name]
            lr, decay = self.rates(name)
            v = self.velocity.get(name)
            if v is None:
                v = -decay * w - lr * g
            else:
                v *= self.momentum
                v -= decay * w
                v -= lr * g
            w += v
            self.velocity[name] = v
            out[name] = w
        return out

    def config(self) -> dict[str, float]:
        """The hyper-parameters (what a checkpoint records besides the velocity)."""
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
                "bias_lr_mult": self.bias_lr_mult, "bias_decay_mult": self.bias_decay_mult}


# -- learning-rate schedules --------------------------------------------------------------------


@dataclass
class Schedule:
    """When the learning rate drops by ``factor`` (÷10 in the paper), after each epoch.

    ``kind="none"``: never. ``kind="step"``: after every ``every`` epochs.
    ``kind="plateau"`` (the paper's, §5: "divide the learning rate by 10 when
    the validation error rate stopped improving"): after ``patience`` epochs
    whose validation error is not below the best so far, at most
    ``max_drops`` times (the paper: 3). ``best``, ``waited`` and ``drops`` are
    its state, kept in checkpoints.
    """

    kind: str = "none"
    every: int = 0
    patience: int = 1
    factor: float = 0.1
    max_drops: int = 3
    best: float = math.inf
    waited: int = 0
    drops: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("none", "step", "plateau"):
            raise ValueError(f"[schedule] kind: expected 'none', 'step' or 'plateau', got {self.kind!r}")
        if self.kind == "step" and not (isinstance(self.every, int) and self.every >= 1):
            raise ValueError(f"[schedule] step: expected a positive number of epochs, got {self.every!r}")
        if not (isinstance(self.patience, int) and self.patience >= 1):
            raise ValueError(f"[schedule] plateau: expected a positive patience in epochs, got {self.patience!r}")
        _checked_number("schedule", "factor", self.factor, 0.0, 1.0, open_low=True)

    @classmethod
    def parse(cls, text: str) -> Schedule:
        """``none``, ``step:N`` (÷10 every N epochs) or ``plateau[:P]`` (÷10 after P epochs without a better
        validation error; P = 1 by default)."""
        kind, _, arg = text.partition(":")
        try:
            if kind == "step":
                return cls("step", every=int(arg))
            if kind == "plateau":
                return cls("plateau", patience=int(arg) if arg else 1)
        except ValueError:
            raise ValueError(f"[schedule] expected step:N or plateau[:P] with whole numbers, got {text!r}") from None
        if kind == "none" and not arg:
            return cls()
        raise ValueError(f"[schedule] expected none, step:N or plateau[:P], got {text!r}")

    def after_epoch(self, epoch: int, lr: float, val_error: float | None) -> float:
        """The learning rate for the epoch after ``epoch`` (1-based), given this one's ``lr`` and validation error."""
        if self.kind == "step":
            return lr * self.factor if epoch % self.every == 0 else lr
        if self.kind == "plateau":
            if val_error is None:
                raise ValueError("[schedule] plateau needs a validation error each epoch: use a validation split")
            if val_error < self.best:
                self.best, self.waited = val_error, 0
                return lr
            self.waited += 1
            if self.waited >= self.patience and self.drops < self.max_drops:
                self.drops, self.waited = self.drops + 1, 0
                return lr * self.factor
        return lr

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Schedule:
        try:
            return cls(**json.loads(text))
        except (TypeError, ValueError, RecursionError) as exc:
            raise ValueError(f"[schedule] not a schedule's JSON: {exc}") from None


#: The key after the run's seed of each kind of random draw of a training run (the validation split,
#: an epoch's order, an image's augmentation, the images the colour covariance is estimated from, a
#: step's dropout masks), so that no two kinds share a stream.
SPLIT, ORDER, AUGMENT, PCA_SAMPLE, DROPOUT = range(5)


def step_seed(seed: int, epoch: int, step: int) -> int:
    """The dropout seed of one training step: a function of the run's seed and the step's place only,
    so that a resumed run draws the masks an uninterrupted one would."""
    return int(np.random.SeedSequence([seed, DROPOUT, epoch, step]).generate_state(1)[0])


# -- checkpoints ----------------------------------------------------------------------------------

CHECKPOINT_FORMAT = "alexnet_aa.checkpoint/1"


class Checkpoint(NamedTuple):
    """A checkpoint as read back: canonical ``weights`` and ``velocity`` (float32 host arrays by
    canonical name), the file's ``metadata`` and its training ``state`` (the JSON :func:`save_checkpoint`
    was given, with the optimizer's hyper-parameters under ``"optimizer"``)."""

    weights: dict[str, np.ndarray]
    velocity: dict[str, np.ndarray]
    metadata: dict[str, str]
    state: dict[str, Any]


def save_checkpoint(path, model, opt: SGD, state: Mapping[str, Any]) -> None:
    """Write ``model``'s weights, ``opt``'s velocity and ``state`` (epoch, lr, seed, schedule, history,
    …) to one ``.safetensors`` file, atomically (:func:`~alexnet_aa.weights.save_weights`). The
    metadata also carries the variant, the preprocessing and the class names, so that the file is a
    weights file like any other: ``AlexNet(variant, weights=path)`` and ``alexnet-aa classify``
    read it (without the velocity). Non-finite weights are refused, so a diverged step never
    replaces the last good checkpoint."""
    weights = model.state_dict()
    bad = [name for name, w in weights.items() if not np.isfinite(w).all()]
    if bad:
        raise NonFiniteWeightsError(f"[checkpoint] weights: expected finite values, got NaN or infinity in {', '.join(bad)}")
    tensors = dict(weights)
    tensors.update({VELOCITY_PREFIX + name: v for name, v in model.canonical_params(opt.velocity).items()})
    save_weights(path, tensors, {
        VARIANT_KEY: model.variant,
        PREPROCESS_KEY: model.preprocess.to_json(),
        CATEGORIES_KEY: json.dumps(list(model.categories)),
        CHECKPOINT_KEY: json.dumps({"format": CHECKPOINT_FORMAT, **state, "optimizer": opt.config()}),
    })


def load_checkpoint(path) -> Checkpoint:
    """Read a file :func:`save_checkpoint` wrote; a weights file without training state is an error."""
    tensors, metadata = read_weights_file(path, optimizer_state=True)
    try:
        state = json.loads(metadata[CHECKPOINT_KEY])
        if state.pop("format") != CHECKPOINT_FORMAT:
            raise ValueError
    except (KeyError, ValueError, TypeError, AttributeError, RecursionError):
        raise WeightsFileError(f"{path}: not a training checkpoint (no {CHECKPOINT_FORMAT!r} state under "
                               f"{CHECKPOINT_KEY!r}): start from it with --weights instead") from None
    weights = {n: t for n, t in tensors.items() if not n.startswith(VELOCITY_PREFIX)}
    velocity = {n[len(VELOCITY_PREFIX):]: t for n, t in tensors.items() if n.startswith(VELOCITY_PREFIX)}
    return Checkpoint(weights, velocity, metadata, state)


class NonFiniteWeightsError(ValueError):
    """A step left NaN or infinite weights."""
