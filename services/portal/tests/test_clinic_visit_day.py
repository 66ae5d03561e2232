"""The clinic's consult page names the booked video visit's weekday (session 27's walk): the nurse tells the
patient which day to come back, and "07/12/2026 07:30" alone left her to work the weekday out; the doctor's
free times already say "Thứ Hai 07/12". In the page's language, Vietnam's time."""

from __future__ import annotations

import re

import pytest

from services.portal.tests.test_clinic_consult_page import Backends, client, sign_in  # noqa: F401 - the fixture

_ = client


@pytest.mark.parametrize(("lang", "said"), [("vi", "Thứ Hai 07/12/2026 07:30 – 08:00 · Đã đặt lịch"),
                                            ("en", "Monday 07/12/2026 07:30 – 08:00 · Booked")])
def test_the_booked_visit_is_said_with_its_weekday_in_vietnam_time(client, monkeypatch, lang, said):  # noqa: F811
    backends = Backends(monkeypatch)
    # 00:30 UTC is 07:30 on Monday 7 December in Vietnam
    backends.appointments[:] = [{"resourceType": "Appointment", "id": "a1", "status": "booked",
                                 "start": "2026-12-07T00:30:00Z", "end": "2026-12-07T01:00:00Z"}]
    sign_in(client)
    if lang == "en":
        page = client.get("/consults/t1").get_data(as_text=True)
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
        client.post("/language", data={"lang": "en", "csrf_token": token})
    page = client.get("/consults/t1").get_data(as_text=True)
    shown = re.search(r'<p data-testid="visit-time">(.*?)</p>', page, re.S).group(1)
    assert re.sub(r"\s+", " ", shown).strip() == said
