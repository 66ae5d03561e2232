"""A clinic takes on a patient registered at another facility (``Patient/{id}/$take-on``), on the real FerretDB.

Before: facility B's clinic cannot read facility A's patient, nor find them by CCCD. With the
patient's full CCCD (or BHYT number) and a reason, B's clinic is granted the patient: the chart
($everything) opens, the CCCD search finds them, a consult can be asked; another facility still
cannot. A wrong number is 403 and grants nothing; bad input is 400 (OperationOutcome); a
doctor or cashier cannot take a patient on. Double clicks and many nurses at once make ONE grant
(an insert under the (patient, facility) key; one 201, the others 200). Every attempt is audited.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, NamedTuple

import pytest
from sen_shared.fhir.access import GRANTS

from tests.integration.test_ehr_consult_record import bearer, ehr
from tests.integration.test_idempotency import race

pytestmark = pytest.mark.integration
__all__ = ["ehr"]

CCCD = "https://fhir.sen.vn/sid/cccd"
BHYT = "https://fhir.sen.vn/sid/bhyt"  # sen_shared.bhyt.CARD_SYSTEM (checked below)
A, B, C = "ttyt-cao-lanh", "tram-y-te-my-tho", "tram-y-te-sa-dec"
REASON = "Người bệnh đến khám tại cơ sở"


@pytest.fixture(scope="module")
def ehr_env(base_env: dict[str, str], run_id: str) -> dict[str, str]:
    """test_ehr_consult_record's EHR (its ``ehr`` fixture), with a limit of wrong numbers these tests
    never reach: one nurse gives a dozen wrong numbers here (the limit's own tests:
    test_ehr_take_on_limit.py)."""
    return {**base_env, "SEN_DB": f"sen_t{run_id}_ehr_{uuid.uuid4().hex[:4]}", "SEN_TAKE_ON_MAX_FAILURES": "1000"}


def post(c: Any, h: dict[str, str], path: str, body: dict[str, Any]) -> Any:
    return c.post(path, content=json.dumps(body), headers=h)


def params(system: str = CCCD, value: str = "087048006170", reason: str | None = REASON) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"name": "identifier", "valueIdentifier": {"system": system, "value": value}}]
    if reason is not None:
        parts.append({"name": "reason", "valueString": reason})
    return {"resourceType": "Parameters", "parameter": parts}


def clinic(dev_key: Any, fac: str) -> dict[str, str]:
    return bearer(dev_key, "clinic", facility=fac, sub=f"nurse-{fac}")


class Tam(NamedTuple):
    pid: str
    cccd: str
    card: str


@pytest.fixture()
def t(ehr: Any, dev_key: Any) -> Tam:
    """Huỳnh Văn Tâm, a patient of facility A (a CCCD and a BHYT card); a new one per test."""
    import random

    cccd = f"0870{random.randrange(10**8):08d}"
    card = f"HT{random.randrange(10**13):013d}"
    r = post(ehr, bearer(dev_key, "admin"), "/fhir/Patient", {
        "resourceType": "Patient", "name": [{"family": "Huỳnh", "given": ["Văn", "Tâm"]}], "birthDate": "1948-01-01",
        "identifier": [{"system": CCCD, "value": cccd}, {"system": BHYT, "value": card}],
        "managingOrganization": {"reference": f"Organization/{A}"}})
    assert r.status_code == 201, r.text
    return Tam(r.json()["id"], cccd, card)


def test_the_bhyt_system_is_the_ehrs() -> None:
    from sen_shared import bhyt

    assert bhyt.CARD_SYSTEM == BHYT


def test_a_clinic_takes_a_patient_on_with_the_cccd_and_then_reads_the_chart(ehr: Any, dev_key: Any, t: Tam) -> None:
    tam, cccd = t.pid, t.cccd
    h = clinic(dev_key, B)
    assert ehr.get(f"/fhir/Patient/{tam}", headers=h).status_code == 404  # another facility's: as if missing
    found = ehr.get(f"/fhir/Patient?identifier={CCCD}|{cccd}", headers=h).json()
    assert found.get("total", 0) == 0 and not found.get("entry")

    r = post(ehr, h, f"/fhir/Patient/{tam}/$take-on", params(value=f" {cccd[:6]} {cccd[6:]} "))
    assert r.status_code == 201, r.text
    got = {p["name"]: p for p in r.json()["parameter"]}
    assert got["patient"]["valueReference"]["reference"] == f"Patient/{tam}"
    assert got["grantee"]["valueReference"]["reference"] == f"Organization/{B}"
    assert got["reason"]["valueString"] == REASON

    assert ehr.get(f"/fhir/Patient/{tam}", headers=h).status_code == 200
    assert ehr.get(f"/fhir/Patient/{tam}/$everything", headers=h).status_code == 200
    found = ehr.get(f"/fhir/Patient?identifier={CCCD}|{cccd}", headers=h).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [tam]
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "Mạch"},
           "subject": {"reference": f"Patient/{tam}"}, "valueQuantity": {"value": 80, "unit": "/min"}}
    assert post(ehr, h, "/fhir/Observation", obs).status_code == 201  # B now writes the record too
    # the managing organization is A's still, and another facility still reaches nothing
    assert ehr.get(f"/fhir/Patient/{tam}", headers=h).json()["managingOrganization"]["reference"] == f"Organization/{A}"
    assert ehr.get(f"/fhir/Patient/{tam}", headers=clinic(dev_key, C)).status_code == 404
    # a grant is no ownership: B deletes nothing of the patient's
    assert ehr.delete(f"/fhir/Patient/{tam}", headers=h).status_code == 403


def test_the_bhyt_number_takes_the_patient_on_too(ehr: Any, dev_key: Any, t: Tam) -> None:
    tam, card = t.pid, t.card
    h = clinic(dev_key, C)
    r = post(ehr, h, f"/fhir/Patient/{tam}/$take-on", params(BHYT, card.lower()))
    assert r.status_code == 201, r.text
    assert ehr.get(f"/fhir/Patient/{tam}", headers=h).status_code == 200


@pytest.mark.parametrize("value", ["087048006171", "08704800617", "HT0000000000000"])
def test_a_wrong_number_is_403_and_grants_nothing(ehr: Any, dev_key: Any, t: Tam, value: str,
                                                 mongo_client: Any, ehr_env: dict[str, str]) -> None:
    tam, cccd = t.pid, t.cccd
    wrong = value if value != "087048006171" else cccd[:-1] + str((int(cccd[-1]) + 1) % 10)
    h = clinic(dev_key, B)
    r = post(ehr, h, f"/fhir/Patient/{tam}/$take-on", params(value=wrong))
    assert r.status_code == 403, r.text
    issue = r.json()["issue"][0]
    assert r.json()["resourceType"] == "OperationOutcome" and issue["code"] == "forbidden"
    assert "not this patient's" in issue["diagnostics"] and cccd not in r.text
    # the other card's number under the CCCD system is not the CCCD either
    tam, card = t.pid, t.card
    assert post(ehr, h, f"/fhir/Patient/{tam}/$take-on", params(CCCD, card)).status_code == 403
    assert ehr.get(f"/fhir/Patient/{tam}", headers=h).status_code == 404
    assert mongo_client[ehr_env["SEN_DB"]][GRANTS].count_documents({"patient": f"Patient/{tam}"}) == 0


def test_an_unknown_patient_is_403_like_a_wrong_number(ehr: Any, dev_key: Any) -> None:
    r = post(ehr, clinic(dev_key, B), "/fhir/Patient/khong-co-ai/$take-on", params())
    assert r.status_code == 403 and r.json()["issue"][0]["code"] == "forbidden"


@pytest.mark.parametrize(("body", "where"), [
    ({"resourceType": "Patient"}, "Parameters"),
    (params(reason=None), "Parameters.parameter.where(name='reason')"),
    (params(reason="   "), "Parameters.parameter.where(name='reason').valueString"),
    (params(reason="x" * 501), "Parameters.parameter.where(name='reason').valueString"),
    (params(system="http://example.org/mrn"), "Parameters.parameter.where(name='identifier').valueIdentifier.system"),
    (params(value=""), "Parameters.parameter.where(name='identifier').valueIdentifier.value"),
    ({"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": REASON}]},
     "Parameters.parameter.where(name='identifier')"),
    ({"resourceType": "Parameters", "parameter": [*params()["parameter"], {"name": "name", "valueString": "Tâm"}]},
     "Parameters.parameter.name"),
])
def test_bad_input_is_400_with_an_operation_outcome(ehr: Any, dev_key: Any, t: Tam, body: Any, where: str) -> None:
    r = post(ehr, clinic(dev_key, B), f"/fhir/Patient/{t.pid}/$take-on", body)
    assert r.status_code == 400, r.text
    issue = r.json()["issue"][0]
    assert r.json()["resourceType"] == "OperationOutcome" and issue["expression"] == [where]


@pytest.mark.parametrize("who", [{"role": "doctor", "facility": "hub", "practitioner": "bs-1"},
                                 {"role": "cashier", "facility": B}, {"role": "clinic"}])
def test_only_a_clinic_of_a_facility_takes_a_patient_on(ehr: Any, dev_key: Any, t: Tam, who: dict[str, str]) -> None:
    tam, cccd = t.pid, t.cccd
    claims = dict(who)
    role = claims.pop("role")
    r = post(ehr, bearer(dev_key, role, **claims), f"/fhir/Patient/{tam}/$take-on", params(value=cccd))
    assert r.status_code == 403, r.text


def test_a_double_click_answers_the_same_grant_once(ehr: Any, dev_key: Any, t: Tam, mongo_client: Any,
                                                   ehr_env: dict[str, str]) -> None:
    tam, cccd = t.pid, t.cccd
    h = clinic(dev_key, B)
    first = post(ehr, h, f"/fhir/Patient/{tam}/$take-on", params(value=cccd))
    again = post(ehr, h, f"/fhir/Patient/{tam}/$take-on", params(value=cccd, reason="bấm lần hai"))
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()  # the first grant, its reason and time
    assert mongo_client[ehr_env["SEN_DB"]][GRANTS].count_documents({"patient": f"Patient/{tam}"}) == 1


def test_many_nurses_at_once_make_one_grant(ehr_env: dict[str, str], mongo_client: Any) -> None:
    """The claim itself, 12 threads at once on FerretDB, 5 rounds: one made it, all answer its document."""
    from sen_ehr.domain import take_on

    db = mongo_client[ehr_env["SEN_DB"]]
    for round_ in range(5):
        patient = f"Patient/race-{round_}"
        results = race(lambda i, patient=patient: take_on.grant(db, patient, f"Organization/{B}", f"{REASON} {i}",
                                                                 f"nurse-{i}"), 12)
        assert sum(made for made, _ in results) == 1
        assert len({doc["reason"] for _, doc in results}) == 1
        assert db[GRANTS].count_documents({"patient": patient}) == 1


def test_every_attempt_is_audited_with_the_reason(ehr: Any, dev_key: Any, t: Tam) -> None:
    tam, cccd = t.pid, t.cccd
    h = clinic(dev_key, B)
    assert post(ehr, h, f"/fhir/Patient/{tam}/$take-on", params(value="000000000000")).status_code == 403
    assert post(ehr, h, f"/fhir/Patient/{tam}/$take-on", params(value=cccd)).status_code == 201
    admin = bearer(dev_key, "admin")
    trail = ehr.get(f"/fhir/AuditEvent?patient=Patient/{tam}&altid=nurse-{B}&_count=50", headers=admin).json()
    events = [e["resource"] for e in trail.get("entry", [])]
    ops = [e for e in events if any(s.get("code") == "take-on" for s in e["subtype"])]
    assert sorted(e["outcome"] for e in ops) == ["0", "4"]
    ok = next(e for e in ops if e["outcome"] == "0")
    assert ok["purposeOfEvent"] == [{"text": REASON}]
    assert ok["agent"][0]["extension"][0]["valueReference"]["reference"] == f"Organization/{B}"
    refused = next(e for e in ops if e["outcome"] == "4")
    assert refused["outcomeDesc"].startswith("403") and "000000000000" not in json.dumps(refused)


def test_by_the_card_alone_the_one_patient_holding_it_is_taken_on(ehr: Any, dev_key: Any, t: Tam) -> None:
    """``POST /fhir/Patient/$take-on``: the nurse has the card, not the patient's id (a CCCD search found no one)."""
    h = clinic(dev_key, B)
    r = post(ehr, h, "/fhir/Patient/$take-on", params(BHYT, f" {t.card.lower()} "))
    assert r.status_code == 201, r.text
    got = {p["name"]: p for p in r.json()["parameter"]}
    assert got["patient"]["valueReference"]["reference"] == f"Patient/{t.pid}"
    assert post(ehr, h, "/fhir/Patient/$take-on", params(value=t.cccd)).status_code == 200  # the same grant
    assert ehr.get(f"/fhir/Patient/{t.pid}", headers=h).status_code == 200


def test_by_the_card_alone_a_number_no_one_holds_is_403_and_bad_input_400(ehr: Any, dev_key: Any) -> None:
    h = clinic(dev_key, B)
    r = post(ehr, h, "/fhir/Patient/$take-on", params(value="000000000001"))
    assert r.status_code == 403 and "no patient holds" in r.json()["issue"][0]["diagnostics"]
    assert post(ehr, h, "/fhir/Patient/$take-on", params(reason=None)).status_code == 400
    # never by name: a name is no identifier
    r = post(ehr, h, "/fhir/Patient/$take-on", {"resourceType": "Parameters", "parameter": [
        {"name": "name", "valueString": "Huỳnh Văn Tâm"}, {"name": "reason", "valueString": REASON}]})
    assert r.status_code == 400
    assert post(ehr, bearer(dev_key, "doctor", facility="hub"), "/fhir/Patient/$take-on",
                params(value="000000000001")).status_code == 403


def test_by_the_card_alone_a_deleted_patient_is_no_one(ehr: Any, dev_key: Any, t: Tam) -> None:
    assert ehr.delete(f"/fhir/Patient/{t.pid}", headers=bearer(dev_key, "admin")).status_code in (200, 204)
    r = post(ehr, clinic(dev_key, B), "/fhir/Patient/$take-on", params(value=t.cccd))
    assert r.status_code == 403, r.text


def test_metadata_names_take_on_and_its_definition_is_served_at_its_url(ehr: Any, dev_key: Any) -> None:
    h = clinic(dev_key, B)
    r = ehr.get("/fhir/metadata", headers=h)
    assert r.status_code == 200, r.text
    types = {res["type"]: res for res in r.json()["rest"][0]["resource"]}
    ops = {op["name"]: op["definition"] for op in types["Patient"]["operation"]}
    assert ops["everything"] == "http://hl7.org/fhir/OperationDefinition/Patient-everything"
    url = ops["take-on"]
    assert url.endswith("/fhir/OperationDefinition/Patient-take-on") and url.startswith("http"), url
    assert not any(op["name"] == "take-on" for op in types["Observation"]["operation"])
    assert types["OperationDefinition"]["interaction"] == [{"code": "read"}]
    # the definition, at the URL the statement names (the test client's host is the base's)
    path = url[url.index("/fhir/"):]
    r = ehr.get(path, headers=h)
    assert r.status_code == 200, r.text
    od = r.json()
    assert od["resourceType"] == "OperationDefinition" and od["url"] == url and od["code"] == "take-on"
    assert od["resource"] == ["Patient"] and od["instance"] is True and od["type"] is True
    assert {(p["name"], p["use"]) for p in od["parameter"]} >= {("identifier", "in"), ("reason", "in"),
                                                                ("patient", "out"), ("grantee", "out")}
    from sen_shared.fhir.validate import validate_resource

    assert validate_resource(od) == "OperationDefinition"  # a valid resource, as the engine checks writes
    r = ehr.get("/fhir/OperationDefinition/Patient-everything", headers=h)
    assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"
