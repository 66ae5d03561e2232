"""The teleconsultation minutes printed for the patient's paper file: the EHR's consult record (the
Composition the record page shows) as the Ministry's form, "Biên bản hội chẩn từ xa", a PDF the chair signs.

The layout a Vietnamese hospital files (Circular 49/2017/TT-BYT, Decision 4054/QĐ-BYT): the facility that
held the consult (the hub) at the top left, the national motto at the top right, the title, the time and the
patient, the minutes' sections in the record page's order and with its titles, the conclusion's ICD-10 codes
with their Vietnamese titles, and the signature blocks of the secretary (thư ký: the one the minutes name, else
a participant whose role says so) and the chair (chủ trì) with their names; A4, numbered pages, times in
Asia/Ho_Chi_Minh. The document is Vietnamese whatever the page's language (a record for the file, as billing's
receipt). Printed by :func:`sen_shared.pdf.html_to_pdf` (DejaVu Sans, nothing fetched), the one mechanism
billing's receipts use.

Who may print it: whoever may open the record page (the same EHR read, the same refusals); a record there is
none of to show is the record page's 404, in the user's language.
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, redirect, render_template, url_for
from flask_babel import force_locale
from sen_shared.fhir.names import name_and_role, same_person
from sen_shared.fhir.search.text import normalize
from sen_shared.pdf import FONT_FAMILY, html_to_pdf

from . import backend, bp, icd10, login_required, patients
from .backend import BackendError, entries, fhir_get
from .clinic import (
    CONSULT_RECORD_SYSTEM,
    _consult_request,
    no_consult_record,
    patients_consult_record,
    record_consult,
    record_sections,
)
from .directory import kind, party
from .formatting import parse_instant

SECRETARY_WORDS = ("thu ky", "secretary")  # a participant's role naming the secretary (accents off)


def participant_lines(sections: list[dict[str, Any]]) -> list[str]:
    """The participants section's entries, one a line: the EHR writes the chair's "<name> — <role>" and the
    others' entries as typed, joined by "; " (the portal's ``doctor.chair_role``)."""
    return [e.strip() for s in sections if s["code"] == "participants"
            for p in s["paragraphs"] for e in p.split(";") if e.strip()]


def secretary(lines: list[str], chair: str) -> str:
    """The secretary's name for minutes that do not name one (the EHR's record has no secretary attester: signed
    before the minutes had the field, or left empty): the first participant whose role says thư ký (secretary)
    and who is not the chair; "" when none does (the block is then signed by hand, the name written under it)."""
    for line in lines:
        name, role = name_and_role(line)
        if role and any(w in normalize(role) for w in SECRETARY_WORDS) and not same_person(name, chair):
            return name
    return ""


def hub_name(sr: dict[str, Any] | None, task: dict[str, Any] | None, sections: list[dict[str, Any]]) -> str:
    """The facility that held the consult, by the directory's name: the hub the consult was sent to (the
    ServiceRequest's performer), else the Task's owner while a hub holds it; when teleconsult does not say,
    the portal's hub among the record's sites taking part, else the first site; "" when nothing names one."""
    refs = [str(p.get("reference") or "") for p in (sr or {}).get("performer") or [] if isinstance(p, dict)]
    refs.append(str(((task or {}).get("owner") or {}).get("reference") or ""))
    sites = [str(e["reference"]) for s in sections if s["code"] == "sites" for e in s["entries"]]
    hub = f"Organization/{backend.settings().hub}"
    refs += [hub] if hub in sites else sites[:1]
    ref = next((r for r in refs if kind(r) == "Organization"), "")
    name = party(ref) if ref else ""
    return ref.rpartition("/")[2] if name == ref else name


@bp.route("/patients/<pid>/consult-records/<cid>.pdf")
@login_required("clinic", "doctor")
def consult_record_pdf(pid: str, cid: str) -> Any:
    """The consult record ``cid`` printed as the Ministry's minutes (A4 PDF, Vietnamese)."""
    found = patients_consult_record(pid, cid)
    if found is None:
        return no_consult_record(pid)
    comp, record = found
    task, sr = record_consult(record["sr"])
    with force_locale("vi"):
        sections = record_sections(comp)
        lines = participant_lines(sections)
        chair = party(record["chair"]) if record["chair"] else ""
        page = render_template(
            "consult_record_print.html", record=record, sections=sections, participants=lines,
            chair=chair, secretary=record["secretary"] or secretary(lines, chair),
            facility=hub_name(sr, task, sections),
            patient=patients.one(pid), signed=parse_instant(record["date"]), font_family=FONT_FAMILY,
            diagnoses=[icd10.line(c, "vi") for c in record["codes"]])
    return Response(html_to_pdf(page), 200, mimetype="application/pdf", headers={
        "Cache-Control": "no-store", "Content-Disposition": f'inline; filename="bien-ban-hoi-chan-{cid}.pdf"'})


@bp.route("/consults/<tid>/minutes.pdf")
@login_required("clinic")
def consult_minutes_pdf(tid: str) -> Any:
    """From the clinic's consult page: the consult's record in the EHR (the Composition whose identifier is
    the consult's ServiceRequest), printed (:func:`consult_record_pdf`, a redirect). Teleconsult says the
    consult is completed and the EHR has no record of it yet (it stores it from the consult's completed
    event, a moment after): :func:`being_filed`. Not completed, or not the user's: the record's 404."""
    pid = None
    if patients.FHIR_ID.fullmatch(tid):
        try:
            task, sr, pid = _consult_request(tid)
            if sr is not None and pid:
                found = entries(fhir_get("ehr", "/fhir/Composition", {
                    "identifier": f"{CONSULT_RECORD_SYSTEM}|{sr['id']}", "subject": f"Patient/{pid}",
                    "_count": "1", "_elements": "identifier,subject"}), "Composition")
                cid = str(found[0].get("id") or "") if found else ""
                if patients.FHIR_ID.fullmatch(cid):
                    return redirect(url_for("web.consult_record_pdf", pid=pid, cid=cid))
                if not found and task.get("status") == "completed":
                    return being_filed(tid)
        except BackendError as err:
            if err.kind != "refused" or err.status not in (403, 404):
                raise
    return no_consult_record(pid or "")


FILING_RETRY_SECONDS = 5  # the EHR stores the record from the completed event within a second or two


def being_filed(tid: str) -> Any:
    """The print link of a consult completed moments ago, whose record the EHR has not stored yet (the
    completed event still on its way): said so, in the user's language, with the link again. 202 Accepted
    with Retry-After, not 200: the PDF asked for does not exist yet but will, so no client (a script, a
    browser's cache, a test) takes this page for the minutes; not 404: the record is not missing, and not 503:
    nothing is down."""
    response = current_app.make_response((render_template("minutes_filing.html", tid=tid), 202))
    response.headers["Retry-After"] = str(FILING_RETRY_SECONDS)
    return response
