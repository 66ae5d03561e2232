"""``Patient/[id]/$everything``: the patient and their compartment, paged across resource types.

The page cursor is ``<type>.<search cursor>``: the types are walked in a
fixed order (skipping those that never held a resource), each with the search engine's own keyset paging, so a client
paging through gets every resource exactly once.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from .http import FhirRequest, FhirResponse
from .outcome import FhirError
from .search import parse_search
from .search.executor import search as run_search
from .store import types_present
from .validate import check_id

DEFAULT_COUNT = 100
MAX_COUNT = 1000


def compartment_types(server: Any) -> list[str]:
    from .rest import compartment_param

    types = [t for t in sorted(server.types) if t != "Patient" and compartment_param(t)]
    return ["Patient", *types] if "Patient" in server.types else types


def everything(server: Any, req: FhirRequest, patient: dict[str, Any] | None = None) -> FhirResponse:
    """``patient``: the Patient's document when the caller has read it already (else read here)."""
    from .rest import compartment_param

    pid = check_id(req.rid)
    if patient is None or patient.get("_id") != pid or patient.get("del") or "res" not in patient:
        patient = server.store().read_doc("Patient", pid)  # 404 / 410 first
    raw_count = req.param("_count")
    if raw_count is not None and (not raw_count.isdigit() or len(raw_count) > 6):
        raise FhirError("_count must be a positive integer", status=400, expression=["_count"])
    count = max(1, min(int(raw_count), MAX_COUNT)) if raw_count else DEFAULT_COUNT
    order = compartment_types(server)
    wanted = req.param("_type")
    if wanted:
        allowed = {t.strip() for t in wanted.split(",")}
        order = [t for t in order if t in allowed]
    present = types_present(server.db)  # skip the types that never held a resource
    types = [t for t in order if present is None or t in present or t == "Patient"]
    since = req.param("_since")
    index, inner = 0, None
    cursor = req.param("_cursor")
    if cursor:
        head, _, inner_text = cursor.partition(".")
        if head not in order:
            raise FhirError("_cursor is not one this server gave out", status=400, expression=["_cursor"])
        rank = order.index(head)
        index = next((i for i, t in enumerate(types) if order.index(t) >= rank), len(types))
        inner = (inner_text or None) if index < len(types) and types[index] == head else None
    entries: list[dict[str, Any]] = []
    next_cursor: str | None = None
    while index < len(types):
        rtype = types[index]
        if rtype == "Patient" and not inner and not since:  # read above: no second query
            entries.append({"fullUrl": f"{req.base}/Patient/{pid}", "resource": patient["res"],
                            "search": {"mode": "match"}})
            index += 1
            if len(entries) >= count:
                next_cursor = f"{types[index]}." if index < len(types) else None
                break
            continue
        param = compartment_param(rtype)
        params = [("_id", pid)] if param == "_id" else [(param or "patient", f"Patient/{pid}")]
        if since:
            params.append(("_lastUpdated", f"ge{since}"))
        sreq = parse_search(rtype, params)
        sreq.count = count - len(entries)
        sreq.cursor = inner
        result = run_search(server.db, sreq)
        entries += [{"fullUrl": f"{req.base}/{rtype}/{d['_id']}", "resource": d["res"], "search": {"mode": "match"}}
                    for d in result.docs]
        if result.next_cursor:
            next_cursor = f"{rtype}.{result.next_cursor}"
            break
        index, inner = index + 1, None
        if len(entries) >= count:
            if index < len(types):
                next_cursor = f"{types[index]}."
            break
    path = f"{req.base}/Patient/{pid}/$everything"
    own = [(k, v) for k, v in req.params if k != "_cursor"]
    links = [{"relation": "self", "url": f"{path}?{urlencode(req.params)}" if req.params else path}]
    if next_cursor:
        links.append({"relation": "next", "url": f"{path}?{urlencode([*own, ('_cursor', next_cursor)])}"})
    return FhirResponse(200, {"resourceType": "Bundle", "type": "searchset", "link": links, "entry": entries})
