# ruff: noqa: F811 - the client fixture imported from test_pages is a parameter by name
"""The worklist says which consults the clinic has answered (walk of session 27: a stat consult's doctor asked the
clinic for a troponin; the answer came back and the worklist row read "Đã nhận" like any other, nothing telling her
the consult was hers to act on again). A row reads "Cơ sở đã trả lời" while the consult is open and its latest
version is the requesting clinic's (teleconsult's ``$provide-info``, recorded as the version's changed-by: the
clinic's Practitioner or Organization); not the request itself (version 1), not a step of a hub doctor (a reassign),
not the worker's (a breach), not a closed or on-hold consult. Flask's test client; teleconsult and the EHR fakes."""

from __future__ import annotations

import re
from typing import Any

from services.portal.tests.test_pages import client, sign_in  # noqa: F401 - the fixture by name
from services.portal.tests.test_worklist_pages import _fake_hub

CHANGED_BY = "https://sen.vn/fhir/StructureDefinition/changed-by"


def _task(tid: str, status: str, version: str, by: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"versionId": version}
    if by:
        meta["extension"] = [{"url": CHANGED_BY, "valueReference": {"reference": by, "display": "x"}}]
    return {"resourceType": "Task", "id": tid, "status": status, "priority": "stat", "meta": meta,
            "for": {"reference": f"Patient/p-{tid}"}, "requester": {"reference": "Organization/tyt-my-hiep"},
            "reasonCode": {"text": "Cơn đau thắt ngực"}, "authoredOn": "2026-12-06T08:00:00+07:00",
            "owner": {"reference": "Practitioner/bs-nguyen-van-an"},
            "performerType": [{"coding": [{"system": "http://snomed.info/sct", "code": "394579002"}]}],
            "restriction": {"period": {"end": "2026-12-06T09:00:00+07:00"}}}


TASKS = [
    _task("answered", "accepted", "4", "Practitioner/ys-vo-minh-tam"),  # the clinic's nurse answered
    _task("answered-org", "in-progress", "5", "Organization/tyt-my-hiep"),  # a clinic user naming no practitioner
    _task("answered-new", "requested", "3", "Practitioner/ys-vo-minh-tam"),  # asked before it was accepted
    _task("sent", "requested", "1", "Practitioner/ys-vo-minh-tam"),  # the request itself
    _task("given", "accepted", "3", "Practitioner/bs-bich"),  # a hub doctor gave it on
    _task("mine", "in-progress", "3", "Practitioner/bs-nguyen-van-an"),  # the doctor's own step
    _task("breached", "accepted", "3", "Device/sen-teleconsult"),  # the worker's
    _task("waiting", "on-hold", "3", "Practitioner/bs-nguyen-van-an"),  # still waiting for the clinic
]


def _marked(page: str) -> set[str]:
    rows = re.findall(r"<tr role=\"row\">(.*?)</tr>", page, re.S)
    return {re.search(r"/tasks/([\w-]+)", row).group(1) for row in rows if 'data-testid="clinic-answered"' in row}


def test_a_consult_the_clinic_answered_is_said_on_its_row(client, monkeypatch):
    _fake_hub(monkeypatch, [dict(t) for t in TASKS])
    sign_in(client, "doctor")
    page = client.get("/worklist").get_data(as_text=True)
    assert _marked(page) == {"answered", "answered-org", "answered-new"}, _marked(page)
    assert page.count("Cơ sở đã trả lời") == 3
    with client.session_transaction() as kept:  # the page in English
        kept["lang"] = "en"
    assert client.get("/worklist").get_data(as_text=True).count("The clinic has answered") == 3


def test_nothing_is_said_while_the_hubs_doctors_cannot_be_read(client, monkeypatch):
    """The EHR not answering the hub's roles: a Practitioner's change cannot be told from a hub doctor's, so no
    row says the clinic answered (the requesting Organization's own change still does)."""
    from sen_portal.web import directory

    _fake_hub(monkeypatch, [dict(t) for t in TASKS])
    monkeypatch.setattr(directory, "_hub_roles", lambda hub: {})
    sign_in(client, "doctor")
    assert _marked(client.get("/worklist").get_data(as_text=True)) == {"answered-org"}


def test_a_filtered_empty_worklist_says_the_filters_found_nothing_not_that_nothing_waits(client, monkeypatch):
    """Walked: the completed consults of one specialty, none, read "Không có ca nào đang chờ" (nothing waiting),
    as if the hub had nothing to do. A filtered list that finds nothing says so, with the way back to every open
    consult; the unfiltered empty list still says nothing waits."""
    _fake_hub(monkeypatch, [])
    sign_in(client, "doctor")
    for url in ("/worklist?status=completed", "/worklist?specialty=394579002",
                "/worklist?facility=tyt-my-hiep", "/worklist?status=accepted&facility=ttyt-thap-muoi"):
        page = client.get(url).get_data(as_text=True)
        assert 'data-testid="worklist-none-filtered"' in page and "Không có ca nào khớp với bộ lọc này." in page, url
        assert "Không có ca nào đang chờ." not in page and 'href="/worklist">Xem mọi ca đang mở</a>' in page, url
    page = client.get("/worklist").get_data(as_text=True)
    assert "Không có ca nào đang chờ." in page and "worklist-none-filtered" not in page
    with client.session_transaction() as kept:
        kept["lang"] = "en"
    assert "No consult matches these filters." in client.get("/worklist?status=completed").get_data(as_text=True)


def _order(page: str) -> list[str]:
    return list(dict.fromkeys(re.findall(r'href="/tasks/([\w-]+)"', page)))


def test_consults_waiting_for_the_clinic_come_after_those_she_can_act_on(client, monkeypatch):
    """Walked: a stat consult she had asked the clinic about sat at the top of the worklist, above the consults she
    could act on, though nothing was hers to do until the clinic answered. Those she can act on come first (priority
    then due time), then those on hold, each marked "Chờ cơ sở trả lời" / "Waiting for the clinic", the order said
    above the list; teleconsult's order within each part is kept."""
    tasks = [dict(_task("asked-stat", "on-hold", "3", "Practitioner/bs-nguyen-van-an"), priority="stat"),
             dict(_task("new-routine", "requested", "1", None), priority="routine"),
             dict(_task("asked-urgent", "on-hold", "3", "Practitioner/bs-nguyen-van-an"), priority="urgent"),
             dict(_task("mine-asap", "in-progress", "3", "Practitioner/bs-nguyen-van-an"), priority="asap")]
    asked = _fake_hub(monkeypatch, tasks)
    sign_in(client, "doctor")
    page = client.get("/worklist").get_data(as_text=True)
    assert _order(page) == ["mine-asap", "new-routine", "asked-stat", "asked-urgent"], _order(page)
    rows = re.findall(r"<tr role=\"row\">(.*?)</tr>", page, re.S)
    marked = [re.search(r"/tasks/([\w-]+)", row).group(1) for row in rows if 'data-testid="waiting-for-clinic"' in row]
    assert marked == ["asked-stat", "asked-urgent"] and page.count(">Chờ cơ sở trả lời</span>") == 2
    assert 'data-testid="worklist-order"' in page and "các ca đang chờ cơ sở trả lời đứng sau chúng" in page
    assert asked == [{"_count": "50"}]  # one read of teleconsult's worklist, as before
    page = client.get("/worklist?status=on-hold").get_data(as_text=True)  # only those: marked, no order to say
    assert _order(page) == ["asked-stat", "asked-urgent"] and 'data-testid="worklist-order"' not in page
    page = client.get("/worklist?status=requested").get_data(as_text=True)
    assert "Chờ cơ sở trả lời" not in page and 'data-testid="worklist-order"' not in page
    with client.session_transaction() as kept:
        kept["lang"] = "en"
    page = client.get("/worklist").get_data(as_text=True)
    assert page.count(">Waiting for the clinic</span>") == 2 and "come after them" in page


class _Records:
    """The portal database's ``answers_seen`` (web/seen.py) for a test without a database: the calls it makes (an
    insert by ``_id``, a find by ``user`` and ``task`` ``$in``, the sweep's delete)."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.finds = 0

    def __getitem__(self, _name: str) -> _Records:
        return self

    def insert_one(self, doc: dict[str, Any]) -> None:
        from pymongo.errors import DuplicateKeyError

        if doc["_id"] in self.docs:
            raise DuplicateKeyError("seen")
        self.docs[doc["_id"]] = dict(doc)

    def find(self, query: dict[str, Any], _projection: Any = None) -> list[dict[str, Any]]:
        self.finds += 1
        return [d for d in self.docs.values() if d["user"] == query["user"] and d["task"] in query["task"]["$in"]]

    def delete_many(self, _query: Any) -> None:
        return None


class _OutOfReach:
    """The ``answers_seen`` collection of a database that does not answer: each use fails as pymongo's does."""

    def __call__(self) -> _OutOfReach:  # the database
        return self

    def __getitem__(self, _name: str) -> _OutOfReach:
        return self

    def __getattr__(self, _name: str) -> Any:
        from pymongo.errors import ServerSelectionTimeoutError

        def fails(*args: Any, **kwargs: Any) -> Any:
            raise ServerSelectionTimeoutError("127.0.0.1:1: [Errno 111] Connection refused")

        return fails


def test_the_clinics_answer_is_said_until_she_opens_the_consult_whatever_its_visit_did(client, monkeypatch):
    """Session 27's rule cleared "Cơ sở đã trả lời" when a booked Appointment of the consult was no older than the
    answer: a visit booked before her question and changed after the clinic's answer (its next version: a backfill's
    tags, any update) cleared it though she had not read the answer. It is said now until she opens the consult at
    the version the answer made (web/seen.py), whatever the visit did; the clinic answering again says it again; the
    portal database out of reach, it is said as before."""
    from sen_portal.web import clinic, doctor, seen, signouts

    def answered(tid: str, version: str = "4") -> dict[str, Any]:
        task = _task(tid, "accepted", version, "Practitioner/ys-vo-minh-tam")
        task["focus"] = {"reference": f"ServiceRequest/sr-{tid}"}
        task["meta"]["lastUpdated"] = "2026-12-06T02:00:00Z"  # the clinic's answer, 09:00 in Vietnam
        return task

    tasks = [answered("visit-changed"), answered("other")]
    _fake_hub(monkeypatch, tasks)
    worklist = doctor.fhir_get
    # the visit was booked at 08:00, before she asked; its Appointment changed at 09:05, after the answer
    visit = {"resourceType": "Appointment", "id": "a1", "status": "booked", "start": "2026-12-08T01:00:00Z",
             "end": "2026-12-08T01:30:00Z", "basedOn": [{"reference": "ServiceRequest/sr-visit-changed"}],
             "meta": {"versionId": "2", "lastUpdated": "2026-12-06T02:05:00Z"}}

    def fhir_get(service, path, params=None, **kw):
        params = dict(params or {})
        if path == "/fhir/Appointment":
            return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": visit}]}
        if path == "/fhir/Task" and params.get("_id"):  # the consult's page
            return {"resourceType": "Bundle", "type": "searchset",
                    "entry": [{"resource": t} for t in tasks if t["id"] == params["_id"]]}
        return worklist(service, path, params, **kw)

    for module in (doctor, clinic):
        monkeypatch.setattr(module, "fhir_get", fhir_get)
    records = _Records()
    monkeypatch.setattr(seen, "_db", lambda: records)
    monkeypatch.setattr(signouts, "was_signed_out", lambda sid: False)
    sign_in(client, "doctor")
    assert _marked(client.get("/worklist").get_data(as_text=True)) == {"visit-changed", "other"}  # failed before
    assert records.finds == 1  # one read for the page's rows that say it

    assert client.get("/tasks/visit-changed").status_code == 200  # she reads the answer on the consult's page
    assert list(records.docs) == ["doctor|bs-nguyen-van-an/visit-changed/4"]
    assert _marked(client.get("/worklist").get_data(as_text=True)) == {"other"}
    client.get("/tasks/visit-changed")  # seen again at the same version: one record
    assert len(records.docs) == 1

    tasks[0]["meta"]["versionId"] = "6"  # she asked again (5) and the clinic answered again (6)
    assert _marked(client.get("/worklist").get_data(as_text=True)) == {"visit-changed", "other"}

    monkeypatch.setattr(seen, "_db", _OutOfReach())  # the database out of reach: said as before
    client.get("/tasks/other")
    assert _marked(client.get("/worklist").get_data(as_text=True)) == {"visit-changed", "other"}
    assert len(records.docs) == 1
