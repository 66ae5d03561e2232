"""One way to write a person's name (``sen_shared.fhir.names``): the receipts, the consult's
event and the portal's pages all name a patient with it."""

from __future__ import annotations

import pytest
from sen_shared.fhir.names import DISPLAY_MAX, name_and_role, name_key, one_line, person_name, same_person


@pytest.mark.parametrize("resource, expected", [
    ({"name": [{"family": "Nguyễn", "given": ["Văn", "An"]}]}, "Nguyễn Văn An"),  # family first, accents kept
    ({"name": [{"text": "Đặng Thị  Hồng\n", "family": "Dang"}]}, "Đặng Thị Hồng"),  # text wins, one line
    ({"name": [{"given": ["Mai"]}, {"text": "second"}]}, "Mai"),  # the first name only
    ({"name": [{"text": "   ", "family": "Lê"}]}, "Lê"),
    ({"name": []}, ""),
    ({}, ""),
    (None, ""),
    ({"name": "Nguyễn"}, ""),  # not a HumanName list
    ({"name": [{"family": 3, "given": ["Văn", None]}]}, "Văn"),
])
def test_a_persons_name_in_one_line(resource, expected):
    assert person_name(resource) == expected


def test_a_name_is_cut_to_the_longest_display():
    assert len(person_name({"name": [{"text": "Ạ " * 300}]})) <= DISPLAY_MAX
    assert one_line(None) == "" and one_line(" a \t b ") == "a b"


TITLES = ["", "BS. ", "BS.CKI ", "BS.CKII ", "BS. CKII ", "BSCKII ", "ThS.BS. ", "TS.BS. ", "PGS.TS. ", "PGS. TS. BS. ",
          "GS.TS. ", "YS. ", "ĐD. ", "đd ", "KTV. "]


@pytest.mark.parametrize("title", TITLES)
@pytest.mark.parametrize("other", ["BS.CKII ", "", "GS.TS. ", "ys "])
def test_one_person_whatever_title_either_name_carries(title, other):
    """The minutes' chair and the participants entry naming them: one person whatever title is written
    before either name, and whatever diacritics, case or spacing."""
    assert same_person(f"{title}Nguyễn Văn An", f"{other}Nguyễn Văn An")
    assert same_person(f"{title}Nguyễn  Văn An", f"{other}nguyen van an")
    assert same_person(f"{title}Trần Thị Hoa", f"{other}TRẦN THỊ HOA ")
    assert same_person(f"{title}Văn An", f"{other}Nguyễn Văn An")  # the last two words or more
    assert not same_person(f"{title}Nguyễn Văn An", f"{other}Nguyễn Văn Anh")
    assert not same_person(f"{title}Nguyễn Văn An", f"{other}Trần Thị Hoa")
    assert not same_person(f"{title}An", f"{other}Nguyễn Văn An")  # one word is no one's name


@pytest.mark.parametrize("written, key", [
    ("BS.CKII  Nguyễn Văn An", "nguyen van an"), ("PGS.TS.BS. Đặng Thị Hồng", "dang thi hong"),
    ("ĐD. Lê Thị Mai", "le thi mai"), ("Nguyễn Văn An", "nguyen van an"), ("BS.", ""), ("", "")])
def test_a_names_key_drops_the_titles_before_it(written, key):
    assert name_key(written) == key


@pytest.mark.parametrize("entry, parts", [
    ("BS. Nguyễn Văn An — chủ trì (BVĐK Đồng Tháp)", ("BS. Nguyễn Văn An", "chủ trì (BVĐK Đồng Tháp)")),
    ("YS. Trần Thị Hoa – Trạm Y tế xã Mỹ Hiệp", ("YS. Trần Thị Hoa", "Trạm Y tế xã Mỹ Hiệp")),
    ("YS Tâm - cơ sở gửi", ("YS Tâm", "cơ sở gửi")), ("BS Nguyễn Văn An ", ("BS Nguyễn Văn An", None))])
def test_a_participants_entry_is_a_name_and_a_role(entry, parts):
    assert name_and_role(entry) == parts
