"""A plain-text table: columns padded to their widest cell, two spaces apart, no trailing spaces."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def format_table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None, *, align: str = "",
                 min_widths: Sequence[int] = (), sep: str = "  ", indent: str = "") -> str:
    """The lines of a table, header first. `align` gives each column `<` (left, the default) or
    `>` (right); `min_widths` pads columns to at least that many characters; `sep` separates them."""
    table = [[str(cell) for cell in row] for row in ([header] if header is not None else []) + list(rows)]
    if not table:
        return ""
    columns = max(len(row) for row in table)
    widths = [max([len(row[i]) for row in table if i < len(row)] + [min_widths[i] if i < len(min_widths) else 0])
              for i in range(columns)]
    sides = align.ljust(columns, "<")
    return "\n".join(
        (indent + sep.join(cell.rjust(w) if side == ">" else cell.ljust(w)
                           for cell, w, side in zip(row, widths, sides))).rstrip()
        for row in table)
