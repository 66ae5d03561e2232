"""The BHYT card on a consult's invoice, through the portal's invoice page against a real billing and
EHR (gunicorn processes on loopback) on the real FerretDB.

Bà Lê Thị Hoa has card HT2878701234567 on her record in the EHR. Her teleconsult's invoice was made
from the consult's event with no card in billing: 100.000 ₫ for her to pay, no BHYT line. The invoice
page offers "Ghi thẻ BHYT" prefilled with her record's card (100 %: the prefix HT2); recording it makes
the invoice again with BHYT's share (billing's split: 100.000 ₫ is under 15 % of the base salary, so
BHYT pays all of a covered line) and cancels the first. Posted by four cashiers' tabs at once it makes
one new invoice. A payment first: the card is refused, readably, and nothing changes. A payment racing
the card: either the payment counts on the first invoice (the card refused) or the first invoice is
cancelled and the payment waits to be given back (a refund task): never both, never neither."""

from __future__ import annotations

import copy
import json
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.billing_support import (
    cashier_billing,
    cashier_ehr,
    cashier_portal,
    same_session,
    signed_in_cashier,
)
from tests.support import ROOT, VN_TZ, admin_headers, csrf_token, input_value

pytestmark = pytest.mark.integration

CLINIC = "tyt-my-hiep"  # the demo cashier's facility
HOA = "bn-hoa-0042"
CARD = "HT2878701234567"
# valid from last year to the end of next (in Vietnam), whenever the suite runs: never a fixed year that passes
_YEAR = datetime.now(VN_TZ).year
CARD_FROM, CARD_UNTIL = f"01/01/{_YEAR - 1}", f"31/12/{_YEAR + 1}"


@pytest.fixture(scope="module")
def ehr(cashier_services, mongo_client, dev_key):
    patient = {"resourceType": "Patient", "id": HOA, "gender": "female", "birthDate": "1961-02-03",
               "name": [{"family": "Lê", "given": ["Thị", "Hoa"], "text": "Lê Thị Hoa"}],
               "identifier": [{"system": "https://fhir.sen.vn/sid/bhyt", "value": CARD}],
               "managingOrganization": {"reference": f"Organization/{CLINIC}"}}
    return cashier_ehr(cashier_services, mongo_client, dev_key, [patient])


@pytest.fixture(scope="module")
def billing(cashier_services, mongo_client):
    return cashier_billing(cashier_services, mongo_client)


@pytest.fixture(scope="module")
def portal(base_env, run_id, ehr, billing, mongo_client):
    with cashier_portal(base_env, run_id, mongo_client, "pcb", ehr, billing[0]) as app:
        yield app


def _consult_invoice(db, patient: str = HOA, **more: str) -> str:
    """A teleconsult's invoice at the clinic, as billing makes it from the consult's event (no card);
    ``more``: the event's other fields (its ``serviceRequest``, ``district``)."""
    from sen_billing.domain import invoices

    event = copy.deepcopy(json.loads((ROOT / "specs/events/examples/teleconsult.consult.completed.json")
                                     .read_text(encoding="utf-8")))
    event["data"].update(serviceRequest=f"ServiceRequest/sr-{uuid.uuid4().hex[:8]}", patient=f"Patient/{patient}",
                         patientDisplay="Lê Thị Hoa", requester=f"Organization/{CLINIC}")
    event["data"].update(more)
    return invoices.charge_consult(db, event, level_of=lambda _f: "commune", base_salary=2_340_000)


def _card_form(page: str, **data: str) -> dict[str, str]:
    level = re.search(r'<select[^>]*name="card-card_level".*?</select>', page, re.S).group(0)
    chosen = re.search(r'<option selected value="(\d*)"', level)
    return {"csrf_token": csrf_token(page), "card-txn": input_value(page, "card-txn"),
            "card-card_number": input_value(page, "card-card_number"),
            "card-card_level": chosen.group(1) if chosen else "",
            "card-card_start": CARD_FROM, "card-card_end": CARD_UNTIL, **data}


def _live(db, charge_of: str) -> list[dict[str, Any]]:
    """The invoices holding the consult's charge that are not cancelled."""
    from sen_billing.domain import invoices

    out = []
    for doc in db["Invoice"].find({}):
        res = json.loads(doc["res"]) if isinstance(doc.get("res"), str) else doc.get("res") or {}
        refs = [li.get("chargeItemReference", {}).get("reference") for li in res.get("lineItem") or []]
        if f"ChargeItem/{charge_of}" in refs and (invoices.state(db, doc["_id"]) or {}).get("state") != "cancelled":
            out.append(res)
    return out


def _charge(db, iid: str) -> str:
    from sen_billing.domain import invoices

    res = invoices.invoice_port.get(db, iid).resource
    return res["lineItem"][0]["chargeItemReference"]["reference"].removeprefix("ChargeItem/")


def test_the_card_on_her_record_splits_her_consult_invoice_once_however_often_it_is_posted(portal, billing):
    _url, db = billing
    iid = _consult_invoice(db)
    cashier = signed_in_cashier(portal)
    page = cashier.get(f"/invoices/{iid}?p={HOA}").get_data(as_text=True)
    assert 'data-testid="card-box"' in page and "Ghi thẻ BHYT" in page
    assert input_value(page, "card-card_number") == CARD  # the card on her record, to check against hers
    form = _card_form(page)
    assert form["card-card_level"] == "100"  # HT2…: 100 %
    # four tabs of the same page post it at once (the same form key: one request's writes)
    tabs = [same_session(portal, cashier) for _ in range(3)] + [cashier]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda c: c.post(f"/invoices/{iid}/card?p={HOA}", data=form), tabs))
    assert all(a.status_code == 302 for a in answers), [a.get_data(as_text=True)[-2000:] for a in answers]
    targets = {a.headers["Location"].split("?")[0] for a in answers}
    assert len(targets) == 1
    [new] = _live(db, _charge(db, iid))
    assert new["id"] != iid and f"/invoices/{new['id']}" in targets.pop()
    shares = {e["url"].rsplit("/", 1)[-1]: e for e in new["extension"]}
    assert shares["bhyt-benefit-level"]["valueUnsignedInt"] == 100
    assert shares["insurer-share"]["valueMoney"]["value"] == new["totalGross"]["value"] > 0
    assert new["totalNet"]["value"] == 0  # under the threshold: BHYT pays all of it
    page = cashier.get(answers[0].headers["Location"]).get_data(as_text=True)
    assert 'data-testid="carded"' in page and 'data-testid="insurer-share"' in page
    old = cashier.get(f"/invoices/{iid}").get_data(as_text=True)
    assert 'data-testid="cancelled"' in old and "Ghi thẻ BHYT " + CARD in old  # the reason, on the record
    # each names the other from billing's extensions (invoice-replaces / invoice-replaced-by), by reference
    new_ref = next(i["value"] for i in new["identifier"] if i["system"] == "urn:sen:billing:payment-reference")
    replaced = re.search(r'data-testid="cancelled">(.*?)</div>', old, re.S).group(1)
    assert "Đã thay bằng hóa đơn" in replaced and f">{new_ref}</a>" in replaced
    assert f'href="/invoices/{new["id"]}' in replaced and 'data-testid="invoice-again"' not in old
    replaces = re.search(r'data-testid="replaces">(.*?)</p>', page, re.S).group(1)
    assert replaces.startswith("Thay cho hóa đơn") and f'href="/invoices/{iid}' in replaces and ">HD" in replaces


def test_a_payment_first_keeps_the_invoice_and_the_card_is_refused_readably(portal, billing):
    from sen_billing.domain import payments
    from sen_billing.domain.webhooks import Transfer

    _url, db = billing
    iid = _consult_invoice(db, patient=f"{HOA}-{uuid.uuid4().hex[:4]}")  # no card in billing yet
    cashier = signed_in_cashier(portal)
    page = cashier.get(f"/invoices/{iid}").get_data(as_text=True)
    form = _card_form(page, **{"card-card_number": CARD, "card-card_level": "100"})
    reference = re.search(r"HD[0-9A-Z]{9}", page).group(0)
    payments.record_transfer(db, Transfer(provider="standard", transaction_id=uuid.uuid4().hex[:12], amount=20000,
                                          description=f"TT {reference}"), uuid.uuid4().hex)
    r = cashier.post(f"/invoices/{iid}/card", data=form)
    body = r.get_data(as_text=True)
    assert r.status_code == 409 and "thẻ BHYT không thay đổi được hóa đơn nữa" in body, body[-3000:]
    assert [inv["id"] for inv in _live(db, _charge(db, iid))] == [iid]  # the first invoice stands
    assert 'data-testid="card-box"' not in cashier.get(f"/invoices/{iid}").get_data(as_text=True)


@pytest.mark.parametrize("when", ["before-cancel", "with-cancel", "after-cancel"])
def test_a_payment_racing_the_card_counts_once_either_way(portal, billing, monkeypatch, when):
    """A transfer of the whole amount arrives while the card is being recorded, after the page found nothing
    paid: just before billing's cancel (the payment counts and settles the first invoice, the card is refused),
    at the same moment as the cancel (either way, several rounds), or just after it (the first invoice is
    cancelled, the transfer waits to be given back: a refund task). Never both, never neither.

    The moment is chosen at the portal's call of billing's ``$cancel``, not left to two threads started
    together: the transfer, one call, used to finish before the card's page reached billing (its reads and
    the card's record come first), so which side a round tested, and whether the payment met the cancel at
    all, depended on the machine's speed."""
    from sen_billing.domain import invoices, payments
    from sen_billing.domain.webhooks import Transfer
    from sen_portal.web import charges

    _url, db = billing
    real_call = charges.call
    for _round in range(4 if when == "with-cancel" else 1):
        iid = _consult_invoice(db, patient=f"{HOA}-{uuid.uuid4().hex[:4]}")
        cashier = signed_in_cashier(portal)
        page = cashier.get(f"/invoices/{iid}").get_data(as_text=True)
        form = _card_form(page, **{"card-card_number": CARD, "card-card_level": "80"})
        reference = re.search(r"HD[0-9A-Z]{9}", page).group(0)
        owed = int(re.search(r'data-testid="qr-amount">([\d.]+)', page).group(1).replace(".", ""))
        transfer = Transfer(provider="standard", transaction_id=uuid.uuid4().hex[:12], amount=owed,
                            description=f"TT {reference}")
        recorded = []

        def pay() -> None:
            recorded.append(payments.record_transfer(db, transfer, uuid.uuid4().hex))

        def call(service: str, method: str, path: str, **kw: Any) -> Any:
            if not (method == "POST" and path == f"/fhir/Invoice/{iid}/$cancel"):
                return real_call(service, method, path, **kw)
            if when == "before-cancel":
                pay()
            elif when == "with-cancel":
                with ThreadPoolExecutor(1) as pool:
                    paying = pool.submit(pay)
                    try:
                        return real_call(service, method, path, **kw)
                    finally:
                        paying.result()
            answer = real_call(service, method, path, **kw)
            if when == "after-cancel":
                pay()
            return answer

        with monkeypatch.context() as m:
            m.setattr(charges, "call", call)
            answer = cashier.post(f"/invoices/{iid}/card", data=form)
        assert len(recorded) == 1, answer.get_data(as_text=True)[-2000:]  # the cancel was asked for: the payment came
        pid = recorded[0].payment["_id"]
        first = (invoices.state(db, iid) or {}).get("state")
        task = db["refund_tasks"].find_one({"_id": pid})
        if when == "after-cancel" or (when == "with-cancel" and answer.status_code == 302):
            # the card won: the first invoice is cancelled, the transfer goes back
            assert answer.status_code == 302, answer.get_data(as_text=True)[-2000:]
            assert first == "cancelled" and task is not None and task["reason"] == "invoice-cancelled", (first, task)
        else:  # the payment won: it counts on the first invoice, which stands
            assert answer.status_code == 409, answer.get_data(as_text=True)[-2000:]
            assert first == "balanced" and task is None, (first, task)


def _issued_events(db, iid: str) -> list[dict[str, Any]]:
    """The ``billing.invoice.issued`` events the invoice's lifecycle chain carries (its issued link's outbox)."""
    from sen_shared.bus.outbox import entry_event

    return [entry_event(e) for link in db["invoice_states"].find({"k": iid, "state": "issued"})
            for e in link.get("outbox") or []]


def test_the_invoice_made_again_is_the_consults_own_and_the_consult_counts_once(portal, billing, dev_key,
                                                                                 fresh_db):
    """The card's new invoice reads as the consult's first one did (its consult link, district, patient,
    facility, account), on the FHIR read and in its ``billing.invoice.issued``; the two invoices name
    each other; and on the dashboard the consult is one consult, its two issued events one consult's."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from sen_portal.domain.dashboard import dashboard
    from sen_portal.domain.reporting import record_event
    from sen_shared.bus.catalog import load_catalog
    from sen_shared.bus.events import make_event

    url, db = billing
    sr, district = f"ServiceRequest/sr-{uuid.uuid4().hex[:8]}", "Huyện Cao Lãnh"
    iid = _consult_invoice(db, patient=f"{HOA}-{uuid.uuid4().hex[:4]}", serviceRequest=sr, district=district)
    cashier = signed_in_cashier(portal)
    page = cashier.get(f"/invoices/{iid}").get_data(as_text=True)
    r = cashier.post(f"/invoices/{iid}/card", data=_card_form(page, **{"card-card_number": CARD,
                                                                       "card-card_level": "80"}))
    assert r.status_code == 302, r.get_data(as_text=True)[-2000:]
    [new] = _live(db, _charge(db, iid))
    nid = new["id"]
    assert nid != iid and f"/invoices/{nid}" in r.headers["Location"]

    def read(rid: str) -> dict[str, Any]:
        answer = httpx.get(f"{url}/fhir/Invoice/{rid}", headers=admin_headers(dev_key))
        assert answer.status_code == 200, answer.text
        return answer.json()

    def ext(res: dict[str, Any], name: str) -> list[Any]:
        return [next(v for k, v in e.items() if k.startswith("value")) for e in res.get("extension") or []
                if e["url"] == f"https://sen.vn/fhir/StructureDefinition/{name}"]

    old, new = read(iid), read(nid)
    assert old["status"] == "cancelled" and new["status"] in ("issued", "balanced")  # 80 %, under 15 %: all BHYT's
    for res in (old, new):
        assert ext(res, "consult") == [{"reference": sr}] and ext(res, "district") == [district]
    for field in ("subject", "issuer", "account", "type"):
        assert new[field] == old[field], field
    assert new["subject"]["display"] == "Lê Thị Hoa"
    assert ext(new, "invoice-replaces") == [{"reference": f"Invoice/{iid}"}]  # the new names the old
    assert ext(old, "invoice-replaced-by") == [{"reference": f"Invoice/{nid}"}]  # and the old the new
    assert ext(new, "bhyt-benefit-level") == [80] and not ext(old, "bhyt-benefit-level")

    [first], [again] = _issued_events(db, iid), _issued_events(db, nid)
    catalog = load_catalog()
    for event in (first, again):
        catalog.validate(event)  # a valid v1 event, ``replaces`` included
    assert again["data"]["consult"] == first["data"]["consult"] == sr
    for field in ("facility", "patient", "district"):
        assert again["data"][field] == first["data"][field], field
    assert again["data"]["replaces"] == f"Invoice/{iid}" and "replaces" not in first["data"]

    # the dashboard: the consult requested once is one consult, whatever its invoices' events say
    now = datetime.now(ZoneInfo("Asia/Ho_Chi_Minh"))
    requested = make_event("teleconsult.consult.requested", {
        "serviceRequest": sr, "requester": f"Organization/{CLINIC}", "district": district, "priority": "routine",
        "requestedAt": now.isoformat()}, subject=sr, validate=False)
    for event in (requested, first, again):
        assert record_event(fresh_db, event) is True
    for where in (None, district):
        figures = dashboard(fresh_db, now.date(), now.date(), where)
        assert [(r["facility"], r["count"]) for r in figures["consults_per_facility_week"]] == [
            (f"Organization/{CLINIC}", 1)], where
        assert figures["facilities_using"]["new"] == 1
    facts = list(fresh_db["report_facts"].find({"k": "billing.invoice.issued"}))
    assert sorted(f["ev"]["data"]["invoice"] for f in facts) == sorted([f"Invoice/{iid}", f"Invoice/{nid}"])
    assert {f["ev"]["data"]["consult"] for f in facts} == {sr}  # both tie to the one consult


def test_a_refused_card_answers_422_and_its_reload_makes_nothing_then_the_fixed_card_redirects(portal, billing):
    """The errors page is the POST's 422 answer (its URL the form's target): a reload sends the same
    refused form again, which is refused again, nothing written in billing (the invoice stays issued,
    no Coverage). The corrected form succeeds with a redirect to the new invoice's page (a GET), and
    sending it again (the same form key: a resubmit) makes no second invoice."""
    from sen_billing.domain import invoices

    _url, db = billing
    iid = _consult_invoice(db, patient=f"{HOA}-{uuid.uuid4().hex[:4]}")  # no card in billing yet
    cashier = signed_in_cashier(portal)
    page = cashier.get(f"/invoices/{iid}").get_data(as_text=True)
    reversed_ = _card_form(page, **{"card-card_number": CARD, "card-card_level": "100",
                                    "card-card_start": CARD_UNTIL, "card-card_end": CARD_FROM})
    coverages = db["Coverage"].count_documents({})
    for _reload in range(2):
        r = cashier.post(f"/invoices/{iid}/card", data=reversed_)
        assert r.status_code == 422 and "Thẻ hết hạn trước khi có hiệu lực." in r.get_data(as_text=True)
        assert input_value(r.get_data(as_text=True), "card-txn") == reversed_["card-txn"]  # the form keeps its key
    assert (invoices.state(db, iid) or {}).get("state") == "issued" and db["Coverage"].count_documents({}) == coverages
    assert [inv["id"] for inv in _live(db, _charge(db, iid))] == [iid]

    fixed = {**reversed_, "card-card_start": CARD_FROM, "card-card_end": CARD_UNTIL}
    first = cashier.post(f"/invoices/{iid}/card", data=fixed)
    assert first.status_code == 302 and "/card" not in first.headers["Location"]  # PRG: a GET page after it
    again = cashier.post(f"/invoices/{iid}/card", data=fixed)
    # sent again once it was made (a resubmit, another tab): the same new invoice's page, nothing more made
    assert again.status_code == 302 and again.headers["Location"] == first.headers["Location"]
    [new] = _live(db, _charge(db, iid))
    assert new["id"] != iid and f"/invoices/{new['id']}" in first.headers["Location"]
