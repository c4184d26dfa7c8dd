"""The conformance suite itself: it fails a wrong backend, saying by how much, and its xfails file works."""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest


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
    # the op layer checks every shape a backend returns (numpy's native layout is NHWC)
    assert "[max_pool2d] the 'numpy' backend returned shape (2, 26, 26, 3), expected (2, 27, 27, 3)" in out.stdout


def test_xfails_file(tmp_path):
    xfails = tmp_path / "xfails.txt"
    xfails.write_text("test_lrn[numpy-size4-even  # our LRN rounds even windows differently\nno_such_test  # stale entry\n")
    out = _pytest(tmp_path, BROKEN.replace("{BROKEN}", "OneChannelShort"), "-k", "lrn", "--alexnet-xfails", str(xfails))
    assert "xfailed" in out.stdout and "matches no test" in out.stdout + out.stderr
    xfails.write_text("test_lrn\n")
    out = _pytest(tmp_path, BROKEN.replace("{BROKEN}", "OneChannelShort"), "--alexnet-xfails", str(xfails))
    assert out.returncode != 0 and "needs a reason" in out.stdout + out.stderr


def test_shipped_xfails_apply_to_their_backend_only(tmp_path):
    """A backend's conformance-xfails.txt, beside its module, marks its own tests, not another backend's."""
    pkg = tmp_path / "pkg" / "shipped_backend"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        from alexnet_aa_numpy import NumpyBackend

        class Shipped(NumpyBackend):
            '''Its size-3 LRN window is one channel short: the exception its xfails file documents.'''
            name = "shipped"

            def lrn(self, x, size, alpha, beta, k):
                return super().lrn(x, 2 if size == 3 else size, alpha, beta, k)
    """))
    (pkg / "conformance-xfails.txt").write_text("test_lrn*size3-*  # an exception documented by this backend\n")
    dist = tmp_path / "pkg" / "shipped_backend-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shipped-backend\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[alexnet_aa.backends]\nshipped = shipped_backend:Shipped\n")
    report = tmp_path / "report.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "pkg"), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--pyargs", "alexnet_aa.testing.conformance",
         "--alexnet-backend", "shipped,numpy", "-k", "test_lrn and not backward", "--alexnet-report", str(report), "-rx"],
        capture_output=True, text=True, cwd=tmp_path, env=env,
    )
    assert out.returncode == 0, out.stdout[-3000:]
    assert "expected failures from" in out.stdout and "conformance-xfails.txt" in out.stdout  # the header says so
    xfailed = re.findall(r"XFAIL \S*::test_lrn\[(\S+?)\]", out.stdout)
    assert sorted(xfailed) == ["shipped-size3-N3-C16-contiguous", "shipped-size3-N3-C16-strided"], out.stdout[-2000:]
    backends = json.loads(report.read_text())["backends"]
    assert backends["shipped"]["outcomes"] == {"passed": 12, "xfailed": 2}
    assert backends["numpy"]["outcomes"] == {"passed": 14} and backends["numpy"]["xfails_file"] is None
    assert backends["shipped"]["xfails_file"].endswith("shipped_backend/conformance-xfails.txt")
    assert backends["shipped"]["checks"]["lrn"]["xfailed"] == 2 and backends["shipped"]["checks"]["lrn"]["cases"] == 12
    numpy_lrn = backends["numpy"]["checks"]["lrn"]
    assert (numpy_lrn["cases"], numpy_lrn["failed"], numpy_lrn["xfailed"]) == (14, 0, 0)
    assert numpy_lrn["max_error"] <= numpy_lrn["tolerance"] == 1e-5


def test_xfails_patterns_take_brackets_literally(tmp_path):
    """An exact test id as a pattern marks that test only (brackets are not a character class)."""
    xfails = tmp_path / "xfails.txt"
    xfails.write_text("test_lrn[numpy-size4-even-strided]  # one case\n")
    out = _pytest(tmp_path, BROKEN.replace("{BROKEN}", "OneChannelShort"), "-k", "lrn", "--alexnet-xfails", str(xfails), "-rx")
    assert re.findall(r"XFAIL \S*::test_lrn\[(\S+?)\]", out.stdout) == ["numpy-size4-even-strided"], out.stdout[-2000:]


SEEDED = """
    def test_draw(case_rng):
        print("drawn", case_rng.standard_normal(3).tolist())
"""


def test_a_seed_reproduces_a_case_wherever_the_suite_lies(tmp_path):
    """The per-case generator and the xfails patterns see the test id without the file's path: the same
    ``--alexnet-seed`` draws the same data from another folder, and the file's name matches no pattern."""
    draws = []
    for folder in ("here", "elsewhere/deeper"):
        where = tmp_path / folder
        where.mkdir(parents=True)
        xfails = where / "xfails.txt"
        xfails.write_text("test_case.py  # the file's path is not part of the test id\n")
        out = _pytest(where, SEEDED, "-s", "--alexnet-seed", "7", "--alexnet-xfails", str(xfails))
        assert out.returncode == 0 and out.stdout.splitlines()[-1].startswith("1 passed"), out.stdout[-2000:]
        assert "matches no test" in out.stdout + out.stderr
        draws.append(re.search(r"drawn (\[.*?\])", out.stdout).group(1))
    assert draws[0] == draws[1]


NAN_POOL = """
    import numpy as np
    import pytest
    from alexnet_aa_numpy import NumpyBackend

    class NaNPool(NumpyBackend):
        '''A NaN in every pool output; every convolution off by 1e-3.'''
        def max_pool2d(self, x, kernel, stride, ceil_mode):
            y = super().max_pool2d(x, kernel, stride, ceil_mode)
            y[0, 0, 0, 0] = np.nan
            return y

        def conv2d(self, x, w, b, stride, padding, groups, relu):
            return super().conv2d(x, w, b, stride, padding, groups, relu) * np.float32(1 + 1e-3)

    @pytest.fixture(scope="session")
    def alexnet_backend(request):
        return NaNPool()

    from alexnet_aa.testing.conformance import test_conv2d_shape_space, test_max_pool2d  # noqa: E402,F401
"""


def test_report_after_failures_is_strict_json_and_counts_tests(tmp_path):
    """A NaN mismatch has no finite error: the report says null (valid JSON); its failed counts are
    the failed tests (Hypothesis's replays of one failing example count once)."""
    report = tmp_path / "report.json"
    out = _pytest(tmp_path, NAN_POOL, "--alexnet-report", str(report))
    assert out.returncode == 1
    data = json.loads(report.read_text(), parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    numpy = data["backends"]["numpy"]
    pool = numpy["checks"]["max_pool2d"]
    assert (pool["cases"], pool["failed"], pool["max_error"]) == (28, 28, None)
    assert numpy["checks"]["conv2d"]["failed"] == 1, "one failing Hypothesis test, however often it replays"
    assert numpy["outcomes"] == {"failed": 29}


def test_unsupported_capability_is_a_skip_with_the_reason(tmp_path):
    out = _pytest(tmp_path, """
        import pytest
        from alexnet_aa_numpy import NumpyBackend

        class NoCeil(NumpyBackend):
            unsupported = {"ceil_mode": "this backend rounds down only"}

        @pytest.fixture(scope="session")
        def alexnet_backend(request):
            return NoCeil()

        from alexnet_aa.testing.conformance import test_max_pool2d, test_network  # noqa: E402,F401
    """, "-rs")
    assert out.returncode == 0, out.stdout[-3000:]
    # 54 and 56 (and 13x14, k2s2-odd, k3s3) differ in ceil mode; 55, the canonical network sizes and the
    # ablated networks at 99 (23 → 11 → 5 → 2, or Caffe's 23 → 11 → 5 → 2 as well) agree
    assert "does not support ceil_mode=True where it differs from floor mode (54x54 → 27x27): this backend rounds down only" in out.stdout
    counts = dict((k, int(n)) for n, k in re.findall(r"(\d+) (passed|skipped|failed)", out.stdout.splitlines()[-1]))
    assert counts == {"passed": 25, "skipped": 10}, out.stdout.splitlines()[-1]
