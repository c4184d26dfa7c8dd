"""Writing files so that readers see the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file of its own beside ``path`` (``<name>.<random>.partial``) for writing, and
    rename it over ``path`` when the block ends without an exception; on one (``KeyboardInterrupt``
    included) remove it and leave ``path`` as it was. Two writers never share a temporary file: the
    last rename wins, whole. The data is ``fsync``'d before the rename, and the file made ``0644``
    (``mkstemp``'s ``0600`` would survive the rename).
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".partial")
    tmp = Path(name)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            os.fchmod(f.fileno(), 0o644)
            yield f
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
