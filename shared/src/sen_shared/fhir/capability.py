"""The CapabilityStatement: exactly the interactions, types, parameters and operations that work."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from .search.definitions import params_for
from .search.mongo import WORD_PARAMS
from .store import iso, now

_TYPE_INTERACTIONS = ("read", "vread", "update", "patch", "delete", "history-instance", "history-type",
                      "create", "search-type")
READ_ONLY_INTERACTIONS = ("read", "vread", "history-instance", "history-type", "search-type")
# the audit trail on every Sen server: written by the server itself (audit.py: each read, search, write and refusal),
# read and searched over the API, never created, updated, patched or deleted there (405 for every caller): a record
# a client wrote could forge the trail
SERVER_WRITTEN = frozenset({"AuditEvent"})
SERVER_WRITTEN_DOCUMENTATION = ("The audit trail: written by this server itself (every read, search and write of "
                                "patient data, every refusal); read and searched here, never created, updated, "
                                "patched or deleted through the API (405 for every caller, admins too)")
_DOC = "http://hl7.org/fhir/SearchParameter/"


def interactions(config: Any, resource_type: str) -> tuple[str, ...]:
    """The interactions ``resource_type`` allows on the server of ``config``: the service's own list
    (:attr:`FhirConfig.interactions`), else read-only ones (:attr:`FhirConfig.read_only`, and the audit trail
    the server writes: :data:`SERVER_WRITTEN`, whatever a service's list says), else all. The
    CapabilityStatement lists these; the engine refuses any other write with 405
    (:meth:`FhirServer.check_writable`)."""
    if resource_type in SERVER_WRITTEN:
        return READ_ONLY_INTERACTIONS
    own = config.interactions.get(resource_type)
    if own is not None:
        return tuple(c for c in _TYPE_INTERACTIONS if c in own)
    if resource_type in config.read_only:
        return READ_ONLY_INTERACTIONS
    return _TYPE_INTERACTIONS


# the interaction of each method on each path shape of a type (R4 http.html; "*" a type, "#" an id, "@" a
# version); HEAD goes with GET
_GETS = ("GET", "HEAD")
_INTERACTION_OF: dict[tuple[str, ...], dict[str, str]] = {
    ("*",): {"GET": "search-type", "HEAD": "search-type", "POST": "create", "PUT": "update"},
    ("*", "_search"): {"GET": "search-type", "HEAD": "search-type", "POST": "search-type"},
    ("*", "_history"): dict.fromkeys(_GETS, "history-type"),
    ("*", "#"): {"GET": "read", "HEAD": "read", "PUT": "update", "PATCH": "patch", "DELETE": "delete"},
    ("*", "#", "_history"): dict.fromkeys(_GETS, "history-instance"),
    ("*", "#", "_history", "@"): dict.fromkeys(_GETS, "vread")}


def _shape(parts: list[str]) -> tuple[str, ...]:
    """The :data:`_INTERACTION_OF` key of a path's parts (``["Patient", "p1", "_history"]``)."""
    return ("*", *(p if p in ("_history", "_search") and i in (1, 2) else "@" if i == 3 else "#"
                   for i, p in enumerate(parts[1:], 1)))


def served_methods(config: Any, template: str, path: str, methods: tuple[str, ...]) -> tuple[str, ...]:
    """Of ``methods``, those the spec routes on ``template`` (a path under the FHIR base, e.g.
    ``/{type}/{id}``), the ones the server of ``config`` serves on ``path`` (``/AuditEvent/a1``): none on a
    ``{type}`` that is not a served type (its answer is 404), the methods of a type's interactions
    (``[type]``, ``[type]/_search``, ``[type]/_history``, ``[type]/[id]``, its ``_history`` and
    ``_history/[vid]``) as its :func:`interactions` say; the others (operations) as routed.
    ``sen_shared.allow`` makes a 405's ``Allow`` of these; where none is left, the answer is a 404
    (:meth:`FhirServer.unserved`)."""
    names, parts = template.strip("/").split("/"), path.strip("/").split("/")
    if len(names) != len(parts):
        return methods
    types = config.resource_types
    if any(n == "{type}" and p not in types for n, p in zip(names, parts, strict=True)):
        return ()
    shape = _shape(parts)
    if shape == ("*", "_search") and parts[0] in config.search_params:
        return ()  # a type with a search of its own is searched by its GET [type] only (FhirServer.search_form)
    by_method = _INTERACTION_OF.get(shape) if parts[0] in types and "$" not in path else None
    if by_method is not None:
        codes = interactions(config, parts[0])
        return tuple(m for m in methods if m not in by_method or by_method[m] in codes)
    return methods


@lru_cache(maxsize=256)
def _search_params(resource_type: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((code, p.type) for code, p in params_for(resource_type).items() if p.supported))


def _type_search_params(config: Any, resource_type: str) -> tuple[tuple[str, str], ...]:
    own = config.search_params.get(resource_type)
    every = _search_params(resource_type)
    return every if own is None else tuple((code, t) for code, t in every if code in own)


_WORDS_DOC = ("Sen: every word of the value is matched, accent- and case-insensitively, as the prefix of "
              "some word of the name, in any order (name=tran hong finds Trần Thị Hồng Ánh)")


def _search_param(rtype: str, code: str, ptype: str) -> dict[str, str]:
    param = {"name": code, "type": ptype, "definition": f"{_DOC}{rtype}-{code}"}
    if ptype == "string" and code in WORD_PARAMS:
        param["documentation"] = _WORDS_DOC
    return param


def _definition_url(base: str, op: dict[str, Any]) -> str:
    return f"{base.rstrip('/')}/OperationDefinition/{op['id']}"


# an operation's parameters in the service's spec: OperationDefinition.parameter items (name, use, min, max,
# type or part, documentation), what the CapabilityStatement's definition lists and what the operation takes
# (``parameters.check_known``: any other is a 400)
PARAMETERS = "x-fhir-parameters"
_OPERATION_PATH = re.compile(r"/([A-Z][A-Za-z]+)(/\{id\})?/\$([a-z][a-z0-9-]*)")


def spec_operations(spec: Mapping[str, Any], base_path: str) -> tuple[dict[str, Any], ...]:
    """An OperationDefinition (``<Type>-<code>``) of each of the service's own FHIR operations in its OpenAPI
    spec: a path ``<base>/<Type>/$<code>`` (on the type) or ``<base>/<Type>/{id}/$<code>`` (on an instance),
    its summary the description, its parameters the spec's :data:`PARAMETERS`; the shared ones (operationId
    ``fhir.*``: $validate, $everything) are the R4 definitions'. So the CapabilityStatement lists every
    operation a route serves, and only those, each with what it takes."""
    found: dict[str, dict[str, Any]] = {}
    for path, item in (spec.get("paths") or {}).items():
        if not path.startswith(base_path) or not isinstance(item, dict):
            continue
        m = _OPERATION_PATH.fullmatch(path[len(base_path):])
        if m is None:
            continue
        rtype, instance, code = m.groups()
        for method in ("get", "post"):
            op = item.get(method)
            if not isinstance(op, dict) or str(op.get("operationId", "")).startswith("fhir."):
                continue
            rid = f"{rtype}-{code}"
            d = found.setdefault(rid, {
                "resourceType": "OperationDefinition", "id": rid,
                "name": rtype + "".join(w.capitalize() for w in code.split("-")), "status": "active",
                "kind": "operation", "publisher": "Sen", "affectsState": False, "code": code, "resource": [rtype],
                "system": False, "type": False, "instance": False, "description": ""})
            d["instance" if instance else "type"] = True
            d["affectsState"] = d["affectsState"] or method == "post"
            if op.get(PARAMETERS) and "parameter" not in d:  # a GET and a POST form take the same ones
                d["parameter"] = copy.deepcopy(op[PARAMETERS])
            summary = " ".join(str(op.get("summary") or "").split())
            if summary and summary not in d["description"]:
                where = f"[base]/{rtype}/[id]/${code}" if instance else f"[base]/{rtype}/${code}"
                d["description"] = f"{d['description']} {method.upper()} {where}: {summary}".strip()
    return tuple(found[k] for k in sorted(found))


def with_spec_operations(operations: Sequence[dict[str, Any]], spec: Mapping[str, Any],
                         base_path: str) -> tuple[dict[str, Any], ...]:
    """``operations`` (a service's own definitions, with their parameters) and :func:`spec_operations`
    of those it does not define."""
    have = {op["id"] for op in operations}
    return (*operations, *(op for op in spec_operations(spec, base_path) if op["id"] not in have))


def operation_definition(config: Any, base: str, rid: str) -> dict[str, Any]:
    """The service's own OperationDefinition ``rid`` (:attr:`FhirConfig.operations`) as served at its
    canonical URL, ``<base>/OperationDefinition/<rid>`` (the URL the CapabilityStatement names);
    404 OperationOutcome for any other id."""
    from .outcome import FhirError

    for op in config.operations:
        if op["id"] == rid:
            return {**op, "url": _definition_url(base, op)}
    raise FhirError(f"OperationDefinition/{rid} is not one of this server's operations", status=404,
                    code="not-found")


def security(issuer: str | None = None, audience: str | None = None) -> dict[str, Any]:
    """How to get in: a bearer JWT of the OIDC issuer, Sen's roles, SMART v2 scopes narrowing them. Coded as
    OAuth, not SMART-on-FHIR: there is no SMART app launch (no .well-known/smart-configuration) for a client
    told SMART to discover."""
    who = f" issued by {issuer} for the audience {audience}" if issuer and audience else ""
    return {"cors": False,
            "description": f"Authorization: Bearer <JWT>{who} (OIDC). Its 'roles' claim (admin, health-dept, "
                           "clinic, doctor, cashier, service) says what it may do, 'facility' and 'practitioner' "
                           "whose patients; SMART v2 resource scopes in 'scope' (user/Observation.rs, system/*.r) "
                           "narrow that. No SMART app launch: .well-known/smart-configuration is not served.",
            "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                     "code": "OAuth"}]}]}


# what the statement's codes cannot say: how a search parameter it does not list is handled (R4 search.html
# #errors leaves it to the server, Prefer: handling chooses), and what an interaction it does not list gets
REST_DOCUMENTATION = (
    "Search: a parameter not listed for the type (nor among rest.searchParam) is refused with a 400 "
    "OperationOutcome naming it, as with 'Prefer: handling=strict'; with 'Prefer: handling=lenient' it is "
    "ignored and named in a warning OperationOutcome entry (search.mode outcome). An interaction a type does "
    "not list answers 405, its Allow naming the methods served at that URL; a URL where nothing is served (a "
    "type not listed here) answers 404. JSON only (_format=json or application/fhir+json); XML is a 406. "
    "Errors are OperationOutcomes.")

# what a Bundle's entries may carry (Bundle.entry.request) and how each is answered (bundle.py)
_READ_ENTRY = ("A read entry's request.ifNoneMatch (the version's ETag, * or a list) or ifModifiedSince (an instant "
               "the version is no newer than, to the second) makes it a conditional read: 304 Not Modified, no "
               "resource; the POST's own If-None-Match and If-Modified-Since are not the entries'.")
TRANSACTION_DOCUMENTATION = (
    "All or nothing: every entry is checked first (validated, ifMatch compared: 412, ifNoneExist and conditional "
    "updates, deletes and references resolved, urn:uuid references rewritten), then written through a journal; "
    "refused, nothing is written and the conditional criteria it claimed are free again, so the corrected "
    "transaction may be sent at once. Its read entries are answered after its writes, which they see. "
    + _READ_ENTRY
    + " PATCH entries are not taken (send PUT).")
# AuditEvents are stored once and never changed (store.SINGLE_VERSION_TYPES): each has one version, 1
SYSTEM_HISTORY_DOCUMENTATION = (
    "The changes of every type but AuditEvent, the audit trail every read and search adds to: its history is "
    "GET [base]/AuditEvent/_history, or _type=AuditEvent here. An AuditEvent is never updated: its one "
    "version is 1 (vread), its instance history that one entry.")
BATCH_DOCUMENTATION = ("Each entry on its own, answered as its interaction over HTTP would be. " + _READ_ENTRY
                       + " An entry referring to another (urn:uuid) is refused (400): send a transaction.")


def capability_statement(config: Any, base: str, *, issuer: str | None = None,
                         audience: str | None = None) -> dict[str, Any]:
    from .rest import compartment_param

    resources = []
    for rtype in sorted(config.resource_types):
        codes = interactions(config, rtype)
        entry: dict[str, Any] = {
            "type": rtype,
            "interaction": [{"code": c} for c in codes],
            "versioning": "versioned-update",
            "readHistory": "vread" in codes,
            "updateCreate": "update" in codes,
            "conditionalCreate": "create" in codes,
            "conditionalUpdate": "update" in codes,
            "conditionalRead": "full-support" if "read" in codes else "not-supported",  # rest.not_modified
            "conditionalDelete": "not-supported",
            "referencePolicy": ["literal", "logical"],
            "searchInclude": ["*"],
            "searchRevInclude": ["*"],
            "searchParam": [_search_param(rtype, code, ptype) for code, ptype in _type_search_params(config, rtype)],
            "operation": [{"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"}],
        }
        if rtype in config.search_params:  # its own search: no _include, _revinclude or other shared ones
            entry["searchInclude"] = entry["searchRevInclude"] = []
            entry["documentation"] = (f"{rtype} has a search of its own, GET [base]/{rtype}?... only (no POST "
                                      "_search): it takes the searchParam listed here and _count only; any other "
                                      "parameter is a 400, whatever Prefer: handling says")
        if rtype == "Patient":
            entry["operation"].append({"name": "everything",
                                       "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"})
        entry["operation"] += [{"name": op["code"], "definition": _definition_url(base, op)}
                               for op in config.operations if rtype in op.get("resource", ())]
        # GET Patient/[id]/[type] is served where Patient is (specs/common/fhir.yaml: x-sen-fhir-needs)
        if compartment_param(rtype) and rtype != "Patient" and "Patient" in config.resource_types:
            entry["documentation"] = f"In the Patient compartment: GET Patient/[id]/{rtype}"
        if rtype in SERVER_WRITTEN:
            entry["documentation"] = SERVER_WRITTEN_DOCUMENTATION
        resources.append(entry)
    if config.operations:  # their definitions are read here (capability.operation_definition)
        resources.append({"type": "OperationDefinition", "interaction": [{"code": "read"}],
                          "documentation": "only this server's own operations' definitions, by id"})
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": iso(now()),
        "kind": "instance",
        "software": {"name": f"{config.software} {config.service}", "version": config.version},
        "implementation": {"description": f"{config.software} {config.service} FHIR server", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [{
            "mode": "server",
            "documentation": REST_DOCUMENTATION,
            "security": security(issuer, audience),
            "resource": resources,
            "interaction": [{"code": "transaction", "documentation": TRANSACTION_DOCUMENTATION},
                            {"code": "batch", "documentation": BATCH_DOCUMENTATION},
                            {"code": "history-system", "documentation": SYSTEM_HISTORY_DOCUMENTATION}],
            "searchParam": [{"name": "_count", "type": "number"}, {"name": "_sort", "type": "string"},
                            {"name": "_include", "type": "string"}, {"name": "_revinclude", "type": "string"},
                            {"name": "_summary", "type": "token"}, {"name": "_elements", "type": "string"},
                            {"name": "_total", "type": "token"}],
            "compartment": ["http://hl7.org/fhir/CompartmentDefinition/patient"],
        }],
    }
