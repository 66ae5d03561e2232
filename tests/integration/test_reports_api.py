"""The dashboard's JSON and CSV endpoints on the portal app, against the real FerretDB."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sen_portal.domain.report_facts import VN
from sen_portal.domain.reporting import record_event
from sen_shared.auth import issue_dev_token

from tests.support import app_client

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def portal(base_env, run_id, mongo_client):
    db = f"sen_t{run_id}_portal_reports"
    with app_client("portal", {**base_env, "SEN_REPORT_POPULATION": "4"}, db, mongo_client) as (client, _app):
        now = datetime.now(VN)
        day = now - timedelta(hours=1)

        def feed(key: str, data: dict[str, Any]) -> None:
            record_event(mongo_client[db], {"id": str(uuid.uuid4()), "type": f"vn.sen.{key}.v1",
                                            "time": now.isoformat(), "source": "/sen/test", "data": data})

        for fac, district in (("Organization/tyt-a", "Cao Lãnh"), ("Organization/tyt-b", "Tháp Mười")):
            feed("teleconsult.consult.requested", {"requester": fac, "district": district, "priority": "urgent",
                                                   "requestedAt": day.isoformat()})
        feed("teleconsult.consult.accepted", {"requester": "Organization/tyt-a", "district": "Cao Lãnh",
                                              "priority": "urgent", "requestedAt": day.isoformat(),
                                              "acceptedAt": (day + timedelta(minutes=12)).isoformat()})
        feed("billing.payment.received", {"facility": "Organization/tyt-a", "district": "Cao Lãnh",
                                          "amount": 150_000, "channel": "transfer",
                                          "receivedAt": day.isoformat()})
        for _ in range(3):
            feed("ehr.patient.created", {"resourceType": "Patient", "id": uuid.uuid4().hex, "versionId": "1"})
        client.requested_day = day.date().isoformat()  # the consults' day: yesterday in the first hour of a day
        yield client


@pytest.fixture(scope="module")
def token(dev_key):
    def make(role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {issue_dev_token(dev_key, role)}"}
    return make


def test_dashboard_json(portal, token) -> None:
    r = portal.get("/api/reports/dashboard", headers=token("health-dept"))
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["facilities_using"]["new"] == 2 and d["facilities_using"]["count"] == 24
    assert d["time_to_answer"]["urgent"] == {"count": 1, "median_minutes": 12.0, "p90_minutes": 12}
    assert d["cashless_share"]["transfer_amount"] == 150_000 and d["cashless_share"]["share"] == 1.0
    assert d["ehr_coverage"] == {"patients": 3, "population": 4, "share": 0.75,
                                 "as_of": datetime.now(VN).date().isoformat(), "population_outdated": False}
    assert set(d["time_to_conclusion"]) == {"routine", "urgent", "asap", "stat"}
    assert len(d["range"]["weeks"]) in (12, 13)
    r = portal.get("/api/reports/dashboard?district=Th%C3%A1p%20M%C6%B0%E1%BB%9Di", headers=token("admin"))
    assert r.status_code == 200 and r.json()["facilities_using"]["new"] == 1
    assert r.json()["cashless_share"]["share"] is None
    assert r.json()["facilities_using"]["goal"] is None and r.json()["ehr_coverage"]["patients"] is None


def test_csv_export(portal, token) -> None:
    r = portal.get("/api/reports/consults_per_facility_week.csv", headers=token("health-dept"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    text = r.content.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["week", "facility", "district", "count"]
    assert sorted(r[2] for r in rows[1:]) == ["Cao Lãnh", "Tháp Mười"]
    r = portal.get("/api/reports/time_to_answer.csv", headers=token("health-dept"))
    assert ["urgent", "1", "12.0", "12"] in list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))


def test_reports_need_the_health_department_or_admin(portal, token) -> None:
    for path in ("/api/reports/dashboard", "/api/reports/sla_breaches.csv"):
        assert portal.get(path).status_code == 401
        r = portal.get(path, headers=token("cashier"))
        assert r.status_code == 403 and "health-dept" in r.json()["detail"]
        assert portal.get(path, headers=token("admin")).status_code == 200


@pytest.mark.parametrize("query,detail", [
    ("start=2026-02-30", "YYYY-MM-DD"),
    ("end=yesterday", "YYYY-MM-DD"),
    ("start=2026-12-10&end=2026-12-01", "after"),
    ("start=2020-01-01&end=2026-12-01", "at most"),
    ("start=0001-01-01&end=0001-01-02", "dates from"),
    ("end=0001-01-02", "start"),
])
def test_bad_dates_are_400_problems(portal, token, query: str, detail: str) -> None:
    for path in ("/api/reports/dashboard", "/api/reports/cashless_share.csv"):
        r = portal.get(f"{path}?{query}", headers=token("health-dept"))
        assert r.status_code == 400, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert detail in r.json()["detail"]


def test_unknown_csv_section_is_refused(portal, token) -> None:
    r = portal.get("/api/reports/secrets.csv", headers=token("health-dept"))
    assert r.status_code in (400, 404) and r.headers["content-type"].startswith("application/problem+json")


def test_event_counts_of_today(portal, token) -> None:
    r = portal.get("/api/reports/events", headers=token("health-dept"))
    assert r.status_code == 200
    counts = r.json()["counts"]
    assert counts["ehr_patient_created"] == 3
    r = portal.get(f"/api/reports/events?day={portal.requested_day}", headers=token("health-dept"))
    assert r.status_code == 200 and r.json()["counts"]["teleconsult_consult_requested"] == 2
    r = portal.get("/api/reports/events?day=0001-01-01", headers=token("health-dept"))
    assert r.status_code == 200 and r.json()["counts"] == {}
