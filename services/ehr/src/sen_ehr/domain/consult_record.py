"""The consult record: ``teleconsult.consult.completed`` → an Encounter (class VR) and a Composition.

Exactly once however often the event arrives: the two resources get ids
derived from the event's ServiceRequest (uuid5), and each is written with one
guarded single-document operation, an insert with that fixed ``_id``; a
duplicate key means "already applied". They are written through the FHIR
engine's :class:`~sen_shared.fhir.store.Store` (``prepare_create``), so the
documents carry the search index fields, a history version and their
``ehr.*`` outbox events exactly like a write through the REST API.

Crash safety without transactions: the Encounter is written before the
Composition, and a redelivery re-runs both steps; a history version missing
after a crash between the current insert and the history insert is written
on the next delivery. One ServiceRequest has one consult record: a second,
different event for the same ServiceRequest is recognised as already applied
(amendments are a later feature; the first signed minutes stay).

Each create is attributed by one AuditEvent whose id is keyed by the version it made
(``audit.version_event_id``): every delivery records both, the insert a claim, so a
redelivery after a write cut off between its history document and its AuditEvent records the
create's AuditEvent once, and one after a complete write adds nothing. An AuditEvent the
database refused fails the delivery (the event is delivered again) rather than going unrecorded.

The Composition holds every part of the minutes the event carries, a section each (sites,
participants, summary, findings, discussion, conclusion, recommendations) and the chair as the
professional attester, the secretary (when the minutes name one) as a second, marked by its role extension.
Records stored before the sites and discussion sections were written lack
them: the event is not kept once handled (nor in teleconsult's outbox once sent), so there is
nothing here to backfill from; the consult's Task keeps the whole minutes (its ``minutes`` output).
"""

from __future__ import annotations

import html
import logging
import uuid
from typing import Any

from pymongo.database import Database
from sen_shared import icd10
from sen_shared.auth import Principal
from sen_shared.fhir.audit import Auditor, Record, version_event_id
from sen_shared.fhir.names import name_and_role, name_key, same_person
from sen_shared.fhir.store import Store
from sen_shared.fhir.validate import validate_resource

log = logging.getLogger("sen.ehr.consult_record")

PURPOSE = "ehr.consult-record"
SERVICE = "ehr"
NAMESPACE = uuid.UUID("8f6d2c1e-6b1a-5c3e-9d7f-2a4b6c8e0f13")  # Sen consult records
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
LOINC = "http://loinc.org"
SECTION_SYSTEM = "https://sen.vn/fhir/CodeSystem/consult-minutes-section"
CONCLUSION_EXT = "https://sen.vn/fhir/StructureDefinition/consult-conclusion"
CONSULT_ID_SYSTEM = "https://sen.vn/fhir/sid/consult-service-request"
# an attester's part in the minutes (R4's Composition.attester has no role: its mode says in what capacity);
# only the secretary's carries it, the chair's attester is the one without (as every record before it)
ATTESTER_ROLE_EXT = "https://sen.vn/fhir/StructureDefinition/consult-attester-role"
ATTESTER_ROLE_SYSTEM = "https://sen.vn/fhir/CodeSystem/consult-minutes-role"
SECRETARY_ROLE = {"coding": [{"system": ATTESTER_ROLE_SYSTEM, "code": "secretary", "display": "Secretary"}],
                  "text": "Thư ký"}
TITLE = "Biên bản hội chẩn từ xa"
ACTOR = Principal(sub="service:ehr.consult-record", roles=frozenset({"service"}))

# Each section of the minutes: its code in SECTION_SYSTEM -> (the code's display, the section's title), the
# titles the Ministry's minutes form gives its parts (Circular 49/2017/TT-BYT, Decision 4054/QĐ-BYT), as the
# portal shows them. The codes never change: records stored before 2026-12-06 carry older titles and displays
# ("Tóm tắt bệnh án", "Summary"; "Thành phần tham gia"; "Kết quả hội chẩn", "Findings"; "Hướng xử trí và đề
# nghị", "Recommendations"), and a reader names a section by its code (the portal's consult record page).
SECTIONS: dict[str, tuple[str, str]] = {
    "sites": ("Sites taking part", "Cơ sở tham gia hội chẩn"),
    "participants": ("Participants and their roles", "Thành phần tham dự và vai trò"),
    "summary": ("History and current state", "Tiền sử và tình trạng hiện tại"),
    "findings": ("Findings reviewed (clinical, lab, images)", "Kết quả đã xem xét (lâm sàng, cận lâm sàng, hình ảnh)"),
    "discussion": ("Discussion", "Thảo luận"),
    "conclusion": ("Conclusion (ICD-10)", "Kết luận"),
    "recommendations": ("Recommendations for treatment", "Hướng điều trị đề xuất"),
}


def record_ids(service_request: str) -> tuple[str, str]:
    """The Encounter and Composition ids of the consult of ``ServiceRequest/<id>`` (deterministic)."""
    return (str(uuid.uuid5(NAMESPACE, f"{service_request}|Encounter")),
            str(uuid.uuid5(NAMESPACE, f"{service_request}|Composition")))


def _div(*paragraphs: str) -> str:
    body = "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs if p)
    return f'<div xmlns="http://www.w3.org/1999/xhtml">{body or "<p>-</p>"}</div>'


def _section(code: str, display: str, title: str, *text: str, system: str = SECTION_SYSTEM,
             **extra: Any) -> dict[str, Any]:
    return {"title": title, "code": {"coding": [{"system": system, "code": code, "display": display}]},
            "text": {"status": "generated", "div": _div(*text)}, **extra}


def _named(coding: dict[str, Any]) -> dict[str, Any]:
    """An ICD-10 coding sent without a display (the event allows it) with the list's Vietnamese title
    (:func:`sen_shared.icd10.title`), so the record names every code it holds ("N18.3 — Suy thận mạn, giai
    đoạn 3", never "N18.3" alone); one with a display, or a code the list does not hold, as sent."""
    name = None if coding.get("display") or coding.get("system") != icd10.SYSTEM else icd10.title(
        str(coding.get("code") or ""))
    return {**coding, "display": name} if name else coding


def _person_line(p: dict[str, Any]) -> str:
    """One line of the participants section: "<name> — <role>". A role that names the person already
    (older portals sent the whole participants text, the chair's name first, as the chair's role; its title
    may differ from the name's: ``same_person``, or the name is somewhere in it) is the line itself: the
    name is not said twice."""
    name, role = str(p.get("display") or p.get("reference") or ""), str(p.get("role") or "")
    first = next((e for line in role.splitlines() for e in line.split(";") if e.strip()), "")
    if name and (same_person(name_and_role(first)[0], name) or f" {name_key(name)} " in f" {name_key(role)} "):
        return role
    return f"{name} — {role}".strip(" —")


def _chair(m: dict[str, Any], performer: str) -> dict[str, Any]:
    """The attester's party: the chair who signed (``minutes.chair``; older events named none: the performer),
    named as the minutes' participant of that reference was, the title as typed ("BS.CKII Nguyễn Văn An");
    the reference alone when no participant names them."""
    ref = m.get("chair") or performer
    named = next((str(p["display"]) for p in m.get("participants") or []
                  if p.get("reference") == ref and p.get("display")), "")
    return {"reference": ref, **({"display": named} if named else {})}


def _secretary(m: dict[str, Any], time: str) -> list[dict[str, Any]]:
    """The secretary who took the minutes and signs them beside the chair (``minutes.secretary``; events sent
    before it, or minutes naming none: no attester): a professional attester, as the chair (both sign in their
    professional capacity; the chair's is the decision), told from the chair's by its role extension; the party
    named as the minutes print it, with their Practitioner when the event has it."""
    sec = m.get("secretary") or {}
    if not sec.get("display"):
        return []
    party = {**({"reference": sec["reference"]} if sec.get("reference") else {}), "display": sec["display"]}
    return [{"extension": [{"url": ATTESTER_ROLE_EXT, "valueCodeableConcept": SECRETARY_ROLE}],
             "mode": "professional", "time": time, "party": party}]


def _sites(sites: list[dict[str, Any]]) -> dict[str, Any]:
    """The sites taking part (Circular 49/2017/TT-BYT): one line each (its name, else its reference), and
    each Organization as an entry."""
    section = _section("sites", *SECTIONS["sites"],
                       *(str(s.get("display") or s["reference"]) for s in sites))
    section["entry"] = [{"reference": s["reference"]} for s in sites]
    return section


def build_encounter(data: dict[str, Any], enc_id: str) -> dict[str, Any]:
    sr = data["serviceRequest"]
    enc: dict[str, Any] = {
        "resourceType": "Encounter",
        "identifier": [{"system": CONSULT_ID_SYSTEM, "value": sr.split("/", 1)[1]}],
        "status": "finished",
        "class": {"system": ACT_CODE, "code": "VR", "display": "virtual"},
        "type": [{"text": "Hội chẩn từ xa (teleconsultation)"}],
        "subject": {"reference": data["patient"]},
        "basedOn": [{"reference": sr}],
        "participant": [{"type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                               "code": "CON", "display": "consultant"}]}],
                         "individual": {"reference": data["performer"]}}],
        "period": {"start": data["period"]["start"], "end": data["period"]["end"]},
    }
    if data.get("appointment"):
        enc["appointment"] = [{"reference": data["appointment"]}]
    enc["id"] = enc_id
    return enc


def build_composition(data: dict[str, Any], comp_id: str, enc_id: str) -> dict[str, Any]:
    m = data["minutes"]
    # every ICD-10 code of the conclusion (``diagnoses``; older events carried the first one alone), each named
    icds = [_named({k: c[k] for k in ("system", "code", "display") if c.get(k)})
            for c in m.get("diagnoses") or [m["conclusion"]]]
    people = [_person_line(p) for p in m["participants"]]
    participants = _section("participants", *SECTIONS["participants"], *people)
    refs = [{"reference": p["reference"]} for p in m["participants"] if p.get("reference")]
    if refs:
        participants["entry"] = refs
    # the conclusion as the doctor wrote it (optional; older events carried it in recommendations), then its code
    written = m.get("conclusionText") or ""
    conclusion = _section("conclusion", *SECTIONS["conclusion"], written,
                          *(f"{c['code']}{' — ' + c['display'] if c.get('display') else ''}" for c in icds))
    conclusion["extension"] = [{"url": CONCLUSION_EXT, "valueCodeableConcept": {
        "coding": icds, **({"text": written} if written else {})}}]
    comp: dict[str, Any] = {
        "resourceType": "Composition",
        "identifier": {"system": CONSULT_ID_SYSTEM, "value": data["serviceRequest"].split("/", 1)[1]},
        "status": "final",
        # the kind of document (LOINC's consult note: search the records by it, ``type``, whenever stored) and its
        # class (LOINC Document Ontology's "Report", as FHIR R4's own consult note example, Composition/example,
        # classes its 11488-4). Records stored before 2026-12-06 carry 11488-4 as their category too.
        "type": {"coding": [{"system": LOINC, "code": "11488-4", "display": "Consult note"}]},
        "category": [{"coding": [{"system": LOINC, "code": "LP173421-1", "display": "Report"}]}],
        "subject": {"reference": data["patient"]},
        "encounter": {"reference": f"Encounter/{enc_id}"},
        "date": data["completedAt"],
        "author": [{"reference": data["performer"]}],
        "title": TITLE,
        "event": [{"period": {"start": data["period"]["start"], "end": data["period"]["end"]},
                   "detail": [{"reference": data["serviceRequest"]}]}],
        # every part of the minutes the doctor signed, in the minutes' order (Decision 4054/QĐ-BYT): the
        # sites and the discussion are optional in the event (older events carried neither), so each is a
        # section when sent and absent otherwise
        "section": [
            *([_sites(m["sites"])] if m.get("sites") else []),
            participants,
            _section("summary", *SECTIONS["summary"], m["summary"]),
            _section("findings", *SECTIONS["findings"], m["findings"]),
            *([_section("discussion", *SECTIONS["discussion"], m["discussion"])] if m.get("discussion") else []),
            conclusion,
            _section("recommendations", *SECTIONS["recommendations"],
                     m["recommendations"]),
        ],
    }
    # the chair who signed the minutes off, by name as typed (:func:`_chair`), then the secretary (:func:`_secretary`)
    comp["attester"] = [{"mode": "professional", "time": data["completedAt"], "party": _chair(m, data["performer"])},
                        *_secretary(m, data["completedAt"])]
    comp["id"] = comp_id
    return comp


def create_once(store: Store, resource: dict[str, Any], rid: str) -> bool:
    """Insert ``resource`` as version 1 of ``rid`` unless it exists; True when written now.

    Version 1 is claimed like any create (its history document first): a redelivery loses the
    claim (409) and writes nothing; a first delivery that died between its claim and its current
    write is rolled forward by the store once the claim is older than its grace period.
    """
    return store.create_once(resource, rid)[0]


def handle_consult_completed(event: dict[str, Any], db: Database) -> tuple[bool, bool]:
    """Store the consult record of a ``teleconsult.consult.completed`` event; (encounter, composition) written now."""
    data = event["data"]
    enc_id, comp_id = record_ids(data["serviceRequest"])
    encounter = build_encounter(data, enc_id)
    composition = build_composition(data, comp_id, enc_id)
    validate_resource(encounter, expected_type="Encounter")
    validate_resource(composition, expected_type="Composition")
    store = Store(db, service=SERVICE)
    wrote_enc = create_once(store, encounter, enc_id)
    wrote_comp = create_once(store, composition, comp_id)
    auditor = Auditor(db, SERVICE)
    # every delivery, not only the one that wrote: a delivery cut off after its creates (or after its
    # history documents: rolled forward since) never recorded them; the fixed id makes it once
    for rtype, rid in (("Encounter", enc_id), ("Composition", comp_id)):
        auditor.record_once(ACTOR, Record("create", resource_type=rtype, rid=rid, patients=[data["patient"]],
                                          status=201, operation=f"event:{event['id']}",
                                          event_id=version_event_id("create", rtype, rid, 1)))
    if not (wrote_enc or wrote_comp):
        log.info("consult record already stored", extra={"event_id": event["id"], "encounter": enc_id})
    return wrote_enc, wrote_comp
