"""The consult record, end to end through the real RabbitMQ and FerretDB.

``teleconsult.consult.completed`` is published (Publisher, confirms) to a
worker thread running ``run_worker`` with the ehr handlers under a prefix of
this run; the same event twice, a redelivery and a second event id for the
same ServiceRequest leave exactly one Encounter and one Composition, readable
through the FHIR API and found by ``Composition?patient=``.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kombu import Connection
from sen_shared.auth import issue_dev_token
from sen_shared.bus import Publisher, Topology, load_catalog, make_event
from sen_shared.bus.catalog import Catalog

from tests.support import wait_for

pytestmark = pytest.mark.integration

FJ = "application/fhir+json"
PURPOSES = ["ehr.consult-record", "ehr.referral-grants"]


@contextmanager
def _env(base_env: dict[str, str], **extra: str) -> Iterator[None]:
    old = dict(os.environ)
    os.environ.update(base_env, **extra)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(old)


@dataclass
class EhrWorker:
    """A worker thread running ``run_worker`` with the ehr handlers, and a publisher to feed it."""

    url: str
    prefix: str
    catalog: Catalog
    db: Any
    handled: list[str] = field(default_factory=list)  # the ids of the events its handlers returned from, in order

    def publish(self, event: dict[str, Any]) -> None:
        with Publisher(self.url, prefix=self.prefix, catalog=self.catalog) as pub:
            pub.publish(event)


@pytest.fixture(scope="module")
def ehr_env(base_env: dict[str, str], run_id: str) -> dict[str, str]:
    return {**base_env, "SEN_DB": f"sen_t{run_id}_ehr_{uuid.uuid4().hex[:4]}",
            "SEN_BUS_PREFIX": f"{base_env['SEN_BUS_PREFIX']}{uuid.uuid4().hex[:6]}."}


@pytest.fixture(scope="module")
def worker(ehr_env: dict[str, str], mongo_client: Any) -> Iterator[EhrWorker]:
    from sen_ehr import worker as ehr_worker
    from sen_ehr.config import EhrSettings
    from sen_shared.bus.worker import run_worker

    with _env(ehr_env):
        settings = EhrSettings()
    catalog = load_catalog().only(PURPOSES).with_retry_tiers([100, 200])
    w = EhrWorker(settings.amqp_url, settings.bus_prefix, catalog, mongo_client[settings.db_name])

    def counted(handler: Any) -> Any:
        def handle(event: dict[str, Any], db: Any) -> None:
            handler(event, db)
            w.handled.append(event["id"])  # its effect stored: the consumer acks it next
        return handle

    stop = threading.Event()
    thread = threading.Thread(target=run_worker, kwargs={
        "settings": settings, "handlers": {p: counted(h) for p, h in ehr_worker.HANDLERS.items()},
        "outbox_collections": [], "stop": stop, "catalog": catalog, "poll_interval": 0.2}, daemon=True)
    thread.start()
    topology = Topology(catalog, settings.bus_prefix)
    # the worker declares the topology; wait until its consumers are attached
    def consumers_ready() -> bool:
        try:
            with Connection(settings.amqp_url) as conn:
                ch = conn.default_channel
                return all(ch.queue_declare(queue=topology.queue_name(p), passive=True).consumer_count > 0
                           for p in PURPOSES)
        except Exception:  # noqa: BLE001 - not declared yet
            return False
    wait_for(consumers_ready, 30)
    yield w
    stop.set()
    thread.join(20)
    with Connection(settings.amqp_url) as conn:
        topology.delete(conn.default_channel)


@pytest.fixture(scope="module")
def ehr(ehr_env: dict[str, str], mongo_client: Any) -> Iterator[Any]:
    from sen_ehr.app import create_app
    from sen_ehr.config import EhrSettings

    with _env(ehr_env):
        app = create_app(EhrSettings())
    with app.test_client() as client:
        yield client
    mongo_client.drop_database(ehr_env["SEN_DB"])


def bearer(dev_key: Any, role: str, **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_dev_token(dev_key, role, **claims)}", "Accept": FJ,
            "Content-Type": FJ}


def consult_data(sr: str, patient: str) -> dict[str, Any]:
    with open(load_catalog().path.parent / "examples" / "teleconsult.consult.completed.json", encoding="utf-8") as f:
        data = json.load(f)["data"]
    data["serviceRequest"] = f"ServiceRequest/{sr}"
    data["patient"] = patient
    return data


def stored_record(worker: EhrWorker, ehr: Any, dev_key: Any, data: dict[str, Any]) -> dict[str, Any]:
    """The Composition the EHR stores for a ``teleconsult.consult.completed`` of ``data``, read through its API."""
    from sen_ehr.domain.consult_record import record_ids

    _, comp_id = record_ids(data["serviceRequest"])
    worker.publish(make_event("teleconsult.consult.completed", data, subject=data["serviceRequest"]))
    wait_for(lambda: worker.db["Composition"].count_documents({"_id": comp_id}) == 1)
    r = ehr.get(f"/fhir/Composition/{comp_id}", headers=bearer(dev_key, "admin"))
    assert r.status_code == 200, r.text
    return r.json()


# the review's minutes: the chair's own entry under another title than the one typed as the chair
REVIEWED_PARTICIPANTS = "BS. Nguyễn Văn An — chủ trì (BVĐK Đồng Tháp)\nYS. Trần Thị Hoa — Trạm Y tế xã Mỹ Hiệp"
REVIEWED_CHAIR = "BS.CKII Nguyễn Văn An"


def signed_minutes(participants: str = REVIEWED_PARTICIPANTS, chair: str = REVIEWED_CHAIR, *,
                   event: bool = True) -> dict[str, Any]:
    """Minutes the doctor signs on the portal, the chair ``Practitioner/bs-nguyen-van-an``: the portal's
    ``$complete`` Parameters (``minutes_parameters``) read by teleconsult (``parse_minutes``), as its
    ``teleconsult.consult.completed`` writes them (``minutes_event``), else as its Task keeps them (``as_json``)."""
    from types import SimpleNamespace as NS

    from sen_portal.web.doctor import minutes_parameters
    from sen_teleconsult.domain.consults import minutes_event, parse_minutes

    form = NS(chair=NS(data=chair), participants=NS(data=participants), history=NS(data="Tăng huyết áp 5 năm."),
              findings=NS(data="HA 170/100 mmHg."), conclusion=NS(data="Tăng huyết áp độ 2."),
              codes=[NS(code="I10", vi="Tăng huyết áp vô căn (nguyên phát)")],
              recommendations=NS(data="Tăng liều amlodipine."), discussion=NS(data=""), secretary=NS(data=""))
    task = {"executionPeriod": {"start": "2026-12-05T09:00:00+07:00"}, "owner": {"reference": "Organization/hub"},
            "requester": {"reference": "Organization/tram-y-te-xa-my-hiep"}}
    user = NS(practitioner="bs-nguyen-van-an", facility="hub")
    minutes = parse_minutes(minutes_parameters(form, {"task": task, "appointment": None}, user))
    return minutes_event(minutes) if event else minutes.as_json()


def test_consult_completed_makes_one_encounter_and_one_composition(ehr: Any, worker: EhrWorker, dev_key: Any) -> None:
    admin = bearer(dev_key, "admin")
    r = ehr.post("/fhir/Patient", content=json.dumps({"resourceType": "Patient", "name": [{"family": "Phạm"}],
                                                       "managingOrganization": {"reference": "Organization/hub"}}),
                 headers=admin)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    sr = f"sr-{uuid.uuid4().hex[:8]}"
    data = consult_data(sr, f"Patient/{pid}")
    event = make_event("teleconsult.consult.completed", data, subject=f"ServiceRequest/{sr}")
    # delivered 5 times, as issue 14 asks: the same event id three times (publisher retries), and re-sent
    # twice under new ids (the producer crashed before marking it sent)
    again = [make_event("teleconsult.consult.completed", data, subject=f"ServiceRequest/{sr}") for _ in range(2)]
    for e in [event] * 3 + again:
        worker.publish(e)
    ids = {event["id"], *(e["id"] for e in again)}

    from sen_ehr.domain.consult_record import TITLE, record_ids
    enc_id, comp_id = record_ids(f"ServiceRequest/{sr}")

    def search(path: str) -> dict[str, Any]:
        resp = ehr.get(path, headers=admin)
        assert resp.status_code == 200, resp.text
        return resp.json()

    # all five deliveries handled (a duplicate applied would be there by then), not a guess at how long they take
    wait_for(lambda: sum(i in ids for i in worker.handled) == 5)
    comps = search(f"/fhir/Composition?patient=Patient/{pid}")["entry"]
    encs = search(f"/fhir/Encounter?subject=Patient/{pid}")["entry"]
    assert [e["resource"]["id"] for e in comps] == [comp_id]
    assert [e["resource"]["id"] for e in encs] == [enc_id]
    assert worker.db["Composition"].count_documents({}) == 1 and worker.db["Encounter"].count_documents({}) == 1

    enc = ehr.get(f"/fhir/Encounter/{enc_id}", headers=admin).json()
    assert enc["class"] == {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR",
                            "display": "virtual"}
    assert enc["status"] == "finished" and enc["subject"]["reference"] == f"Patient/{pid}"
    assert enc["basedOn"] == [{"reference": f"ServiceRequest/{sr}"}]
    assert enc["participant"][0]["individual"]["reference"] == data["performer"]
    assert enc["period"] == data["period"] and enc["meta"]["versionId"] == "1"

    comp = ehr.get(f"/fhir/Composition/{comp_id}", headers=admin).json()
    assert comp["title"] == TITLE and comp["status"] == "final"
    assert comp["type"]["coding"][0]["code"] == "11488-4"
    assert comp["encounter"]["reference"] == f"Encounter/{enc_id}"
    assert comp["event"][0]["detail"] == [{"reference": f"ServiceRequest/{sr}"}]
    assert [s["code"]["coding"][0]["code"] for s in comp["section"]] == \
        ["participants", "summary", "findings", "conclusion", "recommendations"]
    conclusion = comp["section"][3]
    assert conclusion["extension"][0]["valueCodeableConcept"]["coding"][0] == data["minutes"]["conclusion"]
    assert "I10" in conclusion["text"]["div"]
    # the conclusion as written is in the conclusion section; the advice alone in its own
    written = data["minutes"]["conclusionText"]
    assert written in conclusion["text"]["div"]
    assert conclusion["extension"][0]["valueCodeableConcept"]["text"] == written
    recommendations = comp["section"][4]
    assert data["minutes"]["recommendations"] in recommendations["text"]["div"]
    assert written not in recommendations["text"]["div"]

    # written like any other FHIR write: a history version and an ehr.* outbox event
    hist = ehr.get(f"/fhir/Composition/{comp_id}/_history", headers=admin).json()
    assert [e["response"]["etag"] for e in hist["entry"]] == ['W/"1"']
    doc = worker.db["Composition_history"].find_one({"_id": f"{comp_id}/1"})
    assert doc["outbox_pending"] is True and len(doc["outbox"]) == 1
    assert "outbox" not in worker.db["Composition"].find_one({"_id": comp_id})
    assert search(f"/fhir/Encounter?based-on=ServiceRequest/{sr}")["entry"][0]["resource"]["id"] == enc_id
    # the service's writes are audited once each
    audits = worker.db["AuditEvent"].count_documents({"sp_entity": f"Composition/{comp_id}",
                                                      "sp_subtype": "create"})
    assert audits == 1


def test_redelivery_after_a_crash_mid_record_completes_it(worker: EhrWorker, ehr: Any, dev_key: Any) -> None:
    """A first delivery that died after claiming the Encounter's version: the redelivery rolls it
    forward and writes the Composition."""
    from sen_ehr.domain.consult_record import build_encounter, create_once, record_ids
    from sen_shared.fhir.store import Store

    sr = f"sr-{uuid.uuid4().hex[:8]}"
    data = consult_data(sr, "Patient/crash-1")
    enc_id, comp_id = record_ids(f"ServiceRequest/{sr}")
    store = Store(worker.db, service="ehr")
    w = store.prepare_create(build_encounter(data, enc_id), enc_id)
    # crashed after the claim (the history document), before the current document and the Composition
    store.history("Encounter").insert_one({**w.history, "at": datetime.now(UTC) - timedelta(hours=1)})
    assert worker.db["Encounter"].count_documents({"_id": enc_id}) == 0
    assert not create_once(store, build_encounter(data, enc_id), enc_id)  # claimed already; rolled forward
    assert worker.db["Encounter_history"].count_documents({"_id": f"{enc_id}/1"}) == 1
    assert worker.db["Encounter"].find_one({"_id": enc_id})["v"] == 1

    worker.publish(make_event("teleconsult.consult.completed", data, subject=f"ServiceRequest/{sr}"))
    wait_for(lambda: worker.db["Composition"].count_documents({"_id": comp_id}) == 1)
    assert worker.db["Encounter"].count_documents({"_id": enc_id}) == 1


def test_an_event_without_the_written_conclusion_gives_the_record_as_before(worker: EhrWorker, ehr: Any,
                                                                           dev_key: Any) -> None:
    """``minutes.conclusionText`` is optional (older events): the conclusion section is the ICD-10 code
    alone and the recommendations section is the recommendations as sent."""
    from sen_ehr.domain.consult_record import record_ids

    sr = f"sr-{uuid.uuid4().hex[:8]}"
    data = consult_data(sr, "Patient/old-1")
    written = data["minutes"].pop("conclusionText")
    data["minutes"]["recommendations"] = f"{written}\n{data['minutes']['recommendations']}"  # the old way
    _, comp_id = record_ids(f"ServiceRequest/{sr}")
    worker.publish(make_event("teleconsult.consult.completed", data, subject=f"ServiceRequest/{sr}"))
    wait_for(lambda: worker.db["Composition"].count_documents({"_id": comp_id}) == 1)
    r = ehr.get(f"/fhir/Composition/{comp_id}", headers=bearer(dev_key, "admin"))
    assert r.status_code == 200, r.text
    sections = r.json()["section"]
    conclusion, recommendations = sections[3], sections[4]
    assert conclusion["text"]["div"] == (
        '<div xmlns="http://www.w3.org/1999/xhtml"><p>I10 — Tăng huyết áp vô căn (nguyên phát)</p></div>')
    assert "text" not in conclusion["extension"][0]["valueCodeableConcept"]
    assert written in recommendations["text"]["div"]


def test_every_icd10_code_of_the_conclusion_reaches_the_record(worker: EhrWorker, ehr: Any, dev_key: Any) -> None:
    """A conclusion of several ICD-10 codes (``minutes.diagnoses``): the conclusion section lists
    each, and its coded extension carries all of them in the doctor's order."""
    from sen_ehr.domain.consult_record import record_ids

    sr = f"sr-{uuid.uuid4().hex[:8]}"
    data = consult_data(sr, "Patient/many-1")
    icd = "http://hl7.org/fhir/sid/icd-10"
    data["minutes"]["diagnoses"] = [data["minutes"]["conclusion"],
                                    {"system": icd, "code": "E11.9", "display": "Đái tháo đường type 2"},
                                    {"system": icd, "code": "N18.3"}]
    _, comp_id = record_ids(f"ServiceRequest/{sr}")
    worker.publish(make_event("teleconsult.consult.completed", data, subject=f"ServiceRequest/{sr}"))
    wait_for(lambda: worker.db["Composition"].count_documents({"_id": comp_id}) == 1)
    r = ehr.get(f"/fhir/Composition/{comp_id}", headers=bearer(dev_key, "admin"))
    assert r.status_code == 200, r.text
    conclusion = r.json()["section"][3]
    coded = conclusion["extension"][0]["valueCodeableConcept"]
    assert [c["code"] for c in coded["coding"]] == ["I10", "E11.9", "N18.3"]
    # a display sent is kept; a code sent without one is named from the ICD-10 list, never shown alone
    assert coded["coding"][1]["display"] == "Đái tháo đường type 2"
    assert coded["coding"][2] == {"system": icd, "code": "N18.3", "display": "Suy thận mạn, giai đoạn 3"}
    div = conclusion["text"]["div"]
    assert "<p>E11.9 — Đái tháo đường type 2</p>" in div and "<p>N18.3 — Suy thận mạn, giai đoạn 3</p>" in div
    assert div.index("I10") < div.index("E11.9") < div.index("N18.3")


@pytest.mark.parametrize("role,line", [
    # what the portal sends now: the chair's own role, then the others as typed
    ("chủ trì; YS. Võ Minh Tâm — cơ sở gửi", "BS. Nguyễn Văn An — chủ trì; YS. Võ Minh Tâm — cơ sở gửi"),
    # what it sent before: the whole participants text, the chair's name in it (shown once, not twice)
    ("BS Nguyễn Văn An; YS Võ Minh Tâm", "BS Nguyễn Văn An; YS Võ Minh Tâm"),
    ("bs. nguyễn văn an — chủ trì; YS Võ Minh Tâm", "bs. nguyễn văn an — chủ trì; YS Võ Minh Tâm"),
    # ... under another title than the chair's (the name is the chair's line, not said again)
    ("BS.CKII Nguyen Van An – chủ trì; YS Võ Minh Tâm", "BS.CKII Nguyen Van An – chủ trì; YS Võ Minh Tâm"),
    ("BS Nguyễn Văn An (chủ trì); YS Võ Minh Tâm", "BS Nguyễn Văn An (chủ trì); YS Võ Minh Tâm")])
def test_the_participants_section_names_each_person_once(role: str, line: str) -> None:
    """The chart read "BS Nguyễn Văn An — BS Nguyễn Văn An; YS Võ Minh Tâm": the chair's name, " — ", then a
    role that named the chair already."""
    from sen_ehr.domain.consult_record import build_composition

    data = consult_data("sr-participants", "Patient/p-1")
    name = "BS Nguyễn Văn An" if role.startswith("BS Nguyễn") else "BS. Nguyễn Văn An"
    data["minutes"]["participants"] = [{"reference": "Practitioner/bs-nguyen-van-an", "display": name, "role": role}]
    section = build_composition(data, "c-1", "e-1")["section"][0]
    assert section["code"]["coding"][0]["code"] == "participants"
    div = section["text"]["div"]
    assert line in div, div
    assert sum(div.count(n) for n in ("Nguyễn Văn An", "nguyễn văn an", "Nguyen Van An")) == 1, div
    assert section["entry"] == [{"reference": "Practitioner/bs-nguyen-van-an"}]


def test_every_part_of_the_signed_minutes_reaches_the_record(worker: EhrWorker, ehr: Any, dev_key: Any) -> None:
    """The minutes as the portal's doctor signs them (every field filled): the discussion ("Thảo luận") is a
    section of its own after the findings, the sites taking part one before the participants, and the chair
    who signed is the professional attester even when another doctor owned the Task. Before, the record
    had no discussion, no sites and the owner as the signer."""
    from sen_ehr.domain.consult_record import SECTION_SYSTEM

    sr = f"sr-{uuid.uuid4().hex[:8]}"
    data = consult_data(sr, "Patient/all-1")
    data["performer"] = "Practitioner/bs-owner"  # the Task's owner; the chair below signed
    data["minutes"].update({
        "discussion": "Kiểm soát kém.",
        "sites": [{"reference": "Organization/hub", "display": "Bệnh viện Đa khoa tỉnh"},
                  {"reference": "Organization/tram-y-te-xa-an-binh"}],
        "chair": "Practitioner/bs-tran-van-minh"})
    comp = stored_record(worker, ehr, dev_key, data)
    sections = {s["code"]["coding"][0]["code"]: s for s in comp["section"]}
    assert list(sections) == ["sites", "participants", "summary", "findings", "discussion", "conclusion",
                              "recommendations"]
    discussion = sections["discussion"]
    assert discussion["title"] == "Thảo luận"
    assert discussion["code"]["coding"] == [{"system": SECTION_SYSTEM, "code": "discussion", "display": "Discussion"}]
    assert discussion["text"]["div"] == '<div xmlns="http://www.w3.org/1999/xhtml"><p>Kiểm soát kém.</p></div>'
    sites = sections["sites"]
    assert sites["title"] == "Cơ sở tham gia hội chẩn"
    assert sites["entry"] == [{"reference": "Organization/hub"}, {"reference": "Organization/tram-y-te-xa-an-binh"}]
    assert "<p>Bệnh viện Đa khoa tỉnh</p><p>Organization/tram-y-te-xa-an-binh</p>" in sites["text"]["div"]
    # the other parts as before: the history, the findings reviewed, the roles, the time
    assert data["minutes"]["summary"] in sections["summary"]["text"]["div"]
    assert data["minutes"]["findings"] in sections["findings"]["text"]["div"]
    assert "BS. Trần Văn Minh — chuyên gia tư vấn" in sections["participants"]["text"]["div"]
    assert comp["event"][0]["period"] == data["period"]
    chair = {"reference": "Practitioner/bs-tran-van-minh", "display": "BS. Trần Văn Minh"}  # as the minutes name them
    assert comp["attester"] == [{"mode": "professional", "time": data["completedAt"], "party": chair}]
    assert comp["author"] == [{"reference": "Practitioner/bs-owner"}]


def test_an_event_without_discussion_sites_or_chair_gives_the_record_as_before() -> None:
    """Older events (the example) carried no discussion, sites or chair: no empty section, the performer
    attests."""
    from sen_ehr.domain.consult_record import build_composition

    data = consult_data("sr-old", "Patient/p-1")
    comp = build_composition(data, "c-1", "e-1")
    assert [s["code"]["coding"][0]["code"] for s in comp["section"]] == \
        ["participants", "summary", "findings", "conclusion", "recommendations"]
    assert comp["attester"][0]["party"] == {"reference": data["performer"], "display": "BS. Trần Văn Minh"}
    # a chair no participant names: the reference alone (the chart names them from the directory)
    data["minutes"]["participants"] = [p for p in data["minutes"]["participants"]
                                       if p["reference"] != data["performer"]]
    assert build_composition(data, "c-1", "e-1")["attester"][0]["party"] == {"reference": data["performer"]}


def test_the_chair_is_named_once_with_the_title_typed(worker: EhrWorker, ehr: Any, dev_key: Any) -> None:
    """The review signed minutes with the participants "BS. Nguyễn Văn An — chủ trì (BVĐK Đồng Tháp)" and
    "YS. Trần Thị Hoa — ..." and the chair "BS.CKII Nguyễn Văn An": the record read "BS.CKII Nguyễn Văn An —
    chủ trì; BS. Nguyễn Văn An — chủ trì (BVĐK Đồng Tháp); YS. Trần Thị Hoa — ..." and its chair "Nguyễn Văn
    An" (the directory's name). The minutes go from the portal's Parameters through teleconsult's event and
    the real RabbitMQ to the EHR's Composition on the real FerretDB, then the portal's record page reads it:
    the chair once, with the role and the title as written, and as the attester by the name typed."""
    from sen_portal.web.clinic import consult_record
    from sen_portal.web.directory import party

    sr = f"sr-{uuid.uuid4().hex[:8]}"
    data = consult_data(sr, "Patient/chair-1")
    data["minutes"] = signed_minutes()
    data["performer"] = "Practitioner/bs-nguyen-van-an"
    comp = stored_record(worker, ehr, dev_key, data)
    [participants] = [s for s in comp["section"] if s["code"]["coding"][0]["code"] == "participants"]
    div = participants["text"]["div"]
    line = "BS.CKII Nguyễn Văn An — chủ trì (BVĐK Đồng Tháp); YS. Trần Thị Hoa — Trạm Y tế xã Mỹ Hiệp"
    assert f"<p>{line}</p>" in div, div
    assert div.count("Nguyễn Văn An") == 1, div
    assert participants["entry"] == [{"reference": "Practitioner/bs-nguyen-van-an"}]
    assert comp["attester"] == [{"mode": "professional", "time": data["completedAt"], "party": {
        "reference": "Practitioner/bs-nguyen-van-an", "display": "BS.CKII Nguyễn Văn An"}}]
    record = consult_record(comp)  # what the portal's consult record page shows
    assert record is not None and party(record["chair"]) == "BS.CKII Nguyễn Văn An"


# the minutes form's parts (Circular 49/2017/TT-BYT, Decision 4054/QĐ-BYT), as the portal names them
FORM_SECTIONS = [
    ("sites", "Sites taking part", "Cơ sở tham gia hội chẩn"),
    ("participants", "Participants and their roles", "Thành phần tham dự và vai trò"),
    ("summary", "History and current state", "Tiền sử và tình trạng hiện tại"),
    ("findings", "Findings reviewed (clinical, lab, images)", "Kết quả đã xem xét (lâm sàng, cận lâm sàng, hình ảnh)"),
    ("discussion", "Discussion", "Thảo luận"),
    ("conclusion", "Conclusion (ICD-10)", "Kết luận"),
    ("recommendations", "Recommendations for treatment", "Hướng điều trị đề xuất")]


def test_each_section_carries_the_minutes_forms_title_and_its_code_says_the_same(worker: EhrWorker, ehr: Any,
                                                                              dev_key: Any) -> None:
    """The history section of the record was titled "Tóm tắt bệnh án" (coded "Summary") while the minutes form
    and the portal say "Tiền sử và tình trạng hiện tại"; the participants, findings and recommendations had
    other names than the form's too. A new record names each part as the form does; the codes are as before
    (records stored earlier are read by them)."""
    from sen_ehr.domain.consult_record import SECTION_SYSTEM

    sr = f"sr-{uuid.uuid4().hex[:8]}"
    data = consult_data(sr, "Patient/form-1")
    data["minutes"].update({"discussion": "Kiểm soát kém.", "sites": [{"reference": "Organization/hub"}]})
    comp = stored_record(worker, ehr, dev_key, data)
    assert [(s["code"]["coding"][0]["code"], s["code"]["coding"][0]["display"], s["title"])
            for s in comp["section"]] == FORM_SECTIONS
    assert all(s["code"]["coding"][0]["system"] == SECTION_SYSTEM for s in comp["section"])
    assert "Tóm tắt bệnh án" not in json.dumps(comp, ensure_ascii=False)


def _create_audits(db: Any, reference: str) -> int:
    return db["AuditEvent"].count_documents({"sp_entity": reference, "sp_subtype": "create"})


def test_a_record_cut_off_after_its_history_document_has_its_creates_audited_once_by_the_redelivery(
        worker: EhrWorker, ehr: Any, dev_key: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first delivery stores the Encounter and claims the Composition's version (its history document),
    then the database goes away (the step after the claim raises as the gone database did): nothing is
    audited yet. The redelivery finds both versions claimed and writes nothing, yet records each create's
    AuditEvent, once however often it comes (its id keyed by the version: a claim). A delivery whose
    AuditEvent the database refused fails (delivered again) and its redelivery records it, once."""
    from pymongo.errors import AutoReconnect
    from sen_ehr.domain.consult_record import handle_consult_completed, record_ids
    from sen_shared.fhir import store as fhir_store
    from sen_shared.fhir.audit import Auditor

    db = worker.db
    sr = f"sr-{uuid.uuid4().hex[:8]}"
    event = make_event("teleconsult.consult.completed", consult_data(sr, "Patient/cut-1"),
                       subject=f"ServiceRequest/{sr}")
    enc_id, comp_id = record_ids(f"ServiceRequest/{sr}")
    enc, comp = f"Encounter/{enc_id}", f"Composition/{comp_id}"

    def cut(w: Any) -> None:
        if w.resource_type == "Composition":
            raise AutoReconnect("the database went away")

    with monkeypatch.context() as m:
        m.setattr(fhir_store, "after_claim", cut)
        with pytest.raises(AutoReconnect):
            handle_consult_completed(event, db)
    assert db["Composition_history"].count_documents({"_id": f"{comp_id}/1"}) == 1
    assert db["Composition"].count_documents({"_id": comp_id}) == 0  # the relay rolls it forward later
    assert _create_audits(db, enc) == _create_audits(db, comp) == 0
    assert handle_consult_completed(event, db) == (False, False)  # the redelivery: nothing written again
    assert _create_audits(db, enc) == _create_audits(db, comp) == 1
    handle_consult_completed(event, db)
    assert _create_audits(db, enc) == _create_audits(db, comp) == 1
    r = ehr.get(f"/fhir/AuditEvent?entity={comp}&subtype=create", headers=bearer(dev_key, "admin"))
    assert r.status_code == 200, r.text
    [audit] = [e["resource"] for e in r.json()["entry"] if e["resource"]["resourceType"] == "AuditEvent"]
    assert audit["action"] == "C" and audit["agent"][0]["who"]["display"] == "service:ehr.consult-record"
    assert audit["subtype"][-1]["code"] == f"event:{event['id']}"

    # the AuditEvent's own insert cut off: the delivery fails rather than ack an unattributed change
    sr2 = f"sr-{uuid.uuid4().hex[:8]}"
    event2 = make_event("teleconsult.consult.completed", consult_data(sr2, "Patient/cut-2"),
                        subject=f"ServiceRequest/{sr2}")
    enc2, comp2 = (f"{t}/{i}" for t, i in zip(("Encounter", "Composition"), record_ids(f"ServiceRequest/{sr2}"),
                                              strict=True))
    refused = [True]
    real = Auditor._store

    def store_once_refused(self: Auditor, docs: list[dict[str, Any]]) -> None:
        if refused.pop() if refused else False:
            raise AutoReconnect("the database went away")
        real(self, docs)

    with monkeypatch.context() as m:
        m.setattr(Auditor, "_store", store_once_refused)
        with pytest.raises(AutoReconnect):
            handle_consult_completed(event2, db)
        assert _create_audits(db, enc2) == 0
        assert handle_consult_completed(event2, db) == (False, False)
    assert _create_audits(db, enc2) == _create_audits(db, comp2) == 1


def test_the_records_category_is_its_document_class_and_old_records_are_found_by_type(
        worker: EhrWorker, ehr: Any, dev_key: Any) -> None:
    """A record carries LOINC 11488-4 (Consult note) as its ``type`` and the document class LP173421-1 (Report) as
    its ``category``; one stored before (11488-4 for both: written here as the handler wrote it) still reads, and
    a search by ``type`` finds old and new alike, one by the new ``category`` the new one."""
    from sen_ehr.domain.consult_record import build_composition, create_once, record_ids
    from sen_shared.fhir.store import Store

    admin = bearer(dev_key, "admin")
    pid = f"cat-{uuid.uuid4().hex[:8]}"
    new = stored_record(worker, ehr, dev_key, consult_data(f"sr-{uuid.uuid4().hex[:8]}", f"Patient/{pid}"))
    assert new["type"]["coding"] == [{"system": "http://loinc.org", "code": "11488-4", "display": "Consult note"}]
    assert new["category"] == [{"coding": [{"system": "http://loinc.org", "code": "LP173421-1",
                                            "display": "Report"}]}]

    old_sr = f"ServiceRequest/sr-{uuid.uuid4().hex[:8]}"
    enc_id, old_id = record_ids(old_sr)
    old = build_composition(consult_data(old_sr.split("/")[1], f"Patient/{pid}"), old_id, enc_id)
    old["category"] = [{"coding": [{"system": "http://loinc.org", "code": "11488-4", "display": "Consult note"}]}]
    assert create_once(Store(worker.db, service="ehr"), old, old_id)
    r = ehr.get(f"/fhir/Composition/{old_id}", headers=admin)
    assert r.status_code == 200 and r.json()["category"] == old["category"], r.text

    def found(query: str) -> set[str]:
        resp = ehr.get(f"/fhir/Composition?patient=Patient/{pid}&{query}", headers=admin)
        assert resp.status_code == 200, resp.text
        return {e["resource"]["id"] for e in resp.json().get("entry", [])}

    assert found("type=http://loinc.org|11488-4") == {new["id"], old_id}
    assert found("category=http://loinc.org|LP173421-1") == {new["id"]}
    assert found("category=http://loinc.org|11488-4") == {old_id}
