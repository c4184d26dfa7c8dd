"""The conformance suite itself: it fails a wrong backend, saying by how much, and its xfails file works."""

import subprocess
import sys
import textwrap


def _pytest(tmp_path, source: str, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_case.py").write_text(textwrap.dedent(source))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--alexnet-backend", "numpy", *args, str(tmp_path / "test_case.py")],
        capture_output=True, text=True, cwd=tmp_path,
    )


BROKEN = """
    import pytest
    from alexnet_aa_numpy import NumpyBackend

    class OneChannelShort(NumpyBackend):
        '''Chainer's old LRN bug: a window one channel too small.'''
        def lrn(self, x, size, alpha, beta, k):
            return super().lrn(x, max(1, size - 1), alpha, beta, k)

    class CeilIgnored(NumpyBackend):
        def max_pool2d(self, x, kernel, stride, ceil_mode):
            return super().max_pool2d(x, kernel, stride, False)

    @pytest.fixture(scope="session")
    def alexnet_backend(request):
        return {BROKEN}()

    from alexnet_aa.testing.conformance import test_lrn, test_max_pool2d  # noqa: E402,F401
"""


def test_lrn_window_bug_is_caught(tmp_path):
    out = _pytest(tmp_path, BROKEN.replace("{BROKEN}", "OneChannelShort"), "-k", "lrn")
    assert out.returncode == 1, out.stdout
    assert "[lrn] backend=numpy dtype=float32" in out.stdout and "relative L2 error" in out.stdout
    assert "size1" not in out.stdout.split("short test summary")[-1], "size 1 has no window to get wrong"


def test_ceil_mode_bug_is_caught(tmp_path):
    out = _pytest(tmp_path, BROKEN.replace("{BROKEN}", "CeilIgnored"), "-k", "max_pool2d and ceil")
    assert out.returncode == 1
    assert "out.shape=(2, 3, 26, 26), but should be (2, 3, 27, 27)" in out.stdout


def test_xfails_file(tmp_path):
    xfails = tmp_path / "xfails.txt"
    xfails.write_text("test_lrn[numpy-size4-even  # our LRN rounds even windows differently\nno_such_test  # stale entry\n")
    out = _pytest(tmp_path, BROKEN.replace("{BROKEN}", "OneChannelShort"), "-k", "lrn", "--alexnet-xfails", str(xfails))
    assert "xfailed" in out.stdout and "matches no test" in out.stdout + out.stderr
    xfails.write_text("test_lrn\n")
    out = _pytest(tmp_path, BROKEN.replace("{BROKEN}", "OneChannelShort"), "--alexnet-xfails", str(xfails))
    assert out.returncode != 0 and "needs a reason" in out.stdout + out.stderr
