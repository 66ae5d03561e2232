"""ICD-10 search in English finds the plain category the word names first.

"hypertension" listed I15.1 and I15.2 ("Hypertension secondary to ...": titles starting with the word) before
I10 "Essential (primary) hypertension", and "diabetes" E23.2 "Diabetes insipidus" before E11. The everyday
English names of ``data/icd10-synonyms-en.tsv`` (the Vietnamese table's twin) put the codes a doctor means
first, in the order the Vietnamese names give them; a Vietnamese word being typed ("dị" of "dị ứng") is
no English name.
"""

from __future__ import annotations

import re

import pytest
from sen_portal.web import icd10
from sen_shared import icd10 as shared_icd10

from services.portal.tests.test_doctor_consult_page import app, fake  # noqa: F401 (fixtures)
from tests.support import portal_signed_in

ENGLISH_FIRST = [
    ("hypertension", ["I10"]),
    ("Hypertension", ["I10", "I11", "I12", "I13", "I15"]),
    ("high blood pressure", ["I10"]),
    ("diabetes", ["E11", "E10", "E12", "E13", "E14"]),
    ("asthma", ["J45"]),
    ("pneumonia", ["J18"]),
    ("tuberculosis", ["A15"]),
    ("heart attack", ["I21", "I22"]),
    ("shingles", ["B02"]),
    ("hyperten", ["I10"]),  # still being typed
]


@pytest.mark.parametrize(("typed", "first"), ENGLISH_FIRST)
def test_an_english_word_finds_the_category_it_names_first(typed, first):
    hits = [c.code for c in icd10.search(typed)]
    assert hits[:len(first)] == first, hits


def test_the_titles_still_follow_the_everyday_names_codes():
    hits = [c.code for c in icd10.search("hypertension", limit=12)]
    assert {"I15.1", "I15.2"} <= set(hits) and hits.index("I10") < hits.index("I15.1"), hits
    assert "E23.2" in [c.code for c in icd10.search("diabetes", limit=12)]  # diabetes insipidus: after E10-E14
    assert [c.code for c in icd10.search("diabetes insipidus")][:1] == ["E23.2"]  # asked for by name
    assert [c.code for c in icd10.search("type 1 diabetes")][:1] == ["E10"]


@pytest.mark.parametrize("typed", ["di", "dị", "hy", "as"])
def test_a_word_of_a_letter_or_three_is_no_english_name_yet(typed):
    """An English name stands for its last word from four letters on: "di" (a Vietnamese "dị ứng", "di chứng"
    being typed) lists what the titles find, not E11 "diabetes"."""
    assert not {"E11", "A09", "I10", "J45"} & {c.code for c in icd10.search(typed)[:3]}


def test_vietnamese_search_is_as_before():
    assert [c.code for c in icd10.search("tăng huyết áp")][:1] == ["I10"]
    assert [c.code for c in icd10.search("tieu duong")][:5] == ["E11", "E10", "E12", "E13", "E14"]
    assert [c.code for c in icd10.search("dị ứng")][:1] == ["T78.4"]


def test_every_english_name_names_codes_of_the_list_and_quotes_the_first_ones_english_title():
    rows = shared_icd10.read_tsv(shared_icd10.SYNONYMS_EN)
    assert len(rows) >= 20
    for term, codes, title in rows:
        found = [icd10.lookup(code) for code in codes.split()]
        assert all(found), (term, codes)
        assert found[0].en == title, (term, found[0].en)
        assert term == term.lower() and term.isascii(), term


def test_the_english_and_vietnamese_names_agree_on_the_order_of_the_codes_they_share():
    lines = [codes.split() for source in (shared_icd10.SYNONYMS, shared_icd10.SYNONYMS_EN)
             for _term, codes, _title in shared_icd10.read_tsv(source)]
    for one in lines:
        for other in lines:
            shared = [c for c in one if c in other]
            assert shared == [c for c in other if c in one], (one, other)


def test_the_english_pages_suggestions_put_i10_first(app, fake):  # noqa: F811
    c = portal_signed_in(app, "clinic", "en")
    hits = c.get("/icd10", query_string={"for": "reason", "reason": "hypertension"}).get_data(as_text=True)
    assert re.findall(r'data-pick="([A-Z][0-9.]+) — ', hits)[:1] == ["I10"], hits
    assert 'data-pick="I10 — Essential (primary) hypertension"' in hits
