"""The pages' short date and time (``formatting.when``): digits only, in Asia/Ho_Chi_Minh, the same as babel's
``dd/MM/yyyy HH:mm`` in both languages, which it no longer calls for them (a twelfth of the worklist's CPU)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from flask_babel import force_locale, format_datetime

from tests.support import portal_app

INSTANTS = ["2026-12-06T16:59:59Z", "2026-12-06T17:00:00Z", "2026-12-31T23:30:00+00:00", "2026-01-01T06:59:00+07:00",
            "2026-03-08T01:02:03.456-05:00", "2026-12-06T10:00:00", "2026-02-28T17:00:00Z"]


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_the_short_form_is_babels_in_vietnam_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lang: str) -> None:
    from sen_portal.web.formatting import parse_instant, when

    app = portal_app(tmp_path, monkeypatch)
    with app.test_request_context("/"), force_locale(lang):
        for text in INSTANTS:
            assert when(text) == format_datetime(parse_instant(text), "dd/MM/yyyy HH:mm"), text
        aware = [datetime(2026, 12, 6, 17, 0, tzinfo=UTC),
                 datetime(2026, 12, 7, 0, 5, tzinfo=timezone(timedelta(hours=7)))]
        for dt in aware:
            assert when(dt) == format_datetime(dt, "dd/MM/yyyy HH:mm")
        naive = datetime(2026, 12, 6, 17, 0)  # naive: babel's reading (UTC), unchanged
        assert when(naive) == format_datetime(naive, "dd/MM/yyyy HH:mm")
        assert when("2026-12-06T17:00:00Z") == "07/12/2026 00:00"  # past midnight in Vietnam: the next day
        assert when("not a time") == "—" and when(None) == "—"
        assert when("2026-12-06T17:00:00Z", "HH:mm") == format_datetime(parse_instant("2026-12-06T17:00:00Z"), "HH:mm")
