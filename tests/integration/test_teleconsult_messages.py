# ruff: noqa: F811 - the fixtures imported from test_teleconsult_consults are parameters by name
"""Free messages on a consult's thread (``POST /fhir/Task/{id}/$message``) over HTTP, against a real
EHR and teleconsult under gunicorn, the real FerretDB and RabbitMQ (the services and helpers of
``test_teleconsult_consults``, started afresh for this module).

Covered: either side posts (the requesting clinic to the Task's owner, a hub doctor to the clinic)
and the Task's state and version stay; another clinic, another hub: 404, as an unknown Task; an admin:
403; a rejected or cancelled consult: 409 naming the state, a completed one still takes a message;
the text's size limit and bad attachments: 422; ``Idempotency-Key``: a retry replays the first
answer, ten at once make one message; the thread found by ``part-of=Task/<id>`` and by
``based-on`` (with the question and the answer), in order; the AuditEvent names the sender.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.integration.test_teleconsult_consults import (  # noqa: F401 - fixtures used by name
    CLINIC_A,
    HUB,
    diag,
    ehr,
    op,
    submit,
    submitted,
    tc,
    tc_db,
    tc_env,
    tokens,
)

pytestmark = pytest.mark.integration


def message(tc: str, task: str, who: str, tokens, text: str = "Sốt tăng 39,5 °C sáng nay.",
            attachments: tuple[str | dict[str, Any], ...] = (), **headers: str) -> httpx.Response:
    """``attachments``: references, or whole References (with a ``display``)."""
    params: list[dict[str, Any]] = [{"name": "text", "valueString": text}]
    params += [{"name": "attachment", "valueReference": ref if isinstance(ref, dict) else {"reference": ref}}
               for ref in attachments]
    return op(tc, task, "$message", who, tokens, params, **headers)


def task_of(tc: str, tokens, task_id: str) -> dict[str, Any]:
    return httpx.get(f"{tc}/fhir/Task/{task_id}", headers=tokens["admin"]).json()


def by_part_of(tc: str, tokens, who: str, task_id: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{tc}/fhir/Communication", params={"part-of": f"Task/{task_id}", "_count": "50"},
                  headers=tokens[who])
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry") or []]


def test_both_sides_post_messages_and_the_task_stays_as_it_was(tc, tokens):
    sr_id, task_id = submitted(submit(tc, tokens))
    before = task_of(tc, tokens, task_id)
    # the clinic, before any doctor took the consult: to the hub
    named = {"reference": "Observation/obs-a", "display": " Phim X-quang\n ngực.png "}
    r = message(tc, task_id, "a", tokens, attachments=("Observation/obs-a", named,
                                                       {"reference": "Observation/obs-a", "display": "x" * 300}))
    assert r.status_code == 201, r.text
    from_clinic = r.json()
    assert r.headers["Location"].endswith(f"/Communication/{from_clinic['id']}/_history/1")
    assert from_clinic["resourceType"] == "Communication" and from_clinic["status"] == "completed"
    assert from_clinic["sender"] == {"reference": f"Organization/{CLINIC_A}"}
    assert from_clinic["recipient"] == [{"reference": f"Organization/{HUB}"}]
    assert from_clinic["partOf"] == [{"reference": f"Task/{task_id}"}]
    assert from_clinic["basedOn"] == [{"reference": f"ServiceRequest/{sr_id}"}]
    assert from_clinic["subject"] == {"reference": "Patient/pa"} and from_clinic["sent"]
    # each file keeps the name the clinic gave it (one line, at most 200 characters): the thread shows it
    assert from_clinic["payload"] == [{"contentString": "Sốt tăng 39,5 °C sáng nay."},
                                      {"contentReference": {"reference": "Observation/obs-a"}},
                                      {"contentReference": {"reference": "Observation/obs-a",
                                                            "display": "Phim X-quang ngực.png"}},
                                      {"contentReference": {"reference": "Observation/obs-a", "display": "x" * 200}}]
    assert from_clinic["category"][0]["coding"][0]["code"] == "message"
    after = task_of(tc, tokens, task_id)
    assert after["status"] == "requested" and after["meta"]["versionId"] == before["meta"]["versionId"]
    # once a doctor took it, the clinic writes to that doctor; the doctor writes to the clinic
    assert op(tc, task_id, "$accept", "dr", tokens).status_code == 200
    r = message(tc, task_id, "a_pr", tokens, "Gia đình xin dời lịch hẹn sang chiều.")
    assert r.status_code == 201, r.text
    assert r.json()["sender"] == {"reference": "Practitioner/ys-an-binh"}
    assert r.json()["recipient"] == [{"reference": "Practitioner/dr-0"}]
    r = message(tc, task_id, "dr2", tokens, "Đồng ý, 15 giờ.")
    assert r.status_code == 201, r.text
    assert r.json()["sender"] == {"reference": "Practitioner/dr-2"}
    assert r.json()["recipient"] == [{"reference": f"Organization/{CLINIC_A}"}]
    task = task_of(tc, tokens, task_id)
    assert task["status"] == "accepted" and task["meta"]["versionId"] == "2"  # submit, accept: no more
    # both sides find the thread by the Task, oldest first by sent
    for who in ("a", "a_pr", "dr", "dr2"):
        found = by_part_of(tc, tokens, who, task_id)
        assert [c["payload"][0]["contentString"] for c in sorted(found, key=lambda c: c["sent"])] == [
            "Sốt tăng 39,5 °C sáng nay.", "Gia đình xin dời lịch hẹn sang chiều.", "Đồng ý, 15 giờ."], who
    # the audit trail names the message and who sent it
    trail = httpx.get(f"{tc}/fhir/AuditEvent", params={"entity": f"Communication/{from_clinic['id']}"},
                      headers=tokens["admin"]).json()
    assert {("$message", "nv-an-binh")} <= {(c["code"], e["resource"]["agent"][0]["altId"])
                                            for e in trail.get("entry") or []
                                            for c in e["resource"].get("subtype", [])}


def test_strangers_may_not_post_nor_read_the_thread(tc, tokens):
    _, task_id = submitted(submit(tc, tokens))
    for who in ("b", "other_hub"):  # another facility's consult: as a Task not stored (a 403 told it exists)
        r = message(tc, task_id, who, tokens)
        assert r.status_code == 404, (who, r.text)
        assert r.json() == message(tc, "no-such-task", who, tokens).json() | {"issue": [
            {**r.json()["issue"][0], "diagnostics": f"Task/{task_id} is not known"}]}
    for rid in (task_id, "no-such-task"):  # an admin writes for neither side: 403, whatever the id
        r = message(tc, rid, "admin", tokens)
        assert r.status_code == 403 and r.json()["resourceType"] == "OperationOutcome", r.text
    assert message(tc, "no-such-task", "a", tokens).status_code == 404
    assert message(tc, task_id, "a", tokens).status_code == 201
    for who in ("b", "other_hub"):
        assert by_part_of(tc, tokens, who, task_id) == [], who
    assert len(by_part_of(tc, tokens, "dr", task_id)) == 1


def test_bad_messages_are_refused_clearly_and_nothing_is_stored(tc, tokens):
    _, task_id = submitted(submit(tc, tokens))
    r = message(tc, task_id, "a", tokens, "x" * 4001)
    assert r.status_code == 422 and "4000" in diag(r)
    r = message(tc, task_id, "a", tokens, "   ")
    assert r.status_code == 422 and "text" in diag(r)
    r = op(tc, task_id, "$message", "a", tokens, [])
    assert r.status_code == 422 and "'text' is required" in diag(r)
    r = message(tc, task_id, "a", tokens, attachments=("Patient/pa",))
    assert r.status_code == 422 and "attachment" in diag(r)
    for display in (42, "  ", ["a.pdf"]):
        r = message(tc, task_id, "a", tokens, attachments=({"reference": "Observation/obs-a", "display": display},))
        assert r.status_code == 422 and "display" in diag(r), r.text
        assert r.json()["issue"][0]["expression"] == [
            "Parameters.parameter.where(name='attachment')[0].valueReference.display"]
    r = message(tc, task_id, "a", tokens, attachments=("Observation/obs-a",) * 11)
    assert r.status_code == 422 and "at most 10" in diag(r)
    r = message(tc, task_id, "a", tokens, attachments=("Observation/obs-b",))  # the other clinic's patient
    assert r.status_code == 422 and "Observation/obs-b is not known to the EHR" in r.text, r.text  # not told apart
    assert message(tc, task_id, "a", tokens, "x" * 4000).status_code == 201  # the limit itself is fine
    assert len(by_part_of(tc, tokens, "a", task_id)) == 1


@pytest.mark.parametrize("close", ["$cancel", "$reject"])
def test_a_withdrawn_or_refused_consult_takes_no_message(tc, tokens, close):
    _, task_id = submitted(submit(tc, tokens))
    who = "a" if close == "$cancel" else "dr"
    assert op(tc, task_id, close, who, tokens, [{"name": "reason", "valueString": "Không cần nữa"}]).status_code == 200
    state = "cancelled" if close == "$cancel" else "rejected"
    for sender in ("a", "dr"):
        r = message(tc, task_id, sender, tokens)
        assert r.status_code == 409 and f"'{state}'" in diag(r), r.text
    assert by_part_of(tc, tokens, "a", task_id) == []


def test_on_hold_and_completed_consults_take_messages_and_the_thread_reads_in_order(tc, tokens):
    from tests.integration.test_teleconsult_consults import minutes

    sr_id, task_id = submitted(submit(tc, tokens))
    assert op(tc, task_id, "$accept", "dr", tokens).status_code == 200
    assert op(tc, task_id, "$request-info", "dr", tokens,
              [{"name": "question", "valueString": "Xin điện tim?"}]).status_code == 200
    r = message(tc, task_id, "a", tokens, "Chiều nay có kết quả.")
    assert r.status_code == 201, r.text
    assert task_of(tc, tokens, task_id)["status"] == "on-hold"  # still waiting for the answer
    assert op(tc, task_id, "$provide-info", "a", tokens,
              [{"name": "answer", "valueString": "Nhịp xoang"}]).status_code == 200
    assert op(tc, task_id, "$complete", "dr", tokens, minutes()).status_code == 200
    r = message(tc, task_id, "a", tokens, "Cảm ơn bác sĩ.")
    assert r.status_code == 201, r.text
    assert task_of(tc, tokens, task_id)["status"] == "completed"
    # the whole thread by its ServiceRequest (as the portal reads it): question, message, answer, thanks
    r = httpx.get(f"{tc}/fhir/Communication", params={"based-on": f"ServiceRequest/{sr_id}", "_count": "50"},
                  headers=tokens["dr"])
    thread = sorted((e["resource"] for e in r.json()["entry"]), key=lambda c: c["sent"])
    assert [c["category"][0]["coding"][0]["code"] for c in thread] == ["question", "message", "answer", "message"]
    assert [c["payload"][0]["contentString"] for c in thread] == [
        "Xin điện tim?", "Chiều nay có kết quả.", "Nhịp xoang", "Cảm ơn bác sĩ."]


def test_a_retried_message_is_posted_once(tc, tokens, mongo_client, tc_db):
    _, task_id = submitted(submit(tc, tokens))
    key = str(uuid.uuid4())
    first = message(tc, task_id, "a", tokens, **{"Idempotency-Key": key})
    assert first.status_code == 201, first.text
    again = message(tc, task_id, "a", tokens, **{"Idempotency-Key": key})
    assert again.status_code == 201 and again.content == first.content  # the first answer, replayed
    other = message(tc, task_id, "a", tokens, "Một tin khác", **{"Idempotency-Key": key})
    assert other.status_code == 422  # the same key for another message
    # ten tries of one message at once (a double click on a slow link): one Communication
    key = str(uuid.uuid4())
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: message(tc, task_id, "dr", tokens, "Đã nhận.",
                                                  **{"Idempotency-Key": key}), range(10)))
    assert {r.status_code for r in answers} == {201}, [r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    assert len(by_part_of(tc, tokens, "admin", task_id)) == 2
    # a retry whose first answer was lost (a 5xx is not kept): the id derives from the key, so the
    # stored message is found, not made twice
    db = mongo_client[tc_db]
    db.idempotency_keys.delete_many({"_id": {"$regex": key}})
    r = message(tc, task_id, "dr", tokens, "Đã nhận.", **{"Idempotency-Key": key})
    assert r.status_code == 200 and r.json()["id"] == answers[0].json()["id"], r.text
    assert len(by_part_of(tc, tokens, "admin", task_id)) == 2
