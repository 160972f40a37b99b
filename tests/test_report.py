"""Report rendering: CSV/JSON parse back to the same values, Markdown is a well-formed table, PNGs are PNG."""

from __future__ import annotations

import csv
import json
import math
import struct

import pytest
from rich.console import Console

from transfersel.errors import InputError
from transfersel.report import (
    ScatterPanel,
    Table,
    plot_scatter,
    plot_scores,
    show,
    to_markdown,
    to_rich,
    write_table,
)

TABLE = Table(
    columns=("model", "sfda", "logme"),
    rows=(("resnet20|cifar", 0.123456789012, 1.5), ("lenet5", math.nan, -2.25)),
    title="mnist",
    notes=("lenet5: sfda is NaN (ranked last)",),
)


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_csv_and_json_parse_back_to_the_same_values(tmp_path):
    rows = list(csv.reader(write_table(TABLE, tmp_path / "t.csv").open()))
    assert rows[0] == ["model", "sfda", "logme"]
    assert rows[1][0] == "resnet20|cifar" and float(rows[1][1]) == 0.123456789012  # full precision
    assert math.isnan(float(rows[2][1])) and float(rows[2][2]) == -2.25
    doc = json.loads(write_table(TABLE, tmp_path / "out" / "t.json", dataset="mnist").read_text())
    assert doc["columns"] == ["model", "sfda", "logme"] and doc["dataset"] == "mnist"
    assert doc["rows"][0] == {"model": "resnet20|cifar", "sfda": 0.123456789012, "logme": 1.5}
    assert doc["rows"][1]["sfda"] is None  # NaN → null (valid JSON)
    assert doc["notes"] == ["lenet5: sfda is NaN (ranked last)"]


def test_markdown_is_a_table_with_header_alignment_and_notes(tmp_path):
    text = write_table(TABLE, tmp_path / "t.md").read_text()
    assert text == to_markdown(TABLE)
    lines = text.splitlines()
    assert lines[0] == "**mnist**"
    assert lines[2] == "| model | sfda | logme |"
    assert lines[3] == "|---|---:|---:|"
    assert lines[4] == r"| resnet20\|cifar | 0.1235 | 1.5 |"
    assert lines[5] == "| lenet5 | NaN | -2.25 |"
    assert lines[-1] == "- lenet5: sfda is NaN (ranked last)"
    assert all(line.count("|") - line.count(r"\|") == 4 for line in lines[2:6])


def test_rich_table_and_unknown_formats():
    console = Console(record=True, width=100)
    console.print(to_rich(TABLE))
    table = console.export_text()
    assert "resnet20|cifar" in table and "0.1235" in table
    narrow = Console(record=True, width=20)
    show(TABLE, narrow)  # the notes follow the table, one line each, never wrapped
    out = narrow.export_text()
    assert "NaN" in out and "lenet5: sfda is NaN (ranked last)" in out.splitlines()
    with pytest.raises(InputError, match="unknown format '.xlsx'"):
        write_table(TABLE, "t.xlsx")
    with pytest.raises(InputError, match="figures are PNG files"):
        plot_scores(["a"], {"sfda": [1.0]}, "scores.pdf")


def test_figures_are_png_files_sized_by_their_content(tmp_path):
    models = [f"model_{i}" for i in range(6)]
    one = plot_scores(models, {"sfda": [0.9, 0.8, 0.7, 0.6, 0.5, math.nan]}, tmp_path / "one.png", title="t")
    two = plot_scores(models, {"sfda": [0.9] * 6, "logme": [1.0, 2, 3, 4, 5, 6]}, tmp_path / "two.png")
    (w1, h1), (w2, h2) = png_size(one), png_size(two)
    assert w2 > w1 and h1 == h2 and h1 > 100  # one panel per metric
    panels = [
        ScatterPanel(
            f"d{i}",
            tuple(models),
            (60.0, 70, 65, 80, 90, 50),
            (("sfda τw=0.5", (0.1, 0.2, 0.3, 0.4, 0.5, math.nan)), ("logme", (0.0, 1, 0.5, 0.2, 0.9, 0.3))),
        )
        for i in range(4)
    ]
    w3, h3 = png_size(plot_scatter(panels, tmp_path / "scatter.png"))
    w4, h4 = png_size(plot_scatter(panels[:1], tmp_path / "single.png"))
    assert w3 > w4 and h3 > h4  # 4 panels on a 3-column grid: 2 rows, 3 columns
    assert (tmp_path / "scatter.png").stat().st_size > 10_000
