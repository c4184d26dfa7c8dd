"""The layer table of a variant as text or Markdown, computed from :mod:`alexnet_aa.architecture`.

``alexnet-aa summary`` prints it and the docs embed it, so neither is typed by hand.
"""

from __future__ import annotations

from .architecture import ABLATIONS, get_architecture, layer_infos

#: The value each ablation with a number is listed with by :func:`format_ablations`.
EXAMPLE_VALUES = {"dropout=P": "dropout=0", "input=S": "input=99"}


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
    out = [f"AlexNet ({arch.variant}): {arch.source}", f"  {'the ' + arch.base + ' table: ' if arch.ablations else ''}{arch.notes}"]
    if arch.ablations:
        out.append(f"  ablated: {'; '.join(ablation_lines(arch, num_classes))}")
    out += ["", line(HEADER), line(["-" * w for w in widths])]
    for row, info in zip(rows, infos):
        out.append(line(row))
        if explain:
            out.append(f"    {info.explain}")
    out.append(line(["-" * w for w in widths]))
    out.append(line(total))
    out.append("MACs count conv and linear multiply-accumulates per image; activations are float32 per image.")
    return "\n".join(out)


def _totals(variant: str, num_classes: int, input_size: int | None = None) -> tuple[int, int]:
    infos = layer_infos(get_architecture(variant, num_classes), input_size)
    return sum(i.params for i in infos), sum(i.macs for i in infos)


def _delta(new: int, old: int) -> str:
    return f"{new - old:+,} ({(new - old) / old:+.1%})" if new != old else "unchanged"


def ablation_lines(arch, num_classes: int = 1000) -> list[str]:
    """One line per ablation of ``arch``: what it changes in parameters and MACs per image against
    the table without it (the other ablations kept), each at its own input size."""
    params, macs = _totals(arch.variant, num_classes)
    lines = []
    for change in arch.ablations:
        try:
            old_params, old_macs = _totals("+".join([arch.base, *(c for c in arch.ablations if c != change)]), num_classes)
        except ValueError:  # the table without it does not exist (too small an input without it)
            lines.append(f"{change}: n/a (the table without it cannot take this input)")
            continue
        lines.append(f"{change}: params {_delta(params, old_params)}, MACs {_delta(macs, old_macs)}")
    return lines


def format_ablations(variant: str, num_classes: int = 1000) -> str:
    """Every ablation of :data:`~alexnet_aa.architecture.ABLATIONS`: its name, what it changes and
    its parameter and MAC deltas on ``variant``'s table (those that change nothing there say so)."""
    base = get_architecture(variant, num_classes)
    params, macs = _totals(base.variant, num_classes)
    rows = [["ablation", "params", "MACs", "what it changes"]]
    for name, what in ABLATIONS.items():
        change = EXAMPLE_VALUES.get(name, name)
        try:
            new_params, new_macs = _totals(f"{base.variant}+{change}", num_classes)
        except ValueError as exc:
            rows.append([change, "-", "-", f"not applicable: {exc}"])
            continue
        rows.append([change, _delta(new_params, params), _delta(new_macs, macs), what])
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    out = [f"Ablations of AlexNet ({base.variant}): {params:,} parameters, {macs:,} MACs per image; "
           f"use them as --variant {base.variant}+NAME[+NAME...] or --ablate NAME", ""]
    out += ["  ".join([r[0].ljust(widths[0]), r[1].rjust(widths[1]), r[2].rjust(widths[2]), r[3]]) for r in rows]
    return "\n".join(out)


def format_markdown(variant: str, num_classes: int = 1000) -> str:
    """The same table in Markdown (for the docs)."""
    rows, total = summary_rows(variant, num_classes)
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * 4) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines.append("| " + " | ".join(f"**{c}**" if c else "" for c in total) + " |")
    return "\n".join(lines)
