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
