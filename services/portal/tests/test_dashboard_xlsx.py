"""The dashboard's Excel workbooks (``/dashboard/<section>.xlsx``, beside each CSV): Excel with Vietnamese
regional settings (decimal comma, list separator ';') misread the CSV, its cashless share ``0.7576``
among them. Each workbook opens (openpyxl reads it back) with the same figures as the CSV and the page,
typed: counts and đồng as numbers (the đồng with its number format), a share as a number shown as a
percentage, a day as a date."""

from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook

from services.portal.tests.read_model import read_model_answers
from services.portal.tests.test_dashboard_cashless_parts import MONEY, _figures
from tests.support import portal_app, portal_signed_in

RANGE = {"start": "07/09/2026", "end": "20/09/2026"}


def _data(db: Any, start: date, end: date, district: str | None, **kw: Any) -> dict[str, Any]:
    """domain.dashboard's figures for the downloads: every section with rows."""
    f = _figures(start, end, district)
    return {**f, "range": {**f["range"], "facility": None},
            "facilities_using": {**f["facilities_using"], "since": "2026-08-22", "until": "2026-09-20"},
            "consults_per_facility_week": [
                {"week": "2026-W37", "facility": "Organization/tyt-my-hiep", "district": "Huyện Cao Lãnh", "count": 3},
                {"week": "2026-W38", "facility": "Organization/tyt-my-hiep", "district": "Huyện Cao Lãnh", "count": 1}],
            "consults_by_status": [{"facility": "Organization/tyt-my-hiep", "district": "Huyện Cao Lãnh",
                                    "status": "completed", "count": 2}],
            "time_to_answer": {"routine": {"count": 3, "median_minutes": 40.5, "p90_minutes": 55},
                               "stat": {"count": 0, "median_minutes": None, "p90_minutes": None}},
            "time_to_conclusion": {"urgent": {"count": 1, "median_minutes": 12.0, "p90_minutes": 12}},
            "sla_breaches": [{"week": "2026-W37", "priority": "urgent", "count": 1}]}


@pytest.fixture()
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from sen_portal.domain import dashboard as domain
    from sen_portal.web import dashboard, directory

    monkeypatch.setattr(domain, "dashboard", _data)
    monkeypatch.setattr(dashboard, "figures", _figures)
    monkeypatch.setattr(dashboard, "districts", lambda *a: ["Huyện Cao Lãnh"])
    monkeypatch.setattr(dashboard, "facilities", lambda *a: {})
    monkeypatch.setattr(dashboard, "org_names", lambda: {"Organization/tyt-my-hiep": "Trạm Y tế xã Mỹ Hiệp"})
    monkeypatch.setattr(dashboard, "org_districts", lambda: {"tyt-my-hiep": "Huyện Cao Lãnh"})
    monkeypatch.setattr(directory, "names", lambda rtype: {})
    read_model_answers(monkeypatch)
    return portal_signed_in(portal_app(tmp_path, monkeypatch), "health-dept")


def _csv(client, section: str) -> list[list[str]]:
    r = client.get(f"/dashboard/{section}.csv", query_string=RANGE)
    assert r.status_code == 200, r.get_data(as_text=True)[:500]
    return list(csv.reader(io.StringIO(r.data.decode("utf-8-sig"))))


def _sheet(client, section: str) -> Any:
    r = client.get(f"/dashboard/{section}.xlsx", query_string=RANGE)
    assert r.status_code == 200, r.get_data(as_text=True)[:500]
    assert r.mimetype == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    assert r.headers["Content-Disposition"] == f'attachment; filename="{section}_2026-09-07_2026-09-20.xlsx"'
    return load_workbook(io.BytesIO(r.data)).active


def _same(cell: Any, text: str) -> bool:
    """Whether a workbook's cell holds what the CSV writes as ``text``."""
    if cell is None:
        return text == ""
    if isinstance(cell, datetime):
        return cell.date().isoformat() == text
    if isinstance(cell, int | float):
        return float(text) == cell
    return cell == text


@pytest.mark.parametrize("section", ["facilities_using", "consults_per_facility_week", "consults_by_status",
                                     "time_to_answer", "time_to_conclusion", "sla_breaches", "cashless_share",
                                     "ehr_coverage"])
def test_each_csv_has_a_workbook_with_the_same_figures_typed(client, section) -> None:
    header, *rows = _csv(client, section)
    sheet = _sheet(client, section)
    got = [list(r) for r in sheet.iter_rows(values_only=True)]
    # the same columns, named as in the CSV but the share, which the workbook shows as a percentage
    assert got[0] == ["Tỷ lệ" if h == "Tỷ lệ (0–1)" else h for h in header]
    assert len(got) == len(rows) + 1 and rows
    for want, row in zip(rows, got[1:], strict=True):
        assert all(_same(cell, text) for cell, text in zip(row, want, strict=True)), (row, want)
        assert not any(isinstance(c, str) and re.fullmatch(r"-?\d+(\.\d+)?", c) for c in row), row  # no numbers as text
    assert sheet.freeze_panes == "A2" and sheet["A1"].font.b


def test_money_shares_and_days_are_excels_own_types(client) -> None:
    sheet = _sheet(client, "cashless_share")
    header = [c.value for c in sheet[1]]
    cells = dict(zip(header, sheet[2], strict=True))
    start, share, transfers, net = cells["Từ"], cells["Tỷ lệ"], cells["Chuyển khoản (đồng)"], cells[
        "Thực thu, như báo cáo ngày (đồng)"]
    assert start.value == datetime(2026, 12, 5) and start.number_format == "dd/mm/yyyy" and start.is_date
    assert share.value == 0.7576 and share.number_format == "0.00%"
    assert transfers.value == 125_000 and transfers.number_format == '#,##0 "₫"'
    assert net.value == 370_000 and net.number_format == '#,##0 "₫"'
    assert cells["Số lần chuyển khoản"].value == 4 and cells["Số lần chuyển khoản"].number_format == "General"
    assert cells["Huyện"].value == "Toàn tỉnh"


def test_the_workbook_says_what_the_page_says(client) -> None:
    page = client.get("/dashboard", query_string=RANGE).get_data(as_text=True).replace("\u00a0", " ")
    shown = re.search(r'data-testid="cashless-share">([^<]*)<', page).group(1)
    counts = re.search(r'data-testid="cashless-counts">([^<]*)<', page).group(1)
    cells = {c.value: v for c, v in zip(_sheet(client, "cashless_share")[1], _sheet(client, "cashless_share")[2],
                                         strict=True)}
    assert shown == f"{cells['Tỷ lệ'].value * 100:.0f}%" == f"{MONEY['share'] * 100:.0f}%"
    transfers = f"{cells['Chuyển khoản (đồng)'].value:,} ₫".replace(",", ".")
    cash = f"{cells['Tiền mặt (đồng)'].value:,} ₫".replace(",", ".")
    assert f"{cells['Số lần chuyển khoản'].value} lần, {transfers}" in counts and cash in counts, counts
    # each figure's download, Excel first, then the CSV for software, with the page's filter
    for section in ("cashless_share", "ehr_coverage", "facilities_using"):
        link = re.search(rf'<a class="noprint" href="([^"]*)" download data-testid="xlsx-{section}">([^<]*)</a>', page)
        assert link and link.group(1).startswith(f"/dashboard/{section}.xlsx?start=07") and "end=20" in link.group(1)
        assert link.group(2).startswith("Tải dữ liệu: ") and link.group(2).endswith(" (Excel)")
        assert f'data-testid="csv-{section}"' in page[page.index(f'data-testid="xlsx-{section}"'):]


def test_a_refused_workbook_is_a_readable_page(client) -> None:
    r = client.get("/dashboard/ehr_coverage.xlsx", query_string={"start": "31/02/2026"})
    assert r.status_code == 400 and r.mimetype == "text/html" and "Không tải được dữ liệu" in r.get_data(as_text=True)
    assert client.get("/dashboard/not_a_section.xlsx").status_code == 404
