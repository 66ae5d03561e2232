"""One way to write a person's name (``sen_shared.fhir.names``): the receipts, the consult's
event and the portal's pages all name a patient with it."""

from __future__ import annotations

import pytest
from sen_shared.fhir.names import DISPLAY_MAX, one_line, person_name


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
