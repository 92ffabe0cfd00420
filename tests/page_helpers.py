"""What the dashboard prints of a number, for tests that compare a page with the logged data."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal


def fmt_pct(p: float | None) -> str:
    """``fmtPct`` of web/util.js: a probability as a percentage (``toFixed`` rounds the exact
    value of the double, a tie up)."""
    if p is None:
        return "\u2013"
    if p >= 0.995:
        return "100%"
    if p < 0.001:
        return "0%" if p == 0 else "<0.1%"
    places = Decimal(1).scaleb(-1 if p < 0.1 else 0)
    return f"{Decimal(p * 100).quantize(places, rounding=ROUND_HALF_UP)}%"
