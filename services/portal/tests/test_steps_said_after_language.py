"""A step's confirmation survives the switch of language made right after it (sen_portal.web.notices).

The page after a step said it once ("Đã phát hành hóa đơn…") and took it from the session; the
language switch came back to the same page, which then said nothing: the cashier who pressed English
never read the confirmation in English. The page now carries what it said, signed, in its language
form; the switch says it again once, in the new language, on that page only.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support import csrf_token, flash_step, portal_app, portal_signed_in

REF = "urn:sen:billing:payment-reference"
VI = "Đã phát hành hóa đơn: người bệnh có thể thanh toán ngay."
EN = "The invoice is issued: the patient can pay now."


def invoice(iid: str) -> dict:
    return {"resourceType": "Invoice", "id": iid, "status": "issued", "date": "2026-12-05T09:00:00+07:00",
            "subject": {"reference": "Patient/bn-0002"}, "totalGross": {"value": 150000, "currency": "VND"},
            "totalNet": {"value": 150000, "currency": "VND"}, "identifier": [{"system": REF, "value": "HD7K2M9QX4C"}]}


@pytest.fixture()
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from sen_portal.web import cashier

    monkeypatch.setattr(cashier, "patient_names", lambda ids: {})
    monkeypatch.setattr(cashier, "shared_get", lambda service, path, **kw: {
        "status": "issued", "owed": 150000, "paid": 0, "balanceDue": 150000, "reference": "HD7K2M9QX4C",
        "payments": [], "resource": invoice(path.split("/")[-2] if path.endswith("/desk") else "inv-a"), "qr": None})
    return portal_signed_in(portal_app(tmp_path, monkeypatch, SEN_PORTAL_CACHE_SECONDS="0"), "cashier")


def said(page: str) -> str | None:
    m = re.search(r'name="said" value="([^"]+)"', page)
    return m.group(1) if m else None


def switch(client, page: str, lang: str, next_path: str, token: str | None) -> str:
    data = {"lang": lang, "next": next_path, "csrf_token": csrf_token(page)}
    if token is not None:
        data["said"] = token
    r = client.post("/language", data=data)
    assert r.status_code in (302, 303) and r.headers["Location"].endswith(next_path)
    return client.get(next_path).get_data(as_text=True)


def test_switching_language_right_after_a_step_says_it_once_in_the_new_language(client) -> None:
    flash_step(client, "/invoices/inv-a", "issued")
    page = client.get("/invoices/inv-a").get_data(as_text=True)
    assert page.count(VI) == 1 and said(page)
    english = switch(client, page, "en", "/invoices/inv-a", said(page))
    assert english.count(EN) == 1 and VI not in english
    # once: a reload says nothing, and then carries nothing to say
    again = client.get("/invoices/inv-a").get_data(as_text=True)
    assert EN not in again and said(again) is None
    back = switch(client, again, "vi", "/invoices/inv-a", said(again))
    assert VI not in back and EN not in back


def test_the_english_page_that_said_it_says_it_again_in_vietnamese(client) -> None:
    flash_step(client, "/invoices/inv-a", "issued")
    page = client.get("/invoices/inv-a").get_data(as_text=True)
    english = switch(client, page, "en", "/invoices/inv-a", said(page))
    back = switch(client, english, "vi", "/invoices/inv-a", said(english))
    assert back.count(VI) == 1


def test_what_a_page_said_is_said_again_on_that_page_only_and_never_forged(client) -> None:
    flash_step(client, "/invoices/inv-a", "issued")
    page = client.get("/invoices/inv-a").get_data(as_text=True)
    token = said(page)
    other = switch(client, page, "en", "/invoices/inv-b", token)  # another invoice's page: not its step
    assert EN not in other
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert EN not in switch(client, page, "en", "/invoices/inv-a", forged)
    assert EN not in switch(client, page, "en", "/invoices/inv-a", "not-a-token")
