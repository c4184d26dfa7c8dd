"""Classify and extract features on a Dask cluster (DESIGN.md §9).

Rows of a batch are independent, so a job of many images splits into batches,
and each batch is one Dask task. The model never travels in the task graph
(its 244 MB would): :class:`ModelPlugin`, registered with
``client.register_plugin``, builds one :class:`~alexnet_aa.classify.Classifier`
per worker from the weights *path*, on that worker, also on a worker that
joins or restarts later. The tasks carry only paths: images are read and
preprocessed where they are classified, so the paths (and the weights path)
must name the same files on every worker (one machine, or a shared
filesystem).

The client keeps at most ``in_flight`` batches submitted or finished but not
yet handed out (backpressure: a million paths are never a million tasks), and
hands results out in input order as soon as the batches before them are in.
A worker that dies has its batches rerun elsewhere by the scheduler; a batch
that killed ``distributed.scheduler.allowed-failures`` + 1 workers is reported
as failed images, with that reason, and the job goes on. Each image is
reported exactly once.

>>> from alexnet_aa.distributed import ModelPlugin
>>> ModelPlugin("/data/alexnet.safetensors").name.startswith("alexnet-aa-model-")
True
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
from distributed import Client, KilledWorker, WorkerPlugin, as_completed, get_worker

from .classify import Classifier, ClusterError, batches, check_out, extract_features, layer_shape

#: Seconds :func:`connect` waits for the scheduler to answer and for a first worker to join.
CONNECT_TIMEOUT = 10.0


class ModelPlugin(WorkerPlugin):
    """Builds the worker's :class:`~alexnet_aa.classify.Classifier` from ``weights`` (a path on the
    worker) when the worker starts or the plugin is registered.

    The model is built in the worker's task thread pool (an MLX model is bound to the thread that
    made it), and one batch at a time runs on it. A worker that cannot build it keeps the reason,
    which the registration and every later task on that worker raise as a
    :class:`~alexnet_aa.classify.ClusterError` naming the worker.
    """

    def __init__(self, weights: str | os.PathLike, variant: str | None = None, backend: str = "numpy") -> None:
        self.label, self.weights = str(weights), os.path.abspath(weights)  # as given; as the workers read it
        self.variant, self.backend = variant, backend
        self.name = f"alexnet-aa-model-{uuid.uuid4().hex[:16]}"  # one per job
        self.classifier: Classifier | None = None
        self.error: str | None = None
        self.lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # what travels to the workers: a few strings
        return {k: getattr(self, k) for k in ("label", "weights", "variant", "backend", "name")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, classifier=None, error=None, lock=threading.Lock(), address=None, ready=None)

    async def setup(self, worker) -> None:
        # the worker lists the plugin before this runs: out-of-band calls wait for `ready` (tasks wait anyway)
        self.address, self.ready = worker.address, asyncio.Event()
        try:
            self.classifier = await asyncio.get_running_loop().run_in_executor(
                worker.executor,
                lambda: Classifier(self.weights, variant=self.variant, backend=self.backend, label=self.label))
        except Exception as exc:  # noqa: BLE001 — the reason goes back to the client, whatever it is
            self.error = f"worker {worker.address} cannot build the model from {self.label}: {exc}"
            raise ClusterError(self.error) from None
        finally:
            self.ready.set()

    def teardown(self, worker) -> None:
        self.classifier = None

    def checked(self, params_sha256: str | None = None) -> Classifier:
        """The model, else the reason there is none; with ``params_sha256``, refused if this worker's
        tensors hash otherwise (it read another file at the job's path: joined late, or restarted)."""
        if self.classifier is None:
            raise ClusterError(self.error or f"worker {self.address} has no model (its plugin's setup did not run)")
        if params_sha256 is not None and self.classifier.params_sha256 != params_sha256:
            raise ClusterError(f"worker {self.address} read other weights at {self.label} (tensors SHA-256 "
                               f"{self.classifier.params_sha256[:16]}…) than the job's ({params_sha256[:16]}…)")
        return self.classifier


def _plugin(name: str, worker=None) -> ModelPlugin:
    worker = worker or get_worker()
    plugin = worker.plugins.get(name)
    if plugin is None:
        raise ClusterError(f"worker {worker.address} has no {name} plugin: was it registered on this scheduler?")
    return plugin


async def _ready(name: str, worker) -> ModelPlugin:
    """The plugin once its setup has finished (``client.run`` calls run on the worker's event loop)."""
    plugin = _plugin(name, worker)
    if plugin.ready is not None:
        await plugin.ready.wait()
    return plugin


async def _describe(name: str, dask_worker) -> dict[str, Any]:  # client.run passes the worker as ``dask_worker``
    return (await _ready(name, dask_worker)).checked().describe()


async def _check(name: str, limits: dict[str, Any], dask_worker) -> None:
    (await _ready(name, dask_worker)).checked().check(**limits)


def _classify_batch(name: str, paths: list[str], params_sha256: str, top: int) -> list[dict[str, Any]]:
    plugin = _plugin(name)
    with plugin.lock:
        return plugin.checked(params_sha256).classify(paths, top)


def _features_batch(name: str, paths: list[str], params_sha256: str, layer: str,
                    ) -> tuple[list[dict[str, Any]], np.ndarray]:
    plugin = _plugin(name)
    with plugin.lock:
        return plugin.checked(params_sha256).features(paths, layer)


# -- the client's side ------------------------------------------------------------------------


def connect(address: str, timeout: float = CONNECT_TIMEOUT) -> Client:
    """A client of the scheduler at ``address`` with at least one worker, waiting at most ``timeout``
    seconds for each; else a :class:`~alexnet_aa.classify.ClusterError` saying which did not come."""
    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except (OSError, asyncio.TimeoutError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {address} within {timeout:g} s ({exc}); "
                           "is `dask scheduler` running there, and is the address its tcp://HOST:PORT?") from None
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (OSError, asyncio.TimeoutError):
        client.close()
        raise ClusterError(f"the Dask scheduler at {address} has no worker after {timeout:g} s: "
                           f"start one with `dask worker {address}`") from None
    return client


def _in_order(client: Client, task: Callable, name: str, chunks: Iterator[list[str]], args: tuple,
              in_flight: int, entries_of: Callable[[Any], list[dict[str, Any]]],
              failed: Callable[[list[str], str], Any]) -> Iterator[Any]:
    """Each chunk's task result, in chunk order, with at most ``in_flight`` chunks submitted or held.

    The workers get absolute paths (their working directory is not the client's); the entries
    (``entries_of(result)``) say the paths as given. A chunk whose task raised
    :class:`~distributed.KilledWorker` (it killed worker after worker) is ``failed(chunk, reason)``;
    any other error stops the job. Outstanding tasks are cancelled when the consumer stops early."""
    job = uuid.uuid4().hex[:12]
    futures = as_completed(loop=client.loop)
    index_of: dict[str, int] = {}
    chunk_of: dict[int, list[str]] = {}  # submitted, not yet handed out
    outstanding: dict[int, Any] = {}  # submitted, not yet finished
    held: dict[int, Any] = {}  # finished, waiting for an earlier chunk
    following = 0

    def submit() -> None:
        while len(chunk_of) < in_flight:
            chunk = next(chunks, None)
            if chunk is None:
                return
            i = len(index_of)
            future = client.submit(task, name, [os.path.abspath(p) for p in chunk], *args,
                                   key=f"alexnet-aa-{task.__name__[1:]}-{job}-{i}", pure=False)
            index_of[future.key], chunk_of[i], outstanding[i] = i, chunk, future
            futures.add(future)

    submit()
    try:
        for future in futures:
            i = index_of[future.key]
            del outstanding[i]
            if future.status == "cancelled":
                raise ClusterError(f"batch {i} ({chunk_of[i][0]} …) was cancelled by the cluster: "
                                   "was the scheduler restarted, or the job cancelled by another client?")
            if future.status == "error":
                exc = future.exception()
                if not isinstance(exc, KilledWorker):
                    raise exc
                held[i] = failed(chunk_of[i], f"its batch was on a worker that died, {_times(exc.allowed_failures + 1)} "
                                              f"(the last: {exc.last_worker.address}); Dask then gives up on it")
            else:
                held[i] = future.result()
                for entry, path in zip(entries_of(held[i]), chunk_of[i], strict=True):
                    entry["path"] = path
            future.release()
            while following in held:
                yield held.pop(following)
                del chunk_of[following]
                following += 1
            submit()
    finally:
        if outstanding and client.status == "running":
            client.cancel(list(outstanding.values()))


def _times(n: int) -> str:
    return f"{n} time" if n == 1 else f"{n} times"


def _failed_entries(chunk: list[str], reason: str) -> list[dict[str, Any]]:
    return [{"path": p, "top": [], "error": reason} for p in chunk]


class ClusterModel:
    """One model per worker of ``client``'s cluster, built from ``weights`` (a path the workers read),
    with :class:`~alexnet_aa.classify.Classifier`'s interface: ``describe()``, ``check()``,
    ``classify_batches()``, ``feature_batches()``. A context manager: leaving it (or :meth:`close`)
    unregisters the plugin, so the workers free the model.

    Each job registers its own plugin (two jobs at once never share or drop each other's model).
    ``in_flight`` bounds the batches submitted or held at once (default: two per worker thread).
    Workers whose tensors differ (other files at the same path) are refused: those present now
    here, one that joins later at its first batch (each task carries the job's tensor digest).
    """

    def __init__(self, client: Client, weights: str | os.PathLike, *, variant: str | None = None,
                 backend: str = "numpy", in_flight: int | None = None) -> None:
        if in_flight is not None and in_flight < 1:
            raise ValueError(f"in_flight must be >= 1, got {in_flight}")
        self.client, self._closed = client, False
        self.in_flight = in_flight or max(2, 2 * sum(client.nthreads().values()))
        plugin = ModelPlugin(weights, variant, backend)
        self.name = plugin.name
        try:
            try:
                client.register_plugin(plugin, name=plugin.name)
            except ClusterError:
                raise
            except Exception as exc:  # what a worker raised (a setup error, an unpickling one), as received
                raise ClusterError(f"registering the model on the workers failed: {type(exc).__name__}: {exc}") from None
            described = self._on_every_worker(_describe)
            if len({tuple(sorted(info.items())) for info in described.values()}) > 1:
                lines = "; ".join(f"{addr}: {info}" for addr, info in sorted(described.items()))
                raise ClusterError(f"the workers built different models from {weights}: {lines}")
        except BaseException:  # Ctrl-C while the workers build included: no plugin is left behind
            self.close()
            raise
        self.info = next(iter(described.values()))

    def _on_every_worker(self, fn: Callable, *args: Any) -> dict[str, Any]:
        return self.client.run(fn, self.name, *args)

    def describe(self) -> dict[str, Any]:
        return dict(self.info)

    def check(self, *, batch: int, top: int | None = None, layer: str | None = None) -> None:
        """:meth:`~alexnet_aa.classify.Classifier.check` on every worker (their memory is what counts)."""
        self._on_every_worker(_check, {"batch": batch, "top": top, "layer": layer})

    def classify_batches(self, paths: Iterable[str | os.PathLike], *, batch: int = 32, top: int = 5,
                         ) -> Iterator[list[dict[str, Any]]]:
        """:meth:`~alexnet_aa.classify.Classifier.classify_batches` on the cluster: the same entries, batch
        by batch, in input order (checked now)."""
        self.check(batch=batch, top=top)
        return _in_order(self.client, _classify_batch, self.name, batches(paths, batch),
                         (self.info["params_sha256"], top), self.in_flight, lambda entries: entries, _failed_entries)

    def feature_batches(self, paths: Iterable[str | os.PathLike], *, batch: int = 32, layer: str = "fc7",
                        ) -> Iterator[tuple[list[dict[str, Any]], np.ndarray]]:
        """:meth:`~alexnet_aa.classify.Classifier.feature_batches` on the cluster (checked now)."""
        self.check(batch=batch, layer=layer)
        shape = layer_shape(self.info, layer)

        def failed(chunk: list[str], reason: str) -> tuple[list[dict[str, Any]], np.ndarray]:
            return [{"path": p, "error": reason} for p in chunk], np.full((len(chunk), *shape), np.nan, np.float32)

        return _in_order(self.client, _features_batch, self.name, batches(paths, batch),
                         (self.info["params_sha256"], layer), self.in_flight, lambda result: result[0], failed)

    def close(self) -> None:
        """Unregister the plugin, once, so that the workers drop the model. Best effort: it runs while
        an error or an interrupt is already on its way out, and must not replace it; a plugin it
        could not remove (a worker died meanwhile) is one that worker no longer holds, and a
        scheduler that lost the client drops nothing (see docs/cluster.md)."""
        if self._closed or self.client.status != "running":
            return
        self._closed = True
        with contextlib.suppress(Exception):  # a worker's own error, the scheduler's "does not exist"
            self.client.unregister_worker_plugin(self.name)

    def __enter__(self) -> ClusterModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def classify(paths: Iterable[str | os.PathLike], *, weights: str | os.PathLike, client: Client,
             variant: str | None = None, backend: str = "numpy", batch: int = 32, top: int = 5,
             in_flight: int | None = None) -> Iterator[dict[str, Any]]:
    """Classify ``paths`` on a Dask cluster: the entries :func:`alexnet_aa.classify.classify` gives, one
    per image, in input order, each exactly once, as the batches complete (an iterator: the results
    are never all in memory)::

        from distributed import Client
        client = Client("tcp://scheduler:8786")
        for entry in classify(paths, weights="/shared/alexnet.safetensors", client=client):
            print(entry["path"], entry["error"] or entry["top"][0]["name"])
    """
    with ClusterModel(client, weights, variant=variant, backend=backend, in_flight=in_flight) as model:
        for entries in model.classify_batches(paths, batch=batch, top=top):
            yield from entries


def features(paths: Iterable[str | os.PathLike], out: str | os.PathLike, *, weights: str | os.PathLike, client: Client,
             layer: str = "fc7", variant: str | None = None, backend: str = "numpy", batch: int = 32,
             in_flight: int | None = None) -> dict[str, Any]:
    """``layer``'s features of ``paths``, computed on the cluster and written by this client to the Zarr
    group ``out`` (:func:`alexnet_aa.classify.write_features`: one chunk per batch, in input order);
    returns the group's ``alexnet_aa`` attribute. ``dask.array.from_zarr(out, component=layer)`` reads it."""
    check_out(out)
    with ClusterModel(client, weights, variant=variant, backend=backend, in_flight=in_flight) as model:
        return extract_features(model, paths, out, layer=layer, batch=batch)
