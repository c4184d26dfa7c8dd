"""Classify one folder of photos here and on Dask clusters of 1 and 2 workers, in one run.

The job is what ``alexnet-aa classify DIR --batch B`` does: read, decode and
preprocess each photo, then the forward, batch by batch, results in input
order. It runs

- here: :class:`alexnet_aa.classify.Classifier` in this process (the local command);
- on a ``LocalCluster`` of 1 and of 2 worker processes (one task thread each) on
  127.0.0.1: :class:`alexnet_aa.distributed.ClusterModel`, as ``--scheduler`` does;
- PyTorch's forward on the same preprocessed batches in its own process (the
  peer: how much of the job a faster forward could take away).

Each job's time is the best of ``--repeats`` after a warm-up job; the model's
build (here) and registration (on the workers) are timed apart. The overhead
per batch is (1-worker time − local time) / batches, and the round trip of an
empty task measured alone. Photos: scikit-image's, cropped and resized at
random into ``--images`` JPEGs (``pip install 'alexnet-aa[demo]'``); weights:
He-scaled random torchvision weights (the speed does not depend on them).

    python benchmarks/bench_distributed.py [--images 128] [--batch 16] [--repeats 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from alexnet_aa.architecture import get_architecture
from alexnet_aa.classify import Classifier
from alexnet_aa.preprocess import torchvision_preprocess
from alexnet_aa.weights import PREPROCESS_KEY, VARIANT_KEY, he_weights, save_weights
from report import best_of, blas_line, emit

# A Nanny sets its workers' variables (OMP_NUM_THREADS=1, MALLOC_TRIM_THRESHOLD_, …) in its own process
# first: in a LocalCluster that is this one, so the peer's process starts from the environment as it was.
ENVIRON = dict(os.environ)
#: Dask's default for its workers' glibc malloc (distributed.nanny.pre-spawn-environ), and the variable.
TRIM = "MALLOC_TRIM_THRESHOLD_"

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "cat", "hubble_deep_field", "colorwheel")


def write_photos(folder: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` JPEGs: random crops (at least half of each side) of scikit-image's photos, resized to 256–640 px."""
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = [getattr(skimage.data, name)()[..., :3] for name in PHOTOS]
    paths = []
    for i in range(n):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        ch, cw = rng.integers(h // 2, h + 1), rng.integers(w // 2, w + 1)
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        side = int(rng.integers(256, 641))
        path = folder / f"{i:04d}.jpg"
        Image.fromarray(img[y:y + ch, x:x + cw]).resize((side, side * ch // cw)).save(path, quality=90)
        paths.append(str(path))
    return paths


def torch_peer(weights: str, paths: list[str], batch: int, repeats: int) -> float:
    """In a child process (its OpenMP threads spin after each call and would slow whatever ran next
    here): our reading and preprocessing, PyTorch's forward; the best job's seconds."""
    listing = Path(weights).with_name("paths.json")
    listing.write_text(json.dumps(paths))
    code = f"""
import json, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import torch
from report import best_of
from alexnet_aa.classify import Classifier, batches
from alexnet_aa.testing.torch_reference import torch_forward, torch_weights
from alexnet_aa.weights import load_weights
c = Classifier({weights!r})
tw = torch_weights(torch, load_weights({weights!r}))
paths = json.loads(open({str(listing)!r}).read())
def run():
    for chunk in batches(paths, {batch}):
        _, x, _ = c.load(chunk)
        torch_forward(torch, c.model.arch, tw, torch.from_numpy(x)).softmax(1).topk(5)
print(best_of(run, {repeats}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENVIRON)
    if out.returncode:
        raise RuntimeError(f"the PyTorch peer failed:\n{out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def empty_round_trip_ms(client, n: int = 30) -> float:
    """Median milliseconds from submit to result of a task that returns its (one-batch-sized) argument."""
    payload = [{"path": f"/photos/{i:04d}.jpg", "top": [], "error": None} for i in range(16)]
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        client.submit(lambda entries: entries, payload, pure=False).result()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", help="also write the Markdown report here")
    args = p.parse_args(argv)

    import dask
    import distributed
    from distributed import Client, LocalCluster

    from alexnet_aa.distributed import ClusterModel

    with tempfile.TemporaryDirectory() as tmp:
        weights = str(Path(tmp) / "torchvision-random.safetensors")
        save_weights(weights, he_weights(get_architecture("torchvision"), 0),
                     {VARIANT_KEY: "torchvision", PREPROCESS_KEY: torchvision_preprocess().to_json()})
        photos = Path(tmp) / "photos"
        photos.mkdir()
        paths = write_photos(photos, args.images)
        n_batches = -(-len(paths) // args.batch)

        t0 = time.perf_counter()
        here = Classifier(weights)
        build_s = time.perf_counter() - t0
        local_s = best_of(lambda: sum(len(e) for e in here.classify_batches(paths, batch=args.batch)), args.repeats)
        rows = [("here (the local command)", build_s, local_s)]
        expected = [e for b in here.classify_batches(paths, batch=args.batch) for e in b]

        round_trip = None
        default_trim = dask.config.get(f"distributed.nanny.pre-spawn-environ.{TRIM}")
        for workers, trim in ((1, default_trim), (1, None), (2, default_trim), (2, None)):
            with dask.config.set({f"distributed.nanny.pre-spawn-environ.{TRIM}": trim}):
                lc = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=":0", silence_logs=40)
            os.environ.pop(TRIM, None)  # the Nanny set it here too (see ENVIRON)
            with lc, Client(lc, set_as_default=False) as c:
                t0 = time.perf_counter()
                with ClusterModel(c, weights) as model:
                    register_s = time.perf_counter() - t0
                    run = lambda: sum(len(e) for e in model.classify_batches(paths, batch=args.batch))  # noqa: E731
                    seconds = best_of(run, args.repeats)
                    got = [e for b in model.classify_batches(paths, batch=args.batch) for e in b]
                    assert [e["path"] for e in got] == [e["path"] for e in expected]
                    assert [[t["index"] for t in e["top"]] for e in got] == [[t["index"] for t in e["top"]] for e in expected]
                if round_trip is None:
                    round_trip = empty_round_trip_ms(c)
            how = f"{TRIM}={trim} (Dask's default)" if trim is not None else f"{TRIM} unset"
            rows.append((f"Dask, {workers} worker{'s' if workers > 1 else ''} × 1 thread, {how}", register_s, seconds))
        torch_s = torch_peer(weights, paths, args.batch, args.repeats)

    command = " ".join(["python", "benchmarks/bench_distributed.py", *(argv if argv is not None else sys.argv[1:])])
    lines = [
        "# Classifying on a Dask cluster, against the local command and PyTorch",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} with",
        "",
        "```bash",
        command,
        "```",
        "",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores ({platform.processor() or platform.platform()}), "
        f"python {platform.python_version()}, numpy {np.__version__}, dask {dask.__version__}, "
        f"distributed {distributed.__version__}",
        f"- job: {len(paths)} JPEG photos (256–640 px, scikit-image's), torchvision variant at 224, "
        f"--batch {args.batch} ({n_batches} batches), top 5, numpy backend; best of {args.repeats} after a warm-up job",
        f"- {blas_line()}",
        "- every run's classes were checked equal to the local run's",
        "",
        "| where | model build / registration s | job s | img/s | vs here |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, setup_s, seconds in rows:
        lines.append(f"| {name} | {setup_s:.2f} | {seconds:.2f} | {len(paths) / seconds:.1f} | {local_s / seconds:.2f}× |")
    lines += [
        f"| peer: our reading + PyTorch {_torch_version()} forward, own process | | {torch_s:.2f} | "
        f"{len(paths) / torch_s:.1f} | {local_s / torch_s:.2f}× |",
        "",
        f"- overhead per batch on 1 worker: {(rows[1][2] - local_s) / n_batches * 1e3:.1f} ms with Dask's "
        f"default malloc setting, {(rows[2][2] - local_s) / n_batches * 1e3:.1f} ms without it "
        f"((job − local job) / {n_batches}); an empty task's round trip alone: {round_trip:.1f} ms (median of 30)",
    ]
    return emit(lines, args.out)


def _torch_version() -> str:
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True)
    return out.stdout.strip() or "(not installed)"


if __name__ == "__main__":
    sys.exit(main())
