"""The one table renderer every command, report and benchmark prints through."""

from __future__ import annotations

import math

import pytest

from tritonkit.table import cell, render


def test_plain_columns_align_numbers_right_and_text_left() -> None:
    out = render(("model", "version", "size"), [("llm", 1, "2 MiB"), ("decoder", 12, "-")])
    lines = out.splitlines()
    assert lines[0] == "model    version  size"
    assert lines[1] == "llm            1  2 MiB"
    assert lines[2] == "decoder       12  -"


def test_markdown_has_an_alignment_row_and_pipes() -> None:
    out = render(("engine", "ms"), [("ours", 1.2345), ("peer", 2500.0)], markdown=True)
    assert out.splitlines() == [
        "| engine |    ms |",
        "|--------|------:|",
        "| ours   |  1.23 |",
        "| peer   | 2,500 |",
    ]


def test_cells_none_nan_and_floats() -> None:
    assert cell(None) == "-"
    assert cell(math.nan) == "-"
    assert cell(0.000123456) == "0.000123"
    assert cell(True) == "True"


def test_explicit_alignment_overrides_the_guess() -> None:
    out = render(("a", "b"), [("x", "y")], align="rr")
    assert out.splitlines()[1] == "x  y"
    assert render(("a", "b"), [("xx", "y")], align="rl").splitlines()[0] == " a  b"


@pytest.mark.parametrize(
    ("rows", "align"), [([("only one",)], None), ([("a", "b")], "l"), ([("a", "b")], "lc")]
)
def test_malformed_tables_are_refused(rows: list[tuple[str, ...]], align: str | None) -> None:
    with pytest.raises(ValueError):
        render(("a", "b"), rows, align=align)
