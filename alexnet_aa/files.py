"""Writing files so that readers see the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def _umask() -> int:
    """The process's umask, read without changing it (Linux's /proc), else the usual 0o022."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file of its own beside ``path`` (``<name>.<random>.partial``) for writing, and
    rename it over ``path`` when the block ends without an exception; on one (``KeyboardInterrupt``
    included) remove it and leave ``path`` as it was. Two writers never share a temporary file: the
    last rename wins, whole. The data is ``fsync``'d before the rename and the folder after it (a
    power cut then leaves the old file or the new one), and the file gets the mode ``open()`` would
    give it (``mkstemp``'s ``0600`` would survive the rename).
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".partial")
    tmp = Path(name)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # what open() would have made, not mkstemp's 0600
            yield f
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where folders can be opened: not on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
