"""The health department's dashboard (web/dashboard.py): the district filter lists the districts of
the province's facilities (the EHR's Organization addresses, which the demo province now carries)
rather than a list written in the code, and each chart has a text alternative that says what it
shows with its numbers, a data table, a labelled big number and a download link named by the chart."""

from __future__ import annotations

import importlib.util
import json
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from tests.support import portal_app, portal_signed_in

ROOT = Path(__file__).resolve().parents[3]


def _figures(start: date, end: date, district: str | None) -> dict[str, Any]:
    return {"range": {"start": "2026-09-07", "end": "2026-09-20", "district": district,
                      "weeks": ["2026-W37", "2026-W38"]},
            "facilities_using": {"count": 23, "new": 1, "baseline": 22, "goal": 165, "share": 0.14},
            "consults_per_facility_week": [{"facility": "Organization/tyt-la", "district": "Huyện Lấp Vò",
                                            "week": "2026-W38", "count": 2}],
            "time_to_answer": {"urgent": {"count": 2, "median_minutes": 5, "p90_minutes": 9}},
            "sla_breaches": [{"week": "2026-W37", "priority": "urgent", "count": 1},
                             {"week": "2026-W38", "priority": "stat", "count": 3}],
            "cashless_share": {"transfer_amount": 150000, "cash_amount": 50000, "share": 0.75,
                               "transfer_count": 1, "cash_count": 1},
            "ehr_coverage": {"patients": 9, "population": 10, "share": 0.9, "as_of": "2026-09-20",
                             "by_district": False},
            "generated_at": "2026-09-20T10:00:00+07:00"}


@pytest.fixture()
def officer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from sen_portal.web import dashboard, directory

    monkeypatch.setattr(dashboard, "figures", _figures)
    monkeypatch.setattr(directory, "names", lambda rtype: {})
    monkeypatch.setattr(dashboard, "org_districts", lambda: {
        "tyt-my-hiep": "Huyện Cao Lãnh", "ttyt-huyen-cao-lanh": "Huyện Cao Lãnh",
        "bvdk-dong-thap": "Thành phố Cao Lãnh", "tyt-doc-binh-kieu": "Huyện Tháp Mười"})
    return portal_signed_in(portal_app(tmp_path, monkeypatch), "health-dept")


def _options(page: str) -> list[str]:
    select = re.search(r'<select id="district" name="district">(.*?)</select>', page, re.S).group(1)
    return re.findall(r'<option value="([^"]*)"', select)


def test_the_district_filter_lists_the_facilities_districts(officer):
    page = officer.get("/dashboard").get_data(as_text=True)
    # the directory's districts (each once), and one the figures name that the directory does not know
    assert _options(page) == ["", "Huyện Cao Lãnh", "Huyện Lấp Vò", "Huyện Tháp Mười", "Thành phố Cao Lãnh"]
    page = officer.get("/dashboard?district=Huyện+Hồng+Ngự").get_data(as_text=True)  # chosen: kept, selected
    assert "Huyện Hồng Ngự" in _options(page) and '<option value="Huyện Hồng Ngự" selected>' in page


def test_a_facilitys_district_is_its_first_address_district(monkeypatch):
    from sen_portal.web import directory

    orgs = [{"resourceType": "Organization", "id": "tyt-my-hiep",
             "address": [{"city": "Mỹ Hiệp", "district": "Huyện Cao Lãnh", "state": "Đồng Tháp"}]},
            {"resourceType": "Organization", "id": "so-y-te", "address": [{"city": "Cao Lãnh"}]}]
    asked: list[dict[str, Any]] = []
    monkeypatch.setattr(directory, "_kept", {})
    monkeypatch.setattr(directory, "fhir_get", lambda service, path, params=None, **_: asked.append(params) or {
        "resourceType": "Bundle", "entry": [{"resource": o} for o in orgs]})
    assert directory.org_districts() == {"tyt-my-hiep": "Huyện Cao Lãnh"}
    assert directory.org_districts() == {"tyt-my-hiep": "Huyện Cao Lãnh"} and len(asked) == 1  # kept
    assert asked[0]["_elements"] == "address"


def test_every_demo_facility_has_its_district():
    spec = importlib.util.spec_from_file_location("seed", ROOT / "deploy/local/seed.py")
    seed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seed)
    data = json.loads((ROOT / "deploy/local/demo-province.json").read_text(encoding="utf-8"))
    orgs = [e["resource"] for e in seed.province_bundle(data)["entry"]
            if e["resource"]["resourceType"] == "Organization"]
    districts = {o["id"]: o["address"][0].get("district") for o in orgs}
    assert districts["tyt-my-hiep"] == "Huyện Cao Lãnh" and districts["tyt-doc-binh-kieu"] == "Huyện Tháp Mười"
    assert all(districts.values()), districts
    # a patient's district is their facility's when they live in its commune: the two lists agree
    for p in data["patients"]:
        if p["city"] == next(o["city"] for o in data["organizations"] if o["id"] == p["org"]):
            assert p["district"] == districts[p["org"]], p["id"]


def test_each_chart_says_what_it_shows_and_each_download_is_named(officer):
    page = officer.get("/dashboard").get_data(as_text=True)
    labels = dict(re.findall(r'<canvas data-chart="([a-z]+)" role="img" aria-label="([^"]*)"', page))
    assert labels["facilities"].endswith(": 23 trên mục tiêu 165 cơ sở; 22 cơ sở trước Sen.")
    assert labels["consults"].startswith("Số ca hội chẩn theo cơ sở mỗi tuần: 2 ca trong kỳ")
    assert labels["breaches"].startswith("Số ca quá hạn trả lời: 4 ca trong kỳ")
    assert "150.000\u00a0₫" in labels["cashless"] and "50.000\u00a0₫" in labels["cashless"]
    assert "9" in labels["ehr"] and "10" in labels["ehr"] and "bảng" in labels["answer"]
    assert all(label.count(":") >= 1 and len(label) > 40 for label in labels.values()), labels
    # the late answers by week and priority, as a table
    table = re.search(r'<table data-testid="breaches-table">(.*?)</table>', page, re.S).group(1)
    rows = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td></tr>", table)
    assert rows == [("07/09/2026", "Khẩn", "1"), ("14/09/2026", "Cấp cứu", "3")]
    # the big number says what it counts
    assert re.search(r'data-testid="consults-total">2</span> <span data-testid="consults-total-label">'
                     r"ca hội chẩn được yêu cầu trong kỳ, mọi cơ sở</span>", page)
    links = re.findall(r'data-testid="csv-[a-z_]+">([^<]*)</a>', page)
    assert len(links) == 6 and len(set(links)) == 6 and all(t.startswith("Tải dữ liệu: ") for t in links)
    assert "Tải dữ liệu: Số ca quá hạn trả lời (CSV)" in links
