"""pytest plugin of the conformance suite (registered through the ``pytest11`` entry point).

Options:

``--alexnet-backend SPEC[,SPEC…]``
    the backends to test; a spec is a registered name with optional
    constructor options, ``array-api[namespace=array_api_strict]``. Default:
    ``$ALEXNET_AA_BACKEND``, else the ``alexnet_backends`` ini list, where
    ``all`` stands for every registered backend. An unavailable backend is
    skipped with its reason (its class is still checked against the protocol).
``--alexnet-seed N``
    the run's seed (default: drawn fresh, printed in the header).
``--alexnet-xfails FILE``
    expected failures, one per line: a pattern found anywhere in a test id
    without its file's path, such as ``test_nonfinite[numpy-lrn-nan]`` (``*``
    matches anything; every other character, brackets included, only itself),
    then ``#`` and the reason, which is required. Patterns that match no test
    are reported as stale.
``--alexnet-report PATH``
    write a JSON report: per backend and check, the cases run, the cases
    failed, the largest measured error and the tolerance; per backend, the
    test outcomes and what it declares (layouts, dtype, unsupported capabilities).
    One process only (not with pytest-xdist's ``-n``).

A backend's own documented exceptions ship beside its module as
:data:`XFAILS_FILE` (same format); the plugin applies them to that backend's
tests only. A case that needs a capability the backend declares it lacks
(``Backend.unsupported``, raised by :mod:`alexnet_aa.ops` as
:class:`~alexnet_aa.backend.UnsupportedError`) is reported as skipped, with
the reason.

Fixtures: ``alexnet_backend`` (an instance, parametrized over the chosen
backends), ``alexnet_backend_class`` (the class, for every chosen backend,
available or not), ``alexnet_backend_float64`` (an instance built with
``dtype="float64"``), ``case_rng`` and ``conformance_record``. At the end of the
run, a table of the largest measured error per backend and check is printed.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import secrets
import sys
import warnings
import zlib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

from ..backend import BackendError, UnsupportedError, backend_class, get_backend, registered_backends
from ..backend import parse_spec as backend_spec

#: The file of expected failures a backend ships beside its module.
XFAILS_FILE = "conformance-xfails.txt"

_FIXTURES = ("alexnet_backend", "alexnet_backend_class", "alexnet_backend_float64")
#: What this session measured: ``errors[(spec, check)]`` is a list of :class:`_Case`; the backend
#: instances by spec; the shipped xfails file used per spec; per suite test node id, its backend spec
#: and its one outcome (passed, failed, error, skipped, xfailed, xpassed).
_STATE: dict = {"errors": defaultdict(list), "instances": {}, "xfails": {}, "specs": {}, "outcomes": {}}


class _Case(NamedTuple):
    error: float
    tolerance: float
    context: str
    node: str


def pytest_configure(config):
    for value in _STATE.values():
        value.clear()
    if config.getoption("--alexnet-report", default=None) and getattr(config.option, "numprocesses", None):
        raise pytest.UsageError("--alexnet-report needs one process: run without -n (pytest-xdist)")


def pytest_addoption(parser):
    group = parser.getgroup("alexnet_aa", "alexnet_aa conformance suite")
    group.addoption("--alexnet-backend", default=os.environ.get("ALEXNET_AA_BACKEND", ""),
                    help="comma-separated backends to test (default: $ALEXNET_AA_BACKEND, else all registered)")
    group.addoption("--alexnet-seed", type=int, default=None, help="seed of this run's random cases (default: fresh)")
    parser.addini("alexnet_backends", type="linelist", default=[],
                  help="backend specs tested by default ('all' = every registered backend)")
    group.addoption("--alexnet-xfails", default=None, help="file of expected failures: 'pattern  # reason' per line")
    group.addoption("--alexnet-report", default=None, metavar="PATH",
                    help="write the measured errors and outcomes per backend and check as JSON to PATH")


_SPEC = re.compile(r"\s*([\w.-]+)(?:\[([^\]]*)\])?\s*(?:,|$)")


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """:func:`alexnet_aa.backend.parse_spec`, a bad spec being a usage error of this pytest run."""
    try:
        return backend_spec(spec)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


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


def _class_or_none(spec: str):
    try:
        return backend_class(parse_spec(spec)[0])
    except BackendError:
        return None


def shipped_xfails(cls: type) -> Path | None:
    """The :data:`XFAILS_FILE` beside ``cls``'s module, if there is one."""
    module = sys.modules.get(cls.__module__)
    path = Path(getattr(module, "__file__", "") or ".").parent / XFAILS_FILE
    return path if getattr(module, "__file__", None) and path.is_file() else None


def pytest_report_header(config):
    if not _configured(config):
        return []
    names = _selected(config)
    lines = [f"alexnet_aa conformance: seed={_seed(config)} (rerun with --alexnet-seed {_seed(config)}), backends={','.join(names)}"]
    for name in names:
        try:
            cls = backend_class(parse_spec(name)[0])
            ok, why = cls.available()
            xfails = shipped_xfails(cls)
            lines.append(f"  {name}: {'available' if ok else 'unavailable: ' + why}"
                         + (f"; expected failures from {xfails}" if xfails else ""))
            lines += [f"    unsupported {cap}: {why}" for cap, why in cls.unsupported.items()]
        except BackendError as exc:
            lines.append(f"  {name}: {str(exc).splitlines()[0]}")
    return lines


def pytest_generate_tests(metafunc):
    for fixture in _FIXTURES:
        if fixture in metafunc.fixturenames:
            names = _selected(metafunc.config)
            metafunc.parametrize(fixture, names, ids=names, indirect=True, scope="session")


@pytest.fixture(scope="session")
def alexnet_backend_class(request):
    """The backend class of one spec, loaded whether or not the backend can run here."""
    try:
        return backend_class(parse_spec(request.param)[0])
    except BackendError as exc:
        pytest.fail(str(exc), pytrace=False)


def _instance(spec: str, *, float64: bool = False):
    """The session's backend instance for ``spec`` (built with ``dtype="float64"`` if asked), built
    and warmed up once; skipped with the reason where it cannot run here or lacks float64."""
    key = f"{spec} (float64)" if float64 else spec
    if key not in _STATE["instances"]:
        name, options = parse_spec(spec)
        try:
            cls = backend_class(name)
        except BackendError as exc:
            pytest.fail(str(exc), pytrace=False)
        ok, why = cls.available()
        if not ok:
            pytest.skip(f"backend {name!r} unavailable: {why}")
        if float64 and "float64" in cls.unsupported:
            pytest.skip(f"backend {name!r} does not support float64: {cls.unsupported['float64']}")
        backend = get_backend(name, **({**options, "dtype": "float64"} if float64 else options))
        backend.warmup()
        _STATE["instances"][key] = backend
    return _STATE["instances"][key]


@pytest.fixture(scope="session")
def alexnet_backend(request):
    """One backend instance per spec and session; skipped with its reason where it cannot run."""
    return _instance(request.param)


@pytest.fixture(scope="session")
def alexnet_backend_float64(request):
    """The backend of one spec built with ``dtype="float64"``; skipped with the reason where it
    cannot run here or declares float64 unsupported."""
    return _instance(request.param, float64=True)


def case_id(item) -> str:
    """A test's id without the path of its file (``test_lrn[numpy-size5]``): the same wherever the suite
    is installed and whichever folder pytest runs from, so a seed reproduces a case on another machine
    and an xfails pattern cannot match a folder's name."""
    return item.nodeid.split("::", 1)[-1]


@pytest.fixture
def case_rng(request):
    """A generator seeded by the run's seed and this test's :func:`case_id`."""
    return np.random.default_rng([_seed(request.config), zlib.crc32(case_id(request.node).encode())])


@pytest.fixture
def conformance_record(request):
    """``record(check, context, error, tolerance)``: keeps a measured error for the summary and the
    report (whether the case then passes is the test's outcome)."""
    spec, node = _spec_of(request.node), request.node.nodeid

    def record(check: str, context: str, error: float, tol: float) -> None:
        _STATE["errors"][(spec, check)].append(_Case(error, tol, context, node))
    return record


def _spec_of(item) -> str | None:
    params = getattr(getattr(item, "callspec", None), "params", {})
    return next((params[f] for f in _FIXTURES if f in params), None)


def _read_xfails(path: Path | str) -> list[list]:
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
    return entries


def xfail_pattern(text: str) -> re.Pattern:
    """An xfails pattern: ``*`` matches anything, every other character itself; found anywhere in a test id."""
    return re.compile(".*".join(re.escape(part) for part in text.split("*")))


def _narrowed(config) -> bool:
    """Whether this run selects some tests only (``-k``, ``-m``, ``--deselect``, node ids)."""
    return bool(config.getoption("keyword", "") or config.getoption("markexpr", "")
                or config.getoption("deselect", None) or any("::" in arg for arg in config.args))


def pytest_collection_modifyitems(config, items):
    """Mark the expected failures: the ``--alexnet-xfails`` file for every backend, each backend's
    shipped :data:`XFAILS_FILE` for its own tests."""
    files: list[tuple[str, str | None, list]] = []  # (file, spec it is scoped to or None, entries)
    path = config.getoption("--alexnet-xfails")
    if path:
        files.append((path, None, _read_xfails(path)))
    if any(_spec_of(item) for item in items):
        for spec in _selected(config):
            cls = _class_or_none(spec)
            shipped = shipped_xfails(cls) if cls is not None else None
            if shipped is not None:
                _STATE["xfails"][spec] = str(shipped)
                files.append((str(shipped), spec, _read_xfails(shipped)))
    for item in items:
        spec = _spec_of(item)
        for _, scope, entries in files:
            if scope is not None and scope != spec:
                continue
            for entry in entries:
                if xfail_pattern(entry[0]).search(case_id(item)):
                    item.add_marker(pytest.mark.xfail(reason=entry[1], strict=False))
                    entry[2] += 1
    for file, scope, entries in files:
        # a shipped file is checked against whole runs only: a narrowed run leaves its patterns unmatched
        if scope is not None and (_narrowed(config) or not any(_spec_of(item) == scope for item in items)):
            continue
        for pattern, reason, hits in entries:
            if not hits:
                warnings.warn(f"{file}: xfail pattern {pattern!r} ({reason}) matches no test: remove it", stacklevel=1)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """A case stopped by :class:`~alexnet_aa.backend.UnsupportedError` is a skip with its reason."""
    report = yield
    if (call.excinfo is not None and call.excinfo.errisinstance(UnsupportedError)
            and report.failed and _spec_of(item) is not None):
        path, line, _ = item.reportinfo()
        report.outcome = "skipped"
        report.longrepr = (str(path), (line or 0) + 1, f"Skipped: {call.excinfo.value}")
    return report


def pytest_runtest_logreport(report):
    """Keep each suite test's one outcome (a teardown error overrides a passed call)."""
    if report.nodeid not in _STATE["specs"]:
        return
    if report.when == "call" or report.outcome != "passed":
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        elif report.failed and report.when != "call":
            outcome = "error"
        else:
            outcome = report.outcome
        _STATE["outcomes"][report.nodeid] = outcome


def pytest_itemcollected(item):
    spec = _spec_of(item)
    if spec is not None:
        _STATE["specs"][item.nodeid] = spec


def _outcomes(spec: str) -> dict[str, int]:
    return dict(sorted(Counter(o for node, o in _STATE["outcomes"].items() if _STATE["specs"][node] == spec).items()))


def _checks(spec: str) -> dict[str, dict]:
    """Per check of ``spec``: the cases measured (a failed test counts once, with its worst error), how
    many failed and how many were expected failures (by their tests' outcomes), the largest error of
    the cases that were not expected failures, its tolerance and its case."""
    out = {}
    for (s, check), rows in sorted(_STATE["errors"].items()):
        if s != spec:
            continue
        by_node: dict[str, list[_Case]] = defaultdict(list)
        for row in rows:
            by_node[row.node].append(row)
        measured, failed, xfailed = [], 0, 0
        for node, cases in by_node.items():
            outcome = _STATE["outcomes"].get(node, "passed")
            if outcome in ("passed", "xpassed"):
                measured += cases
            elif outcome == "xfailed":
                xfailed += 1
            else:
                failed += 1
                measured.append(max(cases, key=lambda c: c.error))
        worst = max(measured, key=lambda c: c.error) if measured else None
        out[check] = {"cases": len(measured), "failed": failed, "xfailed": xfailed,
                      "max_error": worst.error if worst else None, "tolerance": rows[0].tolerance,
                      "worst_case": worst.context if worst else None}
    return out


def build_report(config) -> dict:
    """The ``--alexnet-report`` document (also what the docs render)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        core = version("alexnet-aa")
    except PackageNotFoundError:
        core = "unknown"
    backends = {}
    for spec in sorted(set(_STATE["specs"].values())):
        cls = _class_or_none(spec)
        instance = _STATE["instances"].get(spec)
        entry: dict = {"spec": spec, "outcomes": _outcomes(spec), "checks": _checks(spec)}
        if cls is not None:
            ok, why = cls.available()
            entry.update({
                "class": f"{cls.__module__}.{cls.__qualname__}",
                "available": ok, "reason": why,
                "layout": cls.layout, "conv_weight_layout": cls.conv_weight_layout,
                "linear_weight_layout": cls.linear_weight_layout,
                "dtype": instance.dtype if instance is not None else cls.dtype,
                "unsupported": dict(cls.unsupported),
                "xfails_file": _STATE["xfails"].get(spec),
            })
        backends[spec] = entry
    return {
        "format": "alexnet_aa.conformance-report/1",
        "alexnet_aa": core,
        "seed": _seed(config),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "numpy": np.__version__,
        "backends": backends,
    }


def pytest_sessionfinish(session):
    path = session.config.getoption("--alexnet-report", default=None)
    if path:
        report = _json_safe(build_report(session.config))
        Path(path).write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def _json_safe(value):
    """The report with every non-finite float (an error that could not be measured) as ``null``."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def pytest_terminal_summary(terminalreporter):
    errors = _STATE["errors"]
    if not errors:
        return
    tr = terminalreporter
    tr.section("alexnet_aa conformance: largest relative L2 error against the float64 reference")
    specs = sorted({spec for spec, _ in errors})
    width = max(len(spec) for spec in specs)
    cw = max(len(check) for _, check in errors)
    tr.write_line(f"{'backend':<{width}} {'check':<{cw}} {'cases':>5} {'failed':>6} {'xfailed':>7} {'max error':>10} {'tolerance':>10}")
    for spec in specs:
        for check, c in _checks(spec).items():
            worst = "-" if c["max_error"] is None else f"{c['max_error']:.2e}"
            tr.write_line(f"{spec:<{width}} {check:<{cw}} {c['cases']:>5} {c['failed']:>6} {c['xfailed']:>7} "
                          f"{worst:>10} {c['tolerance']:>10.0e}")
    path = tr.config.getoption("--alexnet-report", default=None)
    if path:
        tr.write_line(f"report written to {path}")
