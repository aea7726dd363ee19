"""Formatting for reports of any model: readable numbers and Markdown tables."""

from __future__ import annotations

import math

__all__ = ["fmt", "md_table", "chance_column_note"]


def fmt(value, digits: int = 4) -> str:
    """Readable number: NaN/inf/None spelled out, large and small numbers in g-format."""
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "-inf" if value < 0 else "inf"
        return f"{value:.{digits}g}"
    return str(value)


def md_table(header, rows) -> str:
    """A GitHub/MyST Markdown table (pipes in cells escaped)."""
    esc = lambda c: fmt(c).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def chance_column_note(n_elements: int) -> str:
    """What the *chance* column of a worst-elements table holds (:attr:`.convergence.ElementDiagnosis.p_chance`)."""
    return f"*chance*: of an R-hat this high among all {n_elements} at the element's own within-chain ESS"
