"""A consult the clinic's nurse sends through the portal shows at once in her clinic's list and in the hub's
worklist, however recently those pages were read (session 28's note: a consult sent seconds ago could take up to
the portal's answer cache, 3 s, or the worklist's refresh, 30 s, to show).

The portal keeps each user's back-end answers ``SEN_PORTAL_CACHE_SECONDS`` (60 s here, so the test does not
depend on how fast it runs); the nurse's write forgot her user's answers (in this process; her session's write time
in any other), not the doctor's: a reload of the worklist within those seconds showed the list kept from before the
consult, and its refresh 30 s later. The portal now records each consult it sends (web/sent.py), and a clinic's
list or a hub's worklist kept from before it is not used, in any process. Real EHR and teleconsult (gunicorn on
loopback), the portal in this process with the real FerretDB as its database."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from tests.integration.consult_stack import *  # noqa: F403 - its fixtures, used by name
from tests.integration.consult_stack import LAN
from tests.support import csrf_token, portal_signed_in

pytestmark = pytest.mark.integration


def _send(nurse: Any, question: str) -> str:
    """The consult form filled and sent for Nguyễn Thị Lan (a second open consult for the same reason confirmed);
    the Task id of the consult it made."""
    page = nurse.get(f"/patients/{LAN}/consult").get_data(as_text=True)
    key = re.search(r'name="key" type="hidden" value="([0-9a-f]{32})"', page).group(1)
    data = {"csrf_token": csrf_token(page), "key": key, "patient": LAN, "priority": "stat",
            "reason": "R50.9 — Sốt", "question": question}
    r = nurse.post(f"/patients/{LAN}/consult", data=data)
    ticked = re.search(r'name="again" value="([^"]+)"', r.get_data(as_text=True)) if r.status_code == 200 else None
    if ticked:  # another consult of hers for the same reason is open: confirmed
        r = nurse.post(f"/patients/{LAN}/consult", data={**data, "again": ticked.group(1)})
    assert r.status_code == 302, r.get_data(as_text=True)[:800]
    return r.headers["Location"].split("/consults/")[1].split("?")[0]


def test_a_consult_sent_shows_at_once_in_the_clinics_lists_and_the_worklist(portal, monkeypatch):
    from sen_portal.web import backend

    real = backend.settings
    monkeypatch.setattr(backend, "settings", lambda: real().model_copy(update={"portal_cache_seconds": 60.0}))
    nurse, desk = portal_signed_in(portal, "clinic"), portal_signed_in(portal, "clinic")  # two computers
    doctor = portal_signed_in(portal, "doctor")
    pages = ((nurse, "/consults", "/consults/"), (desk, "/consults", "/consults/"), (doctor, "/worklist", "/tasks/"))
    for client, path, _ in pages:  # each list read, and kept for its user
        assert client.get(path).status_code == 200

    tid = _send(nurse, f"Sốt cao 40 °C ba ngày ({uuid.uuid4().hex[:8]}), xin ý kiến.")
    for client, path, link in pages:  # read again at once: the consult is there (the worklist: not before)
        page = client.get(path).get_data(as_text=True)
        assert f'href="{link}{tid}"' in page, (path, page[:1500])
