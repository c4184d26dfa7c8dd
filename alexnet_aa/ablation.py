"""The paper's claims measured on its own table: each arm of an ablation trained alike (``alexnet-aa ablate``).

An experiment (:data:`EXPERIMENTS`) is a set of arms, each the base variant with
some :data:`~alexnet_aa.architecture.ABLATIONS` made (``paper`` against
``paper+tanh``). :func:`run_ablation` trains every arm once per seed through
:func:`alexnet_aa.trainer.train` with the same configuration: the same seed gives
every arm the same split, the same data order, the same augmentation and the
same dropout draws, and the same budget (epochs, batch, learning rate). It
writes one JSON (per-epoch training and validation loss and error of every run,
and per arm the spread over the seeds) and a PNG in the style of the paper's
Figure 1, training error against epochs, one curve per arm. The JSON is
rewritten after every run and a rerun with the same configuration keeps the
runs it holds, so an interrupted ablation loses at most the run in progress.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .architecture import count_macs, count_params, get_architecture
from .files import atomic_write
from .trainer import DivergedError, EpochRecord, TrainConfig, TrainingError, train

FORMAT = "alexnet_aa.ablation/1"


@dataclass(frozen=True)
class Arm:
    """One arm: its ``name`` (in file names and the JSON), the curve's ``label``, the ablations it
    makes (``()``: the base table itself) and its line style in the plot."""

    name: str
    label: str
    ablations: tuple[str, ...]
    style: str = "-"


#: ``--what``: the claim it tests, and its arms (the first is the base table).
EXPERIMENTS: dict[str, tuple[str, tuple[Arm, ...]]] = {
    "relu-vs-tanh": ("ReLU trains several times faster than saturating units (the paper's Figure 1: "
                     "6x fewer epochs to 25% training error than tanh)",
                     (Arm("relu", "ReLU", ()), Arm("tanh", "tanh", ("tanh",), "--"),
                      Arm("sigmoid", "sigmoid", ("sigmoid",), ":"))),
    "lrn": ("local response normalisation lowers the error (the paper: top-1 -1.4%, top-5 -1.2%)",
            (Arm("lrn", "LRN", ()), Arm("no-lrn", "no LRN", ("no-lrn",), "--"))),
    "overlap": ("overlapping pooling lowers the error and overfits slightly less (the paper: top-1 -0.4%)",
                (Arm("overlap", "3x3 stride 2 (overlapping)", ()), Arm("no-overlap", "2x2 stride 2", ("no-overlap",), "--"))),
    "dropout": ("dropout prevents overfitting (the paper: without it, substantial overfitting)",
                (Arm("dropout", "dropout 0.5", ()), Arm("no-dropout", "no dropout", ("dropout=0",), "--"))),
    "groups": ("the two-GPU split (grouped conv2, conv4, conv5) costs little accuracy (the paper: "
               "one GPU with half the kernels is 1.7% worse top-1)",
               (Arm("groups", "2 groups", ()), Arm("no-groups", "1 group", ("groups=1",), "--"))),
}


class AblationError(ValueError):
    """An ablation that cannot run: the message says why."""


def arm_variant(base: str, arm: Arm, input_size: int | None) -> str:
    """The variant an arm trains: ``base`` with the arm's ablations and ``input=S`` where ``input_size``
    is not the base's own (canonically spelled)."""
    changes = [*arm.ablations]
    if input_size is not None and input_size != get_architecture(base).input_size:
        changes.append(f"input={input_size}")
    return get_architecture("+".join([base, *changes])).variant


def _error(accuracy: float | None) -> float | None:
    return None if accuracy is None else 1.0 - accuracy


def epochs_to(errors: list[float], target: float) -> int | None:
    """The first epoch (1-based) whose training error is at or below ``target``; None if none is."""
    return next((i + 1 for i, e in enumerate(errors) if e <= target), None)


def _spread(values: list[float | None]) -> dict[str, float | None]:
    """Mean, min and max of ``values`` (``None`` when any is missing: a run that never got there)."""
    if not values or any(v is None for v in values):
        return {"mean": None, "min": None, "max": None, "missing": sum(v is None for v in values)}
    return {"mean": float(np.mean(values)), "min": float(min(values)), "max": float(max(values)), "missing": 0}


def summarize(runs: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """Over one arm's ``runs`` (one per seed): the last epoch's training and validation error, the
    best validation error, the epochs to ``target`` training error and the seconds per epoch. A run
    that diverged has no last epoch (it is counted under ``diverged`` and ``missing``); without a
    validation split the validation entries are ``None``."""
    finished = [run for run in runs if "stopped" not in run]
    train_err = [[r["train_error"] for r in run["history"]] for run in runs]
    val_err = [[r["val_error"] for r in run["history"]] for run in finished]
    no_validation = bool(finished) and all(run["history"][-1]["val_error"] is None for run in finished)
    def last(key: str) -> dict[str, float | None] | None:
        if key.startswith("val") and no_validation:
            return None
        return _spread([None if "stopped" in run else _final(run, key) for run in runs])

    return {
        "final_train_error": last("train_error"),
        "final_val_error": last("val_error"),
        "best_val_error": None if no_validation else _spread([None if not e or None in e else min(e) for e in val_err]
                                                             + [None] * (len(runs) - len(finished))),
        "final_train_loss": last("train_loss"),
        "final_val_loss": last("val_loss"),
        f"epochs_to_{target:g}": _spread([epochs_to(e, target) for e in train_err]),
        "seconds_per_epoch": _spread([float(np.mean([r["seconds"] for r in run["history"]]))
                                      for run in runs if run["history"]]),
        "diverged": sum("stopped" in run for run in runs),
    }


def _finite(value: float | None) -> float | None:
    """JSON has no NaN: a value that is not finite (a validation loss of infinite logits) is recorded as null."""
    return value if value is None or math.isfinite(value) else None


def _record(r: EpochRecord) -> dict[str, Any]:
    return {"epoch": r.epoch, "lr": r.lr, "train_loss": r.train_loss, "train_error": 1.0 - r.train_accuracy,
            "val_loss": _finite(r.val_loss), "val_error": _error(r.val_accuracy), "seconds": r.seconds,
            "images_per_second": r.images_per_second}


def run_ablation(cfg: TrainConfig, what: str, seeds: list[int], out: str | os.PathLike, *,
                 lrs: list[float] | None = None, input_size: int | None = None, target_error: float = 0.25,
                 keep_checkpoints: bool = False, log: Callable[[str], None] = print,
                 on_epoch: Callable[[str, int, EpochRecord], None] | None = None, on_step=None) -> dict[str, Any]:
    """Train every arm of ``what`` once per seed with ``cfg`` (its ``variant`` the base, its ``seed``,
    ``lr`` and ``out`` replaced per run) and write ``OUT/ablate-WHAT.json`` and ``OUT/ablate-WHAT.png``;
    return the JSON.

    ``lrs`` (default: ``[cfg.lr]``): with several, each arm first trains with the first seed at each
    rate, and keeps the one that ends with the lowest training error (the paper's Figure 1: "the
    learning rates for each network were chosen independently to make training as fast as
    possible"); its other seeds train at that rate. Checkpoints go to a temporary folder removed
    after each run (``keep_checkpoints``: to ``OUT/checkpoints/``). A JSON already at the path from
    the same configuration keeps its runs. An arm that diverges at every rate of a sweep trains no
    other seed; with one rate, every seed trains (whether a divergence is systematic is the result).
    """
    if what not in EXPERIMENTS:
        raise AblationError(f"--what: expected one of {', '.join(EXPERIMENTS)}, got {what!r}")
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise AblationError(f"--seeds: expected distinct seeds >= 0, got {seeds}")
    lrs = [cfg.lr] if lrs is None else list(lrs)
    numbers = all(isinstance(lr, (int, float)) and not isinstance(lr, bool) for lr in lrs)
    if not lrs or not numbers or len(set(lrs)) != len(lrs) or not all(0 < lr < math.inf for lr in lrs):
        raise AblationError(f"--lr: expected distinct positive learning rates, got {lrs}")
    lrs = [float(lr) for lr in lrs]
    if not 0 < target_error < 1:
        raise AblationError(f"--target-error: expected a training error in (0, 1), got {target_error}")
    claim, arms = EXPERIMENTS[what]
    base = get_architecture(cfg.variant or "paper").variant
    try:
        variants = {arm.name: arm_variant(base, arm, input_size) for arm in arms}
    except ValueError as exc:
        raise AblationError(f"--what {what} on the {base} variant: {exc}") from None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / f"ablate-{what}.json", out / f"ablate-{what}.png"
    folder = _folder(cfg.data)
    config = {k: v for k, v in dataclasses.asdict(cfg).items()
              if k not in ("data", "out", "seed", "variant", "lr", "metrics", "plot")}
    config.update(base=base, input_size=input_size, seeds=list(seeds), lrs=lrs, target_error=target_error,
                  data_sha256=folder.fingerprint())  # the images, wherever the folder is
    classes = len(folder.classes)
    result = _previous(json_path, config, log) or {
        "format": FORMAT, "what": what, "claim": claim, "config": config, "data": str(cfg.data),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "arms": [{"arm": arm.name, "label": arm.label, "style": arm.style, "variant": variants[arm.name],
                  "params": count_params(variants[arm.name], classes),
                  "macs": count_macs(variants[arm.name], classes), "runs": []} for arm in arms],
    }

    def run(arm: Arm, entry: dict[str, Any], seed: int, lr: float) -> None:
        if any(r["seed"] == seed and r["lr"] == lr for r in entry["runs"]):
            return
        log(f"{what}: arm {arm.name} ({entry['variant']}), seed {seed}, lr {lr:g}")
        entry["runs"].append(_train_arm(dataclasses.replace(cfg, lr=lr), entry["variant"], seed, out, arm,
                                        keep_checkpoints, log, on_epoch, on_step))
        settle(entry)
        result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        _write(json_path, result)

    def settle(entry: dict[str, Any]) -> None:
        """The arm's kept rate, sweep and summary, once its sweep is complete (so the JSON on disk is
        always whole)."""
        if not all(any(r["seed"] == seeds[0] and r["lr"] == lr for r in entry["runs"]) for lr in lrs):
            return
        entry["lr"] = chosen_lr(entry["runs"], seeds[0], lrs)
        entry["sweep"] = [{"lr": r["lr"], "final_train_error": _final(r, "train_error"), "stopped": r.get("stopped")}
                          for r in entry["runs"] if r["seed"] == seeds[0]]
        entry["summary"] = summarize(kept_runs(entry), target_error)

    for arm, entry in zip(arms, result["arms"]):  # the sweep: the first seed at every rate
        for lr in lrs:
            run(arm, entry, seeds[0], lr)
        settle(entry)
    for seed in seeds[1:]:
        for arm, entry in zip(arms, result["arms"]):
            if len(lrs) > 1 and all("stopped" in r for r in entry["runs"] if r["seed"] == seeds[0]):
                log(f"{what}: arm {arm.name} diverged at every rate of the sweep ({', '.join(f'{lr:g}' for lr in lrs)}): "
                    f"seed {seed} is not trained")
                continue
            run(arm, entry, seed, entry["lr"])
    _write(json_path, result)
    from .visualize import plot_ablation

    plot_ablation(result, png_path)
    return result


def kept_runs(arm: dict[str, Any]) -> list[dict[str, Any]]:
    """An arm's runs at the rate it kept (one per seed): what its summary, its curve and its verdict
    stand on (none while its sweep is incomplete)."""
    return [r for r in arm["runs"] if r["lr"] == arm.get("lr")]


def _final(run: dict[str, Any], key: str) -> float | None:
    return run["history"][-1][key] if run["history"] else None


def chosen_lr(runs: list[dict[str, Any]], seed: int, lrs: list[float]) -> float:
    """The rate whose ``seed`` run ends with the lowest training error (then loss; a run that
    diverged or fell short of the others' epochs ranks last), the first of ``lrs`` on a tie."""
    def rank(lr: float) -> tuple:
        r = next(r for r in runs if r["seed"] == seed and r["lr"] == lr)
        if "stopped" in r or not r["history"]:
            return (1, math.inf, math.inf, lrs.index(lr))
        return (0, _final(r, "train_error"), _final(r, "train_loss"), lrs.index(lr))

    return min(lrs, key=rank)


def _folder(data):
    from .data import ImageFolder

    try:
        return ImageFolder(Path(data))
    except ValueError as exc:
        raise AblationError(str(exc)) from None


def _train_arm(cfg: TrainConfig, variant: str, seed: int, out: Path, arm: Arm, keep: bool, log, on_epoch, on_step) -> dict:
    """One run: ``{"seed", "history"}``, and ``"stopped"`` with the reason when its loss or weights
    stopped being finite (the epochs before it are kept: a diverging arm is a result, not a crash)."""
    where = out / "checkpoints" if keep else Path(tempfile.mkdtemp(prefix="alexnet-aa-ablate-"))
    where.mkdir(parents=True, exist_ok=True)
    run_cfg = dataclasses.replace(cfg, variant=variant, seed=seed,
                                  out=str(where / f"{arm.name}-seed{seed}-lr{cfg.lr:g}.safetensors"),
                                  metrics=None, plot=None)
    history: list[EpochRecord] = []

    def epoch_done(record: EpochRecord) -> None:
        history.append(record)
        if on_epoch is not None:
            on_epoch(arm.name, seed, record)

    run: dict[str, Any] = {"seed": seed, "lr": cfg.lr}
    try:
        train(run_cfg, log=log, on_step=on_step, on_epoch=epoch_done)
    except DivergedError as exc:
        log(f"arm {arm.name}, seed {seed}, lr {cfg.lr:g}: {exc}")
        run["stopped"] = str(exc)
    except TrainingError as exc:
        raise AblationError(f"arm {arm.name} ({variant}), seed {seed}: {exc}") from None
    finally:
        if not keep:
            shutil.rmtree(where, ignore_errors=True)
    run["history"] = [_record(r) for r in history]
    return run


#: What a rerun may change and keep the finished runs: more seeds, more learning rates, and what does
#: not change a run's result (the decoding threads, the target of the summary).
EXTENSIBLE = ("seeds", "lrs", "workers", "target_error")


def _previous(path: Path, config: dict[str, Any], log) -> dict[str, Any] | None:
    """The JSON at ``path`` when it was written by the same configuration, but for the seeds and rates
    (:data:`EXTENSIBLE`): its finished runs are kept, and those of seeds or rates no longer asked
    for are dropped."""
    if not path.is_file():
        return None
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        log(f"{path}: not a readable ablation JSON; starting afresh (it will be replaced)")
        return None
    def fixed(c: Any) -> Any:
        return {k: v for k, v in c.items() if k not in EXTENSIBLE} if isinstance(c, dict) else None

    if not isinstance(previous, dict) or previous.get("format") != FORMAT or fixed(previous.get("config")) != fixed(config):
        log(f"{path} holds another configuration's runs; starting afresh (it will be replaced)")
        return None
    previous["config"] = config
    for arm in previous["arms"]:
        arm["runs"] = [r for r in arm["runs"] if r["seed"] in config["seeds"] and r["lr"] in config["lrs"]]
    done = sum(len(a["runs"]) for a in previous["arms"])
    log(f"{path}: keeping its {done} finished run(s) of this configuration")
    return previous


def _write(path: Path, result: dict[str, Any]) -> None:
    with atomic_write(path, "w") as f:
        json.dump(result, f, indent=1, allow_nan=False)
        f.write("\n")


def format_summary(result: dict[str, Any]) -> str:
    """The table ``alexnet-aa ablate`` prints at the end: per arm, mean [min, max] over the seeds."""
    target = result["config"]["target_error"]

    def cell(s: dict[str, Any] | None, percent: bool = True, missing: str = "no value") -> str:
        if s is None:
            return "-"
        if s["mean"] is None:
            return f"{missing} in {s['missing']} run(s)"
        fmt = (lambda v: f"{100 * v:.1f}%") if percent else (lambda v: f"{v:.1f}")
        return f"{fmt(s['mean'])} [{fmt(s['min'])}, {fmt(s['max'])}]"

    head = ["arm", "variant", "params", "lr", "train error", "val error", "best val error", f"epochs to {target:.0%}",
            "s/epoch", "diverged"]
    rows = [head]
    for arm in result["arms"]:
        s = arm.get("summary", {})
        rows.append([arm["arm"], arm["variant"], f"{arm['params']:,}", f"{arm['lr']:g}" if "lr" in arm else "-",
                     cell(s.get("final_train_error"), missing="diverged"),
                     cell(s.get("final_val_error"), missing="diverged"), cell(s.get("best_val_error"), missing="diverged"),
                     cell(s.get(f"epochs_to_{target:g}"), False, "not reached"), cell(s.get("seconds_per_epoch"), False),
                     str(s.get("diverged", "-"))])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    seeds = result["config"]["seeds"]
    return "\n".join([f"{result['what']}: {result['claim']}",
                      f"mean [min, max] over seeds {', '.join(map(str, seeds))}, after {result['config']['epochs']} epochs",
                      *lines])
