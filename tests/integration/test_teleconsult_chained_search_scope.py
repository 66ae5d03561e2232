"""Chains, ``_has`` and includes on teleconsult keep its clinic and hub scoping (real FerretDB).

4867da7 made a chain's or a ``_has``'s sub-search see what the caller may search, by patient. On teleconsult
that is not all: clinic staff see their own facility's consults only, a hub's doctors the consults sent to
their hub (``fhir_server``), though both reach the patient of another clinic's (hub's) consult through their
own consult's referral grant. Patient p9 here has a consult of clinic A sent to the hub and one of clinic B
sent to another hub; clinic B and the other hub's doctor probe A's consult. The consult's own resources refer
only to each other, so a chain from them stays inside the caller's consult; an AppointmentResponse (not a
consult resource: a clinic or doctor of the patient writes it) may name any Appointment, and its chains,
includes and conditional references then looked into A's visit by patient only.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sen_shared.auth import issue_dev_token
from sen_shared.fhir.access import GRANTS, grant_id
from sen_shared.fhir.store import Store
from sen_teleconsult.domain.consults import HUB_TAG, REQUESTER_TAG

from tests.support import admin_headers, app_client

pytestmark = pytest.mark.integration

A, B, HUB, OTHER = "Organization/tyt-a", "Organization/tyt-b", "Organization/bv-tinh", "Organization/bv-khac"
P = "Patient/p9"


def _tags(requester: str, hub: str) -> dict[str, Any]:
    return {"tag": [{"system": HUB_TAG, "code": hub}, {"system": REQUESTER_TAG, "code": requester}]}


def _consult(store: Store, key: str, requester: str, hub: str) -> None:
    """A consult as the workflow stores it: ServiceRequest, Task, a thread message, a booked visit."""
    sr, task = f"ServiceRequest/sr-{key}", f"Task/task-{key}"
    meta, day = _tags(requester, hub), "2030-01-07" if key == "a" else "2030-01-08"
    store.create({"resourceType": "ServiceRequest", "meta": meta, "status": "active", "intent": "order",
                  "subject": {"reference": P}, "requester": {"reference": requester},
                  "performer": [{"reference": hub}], "code": {"text": f"Hội chẩn {key}"}}, f"sr-{key}")
    store.create({"resourceType": "Task", "meta": meta, "status": "requested", "intent": "order",
                  "basedOn": [{"reference": sr}], "focus": {"reference": sr}, "for": {"reference": P},
                  "requester": {"reference": requester}, "owner": {"reference": hub},
                  "businessStatus": {"text": f"bí mật {key}"}}, f"task-{key}")
    store.create({"resourceType": "Communication", "meta": meta, "status": "completed",
                  "basedOn": [{"reference": sr}], "partOf": [{"reference": task}], "subject": {"reference": P},
                  "sender": {"reference": hub}, "recipient": [{"reference": requester}],
                  "payload": [{"contentString": f"Xin điện tim {key}"}]}, f"comm-{key}")
    store.create({"resourceType": "Appointment", "meta": meta, "status": "booked", "basedOn": [{"reference": sr}],
                  "description": f"Khám từ xa {key}", "start": f"{day}T02:00:00Z", "end": f"{day}T02:30:00Z",
                  "participant": [{"actor": {"reference": P}, "status": "accepted"}]}, f"appt-{key}")


@pytest.fixture(scope="module")
def tc(base_env, run_id, mongo_client, dev_key):
    db = f"sen_t{run_id}_tc_chain_scope"
    with app_client("teleconsult", base_env, db, mongo_client) as (c, _app):
        store = Store(mongo_client[db], emit_events=False)
        _consult(store, "a", A, HUB)
        _consult(store, "b", B, OTHER)
        # each submission grants its clinic and its hub the patient (workflow): all four reach p9
        for who in (A, B, HUB, OTHER):
            mongo_client[db][GRANTS].insert_one({"_id": f"ServiceRequest/sr|{who}", "pair": grant_id(P, who),
                                                 "patient": P, "grantee": who, "reason": "ServiceRequest/sr",
                                                 "expires": None})
        yield c


def _h(dev_key: Any, role: str, facility: str, sub: str) -> dict[str, str]:
    token = issue_dev_token(dev_key, role, facility=facility.split("/", 1)[1], sub=sub,
                            **({"practitioner": sub} if role == "doctor" else {}))
    return {**admin_headers(dev_key), "Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def who(dev_key) -> dict[str, dict[str, str]]:
    return {"clinic_a": _h(dev_key, "clinic", A, "nv-a"), "clinic_b": _h(dev_key, "clinic", B, "nv-b"),
            "hub": _h(dev_key, "doctor", HUB, "bs-tinh"), "other_hub": _h(dev_key, "doctor", OTHER, "bs-khac"),
            "admin": admin_headers(dev_key)}


def _found(tc: Any, headers: dict[str, str], query: str) -> set[str]:
    r = tc.get(f"/fhir/{query}", headers=headers)
    assert r.status_code == 200, (query, r.status_code, r.text)
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in r.json().get("entry") or []}


# queries whose answer names a resource of A's consult (sent to the hub) only through it; each is asked
# of the sub-search's or the include's view of A's consult
PROBES = [
    "Task?focus:ServiceRequest.code:text=Hội chẩn a",
    "Task?based-on:ServiceRequest.requester=Organization/tyt-a",
    "ServiceRequest?_has:Task:focus:requester=Organization/tyt-a",
    "ServiceRequest?_has:Task:focus:owner=Organization/bv-tinh",
    "ServiceRequest?_has:Communication:based-on:sender=Organization/bv-tinh",
    "Appointment?_has:Communication:based-on:subject=Patient/p9&based-on=ServiceRequest/sr-a",
    "Appointment?based-on:ServiceRequest.requester=Organization/tyt-a",
    "Communication?part-of:Task.owner=Organization/bv-tinh",
    "Communication?part-of:Task.requester=Organization/tyt-a",
    "Task?_has:Communication:part-of:sender=Organization/bv-tinh",
    "Task?patient=Patient/p9&_include=Task:focus&_revinclude=Communication:part-of",
    "ServiceRequest?subject=Patient/p9&_revinclude=Task:focus&_revinclude=Appointment:based-on",
    "Appointment?patient=Patient/p9&_include=Appointment:based-on",
    "Communication?subject=Patient/p9&_include=Communication:part-of&_include=Communication:based-on",
]
A_CONSULT = {"ServiceRequest/sr-a", "Task/task-a", "Communication/comm-a", "Appointment/appt-a"}


@pytest.mark.parametrize("caller", ["clinic_b", "other_hub"])
def test_a_chain_has_or_include_from_the_callers_own_consult_finds_nothing_of_another(tc, who, caller):
    """Another clinic, another hub's doctor: no chain, ``_has`` or include of the consult types names
    anything of A's consult (the consult's resources refer only to each other, and the outer search is
    the caller's own)."""
    for query in PROBES:
        assert not _found(tc, who[caller], query) & A_CONSULT, (caller, query)
    # the probes do reach A's consult for its own clinic and hub
    for mine in ("clinic_a", "hub"):
        assert _found(tc, who[mine], "Task?focus:ServiceRequest.code:text=Hội chẩn a") == {"Task/task-a"}
        assert "Task/task-a" in _found(tc, who[mine], PROBES[10])


def _response(tc: Any, headers: dict[str, str], appointment: str, rid: str) -> Any:
    body = {"resourceType": "AppointmentResponse", "id": rid, "appointment": {"reference": appointment},
            "participantStatus": "accepted", "actor": {"reference": P}}
    return tc.put(f"/fhir/AppointmentResponse/{rid}", content=json.dumps(body), headers=headers)


@pytest.fixture(scope="module")
def answered(tc, who) -> str:
    """Clinic A's AppointmentResponse of p9 to its own visit (``ar-a``)."""
    r = _response(tc, who["clinic_a"], "Appointment/appt-a", "ar-a")
    assert r.status_code in (200, 201), r.text
    return "AppointmentResponse/ar-a"


@pytest.mark.parametrize("caller", ["clinic_b", "other_hub"])
def test_an_appointment_response_to_another_consults_visit_tells_nothing_of_it(tc, who, answered, caller):
    """An AppointmentResponse of p9 (the caller's patient too) names A's visit. It is in A's consult's scope,
    not the caller's: no search, chain, ``_has`` or include finds it or the visit through it. Before, it was
    searched by patient only: B found it, chained into A's visit (when, what status) and included it whole."""
    h = who[caller]
    assert answered not in _found(tc, h, "AppointmentResponse?actor=Patient/p9")
    for query in ("AppointmentResponse?appointment:Appointment.status=booked",
                  "AppointmentResponse?appointment:Appointment.date=2030-01-07",
                  "AppointmentResponse?appointment=Appointment/appt-a",
                  "AppointmentResponse?_id=ar-a",
                  "AppointmentResponse?appointment:Appointment.based-on:ServiceRequest.subject=Patient/p9",
                  "AppointmentResponse?appointment:Appointment._has:Communication:based-on:subject=Patient/p9",
                  "Appointment?_has:AppointmentResponse:appointment:actor=Patient/p9&_id=appt-a"):
        assert not _found(tc, h, query) & (A_CONSULT | {answered}), (caller, query)
    included = _found(tc, h, "AppointmentResponse?actor=Patient/p9&_include=AppointmentResponse:appointment")
    assert not included & (A_CONSULT | {answered}), (caller, included)
    included = _found(tc, h, "Appointment?patient=Patient/p9&_revinclude=AppointmentResponse:appointment")
    assert answered not in included, (caller, included)
    # its own clinic and hub (and the admin) still find it, and A's visit through it
    for mine in ("clinic_a", "hub", "admin"):
        assert answered in _found(tc, who[mine], "AppointmentResponse?appointment:Appointment.status=booked")
        assert {answered, "Appointment/appt-a"} <= _found(
            tc, who[mine], "AppointmentResponse?actor=Patient/p9&_include=AppointmentResponse:appointment")
        assert answered in _found(tc, who[mine],
                                  "Appointment?patient=Patient/p9&_revinclude=AppointmentResponse:appointment")


def _same_answer(got: Any, made_up: Any, rid: str, other: str) -> None:
    """``got`` is the answer ``made_up`` got (an id not stored), but for the id named."""
    assert got.status_code == made_up.status_code, (got.status_code, got.text, made_up.text)
    assert got.text.replace(rid, "X") == made_up.text.replace(other, "X")


@pytest.mark.parametrize("caller", ["clinic_b", "other_hub"])
def test_another_consults_appointment_response_is_read_as_one_not_stored(tc, who, answered, caller):
    """A read, a version read, a history, a patch or a delete of A's AppointmentResponse is the answer of an id
    not stored, byte for byte: the caller does not learn that it exists."""
    h = who[caller]
    for path in ("AppointmentResponse/{}", "AppointmentResponse/{}/_history/1", "AppointmentResponse/{}/_history"):
        _same_answer(tc.get(f"/fhir/{path.format('ar-a')}", headers=h),
                     tc.get(f"/fhir/{path.format('ar-none')}", headers=h), "ar-a", "ar-none")
    patch = json.dumps([{"op": "replace", "path": "/participantStatus", "value": "declined"}])
    ph = {**h, "Content-Type": "application/json-patch+json"}
    _same_answer(tc.patch("/fhir/AppointmentResponse/ar-a", content=patch, headers=ph),
                 tc.patch("/fhir/AppointmentResponse/ar-none", content=patch, headers=ph), "ar-a", "ar-none")
    if caller == "clinic_b":  # a doctor deletes nothing (a 403 for any id)
        _same_answer(tc.delete("/fhir/AppointmentResponse/ar-a", headers=h),
                     tc.delete("/fhir/AppointmentResponse/ar-none", headers=h), "ar-a", "ar-none")
    stored = tc.get("/fhir/AppointmentResponse/ar-a", headers=who["admin"]).json()
    assert stored["participantStatus"] == "accepted" and stored["meta"]["versionId"] == "1"
    assert tc.get("/fhir/AppointmentResponse/ar-a", headers=who["clinic_a"]).status_code == 200
    assert tc.get("/fhir/AppointmentResponse/ar-a", headers=who["hub"]).status_code == 200


@pytest.mark.parametrize("caller", ["clinic_b", "other_hub"])
def test_an_appointment_response_may_name_only_a_visit_of_the_callers_consults(tc, who, caller):
    """Writing an AppointmentResponse to A's visit (PUT, POST, a PATCH of one's own, a transaction's entry)
    is answered as naming a visit not stored: 422, the same words; nothing is written. Its own visit's
    answer is written and found."""
    h, key = who[caller], caller.replace("_", "-")
    own = _response(tc, h, "Appointment/appt-b", f"ar-own-{key}")
    assert own.status_code == 201, own.text
    assert f"AppointmentResponse/ar-own-{key}" in _found(tc, h, "AppointmentResponse?actor=Patient/p9")
    refused = _response(tc, h, "Appointment/appt-a", f"ar-x-{key}")
    _same_answer(refused, _response(tc, h, "Appointment/appt-none", f"ar-x-{key}"), "appt-a", "appt-none")
    assert refused.status_code == 422 and refused.json()["resourceType"] == "OperationOutcome", refused.text
    assert tc.get(f"/fhir/AppointmentResponse/ar-x-{key}", headers=who["admin"]).status_code == 404
    body = {"resourceType": "AppointmentResponse", "appointment": {"reference": "Appointment/appt-a"},
            "participantStatus": "accepted", "actor": {"reference": P}}
    posted = tc.post("/fhir/AppointmentResponse", content=json.dumps(body), headers=h)
    body["appointment"]["reference"] = "Appointment/appt-none"
    _same_answer(posted, tc.post("/fhir/AppointmentResponse", content=json.dumps(body), headers=h),
                 "appt-a", "appt-none")
    assert posted.status_code == 422
    patch = json.dumps([{"op": "replace", "path": "/appointment/reference", "value": "Appointment/appt-a"}])
    patched = tc.patch(f"/fhir/AppointmentResponse/ar-own-{key}", content=patch,
                       headers={**h, "Content-Type": "application/json-patch+json"})
    assert patched.status_code == 422, patched.text
    assert "appt-a" in patched.text and "another" not in patched.text
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{
        "resource": {**body, "appointment": {"reference": "Appointment/appt-a"}},
        "request": {"method": "POST", "url": "AppointmentResponse"}}]}
    r = tc.post("/fhir", content=json.dumps(bundle), headers=h)
    assert r.status_code == 422 and "another" not in r.text, r.text
    assert not _found(tc, who["admin"], "AppointmentResponse?appointment=Appointment/appt-a") - {
        "AppointmentResponse/ar-a"}
    # A's AppointmentResponse is not the caller's to overwrite (to its own visit or any)
    put = _response(tc, h, "Appointment/appt-b", "ar-a")
    assert put.status_code == 403 and put.json()["resourceType"] == "OperationOutcome", put.text
    assert "appt-a" not in put.text
    assert tc.get("/fhir/AppointmentResponse/ar-a", headers=who["admin"]).json()["meta"]["versionId"] == "1"


@pytest.mark.parametrize("caller", ["clinic_b", "other_hub"])
def test_a_conditional_reference_resolves_only_to_the_callers_own_consults(tc, who, caller):
    """A conditional reference in a transaction is resolved by a search the caller may make: one matching
    only A's visit (``Appointment?patient=Patient/p9&date=2030-01-07``, B's visit another day) named its id
    in B's AppointmentResponse."""
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{
        "fullUrl": "urn:uuid:0d3b8a52-3d5e-4d7e-9f3f-8d1f3a6b2c11",
        "resource": {"resourceType": "AppointmentResponse", "participantStatus": "accepted",
                     "appointment": {"reference": "Appointment?patient=Patient/p9&date=2030-01-07"},
                     "actor": {"reference": P}},
        "request": {"method": "POST", "url": "AppointmentResponse"}}]}
    r = tc.post("/fhir", content=json.dumps(bundle), headers=who[caller])
    body = r.text
    assert "appt-a" not in body, (caller, r.status_code, body)
    if r.status_code in (200, 201):
        location = r.json()["entry"][0]["response"]["location"]
        stored = tc.get(f"/fhir/{location.split('/_history')[0]}", headers=who["admin"]).json()
        assert stored["appointment"]["reference"] != "Appointment/appt-a", stored
