"""The download path against a real HTTP server on 127.0.0.1: good, tampered, dropped."""

from __future__ import annotations

import hashlib
import http.server
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from alexnet_aa.architecture import get_architecture, param_shapes
from alexnet_aa.cli import main
from alexnet_aa.download import DownloadError, cached_path, download, fetch
from alexnet_aa.bundles import AlexNetWeights
from alexnet_aa.importers import TORCHVISION_NAMES
from alexnet_aa.preprocess import Preprocess, torchvision_preprocess
from alexnet_aa.weights import PREPROCESS_KEY, VARIANT_KEY, read_weights_file

torch = pytest.importorskip("torch")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    routes: dict[str, tuple[bytes, str]] = {}

    def do_GET(self):  # noqa: N802
        if self.path not in self.routes:
            self.send_error(404)
            return
        body, mode = self.routes[self.path]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if mode == "nolength":  # no Content-Length: the body ends when the connection does
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "drop":  # announce everything, send a third, hang up
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            self.close_connection = True
            return
        if mode in ("slow", "drip"):  # slow: 8 pieces over ~0.4 s; drip: a byte every 50 ms, for ever
            step = max(1, len(body) // 8) if mode == "slow" else 1
            for i in range(0, len(body), step):
                try:
                    self.wfile.write(body[i:i + step])
                    self.wfile.flush()
                except OSError:  # the client gave up
                    return
                time.sleep(0.05)
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler.routes
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def pth_bytes(tmp_path_factory):
    """A real torchvision-format state dict (random weights of the right shapes), as bytes."""
    rng = np.random.default_rng(3)
    inverse = {v: k for k, v in TORCHVISION_NAMES.items()}
    sd = {inverse[n]: torch.from_numpy(rng.random(s, dtype=np.float32) - 0.5) for n, s in param_shapes(get_architecture("torchvision")).items()}
    path = tmp_path_factory.mktemp("served") / "alexnet-owt-test.pth"
    torch.save(sd, path)
    return path.read_bytes(), sd


def _left(cache) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_good_download_is_verified_converted_and_cached(server, pth_bytes, tmp_path):
    base, routes = server
    body, sd = pth_bytes
    routes["/good.pth"] = (body, "ok")
    digest = hashlib.sha256(body).hexdigest()
    cache = tmp_path / "cache"
    path = download("torchvision", url=f"{base}/good.pth", sha256=digest, cache=cache, progress=False)
    assert path == cached_path("torchvision", cache) and _left(cache) == [path.name]  # no .partial, no .pth
    tensors, meta = read_weights_file(path)
    assert np.array_equal(tensors["fc8.weight"], sd["classifier.6.weight"].numpy())
    assert meta[VARIANT_KEY] == "torchvision" and meta["alexnet_aa.source_sha256"] == digest
    assert Preprocess.from_json(meta[PREPROCESS_KEY]) == torchvision_preprocess()
    del routes["/good.pth"]  # cached: no second request
    assert download("torchvision", url=f"{base}/good.pth", sha256=digest, cache=cache) == path


def test_tampered_file_is_deleted(server, tmp_path):
    base, routes = server
    body = b"\x00" * 4096 + b"tampered"
    routes["/tampered.pth"] = (body, "ok")
    good = hashlib.sha256(b"\x00" * 4096 + b"original").hexdigest()
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        download("torchvision", url=f"{base}/tampered.pth", sha256=good, cache=cache, progress=False)
    assert _left(cache) == []


def test_dropped_connection_leaves_nothing(server, tmp_path):
    base, routes = server
    body = bytes(range(256)) * 4096  # 1 MiB
    routes["/drop.bin"] = (body, "drop")
    dest = tmp_path / "d" / "file.bin"
    with pytest.raises(DownloadError, match=r"connection closed after [\d,]+ of 1,048,576 bytes"):
        fetch(f"{base}/drop.bin", dest, hashlib.sha256(body).hexdigest(), timeout=10, progress=False)
    assert _left(dest.parent) == []


def test_missing_file_is_a_clear_error(server, tmp_path):
    base, _ = server
    with pytest.raises(DownloadError, match="404"):
        fetch(f"{base}/nothing.pth", tmp_path / "x", "0" * 64, timeout=10)
    assert _left(tmp_path) == []


def test_cli_download_uses_env_url_and_the_published_digest(server, tmp_path, monkeypatch, capsys):
    base, routes = server
    routes["/mirror/alexnet-owt-7be5be79.pth"] = (b"not the published file", "ok")
    monkeypatch.setenv("ALEXNET_AA_WEIGHTS_URL", f"{base}/mirror/alexnet-owt-7be5be79.pth")
    monkeypatch.setenv("ALEXNET_AA_CACHE", str(tmp_path / "envcache"))
    assert main(["weights", "download", "torchvision", "--no-progress"]) == 2
    err = capsys.readouterr().err
    # the mirror's Content-Length already differs from the published file's size
    assert "alexnet-aa weights download: error" in err and "244,408,911" in err
    assert _left(tmp_path / "envcache") == []


def test_published_digest_constant():
    bundle = AlexNetWeights.get("torchvision")
    assert bundle.sha256 == "7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02"
    assert bundle.file_size == 244_408_911
    assert bundle.url == "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"


def test_bundle_without_a_pinned_digest_is_not_downloaded(tmp_path):
    with pytest.raises(DownloadError, match="no pinned download"):
        download("caffe", cache=tmp_path)


def test_concurrent_downloads_into_one_cache_each_verify_their_own_bytes(server, pth_bytes, tmp_path):
    """Two downloads of one bundle at once (the old fixed ``.partial`` name let one report success
    over a file holding a mix of both): each writes its own temporary file, verifies the bytes on
    disk and converts its own copy; the cache ends with one whole, verified file."""
    base, routes = server
    body, sd = pth_bytes
    routes["/slow.pth"] = (body, "slow")
    digest = hashlib.sha256(body).hexdigest()
    cache = tmp_path / "cache"
    with ThreadPoolExecutor(2) as pool:
        paths = list(pool.map(lambda _: download("torchvision", url=f"{base}/slow.pth", sha256=digest, cache=cache,
                                                 force=True, progress=False), range(2)))
    assert paths[0] == paths[1] == cached_path("torchvision", cache) and _left(cache) == [paths[0].name]
    tensors, meta = read_weights_file(paths[0])
    assert meta["alexnet_aa.source_sha256"] == digest
    assert all(np.array_equal(tensors[TORCHVISION_NAMES[k]], v.numpy()) for k, v in sd.items())


def test_a_dripping_server_is_cut_off_at_the_deadline(server, tmp_path):
    base, routes = server
    routes["/drip.bin"] = (b"x" * 10_000, "drip")
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"not finished within 0.5 s"):
        fetch(f"{base}/drip.bin", tmp_path / "f.bin", "0" * 64, timeout=5, deadline=0.5, progress=False)
    assert time.monotonic() - start < 5 and _left(tmp_path) == []


@pytest.mark.parametrize("mode, message", [
    ("nolength", r"more than the 100,000 bytes expected"),  # a body without a length: capped while read
    ("ok", r"announces 300,000 bytes, more than the 100,000 allowed"),  # an announced length: refused before writing
], ids=["without-a-length", "announced"])
def test_a_body_above_the_cap_is_refused(server, tmp_path, mode, message):
    base, routes = server
    routes["/big.bin"] = (b"z" * 300_000, mode)
    with pytest.raises(DownloadError, match=message):
        fetch(f"{base}/big.bin", tmp_path / "f.bin", "0" * 64, timeout=5, max_bytes=100_000, progress=False)
    assert _left(tmp_path) == []
