"""Who reads and writes what in the ehr FHIR API, and the audit trail it leaves (real FerretDB and RabbitMQ).

Facility A's clinic never sees facility B's patients (nor learns that they exist: a read is the 404 of a
made-up id, nothing in searches, includes filtered); a doctor reads a patient only after a referral
grant event arrives through the bus; a cashier reads no clinical data; every
interaction, 403s included, leaves an AuditEvent with who, what, when, which
patient and the outcome.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sen_shared.bus import make_event

from tests.integration.test_ehr_consult_record import EhrWorker, bearer, ehr, ehr_env, wait_for, worker

pytestmark = pytest.mark.integration
__all__ = ["ehr", "ehr_env", "worker"]  # fixtures shared with the consult-record tests

A, B = "fac-a", "fac-b"


def post(c: Any, h: dict[str, str], path: str, body: dict[str, Any]) -> Any:
    return c.post(path, content=json.dumps(body), headers=h)


def patient(org: str, family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family, "given": ["Văn"]}],
            "managingOrganization": {"reference": f"Organization/{org}"}}


def observation(pid: str, code: str = "8480-6", performer: str | None = None) -> dict[str, Any]:
    obs = {"resourceType": "Observation", "status": "final",
           "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
           "subject": {"reference": f"Patient/{pid}"}, "valueQuantity": {"value": 120, "unit": "mmHg"}}
    if performer:
        obs["performer"] = [{"reference": performer}]
    return obs


@pytest.fixture(scope="module")
def world(ehr: Any, dev_key: Any) -> dict[str, Any]:
    admin = bearer(dev_key, "admin")
    ids: dict[str, Any] = {"admin": admin}
    pract = post(ehr, admin, "/fhir/Practitioner", {"resourceType": "Practitioner", "name": [{"family": "Lê"}]})
    ids["pract"] = pract.json()["id"]
    for key, org, fam in (("pa", A, "Nguyễn"), ("pb", B, "Trần")):
        r = post(ehr, admin, "/fhir/Patient", patient(org, fam))
        assert r.status_code == 201, r.text
        ids[key] = r.json()["id"]
        r = post(ehr, admin, "/fhir/Observation", observation(ids[key], performer=f"Practitioner/{ids['pract']}"))
        assert r.status_code == 201, r.text
        ids[f"o{key[1]}"] = r.json()["id"]
    return ids


def clinic(dev_key: Any, fac: str = A, **kw: Any) -> dict[str, str]:
    return bearer(dev_key, "clinic", facility=fac, sub=kw.pop("sub", f"clinic-{fac}"), **kw)


def ids_of(bundle: dict[str, Any], mode: str | None = None) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])
            if mode is None or e.get("search", {}).get("mode") == mode}


def _as_missing(ehr: Any, h: dict[str, str], method: str, path: str, rid: str) -> None:
    """``method path`` answers exactly what it answers for a made-up id in place of ``rid``: a 404."""
    made_up = f"khong-co-{uuid.uuid4().hex[:8]}"
    real = ehr.request(method, path, headers=h)
    missing = ehr.request(method, path.replace(rid, made_up), headers=h)
    assert real.status_code == missing.status_code == 404, (path, real.status_code, real.text)
    assert real.text.replace(rid, made_up) == missing.text, (real.text, missing.text)
    assert real.headers.get("content-type") == missing.headers.get("content-type")


def test_clinic_reads_its_patients_but_not_another_facilitys(ehr: Any, world: dict[str, Any], dev_key: Any) -> None:
    """Another facility's record is answered as one that does not exist (security.html#AccessDenied): a 403 told
    the clinic which ids exist, a made-up one being 404."""
    h = clinic(dev_key)
    pb, ob = world["pb"], world["ob"]
    assert ehr.get(f"/fhir/Patient/{world['pa']}", headers=h).status_code == 200
    assert ehr.get(f"/fhir/Observation/{world['oa']}", headers=h).status_code == 200
    for path, rid in ((f"/fhir/Patient/{pb}", pb), (f"/fhir/Observation/{ob}", ob),
                      (f"/fhir/Patient/{pb}/$everything", pb), (f"/fhir/Patient/{pb}/_history", pb),
                      (f"/fhir/Observation/{ob}/_history", ob), (f"/fhir/Observation/{ob}/_history/1", ob),
                      (f"/fhir/Patient/{pb}/_history/1", pb)):
        _as_missing(ehr, h, "GET", path, rid)
    assert ehr.get(f"/fhir/Patient?_id={pb}", headers=h).json().get("entry", []) == []  # as for a made-up id
    # refused alike for a made-up patient: the compartment search, the type history (admin and health-dept only)
    for path in (f"/fhir/Patient/{pb}/Observation", "/fhir/Patient/khong-co/Observation", "/fhir/Observation/_history"):
        assert ehr.get(path, headers=h).status_code == 403, path
    assert ehr.get(f"/fhir/Patient/{world['pa']}/$everything", headers=h).status_code == 200
    # a patch or a delete of it too: a made-up id's patch is 404, and so is its delete by a clinic
    patch = json.dumps([{"op": "replace", "path": "/status", "value": "amended"}])
    for path, rid in ((f"/fhir/Observation/{ob}", ob), (f"/fhir/Patient/{pb}", pb)):
        real = ehr.patch(path, content=patch, headers={**h, "Content-Type": "application/json-patch+json"})
        missing = ehr.patch(path.replace(rid, "khong-co"), content=patch,
                            headers={**h, "Content-Type": "application/json-patch+json"})
        assert real.status_code == missing.status_code == 404, real.text
        assert real.text.replace(rid, "khong-co") == missing.text
        _as_missing(ehr, h, "DELETE", path, rid)
    admin = world["admin"]
    assert ehr.get(f"/fhir/Observation/{ob}", headers=admin).json()["meta"]["versionId"] == "1"  # untouched
    # deleted, another facility's record is not the clinic's to read either: its history holds every version
    # (the whole history was answered before), and its 410 told that it had existed
    gone = post(ehr, admin, "/fhir/Observation", observation(pb)).json()["id"]
    mine = post(ehr, h, "/fhir/Observation", observation(world["pa"])).json()["id"]
    for rid in (gone, mine):
        assert ehr.delete(f"/fhir/Observation/{rid}", headers=admin).status_code == 204
    for path in (f"/fhir/Observation/{gone}", f"/fhir/Observation/{gone}/_history",
                 f"/fhir/Observation/{gone}/_history/1"):
        _as_missing(ehr, h, "GET", path, gone)
    assert ehr.get(f"/fhir/Observation/{mine}", headers=h).status_code == 410  # its own: deleted, as it is
    assert len(ehr.get(f"/fhir/Observation/{mine}/_history", headers=h).json()["entry"]) == 2
    # a type the role does not read is refused for any id, as before (no existence to hide)
    cashier = bearer(dev_key, "cashier", facility=A, sub="cashier-hide")
    assert ehr.get(f"/fhir/Observation/{ob}", headers=cashier).status_code == 403
    assert ehr.get("/fhir/Observation/khong-co", headers=cashier).status_code == 403


def test_a_refusal_does_not_say_whose_another_facilitys_record_is(ehr: Any, world: dict[str, Any],
                                                                   dev_key: Any) -> None:
    """Review 11: reading (or writing) another facility's Observation answered 403 'Patient/<id> is not managed by
    your facility', telling a clinic which patient the record belongs to; the refusal now says 'this Observation's
    patient'. A Patient read still names the Patient asked for."""
    ob, pb = world["ob"], world["pb"]
    for role in (clinic(dev_key), bearer(dev_key, "doctor", facility=A, practitioner="pr-a")):
        for r in (ehr.get(f"/fhir/Observation/{ob}", headers=role),
                  ehr.get(f"/fhir/Observation/{ob}/_history/1", headers=role),
                  ehr.get(f"/fhir/Observation/{ob}/_history", headers=role)):
            assert r.status_code == 404, r.text  # as if it did not exist (test_clinic_reads_its_patients_...)
            assert pb not in r.json()["issue"][0]["diagnostics"]
    # a write naming another facility's patient is refused saying so, without naming them
    r = post(ehr, clinic(dev_key), "/fhir/Observation", observation(pb))
    assert r.status_code == 403 and pb not in r.json()["issue"][0]["diagnostics"], r.text
    assert "this Observation's patient is not managed by your facility" in r.json()["issue"][0]["diagnostics"]
    # the AuditEvent of a hidden read records the refusal as it is
    sub = f"hidden-{uuid.uuid4().hex[:6]}"
    assert ehr.get(f"/fhir/Patient/{pb}", headers=clinic(dev_key, sub=sub)).status_code == 404
    [refused] = _audits(ehr, world["admin"], f"altid={sub}")
    assert refused["outcome"] == "4" and refused["outcomeDesc"].startswith("403"), refused
    assert f"Patient/{pb} is not managed by your facility" in refused["outcomeDesc"]


def test_clinic_searches_never_return_another_facilitys_patients(ehr: Any, world: dict[str, Any],
                                                                  dev_key: Any) -> None:
    h = clinic(dev_key)
    pa, pb = f"Patient/{world['pa']}", f"Patient/{world['pb']}"
    assert pb not in ids_of(ehr.get("/fhir/Patient", headers=h).json())
    assert pa in ids_of(ehr.get("/fhir/Patient", headers=h).json())
    assert ids_of(ehr.get("/fhir/Patient?name=tran", headers=h).json()) == set()
    got = ids_of(ehr.get("/fhir/Observation?code=8480-6", headers=h).json())
    assert f"Observation/{world['oa']}" in got and f"Observation/{world['ob']}" not in got
    assert ids_of(ehr.get(f"/fhir/Observation?patient={pb}", headers=h).json()) == set()
    assert ids_of(ehr.get(f"/fhir/Observation?subject={world['pb']}", headers=h).json()) == set()
    assert ehr.get("/fhir/Observation?_summary=count", headers=h).json()["total"] >= 1
    # includes and revincludes are filtered too: the practitioner performed both observations
    r = ehr.get(f"/fhir/Practitioner?_id={world['pract']}&_revinclude=Observation:performer", headers=h).json()
    assert f"Observation/{world['oa']}" in ids_of(r, "include")
    assert f"Observation/{world['ob']}" not in ids_of(r)
    r = ehr.get(f"/fhir/Observation?_include=Observation:subject&patient={pa}", headers=h).json()
    assert ids_of(r, "include") == {pa}
    # the same searches as admin do see facility B
    admin = world["admin"]
    assert pb in ids_of(ehr.get("/fhir/Patient?name=tran", headers=admin).json())


def test_clinic_writes_only_for_its_facility(ehr: Any, world: dict[str, Any], dev_key: Any) -> None:
    h = clinic(dev_key)
    assert post(ehr, h, "/fhir/Patient", patient(B, "Lý")).status_code == 403
    r = post(ehr, h, "/fhir/Patient", patient(A, "Lý"))
    assert r.status_code == 201, r.text
    assert post(ehr, h, "/fhir/Observation", observation(world["pb"])).status_code == 403
    r = post(ehr, h, "/fhir/Observation", observation(world["pa"]))
    assert r.status_code == 201
    moved = {**r.json(), "subject": {"reference": f"Patient/{world['pb']}"}}
    r2 = ehr.put(f"/fhir/Observation/{moved['id']}", content=json.dumps(moved), headers=h)
    assert r2.status_code == 403  # moving a result to another facility's patient
    patch = [{"op": "replace", "path": "/subject/reference", "value": f"Patient/{world['pb']}"}]
    r3 = ehr.patch(f"/fhir/Observation/{moved['id']}", content=json.dumps(patch),
                   headers={**h, "Content-Type": "application/json-patch+json"})
    assert r3.status_code == 403, r3.text
    assert ehr.delete(f"/fhir/Observation/{world['ob']}", headers=h).status_code == 404  # as if it did not exist
    assert post(ehr, h, "/fhir/Organization", {"resourceType": "Organization", "name": "X"}).status_code == 403
    # a transaction is checked whole before anything is written
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111", "resource": patient(A, "Võ"),
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {**observation("x"), "subject": {"reference": "urn:uuid:11111111-1111-4111-8111-111111111111"}},
         "request": {"method": "POST", "url": "Observation"}},
        {"resource": observation(world["pb"]), "request": {"method": "POST", "url": "Observation"}}]}
    before = ehr.get("/fhir/Observation?_summary=count", headers=world["admin"]).json()["total"]
    r = post(ehr, h, "/fhir", bundle)
    assert r.status_code == 403, r.text
    assert ehr.get("/fhir/Observation?_summary=count", headers=world["admin"]).json()["total"] == before
    bundle["entry"].pop()
    r = post(ehr, h, "/fhir", bundle)
    assert r.status_code == 200, r.text
    # a batch answers per entry
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Patient/{world['pa']}"}},
        {"request": {"method": "GET", "url": f"Patient/{world['pb']}"}}]}
    statuses = [e["response"]["status"] for e in post(ehr, h, "/fhir", batch).json()["entry"]]
    assert statuses[0].startswith("200") and statuses[1] == "404"  # as a made-up id's


def test_doctor_reads_a_patient_once_referred(ehr: Any, world: dict[str, Any], worker: EhrWorker,
                                              dev_key: Any) -> None:
    doc = bearer(dev_key, "doctor", facility="hub", practitioner="bs-minh", sub="doctor-minh")
    other = bearer(dev_key, "doctor", facility="hub", practitioner="bs-khac", sub="doctor-khac")
    pb = f"Patient/{world['pb']}"
    assert ehr.get(f"/fhir/{pb}", headers=doc).status_code == 404  # not yet referred: as if it did not exist
    assert pb not in ids_of(ehr.get("/fhir/Patient", headers=doc).json())
    expires = (datetime.now(UTC) + timedelta(days=7)).isoformat(timespec="seconds")
    sr = f"ServiceRequest/sr-{uuid.uuid4().hex[:8]}"
    event = make_event("teleconsult.referral.granted", {"serviceRequest": sr, "patient": pb,
                                                        "grantee": "Practitioner/bs-minh", "expires": expires},
                       subject=sr)
    worker.publish(event)
    worker.publish(event)  # redelivered: one grant, applied once
    wait_for(lambda: ehr.get(f"/fhir/{pb}", headers=doc).status_code == 200)
    grants = list(worker.db["grants"].find({"patient": pb}))
    assert len(grants) == 1 and grants[0]["_id"] == event["id"] and grants[0]["reason"] == sr
    assert ehr.get(f"/fhir/Observation/{world['ob']}", headers=doc).status_code == 200
    assert pb in ids_of(ehr.get("/fhir/Patient", headers=doc).json())
    assert f"Observation/{world['ob']}" in ids_of(ehr.get("/fhir/Observation", headers=doc).json())
    assert ehr.get(f"/fhir/{pb}", headers=other).status_code == 404  # the grant is personal
    note = {"resourceType": "Observation", "status": "final", "code": {"text": "ghi chú"},
            "subject": {"reference": pb}}
    assert post(ehr, doc, "/fhir/Observation", note).status_code == 201  # referred: may write the record
    assert ehr.delete(f"/fhir/Observation/{world['ob']}", headers=doc).status_code == 403  # doctors delete nothing


def test_cashier_reads_patients_and_coverage_not_clinical_data(ehr: Any, world: dict[str, Any],
                                                              dev_key: Any) -> None:
    h = bearer(dev_key, "cashier", facility=A, sub="cashier-1")
    assert ehr.get(f"/fhir/Patient/{world['pb']}", headers=h).status_code == 200
    assert ehr.get("/fhir/Coverage", headers=h).status_code == 200
    r = ehr.get(f"/fhir/Observation/{world['oa']}", headers=h)
    assert r.status_code == 403 and "Patient and Coverage" in r.json()["issue"][0]["diagnostics"]
    assert ehr.get("/fhir/Observation", headers=h).status_code == 403
    assert ehr.get(f"/fhir/Patient/{world['pa']}/$everything", headers=h).status_code == 403
    assert post(ehr, h, "/fhir/Patient", patient(A, "Hồ")).status_code == 403
    r = ehr.get(f"/fhir/Patient?_id={world['pa']}&_revinclude=Observation:subject", headers=h).json()
    assert ids_of(r) == {f"Patient/{world['pa']}"}  # no clinical data through _revinclude


def test_smart_scopes_narrow_a_token(ehr: Any, world: dict[str, Any], dev_key: Any) -> None:
    h = clinic(dev_key, scope="openid user/Patient.rs", sub="clinic-scoped")
    assert ehr.get(f"/fhir/Patient/{world['pa']}", headers=h).status_code == 200
    r = ehr.get(f"/fhir/Observation/{world['oa']}", headers=h)
    assert r.status_code == 403 and "scope" in r.json()["issue"][0]["diagnostics"]
    assert post(ehr, h, "/fhir/Patient", patient(A, "Đỗ")).status_code == 403


def _audits(ehr: Any, admin: dict[str, str], query: str) -> list[dict[str, Any]]:
    r = ehr.get(f"/fhir/AuditEvent?{query}&_count=500", headers=admin)
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])]


def test_every_interaction_leaves_an_audit_event(ehr: Any, world: dict[str, Any], dev_key: Any) -> None:
    sub = f"auditee-{uuid.uuid4().hex[:6]}"
    h = clinic(dev_key, sub=sub)
    pa = f"Patient/{world['pa']}"
    r = post(ehr, h, "/fhir/Observation", observation(world["pa"]))
    oid = r.json()["id"]
    ehr.get(f"/fhir/Observation/{oid}", headers=h)
    ehr.get(f"/fhir/Observation/{oid}/_history/1", headers=h)
    ehr.put(f"/fhir/Observation/{oid}", content=json.dumps({**r.json(), "status": "amended"}), headers=h)
    ehr.patch(f"/fhir/Observation/{oid}", content=json.dumps([{"op": "replace", "path": "/status", "value": "final"}]),
              headers={**h, "Content-Type": "application/json-patch+json"})
    ehr.get(f"/fhir/Observation/{oid}/_history", headers=h)
    ehr.get("/fhir/Patient?name=nguyen&_count=10", headers=h)
    ehr.get(f"/fhir/{pa}/$everything", headers=h)
    ehr.delete(f"/fhir/Observation/{oid}", headers=h)
    assert ehr.get(f"/fhir/Patient/{world['pb']}", headers=h).status_code == 404  # refused (403), told as missing
    ehr.get("/fhir/Observation/does-not-exist", headers=h)

    admin = world["admin"]
    mine = _audits(ehr, admin, f"altid={sub}")
    codes = sorted(s["subtype"][0]["code"] for s in mine)
    assert codes == sorted(["create", "read", "vread", "update", "patch", "history-instance", "search-type",
                            "operation", "delete", "read", "read"]), codes
    for ev in mine:
        assert ev["agent"][0]["altId"] == sub and ev["agent"][0]["requestor"] is True
        assert ev["type"]["code"] == "rest" and ev["recorded"].endswith("Z")
        assert ev["source"]["observer"]["display"] == "sen-ehr"
    actions = {s["subtype"][0]["code"]: s["action"] for s in mine}
    assert actions["create"] == "C" and actions["update"] == "U" and actions["delete"] == "D"
    assert actions["search-type"] == "E" and actions["vread"] == "R"

    denied = [e for e in mine if e["outcome"] == "4"]
    assert len(denied) == 2  # the 403 and the 404
    forbidden = next(e for e in denied if e["outcomeDesc"].startswith("403"))
    assert {"reference": f"Patient/{world['pb']}"} in [x["what"] for x in forbidden["entity"]]
    ok_read = next(e for e in mine if e["subtype"][0]["code"] == "read" and e["outcome"] == "0")
    whats = [x["what"]["reference"] for x in ok_read["entity"]]
    assert whats == [f"Observation/{oid}", pa]
    assert ok_read["entity"][1]["role"]["code"] == "1"

    search = next(e for e in mine if e["subtype"][0]["code"] == "search-type")
    query = search["entity"][0]
    details = {d["type"]: d["valueString"] for d in query["detail"]}
    assert details["parameters"] == "_count,name" and int(details["count"]) >= 1
    assert "nguyen" not in json.dumps(search).lower()

    # found by patient, and AuditEvent reads are not audited themselves
    by_patient = _audits(ehr, admin, f"patient={pa}&altid={sub}")
    assert len(by_patient) >= 8
    before = ehr.get(f"/fhir/AuditEvent?altid={sub}&_summary=count", headers=admin).json()["total"]
    assert before == len(mine)
    assert ehr.get("/fhir/AuditEvent", headers=h).status_code == 403  # clinics do not read the trail
    assert ehr.get(f"/fhir/AuditEvent?altid={sub}&_summary=count", headers=admin).json()["total"] == before + 0


def test_the_trail_is_searched_by_what_tells_events_apart_and_sorted_by_date(
        ehr: Any, world: dict[str, Any], dev_key: Any) -> None:
    """AuditEvent is indexed for date, agent, altid, agent-role, subtype, action, entity, patient and
    outcome (sen_shared.fhir.search.definitions.NARROWED); type, site, source... are the same on
    every event, so a search on them is refused (or ignored, leniently) with what is searchable."""
    sub = f"sorted-{uuid.uuid4().hex[:6]}"
    h = clinic(dev_key, sub=sub)
    for _ in range(3):
        assert ehr.get(f"/fhir/Patient/{world['pa']}", headers=h).status_code == 200
    admin = world["admin"]
    newest_first = _audits(ehr, admin, f"altid={sub}&subtype=read&action=R&outcome=0&_sort=-date")
    assert len(newest_first) == 3
    assert [e["recorded"] for e in newest_first] == sorted((e["recorded"] for e in newest_first), reverse=True)

    r = ehr.get(f"/fhir/AuditEvent?altid={sub}&site=ehr", headers=admin)
    assert r.status_code == 400
    assert "'site' is not indexed for AuditEvent; it is searched by action, agent" in r.text
    r = ehr.get(f"/fhir/AuditEvent?altid={sub}&site=ehr", headers={**admin, "Prefer": "handling=lenient"})
    assert r.status_code == 200
    modes = [e["search"]["mode"] for e in r.json()["entry"]]
    assert modes.count("match") == 3 and "ignored parameters: site" in r.text
    r = ehr.get(f"/fhir/AuditEvent?altid={sub}&_sort=outcome", headers=admin)
    assert r.status_code == 400 and "it sorts by _id, _lastUpdated, date" in r.text

    meta = ehr.get("/fhir/metadata", headers=admin).json()
    audit = next(x for x in meta["rest"][0]["resource"] if x["type"] == "AuditEvent")
    assert {p["name"] for p in audit["searchParam"]} == {
        "_id", "_lastUpdated", "date", "agent", "altid", "agent-role", "subtype", "action", "entity", "patient",
        "outcome"}


def test_bundle_entries_are_audited(ehr: Any, world: dict[str, Any], dev_key: Any) -> None:
    sub = f"bundler-{uuid.uuid4().hex[:6]}"
    h = clinic(dev_key, sub=sub)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:22222222-2222-4222-8222-222222222222", "resource": patient(A, "Bùi"),
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {**observation("x"), "subject": {"reference": "urn:uuid:22222222-2222-4222-8222-222222222222"}},
         "request": {"method": "POST", "url": "Observation"}},
        {"request": {"method": "GET", "url": f"Patient/{world['pa']}"}}]}
    r = post(ehr, h, "/fhir", bundle)
    assert r.status_code == 200, r.text
    new_pid = r.json()["entry"][0]["resource"]["id"]
    mine = _audits(ehr, world["admin"], f"altid={sub}")
    assert sorted(e["subtype"][0]["code"] for e in mine) == ["create", "create", "read"]
    created_obs = next(e for e in mine if e["entity"][0]["what"]["reference"].startswith("Observation/"))
    assert {"reference": f"Patient/{new_pid}"} in [x["what"] for x in created_obs["entity"]]
