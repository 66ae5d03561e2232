"""Registering or editing a patient is no oracle for another facility's CCCD and BHYT numbers, on the real FerretDB.

A nurse of facility B who registers a patient (or PUTs or PATCHes her own) with a number a patient
of facility A holds gets a 409 that names nobody (no id, no facility) and points to ``$take-on``;
the collision counts in the same per-user budget as a wrong ``$take-on`` number
(``SEN_TAKE_ON_MAX_FAILURES``, here 3): once spent, such writes and the take-on are 429 with
Retry-After. A holder she may see (her facility's own patient, or one taken on) is still named;
new numbers (no collision) are never limited.
"""

from __future__ import annotations

import json
import random
import uuid
from typing import Any
from urllib.parse import quote

import pytest

from tests.integration.test_ehr_consult_record import _env, bearer, ehr
from tests.integration.test_ehr_take_on import BHYT, CCCD, A, B, Tam, params, post, t

pytestmark = pytest.mark.integration
__all__ = ["_env", "ehr", "t"]

LIMIT = 3


@pytest.fixture(scope="module")
def ehr_env(base_env: dict[str, str], run_id: str) -> dict[str, str]:
    return {**base_env, "SEN_DB": f"sen_t{run_id}_ehr_{uuid.uuid4().hex[:4]}", "SEN_TAKE_ON_MAX_FAILURES": str(LIMIT)}


def nurse(dev_key: Any, fac: str = B) -> dict[str, str]:
    """A nurse of ``fac`` of her own (the budget is per user)."""
    return bearer(dev_key, "clinic", facility=fac, sub=f"nurse-{uuid.uuid4().hex[:8]}")


def patient(fac: str, *idents: tuple[str, str], rid: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Patient", "name": [{"family": "Lê", "given": ["Thị", "Hoa"]}], "birthDate": "1990-05-01",
        "identifier": [{"system": s, "value": v} for s, v in idents],
        "managingOrganization": {"reference": f"Organization/{fac}"}}
    return {**body, "id": rid} if rid else body


def new_number() -> str:
    return f"0871{random.randrange(10**8):08d}"


def register(ehr: Any, h: dict[str, str], *idents: tuple[str, str]) -> Any:
    return post(ehr, h, "/fhir/Patient", patient(B, *idents))


def assert_names_nobody(r: Any, t: Tam) -> None:
    assert r.status_code == 409, r.text
    outcome = r.json()
    issue = outcome["issue"][0]
    assert outcome["resourceType"] == "OperationOutcome" and issue["code"] == "duplicate"
    assert issue["details"]["coding"][0]["code"] == "registered-elsewhere"
    assert "already registered to another patient" in issue["diagnostics"]
    assert "Patient/$take-on" in issue["diagnostics"]
    assert t.pid not in r.text and A not in r.text and "Organization/" not in r.text


def test_a_number_of_another_facilitys_patient_is_409_naming_nobody(ehr: Any, dev_key: Any, t: Tam) -> None:
    h = nurse(dev_key)
    assert_names_nobody(register(ehr, h, (CCCD, t.cccd)), t)
    assert_names_nobody(register(ehr, h, (BHYT, t.card)), t)
    # her own patient, updated (PUT) or patched with that number: the same
    mine = register(ehr, h, (CCCD, new_number()))
    assert mine.status_code == 201, mine.text
    pid = mine.json()["id"]
    r = ehr.put(f"/fhir/Patient/{pid}", content=json.dumps(patient(B, (CCCD, t.cccd), rid=pid)), headers=h)
    assert_names_nobody(r, t)


def test_a_patch_and_a_batch_entry_name_nobody_either(ehr: Any, dev_key: Any, t: Tam) -> None:
    h = nurse(dev_key)
    mine = register(ehr, h, (CCCD, new_number()))
    pid = mine.json()["id"]
    patch = [{"op": "add", "path": "/identifier/-", "value": {"system": BHYT, "value": t.card}}]
    r = ehr.patch(f"/fhir/Patient/{pid}", content=json.dumps(patch),
                  headers={**h, "Content-Type": "application/json-patch+json"})
    assert_names_nobody(r, t)
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": patient(B, (CCCD, t.cccd)), "request": {"method": "POST", "url": "Patient"}}]}
    r = post(ehr, h, "/fhir", batch)
    assert r.status_code == 200, r.text
    entry = r.json()["entry"][0]["response"]
    assert entry["status"].startswith("409") and t.pid not in json.dumps(entry)


def test_a_holder_the_nurse_may_see_is_still_named(ehr: Any, dev_key: Any, t: Tam) -> None:
    h = nurse(dev_key)
    number = new_number()
    first = register(ehr, h, (CCCD, number))
    assert first.status_code == 201, first.text
    r = register(ehr, h, (CCCD, number))  # her facility's own duplicate: named, to merge them
    assert r.status_code == 409 and r.json()["issue"][0]["details"]["text"] == f"Patient/{first.json()['id']}"
    # once taken on, A's patient is hers to see: named too
    assert post(ehr, h, f"/fhir/Patient/{t.pid}/$take-on", params(value=t.cccd)).status_code == 201
    r = register(ehr, h, (CCCD, t.cccd))
    assert r.status_code == 409 and r.json()["issue"][0]["details"]["text"] == f"Patient/{t.pid}", r.text


def test_collisions_spend_the_take_on_budget(ehr: Any, dev_key: Any, t: Tam) -> None:
    h = nurse(dev_key)
    for _ in range(LIMIT):
        assert_names_nobody(register(ehr, h, (CCCD, t.cccd)), t)
    r = register(ehr, h, (BHYT, t.card))  # budget spent: refused as the take-on refuses
    assert r.status_code == 429 and r.json()["issue"][0]["code"] == "throttled", r.text
    assert 0 < int(r.headers["Retry-After"]) <= 900
    # and the take-on with the (right) number is refused too, for the window
    r = post(ehr, h, f"/fhir/Patient/{t.pid}/$take-on", params(value=t.cccd))
    assert r.status_code == 429 and "Retry-After" in r.headers, r.text
    r = post(ehr, h, "/fhir/Patient/$take-on", params(value=t.cccd))
    assert r.status_code == 429, r.text
    # another nurse of the same facility is not limited
    assert_names_nobody(register(ehr, nurse(dev_key), (CCCD, t.cccd)), t)


def test_wrong_take_on_numbers_spend_the_budget_of_collisions(ehr: Any, dev_key: Any, t: Tam) -> None:
    h = nurse(dev_key)
    wrong = t.cccd[:-1] + str((int(t.cccd[-1]) + 1) % 10)
    for _ in range(LIMIT):
        assert post(ehr, h, f"/fhir/Patient/{t.pid}/$take-on", params(value=wrong)).status_code == 403
    r = register(ehr, h, (CCCD, t.cccd))
    assert r.status_code == 429 and "Retry-After" in r.headers, r.text


def test_registering_many_new_patients_is_not_limited(ehr: Any, dev_key: Any, t: Tam) -> None:
    h = nurse(dev_key)
    for _ in range(LIMIT * 3):
        r = register(ehr, h, (CCCD, new_number()))
        assert r.status_code == 201, r.text
    assert_names_nobody(register(ehr, h, (CCCD, t.cccd)), t)  # her budget untouched


def test_a_conditional_create_or_update_on_the_number_names_nobody_and_counts(ehr: Any, dev_key: Any, t: Tam) -> None:
    """If-None-Exist and PUT Patient?identifier= asked the same question: their match, another facility's
    patient, was a 403 naming it."""
    h = nurse(dev_key)
    body = patient(B, (CCCD, t.cccd))
    r = ehr.post("/fhir/Patient", content=json.dumps(body),
                 headers={**h, "If-None-Exist": f"identifier={CCCD}|{t.cccd}"})
    assert_names_nobody(r, t)
    r = ehr.put(f"/fhir/Patient?identifier={CCCD}|{t.cccd}", content=json.dumps(body), headers=h)
    assert_names_nobody(r, t)
    assert_names_nobody(register(ehr, h, (CCCD, t.cccd)), t)
    r = ehr.put(f"/fhir/Patient?identifier={CCCD}|{t.cccd}", content=json.dumps(body), headers=h)
    assert r.status_code == 429, r.text  # the three above spent the budget
    # a conditional create on a number nobody holds creates, as ever
    free = new_number()
    r = ehr.post("/fhir/Patient", content=json.dumps(patient(B, (CCCD, free))),
                 headers={**nurse(dev_key), "If-None-Exist": f"identifier={CCCD}|{free}"})
    assert r.status_code == 201, r.text


def test_a_spent_budget_refuses_a_free_number_as_a_held_one(ehr: Any, dev_key: Any, t: Tam) -> None:
    """Once the budget is spent, a number nobody holds got 201 where a held one got 429: the 429 still told
    them apart. Every Patient write adding a number is the same 429 then; writes adding none are not limited."""
    h = nurse(dev_key)
    number = new_number()
    mine = register(ehr, h, (CCCD, number))
    assert mine.status_code == 201, mine.text
    pid = mine.json()["id"]
    for _ in range(LIMIT):
        assert_names_nobody(register(ehr, h, (CCCD, t.cccd)), t)
    free, held = register(ehr, h, (CCCD, new_number())), register(ehr, h, (CCCD, t.cccd))
    for r in (free, held):
        assert r.status_code == 429 and r.json()["issue"][0]["code"] == "throttled", r.text
        assert 0 < int(r.headers["Retry-After"]) <= 900 and t.pid not in r.text
    assert free.json()["issue"][0]["diagnostics"].split(";")[0] == held.json()["issue"][0]["diagnostics"].split(";")[0]
    # every other way of adding a number: PUT, PATCH, conditional create and update, batch, transaction
    r = ehr.put(f"/fhir/Patient/{pid}", content=json.dumps(patient(B, (CCCD, number), (BHYT, f"HT{new_number()}9"),
                                                                   rid=pid)), headers=h)
    assert r.status_code == 429, r.text
    patch = [{"op": "add", "path": "/identifier/-", "value": {"system": BHYT, "value": f"HT{new_number()}9"}}]
    r = ehr.patch(f"/fhir/Patient/{pid}", content=json.dumps(patch),
                  headers={**h, "Content-Type": "application/json-patch+json"})
    assert r.status_code == 429, r.text
    other = new_number()
    r = ehr.post("/fhir/Patient", content=json.dumps(patient(B, (CCCD, other))),
                 headers={**h, "If-None-Exist": f"identifier={CCCD}|{other}"})
    assert r.status_code == 429, r.text
    r = ehr.put(f"/fhir/Patient?identifier={CCCD}|{other}", content=json.dumps(patient(B, (CCCD, other))), headers=h)
    assert r.status_code == 429, r.text
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": patient(B, (CCCD, new_number())), "request": {"method": "POST", "url": "Patient"}}]}
    r = post(ehr, h, "/fhir", batch)
    assert r.status_code == 200 and r.json()["entry"][0]["response"]["status"].startswith("429"), r.text
    r = post(ehr, h, "/fhir", {**batch, "type": "transaction"})
    assert r.status_code == 429, r.text
    # nothing was written by any of them
    admin = bearer(dev_key, "admin")
    assert ehr.get(f"/fhir/Patient?identifier={CCCD}|{other}", headers=admin).json().get("total", 0) == 0
    # a write adding no number is not limited: the same CCCD with a new name, a patch, a patient without one
    r = ehr.put(f"/fhir/Patient/{pid}", content=json.dumps(
        {**patient(B, (CCCD, number), rid=pid), "name": [{"family": "Lê", "given": ["Thị", "Hoa", "Mai"]}]}),
        headers=h)
    assert r.status_code == 200, r.text
    r = ehr.patch(f"/fhir/Patient/{pid}", content=json.dumps([{"op": "replace", "path": "/birthDate",
                                                               "value": "1990-05-02"}]),
                  headers={**h, "Content-Type": "application/json-patch+json"})
    assert r.status_code == 200, r.text
    assert register(ehr, h).status_code == 201
    # another nurse of the same facility registers a new number as ever
    assert register(ehr, nurse(dev_key), (CCCD, new_number())).status_code == 201


def foreign(ehr: Any, dev_key: Any, family: str) -> str:
    """A patient of facility A named ``family`` (born 1955-03-04), with no number."""
    r = post(ehr, bearer(dev_key, "admin"), "/fhir/Patient", {
        "resourceType": "Patient", "name": [{"family": family, "given": ["Mai"]}], "birthDate": "1955-03-04",
        "managingOrganization": {"reference": f"Organization/{A}"}})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_a_condition_matching_only_another_facilitys_patient_is_a_miss(ehr: Any, dev_key: Any) -> None:
    """If-None-Exist: family=...&birthdate=... and PUT Patient?family=... matched a patient of another
    facility and answered 403 naming it. The condition sees what the nurse may see: a miss, so a new patient."""
    h = nurse(dev_key)
    family = f"Trương{uuid.uuid4().hex[:6]}"
    fid = foreign(ehr, dev_key, family)
    cond = f"family={quote(family)}&birthdate=1955-03-04"  # a header is ASCII: percent-encoded, as in a URL
    body = {**patient(B), "name": [{"family": family, "given": ["Mai"]}], "birthDate": "1955-03-04"}
    r = ehr.post("/fhir/Patient", content=json.dumps(body), headers={**h, "If-None-Exist": cond})
    assert r.status_code == 201, r.text
    mine = r.json()["id"]
    assert mine != fid and fid not in r.text + json.dumps(dict(r.headers)) and A not in r.text
    # her own patient matches now: as before, that one (200), nothing created
    r = ehr.post("/fhir/Patient", content=json.dumps(body), headers={**h, "If-None-Exist": cond})
    assert r.status_code == 200 and r.json()["id"] == mine, r.text
    # a conditional update likewise: a miss creates, then her own patient is the match
    family = f"Trương{uuid.uuid4().hex[:6]}"
    fid = foreign(ehr, dev_key, family)
    body = {**body, "name": [{"family": family, "given": ["Mai"]}]}
    r = ehr.put(f"/fhir/Patient?family={family}&birthdate=1955-03-04", content=json.dumps(body), headers=h)
    assert r.status_code == 201 and r.json()["id"] != fid and fid not in r.text, r.text
    created = r.json()["id"]
    r = ehr.put(f"/fhir/Patient?family={family}&birthdate=1955-03-04", content=json.dumps(body), headers=h)
    assert r.status_code == 200 and r.json()["id"] == created, r.text


def test_a_missed_conditional_update_does_not_write_the_bodys_id_of_another_facility(ehr: Any, dev_key: Any) -> None:
    """No match, the engine writes the body's id: that resource is the one the access check reads."""
    fid = foreign(ehr, dev_key, f"Trương{uuid.uuid4().hex[:6]}")
    body = {**patient(B), "id": fid}
    r = ehr.put(f"/fhir/Patient?family=Không{uuid.uuid4().hex[:6]}", content=json.dumps(body), headers=nurse(dev_key))
    assert r.status_code in (403, 404), r.text
    r = ehr.get(f"/fhir/Patient/{fid}", headers=bearer(dev_key, "admin"))
    assert r.json()["meta"]["versionId"] == "1" and r.json()["managingOrganization"]["reference"] == f"Organization/{A}"
