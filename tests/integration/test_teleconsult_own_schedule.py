"""A doctor changes their own weekly hours and leave on the teleconsult service (a Schedule whose
only actor is their Practitioner); another doctor's Schedule, a change of actor or of the hub, and
every other role but admin are refused (403)."""

from __future__ import annotations

import json

import pytest
from sen_shared.auth import issue_dev_token
from sen_teleconsult.domain import availability as av

from tests.support import admin_headers, app_client

pytestmark = pytest.mark.integration


def _schedule(sid: str, practitioner: str) -> dict:
    return av.schedule_resource(sid, practitioner=practitioner, organization="Organization/hub",
                                specialty_code="394579002", specialty_text="Tim mạch",
                                windows=[(["mon", "tue"], "07:00:00", "11:00:00")])


def _doctor(dev_key, practitioner: str) -> dict[str, str]:
    token = issue_dev_token(dev_key, "doctor", facility="hub", practitioner=practitioner)
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}


def test_a_doctor_edits_their_own_schedule_only(base_env, run_id, mongo_client, dev_key):
    env = {**base_env, "SEN_TELECONSULT_HOLIDAYS": ""}
    with app_client("teleconsult", env, f"sen_t{run_id}_tc_own", mongo_client) as (c, _app):
        admin = admin_headers(dev_key)
        for sid, prac in (("sched-an", "Practitioner/bs-an"), ("sched-bich", "Practitioner/bs-bich")):
            r = c.put(f"/fhir/Schedule/{sid}", content=json.dumps(_schedule(sid, prac)), headers=admin)
            assert r.status_code in (200, 201), r.text
        an = _doctor(dev_key, "bs-an")

        mine = _schedule("sched-an", "Practitioner/bs-an")
        mine["extension"] = [e for e in mine["extension"] if e["url"] != av.EXT_AVAILABLE] + [
            {"url": av.EXT_AVAILABLE, "extension": [{"url": "daysOfWeek", "valueCode": "fri"},
                                                    {"url": "availableStartTime", "valueTime": "13:00:00"},
                                                    {"url": "availableEndTime", "valueTime": "16:00:00"}]}]
        r = c.put("/fhir/Schedule/sched-an", content=json.dumps(mine), headers=an)
        assert r.status_code == 200, r.text
        stored = c.get("/fhir/Schedule/sched-an", headers=admin).json()
        assert "fri" in json.dumps(stored) and stored["meta"]["versionId"] == "2"

        theirs = _schedule("sched-bich", "Practitioner/bs-bich")
        r = c.put("/fhir/Schedule/sched-bich", content=json.dumps(theirs), headers=an)
        assert r.status_code == 403, r.text
        taken = _schedule("sched-bich", "Practitioner/bs-an")  # naming themself on another's schedule
        assert c.put("/fhir/Schedule/sched-bich", content=json.dumps(taken), headers=an).status_code == 403
        given = _schedule("sched-an", "Practitioner/bs-bich")  # giving their schedule away
        assert c.put("/fhir/Schedule/sched-an", content=json.dumps(given), headers=an).status_code == 403
        moved = _schedule("sched-an", "Practitioner/bs-an")
        moved["extension"] = [e for e in moved["extension"] if e["url"] != av.EXT_ORGANIZATION] + [
            {"url": av.EXT_ORGANIZATION, "valueReference": {"reference": "Organization/other-hub"}}]
        assert c.put("/fhir/Schedule/sched-an", content=json.dumps(moved), headers=an).status_code == 403
        new = _schedule("sched-new", "Practitioner/bs-an")  # creating one stays the admin's
        assert c.put("/fhir/Schedule/sched-new", content=json.dumps(new), headers=an).status_code == 403
        clinic = {"Authorization": f"Bearer {issue_dev_token(dev_key, 'clinic', facility='tyt')}",
                  "Content-Type": "application/fhir+json"}
        assert c.put("/fhir/Schedule/sched-an", content=json.dumps(mine), headers=clinic).status_code == 403
        assert c.get("/fhir/Schedule/sched-bich", headers=admin).json()["meta"]["versionId"] == "1"
