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


def _response(tc: Any, headers: dict[str, str], appointment: str, rid: str) -> None:
    body = {"resourceType": "AppointmentResponse", "id": rid, "appointment": {"reference": appointment},
            "participantStatus": "accepted", "actor": {"reference": P}}
    r = tc.put(f"/fhir/AppointmentResponse/{rid}", content=json.dumps(body), headers=headers)
    assert r.status_code in (200, 201), r.text


@pytest.mark.parametrize("caller", ["clinic_b", "other_hub"])
def test_an_appointment_response_naming_another_consults_visit_tells_nothing_of_it(tc, who, caller):
    """An AppointmentResponse of p9 (the caller's patient: it may write one) names A's visit. A chain into
    it, an ``_include`` of it or a ``_has`` through it answered by patient only: B learnt that A's visit
    exists, when and with what status, and read it whole through the include."""
    h = who[caller]
    _response(tc, h, "Appointment/appt-a", f"ar-{caller.replace('_', '-')}")
    mine = f"AppointmentResponse/ar-{caller.replace('_', '-')}"
    assert mine in _found(tc, h, "AppointmentResponse?actor=Patient/p9")
    for query in ("AppointmentResponse?appointment:Appointment.status=booked",
                  "AppointmentResponse?appointment:Appointment.date=2030-01-07",
                  "AppointmentResponse?appointment:Appointment.based-on:ServiceRequest.subject=Patient/p9",
                  "AppointmentResponse?appointment:Appointment._has:Communication:based-on:subject=Patient/p9"):
        assert _found(tc, h, query) == set(), (caller, query)
    included = _found(tc, h, "AppointmentResponse?actor=Patient/p9&_include=AppointmentResponse:appointment")
    assert not included & A_CONSULT, (caller, included)
    # its own clinic and hub (and the admin) still find A's visit through it
    for mine_too in ("clinic_a", "hub", "admin"):
        assert mine in _found(tc, who[mine_too], "AppointmentResponse?appointment:Appointment.status=booked")
        assert "Appointment/appt-a" in _found(
            tc, who[mine_too], "AppointmentResponse?actor=Patient/p9&_include=AppointmentResponse:appointment")


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
