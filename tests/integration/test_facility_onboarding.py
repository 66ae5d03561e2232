"""A facility brought on as docs/operations.md says ("Bringing a facility on") works where it matters most,
on the real FerretDB and RabbitMQ: the province file gains Trạm Y tế xã Mỹ Long with a bank account of its own;
``facility.py check`` finds it complete; the EHR (a gunicorn process) is given the province, then the facility's
bundle from ``facility.py bundle``; teleconsult (a gunicorn process) and billing run on the settings
``province.py`` makes of the file. Its clinic user (token claims facility and practitioner) submits a consult that
goes to the hub, whose doctor finds it on the worklist; its cashier's invoice shows a VietQR code paying into the
facility's own account (another facility's, the province's), and its receipt is numbered in its own series."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sen_shared.auth import issue_dev_token

from tests.billing_support import billing_app, hand_invoice, pay
from tests.deploy.test_facility_check import NEW, NEW_BANK, with_new_facility
from tests.support import web_process

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy" / "local"))
import facility  # noqa: E402
import province  # noqa: E402
import seed  # noqa: E402

pytestmark = pytest.mark.integration

FJ = "application/fhir+json"
HUB = "bvdk-dong-thap"
NURSE = "ys-ngo-thi-thu"  # the new facility's practitioner in with_new_facility
PATIENT = "bn-my-long-1"


def _headers(dev_key: Path, role: str, **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_dev_token(dev_key, role, sub=f'{role}-{uuid.uuid4().hex[:6]}', **claims)}",
            "Content-Type": FJ, "Accept": FJ}


@pytest.fixture(scope="module")
def onboarded(tmp_path_factory) -> tuple[dict[str, Any], dict[str, str]]:
    """The province file with the new facility, checked as the procedure checks it: (its data, its settings)."""
    path = tmp_path_factory.mktemp("province") / "province.json"
    path.write_text(json.dumps(with_new_facility(), ensure_ascii=False), encoding="utf-8")
    assert facility.main(["check", str(path), NEW]) == 0
    data = province.load(path)
    return data, province.settings(data)


@pytest.fixture(scope="module")
def services(base_env, run_id, tmp_path_factory, mongo_client, dev_key, onboarded):
    """The EHR holding the province and then the new facility's bundle; teleconsult on the file's settings."""
    data, values = onboarded
    ehr_db, tc_db = f"sen_t{run_id}_fac_ehr", f"sen_t{run_id}_fac_tc"
    logs = tmp_path_factory.mktemp("facility")
    env = {**base_env, **values}
    try:
        with web_process("ehr", {**env, "SEN_DB": ehr_db}, logs / "ehr.log") as ehr, \
                web_process("teleconsult", {**env, "SEN_DB": tc_db, "SEN_EHR_URL": ehr, "SEN_HTTP_TIMEOUT": "10"},
                            logs / "tc.log") as tc:
            admin = issue_dev_token(dev_key, "admin", sub="operator")
            before = {**data, "organizations": [o for o in data["organizations"] if o["id"] != NEW],
                      "practitioners": [p for p in data["practitioners"] if p["org"] != NEW]}
            assert seed.post_bundle(ehr, seed.province_bundle(before), admin, "the province")
            for _ in range(2):  # loading the facility again changes nothing it holds
                assert seed.post_bundle(ehr, facility.bundle(data, NEW), admin, "the facility")
            patient = {"resourceType": "Patient", "id": PATIENT, "active": True, "gender": "female",
                       "birthDate": "1981-05-09", "name": [{"family": "Lâm", "given": ["Thị", "Hạnh"]}],
                       "managingOrganization": {"reference": f"Organization/{NEW}"}}
            r = httpx.put(f"{ehr}/fhir/Patient/{PATIENT}", json=patient, timeout=30,
                          headers={"Authorization": f"Bearer {admin}", "Content-Type": FJ})
            assert r.status_code in (200, 201), r.text
            yield {"ehr": ehr, "tc": tc}
    finally:
        mongo_client.drop_database(ehr_db)
        mongo_client.drop_database(tc_db)


def test_the_ehr_holds_the_facility_once_with_its_district_and_practitioner(services, dev_key) -> None:
    admin = _headers(dev_key, "admin")
    org = httpx.get(f"{services['ehr']}/fhir/Organization/{NEW}", headers=admin, timeout=30).json()
    assert org["name"] == "Trạm Y tế xã Mỹ Long" and org["address"][0]["district"] == "Huyện Cao Lãnh"
    roles = httpx.get(f"{services['ehr']}/fhir/PractitionerRole", params={"organization": f"Organization/{NEW}"},
                      headers=admin, timeout=30).json()
    assert [e["resource"]["id"] for e in roles.get("entry", [])] == [f"{NURSE}-role"]


def test_its_clinic_user_submits_a_consult_that_its_hub_answers(services, dev_key) -> None:
    clinic = _headers(dev_key, "clinic", facility=NEW, practitioner=NURSE)
    sr = {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "priority": "urgent",
          "subject": {"reference": f"Patient/{PATIENT}"}, "requester": {"reference": f"Organization/{NEW}"},
          "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10",
                                      "display": "Tăng huyết áp vô căn (nguyên phát)"}]}],
          "note": [{"text": "Xin ý kiến tuyến trên."}]}
    r = httpx.post(f"{services['tc']}/fhir/ServiceRequest/$submit", json=sr, headers=clinic, timeout=30)
    assert r.status_code == 201, r.text
    task = next(e["resource"] for e in r.json()["entry"] if e["resource"]["resourceType"] == "Task")
    assert task["owner"]["reference"] == f"Organization/{HUB}"  # SEN_CONSULT_DEFAULT_HUB, from the file
    doctor = _headers(dev_key, "doctor", facility=HUB, practitioner="bs-nguyen-van-an")
    r = httpx.get(f"{services['tc']}/fhir/Task/$worklist", headers=doctor, timeout=30)
    assert r.status_code == 200, r.text
    assert task["id"] in r.text
    r = httpx.post(f"{services['tc']}/fhir/Task/{task['id']}/$accept", headers=doctor, timeout=30,
                   json={"resourceType": "Parameters"})
    assert r.status_code == 200, r.text


def test_its_cashiers_invoice_pays_into_its_own_account(base_env, mongo_client, monkeypatch, dev_key,
                                                         onboarded) -> None:
    _, values = onboarded
    with billing_app(base_env, mongo_client, monkeypatch, "fac", values) as (client, db):
        cashier = _headers(dev_key, "cashier", facility=NEW)
        iid, _ = hand_invoice(client, cashier, f"Patient/{PATIENT}", ["sieu-am-bung"])
        r = client.post(f"/fhir/Invoice/{iid}/$issue", headers=cashier)
        assert r.status_code == 200, r.text
        ext = {e["url"].rsplit("/", 1)[-1]: e for e in r.json()["extension"]}
        assert ext["district"]["valueString"] == "Huyện Cao Lãnh"
        qr = client.get(f"/fhir/Invoice/{iid}/$vietqr", headers=cashier)
        assert qr.status_code == 200, qr.text
        body = qr.json()
        assert body["bank"] == {"bin": NEW_BANK["bin"], "account": NEW_BANK["account"], "name": NEW_BANK["accountName"]}
        assert f"{NEW_BANK['bin']}01{len(NEW_BANK['account']):02d}{NEW_BANK['account']}" in body["payload"]
        desk = client.get(f"/payments/invoices/{iid}/desk", headers=cashier)
        assert desk.status_code == 200, desk.text
        assert desk.json()["qr"]["bank"]["account"] == NEW_BANK["account"]
        # another facility of the province, with no account of its own: the province's
        other = _headers(dev_key, "cashier", facility="tyt-my-hiep")
        iid2, _ = hand_invoice(client, other, f"Patient/p-{uuid.uuid4().hex[:6]}", ["sieu-am-bung"])
        assert client.post(f"/fhir/Invoice/{iid2}/$issue", headers=other).status_code == 200
        assert client.get(f"/fhir/Invoice/{iid2}/$vietqr", headers=other).json()["bank"]["account"] == "0011001234567"
        # paid: its receipt is numbered in its own series and names it
        pay(db, body["reference"], body["amount"])
        receipt = db["receipts"].find_one({"_id": iid})
        assert receipt["number"].startswith("TYT-MY-LONG-") and receipt["number"].endswith("-000001")
