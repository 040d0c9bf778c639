"""The one Markdown table every benchmark prints (it pastes straight into the README or a report)."""
from __future__ import annotations


def markdown_table(rows: list[dict], columns, digits: int = 1) -> str:
    """Rows as a Markdown table over `columns`: floats to `digits` decimals, a missing cell blank."""
    def cell(value) -> str:
        if value is None:
            return ""
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
