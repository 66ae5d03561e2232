"""Sen's one ICD-10 list (sen_shared.icd10): what the portal offers and teleconsult accepts."""

from __future__ import annotations

import pytest
from sen_shared import icd10


@pytest.mark.parametrize("code", ["B02.9", "I21.9", "B18.00", "A91", "E11", "Z99.9", "U07.1", "K35.0"])
def test_who_codes_are_codes(code):
    assert icd10.is_code(code)
    assert icd10.title(code, "en")


@pytest.mark.parametrize("code", ["I21.99", "E11.65", "Z99.99", "I219", "i21.9", "I", "A00-A09", "W00.0", "", None,
                                  21])
def test_anything_else_is_not(code):
    assert not icd10.is_code(code)
    assert icd10.title(code if isinstance(code, str) else "", "vi") is None


def test_titles_in_either_language_and_english_where_there_is_no_vietnamese_one():
    assert icd10.title("B02.9") == "Bệnh Zoster không biến chứng"
    assert icd10.title("B02.9", "en") == "Zoster without complication"
    untitled = next(r for r in icd10.rows() if r.kind in icd10.CODED and not r.vi)
    assert icd10.title(untitled.code, "vi") == untitled.en
    assert len(icd10.codes()) > 12_000 and icd10.codes() is icd10.codes()  # read once
