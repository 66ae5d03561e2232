"""The dashboard's cashless share says what it counts: takings (money applied to invoices), apart from
them the unmatched transfers, the late ones owed back and the refunds, and the figures the cashiers'
daily reconciliation gives; the province's figure says it holds the transfers of no facility."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from services.portal.tests.read_model import read_model_answers
from tests.support import portal_app, portal_signed_in

MONEY = {"transfer_amount": 125_000, "cash_amount": 40_000, "share": 0.7576, "transfer_count": 4, "cash_count": 1,
         "assigned_amount": 45_000, "assigned_count": 1, "unmatched_amount": 245_000, "unmatched_count": 4,
         "unmatched_without_facility": 155_000, "late_amount": 25_000, "late_count": 1, "refunds": 20_000,
         "refunds_of_takings": 0, "refunds_owed": 20_000, "received_transfer_amount": 350_000,
         "received_cash_amount": 40_000, "received_count": 8, "net": 370_000,
         "unmatched_assigned_amount": 45_000, "unmatched_assigned_count": 1, "unmatched_refunded_amount": 15_000,
         "unmatched_refunded_count": 1, "unmatched_waiting_amount": 185_000, "unmatched_waiting_count": 2,
         "assigned_earlier_amount": 0, "assigned_earlier_count": 0}


def _figures(start: date, end: date, district: str | None, facility: str | None = None) -> dict[str, Any]:
    return {"range": {"start": "2026-12-05", "end": "2026-12-05", "district": district, "weeks": ["2026-W49"]},
            "facilities_using": {"count": 23, "new": 1, "baseline": 22, "goal": 165, "share": 0.14},
            "consults_per_facility_week": [], "time_to_answer": {}, "time_to_conclusion": {}, "sla_breaches": [],
            "cashless_share": MONEY,
            "ehr_coverage": {"patients": 9, "population": 10, "share": 0.9, "as_of": "2026-12-05",
                             "population_outdated": False},
            "generated_at": "2026-12-05T10:00:00+07:00"}


@pytest.mark.parametrize("lang,expected", [
    ("vi", ["Chuyển khoản: 4 lần, 125.000 ₫", "Không tính vào tiền thu:",
            "Chuyển khoản chưa khớp (không ghi hóa đơn, tính vào ngày nhận): 4 lần, 245.000 ₫",
            "trong đó vào tài khoản không thuộc cơ sở nào: 155.000 ₫",
            "Chuyển khoản đến muộn, phải trả lại (việc hoàn tiền): 1 lần, 25.000 ₫",
            "Trong chuyển khoản của tiền thu, được gán từ hàng chờ chưa khớp: 1 lần, 45.000 ₫",
            "trong đó, tính đến nay: đã gán vào hóa đơn 45.000 ₫, đã trả lại 15.000 ₫, còn chờ 185.000 ₫",
            "trong đó từ chuyển khoản đến trước kỳ này (đã trừ phần hoàn lại): 0 ₫",
            "Chuyển khoản chưa khớp được tính vào ngày nhận, dù sau đó ra sao",
            "chuyển khoản nhận 350.000 ₫, tiền mặt 40.000 ₫, hoàn trả 20.000 ₫, thực thu 370.000 ₫",
            "Toàn tỉnh: của mọi cơ sở, cộng các khoản chuyển vào tài khoản không thuộc cơ sở nào"]),
    ("en", ["Not in the takings:", "Unmatched transfers (named no invoice, on the day they came): 4,",
            "of which to accounts no facility owns:", "Late transfers, owed back (refund tasks): 1,",
            "of them, since: assigned to invoices 45.000 ₫, given back 15.000 ₫, still waiting 185.000 ₫",
            "of which from transfers that came before this period, less what was given back of them: 0 ₫",
            "An unmatched transfer counts on the day it came, whatever became of it since",
            "As the cashiers' daily reconciliation counts it:",
            "Whole province: every facility's, and the transfers to accounts no facility owns"])])
def test_the_parts_apart_from_the_takings_are_labelled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       lang: str, expected: list[str]) -> None:
    from sen_portal.web import dashboard, directory

    monkeypatch.setattr(dashboard, "figures", _figures)
    monkeypatch.setattr(directory, "names", lambda rtype: {})
    monkeypatch.setattr(dashboard, "org_districts", lambda: {"tyt-my-hiep": "Huyện Cao Lãnh"})
    read_model_answers(monkeypatch)
    client = portal_signed_in(portal_app(tmp_path, monkeypatch), "health-dept", lang)
    page = client.get("/dashboard").get_data(as_text=True).replace("\u00a0", " ")
    for text in expected:
        assert text in page, text
    # the CSV's column says it is net of what was given back, as the page and the daily report do
    from sen_portal.domain import dashboard as figures

    monkeypatch.setattr(figures, "dashboard", lambda db, start, end, district, **kw:
                        {**(f := _figures(start, end, district)), "range": {**f["range"], "facility": None}})
    header = client.get("/dashboard/cashless_share.csv").data.decode("utf-8-sig").splitlines()[0]
    assert ("Gán từ chuyển khoản đến trước kỳ, đã trừ phần hoàn lại (đồng)" if lang == "vi" else
            "Assigned from transfers that came before the period, less what was given back of them (đồng)") in header
    district = client.get("/dashboard?district=Huy%E1%BB%87n+Cao+L%C3%A3nh").get_data(as_text=True)
    assert ("Huyện này" if lang == "vi" else "This district") in district
    assert ("không thuộc cơ sở nào: 155" if lang == "vi" else "of which to accounts no facility owns") not in district
