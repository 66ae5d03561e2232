"""The dashboard's JSON and CSV endpoints on the portal app, against the real FerretDB."""

from __future__ import annotations

import csv
import io
import json
import threading
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sen_portal import caches
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
                                          "amount": 150_000, "channel": "transfer", "matched": True,
                                          "invoice": "Invoice/inv-a1", "receivedAt": day.isoformat()})
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
                                 "as_of": datetime.now(VN).date().isoformat(), "population_outdated": False,
                                 "without_district": 3}
    assert set(d["time_to_conclusion"]) == {"routine", "urgent", "asap", "stat"}
    assert len(d["range"]["weeks"]) in (12, 13)
    r = portal.get("/api/reports/dashboard?district=Th%C3%A1p%20M%C6%B0%E1%BB%9Di", headers=token("admin"))
    assert r.status_code == 200 and r.json()["facilities_using"]["new"] == 1
    assert r.json()["cashless_share"]["share"] is None
    # its records: none (these patient events name no district), three the province's only; no population set
    assert r.json()["facilities_using"]["goal"] is None
    ehr = r.json()["ehr_coverage"]
    assert (ehr["patients"], ehr["population"], ehr["share"], ehr["without_district"]) == (0, None, None, 3)


def test_csv_export(portal, token) -> None:
    r = portal.get("/api/reports/consults_per_facility_week.csv", headers=token("health-dept"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    text = r.content.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["week", "facility", "district", "count"]
    assert sorted(r[2] for r in rows[1:]) == ["Cao Lãnh", "Tháp Mười"]
    assert not any(r[1].startswith("Organization/") for r in rows[1:])  # the facilities' ids (review 6)
    r = portal.get("/api/reports/time_to_answer.csv", headers=token("health-dept"))
    assert ["urgent", "1", "12", "12"] in list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))


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


@pytest.mark.parametrize("day", ["null", "2026-13-01", "2026-02-30"])
def test_a_day_that_is_no_date_is_a_400_problem_the_spec_names(portal, token, day) -> None:
    """Found by the API fuzz (tools/fuzz/api_fuzz.py): the 400 was answered but not in the spec."""
    from sen_shared.web import load_spec

    r = portal.get("/api/reports/events", params={"day": day}, headers=token("health-dept"))
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert day in r.json()["detail"]
    assert "400" in load_spec("portal.yaml")["paths"]["/api/reports/events"]["get"]["responses"]


@pytest.mark.parametrize("path", ["/api/reports/dashboard", "/api/reports/consults_per_facility_week.csv"])
def test_an_unknown_district_is_a_400_problem_naming_the_known_ones(portal, token, path) -> None:
    caches.forget_all()  # the EHR's Organizations asked again (none answer here)
    r = portal.get(path, params={"district": "Huyện <Không Có>"}, headers=token("health-dept"))
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    # the districts the dashboard page lists: here those the period's figures name
    assert {"Cao Lãnh", "Tháp Mười"} <= set(problem["districts"]), problem
    assert "Cao Lãnh" in problem["detail"] and "Tháp Mười" in problem["detail"]
    assert problem["title"] == "Unknown district"
    # a known one, spaces around it aside, and none at all are answered
    r = portal.get(path, params={"district": " Cao Lãnh "}, headers=token("health-dept"))
    assert r.status_code == 200, r.text
    assert portal.get(path, params={"district": ""}, headers=token("health-dept")).status_code == 200


@pytest.mark.parametrize("asked", ["tyt-a", "Organization/tyt-a", " tyt-a "])
def test_one_facilitys_figures_are_its_own(portal, token, asked) -> None:
    caches.forget_all()  # the EHR's Organizations asked again (none answer here)
    r = portal.get("/api/reports/dashboard", params={"facility": asked}, headers=token("health-dept"))
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["range"]["facility"] == "Organization/tyt-a"
    in_use = {k: v for k, v in d["facilities_using"].items() if k not in ("since", "until")}
    assert in_use == {"count": 1, "new": 1, "baseline": None, "goal": None, "share": None,
                      "baseline_named": None, "baseline_using": None}
    assert [row["facility"] for row in d["consults_per_facility_week"]] == ["Organization/tyt-a"]
    assert d["time_to_answer"]["urgent"] == {"count": 1, "median_minutes": 12.0, "p90_minutes": 12}
    assert d["cashless_share"]["transfer_amount"] == 150_000
    assert d["ehr_coverage"]["patients"] is None  # records count by home district, not by facility
    other = portal.get("/api/reports/dashboard", params={"facility": "tyt-b"}, headers=token("admin")).json()
    assert [row["facility"] for row in other["consults_per_facility_week"]] == ["Organization/tyt-b"]
    assert other["time_to_answer"]["urgent"]["count"] == 0 and other["cashless_share"]["transfer_amount"] == 0
    # with its district; and the CSV of it names it
    r = portal.get("/api/reports/dashboard", params={"facility": asked, "district": "Cao Lãnh"},
                   headers=token("health-dept"))
    assert r.status_code == 200 and r.json()["cashless_share"]["transfer_amount"] == 150_000
    r = portal.get("/api/reports/cashless_share.csv", params={"facility": asked}, headers=token("health-dept"))
    assert r.status_code == 200, r.text
    header, row = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert header[:5] == ["start", "end", "district", "facility", "transfer_amount"]
    # its district as the page's CSV names it (review 12: the API's was empty); its id, the JSON keeping the
    # reference (its spec)
    assert row[2:5] == ["Cao Lãnh", "tyt-a", "150000"]


@pytest.mark.parametrize("path", ["/api/reports/dashboard", "/api/reports/time_to_answer.csv"])
def test_a_facility_not_of_the_province_or_of_the_district_is_a_400_problem(portal, token, path) -> None:
    caches.forget_all()
    r = portal.get(path, params={"facility": "tyt-khong-co"}, headers=token("health-dept"))
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["title"] == "Unknown facility" and "'tyt-khong-co'" in problem["detail"]
    assert {"tyt-a", "tyt-b"} <= set(problem["facilities"]), problem  # the ones the period's figures name
    r = portal.get(path, params={"facility": "tyt-b", "district": "Cao Lãnh"}, headers=token("health-dept"))
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["title"] == "Facility not in the district" and problem["facility_district"] == "Tháp Mười"
    assert "'tyt-b' is not in 'Cao Lãnh': it is in 'Tháp Mười'" == problem["detail"]
    # a facility's own users are refused, their own facility or not: the filter widens the reports to no one
    for role in ("cashier", "clinic"):
        r = portal.get(path, params={"facility": "tyt-a"}, headers=token(role))
        assert r.status_code == 403 and "health-dept" in r.json()["detail"]


@pytest.fixture()
def scripted_ehr():
    """An EHR answering an Organization search with one facility of Huyện Lai Vung (no consults name
    it), and the Authorization header of each request it got."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str] = []

    class Ehr(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            seen.append(self.headers.get("Authorization", ""))
            body = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {
                "resourceType": "Organization", "id": "tyt-lai-vung", "name": "Trạm Y tế Lai Vung",
                "address": [{"district": "Huyện Lai Vung", "state": "Đồng Tháp"}]}}]}
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ehr)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_the_facilities_districts_come_from_the_ehr_with_the_callers_token(base_env, run_id, mongo_client,
                                                                           dev_key, scripted_ehr):
    url, seen = scripted_ehr
    caches.forget_all()
    db = f"sen_t{run_id}_portal_reports_ehr"
    with app_client("portal", {**base_env, "SEN_EHR_URL": url}, db, mongo_client) as (client, _app):
        bearer = f"Bearer {issue_dev_token(dev_key, 'health-dept')}"
        r = client.get("/api/reports/dashboard", params={"district": "Huyện Lai Vung"},
                       headers={"Authorization": bearer})
        assert r.status_code == 200, r.text
        assert r.json()["range"]["district"] == "Huyện Lai Vung" and r.json()["facilities_using"]["new"] == 0
        assert seen == [bearer]  # the caller's own token, not one the portal made
        r = client.get("/api/reports/sla_breaches.csv", params={"district": "Huyện Hồng Ngự"},
                       headers={"Authorization": bearer})
        assert r.status_code == 400 and r.json()["districts"] == ["Huyện Lai Vung"], r.text


def test_the_api_answers_a_client_that_accepts_compression(portal, token) -> None:
    """connexion validates the API's answer after Flask's after_request (SEN_ENV=test): a body Flask-Compress had
    compressed failed it as "not valid UTF-8 text" (400) for every client sending ``Accept-Encoding`` (httpx,
    curl --compressed, 34cdd72). The JSON API leaves uncompressed (``web.PAGE_TYPES``); the CSV too."""
    for path in ("/api/reports/dashboard", "/api/reports/consults_per_facility_week.csv"):
        r = portal.get(path, headers={**token("health-dept"), "Accept-Encoding": "gzip, deflate, br"})
        assert r.status_code == 200, r.text
        assert "content-encoding" not in r.headers
