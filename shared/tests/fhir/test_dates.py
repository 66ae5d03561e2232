from datetime import UTC, datetime, timedelta

import pytest
from sen_shared.fhir.search.dates import LOCAL_TZ, MAX, DateFormatError, parse_range

MS = timedelta(milliseconds=1)


@pytest.mark.parametrize(("text", "lo", "hi"), [
    ("2020", datetime(2020, 1, 1, tzinfo=LOCAL_TZ), datetime(2021, 1, 1, tzinfo=LOCAL_TZ) - MS),
    ("2020-02", datetime(2020, 2, 1, tzinfo=LOCAL_TZ), datetime(2020, 3, 1, tzinfo=LOCAL_TZ) - MS),
    ("2020-12", datetime(2020, 12, 1, tzinfo=LOCAL_TZ), datetime(2021, 1, 1, tzinfo=LOCAL_TZ) - MS),
    ("2020-02-29", datetime(2020, 2, 29, tzinfo=LOCAL_TZ), datetime(2020, 3, 1, tzinfo=LOCAL_TZ) - MS),
    ("2020-02-29T10:30Z", datetime(2020, 2, 29, 10, 30, tzinfo=UTC), datetime(2020, 2, 29, 10, 31, tzinfo=UTC) - MS),
    ("2020-02-29T10:30:15+07:00", datetime(2020, 2, 29, 3, 30, 15, tzinfo=UTC),
     datetime(2020, 2, 29, 3, 30, 16, tzinfo=UTC) - MS),
    ("2020-02-29T10:30:15.250Z", datetime(2020, 2, 29, 10, 30, 15, 250000, tzinfo=UTC),
     datetime(2020, 2, 29, 10, 30, 15, 250000, tzinfo=UTC)),
    ("9999", datetime(9999, 1, 1, tzinfo=LOCAL_TZ), MAX),
])
def test_implicit_precision(text, lo, hi):
    assert parse_range(text) == (lo, hi)


@pytest.mark.parametrize("text", ["2020-13", "2020-02-30", "20200101", "2020-1-1", "yesterday", "2020-01-01T25:00Z"])
def test_malformed(text):
    with pytest.raises(DateFormatError):
        parse_range(text)
