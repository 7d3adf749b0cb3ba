"""The bench report's plain-text tables (report.py and cost.py print them)."""

from __future__ import annotations


def table(headers: list[str], rows: list[list[str]], align: str = "") -> list[str]:
    """Columns sized to their content; `align` has one letter per column (l/r), default: first left, rest right."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    align = align or "l" + "r" * (len(headers) - 1)

    def line(cells: list[str]) -> str:
        return "  " + "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, align, strict=True))

    return [line(headers).rstrip(), "  " + "  ".join("-" * w for w in widths), *(line(r).rstrip() for r in rows)]
