"""Classify and extract features on a real Dask cluster (a scheduler and two worker processes on
127.0.0.1, started here): the same results as one process, a worker killed mid-job, bad images,
weights the workers cannot read, a scheduler that does not answer, and bounded backpressure."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed", reason="needs Dask: pip install 'alexnet-aa[distributed]'")
pytest.importorskip("zarr", reason="needs Zarr: pip install 'alexnet-aa[features]'")

import cloudpickle  # noqa: E402
import dask  # noqa: E402
import dask.array as da  # noqa: E402
import zarr  # noqa: E402
from distributed import Client, LocalCluster, WorkerPlugin  # noqa: E402
from PIL import Image  # noqa: E402

from alexnet_aa import distributed as cluster  # noqa: E402
from alexnet_aa.architecture import get_architecture  # noqa: E402
from alexnet_aa.backend import available_backends  # noqa: E402
from alexnet_aa.classify import Classifier, ClusterError, classify, features, write_features  # noqa: E402
from alexnet_aa.cli import main  # noqa: E402
from alexnet_aa.preprocess import Preprocess  # noqa: E402
from alexnet_aa.weights import PREPROCESS_KEY, VARIANT_KEY, he_weights, save_weights  # noqa: E402

# The plugins below are defined in this test module, which the worker processes cannot import.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

N_IMAGES = 19
BAD = "broken.png"


def _cluster(**config) -> LocalCluster:
    with dask.config.set(config):
        return LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                            dashboard_address=":0", silence_logs=40)


@pytest.fixture(scope="module")
def client():
    with _cluster() as lc, Client(lc, set_as_default=False) as c:
        yield c


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A 10-class torchvision model at 64×64 (so a batch is quick) and N_IMAGES photos-to-be of
    varied sizes and modes, plus one file that is not an image (sorted among them)."""
    root = tmp_path_factory.mktemp("cluster")
    preprocess = Preprocess(crop_size=64, resize_size=72, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                            source="tests: a 64x64 crop")
    weights = root / "tv10.safetensors"
    save_weights(weights, he_weights(get_architecture("torchvision", 10), 3),
                 {VARIANT_KEY: "torchvision", PREPROCESS_KEY: preprocess.to_json()})
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        pixels = rng.integers(0, 256, (40 + 7 * i, 90 - 2 * i, 3), dtype=np.uint8)
        Image.fromarray(pixels).convert("L" if i % 5 == 0 else "RGB").save(images / f"{i:02d}.png")
    (images / BAD).write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    paths = sorted(str(p) for p in images.iterdir())
    return {"weights": str(weights), "images": str(images), "paths": paths}


def _same_entries(got, expected):
    """The same paths, errors and classes in the same order; probabilities to float32 rounding."""
    assert [e["path"] for e in got] == [e["path"] for e in expected]
    assert [e["error"] for e in got] == [e["error"] for e in expected]
    for g, e in zip(got, expected):
        assert [(t["index"], t["name"]) for t in g["top"]] == [(t["index"], t["name"]) for t in e["top"]], g["path"]
        np.testing.assert_allclose([t["probability"] for t in g["top"]], [t["probability"] for t in e["top"]],
                                   rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def local(job):
    return list(classify(job["paths"], weights=job["weights"], batch=3, top=3))


def test_the_cluster_classifies_as_one_process_does(client, job, local):
    got = list(cluster.classify(job["paths"], weights=job["weights"], client=client, batch=3, top=3))
    _same_entries(got, local)
    bad = [e for e in got if e["error"]]
    assert [Path(e["path"]).name for e in bad] == [BAD] and "not an image" in bad[0]["error"]
    assert all(len(e["top"]) == 3 for e in got if not e["error"])
    assert _plugins(client) == set(), "the job's model plugin outlived the job"


def _plugins(client) -> set[str]:
    return {n for n in client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.worker_plugins))
            if n.startswith("alexnet-aa-")}


@pytest.mark.parametrize("backend", ["numpy", "mlx"])
@pytest.mark.parametrize("json_output", [False, True], ids=["text", "json"])
def test_cli_prints_on_a_cluster_what_it_prints_here(client, job, capsys, backend, json_output):
    ok, why = available_backends().get(backend, (False, "not installed"))
    if not ok:
        pytest.skip(f"{backend}: {why}")
    argv = ["classify", job["images"], "--weights", job["weights"], "--batch", "4", "--top", "2",
            "--backend", backend] + (["--json"] if json_output else [])
    assert main(argv) == 1  # the broken file
    here = capsys.readouterr()
    assert main(argv + ["--scheduler", client.scheduler.address]) == 1
    there = capsys.readouterr()
    assert there.err == here.err
    if json_output:
        _same_entries(json.loads(there.out), json.loads(here.out))
        assert sum(1 for e in json.loads(here.out) if e["top"]) == N_IMAGES
    else:
        assert there.out == here.out
        assert here.out.count("  1. ") == N_IMAGES


class KillOnBatch(WorkerPlugin):
    """SIGKILLs the worker process that starts executing batch ``index`` of a job: only the first
    time if ``once`` (a marker file records it), else every time."""

    def __init__(self, index: int, marker: str | None) -> None:
        self.index, self.marker = index, marker

    def transition(self, key, start, finish, **kwargs):
        if finish != "executing" or not str(key).endswith(f"-{self.index}") or not str(key).startswith("alexnet-aa-"):
            return
        if self.marker is not None:
            if os.path.exists(self.marker):
                return
            Path(self.marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_worker_killed_mid_job_has_its_batch_rerun_and_every_image_comes_once(job, local, tmp_path):
    marker = tmp_path / "killed"
    with _cluster() as lc, Client(lc, set_as_default=False) as c:
        pids = set(c.run(os.getpid).values())
        c.register_plugin(KillOnBatch(2, str(marker)), name="kill-once")
        got = list(cluster.classify(job["paths"], weights=job["weights"], client=c, batch=3, top=3))
        killed = int(marker.read_text())
        assert killed in pids, "the plugin did not kill a worker of this cluster"
        c.wait_for_workers(2, timeout=30)
        assert killed not in set(c.run(os.getpid).values())
    _same_entries(got, local)  # the killed worker's batch, rerun elsewhere, included once


def test_a_batch_that_kills_every_worker_it_runs_on_is_reported_as_failed_images(job, local):
    with _cluster(**{"distributed.scheduler.allowed-failures": 0}) as lc, Client(lc, set_as_default=False) as c:
        c.register_plugin(KillOnBatch(1, None), name="kill-always")
        got = list(cluster.classify(job["paths"], weights=job["weights"], client=c, batch=3, top=3))
    assert [e["path"] for e in got] == [e["path"] for e in local]
    # batch 1 (images 3-5) killed its worker; with no failure allowed, the scheduler also fails the
    # batches that worker held queued: those are lost the same way, and the others are classified
    lost = [i for i, e in enumerate(got) if e["error"] and "its batch was on a worker that died, 1 time" in e["error"]]
    assert {3, 4, 5} <= set(lost) and all(got[i]["top"] == [] for i in lost)
    kept = [i for i in range(len(got)) if i not in lost]
    assert len(kept) >= len(got) - 9, f"more batches lost than the dead worker held: {lost}"
    _same_entries([got[i] for i in kept], [local[i] for i in kept])


def test_weights_the_workers_cannot_read_are_a_clear_error(client, tmp_path):
    missing = tmp_path / "only-on-the-client.safetensors"
    with pytest.raises(ClusterError, match=r"worker tcp://127\.0\.0\.1:\d+ cannot build the model from .*"
                                           r"only-on-the-client\.safetensors: weights file not found"):
        list(cluster.classify(["x.png"], weights=missing, client=client))
    assert _plugins(client) == set()


def test_a_worker_that_restarts_onto_other_weights_is_refused_at_its_first_batch(job, tmp_path):
    weights = tmp_path / "changing.safetensors"
    weights.write_bytes(Path(job["weights"]).read_bytes())
    with _cluster() as lc, Client(lc, set_as_default=False) as c:
        with cluster.ClusterModel(c, weights) as model:
            other = he_weights(get_architecture("torchvision", 10), 4)  # the file changes under the job
            save_weights(weights, other, {VARIANT_KEY: "torchvision",
                                          PREPROCESS_KEY: Classifier(job["weights"]).preprocess.to_json()})
            c.restart_workers([sorted(c.nthreads())[0]])  # this one rebuilds the model from the new file
            with pytest.raises(ClusterError, match=r"worker tcp://\S+ read other weights at .*changing\.safetensors "
                                                   r"\(tensors SHA-256 \w+…\) than the job's"):
                list(model.classify_batches(job["paths"] * 2, batch=1))


def test_bad_arguments_are_refused_by_the_workers_before_any_image_is_read(client, job):
    with cluster.ClusterModel(client, job["weights"]) as model:
        with pytest.raises(ValueError, match=r"^--top must be between 1 and 10, got 11$"):
            model.classify_batches(["never-read.png"], top=11)
        with pytest.raises(ValueError, match="has no layer 'fc9'"):
            model.feature_batches(["never-read.png"], layer="fc9")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_scheduler_is_a_clear_error_after_a_bounded_wait(job, capsys):
    address = f"tcp://127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    with pytest.raises(ClusterError, match=rf"cannot reach the Dask scheduler at {address} within 1 s"):
        cluster.connect(address, timeout=1)
    assert time.monotonic() - start < 30, "connect waited far past its timeout"
    assert main(["classify", job["images"], "--weights", job["weights"], "--scheduler", address,
                 "--connect-timeout", "1"]) == 2
    assert f"alexnet-aa classify: error: cannot reach the Dask scheduler at {address}" in capsys.readouterr().err


def test_a_scheduler_without_workers_is_a_clear_error():
    with LocalCluster(n_workers=0, processes=False, protocol="tcp", host="127.0.0.1", dashboard_address=":0") as lc:
        with pytest.raises(ClusterError, match="has no worker after 1 s: start one with `dask worker"):
            cluster.connect(lc.scheduler_address, timeout=1)


def test_backpressure_bounds_the_batches_in_flight(client, job):
    """Paths are pulled only as batches complete: never more than in_flight batches ahead of the results."""
    pulled = 0

    def paths():
        nonlocal pulled
        for p in itertools.cycle(job["paths"][:4]):
            pulled += 1
            yield p

    ahead = []
    for n, _ in enumerate(cluster.classify(itertools.islice(paths(), 40), weights=job["weights"], client=client,
                                           batch=2, in_flight=3), 1):
        ahead.append(pulled - n)
    assert len(ahead) == 40
    # 3 batches of 2 submitted or held; measured as the first entry of a batch is handed out
    assert max(ahead) <= 3 * 2 - 1, f"the client ran {max(ahead)} paths ahead of its results"


def test_stopping_early_cancels_the_outstanding_batches_and_drops_the_model(client, job):
    results = cluster.classify(job["paths"] * 3, weights=job["weights"], client=client, batch=2, in_flight=4)
    next(results)
    results.close()
    deadline = time.monotonic() + 10
    while _our_tasks(client) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _our_tasks(client) == 0 and _plugins(client) == set()


def _our_tasks(client) -> int:
    return client.run_on_scheduler(
        lambda dask_scheduler: sum(1 for k in dask_scheduler.tasks if str(k).startswith("alexnet-aa-")))


def test_features_on_the_cluster_are_the_local_features_and_dask_reads_them(client, job, tmp_path):
    here = features(job["paths"], tmp_path / "here", weights=job["weights"], layer="pool5", batch=4)
    there = cluster.features(job["paths"], tmp_path / "there", weights=job["weights"], client=client,
                             layer="pool5", batch=4)
    assert here == there and (there["images"], there["failed"]) == (N_IMAGES + 1, 1)
    a, b = zarr.open_group(tmp_path / "here", mode="r"), zarr.open_group(tmp_path / "there", mode="r")
    np.testing.assert_allclose(b["pool5"][:], a["pool5"][:], rtol=1e-5, atol=1e-6)
    assert list(b["path"][:]) == job["paths"]
    errors = list(b["error"][:])
    row = job["paths"].index(str(Path(job["images"]) / BAD))
    assert errors[row].startswith("not an image") and errors.count("") == N_IMAGES
    x = da.from_zarr(str(tmp_path / "there"), component="pool5")
    assert x.shape == (N_IMAGES + 1, 256, 1, 1) and x.chunksize[0] == 4
    assert np.isnan(x[row].compute()).all() and np.isfinite(np.delete(x.compute(), row, axis=0)).all()


def test_features_of_an_interrupted_job_leave_nothing_under_out(job, tmp_path):
    model = Classifier(job["weights"])
    out = tmp_path / "feats"
    written = write_features(out, model.describe(), "fc7", 2, model.feature_batches(job["paths"], batch=2))
    next(written)
    with pytest.raises(ValueError, match=r"feats\.partial exists: another job is writing it"):
        write_features(out, model.describe(), "fc7", 2, iter(()))  # a second writer, while the first writes
    written.close()
    assert list(tmp_path.iterdir()) == []
    out.mkdir()
    with pytest.raises(ValueError, match="exists: remove it"):
        write_features(out, model.describe(), "fc7", 2, iter(()))


def test_the_cli_writes_features_on_a_cluster(client, job, tmp_path, capsys):
    out = tmp_path / "fc7"
    assert main(["features", job["images"], "--weights", job["weights"], "--out", str(out),
                 "--scheduler", client.scheduler.address]) == 1
    captured = capsys.readouterr()
    assert f"wrote {out}: fc7 features (4096 float32) of {N_IMAGES + 1} images (1 failed)" in captured.out
    assert f"{BAD}: error: not an image" in captured.err
    assert da.from_zarr(str(out), component="fc7").shape == (N_IMAGES + 1, 4096)


@pytest.mark.parametrize("command", [["classify", "--top", "1"], ["features", "--out", "fc7.zarr"]], ids=lambda c: c[0])
def test_without_a_scheduler_nothing_imports_dask(job, tmp_path, command):
    argv = [command[0], job["images"], "--weights", job["weights"], *command[1:]]
    code = (f"import sys; from alexnet_aa.cli import main; main({argv!r}); "
            "print(sorted(m for m in ('dask', 'distributed') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.strip().endswith("[]"), out.stdout[-300:] + out.stderr[-300:]
    assert command[0] == "classify" or (tmp_path / "fc7.zarr" / "zarr.json").is_file()
