"""Downloading published weights, with integrity, into a cache.

``alexnet-aa weights download torchvision`` (or :func:`download`) fetches
torchvision's ``alexnet-owt-7be5be79.pth`` with ``urllib`` only, streams it to
a temporary file of its own in the cache, verifies its size and full SHA-256 against the
constants of :class:`alexnet_aa.bundles.AlexNetWeights`, converts it to the
project's ``.safetensors`` (canonical names, variant and preprocessing in the
metadata) and keeps only that file. A wrong digest, a short read or any
error deletes the partial file and raises :class:`DownloadError`; nothing
half-written is ever left under a final name.

Environment:

``ALEXNET_AA_CACHE``
    the cache directory (default ``~/.cache/alexnet_aa``).
``ALEXNET_AA_WEIGHTS_URL``
    download from this URL instead of the published one (a mirror); the file
    must still have the published digest.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from .bundles import AlexNetWeights
from .weights import WeightsError

CACHE_ENV = "ALEXNET_AA_CACHE"
URL_ENV = "ALEXNET_AA_WEIGHTS_URL"
_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download that failed or did not verify; no file is left behind."""


def cache_dir() -> Path:
    """``$ALEXNET_AA_CACHE``, else ``~/.cache/alexnet_aa``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "alexnet_aa").expanduser()


def cached_path(bundle: AlexNetWeights | str = "torchvision", cache: str | os.PathLike | None = None) -> Path:
    """Where :func:`download` keeps ``bundle``'s converted weights."""
    bundle = AlexNetWeights.get(bundle) if isinstance(bundle, str) else bundle
    stem = Path(bundle.file_name or bundle.name.lower()).stem
    return Path(cache or cache_dir()) / f"{stem}.safetensors"


def _progress_bar(total: int | None, desc: str, enabled: bool | None):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, file=sys.stderr)


#: A download with no published size and no Content-Length stops at this many bytes.
MAX_DOWNLOAD_BYTES = 2 * 1024**3


def fetch(url: str, dest: str | os.PathLike, sha256: str | None, *, size: int | None = None,
          sha256_prefix: str | None = None, timeout: float = 60.0, deadline: float = 3600.0,
          max_bytes: int = MAX_DOWNLOAD_BYTES, progress: bool | None = None) -> Path:
    """Stream ``url`` to ``dest`` through a temporary file of its own, verifying length and digest.

    ``sha256`` is the full hex digest to match; when only a prefix is known
    (the 8 hex digits of a torch hub file name) pass ``sha256_prefix`` instead.
    ``timeout`` bounds each read, ``deadline`` the whole download (a server
    that drips bytes is cut off), and the length is capped at the published
    ``size``, else at ``max_bytes`` (an announced Content-Length above it is
    refused before anything is written). The
    digest is computed over the bytes on disk after ``fsync``, then the file
    is renamed to ``dest``: concurrent downloads of one file each verify their
    own copy, and the last rename wins, whole. On any failure the temporary
    file is deleted and :class:`DownloadError` raised.
    """
    dest = Path(dest)
    if not sha256 and not sha256_prefix:
        raise ValueError("refusing to download without a digest to verify (sha256 or sha256_prefix)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    received, started = 0, time.monotonic()
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".partial")
    partial = Path(name)
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "alexnet-aa"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as response:
            header = response.headers.get("Content-Length")
            expected = int(header) if header and header.isdigit() else None
            if size is not None and expected is not None and expected != size:
                raise DownloadError(f"{url}: the server announces {expected:,} bytes, the published file has {size:,}")
            limit = size if size is not None else min(expected, max_bytes) if expected is not None else max_bytes
            if expected is not None and expected > limit:
                raise DownloadError(f"{url}: the server announces {expected:,} bytes, more than the {limit:,} allowed")
            bar = _progress_bar(expected or size, dest.name, progress)
            try:
                while True:
                    chunk = response.read1(_CHUNK)  # what has arrived: the deadline is checked between reads
                    if not chunk:
                        break
                    out.write(chunk)
                    received += len(chunk)
                    if received > limit:
                        raise DownloadError(f"{url}: more than the {limit:,} bytes expected: stopped")
                    if time.monotonic() - started > deadline:
                        raise DownloadError(f"{url}: not finished within {deadline:g} s ({received:,} bytes): stopped")
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
            out.flush()
            os.fsync(out.fileno())
        # http.client returns b"" at an early EOF instead of raising: check the length ourselves.
        want = expected if expected is not None else size
        if want is not None and received != want:
            raise DownloadError(f"{url}: connection closed after {received:,} of {want:,} bytes (download incomplete)")
        got = _sha256_of(partial)
        if sha256 and got != sha256.lower():
            raise DownloadError(f"{url}: SHA-256 mismatch: expected {sha256.lower()}, got {got}; the file was deleted")
        if sha256_prefix and not got.startswith(sha256_prefix.lower()):
            raise DownloadError(f"{url}: SHA-256 {got} does not start with {sha256_prefix.lower()}; the file was deleted")
        os.replace(partial, dest)
        return dest
    except DownloadError:
        partial.unlink(missing_ok=True)
        raise
    except (urllib.error.URLError, OSError, ValueError) as exc:  # includes HTTPError, timeouts, IncompleteRead
        partial.unlink(missing_ok=True)
        if isinstance(exc, urllib.error.HTTPError):
            reason = f"HTTP {exc.code} {exc.reason}"
        else:
            reason = getattr(exc, "reason", None) or exc
        raise DownloadError(f"{url}: download failed after {received:,} bytes: {reason}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _sha256_of(path: Path) -> str:
    """The SHA-256 of the bytes in ``path``, as read back from the disk."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download(bundle: AlexNetWeights | str = "torchvision", *, url: str | None = None, sha256: str | None = None,
             cache: str | os.PathLike | None = None, force: bool = False, timeout: float = 60.0,
             progress: bool | None = None) -> Path:
    """Fetch, verify, convert and cache ``bundle``'s weights; return the ``.safetensors`` path.

    ``url`` (default ``$ALEXNET_AA_WEIGHTS_URL``, else the published URL)
    replaces the source; ``sha256`` (default: the published digest) the digest
    the file must have. An existing cached file is reused unless ``force``.
    """
    from .importers import convert  # imports torch (when installed) only when converting

    bundle = AlexNetWeights.get(bundle) if isinstance(bundle, str) else bundle
    if bundle.url is None or (bundle.sha256 is None and sha256 is None):
        raise DownloadError(
            f"{bundle.name}: no pinned download (no published SHA-256 to verify); "
            "import a copy you trust with `alexnet-aa weights import`"
        )
    target = cached_path(bundle, cache)
    if target.exists() and not force:
        return target
    source = url or os.environ.get(URL_ENV) or bundle.url
    digest = sha256 or bundle.sha256
    size = bundle.file_size if sha256 is None else None  # a caller's own digest is for its own file
    # the raw file under a name of this download's own, converted from the bytes it verified; the
    # converted file is renamed into the cache whole (save_weights): concurrent downloads never mix
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=target.name + ".") as own:
        raw = Path(own) / (bundle.file_name or target.stem + ".pth")
        fetch(source, raw, digest, size=size, timeout=timeout, progress=progress)
        try:
            convert(raw, target, bundle.variant, extra_metadata={"alexnet_aa.bundle": bundle.name, "alexnet_aa.url": source})
        except WeightsError as exc:
            raise DownloadError(f"{source}: downloaded and verified, but the conversion failed: {exc}") from None
    return target
