"""The cashier's "To refund" list and the last closed shifts on /shift (web/cashier.py), with the
Flask test client and billing's answers faked as billing gives them (specs/billing.yaml:
``GET /payments/refund-tasks``, ``GET /payments/shifts?state=closed``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from sen_portal.web.backend import BackendError

from tests.support import csrf_token, portal_app, portal_signed_in, shows_alert


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    return portal_app(tmp_path, monkeypatch, SEN_PORTAL_CACHE_SECONDS="0")


TASKS = [
    {"payment": "standard:t1", "invoice": "inv-paid", "reference": "HDDATX5307H", "amount": 39000,
     "reason": "invoice-balanced", "facility": "org-a", "receivedAt": "2026-12-05T09:05:00+07:00",
     "channel": "transfer", "provider": "standard", "description": "TT HDDATX5307H", "refunded": False},
    {"payment": "sepay:t2", "invoice": "inv-gone", "reference": "HD00000000C", "amount": 150000,
     "reason": "invoice-cancelled", "facility": "org-a", "receivedAt": "2026-12-05T03:10:00Z",
     "channel": "transfer", "provider": "sepay", "description": "", "refunded": False},
]


@pytest.fixture()
def billing(monkeypatch):
    """billing's JSON answers (``cashier._json``); returns what was asked."""
    from sen_portal.web import cashier

    state: dict[str, Any] = {"asked": [], "tasks": list(TASKS), "next": None, "shifts": [], "down": set()}

    def answer(method, path, body=None, params=None, key=None):
        state["asked"].append((method, path, dict(params or {}), body))
        if path in state["down"]:
            raise BackendError("down", "billing", 0, "billing is not answering")
        if (method, path) == ("GET", "/payments/refund-tasks"):
            return {"tasks": state["tasks"], **({"next": state["next"]} if state["next"] else {})}
        if (method, path) == ("GET", "/payments/shifts"):
            return {"shifts": state["shifts"]}
        if (method, path) == ("GET", "/payments/shifts/current"):
            raise BackendError("refused", "billing", 404, "no shift is open")
        if (method, path) == ("POST", "/payments/shifts/current/close"):
            return state["closing"]
        return {}

    monkeypatch.setattr(cashier, "_json", answer)
    return state


def cells(page: str, testid: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", m).strip()
            for m in re.findall(rf'data-testid="{testid}"[^>]*>(.*?)</(?:td|a|dd|h3)>', page, re.S)]


def test_the_cashier_lists_money_to_give_back_each_linking_to_its_invoice(app, billing):
    client = portal_signed_in(app, "cashier")
    queue = client.get("/invoices").get_data(as_text=True)  # a cashier's home is the queue
    assert '<li><a href="/refunds">Cần hoàn tiền</a></li>' in queue  # in the navigation
    r = client.get("/refunds")
    page = r.get_data(as_text=True)
    assert r.status_code == 200
    assert "<h1>Cần hoàn tiền</h1>" in page
    # billing scopes it; the overpaid invoices' credits come in the same list
    assert billing["asked"][-1][:3] == ("GET", "/payments/refund-tasks", {"limit": "50", "include": "credits"})
    assert cells(page, "refund-task-invoice") == ["HDDATX5307H", "HD00000000C"]  # billing's order: oldest first
    assert re.findall(r'href="([^"]*)" data-testid="refund-task-invoice"', page) == \
        ["/invoices/inv-paid", "/invoices/inv-gone"]  # where the refund form is
    assert cells(page, "refund-task-amount") == ["39.000\u00a0₫", "150.000\u00a0₫"]
    assert cells(page, "refund-task-received") == ["05/12/2026 09:05", "05/12/2026 10:10"]  # Asia/Ho_Chi_Minh
    assert cells(page, "refund-task-reason") == ["Chuyển đến sau khi hóa đơn đã thanh toán đủ",
                                                 "Chuyển vào hóa đơn đã hủy"]
    assert "Cơ sở" not in page  # a cashier's list is their facility's: no facility column

    # pages by billing's cursor; the page number only counts for the cashier
    billing["next"] = "1764900000000.standard:t1"
    first = client.get("/refunds").get_data(as_text=True)
    nxt = re.search(r'rel="next" data-testid="refund-tasks-next" href="([^"]*)"', first).group(1)
    assert "after=1764900000000.standard:t1" in nxt and "page=2" in nxt
    billing["next"] = None
    second = client.get(nxt.replace("&amp;", "&")).get_data(as_text=True)
    assert billing["asked"][-1][2] == {"limit": "50", "include": "credits", "after": "1764900000000.standard:t1"}
    assert "Trang 2" in second and "refund-tasks-next" not in second

    billing["tasks"] = []
    empty = client.get("/refunds").get_data(as_text=True)
    assert "Không có khoản nào cần hoàn tiền." in empty

    billing["down"].add("/payments/refund-tasks")
    down = client.get("/refunds")
    assert down.status_code == 503 and shows_alert(down.get_data(as_text=True))


def test_in_english_and_for_an_admin_with_a_facility(app, billing, monkeypatch):
    from sen_portal.web import directory

    monkeypatch.setattr(directory, "org_names", lambda: {"org-a": "Trạm Y tế Mỹ Hiệp"})
    english = portal_signed_in(app, "cashier", lang="en").get("/refunds").get_data(as_text=True)
    assert "<h1>To refund</h1>" in english and "Paid to a cancelled invoice" in english
    admin = portal_signed_in(app, "admin")
    tiles = re.search(r'<ul class="tiles">(.*?)</ul>', admin.get("/").get_data(as_text=True), re.S).group(1)
    assert '<a href="/refunds">Cần hoàn tiền</a>' in tiles
    page = admin.get("/refunds?facility=org-a").get_data(as_text=True)
    assert billing["asked"][-1][2] == {"limit": "50", "include": "credits", "facility": "org-a"}
    assert "Trạm Y tế Mỹ Hiệp" in page
    admin.get("/refunds?facility=bad%20id")
    assert billing["asked"][-1][2] == {"limit": "50", "include": "credits"}  # not a facility id: every facility's


CLOSES = [
    {"id": "s2", "state": "closed", "openedAt": "2026-12-05T07:00:00+07:00", "closedAt": "2026-12-05T11:30:00+07:00",
     "openingCash": 1500000, "expected": {"cash": 1539000, "transfers": 300000},
     "counted": {"cash": 1530000, "transfers": 300000}, "difference": {"cash": -9000, "transfers": 0},
     "note": "thiếu 9 nghìn"},
    {"id": "s1", "state": "closed", "openedAt": "2026-12-04T00:00:00Z", "closedAt": "2026-12-04T04:00:00Z",
     "openingCash": 0, "expected": {"cash": 0, "transfers": 0}, "counted": {"cash": 0, "transfers": 0},
     "difference": {"cash": 0, "transfers": 0}, "note": ""},
]


def test_the_shift_page_shows_the_last_closed_shifts_with_their_summary(app, billing):
    client = portal_signed_in(app, "cashier")
    billing["shifts"] = CLOSES
    page = client.get("/shift").get_data(as_text=True)
    assert ("GET", "/payments/shifts", {"state": "closed", "limit": "3"}, None) in billing["asked"]
    assert "Các ca đã đóng gần đây" in page
    assert cells(page, "closed-shift-times") == ["05/12/2026 07:00 đến 05/12/2026 11:30",
                                                 "04/12/2026 07:00 đến 04/12/2026 11:00"]  # Asia/Ho_Chi_Minh
    assert cells(page, "closed-shift-opening") == ["1.500.000\u00a0₫", "0\u00a0₫"]
    assert cells(page, "closed-shift-note") == ["thiếu 9 nghìn"]
    first = page[page.index('data-testid="closed-shift-summary"'):]
    first = first[:first.index("</table>")]
    assert re.findall(r'class="money">([^<]*)</td>', first) == [
        "1.539.000\u00a0₫", "1.530.000\u00a0₫", "-9.000\u00a0₫", "300.000\u00a0₫", "300.000\u00a0₫", "0\u00a0₫"]
    assert "data-print" in page

    # just closed: the close's own summary, and the earlier ones below it (not the same one twice)
    billing["closing"] = {**CLOSES[0], "id": "s3"}
    billing["shifts"] = [billing["closing"], *CLOSES]
    token = csrf_token(page)
    r = client.post("/shift", data={"which": "close", "confirm": "shift-close", "close-counted_cash": "1.530.000",
                                    "close-counted_transfers": "300.000", "csrf_token": token})
    closed = r.get_data(as_text=True)
    assert r.status_code == 200 and 'data-testid="shift-summary"' in closed
    assert closed.count('data-testid="closed-shift"') == 2

    billing["shifts"] = []
    assert "Các ca đã đóng gần đây" not in client.get("/shift").get_data(as_text=True)
    billing["down"].add("/payments/shifts")
    down = client.get("/shift").get_data(as_text=True)
    assert "Không đọc được các ca đã đóng:" in down


def test_a_task_given_back_in_part_shows_and_offers_what_is_left(app, billing):
    """A late transfer of 150.000 ₫ given back 50.000 ₫ before (billing's ``refundedAmount``: a payment is
    refunded in parts) stays on the list for the 100.000 ₫ left, and its give-back says that amount."""
    billing["tasks"] = [TASKS[0], {**TASKS[1], "refundedAmount": 50000}]
    page = portal_signed_in(app, "cashier").get("/refunds").get_data(as_text=True)
    assert cells(page, "refund-task-amount") == ["39.000\u00a0₫", "100.000\u00a0₫"]
    assert "Hoàn 100.000\u00a0₫…" in page and "Hoàn 150.000\u00a0₫" not in page
