# ruff: noqa: F811 - the fixtures imported from test_teleconsult_consults are parameters by name
"""The consult minutes name their secretary (thư ký), who signs them beside the chair (Circular 49/2017/TT-BYT,
Decision 4054/QĐ-BYT): teleconsult's ``$complete`` over HTTP with and without ``secretary``, its refusals (422,
an OperationOutcome naming the parameter, nothing written), and the completed event carried by the real RabbitMQ
to the EHR's consumer, whose Composition on the real FerretDB carries the secretary exactly once however often
the event comes; an event without one (as sent before it existed) still stores, once, the chair alone.

The teleconsult and EHR web processes of test_teleconsult_consults (its fixtures, imported)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from sen_shared.bus import Publisher
from sen_shared.bus.outbox import entry_event

from tests.integration.test_bus import _bus, consuming
from tests.integration.test_teleconsult_consults import (  # noqa: F401 - fixtures used by name
    HUB,
    db,
    diag,
    ehr,
    ehr_db,
    minutes,
    op,
    submit,
    submitted,
    tc,
    tc_db,
    tc_env,
    tokens,
)
from tests.support import wait_for

pytestmark = pytest.mark.integration

SECRETARY_EXT = "https://sen.vn/fhir/StructureDefinition/consult-attester-role"
# the participants as the portal sends them: the others as "<name> — <role>" entries of the chair's role
CHAIR_ROLE = "Chủ trì; BS. Trần Thị Bích — thư ký, Bệnh viện Đa khoa tỉnh; YS. Võ Minh Tâm — cơ sở gửi"


def _minutes(secretary: dict[str, Any] | None) -> list[dict[str, Any]]:
    params = []
    for p in minutes():
        if p["name"] == "participant" and p["part"][0]["valueReference"]["reference"] == "Practitioner/dr-0":
            p = {"name": "participant", "part": [
                {"name": "who", "valueReference": {"reference": "Practitioner/dr-0", "display": "BS.CKII Lê Văn Hùng"}},
                {"name": "role", "valueString": CHAIR_ROLE}]}
        params.append(p)
    return [*params, {"name": "secretary", "valueReference": secretary}] if secretary is not None else params


def _accepted(tc: str, tokens: Any) -> tuple[str, str]:
    sr_id, task_id = submitted(submit(tc, tokens))
    assert op(tc, task_id, "$accept", "dr", tokens).status_code == 200
    return sr_id, task_id


@pytest.mark.parametrize(("secretary", "said"), [
    ({"display": "BS. Phạm Văn Tư"}, "is not among the participants"),
    ({"display": "  "}, "needs the secretary's name"),
    ({"display": "BS."}, "needs the secretary's name"),
    ({"display": "Lê Văn Hùng"}, "is the chair"),
])
def test_a_secretary_not_among_the_participants_or_unnamed_is_422_and_nothing_changes(tc, tokens, db, secretary,
                                                                                    said):
    _, task_id = _accepted(tc, tokens)
    before = httpx.get(f"{tc}/fhir/Task/{task_id}", headers=tokens["dr"]).json()
    steps = db.consult_steps.count_documents({"k": task_id})
    r = op(tc, task_id, "$complete", "dr", tokens, _minutes(secretary))
    assert r.status_code == 422 and said in diag(r), r.text
    issue = r.json()["issue"][0]
    assert issue["expression"] == ["Parameters.parameter.where(name='secretary')"], issue
    assert httpx.get(f"{tc}/fhir/Task/{task_id}", headers=tokens["dr"]).json() == before
    assert db.consult_steps.count_documents({"k": task_id}) == steps


def _completed_event(db: Any, task_id: str) -> dict[str, Any]:
    [event] = [entry_event(e) for link in db.consult_steps.find({"k": task_id}) for e in link["outbox"]
               if entry_event(e)["type"].endswith("consult.completed.v1")]
    return event


def test_the_secretary_reaches_the_ehrs_record_once_and_minutes_without_one_store_as_before(
        tc, ehr, ehr_db, tokens, db, amqp_url, base_env, mongo_client):
    from sen_ehr import worker as ehr_worker
    from sen_ehr.domain.consult_record import record_ids
    from sen_teleconsult.worker import OUTBOX_COLLECTIONS

    with_sr, with_task = _accepted(tc, tokens)
    r = op(tc, with_task, "$complete", "dr", tokens, _minutes({"display": "ThS.BS. Trần Thị Bích"}))
    assert r.status_code == 200 and r.json()["status"] == "completed", r.text
    without_sr, without_task = _accepted(tc, tokens)
    assert op(tc, without_task, "$complete", "dr", tokens, _minutes(None)).status_code == 200
    sent = _completed_event(db, with_task)
    assert sent["data"]["minutes"]["secretary"] == {"display": "ThS.BS. Trần Thị Bích"}
    old = _completed_event(db, without_task)
    assert "secretary" not in old["data"]["minutes"]

    ehr_store = mongo_client[ehr_db]
    bus_gen = _bus(amqp_url, base_env, ["ehr.consult-record"])
    bus = next(bus_gen)
    try:
        # teleconsult's relay publishes the two events; the EHR's consumer (its worker's handler) stores them
        bus.relay_all(db, OUTBOX_COLLECTIONS)
        comps = {sr: record_ids(f"ServiceRequest/{sr}")[1] for sr in (with_sr, without_sr)}
        with consuming(bus, "ehr.consult-record", ehr_worker.HANDLERS["ehr.consult-record"], ehr_store):
            wait_for(lambda: ehr_store["Composition"].count_documents({"_id": {"$in": list(comps.values())}}) == 2)
            # both delivered again (at-least-once), then another consult's: once that one is stored, the queue's
            # one consumer has handled the two before it
            last = {**old, "id": str(uuid.uuid4()), "subject": f"ServiceRequest/{without_sr}-next",
                    "data": {**old["data"], "serviceRequest": f"ServiceRequest/{without_sr}-next"}}
            with Publisher(bus.url, prefix=bus.prefix, catalog=bus.catalog) as again:
                for event in (sent, old, last):
                    again.publish(event)
            last_comp = record_ids(f"ServiceRequest/{without_sr}-next")[1]
            wait_for(lambda: ehr_store["Composition"].count_documents({"_id": last_comp}) == 1)
        for sr, comp_id in comps.items():
            assert ehr_store["Composition"].count_documents({"_id": comp_id}) == 1
        got = httpx.get(f"{ehr}/fhir/Composition/{comps[with_sr]}", headers=tokens["admin"]).json()
        assert got["meta"]["versionId"] == "1"
        secretaries = [a for a in got["attester"] if any(e["url"] == SECRETARY_EXT for e in a.get("extension") or [])]
        assert [a["party"] for a in secretaries] == [{"display": "ThS.BS. Trần Thị Bích"}], got["attester"]
        assert secretaries[0]["mode"] == "professional"
        assert json.dumps(got["attester"], ensure_ascii=False).count("Trần Thị Bích") == 1
        assert got["attester"][0]["party"] == {"reference": "Practitioner/dr-0", "display": "BS.CKII Lê Văn Hùng"}
        plain = httpx.get(f"{ehr}/fhir/Composition/{comps[without_sr]}", headers=tokens["admin"]).json()
        assert plain["meta"]["versionId"] == "1"
        assert plain["attester"] == [{"mode": "professional", "time": old["data"]["completedAt"],
                                      "party": {"reference": "Practitioner/dr-0", "display": "BS.CKII Lê Văn Hùng"}}]
        assert f"Organization/{HUB}" in json.dumps(plain)
    finally:
        next(bus_gen, None)

