# ruff: noqa: F811 - the fixtures imported from test_teleconsult_consults are parameters by name
"""Taking a consult over, the minutes' participants and the clinic's sorted, paged list of its consults,
over HTTP against a real EHR and teleconsult under gunicorn, the real FerretDB and RabbitMQ (the services
and helpers of ``test_teleconsult_consults``: the session's processes, their databases emptied for this module).

Covered: a step under ``If-Match`` is taken only on the Task version the doctor saw: twelve doctors
taking over at once the consult given to another doctor, several rounds: exactly one 200, the others
412 naming the winner; a take-over racing a reassignment (the holder changed under the page) is 412,
not a take-over of someone the doctor never saw; a participant's role of 2000 characters kept whole in
the minutes and the event's link, one longer 422 saying the limit (never cut); the clinic's consults
found by ``GET /fhir/Task?_sort=-authored-on`` page by page past 50, each once, in order.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.integration.test_teleconsult_consults import (  # noqa: F401 - fixtures used by name
    CLINIC_B,
    HUB,
    _tok,
    diag,
    ehr,
    minutes,
    op,
    post,
    service_request,
    submit,
    submitted,
    tc,
    tc_db,
    tc_env,
    tokens,
)

pytestmark = pytest.mark.integration


def _given_to_dr2(tc: str, tokens) -> str:
    """A consult the hub gave to dr-2 (``$reassign`` before anyone accepted it): requested, version 2."""
    _, task_id = submitted(submit(tc, tokens))
    r = op(tc, task_id, "$reassign", "dr", tokens,
           [{"name": "practitioner", "valueReference": {"reference": "Practitioner/dr-2"}}])
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["owner"]["reference"], r.headers["ETag"]) == \
        ("requested", "Practitioner/dr-2", 'W/"2"')
    return task_id


@pytest.mark.parametrize("round_", range(3))
def test_twelve_doctors_taking_over_at_once_exactly_one_wins_the_others_412_naming_him(tc, tokens, dev_key,
                                                                                      round_):
    task_id = _given_to_dr2(tc, tokens)
    doctors = [_tok(dev_key, "doctor", facility=HUB, practitioner=f"dr-take-{round_}-{i}",
                    sub=f"dr-take-{round_}-{i}") for i in range(12)]
    barrier = threading.Barrier(len(doctors))

    def take_over(h: dict[str, str]) -> httpx.Response:
        barrier.wait()
        return post(f"{tc}/fhir/Task/{task_id}/$accept", {"resourceType": "Parameters"}, h, **{"If-Match": 'W/"2"'})

    with ThreadPoolExecutor(len(doctors)) as pool:
        answers = list(pool.map(take_over, doctors))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] + [412] * 11, [a.text for a in answers if a.status_code not in (200, 412)]
    winner = next(a for a in answers if a.status_code == 200).json()
    assert winner["status"] == "accepted" and winner["meta"]["versionId"] == "3"
    for a in answers:
        if a.status_code == 412:
            said = diag(a)
            assert "version 3 now" in said and "'accepted'" in said and winner["owner"]["reference"] in said
    task = httpx.get(f"{tc}/fhir/Task/{task_id}", headers=tokens["admin"]).json()
    assert task["owner"] == winner["owner"] and task["meta"]["versionId"] == "3"
    history = httpx.get(f"{tc}/fhir/Task/{task_id}/_history", headers=tokens["admin"]).json()["entry"]
    assert len(history) == 3  # submitted, given to dr-2, taken over once


def test_a_take_over_of_a_holder_who_changed_meanwhile_is_412_not_a_take_over(tc, ehr, tokens, dev_key):
    role = {"resourceType": "PractitionerRole", "id": "role-dr-0", "practitioner": {"reference": "Practitioner/dr-0"},
            "organization": {"reference": f"Organization/{HUB}"}}
    assert httpx.put(f"{ehr}/fhir/PractitionerRole/role-dr-0", content=json.dumps(role),
                     headers=tokens["admin"]).status_code in (200, 201)
    task_id = _given_to_dr2(tc, tokens)
    seen = 'W/"2"'  # the page showed dr-2 as the holder
    again = op(tc, task_id, "$reassign", "dr", tokens,
               [{"name": "practitioner", "valueReference": {"reference": "Practitioner/dr-0"}}])
    assert again.status_code == 200 and again.headers["ETag"] == 'W/"3"'
    taker = _tok(dev_key, "doctor", facility=HUB, practitioner="dr-late", sub="dr-late")
    r = post(f"{tc}/fhir/Task/{task_id}/$accept", {"resourceType": "Parameters"}, taker, **{"If-Match": seen})
    assert r.status_code == 412 and r.json()["resourceType"] == "OperationOutcome"
    assert "Practitioner/dr-0" in diag(r) and "'requested'" in diag(r)
    task = httpx.get(f"{tc}/fhir/Task/{task_id}", headers=tokens["admin"]).json()
    assert (task["status"], task["owner"]["reference"]) == ("requested", "Practitioner/dr-0")
    # an unreadable If-Match matches no version; the current one is taken
    bad = post(f"{tc}/fhir/Task/{task_id}/$accept", {"resourceType": "Parameters"}, taker, **{"If-Match": "three"})
    assert bad.status_code == 412
    ok = post(f"{tc}/fhir/Task/{task_id}/$accept", {"resourceType": "Parameters"}, taker, **{"If-Match": 'W/"3"'})
    assert ok.status_code == 200 and ok.json()["owner"]["reference"] == "Practitioner/dr-late"


def _with_role(role: str) -> list[dict[str, Any]]:
    params = minutes()
    for p in params:
        if p["name"] == "participant":
            p["part"][1]["valueString"] = role
            break
    return params


def test_a_long_participant_role_is_kept_whole_and_one_over_the_limit_is_422(tc, tokens):
    _, task_id = submitted(submit(tc, tokens))
    assert op(tc, task_id, "$accept", "dr", tokens).status_code == 200
    too_long = "Chủ trì; " + "x" * 1992  # 2001 characters
    r = op(tc, task_id, "$complete", "dr", tokens, _with_role(too_long))
    assert r.status_code == 422, r.text
    assert "at most 2000 characters" in diag(r) and "has 2001" in diag(r)
    assert r.json()["issue"][0]["expression"] == [
        "Parameters.parameter.where(name='participant')[0].part.where(name='role')"]
    role = "Chủ trì; " + "bác sĩ xã — điều trị; " * 90  # whole participants lists are long
    role = role[:2000].strip()
    r = op(tc, task_id, "$complete", "dr", tokens, _with_role(role))
    assert r.status_code == 200, r.text
    kept = next(o for o in r.json()["output"] if o["type"]["coding"][0]["code"] == "minutes")
    written = json.loads(base64.b64decode(kept["valueAttachment"]["data"]))
    assert written["participants"][0]["role"] == role and len(role) > 200


def test_the_clinics_consults_sorted_newest_first_page_by_page_past_fifty(tc, tokens):
    """The portal's list of a clinic's consults: teleconsult's search, sorted by ``authored-on``, paged
    by its ``next`` link: every consult once, newest first, however many (here 57)."""
    mine = set()
    for i in range(57):
        body = service_request("Patient/pb", priority=("routine", "stat", "urgent")[i % 3])
        _, task_id = submitted(submit(tc, tokens, body, who="b", **{"Idempotency-Key": uuid.uuid4().hex}))
        mine.add(task_id)
    url = f"{tc}/fhir/Task?status=requested,accepted,on-hold,in-progress&_sort=-authored-on&_count=20"
    seen: list[dict[str, Any]] = []
    pages = 0
    while url:
        r = httpx.get(url, headers=tokens["b"], timeout=30)
        assert r.status_code == 200, r.text
        bundle = r.json()
        seen += [e["resource"] for e in bundle.get("entry", [])]
        url = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)
        pages += 1
    assert pages >= 3
    ids = [t["id"] for t in seen]
    assert len(ids) == len(set(ids)) and set(ids) == mine  # each once, only the clinic's own
    when = [t["authoredOn"] for t in seen]
    assert when == sorted(when, reverse=True)
    assert all(t["requester"]["reference"] == f"Organization/{CLINIC_B}" for t in seen)
