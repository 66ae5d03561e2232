# ruff: noqa: F811 - the fixtures imported from test_minutes_in_place are parameters by name
"""Signed, the doctor goes on to her next consult from the page that says so (walk of session 27: the page said the
minutes were signed and offered nothing but the chart; the worklist was in the header, then a row to find, two
pages before the next patient). The notice now links the next consult that is hers to act on, the worklist's first
(most urgent, then soonest due) that no doctor holds yet or she holds, not on hold waiting for the clinic, not this
one, named by its priority and due time; with none, or the worklist unreadable, the worklist itself. Flask's test
client, teleconsult faked at the HTTP client (test_minutes_in_place.Signing) and its worklist at the portal's call."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sen_portal.web.backend import BackendError

from services.portal.tests.test_consult_takeover import ME, _minutes, _minutes_page
from services.portal.tests.test_minutes_in_place import HTMX, TYPED, app, fake  # noqa: F401 - fixtures by name
from services.portal.tests.test_visit_changes import TID
from tests.support import portal_signed_in


def _task(tid: str, status: str, priority: str, owner: str | None = None) -> dict[str, Any]:
    return {"resourceType": "Task", "id": tid, "status": status, "priority": priority,
            "restriction": {"period": {"end": "2026-12-05T11:30:00+07:00"}},
            **({"owner": {"reference": owner}} if owner else {})}


WORKLIST = [_task("waiting", "on-hold", "stat", ME),  # her question to the clinic is open: nothing to do yet
            _task("theirs", "accepted", "stat", "Practitioner/bs-tran-thi-binh"),  # another doctor holds it
            _task(TID, "in-progress", "stat", ME),  # the one just signed (the worklist read before it closed)
            _task("next", "requested", "asap"),  # the hub's, no doctor yet: hers to take
            _task("later", "accepted", "routine", ME)]


def _signed(app: Any, fake: Any, monkeypatch: pytest.MonkeyPatch, worklist: Any) -> str:
    from sen_portal.web import doctor

    asked: list[dict[str, str]] = []

    def page(path: str, params: dict[str, str], cursor: str | None) -> tuple[dict[str, Any], None]:
        assert path == "/fhir/Task/$worklist" and cursor is None
        asked.append(params)
        if isinstance(worklist, Exception):
            raise worklist
        return {"resourceType": "Bundle", "entry": [{"resource": t} for t in worklist]}, None

    monkeypatch.setattr(doctor, "teleconsult_page", page)
    c = portal_signed_in(app, "doctor")
    form = _minutes_page(c, fake)
    assert asked == []  # the consult's page before signing asks nothing more
    r = c.post(f"/tasks/{TID}/complete", headers=HTMX, data={**_minutes(form, TYPED), "version": "3"})
    assert r.status_code == 204 and r.headers["HX-Redirect"] == f"/tasks/{TID}"
    body = c.get(f"/tasks/{TID}").get_data(as_text=True)
    assert len(asked) == 1
    return body


def test_the_signed_page_links_the_next_consult_that_is_hers_to_act_on(app, fake, monkeypatch):
    body = _signed(app, fake, monkeypatch, WORKLIST)
    link = re.search(r'<a href="([^"]+)" data-testid="next-consult">([^<]+)</a>', body)
    assert link and link.group(1) == "/tasks/next", link
    assert link.group(2) == "Ca tiếp theo: Càng sớm càng tốt, hạn trả lời 05/12/2026 11:30"


@pytest.mark.parametrize("worklist", [WORKLIST[:3], BackendError("down", "teleconsult")], ids=["none", "down"])
def test_with_none_to_go_on_with_or_the_worklist_unreadable_the_signed_page_links_the_worklist(app, fake,
                                                                                              monkeypatch, worklist):
    body = _signed(app, fake, monkeypatch, worklist)
    assert re.search(r'<a href="/worklist" data-testid="next-consult">Về danh sách công việc</a>', body)
