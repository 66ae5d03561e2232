"""A take-on ended (``Patient/{id}/$end-take-on``), on the real FerretDB.

Facility B's clinic took facility A's patient on; it (or an admin naming B) ends it with a reason:
from then on B's reads, searches and writes of the patient are refused (403, an OperationOutcome
saying the take-on was ended), another facility's grant is untouched, and taking the patient on
again makes a new grant (the next generation). Only B's clinic or an admin may end it; ending
twice answers the same end; every attempt is an AuditEvent with who, when and the reason.
Races: 10 ends at once make one end record (5 rounds); an end racing reads of a real EHR process
(gunicorn) never lets a read that started after the end was acknowledged through.
"""

from __future__ import annotations

import json
import random
import threading
from typing import Any

import httpx
import pytest
from sen_shared.fhir.access import GRANTS

from tests.integration.test_ehr_consult_record import bearer, ehr
from tests.integration.test_ehr_take_on import BHYT, CCCD, REASON, A, B, C, Tam, clinic, ehr_env, params, post, t
from tests.integration.test_idempotency import race
from tests.support import web_process

pytestmark = pytest.mark.integration
__all__ = ["ehr", "ehr_env", "t"]

ENDING = "Người bệnh đã chuyển về cơ sở quản lý"


def end_params(reason: str | None = ENDING, grantee: str | None = None) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if reason is not None:
        parts.append({"name": "reason", "valueString": reason})
    if grantee is not None:
        parts.append({"name": "grantee", "valueReference": {"reference": grantee}})
    return {"resourceType": "Parameters", "parameter": parts}


def taken_on(ehr: Any, h: dict[str, str], t: Tam) -> None:
    r = post(ehr, h, f"/fhir/Patient/{t.pid}/$take-on", params(value=t.cccd))
    assert r.status_code in (200, 201), r.text


def named(r: Any) -> dict[str, Any]:
    return {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in r.json()["parameter"]}


def test_the_clinic_ends_its_take_on_and_reads_nothing_more(ehr: Any, dev_key: Any, t: Tam, mongo_client: Any,
                                                           ehr_env: dict[str, str]) -> None:
    h, other = clinic(dev_key, B), clinic(dev_key, C)
    taken_on(ehr, h, t)
    taken_on(ehr, other, t)
    assert ehr.get(f"/fhir/Patient/{t.pid}", headers=h).status_code == 200

    r = post(ehr, h, f"/fhir/Patient/{t.pid}/$end-take-on", end_params())
    assert r.status_code == 200, r.text
    got = named(r)
    assert got["patient"] == {"reference": f"Patient/{t.pid}"} and got["grantee"] == {"reference": f"Organization/{B}"}
    assert got["reason"] == ENDING and got["endedBy"] == f"nurse-{B}" and got["ended"].endswith("Z")

    r = ehr.get(f"/fhir/Patient/{t.pid}", headers=h)
    assert r.status_code == 403 and r.json()["resourceType"] == "OperationOutcome"
    issue = r.json()["issue"][0]
    assert issue["code"] == "forbidden"
    assert f"your facility's take-on of this patient was ended at {got['ended']}" in issue["diagnostics"]
    assert ehr.get(f"/fhir/Patient/{t.pid}/$everything", headers=h).status_code == 403
    found = ehr.get(f"/fhir/Patient?identifier={CCCD}|{t.cccd}", headers=h).json()
    assert not found.get("entry")
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "Mạch"},
           "subject": {"reference": f"Patient/{t.pid}"}, "valueQuantity": {"value": 80, "unit": "/min"}}
    assert post(ehr, h, "/fhir/Observation", obs).status_code == 403
    # facility C's take-on is its own, and A still manages the patient
    assert ehr.get(f"/fhir/Patient/{t.pid}", headers=other).status_code == 200
    assert ehr.get(f"/fhir/Patient/{t.pid}", headers=clinic(dev_key, A)).status_code == 200

    # taken on again: a new grant (the next generation), the chart opens again
    r = post(ehr, h, f"/fhir/Patient/{t.pid}/$take-on", params(BHYT, t.card))
    assert r.status_code == 201, r.text
    assert ehr.get(f"/fhir/Patient/{t.pid}", headers=h).status_code == 200
    pair = {"pair": f"Patient/{t.pid}|Organization/{B}"}
    kinds = sorted((d["kind"], d.get("generation", 1)) for d in mongo_client[ehr_env["SEN_DB"]][GRANTS].find(pair))
    assert kinds == [("take-on", 1), ("take-on", 2), ("take-on-end", 1)]
    # and that one ends in turn
    assert post(ehr, h, f"/fhir/Patient/{t.pid}/$end-take-on", end_params("lần hai")).status_code == 200
    assert ehr.get(f"/fhir/Patient/{t.pid}", headers=h).status_code == 403


def test_ending_twice_answers_the_first_end(ehr: Any, dev_key: Any, t: Tam) -> None:
    h = clinic(dev_key, B)
    taken_on(ehr, h, t)
    first = post(ehr, h, f"/fhir/Patient/{t.pid}/$end-take-on", end_params())
    again = post(ehr, h, f"/fhir/Patient/{t.pid}/$end-take-on", end_params("bấm lần hai"))
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json()


def test_only_the_facility_or_an_admin_ends_it(ehr: Any, dev_key: Any, t: Tam) -> None:
    h = clinic(dev_key, B)
    taken_on(ehr, h, t)
    path = f"/fhir/Patient/{t.pid}/$end-take-on"
    for who in (clinic(dev_key, C), bearer(dev_key, "doctor", facility=B, practitioner="bs-1"),
                bearer(dev_key, "cashier", facility=B), bearer(dev_key, "health-dept"), bearer(dev_key, "clinic")):
        r = post(ehr, who, path, end_params())
        assert r.status_code == 403 and r.json()["issue"][0]["code"] == "forbidden", r.text
    # a clinic names no other facility's take-on
    r = post(ehr, h, path, end_params(grantee=f"Organization/{C}"))
    assert r.status_code == 403 and "own facility" in r.json()["issue"][0]["diagnostics"]
    assert ehr.get(f"/fhir/Patient/{t.pid}", headers=h).status_code == 200  # nothing ended yet
    admin = bearer(dev_key, "admin")
    r = post(ehr, admin, path, end_params())  # an admin names the facility
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["Parameters.parameter.where(name='grantee')"]
    assert post(ehr, admin, path, end_params(grantee=f"Organization/{C}")).status_code == 404  # C never took it on
    r = post(ehr, admin, path, end_params(grantee=f"Organization/{B}"))
    assert r.status_code == 200 and named(r)["endedBy"] == "dev-admin"
    assert ehr.get(f"/fhir/Patient/{t.pid}", headers=h).status_code == 403


def test_nothing_to_end_is_403_for_a_clinic(ehr: Any, dev_key: Any, t: Tam) -> None:
    r = post(ehr, clinic(dev_key, B), f"/fhir/Patient/{t.pid}/$end-take-on", end_params())
    assert r.status_code == 403 and "has not taken this patient on" in r.json()["issue"][0]["diagnostics"]
    # the managing facility's own patient is no take-on either
    assert post(ehr, clinic(dev_key, A), f"/fhir/Patient/{t.pid}/$end-take-on", end_params()).status_code == 403
    assert post(ehr, clinic(dev_key, B), "/fhir/Patient/khong-co-ai/$end-take-on", end_params()).status_code == 403


@pytest.mark.parametrize(("body", "where"), [
    ({"resourceType": "Patient"}, "Parameters"),
    (end_params(reason=None), "Parameters.parameter.where(name='reason')"),
    (end_params(reason="  "), "Parameters.parameter.where(name='reason').valueString"),
    (end_params(reason="x" * 501), "Parameters.parameter.where(name='reason').valueString"),
    (end_params(grantee="Practitioner/bs-1"), "Parameters.parameter.where(name='grantee').valueReference.reference"),
    ({"resourceType": "Parameters", "parameter": [*end_params()["parameter"], {"name": "x", "valueString": "y"}]},
     "Parameters.parameter.name"),
])
def test_bad_input_is_400_with_an_operation_outcome(ehr: Any, dev_key: Any, t: Tam, body: Any, where: str) -> None:
    h = clinic(dev_key, B)
    taken_on(ehr, h, t)
    r = post(ehr, h, f"/fhir/Patient/{t.pid}/$end-take-on", body)
    assert r.status_code == 400, r.text
    assert r.json()["resourceType"] == "OperationOutcome" and r.json()["issue"][0]["expression"] == [where]
    assert ehr.get(f"/fhir/Patient/{t.pid}", headers=h).status_code == 200


def test_every_end_is_audited_with_who_when_and_why(ehr: Any, dev_key: Any, t: Tam) -> None:
    h = clinic(dev_key, B)
    assert post(ehr, h, f"/fhir/Patient/{t.pid}/$end-take-on", end_params("chưa tiếp nhận")).status_code == 403
    taken_on(ehr, h, t)
    ended = post(ehr, h, f"/fhir/Patient/{t.pid}/$end-take-on", end_params())
    assert ended.status_code == 200
    admin = bearer(dev_key, "admin")
    trail = ehr.get(f"/fhir/AuditEvent?patient=Patient/{t.pid}&altid=nurse-{B}&_count=50", headers=admin).json()
    ops = [e["resource"] for e in trail.get("entry", [])
           if any(s.get("code") == "end-take-on" for s in e["resource"]["subtype"])]
    assert sorted(e["outcome"] for e in ops) == ["0", "4"]
    ok = next(e for e in ops if e["outcome"] == "0")
    assert ok["purposeOfEvent"] == [{"text": ENDING}] and ok["recorded"]
    assert ok["agent"][0]["altId"] == f"nurse-{B}"
    assert ok["agent"][0]["extension"][0]["valueReference"]["reference"] == f"Organization/{B}"
    assert {e["what"]["reference"] for e in ok["entity"]} == {f"Patient/{t.pid}"}


def test_metadata_names_end_take_on_and_serves_its_definition(ehr: Any, dev_key: Any) -> None:
    h = clinic(dev_key, B)
    types = {res["type"]: res for res in ehr.get("/fhir/metadata", headers=h).json()["rest"][0]["resource"]}
    url = {op["name"]: op["definition"] for op in types["Patient"]["operation"]}["end-take-on"]
    assert url.endswith("/fhir/OperationDefinition/Patient-end-take-on"), url
    r = ehr.get(url[url.index("/fhir/"):], headers=h)
    assert r.status_code == 200, r.text
    od = r.json()
    assert od["code"] == "end-take-on" and od["url"] == url and od["instance"] is True and od["type"] is False
    assert {(p["name"], p["use"]) for p in od["parameter"]} >= {("reason", "in"), ("grantee", "in"), ("ended", "out")}
    from sen_shared.fhir.validate import validate_resource

    assert validate_resource(od) == "OperationDefinition"


def test_ten_ends_at_once_make_one_end(ehr_env: dict[str, str], mongo_client: Any) -> None:
    """The claim itself, 10 threads at once on FerretDB, 5 rounds: one ends it, all answer its record."""
    from sen_ehr.domain import take_on

    db = mongo_client[ehr_env["SEN_DB"]]
    for round_ in range(5):
        patient = f"Patient/end-race-{round_}"
        assert take_on.grant(db, patient, f"Organization/{B}", REASON, "nurse")[0]
        results = race(lambda i, patient=patient: take_on.end(db, patient, f"Organization/{B}", f"{ENDING} {i}",
                                                               f"nurse-{i}"), 10)
        assert all(r is not None for r in results) and len(results) == 10
        assert sum(made for made, _ in results) == 1  # type: ignore[misc]
        assert len({doc["_id"] for _, doc in results}) == 1  # type: ignore[misc]
        assert db[GRANTS].count_documents({"patient": patient, "kind": "take-on-end"}) == 1
        # taken on again by several nurses at once: one new generation
        made = race(lambda i, patient=patient: take_on.grant(db, patient, f"Organization/{B}", REASON, f"n{i}")[0], 6)
        assert sum(made) == 1
        assert db[GRANTS].count_documents({"patient": patient, "kind": "take-on"}) == 2


def test_an_end_racing_reads_leaves_no_access_after_it_is_acknowledged(
        base_env: dict[str, str], run_id: str, tmp_path: Any, dev_key: Any, mongo_client: Any) -> None:
    """A real EHR (gunicorn), 4 reader threads reading the patient as facility B while B's take-on is
    ended, 3 rounds: every read sent after the end's answer arrived is 403; reads sent before may be
    either (they raced it). No timing is assumed: the order is the threads' own (a flag set when
    the end's answer is in, read before each request is sent)."""
    db = f"sen_t{run_id}_ehr_endrace"
    env = {**base_env, "SEN_DB": db}
    h, admin = clinic(dev_key, B), bearer(dev_key, "admin")
    try:
        with web_process("ehr", env, tmp_path / "ehr.log") as url, httpx.Client(base_url=url, timeout=30) as c:
            for round_ in range(3):
                cccd = f"0870{round_}{random.randrange(10**7):07d}"
                r = c.post("/fhir/Patient", headers=admin, content=json.dumps({
                    "resourceType": "Patient", "identifier": [{"system": CCCD, "value": cccd}],
                    "managingOrganization": {"reference": f"Organization/{A}"}}))
                assert r.status_code == 201, r.text
                pid = r.json()["id"]
                assert c.post(f"/fhir/Patient/{pid}/$take-on", headers=h,
                              content=json.dumps(params(value=cccd))).status_code == 201
                acknowledged = threading.Event()
                started = threading.Event()
                late: list[int] = []  # statuses of reads sent after the end was acknowledged
                early: list[int] = []

                def read(late: list[int] = late, early: list[int] = early, pid: str = pid,
                         acknowledged: threading.Event = acknowledged, started: threading.Event = started) -> None:
                    with httpx.Client(base_url=url, timeout=30) as mine:
                        after = 0
                        while after < 5:
                            was_acknowledged = acknowledged.is_set()
                            status = mine.get(f"/fhir/Patient/{pid}", headers=h).status_code
                            started.set()
                            (late if was_acknowledged else early).append(status)
                            after += was_acknowledged

                readers = [threading.Thread(target=read) for _ in range(4)]
                for th in readers:
                    th.start()
                started.wait(30)
                r = c.post(f"/fhir/Patient/{pid}/$end-take-on", headers=h, content=json.dumps(end_params()))
                acknowledged.set()
                for th in readers:
                    th.join(60)
                assert r.status_code == 200, r.text
                assert early and set(early) <= {200, 403}
                assert len(late) == 20 and set(late) == {403}, late
    finally:
        mongo_client.drop_database(db)
