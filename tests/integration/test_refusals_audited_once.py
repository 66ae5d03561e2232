"""A refused request leaves exactly one AuditEvent: the refusal as the 403 it is, and why.

Teleconsult and billing (each app in this process, on FerretDB) answer a request on what the caller may not
see (another facility's consult, appointment, invoice or payment; another hub's) as one naming a made-up id
would be answered (404, or the 422 of a proposal based on no known consult), and record the refusal in their
own trail. Each operation is asked once by a caller of its own (a token naming a ``sub`` no other request
uses), and that caller's trail holds one AuditEvent: ``outcome`` 4, ``403: <why>``, the operation in its
subtype. Before, ``$reschedule`` onto a proposal based on another facility's consult left two (the 403,
then the 422 its failure was audited as again), and ``$hold``/``$book`` of another hub's slot none.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sen_billing.domain import payments
from sen_billing.domain.webhooks import Transfer
from sen_shared.auth import issue_dev_token
from sen_shared.fhir.body import unpack
from sen_shared.runtime import EXTENSION
from sen_teleconsult.domain import availability as av

from tests.billing_support import BANK, billing_app, hand_invoice, make_invoice, pay
from tests.integration.test_teleconsult_booking import _params
from tests.support import admin_headers, app_client

pytestmark = pytest.mark.integration

FJ = "application/fhir+json"
HUB, CLINIC_A, CLINIC_B, OTHER_HUB = "bv-tinh", "tyt-a", "tyt-b", "bv-khac"
CARDIO = "394579002"
ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAY = (datetime.now(av.TZ) + timedelta(days=4)).date()


class _Ehr:
    """The EHR as ``$submit`` asks it: the patient exists and is readable; no district."""

    def check_all_readable(self, refs: list[tuple[str, str]]) -> list[dict[str, Any]]:
        return [{"resourceType": ref.split("/")[0], "id": ref.split("/")[1],
                 "name": [{"family": "Nguyễn", "given": ["Văn", "An"]}]} for ref, _where in refs]

    def district_of(self, organization: str) -> None:
        return None

    def is_practitioner_of(self, practitioner: str, organization: str) -> bool:
        return True


def _who(dev_key: Any, role: str, facility: str, **claims: str) -> tuple[str, dict[str, str]]:
    """A caller of its own: (its sub, its headers)."""
    sub = f"{role}-{facility}-{uuid.uuid4().hex[:8]}"
    tok = issue_dev_token(dev_key, role, sub=sub, facility=facility, **claims)
    return sub, {"Authorization": f"Bearer {tok}", "Content-Type": FJ, "Accept": FJ}


@pytest.fixture(scope="module")
def tele(base_env, run_id, mongo_client, dev_key) -> Iterator[dict[str, Any]]:
    """Teleconsult with a consult and a booked appointment of clinic A and of clinic B, at the hub."""
    env = {**base_env, "SEN_TELECONSULT_HOLIDAYS": "", "SEN_JITSI_BASE_URL": "https://meet.benhvien.example",
           "SEN_CONSULT_DEFAULT_HUB": f"Organization/{HUB}"}
    with pytest.MonkeyPatch.context() as mp, \
            app_client("teleconsult", env, f"sen_t{run_id}_refusal_audit_tc", mongo_client) as (c, app):
        from sen_teleconsult.api import consults as consult_api

        mp.setattr(consult_api, "_ehr", _Ehr)
        admin = admin_headers(dev_key)
        body = av.schedule_resource("sched-ro", practitioner="Practitioner/bs-ro", organization=f"Organization/{HUB}",
                                    specialty_code=CARDIO, specialty_text="Tim mạch",
                                    windows=[(ALL_DAYS, "07:00:00", "11:30:00")])
        assert c.put("/fhir/Schedule/sched-ro", content=json.dumps(body), headers=admin).status_code in (200, 201)
        r = c.post("/fhir/Appointment/$find", headers=admin, content=_params(
            ("start", f"{DAY.isoformat()}T07:00:00+07:00"), ("end", f"{DAY.isoformat()}T11:00:00+07:00"),
            ("specialty", CARDIO)))
        assert r.status_code == 200, r.text
        proposals = [e["resource"] for e in r.json()["entry"]]
        made: dict[str, Any] = {"client": c, "fhir": app.app.extensions[EXTENSION].extras["fhir"],
                                "db": mongo_client[f"sen_t{run_id}_refusal_audit_tc"], "proposals": proposals}
        for n, clinic in enumerate((CLINIC_A, CLINIC_B)):
            _sub, h = _who(dev_key, "clinic", clinic)
            sr = {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "priority": "routine",
                  "subject": {"reference": f"Patient/p-{clinic}"},
                  "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10"}]}],
                  "note": [{"text": "Tăng huyết áp khó kiểm soát"}],
                  "performer": [{"reference": f"Organization/{HUB}"}],
                  "performerType": {"coding": [{"system": "http://snomed.info/sct", "code": CARDIO}]}}
            r = c.post("/fhir/ServiceRequest/$submit", content=json.dumps(sr), headers=h)
            assert r.status_code == 201, r.text
            ids = {e["resource"]["resourceType"]: e["resource"]["id"] for e in r.json()["entry"]}
            proposal = json.loads(json.dumps(proposals[n]))
            proposal["participant"].insert(0, {"actor": {"reference": f"Patient/p-{clinic}"},
                                               "status": "needs-action"})
            proposal["basedOn"] = [{"reference": f"ServiceRequest/{ids['ServiceRequest']}"}]
            r = c.post("/fhir/Appointment/$book", content=_params(("appointment-resource", proposal)), headers=h)
            assert r.status_code == 200, r.text
            made[clinic] = {"sr": ids["ServiceRequest"], "task": ids["Task"],
                            "appointment": r.json()["entry"][0]["resource"]["id"]}
        yield made


@pytest.fixture(scope="module")
def bill(base_env, mongo_client, dev_key) -> Iterator[dict[str, Any]]:
    """Billing with org-a's draft, issued and paid invoices, a payment, and a transfer in the admins' queue."""
    from sen_billing.domain import receipts

    with pytest.MonkeyPatch.context() as mp, billing_app(base_env, mongo_client, mp, "refusalaudit", BANK) as (c, db):
        a = {"Authorization": f"Bearer {issue_dev_token(dev_key, 'cashier', facility='org-a')}",
             "Content-Type": "application/json", "Accept": "application/json"}
        draft, _items = hand_invoice(c, a, f"Patient/p-{uuid.uuid4().hex[:6]}", ["kham-benh"])
        issued, _ = make_invoice(db, 90_000)
        paid, code = make_invoice(db, 50_000)
        payment = pay(db, code, 50_000)
        assert db[receipts.RECEIPTS].find_one({"_id": paid}) is not None
        waiting = payments.record_transfer(db, Transfer(provider="standard", transaction_id=uuid.uuid4().hex[:12],
                                                        amount=7_000, description="chuyen tien"),
                                           inbox_id=uuid.uuid4().hex).payment["_id"]
        yield {"client": c, "db": db, "draft": draft, "issued": issued, "paid": paid, "payment": payment["_id"],
               "waiting": waiting}


# --------------------------------------------------------------------------- the refused requests

Case = Callable[[dict[str, Any], Any], tuple[str, Any]]  # (setup, dev key) -> (the caller's sub, the answer)


def _as(role: str, facility: str, **claims: str) -> Callable[[Callable[[dict[str, Any]], tuple[str, str, str]]], Case]:
    """A case: the request ``method_path(setup)`` says, by a new caller of ``role`` at ``facility``."""
    def case(method_path: Callable[[dict[str, Any]], tuple[str, str, str]]) -> Case:
        def run(t: dict[str, Any], key: Any) -> tuple[str, Any]:
            sub, h = _who(key, role, facility, **claims)
            method, path, body = method_path(t)
            return sub, t["client"].request(method, path, content=body, headers=h)
        return run
    return case


_clinic_b_on_a = _as("clinic", CLINIC_B)  # clinic B on clinic A's consult
_other_hub = _as("doctor", OTHER_HUB, practitioner="bs-khac")  # a doctor of another hub on the hub's


def _foreign(t: dict[str, Any], n: int) -> dict[str, Any]:
    """A proposal of a free slot based on clinic A's consult."""
    p = json.loads(json.dumps(t["proposals"][n]))
    p["participant"].insert(0, {"actor": {"reference": f"Patient/p-{CLINIC_A}"}, "status": "needs-action"})
    p["basedOn"] = [{"reference": f"ServiceRequest/{t[CLINIC_A]['sr']}"}]
    return p


def _a_appt(t: dict[str, Any]) -> str:
    return t[CLINIC_A]["appointment"]


def _task(t: dict[str, Any], op: str, *params: tuple[str, Any]) -> tuple[str, str, str]:
    return "POST", f"/fhir/Task/{t[CLINIC_A]['task']}/{op}", _params(*params)


def _held_or_booked(op: str) -> dict[str, Case]:
    """``$hold`` and ``$book`` (``op``) are refused alike: of A's appointment, of a proposal on A's
    consult, of another hub's slot."""
    path = f"/fhir/Appointment/{op}"
    return {
        f"{op} of A's appointment": _clinic_b_on_a(lambda t: ("POST", path, _params(
            ("appointment-reference", {"reference": f"Appointment/{_a_appt(t)}"})))),
        f"{op} of a proposal on A's consult": _clinic_b_on_a(lambda t: ("POST", path, _params(
            ("appointment-resource", _foreign(t, 2))))),
        f"{op} of another hub's slot": _other_hub(lambda t: ("POST", path, _params(
            ("appointment-resource", t["proposals"][3])))),
    }


TELECONSULT: dict[str, Case] = {
    **_held_or_booked("$hold"),
    **_held_or_booked("$book"),
    "$reschedule of A's appointment": _clinic_b_on_a(lambda t: (
        "POST", f"/fhir/Appointment/{_a_appt(t)}/$reschedule", _params(("appointment-resource", _foreign(t, 2))))),
    "$reschedule onto a proposal on A's consult": _clinic_b_on_a(lambda t: (
        "POST", f"/fhir/Appointment/{t[CLINIC_B]['appointment']}/$reschedule",
        _params(("appointment-resource", _foreign(t, 2))))),
    "$cancel of A's appointment": _clinic_b_on_a(lambda t: (
        "POST", f"/fhir/Appointment/{_a_appt(t)}/$cancel", _params())),
    "$noshow of the hub's appointment": _other_hub(lambda t: (
        "POST", f"/fhir/Appointment/{_a_appt(t)}/$noshow", _params())),
    "$fulfill of the hub's appointment": _other_hub(lambda t: (
        "POST", f"/fhir/Appointment/{_a_appt(t)}/$fulfill", _params())),
    "Task $accept": _other_hub(lambda t: _task(t, "$accept")),
    "Task $reject": _other_hub(lambda t: _task(t, "$reject", ("reason", "Không"))),
    "Task $request-info": _other_hub(lambda t: _task(t, "$request-info", ("question", "Xin điện tim?"))),
    "Task $cancel": _clinic_b_on_a(lambda t: _task(t, "$cancel")),
    "Task $provide-info": _clinic_b_on_a(lambda t: _task(t, "$provide-info", ("answer", "Đây"))),
    "Task $message": _clinic_b_on_a(lambda t: _task(t, "$message", ("text", "Chào"))),
}


# refused by role, whatever the id: a 403 recorded once, as the EHR records its role refusals
_cashier = _as("cashier", HUB)
_hub_doctor = _as("doctor", HUB, practitioner="bs-ro")
_clinic_a = _as("clinic", CLINIC_A)
TELECONSULT_ROLES: dict[str, Case] = {
    "$find by a cashier": _cashier(lambda t: ("POST", "/fhir/Appointment/$find", _params(
        ("start", f"{DAY.isoformat()}T07:00:00+07:00"), ("end", f"{DAY.isoformat()}T11:00:00+07:00")))),
    "$hold by a cashier": _cashier(lambda t: ("POST", "/fhir/Appointment/$hold", _params(
        ("appointment-resource", t["proposals"][4])))),
    "$book by the health department": _as("health-dept", "so-y-te")(lambda t: (
        "POST", "/fhir/Appointment/$book", _params(("appointment-resource", t["proposals"][4])))),
    "$cancel of an appointment by a cashier": _cashier(lambda t: (
        "POST", f"/fhir/Appointment/{_a_appt(t)}/$cancel", _params())),
    "$noshow by the clinic's staff": _clinic_a(lambda t: (
        "POST", f"/fhir/Appointment/{_a_appt(t)}/$noshow", _params())),
    "$fulfill by the clinic's staff": _clinic_a(lambda t: (
        "POST", f"/fhir/Appointment/{_a_appt(t)}/$fulfill", _params())),
    "Slot read by a cashier": _cashier(lambda t: ("GET", f"/fhir/Slot/{t['proposals'][4]['slot'][0]['reference'][5:]}",
                                                  None)),
    "Slot search by a cashier": _cashier(lambda t: ("GET", "/fhir/Slot?status=free", None)),
    "Task $cancel by a hub doctor": _hub_doctor(lambda t: _task(t, "$cancel")),
    "Task $provide-info by a hub doctor": _hub_doctor(lambda t: _task(t, "$provide-info", ("answer", "Đây"))),
    "Task $accept by the clinic's staff": _clinic_a(lambda t: _task(t, "$accept")),
    "Task $accept by a hub doctor naming no practitioner": _as("doctor", HUB)(lambda t: _task(t, "$accept")),
    "Task $message by a cashier": _cashier(lambda t: _task(t, "$message", ("text", "Chào"))),
    "$submit by a doctor": _hub_doctor(lambda t: ("POST", "/fhir/ServiceRequest/$submit", json.dumps({
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "subject": {"reference": f"Patient/p-{CLINIC_A}"}}))),
    "$worklist by a cashier": _cashier(lambda t: ("GET", "/fhir/Task/$worklist", None)),
}


def _cashier_b(method: str, path: Callable[[dict[str, Any]], str], body: Callable[[dict[str, Any]], Any] = None,
               *, shift: bool = False) -> Case:
    def run(b: dict[str, Any], key: Any) -> tuple[str, Any]:
        sub = f"thu-ngan-org-b-{uuid.uuid4().hex[:8]}"
        h = {"Authorization": f"Bearer {issue_dev_token(key, 'cashier', sub=sub, facility='org-b')}",
             "Content-Type": "application/json", "Accept": "application/json"}
        if shift:  # cash is taken into an open shift: b's desk is open
            assert b["client"].post("/payments/shifts", json={}, headers=h).status_code == 201
        content = None if body is None else json.dumps(body(b))
        return sub, b["client"].request(method, path(b), content=content, headers=h)
    return run


BILLING: dict[str, Case] = {
    "$issue": _cashier_b("POST", lambda b: f"/fhir/Invoice/{b['draft']}/$issue"),
    "$cancel": _cashier_b("POST", lambda b: f"/fhir/Invoice/{b['issued']}/$cancel", lambda b: {
        "resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "nhầm"}]}),
    "$vietqr": _cashier_b("GET", lambda b: f"/fhir/Invoice/{b['issued']}/$vietqr"),
    "$vietqr png": _cashier_b("GET", lambda b: f"/fhir/Invoice/{b['issued']}/$vietqr?_format=png"),
    "payments": _cashier_b("GET", lambda b: f"/payments/invoices/{b['issued']}"),
    "desk": _cashier_b("GET", lambda b: f"/payments/invoices/{b['issued']}/desk"),
    "receipt": _cashier_b("GET", lambda b: f"/payments/receipts/{b['paid']}"),
    "receipt-html": _cashier_b("GET", lambda b: f"/payments/receipts/{b['paid']}/html"),
    "receipt-pdf": _cashier_b("GET", lambda b: f"/payments/receipts/{b['paid']}/pdf"),
    "cash": _cashier_b("POST", lambda b: "/payments/cash", lambda b: {"invoice": b["issued"], "amount": 1_000},
                       shift=True),
    "refund": _cashier_b("POST", lambda b: f"/payments/{b['payment']}/refund", lambda b: {
        "amount": 1_000, "reason": "thu nhầm", "method": "transfer", "afterSettlement": True}),
    "assign": _cashier_b("POST", lambda b: f"/payments/unmatched/{b['waiting']}/assign",
                         lambda b: {"invoice": b["issued"]}),
}


def _billing_as(role: str, method: str, path: Callable[[dict[str, Any]], str],
                body: Callable[[dict[str, Any]], Any] = None, *, facility: str | None = "org-b") -> Case:
    """A case of billing: the request by a new caller of ``role`` (at ``facility``)."""
    def run(b: dict[str, Any], key: Any) -> tuple[str, Any]:
        sub = f"{role}-{uuid.uuid4().hex[:8]}"
        claims = {"facility": facility} if facility else {}
        h = {"Authorization": f"Bearer {issue_dev_token(key, role, sub=sub, **claims)}",
             "Content-Type": "application/json", "Accept": "application/json"}
        content = None if body is None else json.dumps(body(b))
        return sub, b["client"].request(method, path(b), content=content, headers=h)
    return run


BILLING_ROLES: dict[str, Case] = {
    "$issue by a doctor": _billing_as("doctor", "POST", lambda b: f"/fhir/Invoice/{b['draft']}/$issue"),
    "$vietqr by clinic staff": _billing_as("clinic", "GET", lambda b: f"/fhir/Invoice/{b['issued']}/$vietqr"),
    "$cancel by the health department": _billing_as("health-dept", "POST", lambda b: f"/fhir/Invoice/{b['issued']}"
                                                    "/$cancel", lambda b: {"resourceType": "Parameters"}),
    "$issue by a cashier of no facility": _billing_as("cashier", "POST", lambda b: f"/fhir/Invoice/{b['draft']}/$issue",
                                                      facility=None),
    "payments by a doctor": _billing_as("doctor", "GET", lambda b: f"/payments/invoices/{b['issued']}"),
    "invoice summaries by a doctor": _billing_as("doctor", "GET", lambda b: f"/payments/invoices?id={b['issued']}"),
    "cash by clinic staff": _billing_as("clinic", "POST", lambda b: "/payments/cash",
                                        lambda b: {"invoice": b["issued"], "amount": 1_000}),
    "refund by a doctor": _billing_as("doctor", "POST", lambda b: f"/payments/{b['payment']}/refund", lambda b: {
        "amount": 1_000, "reason": "thu nhầm", "method": "transfer", "afterSettlement": True}),
    "unmatched queue by the health department": _billing_as("health-dept", "GET", lambda b: "/payments/unmatched"),
    "another facility's unmatched queue": _billing_as("cashier", "GET", lambda b: "/payments/unmatched?facility=org-a"),
    "a shift opened by a doctor": _billing_as("doctor", "POST", lambda b: "/payments/shifts", lambda b: {}),
    "the daily report by clinic staff": _billing_as("clinic", "GET", lambda b: "/payments/reports/daily.csv"),
    "receipt by a doctor": _billing_as("doctor", "GET", lambda b: f"/payments/receipts/{b['paid']}"),
    "Invoice read by a doctor": _billing_as("doctor", "GET", lambda b: f"/fhir/Invoice/{b['issued']}"),
    "Invoice search by clinic staff": _billing_as("clinic", "GET", lambda b: "/fhir/Invoice?status=issued"),
    "the audit trail read by a cashier": _billing_as("cashier", "GET", lambda b: "/fhir/AuditEvent?outcome=4"),
    "the type history by a cashier": _billing_as("cashier", "GET", lambda b: "/fhir/Invoice/_history"),
    "the price list changed by a cashier": _billing_as("cashier", "POST", lambda b: "/fhir/ChargeItemDefinition",
                                                       lambda b: {"resourceType": "ChargeItemDefinition",
                                                                  "status": "active", "url": "urn:sen:x"}),
    "an Account created by a cashier": _billing_as("cashier", "POST", lambda b: "/fhir/Account",
                                                   lambda b: {"resourceType": "Account", "status": "active"}),
}


def _trail_of(db: Any, sub: str) -> list[dict[str, Any]]:
    return [e for e in (unpack(d)["res"] for d in db["AuditEvent"].find({}))
            if any(a.get("altId") == sub for a in e.get("agent", []))]


CASES = {("billing", False): BILLING, ("billing", True): BILLING_ROLES,
         ("teleconsult", False): TELECONSULT, ("teleconsult", True): TELECONSULT_ROLES}


@pytest.mark.parametrize("case", [(service, by_role, n) for (service, by_role), cases in CASES.items() for n in cases],
                         ids=lambda c: f"{c[0]} {c[2]}")
def test_a_refused_request_leaves_one_audit_event(case, request, dev_key) -> None:
    service, by_role, name = case
    # both apps live in this process whichever case runs first: each records in its own database
    # (its FHIR server's is bound to its settings, not found as the process's last-installed runtime)
    both = {"teleconsult": request.getfixturevalue("tele"), "billing": request.getfixturevalue("bill")}
    setup = both[service]
    sub, answer = CASES[service, by_role][name](setup, dev_key)
    if by_role:  # a role refused tells nothing about an id: a 403 that says so
        assert answer.status_code == 403, (name, answer.status_code, answer.text)
    else:
        assert answer.status_code in (403, 404, 422), (name, answer.status_code, answer.text)
    if service == "teleconsult":
        setup["fhir"].auditor.flush()  # its writer stores in the background
    trail = _trail_of(setup["db"], sub)
    assert [(e["outcome"], e["outcomeDesc"][:4]) for e in trail] == [("4", "403:")], (name, trail)
    if not by_role:
        assert "another" in trail[0]["outcomeDesc"], trail[0]["outcomeDesc"]


def test_another_facilitys_invoices_in_a_summary_request_are_one_recorded_refusal(bill, dev_key) -> None:
    """``/payments/invoices?id=...``: another facility's invoices are left out, as ids never stored are (the
    answer tells them apart in nothing), and the request leaves one AuditEvent naming them; a request naming
    none of them leaves none."""
    c, db = bill["client"], bill["db"]

    def ask(*ids: str) -> tuple[str, Any]:
        sub = f"thu-ngan-org-b-{uuid.uuid4().hex[:8]}"
        h = {"Authorization": f"Bearer {issue_dev_token(dev_key, 'cashier', sub=sub, facility='org-b')}",
             "Accept": "application/json"}
        return sub, c.get("/payments/invoices", params=[("id", i) for i in ids], headers=h)

    sub, r = ask(bill["issued"], "sen-no-such-invoice", bill["paid"], bill["issued"])
    assert r.status_code == 200 and r.json() == {"summaries": []}, r.text
    assert ask("sen-no-such-invoice", "sen-no-such-invoice-2")[1].json() == r.json()
    trail = _trail_of(db, sub)
    assert [(e["outcome"], e["outcomeDesc"][:4]) for e in trail] == [("4", "403:")], trail
    said = trail[0]["outcomeDesc"]
    assert f"Invoice/{bill['issued']}" in said and f"Invoice/{bill['paid']}" in said and "another" in said, said
    assert "sen-no-such-invoice" not in said, said
    # named as every record names what it was on: entity.what (domain resource), each once; searchable by entity
    assert [(e["what"]["reference"], e["role"]["code"]) for e in trail[0]["entity"]] == [
        (f"Invoice/{bill['issued']}", "4"), (f"Invoice/{bill['paid']}", "4")], trail[0]["entity"]
    admin = {"Authorization": f"Bearer {issue_dev_token(dev_key, 'admin')}", "Accept": "application/fhir+json"}
    found = c.get("/fhir/AuditEvent", params={"entity": f"Invoice/{bill['paid']}", "altid": sub}, headers=admin)
    assert [e["resource"]["id"] for e in found.json().get("entry", [])] == [trail[0]["id"]], found.text
    sub, r = ask("sen-no-such-invoice")
    assert r.status_code == 200 and _trail_of(db, sub) == [], r.text


def test_a_bundles_slot_reads_refused_by_role_are_recorded_one_per_entry(tele, dev_key) -> None:
    """A batch's or a transaction's ``GET Slot/{id}`` entry is read as ``GET /fhir/Slot/{id}`` is (teleconsult's
    computed Slots, ``scheduling.slot_entry``); refused by role, each entry is its 403 and one AuditEvent, as the
    single read's refusal is: outcome 4, the read, the Slot named. Before, the entries' refusals left none."""
    slots = [p["slot"][0]["reference"] for p in tele["proposals"][4:6]]
    for kind in ("batch", "transaction"):
        sub, h = _who(dev_key, "cashier", HUB)
        bundle = {"resourceType": "Bundle", "type": kind,
                  "entry": [{"request": {"method": "GET", "url": ref}} for ref in slots]}
        r = tele["client"].post("/fhir", content=json.dumps(bundle), headers=h)
        assert r.status_code == 200, (kind, r.status_code, r.text)
        assert [e["response"]["status"][:3] for e in r.json()["entry"]] == ["403", "403"], (kind, r.text)
        tele["fhir"].auditor.flush()
        refused = _trail_of(tele["db"], sub)
        assert [(e["outcome"], e["outcomeDesc"][:4], e["subtype"][0]["code"]) for e in refused] == [
            ("4", "403:", "read")] * 2, (kind, refused)
        assert sorted(ent["what"]["reference"] for e in refused for ent in e["entity"]) == sorted(slots), refused
        single_sub, single_h = _who(dev_key, "cashier", HUB)
        assert tele["client"].get(f"/fhir/{slots[0]}", headers=single_h).status_code == 403
        tele["fhir"].auditor.flush()
        single = _trail_of(tele["db"], single_sub)
        first = next(e for e in refused if e["entity"][0]["what"]["reference"] == slots[0])
        assert [(e["subtype"], e["entity"], e["outcomeDesc"]) for e in single] == [
            (first["subtype"], first["entity"], first["outcomeDesc"])], (kind, single)
