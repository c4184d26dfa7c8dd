"""Whole training runs: an image folder in, a checkpoint per epoch out (what ``alexnet-aa train`` runs).

:func:`train` puts together :mod:`alexnet_aa.data` (the folder, the split, the
augmentation, the background loader), :meth:`AlexNet.train_step
<alexnet_aa.model.AlexNet.train_step>` with :class:`~alexnet_aa.training.SGD`
and a :class:`~alexnet_aa.training.Schedule`, and after every epoch writes the
checkpoint (atomically), the metrics (JSON lines) and the plot. Every random
draw is keyed by the run's seed and its place (epoch, step, image), so a run
resumed from the checkpoint of epoch *k* computes what the uninterrupted run
computed after epoch *k*: on a deterministic backend, the same bits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import ops
from .architecture import get_architecture, variant_name
from .arrays import check_batch
from .backend import require_training
from .files import atomic_write
from .data import IMAGENET_EIGVAL, IMAGENET_EIGVEC, Augment, ImageFolder, batches, pca_lighting
from .model import AlexNet, NonFiniteLossError
from .preprocess import Preprocess, default_preprocess, scaled
from .training import SGD, NonFiniteWeightsError, Schedule, load_checkpoint, save_checkpoint, step_seed
from .weights import CATEGORIES_KEY, PREPROCESS_KEY, he_weights


#: ``--init``: what a run without ``--weights`` starts from.
INITS = {"paper": "the paper's initialisation", "he": "He's initialisation"}


class TrainingError(ValueError):
    """A run that cannot start or go on: the message says why, and where the last good checkpoint is."""


class DivergedError(TrainingError):
    """A step's loss or the weights after an epoch stopped being finite: the run diverged."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on (the CLI's options). ``weights``: a file to start from (any format
    :func:`alexnet_aa.importers.read_any` reads); ``None`` starts from ``init`` (``"paper"``: N(0, 0.01²)
    and the paper's biases; ``"he"``: N(0, 2/fan_in)). ``freeze``: keep the layers up to and including
    this one. ``lighting``: the colour noise's principal components, ``"data"`` (of the training set)
    or ``"imagenet"``; ``None`` picks ``"imagenet"`` when fine-tuning from ``weights``, else ``"data"``.
    ``input_size``: the crop side for the torchvision variant (any ≥ 63; resized to 8/7 of it first).
    ``variant``: ``None`` is a resumed run's own, else ``"paper"``."""

    data: str
    out: str
    variant: str | None = None
    backend: str = "numpy"
    epochs: int = 1
    batch: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    bias_lr_mult: float = 1.0
    bias_decay_mult: float = 1.0
    schedule: str = "none"
    weights: str | None = None
    init: str = "paper"
    fresh_head: bool = False
    freeze: str | None = None
    seed: int = 0
    val_split: float = 0.1
    augment: str = "paper"
    lighting: str | None = None
    ten_crop: bool = False
    input_size: int | None = None
    dropout: bool = True
    workers: int = 2
    metrics: str | None = None
    plot: str | None = None

    #: What a resumed run takes from its checkpoint rather than from the command line.
    RESUMED = ("variant", "batch", "momentum", "weight_decay", "bias_lr_mult", "bias_decay_mult", "freeze", "seed",
               "val_split", "augment", "ten_crop", "dropout")

    @property
    def metrics_path(self) -> Path:
        return Path(self.metrics) if self.metrics else Path(self.out).with_suffix(".metrics.jsonl")

    @property
    def plot_path(self) -> Path:
        return Path(self.plot) if self.plot else Path(self.out).with_suffix(".png")


@dataclass
class EpochRecord:
    """One epoch's line of the metrics file."""

    epoch: int
    lr: float
    train_loss: float
    train_accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    images: int
    skipped: int
    seconds: float
    images_per_second: float


#: ``on_step(epoch, images_done, images_total, mean_loss, accuracy, images_per_second)``
StepCallback = Callable[[int, int, int, float, float, float], None]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run: ``path`` holds the last whole checkpoint, of epoch ``epoch`` (both
    ``None`` when none was written or resumed from)."""

    def __init__(self, path: str | None, epoch: int | None) -> None:
        super().__init__(path, epoch)
        self.path, self.epoch = path, epoch


def train(cfg: TrainConfig, *, resume: str | None = None, on_step: StepCallback | None = None,
          on_epoch: Callable[[EpochRecord], None] | None = None, log: Callable[[str], None] = print) -> list[EpochRecord]:
    """Run ``cfg`` (from ``resume``'s checkpoint, if given) to ``cfg.epochs``; return every epoch's record.

    Errors before the first step (the data, the weights, the options) and a non-finite loss are a
    :class:`TrainingError`; Ctrl-C is :class:`Interrupted`, naming the last whole checkpoint."""
    run = _Run(cfg, resume, log)
    try:
        for epoch in range(run.epoch + 1, run.cfg.epochs + 1):
            record = run.epoch_pass(epoch, on_step)
            run.history.append(record)
            run.save(epoch)
            if on_epoch is not None:
                on_epoch(record)
    except KeyboardInterrupt:
        raise Interrupted(run.saved_path, run.saved_epoch) from None
    return run.history


class _Run:
    """The state of one run between epochs: model, optimizer, schedule, data, history."""

    def __init__(self, cfg: TrainConfig, resume: str | None, log: Callable[[str], None]) -> None:
        self.log = log
        self._check_plot()
        ckpt = load_checkpoint(resume) if resume else None
        cfg = self._settled(cfg, ckpt, resume)
        self.cfg = cfg
        self.opt = SGD(ckpt.state["lr"] if ckpt else cfg.lr, cfg.momentum, cfg.weight_decay,  # checked before the data
                       bias_lr_mult=cfg.bias_lr_mult, bias_decay_mult=cfg.bias_decay_mult)
        self.epoch = ckpt.state["epoch"] if ckpt else 0
        if ckpt is not None and self.epoch >= cfg.epochs:
            raise TrainingError(f"--resume {resume} holds epoch {self.epoch} already: ask for --epochs > {self.epoch}")
        self.schedule = Schedule.from_json(ckpt.state["schedule"]) if ckpt else Schedule.parse(cfg.schedule)
        folder = ImageFolder(Path(cfg.data))
        self.fingerprint = folder.fingerprint()
        if ckpt is not None:
            recorded_classes = json.loads(ckpt.metadata.get(CATEGORIES_KEY, "[]"))
            if recorded_classes != list(folder.classes):
                raise TrainingError(f"--resume {resume}: its classes {recorded_classes} are not the classes of "
                                    f"{cfg.data} {list(folder.classes)}")
            if ckpt.state.get("data") != self.fingerprint:
                raise TrainingError(f"--resume {resume}: {cfg.data} no longer holds the images the run started with "
                                    "(files added, removed or renamed): its split and order would differ")
        check_batch(cfg.variant, cfg.batch, training=True, input_size=cfg.input_size, num_classes=len(folder.classes))
        folder.check_readable()
        self.classes = folder.classes
        self.train_set, self.val_set = folder.split(cfg.val_split, cfg.seed)
        if self.schedule.kind == "plateau" and not self.val_set:
            raise TrainingError("--schedule plateau drops the learning rate when the validation error stops "
                                "improving: it needs --val-split > 0")
        self.model, metadata = self._model(cfg, ckpt, len(folder.classes))
        require_training(self.model.backend, "train")
        self.model.categories = list(folder.classes)
        self.preprocess = self.model.preprocess = self._preprocess(cfg, ckpt, metadata)
        self.model.freeze(cfg.freeze)
        if ckpt is not None:
            self.opt.velocity = self.model.native_tensors(self._velocity(ckpt, resume))
        self.lighting = self._lighting(cfg, ckpt)
        self.augment = Augment(cfg.augment, self.lighting)
        self.steps = ckpt.state["step"] if ckpt else 0
        self.history = [EpochRecord(**r) for r in ckpt.state["history"]] if ckpt else []
        self.saved_path, self.saved_epoch = (resume, self.epoch) if ckpt else (None, None)
        for path in (Path(cfg.out), cfg.metrics_path, cfg.plot_path):
            path.parent.mkdir(parents=True, exist_ok=True)
        log(self._describe(resume))

    @staticmethod
    def _settled(cfg: TrainConfig, ckpt, resume: str | None) -> TrainConfig:
        """``cfg`` checked, with what a resumed run takes from its checkpoint (:attr:`TrainConfig.RESUMED`)."""
        if Path(cfg.out).suffix.lower() != ".safetensors":
            raise TrainingError(f"--out: expected a .safetensors path (the checkpoint), got {cfg.out}")
        if cfg.epochs < 1 or cfg.batch < 1 or cfg.seed < 0:
            raise TrainingError(f"epochs and batch must be positive and the seed >= 0, got {cfg.epochs}, {cfg.batch}, {cfg.seed}")
        if ckpt is None:
            cfg = dataclasses.replace(cfg, variant=cfg.variant or "paper")
        else:
            recorded = ckpt.state["config"]
            try:
                asked = None if cfg.variant is None else variant_name(cfg.variant)
            except ValueError as exc:
                raise TrainingError(str(exc)) from None
            if asked not in (None, recorded["variant"]):
                raise TrainingError(f"--resume {resume}: the checkpoint holds a {recorded['variant']!r} model, "
                                    f"not {cfg.variant!r}")
            crop = Preprocess.from_json(ckpt.metadata[PREPROCESS_KEY]).crop_size
            if cfg.input_size not in (None, crop):
                raise TrainingError(f"--resume {resume}: the run trains at {crop}x{crop}, not --input-size {cfg.input_size}")
            cfg = dataclasses.replace(cfg, **{k: recorded[k] for k in TrainConfig.RESUMED})
        try:
            arch = get_architecture(cfg.variant)
        except ValueError as exc:
            raise TrainingError(str(exc)) from None
        cfg = dataclasses.replace(cfg, variant=arch.variant)
        if cfg.input_size not in (None, arch.input_size):
            if not arch.min_input_size:
                raise TrainingError(f"--input-size: the {cfg.variant} variant takes {arch.input_size}x{arch.input_size} "
                                    f"input only (the torchvision variant takes any size >= 63; the {arch.base} table "
                                    f"at another size is the variant "
                                    f"{'+'.join([arch.base, *(a for a in arch.ablations if not a.startswith('input='))])}"
                                    f"+input={cfg.input_size})")
            if cfg.input_size < arch.min_input_size:
                raise TrainingError(f"--input-size: expected at least {arch.min_input_size}, got {cfg.input_size}")
        return cfg

    def _velocity(self, ckpt, resume: str) -> dict[str, np.ndarray]:
        """The checkpoint's velocity, which must be there for exactly the tensors the run trains."""
        trained = {n: w.shape for n, w in ckpt.weights.items() if n not in self.model.frozen}
        got = {n: v.shape for n, v in ckpt.velocity.items()}
        if got != trained:
            missing, extra = sorted(set(trained) - set(got)), sorted(set(got) - set(trained))
            misshapen = sorted(n for n in set(got) & set(trained) if got[n] != trained[n])
            raise TrainingError(f"--resume {resume}: its optimizer state does not match the tensors the run trains "
                                f"(missing {missing or 'none'}, extra {extra or 'none'}, misshapen {misshapen or 'none'}): "
                                "a weights file without its velocity cannot resume a run; start from it with --weights")
        return ckpt.velocity

    # -- setting up ------------------------------------------------------------------------

    def _model(self, cfg: TrainConfig, ckpt, num_classes: int) -> tuple[AlexNet, dict[str, str]]:
        if ckpt is not None:
            heads = ckpt.weights["fc8.bias"].shape[0]
            if heads != num_classes:
                raise TrainingError(f"the checkpoint's head has {heads} classes, the data {num_classes}")
            return AlexNet(cfg.variant, cfg.backend, weights=ckpt.weights, num_classes=num_classes), ckpt.metadata
        if cfg.weights is None:
            if cfg.init not in INITS:
                raise TrainingError(f"--init: expected 'paper' or 'he', got {cfg.init!r}")
            weights = None if cfg.init == "paper" else he_weights(get_architecture(cfg.variant, num_classes), cfg.seed)
            return AlexNet(cfg.variant, cfg.backend, weights=weights, seed=cfg.seed, num_classes=num_classes), {}
        from .importers import read_any

        imported = read_any(cfg.weights, cfg.variant)
        heads = imported.params["fc8.bias"].shape[0]
        if heads != num_classes and not cfg.fresh_head:
            raise TrainingError(f"{cfg.weights} has a {heads}-class head and {cfg.data} {num_classes} classes: "
                                "add --fresh-head to start fc8 afresh")
        model = AlexNet(cfg.variant, cfg.backend, weights=imported.params, seed=cfg.seed, num_classes=num_classes,
                        fresh_head=cfg.fresh_head)
        return model, imported.metadata

    def _preprocess(self, cfg: TrainConfig, ckpt, metadata: dict[str, str]) -> Preprocess:
        """The checkpoint's recipe; else the weights file's, else the variant's, at ``--input-size``."""
        if ckpt is not None:
            return Preprocess.from_json(metadata[PREPROCESS_KEY])
        pre = Preprocess.from_json(metadata[PREPROCESS_KEY]) if PREPROCESS_KEY in metadata else default_preprocess(cfg.variant)
        return pre if cfg.input_size is None else scaled(pre, cfg.input_size)

    def _lighting(self, cfg: TrainConfig, ckpt) -> tuple[np.ndarray, np.ndarray] | None:
        if cfg.augment != "paper":
            return None
        self.lighting_source = "the checkpoint's"
        if ckpt is not None:
            eig = ckpt.state["lighting"]
            return np.asarray(eig["eigval"]), np.asarray(eig["eigvec"])
        source = cfg.lighting or ("imagenet" if cfg.weights else "data")
        self.lighting_source = {"imagenet": "ImageNet's", "data": "the training images'"}.get(source, source)
        if source == "imagenet":
            return np.asarray(IMAGENET_EIGVAL), np.asarray(IMAGENET_EIGVEC)
        if source != "data":
            raise TrainingError(f"--lighting: expected 'data' or 'imagenet', got {source!r}")
        return pca_lighting(self.train_set, self.preprocess, seed=cfg.seed)

    def _check_plot(self) -> None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise TrainingError("the training plot needs matplotlib: pip install 'alexnet-aa[train]'") from None

    def _describe(self, resume: str | None) -> str:
        cfg = self.cfg
        start = (f"resuming {resume} after epoch {self.epoch}" if resume
                 else f"from {cfg.weights}" + (" (fresh fc8)" if cfg.fresh_head else "") if cfg.weights
                 else f"from {INITS[cfg.init]} (seed {cfg.seed})")
        frozen = f"; frozen up to {cfg.freeze}" if cfg.freeze else ""
        colour = f" along {self.lighting_source} principal components" if self.lighting is not None else ""
        return "\n  ".join([
            f"training AlexNet({cfg.variant!r}) on {self.model.backend.name}, {start}{frozen}",
            f"data: {cfg.data}: {len(self.classes)} classes, {len(self.train_set)} training and "
            f"{len(self.val_set)} validation images; batch {cfg.batch}",
            f"input: {self.preprocess.summary()}",
            f"augmentation: {self.augment.describe()}{colour}",
            f"SGD lr {self.opt.lr:g}, momentum {cfg.momentum:g}, weight decay {cfg.weight_decay:g}; "
            f"schedule {self.schedule.kind}; checkpoint {cfg.out}",
        ])

    # -- one epoch ----------------------------------------------------------------------------

    def epoch_pass(self, epoch: int, on_step: StepCallback | None) -> EpochRecord:
        cfg = self.cfg
        loader = contextlib.closing(batches(self.train_set, cfg.batch, self.preprocess, augment=self.augment,
                                            seed=cfg.seed, epoch=epoch, shuffle=True, workers=cfg.workers))
        with loader as train_batches:  # closed (its threads stopped) on Ctrl-C and errors too
            return self._train_pass(epoch, train_batches, on_step)

    def _train_pass(self, epoch: int, train_batches, on_step: StepCallback | None) -> EpochRecord:
        cfg, model = self.cfg, self.model
        lr, start = self.opt.lr, time.perf_counter()
        seen = correct = skipped = 0
        loss_sum = 0.0
        for step, b in enumerate(train_batches):
            skipped += self._report_skipped(b.skipped)
            if not len(b.labels):
                continue
            try:
                loss, logits = model.train_step(b.x, b.labels, self.opt, step_seed(cfg.seed, epoch, step) if cfg.dropout else None,
                                                outputs=True)
            except NonFiniteLossError as exc:
                raise DivergedError(f"epoch {epoch}, step {step + 1} (lr {lr:g}): {exc}; stopped. "
                                    + self._last_good()) from None
            n = len(b.labels)
            self.steps += 1
            seen, loss_sum = seen + n, loss_sum + loss * n
            correct += int((np.argmax(np.asarray(model.backend.to_host(logits)), axis=1) == b.labels).sum())
            if on_step is not None:
                on_step(epoch, seen, len(self.train_set), loss_sum / seen, correct / seen, seen / (time.perf_counter() - start))
        if not seen:
            raise TrainingError(f"epoch {epoch}: no training image could be read ({skipped} skipped)")
        seconds = time.perf_counter() - start
        val_loss, val_acc, val_skipped = self.evaluate(epoch) if self.val_set else (None, None, 0)
        self.opt.lr = self.schedule.after_epoch(epoch, lr, None if val_acc is None else 1.0 - val_acc)
        return EpochRecord(epoch, lr, loss_sum / seen, correct / seen, val_loss, val_acc, seen, skipped + val_skipped,
                           seconds, seen / seconds)

    def evaluate(self, epoch: int) -> tuple[float, float, int]:
        """Mean cross-entropy and accuracy on the validation images (ten-crop averages with ``ten_crop``)."""
        loss_sum, correct, seen, skipped = 0.0, 0, 0, 0
        loader = contextlib.closing(batches(self.val_set, self.cfg.batch, self.preprocess, ten_crop=self.cfg.ten_crop,
                                            workers=self.cfg.workers))
        with loader as val_batches:
            for b in val_batches:
                skipped += self._report_skipped(b.skipped)
                if len(b.labels):
                    loss, right = self._scored(b)
                    loss_sum, correct, seen = loss_sum + loss, correct + right, seen + len(b.labels)
        if not seen:
            raise TrainingError(f"epoch {epoch}: no validation image could be read ({skipped} skipped)")
        return loss_sum / seen, correct / seen, skipped

    def _scored(self, b) -> tuple[float, int]:
        """The summed cross-entropy and the number right of one validation batch (ten crops: the
        softmax averaged over each image's crops), forward passes of at most ``batch`` images."""
        x, step, be = b.x.reshape(-1, *b.x.shape[-3:]), self.cfg.batch, self.model.backend
        probs = np.concatenate([np.asarray(be.to_host(ops.softmax(be, self.model(x[i:i + step]))), dtype=np.float64)
                                for i in range(0, len(x), step)])
        probs = probs.reshape(len(b.labels), -1, probs.shape[-1]).mean(axis=1)  # 1 or 10 crops
        loss = -float(np.log(np.maximum(probs[np.arange(len(b.labels)), b.labels], 1e-300)).sum())
        return loss, int((probs.argmax(axis=1) == b.labels).sum())

    def _report_skipped(self, skipped: list[tuple[str, str]]) -> int:
        for path, reason in skipped:
            self.log(f"skipped {path}: {reason}")
        return len(skipped)

    # -- after each epoch --------------------------------------------------------------------

    def _last_good(self) -> str:
        if self.saved_epoch is None:
            return f"No checkpoint was written ({self.cfg.out} is as it was)."
        return f"The last good checkpoint, of epoch {self.saved_epoch}, is {self.saved_path}."

    def save(self, epoch: int) -> None:
        cfg = self.cfg
        state = {
            "epoch": epoch, "step": self.steps, "lr": self.opt.lr, "seed": cfg.seed, "schedule": self.schedule.to_json(),
            "data": self.fingerprint,
            "config": {k: getattr(cfg, k) for k in TrainConfig.RESUMED},
            "lighting": None if self.lighting is None else {"eigval": self.lighting[0].tolist(), "eigvec": self.lighting[1].tolist()},
            "history": [dataclasses.asdict(r) for r in self.history],
        }
        try:
            save_checkpoint(cfg.out, self.model, self.opt, state)
        except NonFiniteWeightsError as exc:
            raise DivergedError(f"epoch {epoch} (lr {self.history[-1].lr:g}): {exc}; stopped. {self._last_good()}") from None
        self.saved_path, self.saved_epoch = cfg.out, epoch
        with atomic_write(cfg.metrics_path, "w") as f:
            f.writelines(json.dumps(dataclasses.asdict(r)) + "\n" for r in self.history)
        from .visualize import plot_history

        plot_history([dataclasses.asdict(r) for r in self.history], cfg.plot_path,
                     title=f"AlexNet({cfg.variant!r}) on {Path(cfg.data).name}")


def format_record(r: EpochRecord, epochs: int) -> str:
    """One plain line per epoch (what the CLI prints when not on a terminal)."""
    val = "" if r.val_loss is None else f"  val loss {r.val_loss:.4f} acc {r.val_accuracy:6.2%}"
    skipped = f"  ({r.skipped} skipped)" if r.skipped else ""
    return (f"epoch {r.epoch}/{epochs}  lr {r.lr:g}  train loss {r.train_loss:.4f} acc {r.train_accuracy:6.2%}{val}"
            f"  {r.images_per_second:.1f} img/s  {r.seconds:.1f} s{skipped}")

