"""A search kept in the address (Back and refresh show it again), never its words; and a transfer put
on an invoice by the reference the QR and the receipt show.

- ``/patients`` and ``/invoices``: the search is POSTed (a name never in a URL); htmx is asked to put
  ``?s=<key>`` in the address bar, and the page's GET with that key shows the results and the words
  typed again (a Back from a result, a refresh). A key another page, session or nobody made shows the
  plain page.
- ``/unmatched``: the free-text box takes ``HD0P2B6ZNPM`` in any case and with spaces (billing reads the
  reference); one billing has no invoice for, or another facility's, reads "Không có hóa đơn mã HD123 ở
  cơ sở này".
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.support import csrf_token, portal_app, portal_signed_in

HTMX = {"HX-Request": "true"}


def bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    return portal_app(tmp_path, monkeypatch, SEN_PORTAL_CACHE_SECONDS="0")


def test_a_patient_search_is_in_the_address_by_a_key_and_back_or_refresh_shows_it(app, monkeypatch):
    from sen_portal.web import clinic

    asked: list[dict[str, str]] = []

    def fhir_get(service, path, params=None, **_kw):
        asked.append(dict(params or {}))
        assert (service, path) == ("ehr", "/fhir/Patient")
        return bundle([{"resourceType": "Patient", "id": "bn-1",
                        "name": [{"family": "Đặng", "given": ["Văn", "Hùng"]}]}])

    monkeypatch.setattr(clinic, "fhir_get", fhir_get)
    client = portal_signed_in(app, "clinic")
    page = client.get("/patients").get_data(as_text=True)
    assert 'hx-history="false"' in page  # no copy of the results in the browser's localStorage
    r = client.post("/patients/search", data={"q": "dang hung", "csrf_token": csrf_token(page)}, headers=HTMX)
    assert r.status_code == 200 and "Đặng Văn Hùng" in r.get_data(as_text=True)
    address = r.headers["HX-Push-Url"]
    assert re.fullmatch(r"/patients\?s=[\w-]{4,32}", address) and "dang" not in address
    assert asked == [{"name": "dang hung", "_count": "20"}]

    back = client.get(address)  # Back from the chart, a refresh, or htmx restoring the history entry
    body = back.get_data(as_text=True)
    assert back.status_code == 200 and 'value="dang hung"' in body and "Đặng Văn Hùng" in body
    assert "/patients/bn-1" in body and len(asked) == 2  # asked again: the EHR's answer of now
    again = client.post("/patients/search", data={"q": "dang hung", "csrf_token": csrf_token(page)}, headers=HTMX)
    assert again.headers["HX-Push-Url"] == address  # the same search, the same key

    assert "Đặng Văn Hùng" not in client.get("/patients?s=nothing-kept").get_data(as_text=True)
    other = portal_signed_in(app, "clinic")  # another browser: the key names nothing there
    shown = other.get(address).get_data(as_text=True)
    assert "Đặng Văn Hùng" not in shown and 'value="dang hung"' not in shown and len(asked) == 3


def test_an_invoice_search_is_in_the_address_by_a_key_and_back_or_refresh_shows_it(app, monkeypatch):
    from sen_portal.web import cashier

    row = {"id": "inv-1", "pid": "bn-2", "reference": "HD0P2B6ZNPM", "name": "Trương Quốc Đạt",
           "date": "2026-12-05T09:00:00+07:00", "amount": 50000, "owed": None, "gross": None,
           "status": "issued", "refund": False}
    searched: list[str] = []

    def find_invoices(q):
        searched.append(q)
        return [row]

    monkeypatch.setattr(cashier, "find_invoices", find_invoices)
    monkeypatch.setattr(cashier, "fhir_get", lambda *a, **k: bundle([]))  # the queue: empty
    client = portal_signed_in(app, "cashier")
    page = client.get("/invoices").get_data(as_text=True)
    r = client.post("/invoices/search", data={"q": "truong dat", "csrf_token": csrf_token(page)}, headers=HTMX)
    address = r.headers["HX-Push-Url"]
    assert re.fullmatch(r"/invoices\?s=[\w-]{4,32}", address) and "truong" not in address
    body = client.get(address).get_data(as_text=True)
    assert 'value="truong dat"' in body and "HD0P2B6ZNPM" in body and "Trương Quốc Đạt" in body
    assert "Tìm thấy 1 hóa đơn" in body and searched == ["truong dat", "truong dat"]
    assert "Tìm thấy" not in client.get(address + "x").get_data(as_text=True)  # a key never made: the queue
    from datetime import UTC, datetime, timedelta

    from sen_portal.web import kept

    with client.session_transaction() as s:  # a key of the patients page's search is not an invoice search
        sid = s["sid"]
    kept._db()[kept.KEPT].insert_one({"_id": f"{sid}/search/k-patients", "sid": sid,
                                      "value": ["patients", "truong dat"],
                                      "until": datetime.now(UTC) + timedelta(hours=1)})
    assert "Tìm thấy" not in client.get("/invoices?s=k-patients").get_data(as_text=True)


@pytest.fixture()
def desk(app, monkeypatch):
    """The cashier's /unmatched with one transfer waiting and no invoice awaiting payment (the free-text
    box); billing's assign answers as ``answers`` says: an invoice's reference, or a problem."""
    from sen_portal.web import cashier
    from sen_portal.web.backend import BackendError

    state: dict[str, Any] = {"posted": [], "invoices": {"HD0P2B6ZNPM": "inv-1"}}

    def _json(method, path, body=None, **_kw):
        state["posted"].append(body)
        code = re.sub(r"[\s-]", "", body["invoice"]).upper()  # billing's reading, for the test
        if code == "GONE":
            raise BackendError("refused", "billing", 404, "no payment standard:t1")
        if code not in state["invoices"]:  # another facility's (HDOTHER0000) too: billing answers it alike
            raise BackendError("refused", "billing", 404, f"no invoice {body['invoice']}",
                               extra={"invoice": body["invoice"]})
        return {"id": "assign:standard:t1", "invoice": state["invoices"][code], "reference": code}

    monkeypatch.setattr(cashier, "_json", _json)
    monkeypatch.setattr(cashier, "shared_get", lambda *a, **k: {"payments": [
        {"id": "standard:t1", "amount": 50000, "receivedAt": "2026-12-05T13:20:00+07:00", "description": "ck"}]})
    monkeypatch.setattr(cashier, "fhir_get", lambda *a, **k: bundle([]))
    state["client"] = portal_signed_in(app, "cashier")
    return state


def assign(desk, typed: str) -> tuple[int, str]:
    client = desk["client"]
    page = client.get("/unmatched").get_data(as_text=True)
    assert 'data-testid="unmatched-invoice"' in page and 'placeholder="HD…"' in page  # the free-text box
    r = client.post("/unmatched", data={"payment": "standard:t1", "invoice": typed, "csrf_token": csrf_token(page)})
    return r.status_code, r.get_data(as_text=True)


@pytest.mark.parametrize("typed", ["HD0P2B6ZNPM", "hd0p2b6znpm", " hd 0p2b 6znpm "])
def test_a_transfer_is_put_on_the_invoice_by_its_printed_reference(desk, typed):
    status, body = assign(desk, typed)
    done = re.search(r'data-testid="unmatched-done">(.*?)</div>', body, re.S).group(1)
    assert status == 200 and desk["posted"] == [{"invoice": "".join(typed.split())}]  # billing reads the rest
    assert done == 'Đã gán chuyển khoản vào hóa đơn <a href="/invoices/inv-1">HD0P2B6ZNPM</a>.'


@pytest.mark.parametrize(("typed", "said", "asked"), [
    ("HD123", "HD123", True),  # no such invoice
    ("hd other 0000", "hd other 0000", True),  # another facility's: not named here either
    ("HD/123", "HD/123", False),  # no id or reference has a "/": billing is not asked
])
def test_a_reference_no_invoice_here_has_is_said_so(desk, typed, said, asked):
    status, body = assign(desk, typed)
    assert status == 422 and f"Không có hóa đơn mã {said} ở cơ sở này." in body
    assert "Dịch vụ thanh toán không có hồ sơ này" not in body
    assert bool(desk["posted"]) is asked


def test_a_transfer_gone_meanwhile_is_not_said_to_be_a_missing_invoice(desk):
    status, body = assign(desk, "gone")
    assert status == 422 and "Không có hóa đơn mã" not in body
