# ruff: noqa: F811 - the fixtures imported from test_portal_consult_takeover are parameters by name
"""The hub doctor's worklist past 50 open consults, against a real EHR and teleconsult (gunicorn processes on
loopback), the real FerretDB and RabbitMQ; the portal runs in this process (Flask's test client) with its
demo doctor of Bệnh viện Đa khoa Đồng Tháp.

The worklist asked teleconsult for 50 consults and had no next page: a hub with more hid the rest from its
doctors. Covered: 63 open consults of mixed priorities walked by the page's "Trang sau" links, each shown
once, most urgent first (priority, then due time), the count of them all on every page; a consult of the
first page rejected and a new one sent between two pages shift nothing (teleconsult's ``next`` link is a
keyset cursor); the status filter kept across the pages; a page link altered is a readable 400.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.integration.consult_stack import CLINIC, HUB, _names_from_this_ehr  # noqa: F401 - a fixture
from tests.integration.test_portal_consult_patients import ICD10
from tests.integration.test_portal_consult_takeover import PATIENT, _task, clinic_h, doctors, ehr, tc  # noqa: F401
from tests.integration.test_portal_visit_changes import portal  # noqa: F401 - the portal, answers never kept
from tests.support import portal_signed_in

pytestmark = pytest.mark.integration

RANK = {"stat": 0, "asap": 1, "urgent": 2, "routine": 3}


def _submit(tc: str, clinic_h: dict[str, str], priority: str, note: str) -> str:
    sr = {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "priority": priority,
          "subject": {"reference": f"Patient/{PATIENT}"}, "requester": {"reference": f"Organization/{CLINIC}"},
          "reasonCode": [{"coding": [{"system": ICD10, "code": "I10", "display": "Tăng huyết áp"}]}],
          "note": [{"text": note}], "performer": [{"reference": f"Organization/{HUB}"}]}
    r = httpx.post(f"{tc}/fhir/ServiceRequest/$submit", content=json.dumps(sr), headers=clinic_h, timeout=60)
    assert r.status_code == 201, r.text
    return next(e["resource"]["id"] for e in r.json()["entry"] if e["resource"]["resourceType"] == "Task")


def _rows(page: str) -> list[str]:
    return list(dict.fromkeys(re.findall(r'href="/tasks/([A-Za-z0-9\-.]+)"', page)))


def _next(page: str) -> str | None:
    m = re.search(r'<a rel="next" data-testid="worklist-next" href="([^"]+)"', page)
    return m.group(1).replace("&amp;", "&") if m else None


def _total(page: str) -> str | None:
    m = re.search(r'data-testid="worklist-total">([^<]*)</p>', page)
    return m.group(1) if m else None


def _key(task: dict[str, Any]) -> tuple[int, datetime, str]:
    """A consult's worklist key, as teleconsult's cursor orders it: priority, authoredOn, id."""
    return RANK[task["priority"]], datetime.fromisoformat(task["authoredOn"]), task["id"]


def _place(task: dict[str, Any]) -> tuple[int, str]:
    """A consult's place in the worklist: its priority, then its due time."""
    return RANK[task["priority"]], task["restriction"]["period"]["end"]


def test_the_worklist_walks_every_open_consult_once_most_urgent_first(portal, tc, clinic_h, doctors):
    priorities = ("routine", "urgent", "asap", "stat", "routine", "urgent", "routine")
    with ThreadPoolExecutor(4) as pool:
        made = list(pool.map(lambda i: _submit(tc, clinic_h, priorities[i % len(priorities)], f"Ca số {i}"),
                             range(63)))
    doctor_h = doctors["bs-tk-0"]
    open_now = httpx.get(f"{tc}/fhir/Task/$worklist?_count=500", headers=doctor_h, timeout=30).json()
    assert open_now["total"] >= 63 and set(made) <= {e["resource"]["id"] for e in open_now["entry"]}
    me = portal_signed_in(portal, "doctor")

    first = me.get("/worklist")
    assert first.status_code == 200
    page = first.get_data(as_text=True)
    shown = _rows(page)
    assert len(shown) == 50 and _total(page) == f"Danh sách có {open_now['total']} ca hội chẩn"
    assert 'data-testid="worklist-page">Trang 1</span>' in page
    url = _next(page)
    assert url and "after=" in url
    # between two pages: a consult the doctor saw is rejected, a new one is sent
    gone = shown[7]
    r = httpx.post(f"{tc}/fhir/Task/{gone}/$reject", headers=doctor_h, timeout=30, content=json.dumps(
        {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "Không thuộc chuyên khoa"}]}))
    assert r.status_code == 200, r.text
    newcomer = _submit(tc, clinic_h, "routine", "Ca gửi giữa hai trang")
    pages = 1
    while url:
        r = me.get(url)
        assert r.status_code == 200
        page = r.get_data(as_text=True)
        pages += 1
        assert f'data-testid="worklist-page">Trang {pages}</span>' in page and "Trang đầu" in page
        assert _total(page) == f"Danh sách có {open_now['total']} ca hội chẩn"  # one rejected, one sent
        shown += _rows(page)
        url = _next(page)
        assert pages < 10
    assert pages == 2
    assert len(shown) == len(set(shown))  # each once
    before = [e["resource"]["id"] for e in open_now["entry"]]
    assert [t for t in shown if t != newcomer] == before  # none skipped, in order
    # the newcomer is on the second page exactly when its place is after the first page's last row (the
    # cursor): a routine one sorts after every routine consult sent before it, unless it was sent in the
    # same second as that row (authoredOn is to the second; the tie goes by id), then it is on the first
    assert (newcomer in shown) == (_key(_task(tc, newcomer, doctor_h)) > _key(_task(tc, shown[49], doctor_h)))
    tasks = {tid: _task(tc, tid, doctor_h) for tid in shown}
    places = [_place(tasks[tid]) for tid in shown if tid != gone]
    assert places == sorted(places)  # most urgent first, then the due time

    # the filter kept across the pages: the requested ones are past 50 too
    for tid in made[:3]:
        r = httpx.post(f"{tc}/fhir/Task/{tid}/$accept", headers=doctor_h, timeout=30,
                       content=json.dumps({"resourceType": "Parameters"}))
        assert r.status_code == 200, r.text
    requested = [e["resource"]["id"] for e in httpx.get(
        f"{tc}/fhir/Task/$worklist?status=requested&_count=500", headers=doctor_h, timeout=30).json()["entry"]]
    assert len(requested) > 50
    walked, url = [], "/worklist?status=requested"
    while url:
        page = me.get(url).get_data(as_text=True)
        assert 'selected>' in page and _total(page) == f"Danh sách có {len(requested)} ca hội chẩn"
        walked += _rows(page)
        url = _next(page)
        assert url is None or "status=requested" in url
    assert walked == requested

    # a page link altered: teleconsult refuses its cursor, the page says so readably
    link = _next(me.get("/worklist").get_data(as_text=True))
    assert link
    altered = re.sub(r"after=([^&]+)", lambda m: "after=" + m.group(1)[:-4] + "AAAA", link)
    r = me.get(altered)
    assert r.status_code == 400
    assert "Trang này của danh sách không còn dùng được" in r.get_data(as_text=True)
