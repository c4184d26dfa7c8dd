"""The architecture diagram of a variant as SVG, drawn from its layer table.

Every row is one layer of :func:`alexnet_aa.architecture.get_architecture`, with
the output shape, parameters and MACs of :func:`~alexnet_aa.architecture.layer_infos`
and the configuration each layer spec gives (``layer.config()``), so the
picture shows the numbers the code runs. The bar in the middle is the layer's
output tensor, its width proportional to the square root of its element count
(the activation funnel from 154,587 input values to 1,000 logits); a grouped
convolution is drawn as its two (or ``g``) halves, the paper's two GPUs.

No plotting library: the SVG is written as text.

>>> svg = architecture_svg("paper")
>>> svg.startswith("<svg") and "conv2" in svg and "60,965,224" in svg
True
"""

from __future__ import annotations

import math
from pathlib import Path
from xml.sax.saxutils import escape

from .architecture import get_architecture, layer_infos

#: Fill colour per layer kind (``layer.kind``) and for the input.
COLORS = {
    "Input": "#9c755f",
    "Conv": "#4e79a7",
    "LRN": "#f28e2b",
    "MaxPool": "#59a14f",
    "AdaptiveAvgPool": "#76b7b2",
    "Flatten": "#bab0ac",
    "Dropout": "#edc948",
    "Linear": "#e15759",
}

_ROW, _BAR_H, _TOP, _WIDTH = 34, 20, 78, 860
_COL_NAME, _BAR_CX, _BAR_MAX = 14, 250, 250
_COL_SHAPE, _COL_CONFIG, _COL_PARAMS, _COL_MACS = 390, 500, 735, 846


def _text(x: float, y: float, s: str, *, anchor: str = "start", weight: str = "normal", size: int = 12,
          fill: str = "#222") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-weight="{weight}" '
            f'font-size="{size}" fill="{fill}">{escape(s)}</text>')


def _shape(shape: tuple[int, ...]) -> str:
    return "×".join(map(str, shape))


def architecture_svg(variant: str = "paper", num_classes: int = 1000) -> str:
    """The diagram of ``variant`` as an SVG document (a string)."""
    arch = get_architecture(variant, num_classes)
    infos = layer_infos(arch)
    size = arch.input_size
    rows = [("input", "Input", f"image {size}×{size}, RGB", (3, size, size), 1, "", "")]
    rows += [
        (i.name, i.layer.kind, i.layer.config(), i.out_shape, getattr(i.layer, "groups", 1),
         f"{i.params:,}" if i.params else "", f"{i.macs:,}" if i.macs else "")
        for i in infos
    ]
    largest = max(math.prod(shape) for *_, shape, _, _, _ in rows)
    height = _TOP + len(rows) * _ROW + 46
    total_params, total_macs = sum(i.params for i in infos), sum(i.macs for i in infos)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}" '
        f'viewBox="0 0 {_WIDTH} {height}" font-family="Helvetica, Arial, sans-serif" role="img">',
        f"<title>AlexNet ({escape(variant)}): layer stack with output shapes</title>",
        f'<rect width="{_WIDTH}" height="{height}" fill="white"/>',
        _text(_COL_NAME, 24, f"AlexNet ({variant})", weight="bold", size=16),
        _text(_COL_NAME, 44, f"input 3×{size}×{size} · {total_params:,} parameters · {total_macs:,} MACs per image",
              size=12, fill="#555"),
    ]
    header_y = _TOP - 14
    for x, label, anchor in [(_COL_NAME, "layer", "start"), (_BAR_CX, "output tensor (width ∝ √elements)", "middle"),
                             (_COL_SHAPE, "C×H×W", "start"), (_COL_CONFIG, "config", "start"),
                             (_COL_PARAMS, "params", "end"), (_COL_MACS, "MACs", "end")]:
        out.append(_text(x, header_y, label, anchor=anchor, weight="bold", size=11, fill="#555"))
    out.append(f'<line x1="{_COL_NAME}" y1="{header_y + 6}" x2="{_COL_MACS}" y2="{header_y + 6}" stroke="#ccc"/>')

    previous_bottom = None
    for r, (name, kind, config, shape, groups, params, macs) in enumerate(rows):
        y = _TOP + r * _ROW
        mid = y + _BAR_H / 2
        width = max(6.0, _BAR_MAX * math.sqrt(math.prod(shape) / largest))
        if previous_bottom is not None:  # the arrow from the previous tensor
            out.append(f'<line x1="{_BAR_CX}" y1="{previous_bottom:.1f}" x2="{_BAR_CX}" y2="{y - 2:.1f}" '
                       f'stroke="#888" stroke-width="1.2"/>')
            out.append(f'<path d="M{_BAR_CX - 4},{y - 6} L{_BAR_CX + 4},{y - 6} L{_BAR_CX},{y - 1} Z" fill="#888"/>')
        gap = 4.0 if groups > 1 else 0.0
        part = (width - gap * (groups - 1)) / groups
        for g in range(groups):  # a grouped conv: one bar per group (the paper's GPUs)
            x0 = _BAR_CX - width / 2 + g * (part + gap)
            out.append(f'<rect x="{x0:.1f}" y="{y}" width="{part:.1f}" height="{_BAR_H}" rx="3" '
                       f'fill="{COLORS[kind]}" stroke="#333" stroke-width="0.6"/>')
        if groups > 1:
            out.append(_text(_BAR_CX - width / 2 - 6, mid + 4, f"{groups} groups", anchor="end", size=10, fill="#4e79a7"))
        previous_bottom = y + _BAR_H
        out.append(_text(_COL_NAME, mid - 1, name, weight="bold"))
        out.append(_text(_COL_NAME, mid + 11, kind, size=9, fill="#777"))
        out.append(_text(_COL_SHAPE, mid + 4, _shape(shape)))
        out.append(_text(_COL_CONFIG, mid + 4, config.replace("->", "→"), size=11))
        out.append(_text(_COL_PARAMS, mid + 4, params, anchor="end"))
        out.append(_text(_COL_MACS, mid + 4, macs, anchor="end"))

    foot = _TOP + len(rows) * _ROW + 8
    out.append(f'<line x1="{_COL_NAME}" y1="{foot - 8}" x2="{_COL_MACS}" y2="{foot - 8}" stroke="#ccc"/>')
    out.append(_text(_COL_NAME, foot + 8, "total", weight="bold"))
    out.append(_text(_COL_PARAMS, foot + 8, f"{total_params:,}", anchor="end", weight="bold"))
    out.append(_text(_COL_MACS, foot + 8, f"{total_macs:,}", anchor="end", weight="bold"))
    out.append(_text(_COL_NAME, foot + 28, arch.source, size=10, fill="#777"))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_svg(path: str | Path, variant: str = "paper", num_classes: int = 1000) -> Path:
    """Write :func:`architecture_svg` to ``path``; return the path."""
    path = Path(path)
    path.write_text(architecture_svg(variant, num_classes), encoding="utf-8")
    return path
