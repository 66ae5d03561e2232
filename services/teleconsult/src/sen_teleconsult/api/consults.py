"""Thin handlers of the consult operations: request in, one workflow call, FHIR response out.

Every state-changing operation honours ``Idempotency-Key`` (``sen_shared.idempotency_key``).
"""

from __future__ import annotations

from typing import Any

from flask import request
from sen_shared.auth import current_principal
from sen_shared.fhir.audit import Record
from sen_shared.fhir.guarded import hidden_refusals
from sen_shared.fhir.http import FhirRequest, FhirResponse, from_flask, to_connexion
from sen_shared.fhir.names import one_line
from sen_shared.fhir.store import etag, parse_etag
from sen_shared.idempotency_key import HEADER, caller_scope, idempotent
from sen_shared.runtime import current

from .. import workflow
from ..adapters.ehr import EhrClient
from ..domain import consults as rules
from ..domain.consults import ConsultError
from ..workflow import Actor, Consults

Reply = Any
EXT_BREACHED = f"{rules.SEN}/StructureDefinition/sla-breached"


def _consults() -> Consults:
    return current().extras["consults"]


def _ehr() -> EhrClient:
    auth = request.headers.get("Authorization", "")
    token = auth.split(" ", 1)[1] if auth.lower().startswith("bearer ") else ""
    settings = current().settings
    return EhrClient(settings.ehr_url, settings.http_timeout, token)  # type: ignore[attr-defined]


def _retry_key() -> str | None:
    """The caller's Idempotency-Key, scoped like ``sen_shared.idempotency_key`` scopes it."""
    key = request.headers.get(HEADER)
    return f"{caller_scope(current_principal())}|{key}" if key else None


def _task_answer(req: FhirRequest, link: dict[str, Any]) -> Reply:
    """The Task as the step's link made it: its version ``n``, read from its history document (the
    version's claim, in place once the link is rolled forward). Not the current document: when
    another request rolled the same link forward at the same moment, its current write may not
    have landed yet, and the winner of 20 racing $accept answered the Task still 'requested'."""
    doc = _consults().store().vread_doc("Task", link["k"], str(link["n"]))
    return to_connexion(FhirResponse(200, doc["res"], {"ETag": etag(doc["v"])}), req)


def submit_transaction(req: FhirRequest, entries: list[dict[str, Any]]) -> FhirResponse:
    """A transaction Bundle holding a consult (ServiceRequest, optionally its Task): as ``$submit``."""
    srs, tasks = [], []
    for i, e in enumerate(entries):
        method = str((e.get("request") or {}).get("method", "")).upper()
        res = e.get("resource")
        rtype = res.get("resourceType") if isinstance(res, dict) else None
        if method in ("POST", "PUT") and rtype == "ServiceRequest":
            srs.append(res)
        elif method in ("POST", "PUT") and rtype == "Task":
            tasks.append(res)
        else:
            raise ConsultError("a consult transaction holds one ServiceRequest (POST) and optionally its Task: "
                               "nothing else", status=422, code="processing", expression=[f"Bundle.entry[{i}]"])
    if len(srs) != 1 or len(tasks) > 1:
        raise ConsultError("a consult transaction holds exactly one ServiceRequest and at most one Task",
                           status=422, code="processing", expression=["Bundle.entry"])
    sr = dict(srs[0])
    task = tasks[0] if tasks else {}
    owner = rules.ref_of(task.get("owner"))
    if owner and owner.startswith("Organization/") and not sr.get("performer"):
        sr["performer"] = [{"reference": owner}]  # the Task's owner names the hub
    # the Task's own reason, when it gives one, stays; else the ServiceRequest's first (rules.new_task)
    reason = task.get("reasonCode") or None
    return _consults().submit(sr, current_principal(), _ehr(), req.base, retry_key=_retry_key(), task_reason=reason)


@idempotent()
def submit(**_: Any) -> Reply:
    req = from_flask("ServiceRequest", operation="$submit")
    principal = current_principal()
    # a refusal (a role that submits no consult, a patient the EHR does not let it name): its AuditEvent the 403
    with hidden_refusals(_consults().fhir.auditor, principal, Record("create", "ServiceRequest", operation="$submit")):
        resp = _consults().submit(req.body, principal, _ehr(), req.base, retry_key=_retry_key())
    task = next((e["resource"] for e in (resp.body or {}).get("entry") or []
                 if (e.get("resource") or {}).get("resourceType") == "Task"), None)
    headers = {"Location": f"{req.base}/Task/{task['id']}"} if task else {}
    return to_connexion(FhirResponse(201, resp.body, headers), req)


def _op(name: str) -> FhirRequest:
    return from_flask("Task", operation=name)


def _actor() -> Actor:
    return Actor.of(current_principal())


def _if_match() -> int | None:
    """The Task version the caller saw (``If-Match: W/"3"``), the step taken only on it (412 else); None
    without the header. An unreadable one is -1: no version matches it (412, as the FHIR engine's)."""
    return parse_etag(request.headers.get("If-Match"))


@idempotent()
def accept(id: str, **_: Any) -> Reply:  # noqa: A002 - the spec's name
    req = _op("$accept")
    return _task_answer(req, _consults().accept(id, _actor(), if_match=_if_match()))


@idempotent()
def start(id: str, **_: Any) -> Reply:  # noqa: A002
    req = _op("$start")
    return _task_answer(req, _consults().start(id, _actor(), if_match=_if_match()))


@idempotent()
def reject(id: str, **_: Any) -> Reply:  # noqa: A002
    req = _op("$reject")
    reason = rules.one_string(req.body, "reason", required=True, max_len=2000)
    return _task_answer(req, _consults().reject(id, _actor(), reason or "", if_match=_if_match()))


@idempotent()
def cancel(id: str, **_: Any) -> Reply:  # noqa: A002
    req = _op("$cancel")
    reason = rules.one_string(req.body, "reason", required=False, max_len=2000) if req.body else None
    return _task_answer(req, _consults().cancel(id, _actor(), reason, if_match=_if_match()))


@idempotent()
def reassign(id: str, **_: Any) -> Reply:  # noqa: A002
    req = _op("$reassign")
    who = rules.one_reference(req.body, "practitioner", required=True, types=("Practitioner",))
    return _task_answer(req, _consults().reassign(id, _actor(), who or "", _ehr(), if_match=_if_match()))


@idempotent()
def request_info(id: str, **_: Any) -> Reply:  # noqa: A002
    req = _op("$request-info")
    question = rules.one_string(req.body, "question", required=True)
    return _task_answer(req, _consults().request_info(id, _actor(), question or "", if_match=_if_match()))


def _attachments(body: Any, most: int | None = None) -> list[dict[str, str]]:
    """The ``attachment`` parameters (valueReference to the EHR's records), each readable by the
    caller: one call to the EHR. ``most``: how many at most (422 beyond). Each is kept as a Reference
    with its ``display`` when the caller gave one (the file's name, one line, cut to
    ``DISPLAY_MAX``): the thread shows the names without asking the EHR."""
    found = rules.param_values(body, "attachment")
    if most is not None and len(found) > most:
        raise ConsultError(f"at most {most} attachments", status=422, code="processing",
                           expression=["Parameters.parameter.where(name='attachment')"])
    attachments: list[dict[str, str]] = []
    for i, p in enumerate(found):
        where = f"Parameters.parameter.where(name='attachment')[{i}]"
        ref = rules.ref_of(p.get("valueReference"))
        if ref is None or ref.split("/", 1)[0] not in rules.SUPPORTING_TYPES:
            raise ConsultError(f"an attachment references the EHR's {', '.join(rules.SUPPORTING_TYPES)}",
                               status=422, code="processing", expression=[where])
        display = p["valueReference"].get("display")
        if display is not None and (not isinstance(display, str) or not one_line(display)):
            raise ConsultError("an attachment's display is its name: a non-empty string", status=422,
                               code="processing", expression=[f"{where}.valueReference.display"])
        attachments.append({"reference": ref, **({"display": one_line(display)} if display is not None else {})})
    if attachments:
        _ehr().check_all_readable([(a["reference"], "Parameters.parameter.where(name='attachment')")
                                   for a in attachments])
    return attachments


@idempotent()
def provide_info(id: str, **_: Any) -> Reply:  # noqa: A002
    req = _op("$provide-info")
    answer = rules.one_string(req.body, "answer", required=True)
    return _task_answer(req, _consults().provide_info(id, _actor(), answer or "", _attachments(req.body),
                                                         if_match=_if_match()))


@idempotent()
def message(id: str, **_: Any) -> Reply:  # noqa: A002
    """A free message on the consult's thread (either side; the Task's state stays): 201 and the
    Communication (200 when a retry under the same key finds the one its first try stored)."""
    req = _op("$message")
    text = rules.one_string(req.body, "text", required=True, max_len=rules.MESSAGE_MAX_CHARS)
    created, comm = _consults().post_message(
        id, _actor(), text or "", lambda: _attachments(req.body, most=rules.MESSAGE_MAX_ATTACHMENTS),
        retry_key=_retry_key())
    headers = {"Location": f"{req.base}/Communication/{comm['id']}/_history/1", "ETag": etag(1)}
    return to_connexion(FhirResponse(201 if created else 200, comm, headers), req)


@idempotent()
def complete(id: str, **_: Any) -> Reply:  # noqa: A002
    req = _op("$complete")
    minutes = rules.parse_minutes(req.body)
    return _task_answer(req, _consults().complete(id, _actor(), minutes, if_match=_if_match()))


def worklist() -> Reply:
    # a parameter it does not take is a 400 (from_flask: its definition's, specs/teleconsult.yaml), not
    # ignored: a filter never applied would answer more than asked for
    req = from_flask("Task", operation="$worklist", body=False)
    statuses = [s for v in (req.param("status") or ",".join(rules.OPEN_STATES)).split(",") if (s := v.strip())]
    unknown = [s for s in statuses if s not in (*rules.OPEN_STATES, *rules.FINAL_STATES)]
    if unknown:
        raise ConsultError(f"status takes {', '.join((*rules.OPEN_STATES, *rules.FINAL_STATES))}", status=400,
                           expression=["status"])
    priority = req.param("priority")
    if priority is not None and priority not in rules.PRIORITY_RANK:
        raise ConsultError(f"priority takes {', '.join(rules.PRIORITIES)}", status=400, expression=["priority"])
    count_text, offset_text = req.param("_count") or "50", req.param("_offset") or "0"
    if not (count_text.isdigit() and offset_text.isdigit() and len(count_text) < 5 and len(offset_text) < 7):
        raise ConsultError("_count and _offset are non-negative integers", status=400, expression=["_count"])
    count, offset = max(1, min(int(count_text), 500)), int(offset_text)
    cursor = req.param("_cursor")
    after = workflow.worklist_key(cursor) if cursor is not None else None  # a bad one: 400
    principal = current_principal()
    refused = Record("search", resource_type="Task", operation="$worklist")  # a role without one: its AuditEvent
    # one row more than the page: whether there is a next page (its link is a keyset cursor after the page's
    # last row, so consults leaving or joining the list meanwhile shift nothing: each shown once, in order)
    with hidden_refusals(_consults().fhir.auditor, principal, refused):
        rows, total = _consults().worklist_page(principal, statuses=statuses, specialty=req.param("specialty"),
                                                facility=req.param("facility"), priority=priority, offset=offset,
                                                count=count + 1, after=after)
    page = [(task, breached) for task, breached, _ in rows[:count]]
    own = [(k, v) for k, v in req.params if k not in ("_offset", "_cursor")]
    from urllib.parse import urlencode

    path = f"{req.base}/Task/$worklist"
    links = [{"relation": "self", "url": f"{path}?{urlencode(req.params)}" if req.params else path}]
    if len(rows) > count:
        links.append({"relation": "next",
                      "url": f"{path}?{urlencode([*own, ('_cursor', workflow.worklist_cursor(rows[count - 1][2]))])}"})
    entries = [{"fullUrl": f"{req.base}/Task/{task['id']}", "resource": task,
                "search": {"mode": "match", "extension": [{"url": EXT_BREACHED, "valueBoolean": breached}]}}
               for task, breached in page]
    rec = Record("search", resource_type="Task", status=200, operation="$worklist", count=len(entries),
                 query_params=sorted({k for k, _ in req.params}),
                 patients=[t.get("for", {}).get("reference") for t, _ in page if t.get("for")][:200])
    _consults().fhir.auditor.record(principal, rec)
    return to_connexion(FhirResponse(200, {"resourceType": "Bundle", "type": "searchset", "total": total,
                                           "link": links, "entry": entries}), req)
