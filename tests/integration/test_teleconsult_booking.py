"""Booking on the teleconsult service (IHE ITI Scheduling), on the real FerretDB: slots from a
specialist's availability, $find/$hold/$book/$cancel/$reschedule, a slot never held or booked
twice under concurrency, expiry, the video room and the reminders."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta

import httpx
import jwt
import pytest
from sen_shared.bus import load_catalog
from sen_shared.fhir.body import unpack
from sen_teleconsult.domain import availability as av
from sen_teleconsult.domain import reminders as rem
from sen_teleconsult.domain import scheduling as sch
from sen_teleconsult.domain.video import VideoConfig, create_room

from tests.hiding_support import answered_as_missing
from tests.support import admin_headers, app_client, wait_for, web_process

pytestmark = pytest.mark.integration

ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAY = (datetime.now(av.TZ) + timedelta(days=3)).date()


def _schedule(sid: str, practitioner: str, *, specialty: str = "394579002", org: str = "Organization/hub",
              **kw):
    return av.schedule_resource(sid, practitioner=practitioner, organization=org, specialty_code=specialty,
                                specialty_text="Tim mạch",
                                windows=kw.pop("windows", [(ALL_DAYS, "07:00:00", "11:30:00"),
                                                           (ALL_DAYS, "13:30:00", "17:00:00")]), **kw)


def _env(base_env, **extra):
    return {**base_env, "SEN_TELECONSULT_HOLIDAYS": "", "SEN_JITSI_APP_SECRET": "s3cret-for-tests-0123456789abcdef",
            "SEN_JITSI_BASE_URL": "https://meet.benhvien.example", **extra}


def _refused(c, H, rid, op, why):
    """The AuditEvent of ``op`` on ``Appointment/rid`` refused (and answered as a missing one): 403 and why."""
    trail = c.get(f"/fhir/AuditEvent?entity=Appointment/{rid}&_count=200", headers=H).json()
    refusals = [e["resource"] for e in trail.get("entry", [])
                if e["resource"].get("outcomeDesc", "").startswith("403")
                and any(s.get("code") == op for s in e["resource"]["subtype"])]
    assert refusals and why in refusals[-1]["outcomeDesc"], trail


def _params(*pairs):
    out = []
    for name, value in pairs:
        if isinstance(value, dict) and "resourceType" in value:
            out.append({"name": name, "resource": value})
        elif isinstance(value, dict):
            out.append({"name": name, "valueReference": value})
        elif isinstance(value, int):
            out.append({"name": name, "valueInteger": value})
        else:
            out.append({"name": name, "valueString": value})
    return json.dumps({"resourceType": "Parameters", "parameter": out})


def _local(d: date, hhmm: str) -> str:
    return f"{d.isoformat()}T{hhmm}:00+07:00"


def _others_reminders_gone(db, appt: str) -> None:
    """Only ``appt``'s reminders are left to send (they are kept beside the slot links, marked)."""
    db[sch.SLOT_LINKS].delete_many({rem.REMINDER_MARK: 1, "ap": {"$ne": appt}})


@pytest.fixture(scope="module")
def tc(base_env, run_id, mongo_client, dev_key):
    db = f"sen_t{run_id}_tc_booking"
    with app_client("teleconsult", _env(base_env, SEN_TELECONSULT_HOLD_MINUTES="0.1"), db, mongo_client) as (c, app):
        h = admin_headers(dev_key)
        for sid, prac in (("sched-an", "Practitioner/bs-an"), ("sched-bich", "Practitioner/bs-bich")):
            body = _schedule(sid, prac, specialty="394579002" if sid == "sched-an" else "394583002",
                             breaks=[("09:00:00", "09:30:00")])
            r = c.put(f"/fhir/Schedule/{sid}", content=json.dumps(body), headers=h)
            assert r.status_code in (200, 201), r.text
        c.db = mongo_client[db]
        yield c


@pytest.fixture(scope="module")
def H(dev_key):
    return admin_headers(dev_key)


def _find(c, H, start, end, *extra):
    r = c.post("/fhir/Appointment/$find", content=_params(("start", start), ("end", end), *extra), headers=H)
    assert r.status_code == 200, r.text
    assert r.json()["type"] == "searchset"
    return [e["resource"] for e in r.json().get("entry", [])]


def _with_patient(proposal, patient="Patient/bn-0001", sr=None):
    p = json.loads(json.dumps(proposal))
    p["participant"].insert(0, {"actor": {"reference": patient}, "status": "needs-action"})
    if sr:
        p["basedOn"] = [{"reference": sr}]
    return p


# ------------------------------------------------------------------------- availability rules

def test_slots_follow_the_weekly_availability_breaks_leave_and_holidays():
    sched = _schedule("s1", "Practitioner/x", windows=[(["mon", "wed"], "08:00:00", "11:00:00"),
                                                      (["mon"], "13:30:00", "15:00:00")],
                      slot_minutes=30, breaks=[("09:30:00", "10:00:00")],
                      not_available=[("2026-12-09T00:00:00+07:00", "2026-12-10T00:00:00+07:00", "Nghỉ phép")])
    a = av.from_schedule(sched)
    monday = date(2026, 12, 7)
    starts = [s.start.strftime("%H:%M") for s in av.day_slots(a, monday)]
    assert starts == ["08:00", "08:30", "09:00", "10:00", "10:30", "13:30", "14:00", "14:30"]
    assert av.day_slots(a, date(2026, 12, 8)) == ()  # Tuesday: no window
    assert av.day_slots(a, date(2026, 12, 9)) == ()  # Wednesday: on leave
    assert av.day_slots(a, monday, frozenset({monday})) == ()  # a public holiday
    s = av.day_slots(a, monday)[0]
    assert s.id == "s1-202612070800" and s.start.utcoffset() == timedelta(hours=7)
    assert av.slot_of(a, "s1-202612070930") is None  # in the break
    assert av.parse_holidays("2026-09-02, 2026-01-01") == {date(2026, 9, 2), date(2026, 1, 1)}
    with pytest.raises(av.AvailabilityError):
        av.from_schedule({**sched, "extension": [e for e in sched["extension"] if e["url"] != av.EXT_SLOT_MINUTES]})


def test_find_proposes_free_slots_filtered_by_specialty_practitioner_and_organization(tc, H):
    found = _find(tc, H, _local(DAY, "00:00"), _local(DAY + timedelta(days=1), "00:00"), ("_count", 500))
    assert {a["participant"][0]["actor"]["reference"] for a in found} == {"Practitioner/bs-an",
                                                                          "Practitioner/bs-bich"}
    assert all(a["status"] == "proposed" for a in found)
    assert [a["start"] for a in found] == sorted(a["start"] for a in found)
    assert not any(a["start"].startswith(f"{DAY}T09:00") for a in found)  # the break
    cardio = _find(tc, H, _local(DAY, "00:00"), _local(DAY, "23:00"), ("specialty", "394579002"), ("_count", 3))
    assert len(cardio) == 3 and {a["slot"][0]["reference"][5:13] for a in cardio} == {"sched-an"}
    bich = _find(tc, H, _local(DAY, "00:00"), _local(DAY, "23:00"),
                 ("practitioner", {"reference": "Practitioner/bs-bich"}), ("_count", 1))
    assert bich[0]["slot"][0]["reference"].startswith("Slot/sched-bich-")
    assert _find(tc, H, _local(DAY, "00:00"), _local(DAY, "23:00"),
                 ("organization", {"reference": "Organization/nowhere"})) == []
    # the query form
    r = tc.get(f"/fhir/Appointment/$find?start={DAY}&end={DAY + timedelta(days=1)}&specialty=394583002&_count=2",
               headers=H)
    assert r.status_code == 200 and len(r.json()["entry"]) == 2


@pytest.mark.parametrize("body,where", [
    (_params(("end", "2026-12-08")), "start"),
    (_params(("start", "yesterday"), ("end", "2026-12-08")), "start"),
    (_params(("start", "2026-12-08"), ("end", "2026-12-07")), "end"),
    (_params(("start", "2026-12-08"), ("end", "2026-12-09"), ("_count", 0)), "_count"),
    (json.dumps({"resourceType": "Patient"}), "resourceType"),
])
def test_find_refuses_bad_parameters_with_an_operation_outcome(tc, H, body, where):
    r = tc.post("/fhir/Appointment/$find", content=body, headers=H)
    assert r.status_code == 400, r.text
    assert r.json()["resourceType"] == "OperationOutcome"


def test_hold_then_book_then_cancel_and_the_slot_status_follows(tc, H):
    prop = _find(tc, H, _local(DAY, "10:00"), _local(DAY, "11:00"), ("specialty", "394579002"))[0]
    slot = prop["slot"][0]["reference"]
    assert tc.get(f"/fhir/{slot}", headers=H).json()["status"] == "free"
    r = tc.post("/fhir/Appointment/$hold", content=_params(("appointment-resource", _with_patient(prop))), headers=H)
    assert r.status_code == 200, r.text
    held = r.json()["entry"][0]["resource"]
    assert held["status"] == "pending" and held["slot"][0]["reference"] == slot
    assert tc.get(f"/fhir/{slot}", headers=H).json()["status"] == "busy-tentative"
    # a second hold of the same slot: 409
    r = tc.post("/fhir/Appointment/$hold", content=_params(("appointment-resource", prop)), headers=H)
    assert r.status_code == 409 and r.json()["resourceType"] == "OperationOutcome"
    r = tc.post("/fhir/Appointment/$book",
                content=_params(("appointment-reference", {"reference": f"Appointment/{held['id']}"})), headers=H)
    assert r.status_code == 200, r.text
    booked = r.json()["entry"][0]["resource"]
    assert booked["id"] == held["id"] and booked["status"] == "booked"
    assert tc.get(f"/fhir/{slot}", headers=H).json()["status"] == "busy"
    assert tc.get(f"/fhir/Appointment/{held['id']}", headers=H).json()["status"] == "booked"
    again = _find(tc, H, _local(DAY, "10:00"), _local(DAY, "11:00"), ("specialty", "394579002"))
    assert again[0]["slot"] != prop["slot"]
    r = tc.post(f"/fhir/Appointment/{held['id']}/$cancel", content=_params(("reason", "bệnh nhân xin dời")), headers=H)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert tc.get(f"/fhir/{slot}", headers=H).json()["status"] == "free"
    # a cancelled booking frees the slot: booked again by someone else
    r = tc.post("/fhir/Appointment/$book", content=_params(("appointment-resource", prop)), headers=H)
    assert r.status_code == 200, r.text
    hist = tc.get(f"/fhir/Appointment/{held['id']}/_history", headers=H).json()
    assert [e["resource"]["status"] for e in hist["entry"]] == ["cancelled", "booked", "pending"]
    # cancelling twice is the same answer; confirming a cancelled one is 409 with its state
    assert tc.post(f"/fhir/Appointment/{held['id']}/$cancel", content=_params(), headers=H).status_code == 200
    r = tc.post("/fhir/Appointment/$book",
                content=_params(("appointment-reference", {"reference": f"Appointment/{held['id']}"})), headers=H)
    assert r.status_code == 409 and "cancelled" in r.json()["issue"][0]["diagnostics"]
    # slots are computed: not written through the generic interactions
    assert tc.put(f"/fhir/{slot}", content=json.dumps({"resourceType": "Slot"}), headers=H).status_code == 405


def test_slot_search_reports_status(tc, H):
    r = tc.get(f"/fhir/Slot?schedule=sched-bich&start=ge{DAY}T07:00:00%2B07:00&start=lt{DAY}T08:00:00%2B07:00",
               headers=H)
    assert r.status_code == 200, r.text
    slots = [e["resource"] for e in r.json()["entry"]]
    assert [s["id"] for s in slots] == [f"sched-bich-{DAY:%Y%m%d}0700", f"sched-bich-{DAY:%Y%m%d}0730"]
    prop = _find(tc, H, _local(DAY, "07:00"), _local(DAY, "07:30"), ("specialty", "394583002"))[0]
    r = tc.post("/fhir/Appointment/$book", content=_params(("appointment-resource", prop)), headers=H)
    assert r.status_code == 200
    r = tc.get(f"/fhir/Slot?schedule=sched-bich&start=ge{DAY}T07:00:00%2B07:00&start=lt{DAY}T08:00:00%2B07:00"
               "&status=busy", headers=H)
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [f"sched-bich-{DAY:%Y%m%d}0700"]
    assert tc.get("/fhir/Slot?practitioner=x", headers=H).status_code == 400
    assert tc.get("/fhir/Slot/sched-bich-209912310700", headers=H).status_code == 404
    # dates at the calendar's ends are a 400 naming start, never a 500 (found by tools/fuzz)
    for start in ("9999-12-31", "9999-12-30", "gt9999-12-31T23:59:59.999Z", "0001-01-01", "lt0001-01-02"):
        r = tc.get(f"/fhir/Slot?start={start}", headers=H)
        assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["start"], (start, r.text)


def test_a_stale_view_never_wins_a_taken_slot(tc, H):
    """$book claims without reading first when its process's link view says the slot is free; a
    claim made elsewhere meanwhile (not yet in the view) makes that insert lose, and the answer is 409."""
    from sen_shared.claims import advance

    day = DAY + timedelta(days=2)
    prop = _find(tc, H, _local(day, "10:00"), _local(day, "11:00"), ("specialty", "394579002"))[0]  # view warm
    sid = prop["slot"][0]["reference"][5:]
    av_ = sch.availability_of(tc.db, "sched-an")
    slotted = sch.Slotted(av_, av.slot_of(av_, sid))
    assert sch._view_guess(tc.db, slotted, sch.utcnow()) is None  # free, as this process sees it
    # another process books it (straight into the chain: this process's view does not know)
    advance(tc.db[sch.SLOT_LINKS], sid, None, {"st": "booked", "ap": "elsewhere", "sc": "sched-an"})
    r = tc.post("/fhir/Appointment/$book", content=_params(("appointment-resource", prop)), headers=H)
    assert r.status_code == 409, r.text
    r = tc.post("/fhir/Appointment/$hold", content=_params(("appointment-resource", prop)), headers=H)
    assert r.status_code == 409, r.text
    assert [x["ap"] for x in tc.db[sch.SLOT_LINKS].find({"k": sid})] == ["elsewhere"]
    # the lost insert showed this process the winner's link: the next loser answers from the view
    assert sch._view_guess(tc.db, slotted, sch.utcnow()) is sch._UNKNOWN
    # released elsewhere too: once the view has read the release (within LinkView.REFRESH_SECONDS;
    # until then a booking answers 409 as if it came first, changing nothing), the booking is link 3
    first = tc.db[sch.SLOT_LINKS].find_one({"k": sid})
    advance(tc.db[sch.SLOT_LINKS], sid, first, {"st": "free", "ap": "elsewhere", "sc": "sched-an",
                                                "tb": sch.time_bucket(sch.utcnow())})
    answers = []

    def books() -> bool:
        answers.append(tc.post("/fhir/Appointment/$book", content=_params(("appointment-resource", prop)),
                               headers=H).status_code)
        return answers[-1] != 409

    wait_for(books, timeout=30)
    assert answers[-1] == 200 and set(answers[:-1]) <= {409}, answers
    assert sorted(x["n"] for x in tc.db[sch.SLOT_LINKS].find({"k": sid})) == [1, 2, 3]


def until_holds_expire(db, *slots: str) -> None:
    """Wait until the holds of ``slots`` have expired: until the latest expiry their open holds record (what the
    claims and the sweeper compare the clock with), and 50 ms more; not a fixed 6.5 s from after the holds."""
    exps = [h["exp"] for h in db[sch.OPEN_HOLDS].find({"k": {"$in": list(slots)}})]
    assert exps, f"no open hold on {slots}"
    last = max(e if e.tzinfo else e.replace(tzinfo=UTC) for e in exps)
    time.sleep(max(0.0, (last - datetime.now(UTC)).total_seconds()) + 0.05)  # just past it (waiting, not measuring)


def test_an_expired_hold_frees_its_slot_for_the_next_claimer_and_the_sweeper(tc, H):
    props = _find(tc, H, _local(DAY, "14:00"), _local(DAY, "15:00"), ("specialty", "394579002"))
    a, b = props[0], props[1]
    first = tc.post("/fhir/Appointment/$hold", content=_params(("appointment-resource", a)), headers=H).json()
    swept = tc.post("/fhir/Appointment/$hold", content=_params(("appointment-resource", b)), headers=H).json()
    until_holds_expire(tc.db, a["slot"][0]["reference"][5:], b["slot"][0]["reference"][5:])  # 0.1 min (6 s) here
    slot_a = a["slot"][0]["reference"]
    assert tc.get(f"/fhir/{slot_a}", headers=H).json()["status"] == "free"
    # the next claimer takes the expired hold's slot; the expired appointment is cancelled
    r = tc.post("/fhir/Appointment/$book", content=_params(("appointment-resource", a)), headers=H)
    assert r.status_code == 200, r.text
    old = first["entry"][0]["resource"]["id"]
    assert tc.get(f"/fhir/Appointment/{old}", headers=H).json()["status"] == "cancelled"
    r = tc.post("/fhir/Appointment/$book",
                content=_params(("appointment-reference", {"reference": f"Appointment/{old}"})), headers=H)
    assert r.status_code == 409
    # the sweeper releases the other one
    assert sch.sweep_expired(tc.db) >= 1
    other = swept["entry"][0]["resource"]["id"]
    assert tc.get(f"/fhir/Appointment/{other}", headers=H).json()["status"] == "cancelled"
    links = list(tc.db[sch.SLOT_LINKS].find({"k": b["slot"][0]["reference"][5:]}))
    assert [x["st"] for x in sorted(links, key=lambda x: x["n"])][-2:] == ["held", "free"]
    assert tc.db[sch.OPEN_HOLDS].count_documents({"k": b["slot"][0]["reference"][5:]}) == 0


def test_a_slot_that_is_no_longer_offered_answers_a_cancelled_appointment(tc, H):
    prop = _find(tc, H, _local(DAY, "15:00"), _local(DAY, "16:00"), ("specialty", "394579002"))[0]
    gone = {**prop, "slot": [{"reference": f"Slot/sched-an-{DAY:%Y%m%d}0900"}]}  # in the break
    r = tc.post("/fhir/Appointment/$hold", content=_params(("appointment-resource", gone)), headers=H)
    assert r.status_code == 200, r.text
    kinds = [e["resource"]["resourceType"] for e in r.json()["entry"]]
    assert kinds == ["Appointment", "OperationOutcome"]
    assert r.json()["entry"][0]["resource"]["status"] == "cancelled"


def test_booking_makes_a_video_room_without_patient_data_and_signed_links(tc, H):
    prop = _with_patient(_find(tc, H, _local(DAY, "16:00"), _local(DAY, "17:00"), ("specialty", "394579002"))[0],
                         "Patient/bn-0002-dang-van-hung", "ServiceRequest/sr-42")
    r = tc.post("/fhir/Appointment/$book", content=_params(("appointment-resource", prop)), headers=H)
    appt = r.json()["entry"][0]["resource"]
    room_url = next(e["valueUrl"] for e in appt["extension"] if e["url"].endswith("appointment-video-room"))
    base, name = room_url.rsplit("/", 1)
    assert base == "https://meet.benhvien.example"
    assert re.fullmatch(r"sen[0-9a-f]{40}", name)  # 160 random bits, nothing else
    for secret in ("bn-0002", "dang", "hung", "sr-42", "bs-an", "hub"):
        assert secret not in room_url.lower()
    links = {p["actor"]["reference"]: next(e["valueUrl"] for e in p["extension"]) for p in appt["participant"]}
    doctor = jwt.decode(links["Practitioner/bs-an"].split("jwt=")[1], "s3cret-for-tests-0123456789abcdef",
                        algorithms=["HS256"], audience="jitsi", options={"verify_nbf": False})
    clinic = jwt.decode(links["Patient/bn-0002-dang-van-hung"].split("jwt=")[1], "s3cret-for-tests-0123456789abcdef",
                        algorithms=["HS256"], audience="jitsi", options={"verify_nbf": False})
    end = datetime.fromisoformat(appt["end"])
    assert doctor["room"] == clinic["room"] == name
    assert doctor["nbf"] < datetime.fromisoformat(appt["start"]).timestamp() < end.timestamp() < doctor["exp"]
    assert doctor["context"]["user"]["moderator"] is True
    assert clinic["context"]["user"]["moderator"] is False
    assert "bn-0002" not in json.dumps(doctor) + json.dumps(clinic)
    # the booked link carries the event, validated against its schema when made
    link = tc.db[sch.SLOT_LINKS].find_one({"ap": appt["id"], "st": "booked"})
    event = json.loads(link["outbox"][0]["event"])
    load_catalog().validate(event)  # its schema in specs/events (raises when it does not hold)
    assert event["type"] == "vn.sen.teleconsult.appointment.booked.v1"
    assert event["data"]["serviceRequest"] == "ServiceRequest/sr-42"
    assert event["data"]["appointment"] == f"Appointment/{appt['id']}"
    assert link["outbox_pending"] is True


def test_room_names_are_unique_and_without_tokens_when_no_secret():
    cfg = VideoConfig(base_url="https://meet.example/")
    start = datetime(2026, 12, 7, 8, tzinfo=av.TZ)
    rooms = {create_room(cfg, start, start + timedelta(minutes=30)).name for _ in range(200)}
    assert len(rooms) == 200
    room = create_room(cfg, start, start + timedelta(minutes=30))
    assert room.clinic_url == room.doctor_url == f"https://meet.example/{room.name}" and room.expires is None


def test_reschedule_books_the_new_slot_and_frees_the_old(tc, H):
    day = DAY + timedelta(days=1)
    a, b = _find(tc, H, _local(day, "07:00"), _local(day, "08:00"), ("specialty", "394579002"))[:2]
    appt = tc.post("/fhir/Appointment/$book", content=_params(("appointment-resource", _with_patient(a))),
                   headers=H).json()["entry"][0]["resource"]
    r = tc.post(f"/fhir/Appointment/{appt['id']}/$reschedule", content=_params(("appointment-resource", b)), headers=H)
    assert r.status_code == 200, r.text
    new = r.json()
    assert new["status"] == "booked" and new["slot"] == b["slot"]
    assert any(p["actor"]["reference"] == "Patient/bn-0001" for p in new["participant"])
    assert tc.get(f"/fhir/Appointment/{appt['id']}", headers=H).json()["status"] == "cancelled"
    assert tc.get(f"/fhir/{a['slot'][0]['reference']}", headers=H).json()["status"] == "free"
    # onto a taken slot: 409 and nothing changes
    r = tc.post(f"/fhir/Appointment/{new['id']}/$reschedule", content=_params(("appointment-resource", b)), headers=H)
    assert r.status_code == 409
    assert tc.get(f"/fhir/Appointment/{new['id']}", headers=H).json()["status"] == "booked"


class _Crash(Exception):
    """The process dies here (a simulated crash between two steps of a reschedule)."""


def _crash_at(monkeypatch, step):
    def point(at):
        if at == step:
            raise _Crash(at)
    monkeypatch.setattr(sch, "_crash_point", point)


def _status(tc, H, ref):
    return tc.get(f"/fhir/{ref}", headers=H).json()["status"]


@pytest.mark.parametrize("step", ["booked", "claimed"])
def test_a_reschedule_stopped_half_way_is_finished_by_the_repair_once(tc, H, monkeypatch, step):
    day = DAY + timedelta(days=6 if step == "booked" else 7)
    a, b = _find(tc, H, _local(day, "07:00"), _local(day, "08:00"), ("specialty", "394579002"))[:2]
    appt = tc.post("/fhir/Appointment/$book", content=_params(("appointment-resource", _with_patient(a))),
                   headers=H).json()["entry"][0]["resource"]
    _crash_at(monkeypatch, step)
    with pytest.raises(_Crash):
        sch.reschedule(tc.db, sch.Ctx(sch.SchedulingConfig()), appt["id"], b)
    monkeypatch.setattr(sch, "_crash_point", lambda at: None)
    # the crash left both slots taken, and the reschedule recorded as under way
    [entry] = list(tc.db[sch.OPEN_RESCHEDULES].find({"old": appt["id"]}))
    assert _status(tc, H, a["slot"][0]["reference"]) == "busy" and _status(tc, H, b["slot"][0]["reference"]) == "busy"
    assert _status(tc, H, f"Appointment/{appt['id']}") == "booked"
    # the worker's repair finishes it: the old appointment cancelled, its slot free, the new one booked
    assert sch.repair_reschedules(tc.db) == 1
    assert _status(tc, H, f"Appointment/{appt['id']}") == "cancelled"
    assert _status(tc, H, a["slot"][0]["reference"]) == "free"
    assert _status(tc, H, f"Appointment/{entry['_id']}") == "booked"
    assert tc.db[sch.RESCHEDULES].find_one({"_id": appt["id"]})["new"] == entry["_id"]
    assert tc.db[sch.OPEN_RESCHEDULES].count_documents({"old": appt["id"]}) == 0
    assert sch.repair_reschedules(tc.db) == 0  # nothing left: idempotent
    assert _status(tc, H, f"Appointment/{entry['_id']}") == "booked"
    # the old appointment cannot be rescheduled a second time
    r = tc.post(f"/fhir/Appointment/{appt['id']}/$reschedule", content=_params(("appointment-resource", a)),
                headers=H)
    assert r.status_code == 409 and "rescheduled already" in r.json()["issue"][0]["diagnostics"]


def test_the_next_reschedule_of_the_old_appointment_finishes_a_stopped_one(tc, H, monkeypatch):
    day = DAY + timedelta(days=4)
    a, b, c = _find(tc, H, _local(day, "08:00"), _local(day, "11:00"), ("specialty", "394579002"))[:3]
    appt = tc.post("/fhir/Appointment/$book", content=_params(("appointment-resource", _with_patient(a))),
                   headers=H).json()["entry"][0]["resource"]
    _crash_at(monkeypatch, "claimed")
    with pytest.raises(_Crash):
        sch.reschedule(tc.db, sch.Ctx(sch.SchedulingConfig()), appt["id"], b)
    monkeypatch.setattr(sch, "_crash_point", lambda at: None)
    assert _status(tc, H, f"Appointment/{appt['id']}") == "booked"
    r = tc.post(f"/fhir/Appointment/{appt['id']}/$reschedule", content=_params(("appointment-resource", c)),
                headers=H)
    assert r.status_code == 409, r.text
    assert _status(tc, H, f"Appointment/{appt['id']}") == "cancelled"  # rolled forward by this reader
    assert _status(tc, H, a["slot"][0]["reference"]) == "free" and _status(tc, H, c["slot"][0]["reference"]) == "free"
    assert _status(tc, H, b["slot"][0]["reference"]) == "busy"


def test_a_reschedule_that_never_claimed_its_slot_is_dropped_after_the_grace(tc, H, monkeypatch):
    day = DAY + timedelta(days=4)
    a, b = _find(tc, H, _local(day, "13:30"), _local(day, "15:00"), ("specialty", "394579002"))[:2]
    appt = tc.post("/fhir/Appointment/$book", content=_params(("appointment-resource", _with_patient(a))),
                   headers=H).json()["entry"][0]["resource"]

    def dies(*args, **kwargs):
        raise _Crash("before the claim")

    monkeypatch.setattr(sch, "book", dies)
    with pytest.raises(_Crash):
        sch.reschedule(tc.db, sch.Ctx(sch.SchedulingConfig()), appt["id"], b)
    monkeypatch.undo()
    assert tc.db[sch.OPEN_RESCHEDULES].count_documents({"old": appt["id"]}) == 1
    assert sch.repair_reschedules(tc.db) == 0  # maybe still under way: kept
    assert tc.db[sch.OPEN_RESCHEDULES].count_documents({"old": appt["id"]}) == 1
    later = sch.utcnow() + timedelta(seconds=sch.RESCHEDULE_GRACE_SECONDS + 1)
    assert sch.repair_reschedules(tc.db, now=later) == 0
    assert tc.db[sch.OPEN_RESCHEDULES].count_documents({"old": appt["id"]}) == 0
    assert _status(tc, H, f"Appointment/{appt['id']}") == "booked"  # nothing else changed
    assert _status(tc, H, b["slot"][0]["reference"]) == "free"


def test_two_reschedules_of_one_appointment_at_once_leave_one_new_booking(tc, H):
    day = DAY + timedelta(days=5)
    props = _find(tc, H, _local(day, "07:00"), _local(day, "11:00"), ("specialty", "394579002"))[:5]
    appt = tc.post("/fhir/Appointment/$book", content=_params(("appointment-resource", _with_patient(props[0]))),
                   headers=H).json()["entry"][0]["resource"]
    barrier = threading.Barrier(4)

    def move(target):
        barrier.wait()
        try:
            return sch.reschedule(tc.db, sch.Ctx(sch.SchedulingConfig()), appt["id"], target)["id"]
        except sch.FhirError as err:
            return err.status

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(move, props[1:]))
    winners = [r for r in results if isinstance(r, str)]
    assert len(winners) == 1 and all(r == 409 for r in results if not isinstance(r, str)), results
    busy = [p for p in props if _status(tc, H, p["slot"][0]["reference"]) == "busy"]
    assert len(busy) == 1 and _status(tc, H, f"Appointment/{winners[0]}") == "booked"
    assert _status(tc, H, f"Appointment/{appt['id']}") == "cancelled"
    assert tc.db[sch.OPEN_RESCHEDULES].count_documents({"old": appt["id"]}) == 0


def test_noshow_only_after_the_start_and_fulfilled_once(tc, H):
    day = DAY + timedelta(days=1)
    prop = _find(tc, H, _local(day, "10:00"), _local(day, "11:00"), ("specialty", "394579002"))[0]
    appt = tc.post("/fhir/Appointment/$book", content=_params(("appointment-resource", prop)),
                   headers=H).json()["entry"][0]["resource"]
    r = tc.post(f"/fhir/Appointment/{appt['id']}/$noshow", content=_params(), headers=H)
    assert r.status_code == 409 and "not started" in r.json()["issue"][0]["diagnostics"]
    done = sch.mark_fulfilled(tc.db, appt["id"], by="bs-an")
    assert done["status"] == "fulfilled"
    assert sch.mark_fulfilled(tc.db, appt["id"])["status"] == "fulfilled"  # idempotent
    r = tc.post(f"/fhir/Appointment/{appt['id']}/$cancel", content=_params(), headers=H)
    assert r.status_code == 409 and "fulfilled" in r.json()["issue"][0]["diagnostics"]
    assert tc.get(f"/fhir/{prop['slot'][0]['reference']}", headers=H).json()["status"] == "busy"


def test_a_booking_retried_with_its_idempotency_key_is_answered_not_repeated(tc, H):
    day = DAY + timedelta(days=1)
    props = _find(tc, H, _local(day, "15:00"), _local(day, "16:30"), ("specialty", "394583002"))
    key = {**H, "Idempotency-Key": f"book-{time.time_ns()}"}
    first = tc.post("/fhir/Appointment/$book", content=_params(("appointment-resource", props[0])), headers=key)
    again = tc.post("/fhir/Appointment/$book", content=_params(("appointment-resource", props[0])), headers=key)
    assert first.status_code == again.status_code == 200, again.text
    assert again.content == first.content  # the first answer, not a 409
    other = tc.post("/fhir/Appointment/$book", content=_params(("appointment-resource", props[1])), headers=key)
    assert other.status_code == 422
    assert len(list(tc.db[sch.SLOT_LINKS].find({"k": props[0]["slot"][0]["reference"][5:]}))) == 1
    assert tc.get(f"/fhir/{props[1]['slot'][0]['reference']}", headers=H).json()["status"] == "free"


def test_the_handler_takes_the_body_kept_on_the_way_in_not_read_again(tc, H, monkeypatch):
    """A $book's body reaches the handler as the request middleware kept it on the event loop while
    connexion's body validator read it (no second read through a2wsgi: Flask's get_data is not
    called), with and without an Idempotency-Key; the answers are as before."""
    import flask

    day = DAY + timedelta(days=1)
    props = _find(tc, H, _local(day, "07:00"), _local(day, "08:30"), ("specialty", "394579002"))
    reads: list[int] = []
    real = flask.Request.get_data

    def counted(self, *a, **kw):
        reads.append(1)
        return real(self, *a, **kw)

    monkeypatch.setattr(flask.Request, "get_data", counted)
    body = _params(("appointment-resource", _with_patient(props[0])))
    booked = tc.post("/fhir/Appointment/$book", content=body, headers=H)
    assert booked.status_code == 200, booked.text
    assert booked.json()["entry"][0]["resource"]["slot"] == props[0]["slot"]
    lost = tc.post("/fhir/Appointment/$book", content=body, headers=H)
    assert lost.status_code == 409, lost.text
    assert "already booked" in lost.json()["issue"][0]["diagnostics"]
    key = {**H, "Idempotency-Key": f"kept-{time.time_ns()}"}
    other = _params(("appointment-resource", _with_patient(props[1])))
    first = tc.post("/fhir/Appointment/$book", content=other, headers=key)
    again = tc.post("/fhir/Appointment/$book", content=other, headers=key)
    assert first.status_code == again.status_code == 200, again.text
    assert again.content == first.content
    assert reads == []
    bad = tc.post("/fhir/Appointment/$book", content=b'{"resourceType": "Parameters", "parameter": 7}', headers=H)
    assert bad.status_code == 400, bad.text


def test_clinic_staff_book_and_cancel_only_their_own_facilitys_consults(tc, H, dev_key):
    from sen_shared.auth import issue_dev_token
    from sen_shared.fhir.store import Store

    Store(tc.db, emit_events=False).create({
        "resourceType": "ServiceRequest", "status": "active", "intent": "order", "subject": {"reference": "Patient/p9"},
        "requester": {"reference": "Organization/tyt-a"}}, "sr-of-a")

    def clinic(facility):
        return {**H, "Authorization": f"Bearer {issue_dev_token(dev_key, 'clinic', facility=facility)}"}

    day = DAY + timedelta(days=1)
    prop = _with_patient(_find(tc, H, _local(day, "13:30"), _local(day, "15:00"), ("specialty", "394583002"))[0],
                         "Patient/p9", "ServiceRequest/sr-of-a")
    r = tc.post("/fhir/Appointment/$book", content=_params(("appointment-resource", prop)), headers=clinic("tyt-b"))
    assert r.status_code == 422 and r.json()["resourceType"] == "OperationOutcome"  # as a ServiceRequest not stored
    r = tc.post("/fhir/Appointment/$book", content=_params(("appointment-resource", prop)), headers=clinic("tyt-a"))
    assert r.status_code == 200, r.text
    appt = r.json()["entry"][0]["resource"]["id"]
    # its reminders go to the requesting clinic too
    assert {tuple(d["to"]) for d in rem.reminders_of(tc.db, appt)} == {("Organization/tyt-a",)}
    message = rem._message(rem.ReminderConfig(), r.json()["entry"][0]["resource"], 60, ["Organization/tyt-a"])
    assert "organization-tyt-a@sen.invalid" in message.to and "practitioner-bs-bich@sen.invalid" in message.to
    # another facility's appointment is answered as one not stored (a 403 told that it exists), the refusal
    # audited as the 403 it is
    answered_as_missing(tc, "POST", f"/fhir/Appointment/{appt}/$cancel", appt, headers=clinic("tyt-b"),
                        content=_params())
    _refused(tc, H, appt, "$cancel", "ServiceRequest/sr-of-a is another facility's consult")
    # both clinics reach the patient (referral grants, as submissions record them), but only the
    # requesting clinic sees its consult's appointment: reads, version reads, histories, searches
    from sen_shared.fhir.access import GRANTS, grant_id

    for who in ("Organization/tyt-a", "Organization/tyt-b"):
        tc.db[GRANTS].insert_one({"_id": f"ServiceRequest/sr-x|{who}", "pair": grant_id("Patient/p9", who),
                                  "patient": "Patient/p9", "grantee": who, "reason": "ServiceRequest/sr-x",
                                  "expires": None})
    for path in (f"/fhir/Appointment/{appt}", f"/fhir/Appointment/{appt}/_history/1",
                 f"/fhir/Appointment/{appt}/_history"):
        assert tc.get(path, headers=clinic("tyt-a")).status_code == 200, path
        answered_as_missing(tc, "GET", path, appt, headers=clinic("tyt-b"))
    for who, seen in (("tyt-a", {appt}), ("tyt-b", set())):
        found = tc.get("/fhir/Appointment?patient=Patient/p9", headers=clinic(who)).json()
        assert {e["resource"]["id"] for e in found.get("entry", [])} == seen, who
    unknown = {**prop, "basedOn": [{"reference": "ServiceRequest/nope"}]}
    r = tc.post("/fhir/Appointment/$hold", content=_params(("appointment-resource", unknown)), headers=clinic("tyt-a"))
    assert r.status_code == 422
    assert tc.post(f"/fhir/Appointment/{appt}/$cancel", content=_params(), headers=clinic("tyt-a")).status_code == 200
    # an Appointment is not written beside its operations
    r = tc.post("/fhir/Appointment", content=json.dumps({**prop, "status": "booked"}), headers=H)
    assert r.status_code == 405


def test_a_proposal_based_on_another_facilitys_consult_is_answered_as_one_based_on_none(tc, H, dev_key):
    """A ``$hold``, ``$book`` or ``$reschedule`` proposal ``basedOn`` another facility's ServiceRequest was 403
    where an unknown one is 422: a clinic could probe ServiceRequest ids. Now the same 422, status, body and
    headers; nothing is held or moved; each refusal is in the trail as the 403 it is."""
    from sen_shared.auth import issue_dev_token
    from sen_shared.fhir.store import Store

    for sr, clinic_id in (("sr-hide-a", "tyt-a"), ("sr-hide-b", "tyt-b")):
        Store(tc.db, emit_events=False).create({
            "resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "subject": {"reference": "Patient/p9"}, "requester": {"reference": f"Organization/{clinic_id}"}}, sr)
    clinic_b = {**H, "Authorization": f"Bearer {issue_dev_token(dev_key, 'clinic', facility='tyt-b')}"}
    day = DAY + timedelta(days=12)
    props = _find(tc, H, _local(day, "13:30"), _local(day, "15:00"), ("specialty", "394583002"))
    foreign = _with_patient(props[0], "Patient/p9", "ServiceRequest/sr-hide-a")
    for op in ("$hold", "$book"):
        answer = answered_as_missing(tc, "POST", f"/fhir/Appointment/{op}", "sr-hide-a", headers=clinic_b,
                                     content=_params(("appointment-resource", foreign)), status=422)
        assert answer.json()["issue"][0]["diagnostics"] == "ServiceRequest/sr-hide-a is not known", answer.text
    assert _status(tc, H, props[0]["slot"][0]["reference"]) == "free"
    # b's own appointment, rescheduled onto a proposal based on a's consult
    own = tc.post("/fhir/Appointment/$book", headers=clinic_b, content=_params(
        ("appointment-resource", _with_patient(props[1], "Patient/p9", "ServiceRequest/sr-hide-b"))))
    assert own.status_code == 200, own.text
    appt = own.json()["entry"][0]["resource"]["id"]
    moved = _with_patient(props[2], "Patient/p9", "ServiceRequest/sr-hide-a")
    answered_as_missing(tc, "POST", f"/fhir/Appointment/{appt}/$reschedule", "sr-hide-a", headers=clinic_b,
                        content=_params(("appointment-resource", moved)), status=422)
    assert _status(tc, H, f"Appointment/{appt}") == "booked"
    assert _status(tc, H, props[2]["slot"][0]["reference"]) == "free"

    def refusals():
        said = "403: ServiceRequest/sr-hide-a is another facility's consult"
        return [r for r in (unpack(d)["res"] for d in tc.db["AuditEvent"].find({})) if r.get("outcomeDesc") == said]

    wait_for(lambda: len(refusals()) >= 3, 10)  # the auditor writes in the background
    assert sorted(s["code"] for e in refusals() for s in e["subtype"] if s["code"].startswith("$")) == [
        "$book", "$hold", "$reschedule"]


def test_a_batch_reads_a_slot_as_get_slot_does(tc, H):
    """Slots are computed (GET /fhir/Slot/{id}, api/scheduling.py): a batch's (or a transaction's) read entry of
    one went to the engine's read of the Slot collection, which holds none: 404 for a slot that exists."""
    day = DAY + timedelta(days=13)
    a = _find(tc, H, _local(day, "07:00"), _local(day, "08:00"), ("specialty", "394579002"))[0]
    sid = a["slot"][0]["reference"][5:]
    booked = tc.post("/fhir/Appointment/$book", content=_params(("appointment-resource", _with_patient(a))),
                     headers=H)
    assert booked.status_code == 200, booked.text
    direct = tc.get(f"/fhir/Slot/{sid}", headers=H)
    assert direct.status_code == 200 and direct.json()["status"] == "busy", direct.text
    missing = f"{sid[:-4]}0900"  # in the break (09:00-09:30): no such slot
    absent = tc.get(f"/fhir/Slot/{missing}", headers=H)
    assert absent.status_code == 404, absent.text
    for kind in ("batch", "transaction"):
        bundle = {"resourceType": "Bundle", "type": kind, "entry": [
            {"request": {"method": "GET", "url": f"Slot/{sid}"}},
            {"request": {"method": "GET", "url": f"Slot/{missing}"}},
            # a conditional read, as GET's, in a transaction too (its read entries take their own conditions)
            {"request": {"method": "GET", "url": f"Slot/{sid}", "ifNoneMatch": direct.headers["ETag"]}}]}
        r = tc.post("/fhir", content=json.dumps(bundle), headers=H)
        assert r.status_code == 200, r.text
        found, gone, *same = r.json()["entry"]
        assert found["response"]["status"].startswith("200"), (kind, found)
        assert found["resource"] == direct.json()
        assert found["response"]["etag"] == direct.headers["ETag"]
        assert gone["response"]["status"].startswith("404") and gone["response"]["outcome"] == absent.json(), gone
        assert [e["response"]["status"] for e in same] == ["304 Not Modified"], (kind, same)


# ------------------------------------------------------------------------------- concurrency

@pytest.fixture(scope="module")
def web(base_env, run_id, mongo_client, dev_key, tmp_path_factory):
    """A gunicorn web process (2 workers), with 5 slots on a fresh schedule."""
    db = f"sen_t{run_id}_tc_race"
    log = tmp_path_factory.mktemp("race") / "web.log"
    try:
        with web_process("teleconsult", {**_env(base_env), "SEN_DB": db}, log, WEB_CONCURRENCY="2") as url:
            yield url, mongo_client[db]
    finally:
        mongo_client.drop_database(db)


def _race(url, H, op, sid, n):
    windows = [(ALL_DAYS, "08:00:00", "10:30:00")]
    r = httpx.put(f"{url}/fhir/Schedule/{sid}", content=json.dumps(_schedule(sid, f"Practitioner/{sid}",
                                                                             windows=windows)), headers=H)
    assert r.status_code in (200, 201), r.text
    props: list = []

    def found() -> bool:  # a process trusts the schedules it read for 2 s (SCHEDULES_FRESH_SECONDS)
        r = httpx.post(f"{url}/fhir/Appointment/$find", headers=H, timeout=30,
                       content=_params(("start", _local(DAY, "00:00")), ("end", _local(DAY, "23:00")),
                                       ("practitioner", {"reference": f"Practitioner/{sid}"})))
        props[:] = [e["resource"] for e in r.json().get("entry", [])]
        return len(props) == 5

    wait_for(found, 10)
    barrier = threading.Barrier(n)

    def one(i):
        body = _params(("appointment-resource", _with_patient(props[i % 5], f"Patient/p{i}")))
        with httpx.Client(timeout=60) as c:
            barrier.wait()
            return c.post(f"{url}/fhir/Appointment/{op}", content=body, headers=H)

    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(one, range(n)))
    return props, answers


@pytest.mark.parametrize("op,status", [("$book", "booked"), ("$hold", "pending")])
def test_fifty_concurrent_claims_on_five_slots_give_exactly_five(web, H, op, status):
    url, db = web
    sid = f"race{op[1:]}"
    props, answers = _race(url, H, op, sid, 50)
    codes = Counter(a.status_code for a in answers)
    assert codes == {200: 5, 409: 45}, codes
    assert all(a.json()["resourceType"] == "OperationOutcome" for a in answers if a.status_code == 409)
    won = [a.json()["entry"][0]["resource"] for a in answers if a.status_code == 200]
    assert sorted(w["slot"][0]["reference"] for w in won) == sorted(p["slot"][0]["reference"] for p in props)
    assert {w["status"] for w in won} == {status}
    # in the database: one active appointment per slot, one claim link per slot
    stored = [unpack(d)["res"] for d in db["Appointment"].find({"sp_slot": {"$exists": True}}, {"res": 1})]
    mine = [a for a in stored if a["slot"][0]["reference"].startswith(f"Slot/{sid}-")]
    per_slot = Counter(a["slot"][0]["reference"] for a in mine if a["status"] in ("booked", "pending"))
    assert len(per_slot) == 5 and set(per_slot.values()) == {1}
    for p in props:
        links = list(db[sch.SLOT_LINKS].find({"k": p["slot"][0]["reference"][5:]}))
        assert len(links) == 1
        r = httpx.get(f"{url}/fhir/{p['slot'][0]['reference']}", headers=H)
        assert r.json()["status"] == ("busy" if op == "$book" else "busy-tentative")


# --------------------------------------------------------------------------------- reminders

def _booked_for_reminders(tc, H, day, hhmm):
    prop = _find(tc, H, _local(day, hhmm), _local(day, "17:00"), ("specialty", "394583002"))[0]
    return tc.post("/fhir/Appointment/$book", content=_params(("appointment-resource", _with_patient(prop))),
                   headers=H).json()["entry"][0]["resource"]


def test_reminders_go_once_at_their_offsets_through_the_console_sender(tc, H, tmp_path):
    day = DAY + timedelta(days=2)
    appt = _booked_for_reminders(tc, H, day, "08:00")
    start = datetime.fromisoformat(appt["start"])
    due = sorted(d["due"] for d in rem.reminders_of(tc.db, appt["id"]))
    assert [start - d.replace(tzinfo=UTC) for d in due] == [timedelta(hours=24), timedelta(hours=1)]
    _others_reminders_gone(tc.db, appt["id"])  # only this test's reminders are due
    out = tmp_path / "reminders.jsonl"
    sender, cfg = rem.ConsoleSender(out), rem.ReminderConfig()
    assert rem.send_due(tc.db, sender, cfg, now=start - timedelta(hours=30)) == 0
    day_before = start - timedelta(hours=23)
    threads = [threading.Thread(target=rem.send_due, args=(tc.db, sender, cfg, day_before)) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    mine = [x for x in lines if appt["id"] in x["body"]]
    assert len(mine) == 1  # five senders at once: sent once
    assert "bn-0001" not in mine[0]["body"] and "Nhắc lịch hội chẩn" in mine[0]["subject"]
    assert "practitioner-bs-bich@sen.invalid" in mine[0]["to"]
    rem.send_due(tc.db, sender, cfg, now=start - timedelta(minutes=30))
    mine = [x for x in map(json.loads, out.read_text(encoding="utf-8").splitlines()) if appt["id"] in x["body"]]
    assert len(mine) == 2
    comm = tc.get("/fhir/Communication?_count=50", headers=H).json()
    about = [e["resource"] for e in comm.get("entry", []) if e["resource"]["about"][0]["reference"] ==
             f"Appointment/{appt['id']}"]
    assert sorted(c["status"] for c in about) == ["completed", "completed"]


def test_a_direct_booking_writes_its_reminders_in_the_insert_of_its_slot_claim(tc, H, mongo_url):
    """One command for the claim and the reminders (a second was ~0.9 ms of the database's and the
    client's CPU on every winning $book): the link first, so a lost claim writes none of them."""
    from pymongo import MongoClient, monitoring

    class Inserts(monitoring.CommandListener):
        def __init__(self) -> None:
            self.seen: list[tuple[str, list[str]]] = []

        def started(self, event) -> None:
            if event.command_name == "insert":
                self.seen.append((event.command["insert"], [d["_id"] for d in event.command["documents"]]))

        def succeeded(self, event) -> None: ...

        def failed(self, event) -> None: ...

    inserts = Inserts()
    client = MongoClient(mongo_url, tz_aware=True, uuidRepresentation="standard", event_listeners=[inserts])
    try:
        db = client[tc.db.name]
        day = DAY + timedelta(days=4)
        prop = _with_patient(_find(tc, H, _local(day, "10:00"), _local(day, "11:00"))[0])
        appt = sch.book(db, sch.Ctx(sch.SchedulingConfig()), request=prop)
        sid = prop["slot"][0]["reference"][5:]
        claims = [ids for coll, ids in inserts.seen if coll == sch.SLOT_LINKS]
        assert claims == [[f"{sid}/1", f"{appt['id']}/1440", f"{appt['id']}/60"]], inserts.seen
        assert rem.REMINDERS not in {coll for coll, _ in inserts.seen}
        kept = sorted(rem.reminders_of(db, appt["id"]), key=lambda d: -d["min"])
        assert [(d["sl"], d["min"]) for d in kept] == [(sid, 1440), (sid, 60)]
        # the slot's chain still reads as one booked link: the reminders beside it are no links
        assert sch.latest(db[sch.SLOT_LINKS], sid)["ap"] == appt["id"]
        assert [x["n"] for x in db[sch.SLOT_LINKS].find({"k": sid})] == [1]
        # a second booking of the slot loses its claim and writes no reminder
        with pytest.raises(Exception, match="already booked"):
            sch.book(db, sch.Ctx(sch.SchedulingConfig()), request=_with_patient(prop, "Patient/bn-0002"))
        assert db[sch.SLOT_LINKS].count_documents({rem.REMINDER_MARK: 1, "sl": sid}) == 2
    finally:
        client.close()


def test_a_reminder_stored_before_the_move_beside_the_links_is_still_sent_once(tc, H, tmp_path):
    """Reminders were kept in their own collection (``rem.REMINDERS``, the slot as ``k``) until they
    moved beside the slot links: one stored there is sent and then released from there."""
    day = DAY + timedelta(days=2)
    appt = _booked_for_reminders(tc, H, day, "10:30")
    start = datetime.fromisoformat(appt["start"])
    _others_reminders_gone(tc.db, appt["id"])
    for doc in rem.reminders_of(tc.db, appt["id"]):  # as the former layout had it
        tc.db[sch.SLOT_LINKS].delete_one({"_id": doc["_id"]})
        tc.db[rem.REMINDERS].insert_one({k: v for k, v in doc.items() if k not in ("sl", rem.REMINDER_MARK)}
                                        | {"k": doc["sl"]})
    out = tmp_path / "legacy.jsonl"
    sender, cfg = rem.ConsoleSender(out), rem.ReminderConfig()
    assert rem.send_due(tc.db, sender, cfg, now=start - timedelta(hours=23)) == 1
    assert rem.send_due(tc.db, sender, cfg, now=start - timedelta(hours=23)) == 0
    assert [d["min"] for d in tc.db[rem.REMINDERS].find({"ap": appt["id"]})] == [60]  # the day-before one released
    assert sum(appt["id"] in line for line in out.read_text(encoding="utf-8").splitlines()) == 1


def test_a_cancelled_appointment_gets_no_reminder(tc, H, tmp_path):
    day = DAY + timedelta(days=2)
    appt = _booked_for_reminders(tc, H, day, "13:30")
    assert tc.post(f"/fhir/Appointment/{appt['id']}/$cancel", content=_params(), headers=H).status_code == 200
    _others_reminders_gone(tc.db, appt["id"])
    out = tmp_path / "r.jsonl"
    rem.send_due(tc.db, rem.ConsoleSender(out), rem.ReminderConfig(),
                 now=datetime.fromisoformat(appt["start"]) - timedelta(minutes=10))
    assert not out.exists() or appt["id"] not in out.read_text(encoding="utf-8")


def test_smtp_reminders_retry_with_backoff_and_record_failures_on_the_communication(tc, H):
    from tests.integration.smtp_support import LocalSmtp, message_ids

    server = LocalSmtp()
    day = DAY + timedelta(days=2)
    appt = _booked_for_reminders(tc, H, day, "15:00")
    start = datetime.fromisoformat(appt["start"])
    _others_reminders_gone(tc.db, appt["id"])
    sender = rem.SmtpSender("127.0.0.1", server.port, sender="sen@benhvien.example", timeout=2)
    cfg = rem.ReminderConfig(backoff_seconds=60, addresses={"Practitioner/bs-bich": "bich@benhvien.example"})
    t0 = start - timedelta(hours=23)
    assert rem.send_due(tc.db, sender, cfg, now=t0) == 0  # nobody listens yet: attempt 1 fails
    cid = f"rem-{appt['id']}-1440"
    comm = tc.get(f"/fhir/Communication/{cid}", headers=H).json()
    assert comm["status"] == "in-progress" and "attempt 1 failed" in comm["note"][-1]["text"]
    with server:
        assert rem.send_due(tc.db, sender, cfg, now=t0 + timedelta(seconds=30)) == 0  # backing off
        assert rem.send_due(tc.db, sender, cfg, now=t0 + timedelta(seconds=61)) == 1
        assert rem.send_due(tc.db, sender, cfg, now=t0 + timedelta(seconds=300)) == 0  # sent once
    [mail] = server.received
    assert mail["To"] == "bich@benhvien.example"
    assert mail["From"] == "sen@benhvien.example"
    mid = f"<reminder.{appt['id']}.1440@sen.invalid>"  # derived from the appointment and the offset
    assert message_ids(mail) == [mid]  # an ordinary reminder carries it once
    comm = tc.get(f"/fhir/Communication/{cid}", headers=H).json()
    assert comm["status"] == "completed"
    assert [n["text"].split(":")[0] for n in comm["note"]] == [  # each attempt recorded before it went
        "lần gửi 1", "lần gửi 1 thất bại (attempt 1 failed)", "lần gửi 2", "đã gửi (sent), lần 2"]
    assert comm["note"][0]["text"] == f"lần gửi 1: đang gửi (attempt 1: sending), Message-ID {mid}"
    assert comm["identifier"] == [{"system": "urn:ietf:rfc:5322", "value": mid}]
    assert comm["about"] == [{"reference": f"Appointment/{appt['id']}"}]


def test_a_worker_dying_after_the_smtp_server_took_a_reminder_sends_a_copy_with_the_same_message_id(tc, H):
    """At least once, the copy recognisable (as the on-duty lead's message): a worker dying after the
    SMTP server accepted the reminder leaves its attempt without an outcome; after ``stale_after``
    the next worker sends it again, with the same Message-ID, and the Communication shows both."""
    from tests.integration.smtp_support import DiesAfterTheServerTookIt, LocalSmtp, WorkerDied, message_ids

    day = DAY + timedelta(days=2)
    appt = _booked_for_reminders(tc, H, day, "16:00")
    start = datetime.fromisoformat(appt["start"])
    _others_reminders_gone(tc.db, appt["id"])
    tc.db[sch.SLOT_LINKS].delete_many({"_id": f"{appt['id']}/60"})  # the day-before reminder alone
    server = LocalSmtp()
    smtp = rem.SmtpSender("127.0.0.1", server.port, sender="sen@benhvien.example", timeout=5)
    cfg = rem.ReminderConfig(stale_after=300, domain="benhvien.example",
                             addresses={"Practitioner/bs-bich": "bich@benhvien.example"})
    t0 = start - timedelta(hours=23)
    with server:
        with pytest.raises(WorkerDied):
            rem.send_due(tc.db, DiesAfterTheServerTookIt(smtp), cfg, now=t0)
        assert len(server.received) == 1  # accepted, and nothing recorded its outcome
        assert rem.send_due(tc.db, smtp, cfg, now=t0 + timedelta(seconds=299)) == 0  # may be in flight
        assert rem.send_due(tc.db, smtp, cfg, now=t0 + timedelta(seconds=301)) == 1  # taken over
        assert rem.send_due(tc.db, smtp, cfg, now=t0 + timedelta(hours=1)) == 0
    mid = f"<reminder.{appt['id']}.1440@benhvien.example>"
    assert [message_ids(m) for m in server.received] == [[mid], [mid]]  # the copy says it is one
    assert [m["To"] for m in server.received] == ["bich@benhvien.example"] * 2
    # the first attempt was recorded before it went, with its Message-ID: on its claim and its Communication
    assert tc.db[rem.ATTEMPTS].find_one({"_id": f"{appt['id']}/1440#1"})["message_id"] == mid
    comm = tc.get(f"/fhir/Communication/rem-{appt['id']}-1440", headers=H).json()
    assert comm["status"] == "completed" and comm["identifier"][0]["value"] == mid
    assert [n["text"] for n in comm["note"]] == [
        f"lần gửi 1: đang gửi (attempt 1: sending), Message-ID {mid}",
        f"lần gửi 2: đang gửi (attempt 2: sending), Message-ID {mid}",
        "đã gửi (sent), lần 2"]
    assert rem.reminders_of(tc.db, appt["id"]) == []  # released once sent


def test_doctors_act_on_their_own_hubs_appointments_only(tc, H, dev_key):
    from sen_shared.auth import issue_dev_token

    def doctor(facility):
        token = issue_dev_token(dev_key, "doctor", facility=facility, practitioner="bs-an")
        return {**H, "Authorization": f"Bearer {token}"}

    day = DAY + timedelta(days=8)
    a, b = _find(tc, H, _local(day, "07:00"), _local(day, "08:00"), ("specialty", "394579002"))[:2]
    r = tc.post("/fhir/Appointment/$book", content=_params(("appointment-resource", a)), headers=doctor("bv-khac"))
    assert r.status_code == 403 and "another hub" in r.json()["issue"][0]["diagnostics"]
    assert _status(tc, H, a["slot"][0]["reference"]) == "free"
    r = tc.post("/fhir/Appointment/$book", content=_params(("appointment-resource", a)), headers=doctor("hub"))
    assert r.status_code == 200, r.text
    appt = r.json()["entry"][0]["resource"]
    for op in ("$cancel", "$noshow", "$fulfill"):  # another hub's: as an appointment not stored
        answered_as_missing(tc, "POST", f"/fhir/Appointment/{appt['id']}/{op}", appt["id"],
                            headers=doctor("bv-khac"), content=_params())
        _refused(tc, H, appt["id"], op, "this appointment is with another hub (Organization/hub)")
    # $hold and $book of it too; a proposal of another hub's slot is refused saying so, as above
    for op in ("$hold", "$book"):
        answered_as_missing(tc, "POST", f"/fhir/Appointment/{op}", appt["id"], headers=doctor("bv-khac"),
                            content=_params(("appointment-reference", {"reference": f"Appointment/{appt['id']}"})))
    # a role that takes no such step is refused whatever the id
    for rid in (appt["id"], "khong-co"):
        clinic = {**H, "Authorization": f"Bearer {issue_dev_token(dev_key, 'clinic', facility='tyt-a')}"}
        r = tc.post(f"/fhir/Appointment/{rid}/$noshow", content=_params(), headers=clinic)
        assert r.status_code == 403, r.text
    assert _status(tc, H, f"Appointment/{appt['id']}") == "booked"
    assert appt["meta"]["tag"] == [{"system": "https://sen.vn/fhir/CodeSystem/consult-hub",
                                    "code": "Organization/hub"}]
    r = tc.post(f"/fhir/Appointment/{appt['id']}/$cancel", content=_params(), headers=doctor("hub"))
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    # each version says who made it (and its meta.lastUpdated when)
    history = tc.get(f"/fhir/Appointment/{appt['id']}/_history", headers=H).json()["entry"]
    assert [(e["resource"]["status"], e["resource"]["meta"]["extension"][0]["valueReference"]["reference"])
            for e in history] == [("cancelled", "Practitioner/bs-an"), ("booked", "Practitioner/bs-an")]
