# ruff: noqa: F811 - the fixtures imported from test_portal_consult_patients are parameters by name
"""A second open consult for the same patient and reason, against a real EHR and teleconsult (gunicorn
processes on loopback), the real FerretDB and RabbitMQ: the services and the portal of
``test_portal_consult_patients``, started afresh for this module.

Covered: the consult form, when the patient has an open consult with the same ICD-10 reason (teleconsult's
Task search by patient and open status, its ServiceRequest included), says so with a link to it and sends
nothing until the tick confirms another; an open consult for another reason, or one that ended, asks
nothing; the form sent twice after the tick (a double click) lands on the one consult it made (the form's
key is the ServiceRequest's identifier, so that consult is not "another one"), teleconsult's Idempotency-Key
unchanged.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest

from tests.integration.consult_stack import *  # noqa: F403 - its fixtures, used by name
from tests.integration.test_portal_consult_patients import CLINIC, HUB, ICD10, LAN, _headers
from tests.support import csrf_token, portal_signed_in

pytestmark = pytest.mark.integration

REASON = "J18.9 — Viêm phổi"


def _clinic(dev_key: Any) -> dict[str, str]:
    return _headers(dev_key, "clinic", facility=CLINIC, practitioner="ys-vo-minh-tam", sub="portal-clinic")


def _submit(tc: str, dev_key: Any, code: str, question: str) -> str:
    """A consult of the demo clinic about Nguyễn Thị Lan for ``code``, by teleconsult's API: its Task id."""
    sr = {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "priority": "routine",
          "subject": {"reference": f"Patient/{LAN}"}, "requester": {"reference": f"Organization/{CLINIC}"},
          "reasonCode": [{"coding": [{"system": ICD10, "code": code}]}], "note": [{"text": question}],
          "performer": [{"reference": f"Organization/{HUB}"}]}
    r = httpx.post(f"{tc}/fhir/ServiceRequest/$submit", json=sr, headers=_clinic(dev_key), timeout=30)
    assert r.status_code == 201, r.text
    return next(e["resource"]["id"] for e in r.json()["entry"] if e["resource"]["resourceType"] == "Task")


def _asked(tc: str, dev_key: Any, question: str) -> list[dict[str, Any]]:
    bundle = httpx.get(f"{tc}/fhir/ServiceRequest", params={"subject": f"Patient/{LAN}", "_count": "200"},
                       headers=_clinic(dev_key), timeout=30).json()
    return [e["resource"] for e in bundle.get("entry", []) if (e["resource"].get("note") or [{}])[0].get("text")
            == question]


def _form(clinic: Any) -> tuple[str, dict[str, str]]:
    page = clinic.get(f"/patients/{LAN}/consult").get_data(as_text=True)
    key = re.search(r'name="key" type="hidden" value="([0-9a-f]{32})"', page).group(1)
    question = f"Sốt 39 °C, ran nổ đáy phổi phải ({key[:8]}), xin ý kiến."
    return question, {"csrf_token": csrf_token(page), "key": key, "patient": LAN, "priority": "routine",
                      "reason": REASON, "question": question}


def test_a_second_open_consult_for_the_same_reason_is_sent_only_when_ticked(portal, tc, dev_key):
    first = _submit(tc, dev_key, "J18.9", f"Viêm phổi, lần đầu {uuid.uuid4().hex[:6]}.")
    other = _submit(tc, dev_key, "K29.7", f"Đau thượng vị {uuid.uuid4().hex[:6]}.")  # another reason
    clinic = portal_signed_in(portal, "clinic")
    question, data = _form(clinic)

    r = clinic.post(f"/patients/{LAN}/consult", data=data)
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and not _asked(tc, dev_key, question), page[:500]
    warn = page[page.index('data-testid="same-reason-open"'):]
    warn = warn[:warn.index("</div>")]
    links = re.findall(r'href="/consults/([^"]+)"[^>]*data-testid="same-reason-link"', warn)
    assert first in links and other not in links, warn
    ticked = re.search(r'name="again" value="([^"]+)"', warn).group(1)
    assert set(ticked.split(",")) == set(links)

    answers = [clinic.post(f"/patients/{LAN}/consult", data={**data, "again": ticked}) for _ in range(2)]
    assert [a.status_code for a in answers] == [302, 302], [a.get_data(as_text=True)[:500] for a in answers]
    assert answers[0].headers["Location"] == answers[1].headers["Location"]  # the double click: one consult
    made = _asked(tc, dev_key, question)
    assert len(made) == 1 and made[0]["reasonCode"][0]["coding"][0]["code"] == "J18.9"
    assert made[0]["identifier"] == [{"system": "https://sen.vn/fhir/sid/portal-consult-request",
                                      "value": data["key"]}]

    # a new form now names both open consults for the reason, the one just made among them
    question, data = _form(clinic)
    warn = clinic.post(f"/patients/{LAN}/consult", data=data).get_data(as_text=True)
    made_tid = answers[0].headers["Location"].split("/consults/")[1].split("?")[0]
    assert {first, made_tid} <= set(re.findall(r'href="/consults/([^"]+)"[^>]*data-testid="same-reason-link"', warn))


def test_a_consult_that_ended_asks_nothing(portal, tc, dev_key):
    code = "J45.9"
    tid = _submit(tc, dev_key, code, f"Hen phế quản {uuid.uuid4().hex[:6]}.")
    r = httpx.post(f"{tc}/fhir/Task/{tid}/$cancel", headers={**_clinic(dev_key), "Idempotency-Key": uuid.uuid4().hex},
                   json={"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "Nhầm."}]},
                   timeout=30)
    assert r.status_code == 200, r.text
    clinic = portal_signed_in(portal, "clinic")
    question, data = _form(clinic)
    r = clinic.post(f"/patients/{LAN}/consult", data={**data, "reason": "J45.9 — Hen phế quản"})
    assert r.status_code == 302, r.get_data(as_text=True)[:500]
    assert len(_asked(tc, dev_key, question)) == 1
