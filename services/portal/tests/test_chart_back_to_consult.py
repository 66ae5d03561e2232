# ruff: noqa: F811 - the client fixture imported from test_pages is a parameter by name
"""The chart opened from a consult links back to it (walk of session 27: the hub doctor opened the chart from a
consult's page, in the same tab, and had no way back to the consult but the worklist and its row). The consult
pages' "Mở hồ sơ bệnh án" carries the consult (``?consult=<task>``); the chart then reads "← Quay lại ca hội chẩn" /
"Back to the consult", to the doctor's ``/tasks/<task>`` or the clinic's ``/consults/<task>``, only for a
consult teleconsult shows the user (their token) and about this patient: not another patient's, not one
teleconsult does not show them, not while it does not answer, not for an id that is none. Flask's test client;
the EHR and teleconsult faked."""

from __future__ import annotations

import re

import pytest

from services.portal.tests.test_pages import client, sign_in  # noqa: F401 - the fixture by name

PID = "p-lan"
PATIENT = {"resourceType": "Patient", "id": PID, "name": [{"family": "Nguyễn", "given": ["Thị", "Lan"]}],
           "gender": "female", "birthDate": "1968-03-15"}
TASKS = {"t-lan": PID, "t-binh": "p-binh"}  # the consults teleconsult shows the user, and whose they are


@pytest.fixture()
def backends(monkeypatch):
    from sen_portal.web import clinic
    from sen_portal.web.backend import BackendError

    asked: list[tuple[str, str, dict[str, str]]] = []
    state = {"teleconsult": "up"}

    def fhir_get(service, path, params=None, **_kw):
        params = dict(params or {})
        asked.append((service, path, params))
        if service == "ehr" and path == f"/fhir/Patient/{PID}/$everything":
            return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": PATIENT}]}
        if service == "teleconsult" and path == "/fhir/Task":
            if state["teleconsult"] == "down":
                raise BackendError("down", "teleconsult")
            tid = params.get("_id")
            found = [{"resourceType": "Task", "id": tid, "status": "accepted",
                      "for": {"reference": f"Patient/{TASKS[tid]}"}}] if tid in TASKS else []
            return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": t} for t in found]}
        raise BackendError("refused", service, 404)

    monkeypatch.setattr(clinic, "fhir_get", fhir_get)
    return asked, state


def _back(page: str) -> str | None:
    m = re.search(r'<a href="([^"]+)" data-testid="back-to-consult">← ([^<]+)</a>', page)
    return f"{m.group(1)} {m.group(2)}" if m else None


@pytest.mark.parametrize(("user", "page"), [("doctor", "/tasks/t-lan"), ("clinic", "/consults/t-lan")])
def test_the_chart_opened_from_a_consult_links_back_to_it(client, backends, user, page):
    asked, _ = backends
    sign_in(client, user)
    r = client.get(f"/patients/{PID}?consult=t-lan")
    assert r.status_code == 200
    assert _back(r.get_data(as_text=True)) == f"{page} Quay lại ca hội chẩn"
    assert ("teleconsult", "/fhir/Task", {"_id": "t-lan"}) in asked  # the user's own view of the consult
    with client.session_transaction() as kept:
        kept["lang"] = "en"
    assert _back(client.get(f"/patients/{PID}?consult=t-lan").get_data(as_text=True)) == f"{page} Back to the consult"


def test_no_way_back_to_a_consult_the_user_does_not_see_of_this_patient(client, backends):
    asked, state = backends
    sign_in(client, "doctor")
    for query in ("?consult=t-binh",  # another patient's consult
                  "?consult=t-other",  # one teleconsult does not show her
                  "?consult=../Patient/x", "?consult=%3Cb%3E",  # no consult's id: nothing asked
                  ""):  # the chart opened from elsewhere: nothing asked either
        asked.clear()
        r = client.get(f"/patients/{PID}{query}")
        page = r.get_data(as_text=True)
        assert r.status_code == 200 and _back(page) is None and "Quay lại ca hội chẩn" not in page, query
        if query in ("?consult=t-binh", "?consult=t-other"):
            assert [a for a in asked if a[0] == "teleconsult"] == [("teleconsult", "/fhir/Task", {"_id": query[9:]})]
        else:
            assert [a for a in asked if a[0] == "teleconsult"] == [], query
    state["teleconsult"] = "down"  # the chart still shows; only the way back is left out
    r = client.get(f"/patients/{PID}?consult=t-lan")
    assert r.status_code == 200 and "Nguyễn Thị Lan" in r.get_data(as_text=True)
    assert _back(r.get_data(as_text=True)) is None
