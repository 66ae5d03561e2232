"""The consult rules without I/O: what a submission must hold, the state machine, the minutes, the SLA."""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime, timedelta

import pytest
from sen_shared.fhir.guarded import Hidden
from sen_teleconsult.domain import consults as rules
from sen_teleconsult.domain.consults import ConsultError
from sen_teleconsult.domain.sla import is_breached, on_duty_lead

ICD10 = rules.ICD10
CLINIC = "Organization/tyt-an-binh"


def sr(**extra):
    return {"resourceType": "ServiceRequest", "priority": "stat", "subject": {"reference": "Patient/p1"},
            "reasonCode": [{"coding": [{"system": ICD10, "code": "I21.9"}]}],
            "note": [{"text": "Xin hội chẩn?"}], "performer": [{"reference": "Organization/hub"}], **extra}


def test_a_good_submission_is_completed_by_the_server():
    sub = rules.check_submission(sr(id="client-id", meta={"versionId": "9"}), clinic=CLINIC, default_hub=None)
    res = sub.service_request
    assert (res["status"], res["intent"], res["requester"]) == ("active", "order", {"reference": CLINIC})
    assert "id" not in res and "meta" not in res
    assert res["category"][0]["coding"][0]["code"] == "11429006"
    assert (sub.patient, sub.hub, sub.priority) == ("Patient/p1", "Organization/hub", "stat")


@pytest.mark.parametrize("extra", [{}, {"performerType": {"coding": [{"system": "http://snomed.info/sct",
                                                                       "code": "394579002"}]}}])
@pytest.mark.parametrize("district", [None, "Huyện Phú Tân"])
def test_the_servers_task_is_valid_fhir_and_tagged_with_its_hub(extra, district):
    """A submission validates the client's ServiceRequest only: the Task is built here, so it is checked here."""
    from sen_shared.fhir.validate import validate_resource

    sub = rules.check_submission(sr(**extra), clinic=CLINIC, default_hub=None)
    task = rules.new_task(sub, "ServiceRequest/s1", requested="2026-12-04T09:00:00+07:00",
                          due="2026-12-04T10:00:00+07:00", district=district)
    rules.stamp_change(rules.tag_hub(task, sub.hub), "Organization/tyt-an-binh", "nv")
    validate_resource(copy.deepcopy({**task, "id": "t1"}), expected_type="Task")  # raises when it is not FHIR
    assert rules.hub_of(task) == "Organization/hub"
    assert rules.hub_of(rules.tag_hub(task, "Organization/hub")) == "Organization/hub"
    assert len(task["meta"]["tag"]) == 1
    assert task["reasonCode"] == sub.service_request["reasonCode"][0]  # R4: one CodeableConcept


def test_the_task_carries_the_first_reason_or_the_clients_own():
    """A list of Tasks shows why each consult was asked without reading its ServiceRequest."""
    first = {"coding": [{"system": ICD10, "code": "I21.9", "display": "Nhồi máu cơ tim cấp"}]}
    second = {"coding": [{"system": ICD10, "code": "I10"}]}
    sub = rules.check_submission(sr(reasonCode=[first, second]), clinic=CLINIC, default_hub=None)
    when = {"requested": "2026-12-04T09:00:00+07:00", "due": "2026-12-04T10:00:00+07:00", "district": None}
    task = rules.new_task(sub, "ServiceRequest/s1", **when)
    assert task["reasonCode"] == first
    task["reasonCode"]["coding"][0]["code"] = "X"  # a copy: the ServiceRequest keeps its own
    assert sub.service_request["reasonCode"][0]["coding"][0]["code"] == "I21.9"
    own = {"text": "Đau ngực"}
    assert rules.new_task(sub, "ServiceRequest/s1", reason=own, **when)["reasonCode"] == own


@pytest.mark.parametrize("change, where", [
    ({"priority": "soon"}, "ServiceRequest.priority"),
    ({"intent": "plan"}, "ServiceRequest.intent"),
    ({"status": "draft"}, "ServiceRequest.status"),
    ({"subject": {"reference": "Group/g1"}}, "ServiceRequest.subject"),
    ({"reasonCode": [{"coding": [{"system": ICD10, "code": "not a code"}]}]},
     "ServiceRequest.reasonCode[0].coding[0].code"),
    ({"reasonCode": [{"coding": [{"system": "http://snomed.info/sct", "code": "22298006"}]}]},
     "ServiceRequest.reasonCode"),
    ({"note": [{"text": "  "}]}, "ServiceRequest.note"),
    ({"performer": []}, "ServiceRequest.performer"),
    ({"supportingInfo": [{"reference": "Patient/p2"}]}, "ServiceRequest.supportingInfo[0]"),
    # the specialty's code goes in teleconsult.consult.requested (at most 64 characters in its schema): a longer
    # one was taken and that event failed its schema in the outbox
    ({"performerType": {"coding": [{"system": "http://snomed.info/sct", "code": "9" * 65}]}},
     "ServiceRequest.performerType.coding[0].code"),
])
def test_a_bad_submission_says_where(change, where):
    with pytest.raises(ConsultError) as err:
        rules.check_submission(sr(**change), clinic=CLINIC, default_hub=None)
    assert err.value.status == 422 and err.value.expression == [where]



def test_a_specialty_code_up_to_64_characters_makes_a_valid_requested_event():
    from sen_shared.bus import make_event

    sub = rules.check_submission(sr(performerType={"coding": [{"system": "http://snomed.info/sct", "code": "9" * 64}]}),
                                 clinic=CLINIC, default_hub=None)
    make_event("teleconsult.consult.requested", {
        "serviceRequest": "ServiceRequest/s", "task": "Task/t", "requester": CLINIC, "priority": "stat",
        "patient": "Patient/p1", "specialty": sub.specialty, "requestedAt": "2026-12-05T10:00:00+07:00",
        "dueAt": "2026-12-05T11:00:00+07:00"}, subject="ServiceRequest/s")

@pytest.mark.parametrize("code", ["I21.99", "E11.65", "Z99.99", "I219", "A00-A09"])
def test_a_reason_of_the_right_shape_that_is_no_icd10_code_is_refused_by_name(code):
    """The list (sen_shared.icd10), not the shape: I21.99 looks like a code, WHO has none; E11.65 is US-only."""
    first = {"coding": [{"system": ICD10, "code": "B02.9"}]}
    bad = {"coding": [{"system": "http://snomed.info/sct", "code": "22298006"}, {"system": ICD10, "code": code}]}
    with pytest.raises(ConsultError) as err:
        rules.check_submission(sr(reasonCode=[first, bad]), clinic=CLINIC, default_hub=None)
    assert err.value.status == 422 and err.value.detail.startswith(f"{code} is not an ICD-10 code")
    assert err.value.expression == ["ServiceRequest.reasonCode[1].coding[1].code"]
    with pytest.raises(ConsultError) as err:
        rules.check_reason(bad, "Task.reasonCode")  # a transaction's own Task
    assert err.value.expression == ["Task.reasonCode.coding[1].code"]


@pytest.mark.parametrize("code", ["B02.9", "I21.9", "B18.00", "A91", "Z99.9", "U07.1"])
def test_every_who_code_is_a_reason(code):
    sub = rules.check_submission(sr(reasonCode=[{"coding": [{"system": ICD10, "code": code}]}]), clinic=CLINIC,
                                 default_hub=None)
    assert sub.service_request["reasonCode"][0]["coding"][0]["code"] == code
    assert rules.check_reason({"coding": [{"system": ICD10, "code": code}]}, "Task.reasonCode")


def test_the_requester_is_the_callers_facility_and_the_default_hub_fills_in():
    with pytest.raises(ConsultError) as err:
        rules.check_submission(sr(requester={"reference": "Organization/other"}), clinic=CLINIC, default_hub=None)
    assert err.value.status == 403
    sub = rules.check_submission(sr(performer=None), clinic=CLINIC, default_hub="bvdk")
    assert sub.hub == "Organization/bvdk"


def test_transitions():
    rules.check_transition("$accept", "requested")
    for op, state in (("$accept", "accepted"), ("$complete", "requested"), ("$cancel", "completed"),
                      ("$provide-info", "accepted"), ("$reject", "accepted")):
        with pytest.raises(ConsultError) as err:
            rules.check_transition(op, state)
        assert err.value.status == 409 and repr(state) in err.value.detail


def minutes():
    p = [{"name": "start", "valueDateTime": "2025-03-14T09:00:00+07:00"},
         {"name": "end", "valueDateTime": "2025-03-14T09:30:00+07:00"},
         {"name": "site", "valueReference": {"reference": "Organization/hub"}},
         {"name": "participant", "part": [{"name": "who", "valueReference": {"reference": "Practitioner/a"}},
                                          {"name": "role", "valueString": "Chủ trì"}]},
         {"name": "history", "valueString": "Đau ngực"}, {"name": "findings-laboratory", "valueString": "Troponin"},
         {"name": "conclusion", "valueCoding": {"system": ICD10, "code": "I21.1"}},
         {"name": "conclusion", "valueCoding": {"system": ICD10, "code": "E11.9"}},
         {"name": "recommendations", "valueString": "Chuyển tuyến"},
         {"name": "chair", "valueReference": {"reference": "Practitioner/a"}}]
    return {"resourceType": "Parameters", "parameter": p}


def test_minutes_are_parsed_and_become_the_event_and_the_outputs():
    m = rules.parse_minutes(minutes())
    ev = rules.minutes_event(m)
    assert ev["conclusion"]["code"] == "I21.1" and [d["code"] for d in ev["diagnoses"]] == ["I21.1", "E11.9"]
    assert ev["findings"] == "Cận lâm sàng: Troponin" and ev["participants"][0]["role"] == "Chủ trì"
    assert [o["type"]["coding"][0]["code"] for o in rules.minutes_outputs(m)] == ["conclusion", "recommendations",
                                                                                 "minutes"]
    # each named as the minutes form names the part (the advice was "Hướng xử trí")
    assert [o["type"]["text"] for o in rules.minutes_outputs(m)] == ["Kết luận", "Hướng điều trị đề xuất",
                                                                     "Biên bản hội chẩn từ xa"]


def _with_participant(role, display=None):
    body = minutes()
    who = {"reference": "Practitioner/b", **({"display": display} if display is not None else {})}
    body["parameter"].append({"name": "participant", "part": [{"name": "who", "valueReference": who},
                                                              {"name": "role", "valueString": role}]})
    return body


def test_a_participants_role_is_kept_whole_up_to_its_limit_and_refused_beyond_never_cut():
    """The portal sends the participants list as the chair's role: a long one is kept as written (it was
    cut at 200 characters, silently); beyond the stated limit it is 422 saying the limit and where."""
    limit = rules.PARTICIPANT_ROLE_MAX_CHARS
    assert limit >= 2000  # the portal's participants box holds 2000 characters
    long_role = ("Bác sĩ chuyên khoa II Nội tim mạch, Trưởng khoa; " * 60)[:limit]
    m = rules.parse_minutes(_with_participant(" " + long_role + " "))
    assert m.participants[1]["role"] == long_role.strip() and len(long_role) == limit
    assert rules.minutes_event(m)["participants"][1]["role"] == long_role.strip()
    with pytest.raises(ConsultError) as err:
        rules.parse_minutes(_with_participant("x" * (limit + 1)))
    assert err.value.status == 422
    assert f"at most {limit} characters" in err.value.detail and f"has {limit + 1}" in err.value.detail
    assert err.value.expression == ["Parameters.parameter.where(name='participant')[1].part.where(name='role')"]


def test_a_participants_name_over_its_limit_is_refused_not_cut():
    name = "BS. " + "Nguyễn Văn An " * 20
    assert rules.parse_minutes(_with_participant("Tham dự", name[:200])).participants[1]["display"] == name[:200]
    with pytest.raises(ConsultError) as err:
        rules.parse_minutes(_with_participant("Tham dự", name[:201]))
    assert err.value.status == 422 and "at most 200 characters" in err.value.detail


def _completed_event(m) -> dict:
    """teleconsult.consult.completed of minutes ``m``, checked against its schema (as the relay's publisher
    checks it before it leaves: an event that fails stays in the outbox, never reaching billing or the EHR)."""
    from sen_shared.bus import make_event

    data = {"serviceRequest": "ServiceRequest/sr1", "task": "Task/t1", "patient": "Patient/p1",
            "requester": "Organization/tyt", "performer": "Practitioner/a", "period": {"start": m.start, "end": m.end},
            "minutes": rules.minutes_event(m), "completedAt": m.end, "priority": "stat", "requestedAt": m.start}
    return make_event("teleconsult.consult.completed", data, subject="ServiceRequest/sr1")


def _minutes_with(name, value):
    body = minutes()
    body["parameter"] = [p for p in body["parameter"] if p["name"] != name] + [{"name": name, **v} for v in value]
    return body


_SITE, _CODE = "Organization/hub", "I21.1"
_AT_LIMIT_OR_OVER = [
    ("site", lambda n: [{"valueReference": {"reference": _SITE, "display": "T" * n}}], 200, "site"),
    ("conclusion", lambda n: [{"valueCoding": {"system": ICD10, "code": _CODE, "display": "c" * n}}], 500,
     "conclusion"),
    # the findings as the event writes them, one text with each part's label ("Lâm sàng: ...")
    ("findings-laboratory", lambda n: [{"valueString": "f" * (n - len("Cận lâm sàng: "))}], 20000,
     "findings-clinical"),
]


@pytest.mark.parametrize(("name", "value", "limit", "where"), _AT_LIMIT_OR_OVER, ids=lambda v: str(v)[:20])
def test_minutes_taken_make_a_completed_event_its_schema_takes_and_over_its_limits_are_refused(name, value, limit,
                                                                                             where):
    """A site's name over 200 characters, a conclusion's display over 500, or findings over 20000 as the event
    writes them were taken (200) and their event failed its schema in the outbox: the consult completed, never
    charged nor recorded in the EHR. Up to each limit the event is valid; over it, 422 saying the limit."""
    m = rules.parse_minutes(_minutes_with(name, value(limit)))
    assert _completed_event(m)["data"]["minutes"]
    with pytest.raises(ConsultError) as err:
        rules.parse_minutes(_minutes_with(name, value(limit + 1)))
    assert err.value.status == 422 and f"at most {limit} characters" in err.value.detail, err.value.detail
    assert err.value.expression[0].startswith(f"Parameters.parameter.where(name='{where}')"), err.value.expression


def test_the_three_findings_at_their_own_limit_are_refused_together():
    body = minutes()
    body["parameter"] += [{"name": f"findings-{k}", "valueString": "f" * 10000} for k in ("clinical", "imaging")]
    with pytest.raises(ConsultError) as err:
        rules.parse_minutes(body)
    assert err.value.status == 422 and "at most 20000 characters" in err.value.detail


def test_a_step_on_another_version_than_the_callers_if_match_is_412_naming_the_holder():
    rules.check_version("$accept", "t1", None, 5, "requested", "Practitioner/a")  # no If-Match: any version
    rules.check_version("$accept", "t1", 5, 5, "requested", "Practitioner/a")
    for seen in (4, -1):
        with pytest.raises(ConsultError) as err:
            rules.check_version("$accept", "t1", seen, 5, "accepted", "Practitioner/b")
        assert err.value.status == 412
        assert "version 5 now" in err.value.detail and "Practitioner/b" in err.value.detail
        assert "'accepted'" in err.value.detail


def test_the_written_conclusion_is_the_conclusion_outputs_text_not_advice():
    """``conclusion-text`` (optional) is the conclusion output's text and the minutes' ``conclusionText``;
    the recommendations output stays the advice alone. Without it, the outputs are as before."""
    body = minutes()
    body["parameter"].append({"name": "conclusion-text", "valueString": " Nhồi máu cơ tim cấp thành dưới. "})
    m = rules.parse_minutes(body)
    outputs = {o["type"]["coding"][0]["code"]: o for o in rules.minutes_outputs(m)}
    assert outputs["conclusion"]["valueCodeableConcept"]["text"] == "Nhồi máu cơ tim cấp thành dưới."
    assert [c["code"] for c in outputs["conclusion"]["valueCodeableConcept"]["coding"]] == ["I21.1", "E11.9"]
    assert outputs["recommendations"]["valueString"] == "Chuyển tuyến"
    assert m.as_json()["conclusionText"] == "Nhồi máu cơ tim cấp thành dưới."
    # the event carries it as its own field; the recommendations are the advice alone
    assert rules.minutes_event(m)["conclusionText"] == "Nhồi máu cơ tim cấp thành dưới."
    assert rules.minutes_event(m)["recommendations"] == "Chuyển tuyến"
    old = rules.parse_minutes(minutes())
    outputs = {o["type"]["coding"][0]["code"]: o for o in rules.minutes_outputs(old)}
    assert "text" not in outputs["conclusion"]["valueCodeableConcept"] and "conclusionText" not in old.as_json()
    assert rules.minutes_event(old)["recommendations"] == "Chuyển tuyến"
    assert "conclusionText" not in rules.minutes_event(old)
    body["parameter"][-1] = {"name": "conclusion-text", "valueString": "  "}
    with pytest.raises(ConsultError):
        rules.parse_minutes(body)


@pytest.mark.parametrize("drop", ["start", "site", "participant", "history", "findings-laboratory", "conclusion",
                                  "recommendations", "chair"])
def test_minutes_missing_a_required_part_are_refused(drop):
    body = copy.deepcopy(minutes())
    body["parameter"] = [p for p in body["parameter"] if p["name"] != drop]
    with pytest.raises(ConsultError) as err:
        rules.parse_minutes(body)
    assert err.value.status == 422


def test_minutes_ending_before_they_start_are_refused():
    body = minutes()
    body["parameter"][1]["valueDateTime"] = "2025-03-14T08:00:00+07:00"
    with pytest.raises(ConsultError):
        rules.parse_minutes(body)


def test_sla():
    now = datetime(2025, 3, 14, tzinfo=UTC)
    due = rules.due_time(now, "asap", {"asap": 4})
    assert due == now + timedelta(hours=4)
    assert not is_breached("requested", due, due) and is_breached("requested", due, due + timedelta(seconds=1))
    assert not is_breached("completed", due, due + timedelta(days=1))
    assert on_duty_lead("Organization/hub", {"hub": "Practitioner/l"}) == "Practitioner/l"
    assert on_duty_lead("Organization/x", {"*": "Practitioner/d"}) == "Practitioner/d"
    assert on_duty_lead("Organization/x", {}) is None


@pytest.mark.parametrize("name, bad", [
    ("start", {"valueDateTime": "2025-13-45T99:99:00+07:00"}),
    ("start", {"valueDateTime": "2025-03-14T09:00:00"}),  # no offset
    # the calendar's edge: no instant in UTC or Vietnam (taken, the portal's pages of the minutes were a 500)
    ("start", {"valueDateTime": "0001-01-01T00:00:00+07:00"}),
    ("end", {"valueDateTime": "9999-12-31T23:59:59-14:00"}),
    ("start", {"valueDateTime": "1899-12-31T23:59:59Z"}),
    ("end", {"valueDateTime": "3000-01-01T12:00:00+07:00"}),
    ("site", {"valueReference": "Organization/hub"}),  # a string, not a Reference
    ("chair", {"valueReference": {"reference": "Organization/hub"}}),
    ("conclusion", {"valueCoding": {"system": ICD10, "code": "i21"}}),
    ("conclusion", {"valueCoding": {"system": ICD10, "code": "E11.65"}}),  # ICD-10-CM, not WHO
    ("conclusion", {"valueCoding": {"system": ICD10, "code": "I21.99"}}),  # the right shape, no such code
    ("participant", {"part": [{"name": "who", "valueReference": {"reference": "Practitioner/a"}}]}),
    ("participant", {"part": [{"name": ["who"], "valueReference": {"reference": "Practitioner/a"}},  # fuzz
                              {"name": "role", "valueString": "chủ trì"}]}),
    # parts that are no list (the session 21 fuzz round: iterating them was a 500)
    ("participant", {"part": 5}),
    ("participant", {"part": True}),
    ("participant", {"part": 1e300}),
    # a reference with a final new line ('$' matched before it): taken as the chair and the site
    ("chair", {"valueReference": {"reference": "Practitioner/a\n"}}),
    ("site", {"valueReference": {"reference": "Organization/hub\n"}}),
])
def test_malformed_minutes_are_422_not_a_crash(name, bad):
    body = minutes()
    body["parameter"] = [p for p in body["parameter"] if p["name"] != name] + [{"name": name, **bad}]
    with pytest.raises(ConsultError) as err:
        rules.parse_minutes(body)
    assert err.value.status == 422


def test_references_are_objects():
    assert rules.ref_of({"reference": "Patient/p1"}) == "Patient/p1"
    assert rules.ref_of("Patient/p1") is None
    assert rules.ref_of({"reference": "http://elsewhere/Patient/p1"}) is None
    assert rules.ref_of({"reference": "Patient/p1\n"}) is None  # a final new line: the session 21 fuzz round
    with pytest.raises(ConsultError):
        rules.check_submission(sr(subject="Patient/p1"), clinic=CLINIC, default_hub=None)


def test_the_consult_names_its_patient_as_the_ehr_does():
    """The EHR's name (read at submission) is the display of the ServiceRequest's subject and of the
    Task's ``for``: the completed consult's event names the patient from the Task, not from the EHR."""
    from sen_shared.fhir.validate import validate_resource

    sent = sr(subject={"reference": "Patient/p1", "display": "typed by the clinic"})
    sub = rules.named(rules.check_submission(sent, clinic=CLINIC, default_hub=None), "Nguyễn Văn An")
    assert sub.service_request["subject"] == {"reference": "Patient/p1", "display": "Nguyễn Văn An"}
    assert sent["subject"]["display"] == "typed by the clinic"  # the client's body is not changed
    task = rules.new_task(sub, "ServiceRequest/s1", requested="2026-12-04T09:00:00+07:00",
                          due="2026-12-04T10:00:00+07:00", district=None)
    assert task["for"] == {"reference": "Patient/p1", "display": "Nguyễn Văn An"}
    validate_resource({**task, "id": "t1"}, expected_type="Task")
    # a Patient the EHR holds no name for: no display, not the client's
    unnamed = rules.named(rules.check_submission(sent, clinic=CLINIC, default_hub=None), "")
    assert unnamed.service_request["subject"] == {"reference": "Patient/p1"}
    assert rules.new_task(unnamed, "ServiceRequest/s1", requested="2026-12-04T09:00:00+07:00",
                          due="2026-12-04T10:00:00+07:00", district=None)["for"] == {"reference": "Patient/p1"}


def _who(role, facility=None, practitioner=None):
    from types import SimpleNamespace

    return SimpleNamespace(roles=frozenset({role}), facility=facility, practitioner=practitioner)


def test_a_message_is_written_for_one_side_of_the_consult_only():
    facts = {"hub": "Organization/hub", "requester": CLINIC, "task": "Task/t-1"}
    assert rules.message_side(_who("doctor", "hub", "dr-1"), facts) == "hub"
    assert rules.message_side(_who("clinic", "tyt-an-binh"), facts) == "clinic"
    assert rules.message_side(_who("clinic", "tyt-an-binh", "ys-1"), facts) == "clinic"
    for who, says in ((_who("doctor", "hub"), "no practitioner"), (_who("admin"), "requesting clinic's staff")):
        with pytest.raises(ConsultError) as err:
            rules.message_side(who, facts)
        assert err.value.status == 403 and says in str(err.value.detail)
    # another facility's consult (another hub's) is answered as a Task not stored; the refusal says why
    for who in (_who("doctor", "other", "dr-x"), _who("clinic", "tyt-khac"), _who("clinic", "hub")):
        with pytest.raises(Hidden) as hidden:
            rules.message_side(who, facts)
        assert "another facility" in str(hidden.value)
        assert (hidden.value.answer.status, hidden.value.answer.detail) == (404, "Task/t-1 is not known")


def test_a_role_that_takes_no_step_is_refused_whatever_the_task():
    rules.check_role("$accept", _who("doctor", "hub", "dr-1"))
    rules.check_role("$cancel", _who("clinic", "tyt-an-binh"))
    rules.check_role("$escalate", _who("service"), system=True)
    for op, who in (("$accept", _who("clinic", "tyt-an-binh")), ("$cancel", _who("doctor", "hub", "dr-1")),
                    ("$escalate", _who("doctor", "hub", "dr-1")), ("$accept", _who("cashier", "hub"))):
        with pytest.raises(ConsultError) as err:
            rules.check_role(op, who)
        assert err.value.status == 403, op
    with pytest.raises(ConsultError):
        rules.check_message_role(_who("cashier", "hub"))


def test_messages_are_taken_until_the_consult_is_refused_or_withdrawn():
    for state in ("requested", "accepted", "on-hold", "in-progress", "completed"):
        rules.check_message(state)
    for state in ("rejected", "cancelled"):
        with pytest.raises(ConsultError) as err:
            rules.check_message(state)
        assert err.value.status == 409 and f"'{state}'" in str(err.value.detail)
    assert [c["code"] for c in rules.thread_category("message")[0]["coding"]] == ["message"]


def _with_secretary(secretary, role="Chủ trì; BS. Trần Thị Bích — thư ký; YS. Võ Minh Tâm — cơ sở gửi", **chair):
    """Minutes as the portal sends them (the other participants as entries of the chair's role), with
    ``secretary`` (a valueReference; None: not given)."""
    body = minutes()
    for p in body["parameter"]:
        if p["name"] == "participant":
            p["part"] = [{"name": "who", "valueReference": {"reference": "Practitioner/a",
                                                            "display": "BS.CKII Nguyễn Văn An", **chair}},
                         {"name": "role", "valueString": role}]
    if secretary is not None:
        body["parameter"].append({"name": "secretary", "valueReference": secretary})
    return body


def test_the_secretary_is_a_participant_by_name_or_reference_and_goes_to_the_event():
    """Circular 49/2017/TT-BYT's minutes are signed by the chair and the secretary: ``secretary`` names one of
    the participants, by name whatever title (an entry of a role, a who's display) or by their Practitioner."""
    m = rules.parse_minutes(_with_secretary({"display": "  BS. Trần   Thị Bích "}))
    assert m.secretary == {"display": "BS. Trần Thị Bích"}
    event = _completed_event(m)  # its schema takes it
    assert event["data"]["minutes"]["secretary"] == {"display": "BS. Trần Thị Bích"}
    assert json.loads(base64.b64decode(rules.minutes_outputs(m)[2]["valueAttachment"]["data"]))["secretary"] == \
        {"display": "BS. Trần Thị Bích"}
    # another title; a participant of their own, by name or by reference
    assert rules.parse_minutes(_with_secretary({"display": "ThS.BS. Trần Thị Bích"})).secretary["display"] == \
        "ThS.BS. Trần Thị Bích"
    body = _with_participant("thư ký", "ĐD. Lê Thị Hoa")
    body["parameter"].append({"name": "secretary", "valueReference": {"reference": "Practitioner/b",
                                                                      "display": "Lê Thị Hoa"}})
    m = rules.parse_minutes(body)
    assert _completed_event(m)["data"]["minutes"]["secretary"] == {"display": "Lê Thị Hoa",
                                                                   "reference": "Practitioner/b"}


def test_minutes_without_a_secretary_are_taken_as_before():
    m = rules.parse_minutes(_with_secretary(None))
    assert m.secretary is None and "secretary" not in _completed_event(m)["data"]["minutes"]
    assert "secretary" not in m.as_json()


@pytest.mark.parametrize(("secretary", "said"), [
    ({"display": "BS. Phạm Văn Tư"}, "is not among the participants"),
    ({"display": "Trần Thị"}, "is not among the participants"),  # a name's first words are not the name
    ({"display": ""}, "needs the secretary's name"),
    ({"display": "   "}, "needs the secretary's name"),
    ({"display": "BS."}, "needs the secretary's name"),  # a title alone names no one
    ({"reference": "Practitioner/b"}, "needs the secretary's name"),
    ({}, "needs the secretary's name"),
    ({"display": "B" * 201}, "at most 200 characters"),
    ({"display": "BS. Nguyễn Văn An"}, "is the chair"),  # the chair under another title
    ({"display": "Trần Thị Bích", "reference": "Practitioner/a"}, "is the chair"),
    ({"display": "Trần Thị Bích", "reference": "Organization/hub"}, "a valueReference to a Practitioner"),
    ("BS. Trần Thị Bích", "needs the secretary's name"),  # no valueReference
], ids=lambda v: str(v)[:30])
def test_a_secretary_not_among_the_participants_or_unnamed_is_422_naming_the_parameter(secretary, said):
    with pytest.raises(ConsultError) as err:
        rules.parse_minutes(_with_secretary(secretary))
    assert err.value.status == 422 and said in err.value.detail, err.value.detail
    assert err.value.expression == ["Parameters.parameter.where(name='secretary')"]
    assert "'secretary'" in err.value.detail or "secretary (" in err.value.detail or "secretary's" in err.value.detail


def test_the_chairs_own_role_is_no_participant_and_a_secretary_is_given_once():
    with pytest.raises(ConsultError) as err:  # "Chủ trì", the first entry of the chair's role, names no one
        rules.parse_minutes(_with_secretary({"display": "Chủ trì"}))
    assert "not among the participants" in err.value.detail
    body = _with_secretary({"display": "BS. Trần Thị Bích"})
    body["parameter"].append({"name": "secretary", "valueReference": {"display": "YS. Võ Minh Tâm"}})
    with pytest.raises(ConsultError) as err:
        rules.parse_minutes(body)
    assert err.value.status == 422 and "given once" in err.value.detail
