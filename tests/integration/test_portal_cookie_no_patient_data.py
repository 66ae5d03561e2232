"""No patient's data in the portal's session cookie: what a session keeps of its patients is on the server.

The session cookie is Flask's, signed, not encrypted: anyone holding a copy (a shared clinic computer's browser
profile, a proxy's log, a support screenshot) reads it with base64. It held what the nurse typed at a take-on
(name, birth date, sex) and the last 8 searched names or numbers. Now both are the portal database's
``session_kept`` (web/kept.py), under the session's id; the cookie is decoded here as anyone would (Flask's
serializer, the development secret) after a take-on and after searches, and the pages still say what they said.
Against the real database; the EHR and billing stood in for (the unit tests' stand-ins).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from flask.sessions import SecureCookieSessionInterface
from sen_shared import http

from services.portal.tests.test_patient_take_on_and_same_person import TAM, Ehr, _take_on_from_the_form, _text
from tests.support import csrf_token, portal_app, portal_signed_in

pytestmark = pytest.mark.integration

HTMX = {"HX-Request": "true"}
# what the nurse and the cashier type: names (with and without accents), a birth date, CCCD, BHYT, a phone
TYPED = ["Huỳnh", "Tam", "Tâm", "1948", "087048006170", "DN4870123456789", "0913000001", "0913 000 001",
         "Trương", "truong", "Đạt"]


@pytest.fixture()
def app(tmp_path, monkeypatch, mongo_url, fresh_db):
    return portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9", MONGO_URL=mongo_url,
                      SEN_DB=fresh_db.name, SEN_PORTAL_CACHE_SECONDS="0")


def _cookie(app: Any, client: Any) -> str:
    """The session cookie as anyone holding a copy reads it (itsdangerous checks the signature, decrypts nothing),
    but the signed-in user (the demo nurse is Võ Minh Tâm: staff, no patient)."""
    loaded = SecureCookieSessionInterface().get_signing_serializer(app).loads(client.get_cookie("sen_portal").value)
    assert set(loaded["user"]) == {"username", "role", "name", "facility", "practitioner"}
    return json.dumps({k: v for k, v in loaded.items() if k != "user"}, ensure_ascii=False, default=str)


def _no_patient_data(app: Any, client: Any) -> None:
    shown = _cookie(app, client)
    found = [t for t in TYPED if t.casefold() in shown.casefold()]
    assert not found, (found, shown)


def test_after_a_take_on_the_cookie_holds_nothing_typed_and_the_chart_says_what_differs(app, monkeypatch, fresh_db):
    ehr = Ehr()
    ehr.tam_born = "1948-06-17"
    monkeypatch.setattr(http, "request", ehr)
    c = portal_signed_in(app, "clinic")
    r = _take_on_from_the_form(c, given="Văn Tam", gender="female")
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/patients/{TAM}")
    _no_patient_data(app, c)  # failed before: {"taken_on": {"family": "Huỳnh", "given": "Văn Tam", ...}}
    kept = list(fresh_db["session_kept"].find())
    assert len(kept) == 1 and kept[0]["value"]["birthDate"] == "1948-01-01" and kept[0]["value"]["pid"] == TAM

    page = c.get(r.headers["Location"]).get_data(as_text=True)
    said = _text(re.search(r'data-testid="taken-on">.*?</div>', page, re.S).group(0))
    assert "Ngày sinh trên hồ sơ là 17/06/1948, khác với ngày đã nhập 01/01/1948." in said
    assert "Họ tên trên hồ sơ là Huỳnh Văn Tâm, khác với họ tên đã nhập Huỳnh Văn Tam." in said
    assert "Giới tính trên hồ sơ là nam, khác với giới tính đã nhập nữ." in said
    _no_patient_data(app, c)
    assert fresh_db["session_kept"].count_documents({}) == 0  # said once: taken
    assert 'data-testid="taken-on-differs"' not in c.get(r.headers["Location"]).get_data(as_text=True)


def test_after_searches_the_cookie_holds_no_name_or_number_and_back_shows_them(app, monkeypatch, fresh_db):
    from sen_portal.web import cashier

    ehr = Ehr(same=[{"resourceType": "Patient", "id": "bn-1", "name": [{"family": "Huỳnh", "given": ["Văn", "Tâm"]}],
                     "birthDate": "1948-01-01"}])
    monkeypatch.setattr(http, "request", ehr)
    c = portal_signed_in(app, "clinic")
    token = csrf_token(c.get("/patients").get_data(as_text=True))
    addresses = {}
    for q in ("huynh tam", "Huỳnh Văn Tâm", "087048006170", "DN4870123456789", "0913000001"):
        r = c.post("/patients/search", data={"q": q, "csrf_token": token}, headers=HTMX)
        assert r.status_code == 200 and "Huỳnh Văn Tâm" in r.get_data(as_text=True)
        addresses[q] = r.headers["HX-Push-Url"]
        assert re.fullmatch(r"/patients\?s=[\w-]{4,32}", addresses[q])
    _no_patient_data(app, c)  # failed before: {"searches": {...: ["patients", "huynh tam"], ...}}
    for q, address in addresses.items():  # Back, a refresh: the words typed and the results again
        body = c.get(address).get_data(as_text=True)
        assert f'value="{q}"' in body and "Huỳnh Văn Tâm" in body, q
    again = c.post("/patients/search", data={"q": "huynh tam", "csrf_token": token}, headers=HTMX)
    assert again.headers["HX-Push-Url"] == addresses["huynh tam"]  # the same search, the same key
    other = portal_signed_in(app, "clinic")  # another browser: the key names nothing there
    assert 'value="huynh tam"' not in other.get(addresses["huynh tam"]).get_data(as_text=True)

    monkeypatch.setattr(cashier, "find_invoices", lambda q: [{
        "id": "inv-1", "pid": "bn-2", "reference": "HD0P2B6ZNPM", "name": "Trương Quốc Đạt",
        "date": "2026-12-05T09:00:00+07:00", "amount": 50000, "owed": None, "gross": None, "status": "issued",
        "refund": False}])
    desk = portal_signed_in(app, "cashier")
    token = csrf_token(desk.get("/invoices").get_data(as_text=True))
    for q in ("truong dat", "0913 000 001"):
        r = desk.post("/invoices/search", data={"q": q, "csrf_token": token}, headers=HTMX)
        body = desk.get(r.headers["HX-Push-Url"]).get_data(as_text=True)
        assert f'value="{q}"' in body and "Trương Quốc Đạt" in body
    _no_patient_data(app, desk)

    with c.session_transaction() as s:
        sid = s["sid"]
    assert fresh_db["session_kept"].count_documents({"sid": sid}) == 5
    c.post("/logout", data={"csrf_token": csrf_token(c.get("/patients").get_data(as_text=True))})
    assert fresh_db["session_kept"].count_documents({"sid": sid}) == 0  # signing out forgets them
    assert fresh_db["session_kept"].count_documents({}) == 2  # the cashier's, still signed in
