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
    expected failures, one per line: a pattern matched against test ids
    (``fnmatch``), then ``#`` and the reason, which is required. Patterns
    that match no test are reported as stale.
``--alexnet-report PATH``
    write a JSON report: per backend and check, the cases run, the cases
    failed, the largest measured error and the tolerance; per backend, the
    test outcomes and what it declares (layouts, dtype, unsupported capabilities).

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

import ast
import fnmatch
import json
import os
import platform
import re
import secrets
import sys
import warnings
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from ..backend import BackendError, UnsupportedError, backend_class, get_backend, registered_backends

#: The file of expected failures a backend ships beside its module.
XFAILS_FILE = "conformance-xfails.txt"

_FIXTURES = ("alexnet_backend", "alexnet_backend_class", "alexnet_backend_float64")
_STATE: dict = {"errors": defaultdict(list), "instances": {}, "outcomes": defaultdict(Counter), "xfails": {}}
#: test node id → the backend spec it runs on (suite tests only), and → its outcome.
_NODE_SPECS: dict[str, str] = {}
_NODE_OUTCOMES: dict[str, str] = {}


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


@pytest.fixture
def case_rng(request):
    """A generator seeded by the run's seed and this test's id."""
    return np.random.default_rng([_seed(request.config), zlib.crc32(request.node.nodeid.encode())])


@pytest.fixture
def conformance_record(request):
    """``record(check, context, error, tolerance, failed=False)``: keeps the measured error for the
    summary and the report."""
    spec, node = _spec_of(request.node), request.node.nodeid

    def record(check: str, context: str, error: float, tol: float, failed: bool = False) -> None:
        _STATE["errors"][(spec, check)].append((error, tol, context, failed, node))
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
                if fnmatch.fnmatch(item.nodeid, f"*{entry[0]}*"):
                    item.add_marker(pytest.mark.xfail(reason=entry[1], strict=False))
                    entry[2] += 1
    for file, scope, entries in files:
        for pattern, reason, hits in entries:
            if not hits and (scope is None or any(_spec_of(item) == scope for item in items)):
                warnings.warn(f"{file}: xfail pattern {pattern!r} ({reason}) matches no test: remove it", stacklevel=1)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """A case stopped by :class:`~alexnet_aa.backend.UnsupportedError` is a skip with its reason."""
    report = yield
    if (call.excinfo is not None and call.excinfo.errisinstance(UnsupportedError)
            and report.failed and _spec_of(item) is not None):
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: {call.excinfo.value}")
    return report


def pytest_runtest_logreport(report):
    """Count each suite test's outcome per backend spec (for the report)."""
    spec = _NODE_SPECS.get(report.nodeid)
    if spec is None:
        return
    if report.when == "call" or report.outcome != "passed":
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        elif report.failed and report.when != "call":
            outcome = "error"
        else:
            outcome = report.outcome
        _STATE["outcomes"][spec][outcome] += 1
        _NODE_OUTCOMES[report.nodeid] = outcome


def pytest_itemcollected(item):
    spec = _spec_of(item)
    if spec is not None:
        _NODE_SPECS[item.nodeid] = spec


def _checks(spec: str) -> dict[str, dict]:
    """Per check of ``spec``: the cases measured, how many failed, how many were expected failures
    (left out of the largest error), the largest error, its tolerance and its case."""
    out = {}
    for (s, check), rows in sorted(_STATE["errors"].items()):
        if s != spec:
            continue
        expected = [r for r in rows if _NODE_OUTCOMES.get(r[4]) == "xfailed"]
        counted = [r for r in rows if _NODE_OUTCOMES.get(r[4]) != "xfailed"] or rows
        worst = max(counted, key=lambda r: r[0])
        out[check] = {"cases": len(rows), "failed": sum(r[3] for r in counted if r not in expected),
                      "xfailed": len(expected), "max_error": worst[0], "tolerance": worst[1], "worst_case": worst[2]}
    return out


def build_report(config) -> dict:
    """The ``--alexnet-report`` document (also what the docs render)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        core = version("alexnet-aa")
    except PackageNotFoundError:
        core = "unknown"
    backends = {}
    for spec in sorted(set(_NODE_SPECS.values())):
        cls = _class_or_none(spec)
        instance = _STATE["instances"].get(spec)
        entry: dict = {"spec": spec, "outcomes": dict(sorted(_STATE["outcomes"][spec].items())), "checks": _checks(spec)}
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
        Path(path).write_text(json.dumps(build_report(session.config), indent=2) + "\n", encoding="utf-8")


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
            tr.write_line(f"{spec:<{width}} {check:<{cw}} {c['cases']:>5} {c['failed']:>6} {c['xfailed']:>7} "
                          f"{c['max_error']:>10.2e} {c['tolerance']:>10.0e}")
    path = tr.config.getoption("--alexnet-report", default=None)
    if path:
        tr.write_line(f"report written to {path}")
