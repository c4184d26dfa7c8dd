"""pytest plugin of the conformance suite (registered through the ``pytest11`` entry point).

Options:

``--alexnet-backend SPEC[,SPEC…]``
    the backends to test; a spec is a registered name with optional
    constructor options, ``array-api[namespace=array_api_strict]``. Default:
    ``$ALEXNET_AA_BACKEND``, else the ``alexnet_backends`` ini list, where
    ``all`` stands for every registered backend. An unavailable backend is
    skipped with its reason.
``--alexnet-seed N``
    the run's seed (default: drawn fresh, printed in the header).
``--alexnet-xfails FILE``
    expected failures, one per line: a pattern matched against test ids
    (``fnmatch``), then ``#`` and the reason, which is required. Patterns
    that match no test are reported as stale.

Fixtures: ``alexnet_backend`` (parametrized over the chosen backends),
``case_rng`` and ``conformance_record``. At the end of the run, a table of
the largest measured error per backend and check is printed.
"""

from __future__ import annotations

import ast
import fnmatch
import os
import re
import secrets
import warnings
import zlib
from collections import defaultdict

import numpy as np
import pytest

from ..backend import BackendError, backend_class, get_backend, registered_backends

_STATE: dict = {"errors": defaultdict(list), "instances": {}}


def pytest_addoption(parser):
    group = parser.getgroup("alexnet_aa", "alexnet_aa conformance suite")
    group.addoption("--alexnet-backend", default=os.environ.get("ALEXNET_AA_BACKEND", ""),
                    help="comma-separated backends to test (default: $ALEXNET_AA_BACKEND, else all registered)")
    group.addoption("--alexnet-seed", type=int, default=None, help="seed of this run's random cases (default: fresh)")
    parser.addini("alexnet_backends", type="linelist", default=[],
                  help="backend specs tested by default ('all' = every registered backend)")
    group.addoption("--alexnet-xfails", default=None, help="file of expected failures: 'pattern  # reason' per line")


_SPEC = re.compile(r"\s*([\w.-]+)(?:\[([^\]]*)\])?\s*(?:,|$)")


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"array-api[namespace=array_api_strict,dtype=float32]"`` → ``("array-api", {...})``."""
    m = re.fullmatch(r"([\w.-]+)(?:\[([^\]]*)\])?", spec.strip())
    if not m:
        raise pytest.UsageError(f"bad backend spec {spec!r}: expected NAME or NAME[key=value,...]")
    options = {}
    for kv in (m.group(2) or "").split(","):
        if "=" in kv:
            key, value = (part.strip() for part in kv.split("=", 1))
            try:  # numbers, True/False/None as Python literals; anything else stays a string
                options[key] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                options[key] = value
    return m.group(1), options


def _seed(config) -> int:
    seed = config.getoption("--alexnet-seed", default=None)
    if seed is None:
        seed = config.__dict__.setdefault("_alexnet_seed", secrets.randbits(32))
    return seed


def _selected(config) -> list[str]:
    given = config.getoption("--alexnet-backend")
    if given:
        chosen = [m.group(0).strip().rstrip(",").strip() for m in _SPEC.finditer(given) if m.group(1)]
    else:
        chosen = config.getini("alexnet_backends") or ["all"]
    specs: list[str] = []
    for spec in chosen:
        for name in (registered_backends() if spec == "all" else [spec]):
            if name not in specs:
                specs.append(name)
    return specs


def _configured(config) -> bool:
    """Whether this pytest session asked for the suite (option, env var or ini): the plugin
    is registered wherever alexnet-aa is installed and must stay silent elsewhere."""
    return bool(config.getoption("--alexnet-backend") or config.getini("alexnet_backends"))


def pytest_report_header(config):
    if not _configured(config):
        return []
    names = _selected(config)
    lines = [f"alexnet_aa conformance: seed={_seed(config)} (rerun with --alexnet-seed {_seed(config)}), backends={','.join(names)}"]
    for name in names:
        try:
            ok, why = backend_class(parse_spec(name)[0]).available()
            lines.append(f"  {name}: {'available' if ok else 'unavailable: ' + why}")
        except BackendError as exc:
            lines.append(f"  {name}: {str(exc).splitlines()[0]}")
    return lines


def pytest_generate_tests(metafunc):
    if "alexnet_backend" in metafunc.fixturenames:
        names = _selected(metafunc.config)
        metafunc.parametrize("alexnet_backend", names, ids=names, indirect=True, scope="session")


@pytest.fixture(scope="session")
def alexnet_backend(request):
    """One backend instance per name and session; skipped with its reason where it cannot run."""
    spec = request.param
    if spec not in _STATE["instances"]:
        name, options = parse_spec(spec)
        try:
            cls = backend_class(name)
        except BackendError as exc:
            pytest.fail(str(exc), pytrace=False)
        ok, why = cls.available()
        if not ok:
            pytest.skip(f"backend {name!r} unavailable: {why}")
        backend = get_backend(name, **options)
        backend.warmup()
        _STATE["instances"][spec] = backend
    return _STATE["instances"][spec]


@pytest.fixture
def case_rng(request):
    """A generator seeded by the run's seed and this test's id."""
    return np.random.default_rng([_seed(request.config), zlib.crc32(request.node.nodeid.encode())])


@pytest.fixture
def conformance_record(request):
    """``record(check, context, error, tolerance)``: keeps the measured error for the summary."""
    spec = request.node.callspec.params.get("alexnet_backend", "?")

    def record(check: str, context: str, error: float, tol: float) -> None:
        _STATE["errors"][(spec, check)].append((error, tol, context))
    return record


def pytest_collection_modifyitems(config, items):
    path = config.getoption("--alexnet-xfails")
    if not path:
        return
    entries = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            pattern, _, reason = line.partition("#")
            if not reason.strip():
                raise pytest.UsageError(f"{path}:{lineno}: every xfail needs a reason after '#': {line!r}")
            entries.append([pattern.strip(), reason.strip(), 0])
    for item in items:
        for entry in entries:
            if fnmatch.fnmatch(item.nodeid, f"*{entry[0]}*"):
                item.add_marker(pytest.mark.xfail(reason=entry[1], strict=False))
                entry[2] += 1
    for pattern, reason, hits in entries:
        if not hits:
            warnings.warn(f"{path}: xfail pattern {pattern!r} ({reason}) matches no test: remove it", stacklevel=1)


def pytest_terminal_summary(terminalreporter):
    errors = _STATE["errors"]
    if not errors:
        return
    tr = terminalreporter
    tr.section("alexnet_aa conformance: largest relative L2 error against the float64 reference")
    width = max(len(spec) for spec, _ in errors)
    tr.write_line(f"{'backend':<{width}} {'check':<11} {'cases':>5} {'max error':>10} {'tolerance':>10}")
    for (spec, check), rows in sorted(errors.items()):
        worst = max(rows, key=lambda r: r[0])
        tr.write_line(f"{spec:<{width}} {check:<11} {len(rows):>5} {worst[0]:>10.2e} {worst[1]:>10.0e}")
