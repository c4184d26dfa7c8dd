"""What the benchmark scripts share: best-of timing and the Markdown report they print and save."""

from __future__ import annotations

import time


def best_of(fn, repeats: int, sync=lambda: None) -> float:
    """Seconds of the fastest of `repeats` calls of fn, after one warm-up call.

    `sync` waits for queued device work (a GPU stream, MLX's lazy graph), so each
    time covers the computation, not only its launch.
    """
    fn()  # warm-up: allocations, primitive creation, kernel compilation
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def layer_table(title: str, layer_ms: dict[str, float], digits: int) -> list[str]:
    """A Markdown section: one row a layer in milliseconds, then the total."""
    return ([f"## {title}", "", "| layer | ms |", "|---|---:|"]
            + [f"| {name} | {ms:.{digits}f} |" for name, ms in layer_ms.items()]
            + [f"| **total** | {sum(layer_ms.values()):.{digits}f} |", ""])


def emit(lines: list[str], out: str | None) -> int:
    """Print the report and, with --out, write it to that file; the script's exit status."""
    report = "\n".join(lines)
    print(report)
    if out:
        with open(out, "w", encoding="utf-8") as f:
            f.write(report + "\n")
    return 0


def blas_line() -> str:
    """NumPy's BLAS as it runs in this process: library, version, the kernel it chose, threads; and
    the environment that forces a kernel (``OPENBLAS_CORETYPE``: some machines set it for old
    OpenBLAS builds, and it slows a current one; unset it, with ``OPENBLAS_L2_SIZE``, to benchmark)."""
    import os

    import numpy as np
    import threadpoolctl

    np.ones(1) @ np.ones(1)  # load the library
    libs = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    text = ", ".join(f"{i['internal_api']} {i.get('version')} ({i.get('architecture')} kernels, {i['num_threads']} threads)"
                     for i in libs) or "none found"
    forced = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    return f"NumPy's BLAS: {text}" + (f"; forced by the environment: {forced}" if forced else "")
