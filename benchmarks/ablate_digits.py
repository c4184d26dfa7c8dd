"""The paper's ablations measured on scikit-learn's offline digits, through ``alexnet-aa ablate`` itself.

Every experiment of :data:`alexnet_aa.ablation.EXPERIMENTS` on the paper's table at 67×67 (the
``+input=67`` ablation: 8×8 digits carry no more detail, and a 67×67 forward costs 1/12 of a
227×227 one, so three seeds of every arm fit in an hour on two cores), He's initialisation, no
augmentation, 20% of each class held out. ``relu-vs-tanh`` sweeps the learning rate per arm, as the
paper's Figure 1 did; the other experiments train both arms at the rate ReLU chose there. The JSONs
and plots go to ``docs/benchmarks/ablations/``; the Markdown report beside them::

    python benchmarks/ablate_digits.py --out docs/benchmarks/ablations.md     # about 45 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
from digits_folder import write_digits_folder  # noqa: E402
from report import emit  # noqa: E402

RECIPE = ["--variant", "paper", "--input-size", "67", "--init", "he", "--epochs", "8", "--batch", "32",
          "--val-split", "0.2", "--seeds", "0,1,2"]
SWEEP = "1e-2,3e-3,1e-3,3e-4,1e-4"
ORDER = ("relu-vs-tanh", "lrn", "overlap", "dropout", "groups")


def ablate(data: Path, what: str, lr: str, out: Path) -> dict:
    command = ["alexnet-aa", "ablate", str(data), "--what", what, *RECIPE, "--lr", lr, "--out", str(out)]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    result = json.loads((out / f"ablate-{what}.json").read_text())
    result["command"] = " ".join(["alexnet-aa", "ablate", "DIGITS", *command[3:-2], "--out", "DIR"])
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--what", default=",".join(ORDER), help="which experiments (default: all; relu-vs-tanh first)")
    p.add_argument("--out", help="the Markdown report; the JSONs and plots go to ablations/ beside it")
    args = p.parse_args(argv)
    data = Path(tempfile.gettempdir()) / "alexnet-aa-digits"  # kept: a rerun keeps the finished runs
    if not data.is_dir():
        partial = data.with_name(f"{data.name}.partial-{os.getpid()}")
        write_digits_folder(partial)
        partial.rename(data)
    results_dir = Path(args.out).parent / "ablations" if args.out else data.parent / "ablations"
    whats = args.what.split(",")
    results = {}
    for what in whats:
        if what == "relu-vs-tanh":
            results[what] = ablate(data, what, SWEEP, results_dir)
            continue
        recorded = results_dir / "ablate-relu-vs-tanh.json"
        if not recorded.is_file():
            p.error(f"{what} trains at the rate ReLU kept in relu-vs-tanh: run that first ({recorded} is missing)")
        relu_lr = f"{json.loads(recorded.read_text())['arms'][0]['lr']:g}"
        results[what] = ablate(data, what, relu_lr, results_dir)
    seconds = sum(e["seconds"] for r in results.values() for a in r["arms"] for run in a["runs"] for e in run["history"])
    from alexnet_aa.ablation import format_summary

    lines = [
        "# The paper's ablations on scikit-learn's digits",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} cores, numpy backend, "
        f"Python {platform.python_version()}, NumPy {np.__version__}; {seconds / 60:.0f} minutes of training passes "
        "in all (validation apart; other work shared the two cores at times, so the s/epoch column is "
        "indicative only). The data: "
        "`sklearn.datasets.load_digits()` (1,797 grey 8×8 digits, 10 classes), written as an image folder by "
        "`examples/digits_folder.py`, 20% of each class held out. Every arm: the paper's table at 67×67 "
        "(`--input-size 67`), He's initialisation, no augmentation, batch 32, 8 epochs, momentum 0.9, weight decay "
        "5e-4, dropout 0.5 unless the arm says otherwise; seeds 0, 1 and 2 (each seed gives every arm the same "
        "split, order and dropout draws). Training error is measured during each epoch's pass (dropout on), as "
        "in the paper's Figure 1.",
        "",
        "```bash",
        f"python benchmarks/ablate_digits.py --out {args.out or 'REPORT.md'}",
        "```",
        "",
    ]
    for what, result in results.items():
        lines += [f"## {what}", "", f"`{result['command']}`", "", "```", format_summary(result), "```", ""]
        if what == "relu-vs-tanh":
            lines += ["Learning-rate sweep (seed 0, final training error):", ""]
            lines += [f"- {a['arm']}: " + ", ".join(
                f"lr {s['lr']:g}: {'diverged' if s['stopped'] else format(s['final_train_error'], '.1%')}"
                for s in a["sweep"]) for a in result["arms"]]
            lines.append("")
        lines += [f"![{what}](ablations/ablate-{what}.png)", ""]
    return emit(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
