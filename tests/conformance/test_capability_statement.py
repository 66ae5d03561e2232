"""Each Sen FHIR server does what its CapabilityStatement says, and says what it does.

For the ehr, teleconsult and billing apps (one database each, dropped at the end), the statement served at
``GET /fhir/metadata`` is walked and held to the server's answers, as an integrator used to HAPI FHIR or
Medplum would read it:

- every listed resource type answers each declared interaction (read, vread, search-type, create, update,
  patch, delete, history-instance, history-type): never a 405, never the 404 of an unserved type or route;
  each interaction it does not declare is refused with 405, an ``Allow`` naming the methods that are served
  there (those of its declared interactions) and an OperationOutcome;
- every declared ``searchParam`` is taken (200, not 400); a parameter the statement does not declare is
  handled as ``rest.documentation`` says: 400 by default and with ``Prefer: handling=strict``, ignored with a
  warning (an OperationOutcome entry) with ``Prefer: handling=lenient``;
- every declared ``operation`` has a definition that resolves (the server's own, served at its canonical URL)
  and its URL is routed (no 404 for the route, no 405);
- the system level: ``POST [base]`` (transaction, batch) works where the statement lists them, and is
  refused where it does not (billing) with a status that names something true: a 404 OperationOutcome saying
  no Bundles are taken, never a 405 with an empty ``Allow``; ``GET [base]`` (a system search, declared
  nowhere) is a 405 naming ``POST`` where Bundles are taken; ``history-system`` answers;
- the shared parameters and headers: ``_summary=count``, ``_count=0``, ``_elements``, ``_format`` (json,
  the FHIR media type; xml 406 with an OperationOutcome), ``Prefer: return=...`` on create and update,
  ``If-Match`` with a wrong version (412), ``If-None-Exist`` where ``conditionalCreate`` says so.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from sen_shared.fhir.audit import Auditor, Record

from tests.support import admin_headers, app_client

pytestmark = pytest.mark.integration

FJ = "application/fhir+json"
SERVICES = ("ehr", "teleconsult", "billing")
MISSING = "sen-conformance-missing"  # an id no test creates

# the request of each type-level interaction on a type, by path (under [base]/[type]) and method
_ON_TYPE = {"search-type": ("GET", ""), "create": ("POST", ""), "history-type": ("GET", "/_history")}
_ON_INSTANCE = {"read": ("GET", ""), "update": ("PUT", ""), "patch": ("PATCH", ""), "delete": ("DELETE", ""),
                "vread": ("GET", "/_history/1"), "history-instance": ("GET", "/_history")}
# the interactions served at each path shape: what an Allow there may name
_AT = {"": ("search-type", "create"), "/_history": ("history-type",)}
_AT_INSTANCE = {"": ("read", "update", "patch", "delete"), "/_history/1": ("vread",),
                "/_history": ("history-instance",)}
_METHOD = {"search-type": "GET", "create": "POST", "history-type": "GET", "read": "GET", "update": "PUT",
           "patch": "PATCH", "delete": "DELETE", "vread": "GET", "history-instance": "GET"}
# a value of each search parameter type that any parameter of that type takes
_VALUE = {"string": "a", "token": "a", "reference": MISSING, "date": "2024-01-01", "number": "1",
          "quantity": "1", "uri": "http://example.org/a", "special": "a"}


@pytest.fixture(scope="module", params=SERVICES)
def served(request, base_env, run_id, mongo_client, dev_key):
    """``(service, test client, statement, admin headers)`` of one service's app."""
    service = request.param
    with app_client(service, base_env, f"sen_t{run_id}_cap_{service}", mongo_client) as (client, _app):
        r = client.get("/fhir/metadata")
        assert r.status_code == 200, r.text
        yield service, client, r.json(), admin_headers(dev_key)


def _rest(statement: dict[str, Any]) -> dict[str, Any]:
    return statement["rest"][0]


def _outcome(r) -> dict[str, Any]:
    assert r.headers.get("content-type", "").startswith(FJ), (r.status_code, r.headers.get("content-type"), r.text)
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", r.text
    assert body["issue"] and body["issue"][0].get("diagnostics"), r.text
    return body


def _allow(r) -> set[str]:
    return {m.strip() for m in r.headers.get("allow", "").split(",") if m.strip()}


def _call(client, method: str, url: str, headers: dict[str, str], body: Any = None, **more: str):
    h = {**headers, **more}
    if method == "PATCH":
        h["Content-Type"] = "application/json-patch+json"
    content = None if body is None else json.dumps(body)
    return client.request(method, url, headers=h, content=content)


def _body_for(interaction: str, rtype: str) -> Any:
    if interaction == "create":
        return {"resourceType": rtype}
    if interaction == "update":
        return {"resourceType": rtype, "id": MISSING}
    if interaction == "patch":
        return []
    return None


def _interaction_url(rtype: str, interaction: str) -> tuple[str, str]:
    if interaction in _ON_TYPE:
        method, tail = _ON_TYPE[interaction]
        return method, f"/fhir/{rtype}{tail}"
    method, tail = _ON_INSTANCE[interaction]
    return method, f"/fhir/{rtype}/{MISSING}{tail}"


def _expected_allow(codes: set[str], interaction: str) -> set[str]:
    """The methods an ``Allow`` names where ``interaction`` would be served: those of the declared
    interactions served at the same path (HEAD with GET)."""
    shapes = _AT if interaction in _ON_TYPE else _AT_INSTANCE
    tail = (_ON_TYPE if interaction in _ON_TYPE else _ON_INSTANCE)[interaction][1]
    methods = {_METHOD[c] for c in shapes[tail] if c in codes}
    if interaction == "update" and "update" in codes:
        methods.add("PUT")
    if "GET" in methods:
        methods.add("HEAD")
    return methods


# the values Sen's own parameters take (their documentation in the statement says so)
_OWN_VALUES = {"invoiced": {"invoiced": "false", "subject": f"Patient/{MISSING}"}}


def _value(rtype: str, param: dict[str, Any]) -> str:
    """A value of the parameter's type; a composite's joins one of each component's type."""
    if param["type"] != "composite":
        return _VALUE[param["type"]]
    from sen_shared.fhir.search.definitions import params_for

    return "$".join(_VALUE[c.type] for c in params_for(rtype)[param["name"]].component)


# --------------------------------------------------------------------------- resource interactions

def test_each_declared_interaction_is_served(served):
    service, client, statement, admin = served
    misses = []
    for entry in _rest(statement)["resource"]:
        rtype = entry["type"]
        if rtype == "OperationDefinition":
            continue  # the server's own definitions: test_each_operation_is_defined_and_routed
        for code in (i["code"] for i in entry["interaction"]):
            method, url = _interaction_url(rtype, code)
            r = _call(client, method, url, admin, _body_for(code, rtype))
            if r.status_code == 405 or r.status_code >= 500 or (
                    r.status_code == 404 and r.json()["issue"][0]["code"] != "not-found"):
                misses.append(f"{service} {code} {method} {url}: {r.status_code} {r.text[:200]}")
    assert not misses, "\n".join(misses)


def test_each_interaction_not_declared_is_a_405_naming_what_is_served(served):
    service, client, statement, admin = served
    misses = []
    for entry in _rest(statement)["resource"]:
        rtype, codes = entry["type"], {i["code"] for i in entry["interaction"]}
        for code in sorted(set(_METHOD) - codes):
            method, url = _interaction_url(rtype, code)
            r = _call(client, method, url, admin, _body_for(code, rtype))
            expected = _expected_allow(codes, code)
            if not expected:  # nothing is served at that path: its 404, never a 405 with an empty Allow
                if r.status_code != 404 or _outcome(r)["issue"][0]["code"] != "not-supported":
                    misses.append(f"{service} {code} {method} {url}: {r.status_code} (expected a 404 "
                                  f"not-supported) {r.text[:200]}")
                continue
            if r.status_code != 405 or _allow(r) != expected:
                misses.append(f"{service} {code} {method} {url}: {r.status_code} Allow {_allow(r)} "
                              f"(expected 405 Allow {expected}) {r.text[:200]}")
                continue
            _outcome(r)
    assert not misses, "\n".join(misses)


def test_a_type_not_listed_is_a_404(served):
    _service, client, statement, admin = served
    listed = {e["type"] for e in _rest(statement)["resource"]}
    unlisted = next(t for t in ("Basic", "Observation", "Invoice") if t not in listed)
    for method, url in (("GET", f"/fhir/{unlisted}"), ("POST", f"/fhir/{unlisted}"),
                        ("GET", f"/fhir/{unlisted}/{MISSING}"), ("DELETE", f"/fhir/{unlisted}/{MISSING}")):
        r = _call(client, method, url, admin, {"resourceType": unlisted} if method == "POST" else None)
        assert r.status_code == 404, (method, url, r.status_code, r.text)
        assert _outcome(r)["issue"][0]["code"] == "not-supported"


# --------------------------------------------------------------------------- search parameters

def test_each_declared_search_parameter_is_taken(served):
    service, client, statement, admin = served
    misses = []
    for entry in _rest(statement)["resource"]:
        if "search-type" not in {i["code"] for i in entry["interaction"]}:
            continue
        rtype = entry["type"]
        for param in entry.get("searchParam", []):
            query = _OWN_VALUES.get(param["name"]) or {param["name"]: _value(rtype, param)}
            value = query[param["name"]]
            r = client.get(f"/fhir/{rtype}", params={**query, "_count": "1"}, headers=admin)
            if r.status_code != 200:
                misses.append(f"{service} {rtype}?{param['name']}={value}: {r.status_code} {r.text[:300]}")
    assert not misses, "\n".join(misses)


def test_a_search_is_posted_to_type_search_or_the_statement_says_it_is_not(served):
    """http.html: a search-type is ``GET [type]?...`` or ``POST [type]/_search``, the same search. The engine's
    POST searched teleconsult's computed Slots in a collection that holds none, with the engine's parameters
    (``_summary=count``: 200, where GET's own search says 400)."""
    service, client, statement, admin = served
    form = {**admin, "Content-Type": "application/x-www-form-urlencoded"}
    for entry in _rest(statement)["resource"]:
        if "search-type" not in {i["code"] for i in entry["interaction"]}:
            continue
        rtype = entry["type"]
        for query in ("_count=1", "_summary=count", "sen-undeclared=1"):
            r = client.post(f"/fhir/{rtype}/_search", content=query, headers=form)
            if "no POST _search" in entry.get("documentation", ""):
                assert r.status_code == 404 and "allow" not in r.headers, (service, rtype, r.status_code, r.text)
                assert _outcome(r)["issue"][0]["code"] == "not-supported"
                if "batch" in _system(statement):  # nor is it searched as a batch's entry (200, empty, before)
                    batch = {"resourceType": "Bundle", "type": "batch",
                             "entry": [{"request": {"method": "GET", "url": f"{rtype}?{query}"}}]}
                    b = client.post("/fhir", content=json.dumps(batch), headers=admin)
                    assert b.status_code == 200, b.text
                    assert b.json()["entry"][0]["response"]["status"].startswith("405"), b.text
                continue
            g = client.get(f"/fhir/{rtype}?{query}", headers=admin)
            assert r.status_code == g.status_code, (service, rtype, query, r.status_code, g.status_code, r.text)
            if g.status_code == 200:
                assert r.json().get("total") == g.json().get("total"), (service, rtype, query, r.text, g.text)
                assert len(r.json().get("entry", [])) == len(g.json().get("entry", [])), (service, rtype, query)


def test_a_search_parameter_not_declared_is_handled_as_the_statement_says(served):
    service, client, statement, admin = served
    rest = _rest(statement)
    assert "handling=lenient" in rest.get("documentation", ""), rest.get("documentation")
    for entry in rest["resource"]:
        if "search-type" not in {i["code"] for i in entry["interaction"]}:
            continue
        rtype = entry["type"]
        url = f"/fhir/{rtype}?sen-undeclared=1"
        # a type with a search of its own says so: lenient or not, an unknown parameter is a 400
        own = "whatever Prefer: handling says" in entry.get("documentation", "")
        for prefer in (None, "handling=strict", *(("handling=lenient",) if own else ())):
            r = client.get(url, headers={**admin, **({"Prefer": prefer} if prefer else {})})
            assert r.status_code == 400, (service, rtype, prefer, r.text)
            assert "sen-undeclared" in json.dumps(_outcome(r)), r.text
        if own:
            continue
        r = client.get(url, headers={**admin, "Prefer": "handling=lenient"})
        assert r.status_code == 200, (service, rtype, r.text)
        warnings = [e["resource"] for e in r.json().get("entry", []) if e["search"]["mode"] == "outcome"]
        assert warnings and "sen-undeclared" in json.dumps(warnings), r.text


# --------------------------------------------------------------------------- operations

def test_each_operation_is_defined_and_routed(served):
    service, client, statement, admin = served
    misses = []
    for entry in _rest(statement)["resource"]:
        rtype = entry["type"]
        for op in entry.get("operation", []):
            canonical = op["definition"]
            if canonical.startswith("http://hl7.org/fhir/OperationDefinition/"):
                definition = {"code": op["name"], "type": op["name"] == "validate", "instance": True}
            else:
                assert canonical.startswith("http://testserver/fhir/OperationDefinition/"), canonical
                r = client.get(canonical.removeprefix("http://testserver"), headers=admin)
                assert r.status_code == 200, (service, canonical, r.text)
                definition = r.json()
                assert definition["url"] == canonical and definition["code"] == op["name"], definition
            method = "POST" if op["name"] != "everything" and definition.get("affectsState", True) else "GET"
            if op["name"] in ("validate",):
                method = "POST"
            urls = []
            if definition.get("type"):
                urls.append(f"/fhir/{rtype}/${op['name']}")
            if definition.get("instance"):
                urls.append(f"/fhir/{rtype}/{MISSING}/${op['name']}")
            for url in urls:
                body = {"resourceType": "Parameters"} if method == "POST" else None
                r = _call(client, method, url, admin, body)
                routed = r.status_code not in (404, 405) or (
                    r.status_code == 404 and r.json().get("issue", [{}])[0].get("code") == "not-found")
                if not routed or r.status_code >= 500:
                    misses.append(f"{service} {method} {url}: {r.status_code} {r.text[:200]}")
    assert not misses, "\n".join(misses)


# --------------------------------------------------------------------------- the system level

def _system(statement: dict[str, Any]) -> set[str]:
    return {i["code"] for i in _rest(statement).get("interaction", [])}


def test_bundles_are_taken_where_declared_and_refused_with_a_true_answer_elsewhere(served):
    service, client, statement, admin = served
    codes = _system(statement)
    batch = {"resourceType": "Bundle", "type": "batch", "entry": []}
    r = client.post("/fhir", content=json.dumps(batch), headers=admin)
    if "batch" in codes:
        assert "transaction" in codes
        assert r.status_code == 200 and r.json()["type"] == "batch-response", (service, r.text)
    else:
        assert "transaction" not in codes
        assert r.status_code == 404, (service, r.status_code, r.headers.get("allow"), r.text)
        assert "Bundle" in _outcome(r)["issue"][0]["diagnostics"], r.text
    g = client.get("/fhir", headers=admin)
    if "batch" in codes:  # GET [base] is a system search, declared nowhere: POST is what is served there
        assert g.status_code == 405 and _allow(g) == {"POST"}, (service, g.status_code, g.headers.get("allow"))
    else:
        assert g.status_code == 404, (service, g.status_code, g.headers.get("allow"), g.text)
    _outcome(g)


def test_the_system_history_answers_where_declared(served):
    service, client, statement, admin = served
    r = client.get("/fhir/_history", params={"_count": "1"}, headers=admin)
    if "history-system" in _system(statement):
        assert r.status_code == 200 and r.json()["type"] == "history", (service, r.text)
    else:
        assert r.status_code in (404, 405), (service, r.text)
        _outcome(r)


# --------------------------------------------------------------------------- shared parameters and headers

def _searchable(statement: dict[str, Any]) -> str:
    """A type with search-type and history-type declared, the first one."""
    for entry in _rest(statement)["resource"]:
        codes = {i["code"] for i in entry["interaction"]}
        if {"search-type", "history-type"} <= codes:
            return entry["type"]
    raise AssertionError("no searchable type")


def test_summary_count_elements_and_format_on_a_search(served):
    service, client, statement, admin = served
    rtype = _searchable(statement)
    declared = {p["name"] for p in _rest(statement)["searchParam"]}
    assert {"_count", "_summary", "_elements"} <= declared, declared
    r = client.get(f"/fhir/{rtype}", params={"_summary": "count"}, headers=admin)
    assert r.status_code == 200 and "total" in r.json() and "entry" not in r.json(), (service, r.text)
    r = client.get(f"/fhir/{rtype}", params={"_count": "0"}, headers=admin)
    assert r.status_code == 200 and not r.json().get("entry"), (service, r.text)
    r = client.get(f"/fhir/{rtype}", params={"_elements": "id"}, headers=admin)
    assert r.status_code == 200, (service, r.text)
    for fmt, media in (("json", FJ), ("application/fhir+json", FJ), ("application/json", "application/json")):
        r = client.get(f"/fhir/{rtype}", params={"_format": fmt, "_count": "1"},
                       headers={k: v for k, v in admin.items() if k != "Accept"})
        assert r.status_code == 200 and r.headers["content-type"].startswith(media), (service, fmt, r.text)
    assert set(statement["format"]) >= {"application/fhir+json", "json"}, statement["format"]
    for fmt in ("xml", "application/fhir+xml"):
        r = client.get(f"/fhir/{rtype}", params={"_format": fmt}, headers=admin)
        assert r.status_code == 406, (service, fmt, r.status_code, r.text)
        assert "json" in _outcome(r)["issue"][0]["diagnostics"]
    r = client.get("/fhir/metadata", params={"_format": "xml"})
    assert r.status_code == 406, (service, r.status_code, r.text)
    _outcome(r)
    r = client.post(f"/fhir/{rtype}", content="<Patient/>", headers={**admin, "Content-Type": "application/fhir+xml"})
    assert r.status_code == 415, (service, r.status_code, r.text)
    _outcome(r)


# a type each service lets an admin create with a small body, and the body
WRITABLE = {"ehr": {"resourceType": "Patient", "gender": "female"},
            "teleconsult": {"resourceType": "Schedule", "active": True,
                            "actor": [{"reference": f"Practitioner/{MISSING}"}]},
            "billing": {"resourceType": "Account", "status": "active", "name": "Quỹ khám bệnh"}}


def test_writes_answer_as_prefer_if_match_and_if_none_exist_ask(served):
    service, client, statement, admin = served
    body = WRITABLE[service]
    rtype = body["resourceType"]
    entry = next(e for e in _rest(statement)["resource"] if e["type"] == rtype)
    codes = {i["code"] for i in entry["interaction"]}
    assert {"create", "update", "read", "vread", "history-instance"} <= codes, codes
    assert entry["versioning"] == "versioned-update" and entry["conditionalCreate"] is True, entry

    def create(prefer: str | None, **more: str):
        return client.post(f"/fhir/{rtype}", content=json.dumps(body),
                           headers={**admin, **({"Prefer": f"return={prefer}"} if prefer else {}), **more})

    r = create("minimal")
    assert r.status_code == 201 and not r.content, (service, r.status_code, r.text)
    assert r.headers["etag"] == 'W/"1"' and f"/fhir/{rtype}/" in r.headers["location"], r.headers
    rid = r.headers["location"].split(f"/fhir/{rtype}/")[1].split("/")[0]
    r = create("OperationOutcome")
    assert r.status_code == 201 and r.json()["resourceType"] == "OperationOutcome", (service, r.text)
    r = create("representation")
    assert r.status_code == 201 and r.json()["resourceType"] == rtype, (service, r.text)
    r = create(None)
    assert r.status_code == 201 and r.json()["resourceType"] == rtype, (service, r.text)

    # conditional create: an existing match is answered, nothing made; no match creates
    r = create(None, **{"If-None-Exist": f"_id={rid}"})
    assert r.status_code == 200 and r.json()["id"] == rid, (service, r.status_code, r.text)
    r = create(None, **{"If-None-Exist": f"_id={MISSING}"})
    assert r.status_code == 201 and r.json()["id"] != rid, (service, r.status_code, r.text)

    url = f"/fhir/{rtype}/{rid}"
    assert client.get(url, headers=admin).status_code == 200
    assert client.get(f"{url}/_history/1", headers=admin).status_code == 200
    assert client.get(f"{url}/_history", headers=admin).json()["type"] == "history"
    changed = {**body, "id": rid}
    r = client.put(url, content=json.dumps(changed), headers={**admin, "If-Match": 'W/"7"'})
    assert r.status_code == 412, (service, r.status_code, r.text)
    _outcome(r)
    r = client.put(url, content=json.dumps(changed), headers={**admin, "If-Match": 'W/"1"', "Prefer": "return=minimal"})
    assert r.status_code == 200 and not r.content and r.headers["etag"] == 'W/"2"', (service, r.status_code, r.text)
    r = client.put(url, content=json.dumps(changed), headers={**admin, "Prefer": "return=OperationOutcome"})
    assert r.status_code == 200 and r.json()["resourceType"] == "OperationOutcome", (service, r.text)
    if "patch" in codes:
        r = _call(client, "PATCH", url, admin, [{"op": "add", "path": "/active", "value": True}]
                  if rtype != "Account" else [{"op": "replace", "path": "/name", "value": "Quỹ"}],
                  **{"If-Match": 'W/"1"'})
        assert r.status_code == 412, (service, r.status_code, r.text)
        _outcome(r)
    if "delete" in codes:
        r = client.delete(url, headers={**admin, "If-Match": 'W/"1"'})
        assert r.status_code == 412, (service, r.status_code, r.text)
        _outcome(r)


def test_a_stored_audit_event_is_read_by_version_and_history_as_declared(served, mongo_client, run_id):
    """AuditEvents are stored once, without a history copy, and never changed: the statement's vread and
    history-instance answer their one version, 1; any other version is a 404 OperationOutcome; the type's history
    lists them, the system history does not unless asked by _type (rest.interaction's documentation says so)."""
    service, client, statement, admin = served
    entry = next(e for e in _rest(statement)["resource"] if e["type"] == "AuditEvent")
    codes = {i["code"] for i in entry["interaction"]}
    assert {"vread", "history-instance", "history-type"} <= codes and entry["readHistory"] is True, codes
    # one refused read recorded as each server records it (billing records refusals only)
    who = SimpleNamespace(roles=("cashier",), sub="sen-conformance-cashier", practitioner=None, facility=None)
    Auditor(mongo_client[f"sen_t{run_id}_cap_{service}"], service).record(
        who, Record("read", resource_type="Invoice", rid=MISSING, status=403, detail="not this facility's"))
    found = client.get("/fhir/AuditEvent", params={"altid": who.sub}, headers=admin).json()
    assert len(found.get("entry", [])) == 1, (service, found)
    event = found["entry"][0]["resource"]
    url = f"/fhir/AuditEvent/{event['id']}"

    r = client.get(f"{url}/_history/1", headers=admin)
    assert r.status_code == 200, (service, r.status_code, r.text)
    assert r.json() == event and r.json()["meta"]["versionId"] == "1", (service, r.text)
    assert r.headers["etag"] == 'W/"1"' and r.headers.get("last-modified"), (service, r.headers)
    assert client.get(f"{url}/_history/1", headers={**admin, "If-None-Match": 'W/"1"'}).status_code == 304
    for other in ("2", "0", "x"):
        r = client.get(f"{url}/_history/{other}", headers=admin)
        assert r.status_code == 404, (service, other, r.status_code, r.text)
        _outcome(r)
    assert client.get(f"/fhir/AuditEvent/{MISSING}/_history/1", headers=admin).status_code == 404

    h = client.get(f"{url}/_history", headers=admin).json()
    assert h["type"] == "history" and len(h["entry"]) == 1, (service, h)
    one = h["entry"][0]
    assert one["resource"] == event and one["request"] == {"method": "POST", "url": "AuditEvent"}, one
    assert one["response"]["etag"] == 'W/"1"' and one["response"]["status"] == "201 Created", one
    assert client.get(f"/fhir/AuditEvent/{MISSING}/_history", headers=admin).status_code == 404

    ids = {e["resource"]["id"] for e in client.get(
        "/fhir/AuditEvent/_history", params={"_count": "1000"}, headers=admin).json()["entry"]}
    assert event["id"] in ids, service
    system = _rest(statement)["interaction"]
    assert "AuditEvent" in next(i for i in system if i["code"] == "history-system")["documentation"]
    everything = client.get("/fhir/_history", params={"_count": "1000"}, headers=admin).json()
    assert not [e for e in everything.get("entry", []) if e["fullUrl"].split("/")[-2] == "AuditEvent"], service
    asked = client.get("/fhir/_history", params={"_type": "AuditEvent", "_count": "1000"}, headers=admin).json()
    assert event["id"] in {e["resource"]["id"] for e in asked["entry"]}, service


def test_the_audit_trail_is_written_by_the_server_only_as_declared(served, mongo_client, run_id, dev_key):
    """One policy on the three servers (the engine's ``capability.SERVER_WRITTEN``): the statement lists
    AuditEvent read-only and says why; a create, update, patch or delete of one is a 405 for every caller (an
    admin, and a role that may not even read the trail) whose OperationOutcome says the server writes the trail,
    its ``Allow`` the reads; a transaction writing one is refused by its entry (422) where Bundles are taken.
    A record a client wrote could forge the trail. Before, the EHR and teleconsult let an admin create one."""
    from sen_shared.auth import issue_dev_token

    service, client, statement, admin = served
    entry = next(e for e in _rest(statement)["resource"] if e["type"] == "AuditEvent")
    assert [i["code"] for i in entry["interaction"]] == ["read", "vread", "history-instance", "history-type",
                                                         "search-type"], (service, entry["interaction"])
    assert "written by this server" in entry["documentation"], entry.get("documentation")
    assert entry["conditionalCreate"] is False and entry["updateCreate"] is False, entry
    who = SimpleNamespace(roles=("doctor",), sub="sen-conformance-doctor", practitioner=None, facility=None)
    kept = Auditor(mongo_client[f"sen_t{run_id}_cap_{service}"], service).record(
        who, Record("read", resource_type="Observation", rid=MISSING, status=403, detail="not this clinic's"))
    url = f"/fhir/AuditEvent/{kept['id']}"
    stored = client.get(url, headers=admin).json()
    body = {"resourceType": "AuditEvent", "recorded": "2026-12-01T10:00:00Z", "action": "E",
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
            "agent": [{"requestor": True, "who": {"display": "forged"}}], "source": {"observer": {"display": "x"}}}
    clinic = {"Authorization": f"Bearer {issue_dev_token(dev_key, 'clinic', facility='tyt-a')}",
              "Content-Type": FJ, "Accept": FJ}
    for caller in (admin, clinic):
        for method, path, sent in (("POST", "/fhir/AuditEvent", body), ("PUT", url, {**body, "id": kept["id"]}),
                                   ("PATCH", url, []), ("DELETE", url, None)):
            r = _call(client, method, path, caller, sent)
            assert r.status_code == 405, (service, method, r.status_code, r.text)
            said = _outcome(r)["issue"][0]
            assert said["code"] == "not-supported" and "written by the server" in said["diagnostics"], said
            assert _allow(r) == {"GET", "HEAD"}, (service, method, r.headers.get("allow"))
    assert client.get(url, headers=admin).json() == stored
    found = client.get("/fhir/AuditEvent", params={"altid": "forged"}, headers=admin).json()
    assert not found.get("entry"), found
    if "transaction" in _system(statement):
        tx = {"resourceType": "Bundle", "type": "transaction",
              "entry": [{"resource": body, "request": {"method": "POST", "url": "AuditEvent"}}]}
        for caller in (admin, clinic):
            r = client.post("/fhir", content=json.dumps(tx), headers=caller)
            assert r.status_code == 422, (service, r.status_code, r.text)
            said = _outcome(r)["issue"][0]
            assert said["expression"] == ["Bundle.entry[0]"] and "written by the server" in said["diagnostics"], said
