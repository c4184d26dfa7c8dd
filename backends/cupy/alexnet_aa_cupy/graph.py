"""The captured forward: a model's whole forward pass recorded once as a CUDA graph, then replayed.

At batch 1 the eager forward is bound by the host: each of its ~25 kernels costs tens of
microseconds of Python, validation and launch, more than the GPU needs to run it. A CUDA graph
records the launches once (stream capture, ``cupy.cuda.Stream.begin_capture``) and replays them with
one call. What capture needs, and how it is met here:

* every kernel capturable: the forward runs this package's own kernels only (``linear`` included:
  CuPy refuses cuBLAS during capture), and nothing in it waits for the device;
* every kernel compiled and loaded before the capture: one eager run of the forward first;
* the buffers the graph reads and writes kept alive and never handed to anyone else: everything the
  forward allocates comes from a :class:`cupy.cuda.MemoryPool` of the graph's own (the input, the
  output, every intermediate and scratch array), held as long as the graph is;
* the device: the one current at recording (``CupyBackend`` makes its own current), made current
  again for each replay, whatever is current when it is called;
* ordering with the caller's stream and with other replays: each replay waits for the caller's
  stream, then copies the input into the graph's input buffer, launches the graph and copies the
  output into a new array, all on the graph's own stream and under a lock, and the caller's stream
  waits for that. A returned array is the caller's: later replays never write into it.

A replay runs the very kernels of the eager forward with the same arguments, so it returns the
same bits (``tests/test_cupy_graph.py`` checks that on a GPU).
"""

from __future__ import annotations

import threading
from typing import Any, Callable


class CapturedForward:
    """``forward`` recorded for inputs of ``x``'s shape and dtype; call it with such an input.

    ``forward`` maps a native input (a cupy array) to a native output and must launch only
    capturable work (see the module docstring). Construction runs it twice: once eagerly (compiling
    and loading every kernel), once under capture.
    """

    def __init__(self, cupy: Any, forward: Callable[[Any], Any], x: Any) -> None:
        self._cp = cupy
        self._device = cupy.cuda.runtime.getDevice()  # the caller made it current: the replays run there too
        self.shape, self.dtype = tuple(x.shape), x.dtype
        self._pool = cupy.cuda.MemoryPool()
        self._stream = cupy.cuda.Stream(non_blocking=True)
        self._lock = threading.Lock()
        caller = cupy.cuda.get_current_stream()
        with cupy.cuda.using_allocator(self._pool.malloc), self._stream:
            self._stream.wait_event(caller.record())
            self._x = cupy.empty_like(x)
            self._x[...] = x
            forward(self._x)
            self._stream.synchronize()
            self._stream.begin_capture()
            try:
                self._y = forward(self._x)
            finally:
                graph = self._stream.end_capture()  # leaves capture mode even when forward failed
        self._graph = graph
        self._graph.upload(self._stream)
        self._stream.synchronize()

    def __call__(self, x: Any) -> Any:
        """``forward(x)`` by replaying the graph; a new array, ordered after the caller's stream's work."""
        cp = self._cp
        if tuple(x.shape) != self.shape or x.dtype != self.dtype:
            raise ValueError(f"[capture] this graph was recorded for {self.shape} {self.dtype} inputs, "
                             f"got {tuple(x.shape)} {x.dtype}")
        with cp.cuda.Device(self._device):
            caller = cp.cuda.get_current_stream()
            out = cp.empty_like(self._y)
            with self._lock, self._stream:
                self._stream.wait_event(caller.record())
                self._x[...] = x
                self._graph.launch(self._stream)
                out[...] = self._y
                caller.wait_event(self._stream.record())
        return out
