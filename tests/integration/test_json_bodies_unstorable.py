"""A JSON body the database cannot take, or Python cannot parse, is a 400 naming what to fix, never a 500.

Found by hand probes beside the API fuzz (tools/fuzz/api_fuzz.py), which does not generate them:

- a lone UTF-16 surrogate (``"\\ud800"`` without its pair) in a string: Python's JSON reader accepts
  it, BSON's encoder cannot (``UnicodeEncodeError``: a 500 from billing's shift close, cash and refund);
- a body nested past Python's recursion limit (``[[[[...]]]]``): connexion's JSON reader raised
  ``RecursionError`` (a 500 from every declared JSON body of every service).

Both are refused where connexion reads a declared JSON body (``sen_shared.web.CheckedJSONBodyValidator``),
NUL characters too, so no handler sees one: an OperationOutcome naming the element under /fhir, RFC 9457
problem JSON elsewhere. A surrogate pair (an escaped emoji) is text and is kept. Webhooks declare no
JSON body and keep their rule: the raw call is stored first (test_billing_webhooks.py).
"""

from __future__ import annotations

import json
import uuid

import pytest
from sen_shared.auth import issue_dev_token

from tests.billing_support import make_invoice
from tests.support import admin_headers, app_client

pytestmark = pytest.mark.integration

DEEP = "[" * 5000 + "]" * 5000
JSON = "application/json"


def _problem(r, status: int = 400) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    return r.json()["detail"]


def _outcome(r, status: int = 400) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body["issue"][0]


@pytest.fixture(scope="module")
def billing(base_env, mongo_client, dev_key):
    name = f"sen_billing_unstorable{uuid.uuid4().hex[:8]}"
    with app_client("billing", base_env, name, mongo_client) as (client, _app):
        me = {"Authorization": f"Bearer {issue_dev_token(dev_key, 'cashier', facility='org-a')}",
              "Accept": JSON, "Content-Type": JSON}
        assert client.post("/payments/shifts", json={"openingCash": 0}, headers=me).status_code == 201
        yield client, me, mongo_client[name]


def test_a_lone_surrogate_in_a_payment_body_is_a_400_naming_the_field(billing):
    client, me, db = billing
    iid, _code = make_invoice(db, 100_000, facility="org-a")
    paid = client.post("/payments/cash", content=json.dumps({"invoice": iid, "amount": 1_000, "transactionId": "t-0"}),
                       headers=me)
    assert paid.status_code == 201, paid.text  # the collections hold documents: the database compares
    pid = paid.json()["id"]

    close = '{"countedCash": 1, "countedTransfers": 0, "note": "thừa \\ud800"}'
    detail = _problem(client.post("/payments/shifts/current/close", content=close.encode(), headers=me))
    assert detail.startswith("note holds a lone UTF-16 surrogate (\\ud800)"), detail
    assert client.get("/payments/shifts/current", headers=me).json()["state"] == "open"  # nothing closed

    # json.dumps writes a lone surrogate as its escape (\\udc00), as a client's JSON encoder does
    cash = json.dumps({"invoice": iid, "amount": 1000, "transactionId": "t\udc00"})
    assert "transactionId holds a lone UTF-16 surrogate" in _problem(client.post("/payments/cash", content=cash,
                                                                                 headers=me))
    refund = '{"reason": "\\udbff thừa", "method": "cash"}'
    assert "reason holds" in _problem(client.post(f"/payments/{pid}/refund", content=refund, headers=me))
    key = json.dumps({"invoice": iid, "amount": 1000, "\ud800": 1})
    assert "surrogate" in _problem(client.post("/payments/cash", content=key, headers=me))
    nul = json.dumps({"invoice": iid, "amount": 1000, "transactionId": "t\u0000"})
    assert "transactionId holds a NUL character" in _problem(client.post("/payments/cash", content=nul, headers=me))

    summary = client.get(f"/payments/invoices/{iid}", headers=me).json()
    assert len(summary["payments"]) == 1 and summary["refunds"] == []


def test_a_surrogate_pair_is_text_and_kept(billing):
    client, me, db = billing
    iid, _code = make_invoice(db, 100_000, facility="org-a")
    body = json.dumps({"invoice": iid, "amount": 1000, "transactionId": "quầy 😀"})  # "\\ud83d\\ude00": a pair
    assert "\\ud83d\\ude00" in body
    r = client.post("/payments/cash", content=body.encode(), headers=me)
    assert r.status_code == 201, r.text


def test_a_body_nested_too_deeply_is_a_400(billing):
    client, me, _db = billing
    assert "nested too deeply" in _problem(client.post("/payments/cash", content=DEEP, headers=me))
    assert "nested too deeply" in _problem(client.post("/payments/shifts/current/close", content=DEEP, headers=me))


def test_the_daily_report_of_the_calendars_last_day_is_a_400(billing, dev_key):
    client, _me, _db = billing
    admin = {"Authorization": f"Bearer {issue_dev_token(dev_key, 'admin')}", "Accept": "text/csv"}
    detail = _problem(client.get("/payments/reports/daily.csv?day=9999-12-31&facility=org-a", headers=admin))
    assert "before 9999-12-31" in detail
    r = client.get("/payments/reports/daily.csv?day=9999-12-30&facility=org-a", headers=admin)
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def teleconsult(base_env, run_id, mongo_client, dev_key):
    with app_client("teleconsult", base_env, f"sen_t{run_id}_tc_unstorable", mongo_client) as (client, _app):
        yield client, admin_headers(dev_key)


@pytest.mark.parametrize("op", ["ServiceRequest/$submit", "Appointment/$find", "Appointment/$hold",
                                "Appointment/$book"])
def test_a_fhir_operation_body_nested_too_deeply_is_a_400_outcome(teleconsult, op):
    client, headers = teleconsult
    issue = _outcome(client.post(f"/fhir/{op}", content=DEEP, headers=headers))
    assert "nested too deeply" in issue["diagnostics"]


def test_a_lone_surrogate_in_fhir_parameters_is_a_400_naming_the_element(teleconsult):
    client, headers = teleconsult
    body = '{"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "\\ud800"}]}'
    issue = _outcome(client.post("/fhir/Task/missing/$cancel", content=body, headers=headers))
    assert issue["expression"] == ["Parameters.parameter[0].valueString"], issue
    assert "lone UTF-16 surrogate" in issue["diagnostics"]
