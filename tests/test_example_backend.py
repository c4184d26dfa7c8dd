"""A backend from outside the core passes the conformance suite with nothing but the core installed.

The example third-party backend in ``docs/example_backend/`` runs exactly what a
third party's CI runs, ``python -m pytest --pyargs alexnet_aa.testing.conformance
--alexnet-backend example --alexnet-report report.json``, in a subprocess whose
Python sees **only** the core (``alexnet_aa``), the example, and the
distributions they and the test tools need: ``python -S`` (no site-packages, so
none of this project's other backends, nor anything else installed here) with a
``PYTHONPATH`` folder built from links to those packages. Entry points come from
``.dist-info`` folders — the installed ones of the dependencies, and ones written
from the core's and the example's own ``pyproject.toml`` (that is all ``pip
install`` does for entry points) — so the test cannot drift from the packaging.
"""

from __future__ import annotations

import importlib.metadata as md
import json
from collections import Counter
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "example_backend"

from alexnet_aa.testing.conformance import NETWORK_CASES
from alexnet_aa.testing.dist_info import write_dist_info

pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python >= 3.11")
pytest.importorskip("array_api_strict", reason="the example backend wraps array-api-strict")
from packaging.requirements import Requirement  # noqa: E402  (pytest's own dependency)
from packaging.utils import canonicalize_name  # noqa: E402

#: What a backend author's CI installs besides their backend: the core's dependencies, the suite's
#: test tools, and the example's own dependency.
NEEDED = ("numpy", "array-api-compat", "pytest", "hypothesis", "array-api-strict")


def _closure(names: tuple[str, ...]) -> dict[str, md.Distribution]:
    """The installed distributions ``names`` need (their requirements, markers evaluated here)."""
    seen: dict[str, md.Distribution] = {}
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen[name] = dist = md.distribution(name)
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def _link_distribution(dist: md.Distribution, into: Path) -> None:
    """Link every top-level file and folder of ``dist`` (packages, shared libraries, dist-info) into ``into``."""
    tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
    for top in tops - {"__pycache__"}:
        source = Path(dist.locate_file(top))
        if source.exists() and not (into / top).exists():
            (into / top).symlink_to(source)


@pytest.fixture(scope="module")
def core_only_env(tmp_path_factory) -> dict[str, str]:
    """Environment variables for ``python -S``: the core, the example and their dependencies, nothing else."""
    site = tmp_path_factory.mktemp("site")
    for dist in _closure(NEEDED).values():
        _link_distribution(dist, site)
    (site / "alexnet_aa").symlink_to(ROOT / "alexnet_aa")
    (site / "alexnet_aa_example").symlink_to(EXAMPLE / "alexnet_aa_example")
    core = write_dist_info(ROOT / "pyproject.toml", site)
    assert core["alexnet_aa.backends"] == {"array-api": "alexnet_aa.reference:ArrayAPIBackend"}
    assert write_dist_info(EXAMPLE / "pyproject.toml", site)["alexnet_aa.backends"] == {"example": "alexnet_aa_example:ExampleBackend"}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "ALEXNET_AA"))}
    env.update(PYTHONPATH=str(site), PYTHONNOUSERSITE="1")
    return env


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-S", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_only_the_core_and_the_example_are_there(core_only_env, tmp_path):
    code = (
        "import importlib.util, alexnet_aa\n"
        "print(sorted(alexnet_aa.registered_backends()))\n"
        "print([m for m in ('alexnet_aa_numpy', 'alexnet_aa_mlx', 'alexnet_aa_cupy', 'mlx', 'cupy', 'torch')"
        " if importlib.util.find_spec(m)])\n"
        "b = alexnet_aa.get_backend('example')\n"
        "print(type(b).__module__, b.layout, sorted(b.describe()))\n"
    )
    result = _run(["-c", code], core_only_env, tmp_path)
    assert result.returncode == 0, result.stderr
    backends, importable, example = result.stdout.splitlines()
    assert backends == "['array-api', 'example']", "our other plugins must be hidden"
    assert importable == "[]", f"visible although not installed in this environment: {importable}"
    assert example.startswith("alexnet_aa_example NCHW")


#: The run's seed: this test counts outcomes exactly, and a fresh seed can hide the example's known LRN gap
#: (about one run in a hundred puts the second NaN of ``test_nonfinite[example-lrn-nan]`` in the window of
#: every channel the first one's running sum spoils, so the case passes). Fresh data is the other runs' job.
SEED = 20261202


def test_example_backend_passes_the_conformance_suite(core_only_env, tmp_path):
    """The documented CI command, run from outside the repository (no project ini, no conftest)."""
    report = tmp_path / "conformance.json"
    result = _run(
        ["-m", "pytest", "--pyargs", "alexnet_aa.testing.conformance", "--alexnet-backend", "example",
         "--alexnet-report", str(report), "--junitxml", str(tmp_path / "junit.xml"), "-q", "-p", "no:cacheprovider",
         "-rsxX", "--alexnet-seed", str(SEED)],
        core_only_env, tmp_path,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|xfailed|xpassed|skipped|errors?)\b", out.splitlines()[-1])}
    assert counts.get("passed", 0) > 100 and set(counts) <= {"passed", "xfailed", "skipped"}, out[-3000:]
    skips = Counter()
    for n, reason in re.findall(r"SKIPPED \[(\d+)\] \S+: (.*)", out):
        skips["even LRN" if "does not support an even window size" in reason else
              "inference only" if "cannot train (inference only)" in reason else reason] += int(n)
    assert skips["even LRN"] == 2, "the example declares even LRN sizes unsupported: its two size4-even cases skip"
    assert skips["inference only"] == counts["skipped"] - 2 > 50, (
        "the example has no backward ops: every gradient case is a skip naming the missing ops", skips)
    assert counts.get("xfailed") == 3 and "difference of cumulative sums" in out, (
        "the example's shipped conformance-xfails.txt should match its three non-finite LRN cases")
    assert "matches no test" not in out, "a stale xfails entry"
    assert "example lrn" in out and "example network" in out, "the suite's error table is missing"

    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["format"] == "alexnet_aa.conformance-report/1" and data["seed"] == SEED
    entry = data["backends"]["example"]
    assert entry["class"] == "alexnet_aa_example.ExampleBackend" and entry["linear_weight_layout"] == "IO"
    assert entry["unsupported"] == {"lrn_even_size": "its LRN window is symmetric (radius size // 2): odd sizes only"}
    assert entry["xfails_file"].endswith("alexnet_aa_example/conformance-xfails.txt")
    assert entry["outcomes"] == {"passed": counts["passed"], "skipped": counts["skipped"], "xfailed": 3}
    checks = entry["checks"]
    assert {"conv2d", "max_pool2d", "lrn", "linear", "network", "network-float64", "predict"} <= set(checks)
    for name, check in checks.items():  # the xfailed cases are counted apart, not in the largest error
        assert check["failed"] == 0 and check["max_error"] <= check["tolerance"], (name, check)
    assert checks["lrn"]["xfailed"] == 3 and checks["network"]["cases"] == len(NETWORK_CASES)
    assert (tmp_path / "junit.xml").read_text(encoding="utf-8").count("<testcase") == sum(counts.values())
