"""Each operation's OperationDefinition lists its parameters (review: the definitions the engine derives from the
spec had none, so an integrator could not tell what ``$reject`` or ``$find`` takes). They come from one place, the
operation's ``x-fhir-parameters`` in the service's spec, and the operation is held to them: the definition is
valid (``fhir.resources``), every operation of teleconsult and billing has one, and a parameter it does not list
is a 400 naming exactly the ``in`` parameters listed, while each listed one is taken."""

from __future__ import annotations

import json
import uuid

import pytest
from fhir.resources.R4B.operationdefinition import OperationDefinition

from tests.support import admin_headers, app_client

pytestmark = pytest.mark.integration

BASE = "http://testserver/fhir"
UNKNOWN = "zz-not-a-parameter"
_VALUE = {"string": "valueString", "dateTime": "valueDateTime", "integer": "valueInteger", "Coding": "valueCoding",
          "Reference": "valueReference", "CodeableConcept": "valueCodeableConcept"}


def _definitions(client, H) -> list[dict]:
    meta = client.get("/fhir/metadata", headers=H).json()["rest"][0]["resource"]
    urls = {o["definition"] for e in meta for o in e.get("operation", ()) if o["definition"].startswith(BASE)}
    out = []
    for url in sorted(urls):
        r = client.get(url[len(BASE) - len("/fhir"):], headers=H)
        assert r.status_code == 200, (url, r.text)
        out.append(r.json())
    return out


def _part(p: dict) -> dict:
    """A Parameters part naming ``p`` (its value's type as the definition says; any value will do here)."""
    t = p.get("type")
    if "part" in p:
        return {"name": p["name"], "part": [_part(q) for q in p["part"]]}
    if t in _VALUE:
        value = {"valueReference": {"reference": "Organization/x1"}, "valueCoding": {"code": "x"},
                 "valueCodeableConcept": {"text": "x"}, "valueInteger": 1,
                 "valueDateTime": "2026-12-07T08:00:00+07:00"}.get(_VALUE[t], "x")
        return {"name": p["name"], _VALUE[t]: value}
    return {"name": p["name"], "resource": {"resourceType": t if t != "Resource" else "Basic"}}


def _ask(client, H, d: dict, names: list[dict], unknown: bool):
    """The operation of ``d`` asked with the parameters ``names`` (and the unknown one)."""
    path = f"/fhir/{d['resource'][0]}/{'x1/' if d['instance'] else ''}${d['code']}"
    body = {"resourceType": "Parameters", "parameter": [_part(p) for p in names]
            + ([{"name": UNKNOWN, "valueString": "x"}] if unknown else [])}
    # the unknown one in the query string too: an operation reading no body ($issue) is asked there
    r = client.post(f"{path}?{UNKNOWN}=x" if unknown else path, content=json.dumps(body), headers=H)
    if r.status_code == 405:  # a GET-only operation: the query form
        query = "&".join([f"{p['name']}=x" for p in names] + ([f"{UNKNOWN}=x"] if unknown else []))
        r = client.get(f"{path}?{query}", headers=H)
    return r


def _check_service(service: str, base_env, mongo_client, dev_key, every_one_listed: bool) -> None:
    with app_client(service, base_env, f"sen_opd{uuid.uuid4().hex[:8]}_{service[:2]}", mongo_client) as (client, _a):
        H = admin_headers(dev_key)
        definitions = _definitions(client, H)
        assert definitions
        for d in definitions:
            OperationDefinition.model_validate(d)  # a valid R4 OperationDefinition, parameters included
            if every_one_listed:
                assert d.get("parameter"), d["id"]
            taken = [p for p in d.get("parameter") or () if p["use"] == "in"]
            if not {p["name"] for p in taken} - {"_format"}:
                if not taken:  # takes nothing: any parameter is refused, naming that
                    r = _ask(client, H, d, [], unknown=True)
                    assert r.status_code == 400, (d["id"], r.text)
                    assert r.json()["issue"][0]["diagnostics"].endswith("it takes no parameters"), (d["id"], r.text)
                continue
            r = _ask(client, H, d, taken, unknown=True)
            assert r.status_code == 400, (d["id"], r.text)
            issue = r.json()["issue"][0]
            names = ", ".join(p["name"] for p in taken)
            # only the unknown one is refused, and the answer names exactly what the definition lists
            assert issue["code"] == "not-supported" and issue["diagnostics"] == (
                f"${d['code']} does not take {UNKNOWN}; it takes {names}"), (d["id"], issue)
            r = _ask(client, H, d, taken, unknown=False)
            assert not (r.status_code == 400 and "does not take" in r.text), (d["id"], r.text)


def test_teleconsults_operations_list_what_they_take(base_env, mongo_client, dev_key) -> None:
    _check_service("teleconsult", base_env, mongo_client, dev_key, every_one_listed=True)


def test_billings_operations_list_what_they_take(base_env, mongo_client, dev_key) -> None:
    _check_service("billing", base_env, mongo_client, dev_key, every_one_listed=True)


def test_the_ehrs_operations_list_what_they_take(base_env, mongo_client, dev_key) -> None:
    _check_service("ehr", base_env, mongo_client, dev_key, every_one_listed=True)


def test_a_definition_shows_its_parameters(base_env, mongo_client, dev_key) -> None:
    with app_client("teleconsult", base_env, f"sen_opd{uuid.uuid4().hex[:8]}_one", mongo_client) as (client, _a):
        H = admin_headers(dev_key)
        reject = client.get("/fhir/OperationDefinition/Task-reject", headers=H).json()
        assert [(p["name"], p["use"], p["min"], p["max"], p["type"]) for p in reject["parameter"]] == [
            ("reason", "in", 1, "1", "string"), ("return", "out", 1, "1", "Task")]
        find = client.get("/fhir/OperationDefinition/Appointment-find", headers=H).json()
        assert {"start", "end", "specialty", "_count"} <= {p["name"] for p in find["parameter"] if p["use"] == "in"}
        # the query form takes the same: one it does not is refused, not ignored
        r = client.get("/fhir/Appointment/$find?start=2026-12-07&end=2026-12-08&clinic=x", headers=H)
        assert r.status_code == 400 and "does not take clinic" in r.json()["issue"][0]["diagnostics"], r.text
