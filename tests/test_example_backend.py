"""The example third-party backend in docs/example_backend/ passes the conformance suite.

It runs exactly what a third party's CI runs, ``python -m pytest --pyargs
alexnet_aa.testing.conformance --alexnet-backend example --alexnet-xfails
xfails.txt``, in a subprocess. Nothing is installed: the example's entry point
is registered by a ``.dist-info`` folder written from its own ``pyproject.toml``
into a temporary directory on ``PYTHONPATH`` (that is all ``pip install`` does
for entry points), so the test cannot drift from the example's packaging.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "example_backend"

tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python >= 3.11")
pytest.importorskip("array_api_strict", reason="the example backend wraps array-api-strict")


def _register(pyproject: Path, into: Path) -> dict[str, str]:
    """Write ``<name>-<version>.dist-info`` with the project's entry points; return the backends."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    dist = into / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n", encoding="utf-8"
    )
    lines = []
    for group, eps in project["entry-points"].items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in eps.items()]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return project["entry-points"]["alexnet_aa.backends"]


@pytest.fixture(scope="module")
def example_env(tmp_path_factory) -> dict[str, str]:
    site = tmp_path_factory.mktemp("site")
    assert _register(EXAMPLE / "pyproject.toml", site) == {"example": "alexnet_aa_example:ExampleBackend"}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(EXAMPLE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("ALEXNET_AA_BACKEND", None)
    return env


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_example_backend_is_registered(example_env, tmp_path):
    code = (
        "from alexnet_aa import get_backend, registered_backends\n"
        "assert 'example' in registered_backends(), registered_backends()\n"
        "b = get_backend('example')\n"
        "print(type(b).__module__, b.layout, sorted(b.describe()))\n"
    )
    result = _run(["-c", code], example_env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("alexnet_aa_example NCHW")


def test_example_backend_passes_the_conformance_suite(example_env, tmp_path):
    """The documented CI command, run from outside the repository (no project ini, no conftest)."""
    result = _run(
        ["-m", "pytest", "--pyargs", "alexnet_aa.testing.conformance", "--alexnet-backend", "example",
         "--alexnet-xfails", str(EXAMPLE / "xfails.txt"), "-q", "-p", "no:cacheprovider"],
        example_env, tmp_path,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|xfailed|xpassed|skipped|errors?)\b", out.splitlines()[-1])}
    assert counts.get("passed", 0) > 50 and set(counts) <= {"passed", "xfailed"}, out.splitlines()[-1]
    assert counts.get("xfailed") == 2, "the xfails file's pattern should match the two even-size LRN cases"
    assert "matches no test" not in out, "a stale xfails entry"
    assert "example lrn" in out and "example network" in out, "the suite's error table is missing"
