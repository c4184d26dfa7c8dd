"""The offline training demo, measured: AlexNet learns faces from non-faces on photos that ship
inside the scikit-image wheel (``examples/lfw_folder.py``), through ``alexnet-aa train`` itself.

Runs (each a real CLI run; metrics from its ``.metrics.jsonl``, its curve copied beside the report):

- ``scratch``: the torchvision variant at 64×64 from He's initialisation, the paper's augmentation;
- ``paper-he``: the paper's variant at 227×227 (the 25×25 photos upscaled), He's initialisation;
- ``paper-recipe``: the paper's variant with the paper's own initialisation and lr 0.01;
- ``digits`` then ``transfer``: torchvision at 64×64 trained on scikit-learn's digits (1,797 8×8
  images, 10 classes, also offline), then fine-tuned on the faces with a fresh head and the
  convolutions frozen (``--weights … --fresh-head --freeze conv5``).

    python benchmarks/train_lfw.py --out docs/benchmarks/train-lfw.md      # about 15 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
from digits_folder import write_digits_folder  # noqa: E402
from lfw_folder import write_lfw_folder  # noqa: E402
from report import emit  # noqa: E402

FAST = ["--variant", "torchvision", "--input-size", "64"]
RUNS = {  # name: (data, arguments after the data folder, what it shows)
    "scratch": ("lfw", [*FAST, "--init", "he", "--lr", "1e-4", "--epochs", "15", "--batch", "16"],
                "torchvision at 64×64, He init, lr 1e-4, paper augmentation"),
    "paper-he": ("lfw", ["--variant", "paper", "--init", "he", "--lr", "1e-4", "--epochs", "8", "--batch", "16"],
                 "paper variant at 227×227, He init, lr 1e-4"),
    "paper-recipe": ("lfw", ["--variant", "paper", "--init", "paper", "--lr", "0.01", "--epochs", "8", "--batch", "16"],
                     "paper variant, the paper's init N(0, 0.01²) and biases 1, lr 0.01"),
    "digits": ("digits", [*FAST, "--init", "he", "--lr", "1e-4", "--epochs", "4", "--batch", "32"],
               "torchvision at 64×64 on scikit-learn's digits (10 classes)"),
    "transfer": ("lfw", [*FAST, "--weights", "{digits}", "--fresh-head", "--freeze", "conv5", "--lr", "1e-4",
                         "--epochs", "15", "--batch", "16"],
                 "the digits model fine-tuned on the faces: fresh fc8, conv1–conv5 frozen"),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default=",".join(RUNS), help="which runs (default: all)")
    p.add_argument("--out", help="the Markdown report; the curves are copied beside it")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="alexnet-aa-demo-"))
    write_lfw_folder(work / "lfw")
    write_digits_folder(work / "digits")
    images = Path(args.out).parent if args.out else work
    lines = [
        "# Training demo: faces and non-faces from scikit-image's offline photos",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} cores, numpy backend, "
        f"Python {platform.python_version()}, NumPy {np.__version__}. The data: `skimage.data.lfw_subset()` "
        "(200 grey 25×25 photos, 100 faces and 100 not), written as an image folder by "
        "`examples/lfw_folder.py`; 20% of each class held out (`--val-split 0.2`, seed 0); every run with "
        "the paper's augmentation (random crops, flips, PCA colour noise), dropout, momentum 0.9 and weight "
        "decay 5e-4. Each row is one `alexnet-aa train` run:",
        "",
        "```bash",
        "python benchmarks/train_lfw.py --out docs/benchmarks/train-lfw.md",
        "```",
        "",
        "| run | what | epochs | last train acc | last val acc | best val acc | s/epoch | train img/s | wall s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    pictures = []
    for name in args.runs.split(","):
        data, run_args, what = RUNS[name]
        out = work / f"{name}.safetensors"
        cmd = [sys.executable, "-m", "alexnet_aa", "train", str(work / data),
               *[a.format(digits=work / "digits.safetensors") for a in run_args],
               "--val-split", "0.2", "--no-progress", "--out", str(out)]
        print("$", " ".join(cmd[2:]), flush=True)
        started = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - started
        print(done.stdout + done.stderr, flush=True)
        stopped = next((line for line in done.stderr.splitlines() if "loss: expected a finite value" in line), None)
        if done.returncode and not (stopped and out.with_suffix(".metrics.jsonl").exists()):
            raise SystemExit(f"run {name} failed ({done.returncode})")
        history = [json.loads(line) for line in out.with_suffix(".metrics.jsonl").read_text().splitlines()]
        if stopped:  # a diverged run is a result: train stopped it and kept its last good epoch
            what += f"; **diverged**: `{stopped.split('error: ', 1)[-1].split(' (NaN')[0]}`, stopped after epoch {len(history)}"
        last = history[-1]
        seconds = np.mean([r["seconds"] for r in history[1:]] or [history[0]["seconds"]])
        shown = " ".join(run_args).replace("{digits}", "digits.safetensors")
        lines.append(f"| `{name}` | {what} (`{shown}`) | {len(history)} | {last['train_accuracy']:.1%} | "
                     f"{last['val_accuracy']:.1%} | {max(r['val_accuracy'] for r in history):.1%} | {seconds:.1f} | "
                     f"{np.mean([r['images_per_second'] for r in history[1:]] or [0]):.1f} | {wall:.0f} |")
        picture = images / f"train-lfw-{name}.png"
        shutil.copyfile(out.with_suffix(".png"), picture)
        pictures.append(f"![{name}: loss and accuracy per epoch]({picture.name})")
    lines += ["", "s/epoch and train img/s are the training pass of an epoch (the validation pass apart), "
              "averaged from the second epoch on (the first warms up); wall s is the whole run, start-up "
              "(reading the folder, the colour covariance of the training images) and validation included.",
              "", *pictures]
    return emit(lines, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
