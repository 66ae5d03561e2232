"""Consults by status on the dashboard page (review 8, finding 4): where the consults requested in the period
stand now, as a two-column table that reads at 360 px (status, consults), each facility's in a table
below it, in Vietnamese (English beside it in the English page), and the page's CSV with its header and
statuses in the page's language. The figures: domain.dashboard.consult_statuses (tests/integration/
test_reporting_consult_status.py counts them from teleconsult's events)."""

from __future__ import annotations

import html
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from services.portal.tests.read_model import read_model_answers
from tests.support import portal_app, portal_signed_in

MY_HIEP, DBK = "Organization/tyt-my-hiep", "Organization/tyt-doc-binh-kieu"
NAMES = {"tyt-my-hiep": "Trạm Y tế xã Mỹ Hiệp", "tyt-doc-binh-kieu": "Trạm Y tế xã Đốc Binh Kiều"}
DISTRICTS = {"tyt-my-hiep": "Huyện Cao Lãnh", "tyt-doc-binh-kieu": "Huyện Tháp Mười"}
STATUS = [{"facility": DBK, "district": "Huyện Tháp Mười", "status": "waiting", "count": 1},
          {"facility": DBK, "district": "Huyện Tháp Mười", "status": "rejected", "count": 1},
          {"facility": MY_HIEP, "district": "Huyện Cao Lãnh", "status": "accepted", "count": 1},
          {"facility": MY_HIEP, "district": "Huyện Cao Lãnh", "status": "completed", "count": 10}]


def _figures(start: date, end: date, district: str | None, facility: str | None = None) -> dict[str, Any]:
    from sen_portal.domain.dashboard import cashless

    rows = [r for r in STATUS if facility is None or r["facility"] == f"Organization/{facility}"]
    return {"range": {"start": "2026-11-01", "end": "2026-12-04", "district": district,
                      "facility": f"Organization/{facility}" if facility else None, "weeks": ["2026-W48"]},
            "facilities_using": {"count": 24, "new": 2, "baseline": 22, "goal": 165, "share": 0.15},
            "consults_per_facility_week": [{"facility": r["facility"], "district": r["district"], "week": "2026-W48",
                                            "count": r["count"]} for r in rows],
            "consults_by_status": rows,
            "time_to_answer": {}, "time_to_conclusion": {}, "sla_breaches": [], "cashless_share": cashless([]),
            "ehr_coverage": {"patients": 9, "population": 10, "share": 0.9, "as_of": "2026-12-04",
                             "population_outdated": False, "without_district": 0},
            "generated_at": "2026-12-04T10:00:00+07:00"}


def _client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lang: str = "vi") -> Any:
    from sen_portal.domain import dashboard as domain
    from sen_portal.web import dashboard

    monkeypatch.setattr(dashboard, "figures", _figures)
    monkeypatch.setattr(dashboard, "org_names", lambda: NAMES)
    monkeypatch.setattr(dashboard, "org_districts", lambda: DISTRICTS)
    monkeypatch.setattr(dashboard, "org_without_care", lambda: set())

    def dash(db, start, end, district=None, **kw):
        return _figures(start, end, district, (kw.get("facility") or "").removeprefix("Organization/") or None)

    monkeypatch.setattr(domain, "dashboard", dash)
    read_model_answers(monkeypatch)
    return portal_signed_in(portal_app(tmp_path, monkeypatch), "health-dept", lang)


def _table(page: str, testid: str) -> list[tuple[str, ...]]:
    body = re.search(rf'data-testid="{testid}">(.*?)</table>', page, re.S).group(1)
    return [tuple(re.findall(r"<td>([^<]*)</td>", row)) for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
            if "<td>" in row]


def test_the_page_says_where_the_consults_stand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client = _client(tmp_path, monkeypatch)
    page = html.unescape(client.get("/dashboard?start=01/11/2026&end=04/12/2026").get_data(as_text=True))
    assert '<h2 id="h-status">Số ca hội chẩn theo trạng thái</h2>' in page
    # every status, in the order a consult goes, the whole scope's: 13 requested, 10 completed, 3 not
    assert _table(page, "consults-by-status") == [
        ("Chờ tuyến trên", "1"), ("Đã nhận", "1"), ("Đã đặt lịch", "0"), ("Đã hoàn thành", "10"),
        ("Đã hủy", "0"), ("Đã từ chối", "1")]
    assert _table(page, "consults-by-status-facility") == [
        ("Trạm Y tế xã Đốc Binh Kiều", "Chờ tuyến trên", "1"), ("Trạm Y tế xã Đốc Binh Kiều", "Đã từ chối", "1"),
        ("Trạm Y tế xã Mỹ Hiệp", "Đã nhận", "1"), ("Trạm Y tế xã Mỹ Hiệp", "Đã hoàn thành", "10")]
    assert 'data-testid="csv-consults_by_status"' in page
    # one facility: its own, no table by facility (it would repeat the first)
    page = html.unescape(client.get("/dashboard?start=01/11/2026&end=04/12/2026&facility=tyt-my-hiep")
                         .get_data(as_text=True))
    assert dict(_table(page, "consults-by-status"))["Đã hoàn thành"] == "10"
    assert 'data-testid="consults-by-status-facility"' not in page


def test_in_english_and_its_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client = _client(tmp_path, monkeypatch, "en")
    page = html.unescape(client.get("/dashboard?start=01/11/2026&end=04/12/2026").get_data(as_text=True))
    assert '<h2 id="h-status">Consults by status</h2>' in page
    assert [s for s, _n in _table(page, "consults-by-status")] == [
        "Waiting for the hub", "Accepted", "Booked", "Completed", "Cancelled", "Rejected"]
    vi = _client(tmp_path, monkeypatch)
    r = vi.get("/dashboard/consults_by_status.csv?start=01/11/2026&end=04/12/2026")
    assert r.status_code == 200
    lines = r.data.decode("utf-8-sig").splitlines()
    assert lines[0] == "Mã cơ sở,Cơ sở,Huyện,Trạng thái,Số lượng"
    assert lines[1:] == ["tyt-doc-binh-kieu,Trạm Y tế xã Đốc Binh Kiều,Huyện Tháp Mười,Chờ tuyến trên,1",
                         "tyt-doc-binh-kieu,Trạm Y tế xã Đốc Binh Kiều,Huyện Tháp Mười,Đã từ chối,1",
                         "tyt-my-hiep,Trạm Y tế xã Mỹ Hiệp,Huyện Cao Lãnh,Đã nhận,1",
                         "tyt-my-hiep,Trạm Y tế xã Mỹ Hiệp,Huyện Cao Lãnh,Đã hoàn thành,10"]
