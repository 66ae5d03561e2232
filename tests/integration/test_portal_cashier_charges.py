"""The cashier's new invoice through the portal's pages against a real billing and EHR (gunicorn
processes on loopback), the real FerretDB: billing ends up holding exactly ONE issued Invoice with the
right lines and BHYT split, however often the form is posted (one after another, and at once).

The portal runs in this process (Flask's test client) as its demo cashier of Trạm Y tế xã Mỹ Hiệp.
The patient, Nguyễn Thị Mai, is in the EHR with her BHYT number; billing has no card for her, so the
cashier records it on the page (80 %, valid this year and next), then charges 5 chest X-rays, an
examination and a certified copy of the record (BHYT does not cover that one). Covered total
325.000 + 39.000 = 364.000 ₫, above the threshold (15 % of the base salary, 351.000 ₫), so 80 % is
applied per line (floor): BHYT 260.000 + 31.200, the patient 65.000 + 7.800 + 20.000 = 92.800 ₫.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from sen_shared.auth import issue_dev_token

from tests.billing_support import (
    cashier_billing,
    cashier_ehr,
    same_session,
    signed_in_cashier,
)
from tests.support import admin_headers, app_client, csrf_token, input_value, shows_alert

pytestmark = pytest.mark.integration

CLINIC = "tyt-my-hiep"  # the demo cashier's facility
MAI = "bn-0001"


@pytest.fixture(scope="module")
def ehr(cashier_services, mongo_client, dev_key):
    patient = {"resourceType": "Patient", "id": MAI, "gender": "female", "birthDate": "1968-04-12",
               "name": [{"family": "Nguyễn", "given": ["Thị", "Mai"], "text": "Nguyễn Thị Mai"}],
               "identifier": [{"system": "https://fhir.sen.vn/sid/cccd", "value": "087168004512"},
                              {"system": "https://fhir.sen.vn/sid/bhyt", "value": "DN4878701234569"}],
               "managingOrganization": {"reference": f"Organization/{CLINIC}"}}
    return cashier_ehr(cashier_services, mongo_client, dev_key, [patient])


@pytest.fixture(scope="module")
def billing(cashier_services, mongo_client):
    return cashier_billing(cashier_services, mongo_client)[0]


@pytest.fixture(scope="module")
def portal(base_env, run_id, ehr, billing, mongo_client):
    env = {**base_env, "SEN_EHR_URL": ehr, "SEN_BILLING_URL": billing, "SEN_TELECONSULT_URL": billing,
           "SEN_HTTP_TIMEOUT": "15"}
    with app_client("portal", env, f"sen_t{run_id}_pcc_portal", mongo_client) as (_client, app):
        app.app.config["TESTING"] = True
        yield app.app


def _form(page: str, **data: Any) -> dict[str, Any]:
    """What the browser posts: the page's state (key, patient, lines) and ``data``."""
    return {"csrf_token": csrf_token(page), "key": input_value(page, "key"), "patient": input_value(page, "patient"),
            "line_service": re.findall(r'name="line_service" value="([^"]*)"', page),
            "line_qty": re.findall(r'name="line_qty" value="([^"]*)"', page), **data}


def _search(billing: str, dev_key: Path, rtype: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{billing}/fhir/{rtype}", params={"subject" if rtype != "Coverage" else "beneficiary":
                                                     f"Patient/{MAI}", "_count": "50"}, headers=admin_headers(dev_key))
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", []) if e.get("search", {}).get("mode", "match") == "match"]


def test_a_walk_in_invoice_made_through_the_pages_is_one_invoice_however_often_it_is_posted(
        portal, billing, dev_key):
    cashier = signed_in_cashier(portal)
    page = cashier.get("/invoices").get_data(as_text=True)
    assert 'href="/invoices/new"' in page
    page = cashier.get("/invoices/new").get_data(as_text=True)
    page = cashier.post("/invoices/new", data=_form(page, who="nguyen thi mai", action="find-patient")
                        ).get_data(as_text=True)
    assert "Nguyễn Thị Mai" in page
    page = cashier.post("/invoices/new", data=_form(page, choose=MAI)).get_data(as_text=True)
    assert 'data-testid="no-card"' in page and input_value(page, "card_number") == "DN4878701234569"
    year = date.today().year
    r = cashier.post("/invoices/new", data=_form(page, action="record-card", card_number="DN4878701234569",
                                                  card_level="80", card_start=f"01/01/{year}",
                                                  card_end=f"31/12/{year + 1}"))
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and re.search(r'data-testid="bhyt-level">80 %', page), page[-3000:]
    assert len(_search(billing, dev_key, "Coverage")) == 1  # billing's own Coverage: what its split reads
    page = cashier.post("/invoices/new", data=_form(page, service_q="x quang nguc", action="find-service")
                        ).get_data(as_text=True)
    assert 'name="add" value="x-quang-nguc"' in page
    for sid in ("x-quang-nguc", "kham-benh", "ban-sao-ho-so"):
        page = cashier.post("/invoices/new", data=_form(page, add=sid)).get_data(as_text=True)
    page = cashier.post("/invoices/new", data=_form(page, line_qty=["5", "1", "1"], action="enter")
                        ).get_data(as_text=True)
    assert re.search(r'data-testid="lines-total"><strong>384.000\u00a0₫', page)

    submit = _form(page, action="issue")
    first = cashier.post("/invoices/new", data=submit)
    assert first.status_code == 302, first.get_data(as_text=True)[-2000:]
    where = first.headers["Location"]
    again = cashier.post("/invoices/new", data=submit)  # a double click, one after the other
    assert again.status_code == 302 and again.headers["Location"] == where
    tabs = [same_session(portal, cashier) for _ in range(3)]  # a slow link's retries, at once
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda c: c.post("/invoices/new", data=submit), tabs))
    assert [a.status_code for a in answers] == [302] * 3 and {a.headers["Location"] for a in answers} == {where}

    invoices = _search(billing, dev_key, "Invoice")
    assert len(invoices) == 1, [i["id"] for i in invoices]
    charges = _search(billing, dev_key, "ChargeItem")
    assert sorted((c["definitionCanonical"][0].split("/")[-1].split("|")[0], c["quantity"]["value"]) for c in charges) \
        == [("ban-sao-ho-so", 1), ("kham-benh", 1), ("x-quang-nguc", 5)]
    inv = invoices[0]
    assert where.startswith(f"/invoices/{inv['id']}?")
    assert inv["status"] == "issued" and inv["issuer"]["reference"] == f"Organization/{CLINIC}"
    assert inv["subject"] == {"reference": f"Patient/{MAI}", "display": "Nguyễn Thị Mai"}  # for billing's receipt
    assert inv["totalGross"]["value"] == 384_000 and inv["totalNet"]["value"] == 92_800
    split = sorted(tuple(pc["amount"]["value"] for pc in li["priceComponent"]) for li in inv["lineItem"])
    assert split == [(20_000, 0, 20_000), (39_000, 31_200, 7_800), (325_000, 260_000, 65_000)]

    shown = cashier.get(where).get_data(as_text=True)
    assert "Đã phát hành hóa đơn" in shown and re.search(r'data-testid="invoice-patient">Nguyễn Thị Mai<', shown)
    assert f'src="/invoices/{inv["id"]}/qr.svg?v=' in shown  # the QR to pay at once (v: its payload)
    assert re.search(r'data-testid="insurer-share">291.200\u00a0₫', shown)
    assert re.search(r'data-testid="patient-share">92.800\u00a0₫', shown)
    assert cashier.get(f"/invoices/{inv['id']}/qr.svg").status_code == 200


def test_a_charge_made_by_hand_and_left_on_no_invoice_goes_on_the_next_invoice_of_the_page(
        portal, ehr, billing, dev_key):
    """A charge made at billing's API (no invoice) is listed on the page for its patient, ticked; the
    submit with one new line makes ONE invoice holding both; then the page lists nothing left."""
    pid = "bn-0002"
    patient = {"resourceType": "Patient", "id": pid, "gender": "male", "birthDate": "1975-09-02",
               "name": [{"family": "Trần", "given": ["Văn", "Bình"], "text": "Trần Văn Bình"}],
               "managingOrganization": {"reference": f"Organization/{CLINIC}"}}
    r = httpx.put(f"{ehr}/fhir/Patient/{pid}", content=json.dumps(patient), headers=admin_headers(dev_key))
    assert r.status_code in (200, 201), r.text
    cashier_api = {**admin_headers(dev_key),
                   "Authorization": "Bearer " + issue_dev_token(dev_key, "cashier", facility=CLINIC)}
    r = httpx.post(f"{billing}/fhir/ChargeItem", headers=cashier_api, content=json.dumps({
        "resourceType": "ChargeItem", "status": "billable", "code": {"text": "kham-benh"},
        "subject": {"reference": f"Patient/{pid}"}, "definitionCanonical": ["ChargeItemDefinition/kham-benh"]}))
    assert r.status_code == 201, r.text
    by_hand = r.json()["id"]

    def listed(page: str) -> list[tuple[str, bool]]:
        return [(cid, bool(on)) for cid, on in re.findall(r'name="pending" value="([^"]*)"[^>]*?( checked)?>', page)]

    def form(page: str, **data: Any) -> dict[str, Any]:
        return _form(page, pending_seen=re.findall(r'name="pending_seen" value="([^"]*)"', page),
                     pending=re.findall(r'name="pending" value="([^"]*)"[^>]*checked', page), **data)

    cashier = signed_in_cashier(portal)
    page = cashier.get("/invoices/new").get_data(as_text=True)
    page = cashier.post("/invoices/new", data=form(page, choose=pid)).get_data(as_text=True)
    assert "Dịch vụ chưa lập hóa đơn" in page and listed(page) == [(by_hand, True)]
    assert "Khám bệnh" in page[page.index('data-testid="pending"'):]
    page = cashier.post("/invoices/new", data=form(page, add="x-quang-nguc")).get_data(as_text=True)
    r = cashier.post("/invoices/new", data=form(page, action="issue"))
    assert r.status_code == 302, r.get_data(as_text=True)[-2000:]

    found = httpx.get(f"{billing}/fhir/Invoice", params={"subject": f"Patient/{pid}"},
                      headers=admin_headers(dev_key)).json()
    invoices = [e["resource"] for e in found.get("entry", []) if e["search"]["mode"] == "match"]
    assert len(invoices) == 1 and invoices[0]["status"] == "issued"
    assert r.headers["Location"].startswith(f"/invoices/{invoices[0]['id']}?")
    held = {li["chargeItemReference"]["reference"].split("/")[1] for li in invoices[0]["lineItem"]}
    assert len(held) == 2 and by_hand in held
    assert invoices[0]["totalGross"]["value"] == 39_000 + 65_000  # the examination and one chest X-ray

    page = cashier.get("/invoices/new").get_data(as_text=True)
    page = cashier.post("/invoices/new", data=form(page, choose=pid)).get_data(as_text=True)
    assert 'data-testid="no-pending"' in page and listed(page) == []


def test_the_queue_shows_what_is_left_to_pay_and_a_search_finds_the_invoice_once_paid(portal, ehr, billing, dev_key):
    """Part of an invoice paid in cash: the queue (billing's Invoice search sorted by date, then the
    summaries) shows what is left, not the total; paid in full, it leaves the queue and a search by
    the patient's name (no accents) or its reference still finds it, marked paid."""
    pid = "bn-0003"
    patient = {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1990-03-08",
               "name": [{"family": "Trần", "given": ["Thị", "Ánh", "Tuyết"], "text": "Trần Thị Ánh Tuyết"}],
               "managingOrganization": {"reference": f"Organization/{CLINIC}"}}
    r = httpx.put(f"{ehr}/fhir/Patient/{pid}", content=json.dumps(patient), headers=admin_headers(dev_key))
    assert r.status_code in (200, 201), r.text
    cashier = signed_in_cashier(portal)
    page = cashier.get("/invoices/new").get_data(as_text=True)
    page = cashier.post("/invoices/new", data=_form(page, choose=pid)).get_data(as_text=True)
    page = cashier.post("/invoices/new", data=_form(page, add="kham-benh")).get_data(as_text=True)
    r = cashier.post("/invoices/new", data=_form(page, action="issue"))
    assert r.status_code == 302, r.get_data(as_text=True)[-2000:]
    iid = r.headers["Location"].split("?")[0].rsplit("/", 1)[1]
    shift = cashier.get("/shift").get_data(as_text=True)
    if 'name="open-opening_cash"' in shift:
        cashier.post("/shift", data={"which": "open", "open-opening_cash": "0", "csrf_token": csrf_token(shift)})

    def pay(amount: str) -> None:
        shown = cashier.get(f"/invoices/{iid}").get_data(as_text=True)
        answer = cashier.post(f"/invoices/{iid}/cash", data={"cash-amount": amount, "csrf_token": csrf_token(shown),
                                                              "cash-txn": input_value(shown, "cash-txn")})
        assert answer.status_code == 302, answer.get_data(as_text=True)[-2000:]

    pay("10.000")
    queue = cashier.get("/invoices")
    page = queue.get_data(as_text=True)
    assert queue.status_code == 200 and not shows_alert(page)  # billing took the queue's _sort=date
    row = page[page.index(f'href="/invoices/{iid}?'):]
    row = row[:row.index("</tr>")]
    assert re.search(r'data-testid="invoice-amount">29.000\u00a0₫', row), row
    assert "Đã trả 10.000\u00a0₫ trên 39.000\u00a0₫" in row
    reference = re.search(r'data-testid="invoice-reference">([^<]*)<', row).group(1)

    pay("29.000")
    assert f'href="/invoices/{iid}?' not in cashier.get("/invoices").get_data(as_text=True)  # no longer waiting
    token = csrf_token(page)
    for q in ("tran thi anh tuyet", reference.lower()):
        found = cashier.post("/invoices/search", data={"q": q, "csrf_token": token}).get_data(as_text=True)
        assert "Tìm thấy 1 hóa đơn" in found, q
        assert re.search(r'data-testid="invoice-status">Đã thanh toán<', found), q
