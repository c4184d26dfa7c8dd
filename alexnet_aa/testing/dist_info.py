"""Entry points of a project that is not installed: its ``.dist-info``, written from its ``pyproject.toml``.

``pip install`` registers a backend by writing ``<name>-<version>.dist-info/entry_points.txt``;
:func:`write_dist_info` writes the same from the project's own ``pyproject.toml`` into a folder
that a subprocess then gets on its ``PYTHONPATH``, so that the registry sees a backend straight
from a checkout. The docs build runs the example backend's suite this way, and the tests run it
with nothing but the core beside it.
"""

from __future__ import annotations

from pathlib import Path


def write_dist_info(pyproject: str | Path, into: str | Path) -> dict[str, dict[str, str]]:
    """Write ``<name>-<version>.dist-info`` (METADATA, entry_points.txt) for ``pyproject`` into ``into``;
    return the project's entry points by group."""
    try:
        import tomllib
    except ImportError as exc:  # Python 3.10
        raise RuntimeError("reading pyproject.toml needs tomllib (Python >= 3.11)") from exc
    project = tomllib.loads(Path(pyproject).read_text(encoding="utf-8"))["project"]
    dist = Path(into) / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n", encoding="utf-8"
    )
    lines = []
    for group, eps in project.get("entry-points", {}).items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in eps.items()]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return project.get("entry-points", {})
