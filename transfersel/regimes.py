"""What a leaderboard states once per metric (spec selection.md §2): the reduction used, a saturated
regime, an all-tie; and ranks that give tied models equal ranks instead of zoo order.

Two finite scores tie when they differ by at most :data:`REL_TIE` relative to the larger magnitude.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from transfersel.errors import InputError

__all__ = [
    "REL_TIE",
    "all_tie",
    "default_reduce",
    "reduce_label",
    "reduce_note",
    "resolve_reduce",
    "saturation_note",
    "tie_groups",
    "tie_ranks",
]

REL_TIE = 1e-9

Reduce = int | str | None


def default_reduce() -> Reduce:
    """The ``reduce`` of rank/evaluate/ensemble/demo by default: ``selection.json`` "reduce" → "default"."""
    from transfersel.metrics import default_reduce_setting

    return resolve_reduce(default_reduce_setting())


def resolve_reduce(value: Reduce) -> Reduce:
    """``"default"`` → :func:`default_reduce`; ``None``/``"none"`` → None; ``"auto"``; an int or digits → int.

    Raises:
        InputError: anything else (one line naming the accepted values).
    """
    if value == "default":
        return default_reduce()
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    text = str(value).strip()
    if not isinstance(value, bool) and text.isdigit() and int(text) >= 1:
        return int(text)
    raise InputError(f"--reduce must be auto, none or a positive integer d, got {value!r}")


def reduce_label(reduce: Reduce) -> str:
    """How outputs spell a reduction: ``auto``, ``none`` or the integer d."""
    return "none" if reduce is None else str(reduce)


def reduce_note(
    metric: str, reduce: Reduce, dims: Mapping[str, int | None], widths: Mapping[str, int]
) -> str:
    """One line: ``"sfda: reduce auto -> d = 98"``; per model when the dimensions differ.

    ``dims[model]`` is the scored dimension (None = the features as they are), ``widths[model]`` its D.
    """
    scored = {m: widths[m] if d is None else d for m, d in dims.items()}
    reduced = any(d is not None for d in dims.values())
    values = sorted(set(scored.values()))
    head = f"{metric}: reduce {reduce_label(reduce)} -> "
    if not reduced:
        return head + "features as they are (no projection)"
    if len(values) == 1:
        return head + f"d = {values[0]}"
    return head + "; ".join(f"d = {v} ({', '.join(m for m in scored if scored[m] == v)})" for v in values)


def saturation_note(metric: str, shapes: Mapping[str, tuple[int, int, int]]) -> str | None:
    """The metric's saturated-regime line (:func:`transfersel.metrics.saturation`) once for all models.

    ``shapes[model] = (N, scored d, C)``. When only some models are saturated they are named.
    """
    from transfersel.metrics import saturation

    lines = {m: saturation(metric, *s) for m, s in shapes.items()}
    hit = [m for m, line in lines.items() if line]
    if not hit:
        return None
    line = str(lines[hit[0]])
    if len(hit) < len(lines):
        line += f" (models: {', '.join(hit)})"
    elif len({shapes[m][1] for m in hit}) > 1:
        line += " (every model)"
    return line


def _same(a: float, b: float) -> bool:
    # an infinite score ties only an equal one (inf - x is inf, and so is REL_TIE * inf)
    return a == b or (math.isfinite(a) and math.isfinite(b) and abs(a - b) <= REL_TIE * max(abs(a), abs(b)))


def tie_ranks(scores: Sequence[float]) -> list[int]:
    """Competition ranks, 1 = best: tied scores share a rank (1, 1, 3), NaN scores share the last rank."""
    values = [float(v) for v in scores]
    order = sorted((i for i, v in enumerate(values) if not math.isnan(v)), key=lambda i: -values[i])
    ranks = [len(order) + 1] * len(values)
    for pos, i in enumerate(order):
        prev = order[pos - 1] if pos else None
        ranks[i] = ranks[prev] if prev is not None and _same(values[prev], values[i]) else pos + 1
    return ranks


def tie_groups(scores: Sequence[float], names: Sequence[str]) -> list[tuple[str, ...]]:
    """Groups of two or more models whose finite scores tie (:func:`tie_ranks`), each in zoo order."""
    groups: dict[int, list[str]] = {}
    for name, value, r in zip(names, scores, tie_ranks(scores), strict=True):
        if not math.isnan(float(value)):
            groups.setdefault(r, []).append(name)
    return [tuple(g) for _, g in sorted(groups.items()) if len(g) > 1]


def all_tie(scores: Sequence[float]) -> bool:
    """True when two or more finite scores exist and all of them tie."""
    finite = [float(v) for v in scores if math.isfinite(float(v))]
    return len(finite) > 1 and len(set(tie_ranks(finite))) == 1
