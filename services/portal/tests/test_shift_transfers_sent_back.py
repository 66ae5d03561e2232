"""The shift page counts the money sent back by transfer during the shift (web/cashier.py ``shift``,
templates/shift.html), billing faked as it answers: the open shift shows the transfers received, those
sent back and the net the statement should show; the close asks for the statement's transfers sent back
beside those received and compares the net, as billing does (review: a refund by transfer made a false
difference at the close); the closed shift's summary has a line for each, Vietnamese first."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.support import csrf_token, portal_app, portal_signed_in

EXPECTED = {"cashTaken": 0, "cashRefunded": 0, "cash": 500000, "transfers": 100000,
            "transfersReceived": 150000, "transfersRefunded": 50000}


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    return portal_app(tmp_path, monkeypatch, SEN_PORTAL_CACHE_SECONDS="0")


@pytest.fixture()
def sent(monkeypatch) -> list[tuple[str, str, Any]]:
    from sen_portal.web import cashier

    calls: list[tuple[str, str, Any]] = []

    def billing(method, path, body=None, params=None, key=None):
        calls.append((method, path, body))
        if (method, path) == ("GET", "/payments/shifts/current"):
            return {"id": "6a9973cce7f043af", "openedAt": "2026-12-05T07:00:00+07:00", "openingCash": 500000,
                    "expected": EXPECTED}
        if (method, path) == ("GET", "/payments/shifts"):
            return {"shifts": []}
        if path == "/payments/shifts/current/close":
            counted = {"cash": body["countedCash"], "transfersReceived": body["countedTransfers"],
                       "transfersRefunded": body.get("countedTransfersRefunded", 0)}
            counted["transfers"] = counted["transfersReceived"] - counted["transfersRefunded"]
            return {"id": "6a9973cce7f043af", "state": "closed", "openedAt": "2026-12-05T07:00:00+07:00",
                    "closedAt": "2026-12-05T11:30:00+07:00", "expected": EXPECTED, "counted": counted,
                    "difference": {"cash": counted["cash"] - 500000, "transfers": counted["transfers"] - 100000},
                    "note": body.get("note", "")}
        return {}

    monkeypatch.setattr(cashier, "_json", billing)
    return calls


def _dd(page: str, testid: str) -> str:
    return re.search(rf'data-testid="{testid}">(.*?)</dd>', page).group(1)


def test_the_open_shift_shows_the_transfers_sent_back_and_the_net(app, sent) -> None:
    page = portal_signed_in(app, "cashier").get("/shift").get_data(as_text=True)
    assert _dd(page, "shift-transfers") == "150.000\u00a0₫"
    assert "<dt>Chuyển khoản đã trả lại</dt>" in page and _dd(page, "shift-transfers-refunded") == "50.000\u00a0₫"
    assert "<dt>Chuyển khoản phải có trên sao kê (nhận trừ trả lại)</dt>" in page
    assert _dd(page, "shift-transfers-net") == "<strong>100.000\u00a0₫</strong>"
    assert "Chuyển khoản trả lại theo sao kê (đồng)" in page and 'name="close-counted_transfers_refunded"' in page


def test_the_close_counts_the_statements_transfers_sent_back(app, sent) -> None:
    client = portal_signed_in(app, "cashier")
    token = csrf_token(client.get("/shift").get_data(as_text=True))
    form = {"which": "close", "confirm": "shift-close", "close-counted_cash": "500.000",
            "close-counted_transfers": "150.000", "csrf_token": token}
    # the statement's 150.000 ₫ in, without what went back: a gap of +50.000 ₫ on the note, nothing sent
    r = client.post("/shift", data=form)
    page = r.get_data(as_text=True)
    assert r.status_code == 422 and "chuyển khoản +50.000\u00a0₫" in page
    assert [s for s in sent if s[0] == "POST"] == []
    # with the 50.000 ₫ sent back: no gap, closed with both counts
    r = client.post("/shift", data={**form, "close-counted_transfers_refunded": "50.000"})
    page = r.get_data(as_text=True)
    assert r.status_code == 200, page
    assert [s[2] for s in sent if s[0] == "POST"] == [
        {"countedCash": 500000, "countedTransfers": 150000, "countedTransfersRefunded": 50000}]
    summary = page[page.index('data-testid="shift-summary"'):]
    summary = summary[:summary.index("</table>")]
    assert re.findall(r'<th scope="row" role="rowheader">([^<]*)</th>', summary) == [
        "Tiền mặt", "Chuyển khoản (nhận trừ trả lại)", "Chuyển khoản đã nhận", "Chuyển khoản đã trả lại"]
    assert re.findall(r'class="money">([^<]*)</td>', summary) == [
        "500.000\u00a0₫", "500.000\u00a0₫", "0\u00a0₫",  # cash
        "100.000\u00a0₫", "100.000\u00a0₫", "0\u00a0₫",  # transfers, net
        "150.000\u00a0₫", "150.000\u00a0₫", "0\u00a0₫",  # received
        "50.000\u00a0₫", "50.000\u00a0₫", "0\u00a0₫"]  # sent back


def test_a_negative_count_sent_back_is_refused_on_its_field(app, sent) -> None:
    client = portal_signed_in(app, "cashier")
    token = csrf_token(client.get("/shift").get_data(as_text=True))
    r = client.post("/shift", data={"which": "close", "confirm": "shift-close", "close-counted_cash": "500.000",
                                    "close-counted_transfers": "150.000", "close-counted_transfers_refunded": "-1",
                                    "csrf_token": token})
    assert r.status_code == 422 and 'id="close-counted_transfers_refunded-error"' in r.get_data(as_text=True)
    assert [s for s in sent if s[0] == "POST"] == []


def _closed_shift_page(app, monkeypatch, late: dict[str, Any]) -> str:  # noqa: ANN001
    """The shift page of a cashier whose last closed shift has billing's ``recordedAfterClose`` ``late``."""
    from sen_portal.web import cashier

    answer = cashier._json

    def billing(method, path, body=None, params=None, key=None):
        if (method, path) == ("GET", "/payments/shifts"):
            return {"shifts": [{"id": "s1", "state": "closed", "openedAt": "2026-12-05T07:00:00+07:00",
                                "closedAt": "2026-12-05T11:30:00+07:00", "openingCash": 0,
                                "expected": {"cash": 0, "transfers": 0}, "counted": {"cash": 0, "transfers": 0},
                                "difference": {"cash": 0, "transfers": 0}, "note": "", "recordedAfterClose": late}]}
        return answer(method, path, body, params, key)

    monkeypatch.setattr(cashier, "_json", billing)
    return portal_signed_in(app, "cashier").get("/shift").get_data(as_text=True)


def test_a_closed_shift_says_what_was_refunded_after_its_close(app, sent, monkeypatch) -> None:
    """billing's ``recordedAfterClose`` (a refund that raced the close): said apart from the close's figures."""
    page = _closed_shift_page(app, monkeypatch, {"cashRefunded": 25000, "transfersRefunded": 7000, "refunds": []})
    said = re.search(r'data-testid="shift-recorded-after-close">([^<]*)<', page).group(1)
    assert said == ("Khoản hoàn tiền ghi nhận sau khi ca đã đóng, không có trong số liệu trên: "
                    "25.000\u00a0₫ tiền mặt, 7.000\u00a0₫ chuyển khoản.")
    assert 'data-testid="shift-received-after-close"' not in page


def test_a_closed_shift_says_what_was_received_after_its_close(app, sent, monkeypatch) -> None:
    """billing's ``recordedAfterClose`` with money in (a transfer or cash that raced the close): said apart,
    in its own line; no line of refunds when none was given back after the close."""
    page = _closed_shift_page(app, monkeypatch, {"cashTaken": 0, "transfersReceived": 45000, "cashRefunded": 0,
                                                 "transfersRefunded": 0, "refunds": [], "payments": []})
    said = re.search(r'data-testid="shift-received-after-close">([^<]*)<', page).group(1)
    assert said == ("Tiền nhận ghi nhận sau khi ca đã đóng, không có trong số liệu trên: "
                    "0\u00a0₫ tiền mặt, 45.000\u00a0₫ chuyển khoản.")
    assert 'data-testid="shift-recorded-after-close"' not in page


def test_the_daily_download_names_the_money_after_a_close_and_the_banks_time(app) -> None:
    """billing's columns of money recorded after a close and of the bank's time, in Vietnamese: a row that
    raced a close says so, a closed shift's nets so recorded are whole đồng, the bank's time as the page's."""
    from sen_portal.web import daily_report

    body = (b"kind,time,id,provider,channel,invoice,facility,amount,matched,outcome,reference,cashier,shift,note,"
            b"facility_name,recorded_after_close,after_close_cash,after_close_transfers,bank_time\r\n"
            b"payment,2026-12-06T00:00:03+07:00,sepay:1,sepay,transfer,inv-1,org-a,45000,yes,applied,HD1,,s1,,,s1,,,"
            b"2026-12-05T23:59:58+07:00\r\n"
            b"shift,2026-12-05T23:59:59+07:00,s1,,,,org-a,,,,,tn,s1,,,,-25000,45000,\r\n")
    with app.test_request_context():
        header, rows = daily_report.readable(body)
    late, cash, transfers, bank = (header.index(c) for c in (
        "Ghi nhận sau khi ca đã đóng", "Tiền mặt ghi nhận sau khi ca đóng (đồng)",
        "Chuyển khoản ghi nhận sau khi ca đóng (đồng)", "Thời gian giao dịch tại ngân hàng"))
    payment, shift = rows
    assert (payment[late], payment[bank]) == ("Có", "05/12/2026 23:59:58")
    assert (shift[late], shift[cash], shift[transfers], shift[bank]) == ("", "-25000", "45000", "")
