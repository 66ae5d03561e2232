"""The dashboard's cashless share is takings net of refunds (a refund's amount comes off the channel
of the payment it refunds; the page says so), and its minutes follow one rounding rule on the page
and in the CSV (``report_facts.one_decimal``: whole, else one decimal): a median of 2.5 minutes was
"2 phút" on the page and 2.5 in ``time_to_answer.csv``; now "2,5 phút" (the Vietnamese decimal
comma) and 2.5."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sen_portal.domain.dashboard import cashless
from sen_portal.domain.report_facts import extract, median_and_p90, one_decimal, rows_of_facts

from tests.support import portal_app, portal_signed_in


def _event(kind: str, data: dict[str, Any], eid: str) -> dict[str, Any]:
    return {"id": eid, "type": f"vn.sen.{kind}.v1", "time": "2026-11-03T08:00:00Z", "data": data}


def test_a_refund_comes_off_the_refunded_payments_channel_and_is_not_a_payment() -> None:
    base = {"district": "Huyện Cao Lãnh", "currency": "VND", "matched": True, "invoice": "Invoice/inv-1"}
    facts = [extract(_event("billing.payment.received", {**base, "payment": "cashier:1", "amount": 100_000,
                                                         "channel": "cash", "receivedAt": "2026-11-03T09:00:00+07:00"},
                            "e1")),
             extract(_event("billing.payment.received", {**base, "payment": "standard:2", "amount": 100_000,
                                                         "channel": "transfer",
                                                         "receivedAt": "2026-11-03T10:00:00+07:00"}, "e2")),
             extract(_event("billing.payment.refunded", {"payment": "standard:2", "amount": 100_000,
                                                         "district": "Huyện Cao Lãnh", "currency": "VND",
                                                         "channel": "transfer", "refundChannel": "cash",
                                                         "refundedAt": "2026-11-03T11:00:00+07:00"}, "e3"))]
    money = cashless(rows_of_facts(facts, "money"))
    assert (money["transfer_amount"], money["transfer_count"]) == (0, 1)
    assert (money["cash_amount"], money["cash_count"]) == (100_000, 1)
    assert len(rows_of_facts(facts, "events")) == 2  # the refund is still an event of its own kind


def test_one_rounding_rule_for_the_minutes() -> None:
    assert median_and_p90({2: 1, 3: 1}) == (2.5, 3)
    assert median_and_p90({2: 2}) == (2, 2) and isinstance(median_and_p90({2: 2})[0], int)
    assert [one_decimal(v) for v in (None, 2.0, 2.5, 2.25, 2.04, 62.5)] == [None, 2, 2.5, 2.3, 2, 62.5]


def _figures(start: date, end: date, district: str | None, facility: str | None = None) -> dict[str, Any]:
    return {"range": {"start": "2026-11-02", "end": "2026-11-15", "district": district,
                      "weeks": ["2026-W45", "2026-W46"]},
            "facilities_using": {"count": 23, "new": 1, "baseline": 22, "goal": 165, "share": 0.14},
            "consults_per_facility_week": [],
            "time_to_answer": {"routine": {"count": 2, "median_minutes": 2.5, "p90_minutes": 3},
                               "urgent": {"count": 1, "median_minutes": 2, "p90_minutes": 2}},
            "time_to_conclusion": {"routine": {"count": 2, "median_minutes": 62.5, "p90_minutes": 70}},
            "sla_breaches": [],
            "cashless_share": {"transfer_amount": 0, "cash_amount": 100000, "share": 0.0,
                               "transfer_count": 1, "cash_count": 1},
            "ehr_coverage": {"patients": 9, "population": 10, "share": 0.9, "as_of": "2026-11-15",
                             "population_outdated": False},
            "generated_at": "2026-11-15T10:00:00+07:00"}


@pytest.mark.parametrize("lang,half,whole,long,note", [
    ("vi", "<td>2,5 phút</td>", "<td>2 phút</td>", "<td>1 giờ 2,5 phút</td>",
     "Tiền thu: tiền đã ghi vào hóa đơn, trừ tiền hoàn trả"),
    ("en", "<td>2.5 min</td>", "<td>2 min</td>", "<td>1 h 2.5 min</td>",
     "Takings: money applied to invoices, net of the refunds of it")])
def test_the_page_writes_the_csvs_minutes_and_says_amounts_are_net(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   lang, half, whole, long, note) -> None:
    from sen_portal.web import dashboard, directory

    monkeypatch.setattr(dashboard, "figures", _figures)
    monkeypatch.setattr(directory, "names", lambda rtype: {})
    monkeypatch.setattr(dashboard, "org_districts", lambda: {"tyt-my-hiep": "Huyện Cao Lãnh"})
    client = portal_signed_in(portal_app(tmp_path, monkeypatch), "health-dept", lang)
    page = client.get("/dashboard").get_data(as_text=True)
    assert half in page and whole in page and long in page
    assert "2,0" not in page and "2.0 min" not in page
    assert 'data-testid="cashless-share">0%' in page and note in page
