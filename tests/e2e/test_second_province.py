"""A second province deploys Sen: the core journey on the invented province Bắc Sen, never on the demo's values.

Its province file (``tests/e2e/provinces/bac-sen.json``: 1 hub, 2 district health centres, 5 commune stations,
3 hub specialists, its own holidays, price list, bank account, base salary and goal) is chosen as ``make run``
chooses one: every setting it decides comes from ``deploy/local/province.py`` (what ``make run`` evals), the four
services run as ``make run`` starts them (gunicorn web and worker processes, on their own databases and bus
prefix) and ``deploy/local/seed.py`` seeds the file ``SEN_PROVINCE`` names. The file is copied with one more
holiday, the next working day, so the test can see the province's holidays keep the specialists' slots off it.

The journey: a commune station of Bắc Sen's nurse signs in to the portal (the development sign-in's clinic user,
Bắc Sen's by its file's demoUsers) and asks for a consult with the form, which sends it to Bắc Sen's hub; its
cardiologist finds slots (none on the province's holiday, none outside its hours), books one and completes the
consult; another station's system asks through the API naming no hub, and teleconsult sends that one to Bắc Sen's
hub too; billing charges Bắc Sen's price for a cardiology consult at a commune station (185.000 ₫, the demo list's
170.000 ₫) and the QR pays Bắc Sen's account; the dashboard counts Bắc Sen's facilities against its goal of 8
(before Sen: its hub; now also the two stations) and its EHR coverage against its 12 residents. Each of these would
take the demo's value (Võ Minh Tâm of tyt-my-hiep, bvdk-dong-thap, 07:30 slots, 170.000 ₫, 970436/0011001234567, a
goal of 165 and a baseline of 3, 10 residents) if the province's setting were lost on the way.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sen_shared.auth import issue_dev_token

from tests.browser.stack import running_stack
from tests.e2e.test_consult_journey import _headers, _minutes, _params, _post, _wait
from tests.support import csrf_token

ROOT = Path(__file__).resolve().parents[2]
PROVINCE = Path(__file__).resolve().parent / "provinces" / "bac-sen.json"
sys.path.insert(0, str(ROOT / "deploy" / "local"))
import province  # noqa: E402  (deploy/local/province.py: the settings make run derives from a province file)

VN = ZoneInfo("Asia/Ho_Chi_Minh")
FJ = "application/fhir+json"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
HUB, CLINIC, PATIENT, DOCTOR, CARDIO = "bvdk-bac-sen", "tyt-an-binh", "bn-bs-0001", "bs-hoang-minh-khoa", "394579002"
PRICE = 185_000  # bac-sen-prices.json: consult-394579002-commune (the demo list's: 170.000 ₫)
pytestmark = pytest.mark.integration


def _next_working_day() -> datetime:
    """Midnight (Vietnam) of the next Monday-to-Friday day after today: Bắc Sen's specialists work that day."""
    day = datetime.now(VN).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


@pytest.fixture(scope="module")
def holiday() -> datetime:
    return _next_working_day()


@pytest.fixture(scope="module")
def bac_sen(base_env, run_id, tmp_path_factory, mongo_client, holiday):
    here = tmp_path_factory.mktemp("bac-sen")
    data = json.loads(PROVINCE.read_text(encoding="utf-8"))
    data["holidays"] = [*data["holidays"], holiday.date().isoformat()]
    data["priceList"] = str(PROVINCE.parent / data["priceList"])
    copy = here / "bac-sen.json"
    copy.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    settings = province.settings(province.load(copy))
    env = {**base_env, "LOG_LEVEL": "INFO", **settings, "SEN_PROVINCE": str(copy)}
    prefix = f"sen_t{run_id}_bacsen"
    try:
        with running_stack(env, here / "logs", prefix) as urls:
            yield {**urls, "settings": settings}
    finally:
        for svc in ("ehr", "teleconsult", "billing", "portal"):
            mongo_client.drop_database(f"{prefix}_{svc}")


def _find(tc: str, headers: dict[str, str], start: datetime, end: datetime, sr: str) -> list[dict[str, Any]]:
    r = _post(f"{tc}/fhir/Appointment/$find", _params(
        {"name": "start", "valueDateTime": start.isoformat(timespec="seconds")},
        {"name": "end", "valueDateTime": end.isoformat(timespec="seconds")},
        {"name": "specialty", "valueCode": CARDIO},
        {"name": "patient-reference", "valueReference": {"reference": f"Patient/{PATIENT}"}},
        {"name": "service-request", "valueReference": {"reference": sr}},
        {"name": "_count", "valueInteger": 40}), headers)
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])]


def test_the_province_file_decides_every_setting_the_journey_meets() -> None:
    """What ``make run`` exports for Bắc Sen: its hub, lead, bank, base salary, price list, holidays, goal, baseline,
    residents and facilities; none of them the demo's."""
    data = province.load(PROVINCE)
    s = province.settings(data)
    assert s["SEN_CONSULT_DEFAULT_HUB"] == s["SEN_PORTAL_HUB"] == HUB
    assert json.loads(s["SEN_ON_DUTY_LEADS"]) == {HUB: f"Practitioner/{DOCTOR}"}
    assert (s["SEN_BANK_BIN"], s["SEN_BANK_ACCOUNT"]) == ("970415", "1180009876543")
    assert json.loads(s["SEN_BANK_ACCOUNT_FACILITIES"]) == {"1180009876543": CLINIC}
    assert s["SEN_BASE_SALARY"] == "2530000"
    assert s["SEN_PRICE_LIST_FILE"] == str(PROVINCE.parent / "bac-sen-prices.json")
    assert "2027-02-05" in s["SEN_TELECONSULT_HOLIDAYS"].split(",")
    assert s["SEN_REPORT_FACILITY_GOAL"] == "8"
    assert json.loads(s["SEN_REPORT_BASELINE_FACILITIES"]) == [HUB]
    assert s["SEN_REPORT_POPULATION"] == "12"
    levels = json.loads(s["SEN_FACILITY_LEVELS"])
    assert sorted(levels.values()).count("commune") == 5 and sorted(levels.values()).count("district") == 2
    assert len(levels) == 8


def test_a_consult_of_the_second_province_runs_on_its_own_settings(bac_sen, dev_key, holiday) -> None:
    tc, billing, portal = bac_sen["teleconsult"], bac_sen["billing"], bac_sen["portal"]
    clinic = _headers(dev_key, "clinic", facility=CLINIC, sub="nv-an-binh")
    doctor = _headers(dev_key, "doctor", facility=HUB, practitioner=DOCTOR, sub=DOCTOR)
    admin = _headers(dev_key, "admin")

    # 1. the station's nurse signs in to the portal (the demo user 'clinic', here Bắc Sen's) and asks the hub's
    # cardiologist (the form offers the hub's specialties, Bắc Sen's paediatrics among them); the consult goes
    # to the province's hub
    with httpx.Client(base_url=portal, timeout=30) as nurse:
        r = nurse.post("/login", data={"username": "clinic", "password": "sen-clinic",
                                       "csrf_token": csrf_token(nurse.get("/login").text)})
        assert r.status_code in (302, 303), r.text[:500]
        page = nurse.get(f"/patients/{PATIENT}/consult")
        assert page.status_code == 200, page.text[:500]
        assert "Mai Thị Hoa" in page.text and 'value="394537008"' in page.text and f'value="{CARDIO}"' in page.text
        key = re.search(r'name="key" type="hidden" value="([0-9a-f]{32})"', page.text).group(1)
        r = nurse.post(f"/patients/{PATIENT}/consult", data={
            "csrf_token": csrf_token(page.text), "key": key, "patient": PATIENT, "priority": "routine",
            "reason": "I20.8 — Đau thắt ngực khác", "specialty": CARDIO,
            "question": "Đau ngực khi gắng sức 2 tháng nay, xin ý kiến điều trị?"})
        assert r.status_code in (302, 303) and "/consults/" in r.headers["location"], r.text[:1000]
        task_id = r.headers["location"].rstrip("/").rsplit("/", 1)[1]
    task = httpx.get(f"{tc}/fhir/Task/{task_id}", headers=clinic, timeout=30).json()
    assert task["owner"] == {"reference": f"Organization/{HUB}"}, task.get("owner")
    assert task["requester"]["reference"] == f"Organization/{CLINIC}", task.get("requester")
    sr_ref = task["focus"]["reference"]
    # and another station's system asks through the API naming no hub: teleconsult sends it to the province's hub
    other = _headers(dev_key, "clinic", facility="tyt-phu-loc", sub="nv-phu-loc")
    sr = {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "priority": "routine",
          "subject": {"reference": "Patient/bn-bs-0002"},
          "reasonCode": [{"coding": [{"system": ICD10, "code": "I10", "display": "Tăng huyết áp"}]}],
          "note": [{"text": "Huyết áp khó kiểm soát, xin ý kiến điều trị?"}]}
    r = _post(f"{tc}/fhir/ServiceRequest/$submit", sr, other)
    assert r.status_code == 201, r.text
    made = {e["resource"]["resourceType"]: e["resource"] for e in r.json()["entry"]}
    assert made["Task"]["owner"] == {"reference": f"Organization/{HUB}"}, made["Task"].get("owner")

    # 2. its cardiologist accepts, finds slots: none on the province's holiday, all in its hours, all his
    r = _post(f"{tc}/fhir/Task/{task_id}/$accept", _params(), doctor)
    assert r.status_code == 200, r.text
    assert _find(tc, doctor, holiday, holiday + timedelta(days=1), sr_ref) == []
    proposals = _find(tc, doctor, holiday, holiday + timedelta(days=14), sr_ref)
    assert proposals, "no slot in two weeks"
    for p in proposals:
        start = datetime.fromisoformat(p["start"]).astimezone(VN)
        assert start.date() != holiday.date(), p["start"]
        assert "08:00" <= start.strftime("%H:%M") < "11:00" or "14:00" <= start.strftime("%H:%M") < "16:00", p["start"]
        assert p["participant"][-1]["actor"]["reference"] == f"Practitioner/{DOCTOR}"

    # 3. he holds and books the first, starts the consult and completes it with the minutes
    r = _post(f"{tc}/fhir/Appointment/$hold", _params({"name": "appointment-resource", "resource": proposals[0]}),
              doctor)
    assert r.status_code == 200, r.text
    held = r.json()["entry"][0]["resource"]
    assert held["status"] == "pending", held
    r = _post(f"{tc}/fhir/Appointment/$book", _params(
        {"name": "appointment-reference", "valueReference": {"reference": f"Appointment/{held['id']}"}}), doctor)
    assert r.status_code == 200, r.text
    booked = r.json()["entry"][0]["resource"]
    assert booked["status"] == "booked"
    r = _post(f"{tc}/fhir/Task/{task_id}/$start", _params(), doctor)
    assert r.status_code == 200, r.text
    signed = datetime.now(VN)
    r = _post(f"{tc}/fhir/Task/{task_id}/$complete",
              _minutes(f"Appointment/{booked['id']}", (signed - timedelta(minutes=30)).isoformat(timespec="seconds"),
                       signed.isoformat(timespec="seconds"), hub=HUB, clinic=CLINIC, doctor=DOCTOR,
                       clinician="ys-mai-thi-hoa", patient=PATIENT), doctor)
    assert r.status_code == 200 and r.json()["status"] == "completed", r.text

    # 4. billing charges the province's price at the station, where the patient pays
    from sen_billing.domain.invoices import derived_id
    from sen_billing.domain.vietqr import parse

    cashier = {**_headers(dev_key, "cashier", facility=CLINIC), "Accept": FJ}
    invoice_id = derived_id("consult", "invoice", sr_ref)

    def issued() -> dict[str, Any] | None:
        r = httpx.get(f"{billing}/fhir/Invoice/{invoice_id}", headers=cashier, timeout=30)
        return r.json() if r.status_code == 200 and r.json().get("status") == "issued" else None

    invoice = _wait(issued, 90)
    assert invoice["issuer"]["reference"] == f"Organization/{CLINIC}"
    assert invoice["totalGross"]["value"] == PRICE, invoice["totalGross"]

    # 5. its QR pays the province's account
    r = httpx.get(f"{billing}/fhir/Invoice/{invoice_id}/$vietqr", headers={**cashier, "Accept": "application/json"},
                  timeout=30)
    assert r.status_code == 200, r.text
    qr = parse(r.json()["payload"])
    assert (qr.bin, qr.account, qr.amount) == ("970415", "1180009876543", PRICE)

    # 6. the dashboard: the province's facilities against its goal, its records against its residents
    dept = {"Authorization": f"Bearer {issue_dev_token(dev_key, 'health-dept', facility='so-y-te-bac-sen')}"}

    def figures() -> dict[str, Any] | None:
        r = httpx.get(f"{portal}/api/reports/dashboard", headers=dept, timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        ready = body["facilities_using"]["new"] == 2 and body["ehr_coverage"]["patients"] == 3
        return body if ready else None

    body = _wait(figures, 90)
    assert {k: body["facilities_using"][k] for k in ("count", "new", "baseline", "goal", "share", "baseline_named",
                                                     "baseline_using")} == {
        "count": 3, "new": 2, "baseline": 1, "goal": 8, "share": 0.375, "baseline_named": True, "baseline_using": 0}
    assert body["ehr_coverage"]["population"] == 12 and body["ehr_coverage"]["share"] == 0.25
    assert httpx.get(f"{tc}/fhir/Task/{task_id}", headers=admin, timeout=30).json()["status"] == "completed"
