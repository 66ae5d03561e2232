"""The dashboard's date boxes say what is wrong with a date in the date's own words, tied to the box, as
every other date box of the portal does (forms.LocalDateField through ``_form.html``'s ``field``): they
said only "Nhập ngày hợp lệ." for 31/02/2026 and for abc alike, with no aria-invalid and no
aria-describedby, so a screen reader heard nothing on the box (found walking the dashboard at 360 px)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support import portal_app, portal_signed_in


@pytest.mark.parametrize("lang,missing,shape", [
    ("vi", "Ngày 31/02/2026 không có trong lịch.", "Nhập ngày theo dạng ngày/tháng/năm, ví dụ 05/12/2026."),
    ("en", "The date 31/02/2026 does not exist.", "Enter the date as day/month/year, e.g. 05/12/2026.")])
def test_a_wrong_date_is_said_in_its_own_words_on_its_box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           lang: str, missing: str, shape: str) -> None:
    from sen_portal.web import dashboard, directory

    monkeypatch.setattr(directory, "names", lambda rtype: {})
    monkeypatch.setattr(dashboard, "districts", lambda *a: [])
    monkeypatch.setattr(dashboard, "facilities", lambda *a: {})
    client = portal_signed_in(portal_app(tmp_path, monkeypatch), "health-dept", lang)
    r = client.get("/dashboard?start=31/02/2026&end=abc")
    page = r.get_data(as_text=True)
    assert f'<p class="error" id="start-error">{missing}</p>' in page
    assert f'<p class="error" id="end-error">{shape}</p>' in page
    for box, typed in (("start", "31/02/2026"), ("end", "abc")):
        tag = re.search(rf'<input[^>]* id="{box}"[^>]*>', page).group(0)
        assert 'aria-invalid="true"' in tag and f'aria-describedby="{box}-error"' in tag and f'value="{typed}"' in tag
    assert "Nhập ngày hợp lệ." not in page and "Enter a valid date." not in page
