# ruff: noqa: F811 - the fixtures imported from test_portal_consult_patients are parameters by name
"""The consult form asks for the hub's specialty (issues 14 and 15): a select of the specialties of the hub's
doctors by name (their PractitionerRoles in the EHR: the worklist filter's list), "Không chỉ định" first;
the one chosen goes as the ServiceRequest's ``performerType`` (SNOMED, as teleconsult's ``$submit`` and
billing's consult prices take it). A specialty that is none of the hub's is refused on the field and nothing
is sent. The clinic's and the doctor's consult pages name it, the worklist's specialty filter finds the
consult, and once completed billing's invoice line is that specialty's price, not the general consult's.

Against a real EHR, teleconsult and billing (gunicorn processes on loopback), the real FerretDB; the portal in
this process. Teleconsult's own outbox events of the consult (``consult.requested``, ``consult.completed``) go
to billing's queue handler (``sen_billing.worker.consult_charge``), as its worker gets them from the bus."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sen_shared.auth import issue_dev_token

from tests.integration.consult_stack import *  # noqa: F403 - its fixtures, used by name
from tests.integration.test_portal_consult_patients import CLINIC, HUB, ICD10, LAN, _headers
from tests.integration.test_portal_consult_same_reason import _asked
from tests.support import (
    app_client,
    billing_service,  # noqa: F401 - the billing fixture, used by name
    csrf_token,
    portal_signed_in,
)

pytestmark = pytest.mark.integration

SNOMED = "http://snomed.info/sct"
CARDIO, ENDO = "394579002", "394583002"
DOCTOR = "bs-nguyen-van-an"  # the portal's demo doctor


@pytest.fixture(scope="module")
def roles(ehr, dev_key) -> None:
    """The hub's doctors' specialties in the EHR directory: cardiology (the demo doctor), endocrinology."""
    for rid, pract, code, text in ((f"pr-tm-{uuid.uuid4().hex[:6]}", DOCTOR, CARDIO, "Tim mạch"),
                                   (f"pr-nt-{uuid.uuid4().hex[:6]}", "bs-tran-thi-hoa", ENDO, "Nội tiết")):
        role = {"resourceType": "PractitionerRole", "id": rid, "active": True,
                "practitioner": {"reference": f"Practitioner/{pract}"},
                "organization": {"reference": f"Organization/{HUB}"},
                "specialty": [{"coding": [{"system": SNOMED, "code": code}], "text": text}]}
        r = httpx.put(f"{ehr}/fhir/PractitionerRole/{rid}", json=role, headers=_headers(dev_key, "admin"), timeout=30)
        assert r.status_code in (200, 201), r.text


@pytest.fixture(scope="module")
def portal(base_env, run_id, ehr, tc, billing, roles, mongo_client):
    env = {**base_env, "SEN_EHR_URL": ehr, "SEN_TELECONSULT_URL": tc, "SEN_BILLING_URL": billing[0],
           "SEN_HTTP_TIMEOUT": "10"}
    with app_client("portal", env, f"sen_t{run_id}_pcs_portal", mongo_client) as (_client, app):
        app.app.config["TESTING"] = True
        yield app.app


def _form(clinic: Any) -> tuple[str, dict[str, str]]:
    page = clinic.get(f"/patients/{LAN}/consult").get_data(as_text=True)
    key = re.search(r'name="key" type="hidden" value="([0-9a-f]{32})"', page).group(1)
    return page, {"csrf_token": csrf_token(page), "key": key, "patient": LAN, "priority": "urgent",
                  "reason": "I20.0 — Đau thắt ngực không ổn định",
                  "question": f"Đau ngực khi gắng sức ({key[:8]}), xin ý kiến tim mạch."}


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


def _shown(page: str) -> str:
    return _text(re.search(r'data-testid="consult-specialty">(.*?)</dd>', page, re.S).group(1))


def _events(mongo_client: Any, tc_db: str, tid: str) -> list[dict[str, Any]]:
    """Teleconsult's outbox events of the consult, in its chain's order."""
    from sen_shared.bus.outbox import entry_event

    steps = mongo_client[tc_db]["consult_steps"]
    return [entry_event(e) for link in steps.find({"k": tid}).sort("n", 1) for e in link.get("outbox") or []]


def _op(tc: str, tid: str, name: str, headers: dict[str, str], params: list[dict[str, Any]]) -> None:
    r = httpx.post(f"{tc}/fhir/Task/{tid}/{name}", json={"resourceType": "Parameters", "parameter": params},
                   headers=headers, timeout=30)
    assert r.status_code == 200, r.text


def _minutes() -> list[dict[str, Any]]:
    def who(ref: str, role: str) -> dict[str, Any]:
        return {"name": "participant", "part": [{"name": "who", "valueReference": {"reference": ref}},
                                                {"name": "role", "valueString": role}]}

    return [
        {"name": "start", "valueDateTime": "2026-11-20T09:00:00+07:00"},
        {"name": "end", "valueDateTime": "2026-11-20T09:30:00+07:00"},
        {"name": "site", "valueReference": {"reference": f"Organization/{HUB}"}},
        {"name": "site", "valueReference": {"reference": f"Organization/{CLINIC}"}},
        who(f"Practitioner/{DOCTOR}", "Chủ trì"), who("Practitioner/ys-vo-minh-tam", "Y sĩ trạm y tế xã"),
        {"name": "patient-identity", "valueString": "Nữ, 58 tuổi, mã BN p-lan"},
        {"name": "history", "valueString": "Đau ngực khi gắng sức 2 tuần."},
        {"name": "findings-clinical", "valueString": "HA 150/90, mạch 88."},
        {"name": "discussion", "valueString": "Nghĩ đến đau thắt ngực không ổn định."},
        {"name": "conclusion", "valueCoding": {"system": ICD10, "code": "I20.0"}},
        {"name": "recommendations", "valueString": "Chuyển tuyến tỉnh làm nghiệm pháp gắng sức."},
        {"name": "chair", "valueReference": {"reference": f"Practitioner/{DOCTOR}"}},
    ]


def _auth(dev_key: Path, role: str, **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_dev_token(dev_key, role, **claims)}", "Accept": "application/fhir+json"}


def test_a_consult_asked_of_cardiology_is_found_by_the_filter_and_priced_as_cardiology(
        portal, tc, tc_db, billing, dev_key, mongo_client, base_env, monkeypatch):
    clinic = portal_signed_in(portal, "clinic")
    page, data = _form(clinic)
    select = re.search(r'<select[^>]*name="specialty"[^>]*>(.*?)</select>', page, re.S).group(1)
    options = re.findall(r'<option[^>]*value="([^"]*)"[^>]*>([^<]*)</option>', select)
    # by name, never a code; any specialty first, and chosen at first
    assert options == [("", "Không chỉ định"), (ENDO, "Nội tiết"), (CARDIO, "Tim mạch")], options
    assert re.search(r'<option selected value="">|<option value="" selected>', select)

    # a specialty that is none of the hub's: said on the field, nothing sent
    r = clinic.post(f"/patients/{LAN}/consult", data={**data, "specialty": "999999"})
    assert r.status_code == 422
    assert "Chuyên khoa này không phải chuyên khoa nào của bệnh viện tuyến trên" in r.get_data(as_text=True)
    assert not _asked(tc, dev_key, data["question"])

    r = clinic.post(f"/patients/{LAN}/consult", data={**data, "specialty": CARDIO})
    assert r.status_code == 302, r.get_data(as_text=True)[:800]
    tid = re.search(r"/consults/([^?]+)", r.headers["Location"]).group(1)
    (sr,) = _asked(tc, dev_key, data["question"])
    # SNOMED's display on the coding (English, as the code system names it), the Vietnamese name as text
    assert sr["performerType"] == {"coding": [{"system": SNOMED, "code": CARDIO, "display": "Cardiology"}],
                                   "text": "Tim mạch"}
    assert _shown(clinic.get(f"/consults/{tid}").get_data(as_text=True)) == "Tim mạch"
    english = portal_signed_in(portal, "clinic", lang="en")
    assert _shown(english.get(f"/consults/{tid}").get_data(as_text=True)) == "Cardiology"

    # the hub doctor: the worklist's cardiology filter finds it, endocrinology's does not; the page names it
    doctor = portal_signed_in(portal, "doctor")
    found = doctor.get(f"/worklist?specialty={CARDIO}")
    assert found.status_code == 200 and f"/tasks/{tid}" in found.get_data(as_text=True)
    other = doctor.get(f"/worklist?specialty={ENDO}")
    assert other.status_code == 200 and f"/tasks/{tid}" not in other.get_data(as_text=True)
    assert _shown(doctor.get(f"/tasks/{tid}").get_data(as_text=True)) == "Tim mạch"

    # completed (the doctor's accept and minutes, teleconsult's API): billing prices it as cardiology
    as_doctor = _headers(dev_key, "doctor", facility=HUB, practitioner=DOCTOR, sub="portal-doctor")
    _op(tc, tid, "$accept", as_doctor, [])
    _op(tc, tid, "$complete", as_doctor, _minutes())
    from sen_billing import worker

    url, billing_db = billing
    for key, value in {**base_env, "SEN_DB": billing_db.name}.items():  # billing's worker's settings
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SEN_FACILITY_LEVELS", raising=False)  # the clinic: the default level (district)
    worker._settings.cache_clear()
    try:
        events = _events(mongo_client, tc_db, tid)
        kinds = [e["type"].split(".")[-2] for e in events]
        assert "requested" in kinds and "completed" in kinds, kinds
        for event in events:
            if event["type"].split(".")[-2] in ("requested", "completed"):
                worker.consult_charge(event, billing_db)
    finally:
        worker._settings.cache_clear()
    cashier = _auth(dev_key, "cashier", facility=CLINIC)
    bundle = httpx.get(f"{url}/fhir/Invoice", params={"subject": f"Patient/{LAN}"}, headers=cashier, timeout=30)
    assert bundle.status_code == 200, bundle.text
    invoices = [e["resource"] for e in bundle.json().get("entry") or []
                if e["resource"]["resourceType"] == "Invoice"]
    (invoice,) = [i for i in invoices if any(
        (line.get("chargeItemReference") or {}).get("display", "").startswith("Hội chẩn") for line in i["lineItem"])]
    (line,) = invoice["lineItem"]
    cardio = httpx.get(f"{url}/fhir/ChargeItemDefinition/consult-{CARDIO}-district", headers=cashier, timeout=30)
    generic = httpx.get(f"{url}/fhir/ChargeItemDefinition/consult-any-district", headers=cashier, timeout=30)
    price = cardio.json()["propertyGroup"][0]["priceComponent"][0]["amount"]["value"]
    assert price != generic.json()["propertyGroup"][0]["priceComponent"][0]["amount"]["value"]
    assert line["chargeItemReference"]["display"] == "Hội chẩn từ xa chuyên khoa Tim mạch", line
    base = next(p for p in line["priceComponent"] if p["type"] == "base")
    assert base["amount"]["value"] == price
