"""The portal's ICD-10 list (sen_shared.icd10's data/icd10-vi.tsv, WHO ICD-10 with Vietnamese titles) and
its search: every WHO code is accepted, nothing else is, and everyday names find their codes."""

from __future__ import annotations

import re
import unicodedata

import pytest
from sen_portal.web import icd10
from sen_shared import icd10 as shared_icd10

from services.portal.tests.test_doctor_consult_page import _sign, app, fake  # noqa: F401 (fixtures)
from tests.support import portal_signed_in


def test_the_list_is_the_whole_classification_with_vietnamese_titles():
    coded = icd10.codes()
    assert len(coded) > 10_000
    assert len({c.code for c in coded}) == len(coded)
    assert {c.code[0] for c in coded} == set("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    titled = [c for c in coded if c.vi]
    assert len(titled) > 0.9 * len(coded)
    assert sum(1 for c in titled if re.search(r"[ăâđêôơưàảãáạèẻẽéẹìỉĩíịòỏõóọùủũúụỳỷỹýỵ]", c.vi.lower())) > 9_000
    assert all(unicodedata.is_normalized("NFC", c.vi) for c in titled)  # "Viêm" typed matches "Viêm" stored
    zona = icd10.lookup("B02.9")
    assert zona.vi == "Bệnh Zoster không biến chứng" and zona.en == "Zoster without complication"
    assert icd10.lookup("K35.8").label("en") == "Acute appendicitis, other and unspecified"  # WHO's English
    untitled = next(c for c in coded if not c.vi)
    assert untitled.label("vi") == untitled.en  # no Vietnamese title: the English one, never blank


@pytest.mark.parametrize("code", ["B02.9", "I21.9", "A97.0", "U07.1", "B18.00", "A91", "E11", "J18.9", "Z99.9"])
def test_who_codes_are_known(code):
    assert icd10.lookup(code).code == code


@pytest.mark.parametrize("code", [
    "I21.99",   # WHO's I21 stops at one decimal
    "Z99.99",
    "E11.65",   # ICD-10-CM (US), not WHO
    "I",        # a chapter, not a diagnosis
    "A00-A09",  # a block
    "W00.0",    # a place of occurrence, not a listed code
    "X999", "", "i10"])
def test_anything_else_is_not(code):
    assert icd10.lookup(code) is None


def test_a_code_typed_without_its_dot_is_that_code():
    assert icd10.lookup("B029").code == "B02.9"
    assert icd10.parse_codes("b029, I10") == ([icd10.lookup("B02.9"), icd10.lookup("I10")], [])


@pytest.mark.parametrize("typed,expected", [
    ("tieu duong", {"E10", "E11", "E14"}),
    ("Tiểu đường", {"E11"}),
    ("duong tieu", {"E11"}),  # any word order
    ("tieu du", {"E11"}),      # still being typed
    ("cao huyết áp", {"I10"}),
    ("huyet ap cao", {"I10"}),
    ("đột quỵ", {"I63", "I64"}),
    ("tai bien", {"I64"}),
    ("viem phoi", {"J18"}),
    ("sốt xuất huyết", {"A91", "A97"}),
    ("lao", {"A15", "A16", "A19"}),
    ("zona", {"B02"}),
    ("giời leo", {"B02"}),
    ("tang huyet ap", {"I10"}),
    ("b02.9", {"B02.9"}),
    ("nhoi mau co tim cap", {"I21"}),
])
def test_everyday_names_and_titles_find_their_codes(typed, expected):
    assert expected <= {c.code for c in icd10.search(typed)}, [c.code for c in icd10.search(typed)]


def test_what_is_typed_after_an_everyday_name_narrows_it():
    hits = [c.code for c in icd10.search("tiểu đường typ 2")]
    assert hits and all(c.startswith("E11") for c in hits), hits
    assert [c.code for c in icd10.search("sot xuat huyet")][:2] == ["A91", "A97"]  # not every "sốt" first
    assert [c.code for c in icd10.search("cao huyet ap")][:1] == ["I10"]


def test_every_synonym_names_codes_of_the_list_and_quotes_the_first_ones_title():
    rows = [line.split("\t") for line in shared_icd10.SYNONYMS.read_text(encoding="utf-8").splitlines()
            if line and not line.startswith("#")][1:]
    assert len(rows) >= 30
    for term, codes, title in rows:
        found = [icd10.lookup(code) for code in codes.split()]
        assert all(found), (term, codes)
        assert found[0].vi == title, (term, found[0].vi)


def test_the_minutes_accept_any_who_code_and_refuse_what_is_not_one(app, fake):  # noqa: F811
    c = portal_signed_in(app, "doctor")
    refused = _sign(c, "I21.9, I21.99, I10")
    assert refused.status_code == 422 and not fake.completed
    assert "Không có trong danh mục ICD-10: I21.99." in refused.get_data(as_text=True)
    assert _sign(c, "I21.9, I10, B02.9").status_code == 302
    codings = [p["valueCoding"] for p in fake.completed[-1]["parameter"] if p["name"] == "conclusion"]
    assert [(x["code"], x["display"]) for x in codings] == [
        ("I21.9", "Nhồi máu cơ tim cấp"), ("I10", "Tăng huyết áp vô căn (nguyên phát)"),
        ("B02.9", "Bệnh Zoster không biến chứng")]


def test_the_consult_forms_suggestions_find_everyday_names(app, fake):  # noqa: F811
    c = portal_signed_in(app, "clinic")
    hits = c.get("/icd10", query_string={"for": "reason", "reason": "tieu duong"}).get_data(as_text=True)
    assert 'data-pick="E11 — ' in hits and "đái tháo đường" in hits
    # type 2 first: the common one; no "đường tiêu hóa" (Q40: the words apart, the other way round; review 6)
    assert re.findall(r'data-pick="([A-Z][0-9.]+) — ', hits) == ["E11", "E10", "E12", "E13", "E14"]
    minutes = portal_signed_in(app, "doctor").get("/icd10/diagnoses", query_string={"diagnosis": "I10, zona"})
    assert 'data-pick="B02 — Bệnh do herpes zoster"' in minutes.get_data(as_text=True)


def test_a_suggestion_list_names_the_text_it_answers(app, fake):  # noqa: F811
    """Review 10: on a slow link the answer for "ta" came while "tang huyet ap" was being typed and a tap picked
    "A00 — Bệnh tả"; the list names the box's whole text it answers (app.js offers it only while the box holds
    it, tests/browser/test_slow_link.py), the minutes' codes before the words being typed included."""
    clinic = portal_signed_in(app, "clinic").get("/icd10", query_string={"for": "reason", "reason": "tang huyet ap"})
    assert '<ul class="suggest" id="reason-suggest" data-typed="tang huyet ap">' in clinic.get_data(as_text=True)
    minutes = portal_signed_in(app, "doctor").get("/icd10/diagnoses", query_string={"diagnosis": "I10\n\"zona"})
    assert 'id="diagnosis-suggest" data-typed="I10\n&#34;zona">' in minutes.get_data(as_text=True)


GENERAL_FIRST = [  # (typed, the first results, in order): the disease itself, never a pregnancy/newborn/screening code
    # type 2 (E11, not insulin-dependent) first: by far the common diabetes, a nurse's first click picks it
    ("đái tháo đường", ["E11", "E10", "E12", "E13", "E14"]),
    ("dai thao duong", ["E11", "E10", "E12", "E13", "E14"]),
    ("tiểu đường", ["E11", "E10", "E12", "E13", "E14"]),
    ("tieu duong", ["E11", "E10", "E12", "E13", "E14"]),
    ("Đái tháo đường", ["E11", "E10", "E12", "E13", "E14"]),
    ("tăng huyết áp", ["I10"]),
    ("viêm phổi", ["J18"]),
    ("gãy xương", ["S22", "S42", "S52"]),  # categories, in the list's order, before S22.2 "Gãy xương ức"
    ("sốt xuất huyết", ["A91", "A97"]),
    ("zona", ["B02"]),
    ("suy tim", ["I50", "I50.9"]),  # the title IS what is typed
    ("viêm ruột thừa", ["K35", "K36", "K37"]),
    ("Đau đầu", ["R51"]),
    ("cao huyết áp", ["I10", "I11", "I12", "I13", "I15"]),
    ("đột quỵ", ["I63", "I64", "I61"]),
    ("cảm cúm", ["J11", "J10", "J00"]),
]


@pytest.mark.parametrize("typed,first", GENERAL_FIRST)
def test_the_proper_term_finds_the_general_disease_first(typed, first):
    hits = [c.code for c in icd10.search(typed)]
    assert hits[:len(first)] == first, hits


def test_an_everyday_names_order_of_codes_ranks_them_where_the_titles_find_them_too():
    """A synonym line lists its codes most likely first (``tiểu đường``: E11 type 2, then E10 type 1); where
    the words typed are the list's own title (``đái tháo đường``) the same codes come in the same order,
    their subcategories too; codes no line names keep the list's order around them."""
    hits = [c.code for c in icd10.search("đái tháo đường", limit=40)]
    assert hits.index("E11.9") < hits.index("E10.9"), hits
    assert [c.code for c in icd10.search("dai thao duong khong phu thuoc")][:1] == ["E11"]
    assert [c.code for c in icd10.search("dai thao duong phu thuoc insuline")][:1] == ["E10"]  # type 1 asked for
    assert [c.code for c in icd10.search("gãy xương")][:3] == ["S22", "S42", "S52"]


def test_the_everyday_names_agree_on_the_order_of_the_codes_they_share():
    """One order of preference: two lines naming the same codes list them the same way round (the first line
    naming a code places it)."""
    lines = [codes.split() for _term, codes, _title in shared_icd10.read_tsv(shared_icd10.SYNONYMS)]
    for one in lines:
        for other in lines:
            shared = [c for c in one if c in other]
            assert shared == [c for c in other if c in one], (one, other)


@pytest.mark.parametrize("typed", ["đái tháo đường", "dai thao duong", "tăng huyết áp", "suy tim", "viêm phổi",
                                   "gãy xương", "sốt xuất huyết"])
def test_a_chapter_of_its_own_never_outranks_the_general_disease(typed):
    """Pregnancy (O), perinatal (P), external causes (V-Y) and screening (Z) codes come after every other
    code the words find (O24.4 gestational diabetes went to a man's record: it was the first suggestion)."""
    hits = icd10.search(typed, limit=40)
    places = [i for i, c in enumerate(hits) if c.code[0] in icd10.SPECIAL_CHAPTERS]
    general = [i for i, c in enumerate(hits) if c.code[0] not in icd10.SPECIAL_CHAPTERS]
    assert general and (not places or min(places) > max(general) or len(general) == 0 or places[0] > 4), \
        [c.code for c in hits]
    assert hits[0].code[0] not in icd10.SPECIAL_CHAPTERS


def test_a_title_that_is_what_is_typed_or_starts_with_it_comes_before_one_that_holds_it():
    hits = [c.code for c in icd10.search("suy tim", limit=12)]
    assert hits.index("I50.0") < hits.index("I11.0"), hits  # "Suy tim sung huyết" before "Bệnh tim ... có suy tim"
    hits = [c.code for c in icd10.search("đau bụng", limit=12)]
    assert hits[:2] == ["R10.4", "R10"], hits  # "Đau bụng" itself, then "Đau bụng và vùng chậu"


def test_a_specific_query_still_finds_its_chapter():
    assert [c.code for c in icd10.search("đái tháo đường thai kỳ")][:1] == ["O24.4"]
    assert "P70.2" in [c.code for c in icd10.search("đái tháo đường sơ sinh")][:2]


@pytest.mark.parametrize("typed", ["tieu duong", "tiểu đường", "duong tieu", "tieu du"])
def test_an_everyday_name_typed_suggests_no_title_that_only_holds_its_words_apart(typed):
    """Review 6: "tieu duong" listed E11-E14, then Q40 "Các dị tật bẩm sinh khác của đường tiêu hóa" (its words
    "đường … tiêu" in "đường tiêu hóa", reversed). The name answered: a title search adds only titles holding
    the name's words as it says them, in order and side by side (none for "tiểu đường")."""
    assert [c.code for c in icd10.search(typed)] == ["E11", "E10", "E12", "E13", "E14"]


def test_words_in_any_order_still_find_titles_when_no_everyday_name_is_typed():
    assert "I21" in [c.code for c in icd10.search("cap nhoi mau co tim")]
    assert {"I50", "I50.9"} <= {c.code for c in icd10.search("tim suy")}
    assert "Q40" in [c.code for c in icd10.search("duong tieu hoa")]  # what the title says, typed


def test_a_title_holding_the_words_typed_as_a_phrase_comes_before_a_name_that_only_covers_some_of_them():
    """"ho gà" (whooping cough) is the title of A37; the everyday name "ho" (R05, cough) covers one of the two
    words and the other narrows none of its codes: the title holding the phrase first, the name's codes after
    it, before titles that only hold the words apart."""
    hits = [c.code for c in icd10.search("ho gà", limit=12)]
    assert hits[:6] == ["A37", "A37.0", "A37.1", "A37.8", "A37.9", "R05"], hits
    assert [c.code for c in icd10.search("dau dau nhieu")][:1] == ["R51"]  # no title holds it: the name's codes


def test_codes_that_tie_come_in_the_lists_order():
    """The minutes form listed I15.8 "Tăng huyết áp thứ phát khác" before I15.0 "Tăng huyết áp do nguyên nhân
    mạch thận" (subcategories that hold the words alike went shortest title first): they come as the list
    has them, "other" (.8) and "unspecified" (.9) last, and an everyday name's codes in its order."""
    hits = [c.code for c in icd10.search("tăng huyết áp", limit=12)]
    assert hits[:10] == ["I10", "I11", "I12", "I13", "I15", "I15.0", "I15.1", "I15.2", "I15.8", "I15.9"], hits
    assert [c.code for c in icd10.search("hen")][:5] == ["J45", "J45.0", "J45.1", "J45.8", "J45.9"]
    hits = [c.code for c in icd10.search("dai thao duong", limit=20)]
    assert hits[:15] == ["E11", "E10", "E12", "E13", "E14", *(f"E11.{n}" for n in range(10))], hits
    hits = [c.code for c in icd10.search("suy tim", limit=12)]
    assert hits.index("I11.0") < hits.index("I11.9"), hits


@pytest.mark.parametrize("typed", ["tăng huyết áp", "suy tim", "viêm phổi", "gãy xương", "đái tháo đường", "hen",
                                   "viem gan", "ung thu", "nhiem trung", "dau"])
def test_a_familys_codes_that_hold_the_words_alike_never_go_out_of_the_lists_order(typed):
    ix = icd10._index()
    joined = " ".join(icd10._plain(icd10.words(icd10.normalize(typed))))
    hits = icd10.search(typed, limit=40)
    for a, b in zip(hits, hits[1:], strict=False):
        if a.code[:3] == b.code[:3] and len(a.code) > 3 and len(b.code) > 3:
            ka = ix.title_key(ix.coded.index(a), joined)[:3]
            kb = ix.title_key(ix.coded.index(b), joined)[:3]
            assert ka != kb or a.code < b.code, (typed, a.code, b.code)


def test_subcategories_of_the_families_the_words_name_come_before_others_that_hold_them_alike():
    """With ties in the list's order, "viêm phổi" would list B01.2 "Viêm phổi do thủy đậu" before J18.1 and
    "gãy xương" M84.1 "Gãy xương không liền" before S22.2: the families of the everyday name typed and of
    the categories whose titles hold the words come first."""
    hits = [c.code for c in icd10.search("viêm phổi", limit=60)]
    assert hits.index("J18.1") < hits.index("B01.2"), hits
    hits = [c.code for c in icd10.search("gãy xương", limit=40)]
    assert hits[10:13] == ["S22.2", "S22.3", "S22.9"], hits


@pytest.mark.parametrize("typed", ["suy tim", "heart failure"])
def test_a_title_naming_the_words_only_after_without_comes_below_those_that_have_them(typed):
    """I11.9 "Bệnh tim do tăng huyết áp, không suy tim" (WITHOUT heart failure) is no match for "suy tim" as
    I13.0 "..., có suy tim" is: it was 4th, before the I13 codes including it (review 7)."""
    found = [c.code for c in icd10.search(typed, limit=20)]
    assert found[:3] == ["I50", "I50.9", "I50.0"]
    assert {"I11.0", "I13.0", "I13.2"} <= set(found[: found.index("I11.9")])
    assert [c.code for c in icd10.search("khong suy tim")][0] == "I11.9"  # typed with "không": found as typed


@pytest.mark.parametrize("typed,first", [("tang", "I10"), ("tăng", "I10"), ("Tăng", "I10"), ("tai bien", "I63"),
                                          ("tay", "B08.4")])
def test_a_word_that_begins_an_everyday_name_lists_its_most_likely_code_first(typed: str, first: str) -> None:
    """"tang" listed B27 "Bệnh tăng bạch cầu đơn nhân nhiễm khuẩn" before hypertension: "tăng" begins the
    everyday name "tăng huyết áp", whose first code (I10) now comes first, the title hits after it."""
    hits = [c.code for c in icd10.search(typed)]
    assert hits[0] == first
    if typed.casefold() in ("tang", "tăng"):
        assert "B27" in hits[1:]  # still offered, after I10


def test_a_word_typed_in_part_or_too_short_begins_no_name() -> None:
    assert icd10._begun(icd10._index(), ["ta"]) == []  # two letters: the list's order as before
    assert icd10._begun(icd10._index(), ["tan"]) == []  # a word in part is no name's first word
    assert icd10._begun(icd10._index(), ["tang", "huyet", "ap"]) == []  # all typed: the name itself (_covers)


def test_a_word_that_begins_an_everyday_name_hides_no_title_holding_it_whole() -> None:
    """"suy" listed only J45 and J46: it begins the everyday name "suyễn" (asthma), which then hid every other
    title, so heart failure (I50 "Suy tim") and kidney failure (N18) were never suggested. A name whose last
    word is typed only in part hides no title holding the word typed whole; those come first."""
    hits = [c.code for c in icd10.search("suy")]
    assert {"I50", "N18"} <= set(hits[:4]), hits
    assert "J45" not in hits[:2], hits  # a whole word typed beats a longer word it begins
    hits = [c.code for c in icd10.search("suy", limit=40)]
    assert "J45" in hits[:hits.index("D60.0")], hits  # among them: after their categories, before subcategories
    for typed in ("suyen", "suyễn", "Suyễn", "suye", "hen suyen"):
        assert [c.code for c in icd10.search(typed)][:1] == ["J45"], typed
    assert [c.code for c in icd10.search("suy th")][:1] == ["N18"]
    ix = icd10._index()
    assert ix.holds_whole(ix.coded.index(icd10.lookup("I50")), "suy")
    assert not ix.holds_whole(ix.coded.index(icd10.lookup("J45")), "suy")


def test_a_word_naming_a_part_of_the_body_lists_that_parts_codes_before_a_name_it_begins() -> None:
    """"tai" listed I63 first (the everyday name "tai biến", stroke, begun), the ear's codes after it; a nurse typing
    "tai" means the ear far more often, and types "tai biến" whole. The classification names the ear by that word
    on its own in a chapter's title (VIII "Bệnh của tai và xương chũm", H60-H95): that chapter's titles holding the
    word whole come first, the name's code after them. "tăng", "tay" (B08.4 "tay chân miệng"; "cánh tay", "bàn
    tay" the arm and the hand), "tiểu" ("tiêu hóa" in XI's title), "đường" ("dinh dưỡng" in IV's) name no part."""
    ix = icd10._index()
    hits = icd10.search("tai")
    assert hits and all("H60" <= c.code[:3] <= "H95" for c in hits), [c.code for c in hits]
    assert all("tai" in icd10.words(icd10.normalize(c.vi)) for c in hits)
    kinds = [len(c.code) > 3 for c in hits]
    assert kinds == sorted(kinds), [c.code for c in hits]  # categories before subcategories
    hits = [c.code for c in icd10.search("tai", limit=120)]
    assert "I63" in hits and all(c[0] == "H" for c in hits[:hits.index("I63")])  # "tai biến" after the ear's
    for typed in ("tai", "Tai", "tái"):  # accents typed or not: the word is matched without them
        assert "I63" not in [c.code for c in icd10.search(typed)], typed
    assert ix.chapter_naming(["tai"]) == ("H60", "H95")
    assert ix.chapter_naming(["mau"]) == ("D50", "D89")  # "Bệnh máu, cơ quan tạo máu …": the blood
    for word in ("tang", "tay", "tieu", "duong", "suy", "hap"):
        assert ix.chapter_naming([word]) is None, word
    assert [c.code for c in icd10.search("máu nhiễm mỡ")][:1] == ["E78"]  # the name all typed: as before


@pytest.mark.parametrize("typed", ["tai bien", "tai biến", "Tai biến", "tai bien mach mau nao", "tai bie"])
def test_tai_bien_typed_whole_is_the_stroke(typed) -> None:
    hits = [c.code for c in icd10.search(typed)]
    assert hits[:3] == ["I63", "I64", "I61"], hits


@pytest.mark.parametrize("typed", ["tai nan", "tai nạn", "Tai nạn"])
def test_tai_nan_lists_the_titles_holding_it_before_those_holding_its_words_apart(typed) -> None:
    """"tai nan" (an accident) listed K08.1 "Mất răng do tai nạn …", then titles holding "tại" (at) and a word
    "nan" begins ("nặng", "nang") apart: E84.0 "Xơ nang … tại phổi", F31.4 "… hiện tại giai đoạn nặng …", the
    external causes' "Tai nạn giao thông …" (V-X, a chapter of its own) after all of them. A title holding the
    words as typed now comes before one holding them only apart, whatever its chapter; among those holding them
    alike the general disease still comes first."""
    hits = icd10.search(typed, limit=12)
    assert hits[0].code == "K08.1", [c.code for c in hits]  # the one general title holding "tai nạn"
    held = ["tai nan" in " ".join(icd10.words(icd10.normalize(c.vi))) for c in hits]
    assert all(held), [(c.code, c.vi) for c, h in zip(hits, held, strict=True) if not h]
    assert not {"E84.0", "F31.4", "I63"} & {c.code for c in hits}
    assert hits[1].code[0] in "VWX"
