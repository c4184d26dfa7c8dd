"""The layer table of a variant as text or Markdown, computed from :mod:`alexnet_aa.architecture`.

``alexnet-aa summary`` prints it and the docs embed it, so neither is typed by hand.
"""

from __future__ import annotations

from .architecture import get_architecture, layer_infos


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def summary_rows(variant: str, num_classes: int = 1000, input_size: int | None = None) -> tuple[list[list[str]], list[str]]:
    """Rows ``[layer, type, config, output, params, MACs, activation KiB]`` and the totals row."""
    arch = get_architecture(variant, num_classes)
    infos = layer_infos(arch, input_size)
    rows = [
        [i.name, i.layer.kind, i.layer.config(), _shape(i.out_shape), f"{i.params:,}", f"{i.macs:,}",
         f"{i.activation_bytes / 1024:,.1f}"]
        for i in infos
    ]
    size = arch.input_size if input_size is None else input_size
    total = ["total", "", f"input 3x{size}x{size}", "", f"{sum(i.params for i in infos):,}",
             f"{sum(i.macs for i in infos):,}", f"{sum(i.activation_bytes for i in infos) / 1024:,.1f}"]
    return rows, total


HEADER = ["layer", "type", "config", "output (CxHxW)", "params", "MACs", "activation KiB"]


def format_text(variant: str, explain: bool = False, num_classes: int = 1000, input_size: int | None = None) -> str:
    """A fixed-width table; with ``explain``, each layer's formula with its numbers below its row."""
    rows, total = summary_rows(variant, num_classes, input_size)
    infos = layer_infos(get_architecture(variant, num_classes), input_size)
    widths = [max(len(r[i]) for r in [HEADER, total, *rows]) for i in range(len(HEADER))]
    right = {4, 5, 6}

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    arch = get_architecture(variant, num_classes)
    out = [f"AlexNet ({variant}): {arch.source}", f"  {arch.notes}", "", line(HEADER), line(["-" * w for w in widths])]
    for row, info in zip(rows, infos):
        out.append(line(row))
        if explain:
            out.append(f"    {info.explain}")
    out.append(line(["-" * w for w in widths]))
    out.append(line(total))
    out.append("MACs count conv and linear multiply-accumulates per image; activations are float32 per image.")
    return "\n".join(out)


def format_markdown(variant: str, num_classes: int = 1000) -> str:
    """The same table in Markdown (for the docs)."""
    rows, total = summary_rows(variant, num_classes)
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * 4) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines.append("| " + " | ".join(f"**{c}**" if c else "" for c in total) + " |")
    return "\n".join(lines)
