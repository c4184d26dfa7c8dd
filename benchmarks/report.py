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
