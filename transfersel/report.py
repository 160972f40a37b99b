"""Render result tables and figures: rich (terminal), CSV, Markdown, JSON and PNG (matplotlib, Agg).

Results are plain :class:`Table` objects (no pandas): a title, column names, rows of values and free-text
notes (skipped metrics, NaN scores, ties). :func:`write_table` picks the format from the file suffix.
Numbers keep full precision in CSV and JSON (NaN becomes ``nan`` in CSV and ``null`` in JSON) and are shown
with 4 significant digits in the terminal and in Markdown.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transfersel.errors import InputError

__all__ = [
    "ScatterPanel",
    "Table",
    "check_outputs",
    "plot_scatter",
    "plot_scores",
    "render",
    "show",
    "style",
    "to_csv",
    "to_json",
    "to_markdown",
    "to_rich",
    "write_table",
]

FORMATS = (".csv", ".md", ".json")


@dataclass(frozen=True)
class Table:
    """A rectangular result: ``rows[i][j]`` is the value of ``columns[j]``; ``notes`` are printed under it."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    title: str = ""
    notes: tuple[str, ...] = ()

    def records(self) -> list[dict[str, Any]]:
        """The rows as ``{column: value}`` dicts."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def _short(value: Any) -> str:
    """A cell for humans: floats with 4 significant digits, NaN as ``NaN``, None as empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        text = f"{value:.4g}"
        return text if any(c in text for c in ".en") else text + ".0"  # a float stays visibly a float
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def to_rich(table: Table) -> Any:
    """A ``rich.table.Table`` (numeric columns right-aligned); :func:`show` prints the notes under it."""
    from rich.table import Table as RichTable

    out = RichTable(title=table.title or None)
    for j, name in enumerate(table.columns):
        numeric = any(_is_number(row[j]) for row in table.rows)
        width = max([len(_short(row[j])) for row in table.rows] + [len(name)])  # never truncate a cell
        out.add_column(name, justify="right" if numeric else "left", min_width=width, no_wrap=True)
    for row in table.rows:
        out.add_row(*(_short(v) for v in row))
    return out


def show(table: Table, console: Any) -> None:
    """Print ``table`` on a rich console, widening the output rather than truncating cells."""
    from rich.measure import Measurement

    rich_table = to_rich(table)
    needed = Measurement.get(console, console.options.update(width=10_000), rich_table).maximum
    console.print(rich_table, width=max(console.width, needed), crop=False)
    for note in table.notes:  # one line each, never wrapped
        console.print(note, markup=False, highlight=False, soft_wrap=True)


def to_csv(table: Table) -> str:
    """CSV text: a header row, then one row per record; floats at full precision (``repr``)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table.columns)
    for row in table.rows:
        writer.writerow("" if v is None else repr(v) if isinstance(v, float) else v for v in row)
    return buf.getvalue()


def to_markdown(table: Table) -> str:
    """A GitHub Markdown table (numeric columns right-aligned), the title above it and the notes below."""

    def cell(v: Any) -> str:
        return _short(v).replace("|", r"\|")

    lines = [f"**{table.title}**", ""] if table.title else []
    lines.append("| " + " | ".join(cell(c) for c in table.columns) + " |")
    aligns = [
        "---:" if any(_is_number(row[j]) for row in table.rows) else "---" for j in range(len(table.columns))
    ]
    lines.append("|" + "|".join(aligns) + "|")
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.rows]
    if table.notes:
        lines += [""] + [f"- {n}" for n in table.notes]
    return "\n".join(lines) + "\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):  # NumPy scalars
        return _jsonable(value.item())
    return value


def to_json(table: Table, **extra: Any) -> str:
    """JSON text ``{"title", "columns", "rows": [{column: value}], "notes", **extra}``; NaN/inf → null."""
    doc = {
        "title": table.title,
        "columns": list(table.columns),
        "rows": table.records(),
        "notes": table.notes,
    }
    return json.dumps(_jsonable({**doc, **extra}), indent=2, allow_nan=False) + "\n"


def check_outputs(tables: Sequence[str | Path] = (), figures: Sequence[str | Path | None] = ()) -> None:
    """Raise :class:`InputError` for an output path whose format is unknown, before any work is done.

    ``tables`` must end in ``.csv``, ``.md`` or ``.json``; ``figures`` (None = not asked for) in ``.png``.
    """
    for path in tables:
        suffix = Path(path).suffix.lower()
        if suffix not in FORMATS:
            known = ", ".join(FORMATS)
            raise InputError(f"cannot write {path}: unknown format {suffix!r}; use one of {known}")
    for path in figures:
        if path is not None and Path(path).suffix.lower() != ".png":
            raise InputError(f"cannot write {path}: figures are PNG files; name it *.png")


def write_table(table: Table, path: str | Path, *, appendix: Sequence[Table] = (), **extra: Any) -> Path:
    """Write ``table`` as CSV, Markdown or JSON, chosen by the suffix of ``path``; returns the path.

    ``appendix`` tables follow the main one in Markdown (e.g. the agreement with the ground truth); ``extra``
    adds top-level keys to the JSON form (e.g. the per-metric correlations).
    """
    path = Path(path)
    check_outputs([path])
    suffix = path.suffix.lower()
    if suffix == ".md":
        text = "\n".join(to_markdown(t) for t in (table, *appendix))
    else:
        text = to_csv(table) if suffix == ".csv" else to_json(table, **extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def render(table: Table, *, width: int = 100) -> str:
    """``table`` as plain text, as the CLI shows it (for ``print(result)``)."""
    from rich.console import Console

    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    show(table, console)
    return console.export_text()


# ----------------------------------------------------------------------------------------------------------
# Figures


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"cannot write {path}: figures are PNG files; name it *.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# One distinct (colour, marker) per metric: 20 colours of tab20 x 6 markers never repeat for 12+ metrics.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "*", "p")


def style(i: int) -> dict[str, Any]:
    """Colour and marker of the ``i``-th series: distinct for every series of a figure."""
    import matplotlib

    colours = matplotlib.colormaps["tab20"].colors
    return {"color": colours[(2 * i) % 20 + (i // 10) % 2], "marker": _MARKERS[i % len(_MARKERS)]}


def plot_scores(
    models: Sequence[str],
    scores: dict[str, Sequence[float]],
    path: str | Path,
    *,
    title: str = "",
    accuracy: Sequence[float | None] | None = None,
) -> Path:
    """Leaderboard figure: one horizontal bar panel per metric, models in the given order, best on top;
    with ``accuracy`` (the ground truth, aligned with ``models``) a last panel shows it beside the scores.

    NaN scores are drawn as an empty bar labelled ``NaN``.
    """
    plt = _pyplot()
    path = _png_path(path)
    if accuracy is not None:
        scores = {**scores, "fine-tuned accuracy": [math.nan if a is None else a for a in accuracy]}
    n = len(scores)
    fig, axes = plt.subplots(
        1, n, figsize=(3.2 * n + 2.0, 0.35 * len(models) + 1.4), squeeze=False, sharey=True
    )
    ypos = range(len(models))
    for ax, (metric, values) in zip(axes[0], scores.items(), strict=True):
        vals = [float(v) for v in values]
        finite = [v for v in vals if math.isfinite(v)]
        # bars start at 0 for non-negative scores, else a little below the worst so that it stays visible
        lo, hi = (min(finite), max(finite)) if finite else (0.0, 0.0)
        base = 0.0 if lo >= 0 else lo - 0.05 * ((hi - lo) or abs(lo) or 1.0)
        colour = "tab:green" if metric == "fine-tuned accuracy" else "tab:blue"
        ax.barh(ypos, [v - base if math.isfinite(v) else 0.0 for v in vals], left=base, color=colour)
        for y, v in zip(ypos, vals, strict=True):
            if not math.isfinite(v):
                ax.text(base, y, " NaN", va="center", color="tab:red", fontsize=8)
        ax.set_title(metric)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(list(ypos), list(models), fontsize=8)
    axes[0][0].invert_yaxis()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@dataclass(frozen=True)
class ScatterPanel:
    """One panel of the evaluate figure (one dataset): per model its ground-truth accuracy and, per series
    (metric), its score; ``series`` is ``((label, scores), ...)`` with scores aligned with ``models``."""

    title: str
    models: tuple[str, ...]
    accuracy: tuple[float, ...]
    series: tuple[tuple[str, tuple[float, ...]], ...]


def plot_scatter(
    panels: Sequence[ScatterPanel],
    path: str | Path,
    *,
    xlabel: str = "score",
    title: str = "",
    ylabel: str = "accuracy",
) -> Path:
    """Score-vs-accuracy scatter, one panel per dataset, one colour and marker per series (metric), legends
    outside the axes; NaN scores are left out. ``ylabel`` names the ground truth (e.g. test R²).

    Model names label the points of the first series.
    """
    plt = _pyplot()
    path = _png_path(path)
    if not panels:
        raise InputError("nothing to plot: no dataset has scores and ground truth")
    cols = min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    # constrained layout makes room for the legends outside each panel
    fig, axes = plt.subplots(
        rows, cols, figsize=(6.2 * cols, 3.8 * rows), squeeze=False, layout="constrained"
    )
    for ax, panel in zip(axes.flat, panels, strict=False):
        for i, (label, scores) in enumerate(panel.series):
            pts = [
                (s, a, m)
                for s, a, m in zip(scores, panel.accuracy, panel.models, strict=True)
                if math.isfinite(s)
            ]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=label, s=22, alpha=0.85, **style(i))
            if i == 0:
                for s, a, m in pts:
                    ax.annotate(m, (s, a), fontsize=5, xytext=(2, 2), textcoords="offset points")
        ax.set_title(panel.title, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(title or "metric score vs fine-tuned accuracy")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
