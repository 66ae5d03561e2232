from datetime import UTC, datetime

import pytest
from sen_shared.fhir.search import SearchError, build_sort, decode_cursor, encode_cursor, page_filter, parse_search


def test_round_trip():
    values = ["nguyen van an", datetime(2024, 3, 5, 1, 2, 3, 456000, tzinfo=UTC), 1.5, None, 7, "p-1"]
    cur = encode_cursor(values)
    assert all(ch.isalnum() or ch in "-_." for ch in cur)
    assert decode_cursor(cur) == values


def test_naive_datetimes_are_utc():
    assert decode_cursor(encode_cursor([datetime(2024, 1, 1)])) == [datetime(2024, 1, 1, tzinfo=UTC)]


@pytest.mark.parametrize("mutate", [
    lambda c: c[:-1] + ("A" if c[-1] != "A" else "B"),
    lambda c: ("X" if c[0] != "X" else "Y") + c[1:],
    lambda c: c.replace(".", ""),
    lambda c: "garbage",
    lambda c: "",
])
def test_tamper(mutate):
    cur = encode_cursor(["a", 1])
    with pytest.raises(SearchError):
        decode_cursor(mutate(cur))


def test_page_filter_shape():
    req = parse_search("Patient", [("_sort", "family,-birthdate")])
    assert build_sort(req) == [("sp_family_s", 1), ("sp_birthdate_s", -1), ("_id", 1)]
    d = datetime(2000, 1, 1, tzinfo=UTC)
    f = page_filter(req, encode_cursor(["tran", d, "p9"]))
    assert f["$or"][0] == {"sp_family_s": {"$gt": "tran"}}
    with pytest.raises(SearchError):
        page_filter(req, encode_cursor(["tran"]))
