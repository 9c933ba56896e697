"""One table renderer for every command, report and benchmark.

``render(headers, rows)`` lays rows out in columns: plain text for a terminal (two spaces
between columns, trailing blanks trimmed) or Markdown (``markdown=True``) for a README or
a report. Numbers are right-aligned and text left-aligned unless ``align`` says otherwise,
so a column reads the same wherever the table is printed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["cell", "render"]


def cell(value: object) -> str:
    """A value as a table cell: None and NaN as "-", floats to three significant digits
    (thousands grouped from 1,000), everything else through ``str``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _numeric(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def render(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    align: str | None = None,
    markdown: bool = False,
) -> str:
    """Rows under their headers, columns padded to the widest cell.

    Args:
        headers: one title per column.
        rows: one sequence of values per row, as long as ``headers``; values go through
            :func:`cell` (pass strings to format them yourself).
        align: one letter per column, ``l`` or ``r``; by default a column is right-aligned
            when every value in it is a number.
        markdown: a Markdown table (pipes and an alignment row) instead of plain columns.

    Raises:
        ValueError: a row or ``align`` of the wrong length, or a letter other than l / r.
    """
    n = len(headers)
    if any(len(r) != n for r in rows):
        raise ValueError(f"every row needs {n} values, one per header")
    if align is None:
        align = "".join(
            "r" if rows and all(_numeric(r[i]) or r[i] is None for r in rows) else "l"
            for i in range(n)
        )
    if len(align) != n or set(align) - {"l", "r"}:
        raise ValueError(f"align needs {n} letters, each 'l' or 'r' (got {align!r})")
    cells = [[cell(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        padded = [v.rjust(w) if a == "r" else v.ljust(w) for v, w, a in zip(values, widths, align)]
        return f"| {' | '.join(padded)} |" if markdown else "  ".join(padded).rstrip()

    out = [line(headers)]
    if markdown:
        out.append(
            "|"
            + "|".join("-" * (w + 1) + (":" if a == "r" else "-") for w, a in zip(widths, align))
            + "|"
        )
    out += [line(r) for r in cells]
    return "\n".join(out)
