"""The dashboard's CSVs in the page's language: the priorities of ``time_to_answer.csv`` (and of
the breaches') by their names, as the charts say them (they were ``routine``/``urgent``/``asap``/
``stat`` in both languages), and the share column "Tỷ lệ" as the page writes it (the CSV said
"Tỉ lệ"). The file is written by ``csvfile`` (UTF-8 with its BOM), as the daily report's is.
A one-row figure's district column names the district chosen, or "Toàn tỉnh" (it said "Theo huyện
False"); a district not of the province is a readable 400."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from services.portal.tests.read_model import read_model_answers
from tests.support import csrf_token, portal_app, portal_signed_in

ROWS = {"time_to_answer": (["priority", "count", "median_minutes", "p90_minutes"],
                           [["routine", 3, 40.0, 55], ["urgent", 1, 12.0, 12], ["asap", 0, None, None],
                            ["stat", 2, 4.0, 6]]),
        "cashless_share": (["start", "end", "transfer_amount", "cash_amount", "share"],
                           [["2026-09-07", "2026-09-20", 150000, 50000, 0.75]])}


def _ehr(district: str | None) -> tuple[list[str], list[list[object]]]:
    """domain.dashboard's ehr_coverage rows: the province's, or no figure for a district."""
    return (["start", "end", "district", "patients", "population", "share", "as_of"],
            [["2026-09-07", "2026-09-20", district, *((9, 10, 0.9) if district is None else (None,) * 3),
              "2026-09-20"]])


@pytest.fixture()
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from sen_portal.web import dashboard

    monkeypatch.setattr(dashboard, "csv_rows", lambda section, db, start, end, district, **kw:
                        _ehr(district) if section == "ehr_coverage" else ROWS[section])
    monkeypatch.setattr(dashboard, "org_districts", lambda: {"tyt-my-hiep": "Huyện Cao Lãnh"})
    monkeypatch.setattr(dashboard, "figures",
                        lambda start, end, district, facility=None: {"consults_per_facility_week": []})
    read_model_answers(monkeypatch)
    return portal_signed_in(portal_app(tmp_path, monkeypatch), "health-dept")


def rows(client, section: str, district: str = "") -> list[list[str]]:
    r = client.get(f"/dashboard/{section}.csv", query_string={"start": "07/09/2026", "end": "20/09/2026",
                                                              "district": district})
    assert r.status_code == 200, r.get_data(as_text=True)[:500]
    assert r.data.startswith("\ufeff".encode())
    return list(csv.reader(io.StringIO(r.data.decode("utf-8-sig"))))


def test_the_priorities_are_named_in_the_pages_language(client) -> None:
    got = rows(client, "time_to_answer")
    assert [r[0] for r in got[1:]] == ["Thường quy", "Khẩn", "Càng sớm càng tốt", "Cấp cứu"]
    assert got[1][1:] == ["3", "40.0", "55"] and got[3][1:] == ["0", "", ""]
    token = csrf_token(client.get("/dashboard").get_data(as_text=True))
    client.post("/language", data={"lang": "en", "next": "/dashboard", "csrf_token": token})
    got = rows(client, "time_to_answer")
    assert [r[0] for r in got[1:]] == ["Routine", "Urgent", "As soon as possible", "Emergency (stat)"]


def test_the_share_column_is_ty_le_as_on_the_page(client) -> None:
    header = rows(client, "cashless_share")[0]
    assert "Tỷ lệ (0–1)" in header and not any("Tỉ lệ" in h for h in header)


def test_the_district_column_names_the_district_or_the_whole_province(client) -> None:
    header, row = rows(client, "ehr_coverage")
    assert header == ["Từ", "Đến", "Huyện", "Người bệnh có hồ sơ", "Dân số", "Tỷ lệ (0–1)", "Tính đến"]
    assert row == ["2026-09-07", "2026-09-20", "Toàn tỉnh", "9", "10", "0.9", "2026-09-20"]
    assert not any("Theo huyện" in h or "False" in h for h in header + row)
    _, row = rows(client, "ehr_coverage", "Huyện Cao Lãnh")
    assert row == ["2026-09-07", "2026-09-20", "Huyện Cao Lãnh", "", "", "", "2026-09-20"]


@pytest.mark.parametrize("query", [{"district": "<b>x"}, {"start": "31/02/2026"}, {"start": "20/09/2026",
                                                                                    "end": "07/09/2026"}])
def test_a_refused_download_is_a_readable_page(client, query) -> None:
    r = client.get("/dashboard/ehr_coverage.csv", query_string=query)
    assert r.status_code == 400 and r.mimetype == "text/html"
    page = r.get_data(as_text=True)
    assert "Không tải được dữ liệu" in page and 'data-testid="back"' in page and "<b>x" not in page
