"""The docs are generated from the code: every placeholder is replaced, the published totals
appear in the generated tables, and ``mkdocs build --strict`` succeeds (where mkdocs is installed).

The build takes ~15 s; it starts in the background when this module's first test
runs, while the other tests render the pages in-process.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from alexnet_aa.architecture import count_macs, count_params, get_architecture, param_shapes
from alexnet_aa.summary import format_markdown

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

#: Published totals: Krizhevsky et al. / BVLC (paper, caffe) and torchvision's weights meta.
PUBLISHED = {
    "paper": (60_965_224, 724_406_816),
    "caffe": (60_965_224, 724_406_816),
    "torchvision": (61_100_840, 714_188_480),
}

_MKDOCS_MISSING = [m for m in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python", "pymdownx")
                   if importlib.util.find_spec(m.split(".")[0]) is None
                   or (m == "mkdocstrings_handlers.python" and importlib.util.find_spec(m) is None)]


def _load_hooks():
    spec = importlib.util.spec_from_file_location("alexnet_aa_docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = _load_hooks()


@pytest.fixture(scope="module", autouse=True)
def site(tmp_path_factory):
    """``mkdocs build --strict`` of the whole site, running in the background; ``None`` without mkdocs."""
    if _MKDOCS_MISSING:
        yield None
        return
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(out)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    yield proc, out
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    """Every page of docs/ with its placeholders replaced by the hook, as mkdocs would see it."""
    pages = sorted(p for p in DOCS.rglob("*.md") if "example_backend" not in p.parts)
    return {str(p.relative_to(DOCS)): hooks.render(p.read_text(encoding="utf-8")) for p in pages}


def test_published_totals_are_what_the_tables_compute():
    for variant, (params, macs) in PUBLISHED.items():
        assert count_params(variant) == params
        assert count_macs(variant) == macs
        shapes = param_shapes(get_architecture(variant))  # what the built model allocates
        assert sum(math.prod(s) for s in shapes.values()) == params


def test_every_placeholder_is_replaced(rendered):
    assert "alexnet.md" in rendered and "cli.md" in rendered
    for page, text in rendered.items():
        left = re.findall(r"<!--\s*gen:[^>]*-->", text)
        assert not left, f"{page}: placeholders left: {left}"
    used = {m.group(1) for p in DOCS.glob("*.md") for m in hooks.PLACEHOLDER.finditer(p.read_text(encoding="utf-8"))}
    assert used <= set(hooks.generators()), f"unknown generators: {used - set(hooks.generators())}"


def test_layer_tables_and_totals_are_generated(rendered):
    page = rendered["alexnet.md"]
    for variant, (params, macs) in PUBLISHED.items():
        table = format_markdown(variant)
        assert table in page, f"the {variant} layer table is not in alexnet.md"
        total_row = table.splitlines()[-1]
        assert f"**{params:,}**" in total_row and f"**{macs:,}**" in total_row, total_row
    # formulas with their numbers, from layer_infos(...).explain
    assert "H_out = floor((227 - 11 + 2*0) / 4) + 1 = 55" in page
    assert r"\left\lfloor \frac{224 - 11 + 2 \cdot 2}{4} \right\rfloor + 1" in page
    assert "![AlexNet (paper)" in page
    for page_name, totals in (("performance.md", ("60,965,224", "61,100,840", "243.9 MB", "724,406,816")),
                              ("cli.md", ("60,965,224", "724,406,816"))):
        for number in totals:
            assert number in rendered[page_name], f"{number} missing from {page_name}"


def test_generated_math_comes_from_the_reference_docstrings(rendered):
    page = rendered["alexnet.md"]
    assert r"\frac{\alpha}{n}" in page and "$$" in page
    assert ".. math::" not in page


def test_rst_to_markdown():
    doc = """Intro :math:`x^2` and :func:`~alexnet_aa.reference.lrn`, :class:`alexnet_aa.AlexNet`.

    .. math::

        a = b

    .. math:: c = d

    ==========  ========
    attribute   meaning
    ==========  ========
    ``name``    the name
    ==========  ========

    >>> 1 + 1
    2

    Run it::

        python -m pytest
    """
    md = hooks.rst_to_markdown(doc)
    assert "Intro $x^2$ and `lrn`, `alexnet_aa.AlexNet`." in md
    assert "$$\n    a = b\n    $$" in md and "$$\n    c = d\n    $$" in md
    assert "| attribute | meaning |" in md and "| ``name`` | the name |" in md
    assert "```pycon\n    >>> 1 + 1\n    2\n    ```" in md
    assert "Run it:\n" in md and "python -m pytest" in md and "::" not in md


def test_unknown_generator_and_indented_placeholders():
    with pytest.raises(KeyError, match="unknown docs generator"):
        hooks.render("<!-- gen:no-such-thing -->")
    assert hooks.render("    <!-- gen:sizes paper -->").count("\n    - **") == 7  # indented like its placeholder


def test_mkdocs_build_strict(site):
    if site is None:
        pytest.skip(f"the docs toolchain is not installed ({', '.join(_MKDOCS_MISSING)}): "
                    "python3 -m pip install -r docs/requirements.txt")
    proc, out = site
    try:
        log, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("mkdocs build took more than 300 s")
    assert proc.returncode == 0, log[-5000:]
    html = (out / "alexnet" / "index.html").read_text(encoding="utf-8")
    for params, macs in PUBLISHED.values():
        assert f"{params:,}" in html and f"{macs:,}" in html
    for page in out.rglob("*.html"):
        assert "gen:" not in page.read_text(encoding="utf-8"), f"a placeholder reached {page}"
    for variant in PUBLISHED:
        assert (out / "img" / f"alexnet-{variant}.svg").read_text(encoding="utf-8").startswith("<svg")
    assert (out / "img" / "visualize-paper" / "conv1_filters.png").stat().st_size > 1000
    api = (out / "api" / "index.html").read_text(encoding="utf-8")
    assert "arithmatex" in api and ".. math::" not in api, "docstring math was not converted"
