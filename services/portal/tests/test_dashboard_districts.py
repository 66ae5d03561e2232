"""The health department's dashboard (web/dashboard.py): the district filter lists the districts of
the province's facilities (the EHR's Organization addresses, which the demo province now carries)
rather than a list written in the code, and each chart has a text alternative that says what it
shows with its numbers, a data table, a labelled big number and a download link named by the chart.

A district chosen is the whole page's: a figure that exists for the province only (the facilities
before Sen and the goal) is not shown as the district's; the EHR coverage is the district's records
over its residents, with how many records name no district; a district that is not
the province's (typed into the link) is refused, never added to the list. The EHR coverage is never
over 100 %: records outnumbering the population say the population is out of date. The time from
request to acceptance is called so (it is not the answer), beside the time to the signed minutes."""

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


ASKED: list[str | None] = []


def _figures(start: date, end: date, district: str | None, facility: str | None = None) -> dict[str, Any]:
    """The figures domain.dashboard gives: a district's have no province-only figures; its EHR coverage
    is its own (3 records for 4 residents) and 2 records of the province name no district."""
    ASKED.append(district)
    return {"range": {"start": "2026-09-07", "end": "2026-09-20", "district": district,
                      "weeks": ["2026-W37", "2026-W38"]},
            "facilities_using": {"count": 23, "new": 1, "baseline": 22, "goal": 165, "share": 0.14} if not district
            else {"count": 1, "new": 1, "baseline": None, "goal": None, "share": None},
            "consults_per_facility_week": [{"facility": "Organization/tyt-la", "district": "Huyện Lấp Vò",
                                            "week": "2026-W38", "count": 2}],
            "time_to_answer": {"urgent": {"count": 2, "median_minutes": 0, "p90_minutes": 9}},
            "time_to_conclusion": {"urgent": {"count": 1, "median_minutes": 6, "p90_minutes": 6}},
            "sla_breaches": [{"week": "2026-W37", "priority": "urgent", "count": 1},
                             {"week": "2026-W38", "priority": "stat", "count": 3}],
            "cashless_share": {"transfer_amount": 150000, "cash_amount": 50000, "share": 0.75,
                               "transfer_count": 1, "cash_count": 1},
            "ehr_coverage": {"patients": 9, "population": 10, "share": 0.9, "as_of": "2026-09-20",
                             "population_outdated": False, "without_district": 2} if not district else
                            {"patients": 3, "population": 4, "share": 0.75, "as_of": "2026-09-20",
                             "population_outdated": False, "without_district": 2},
            "generated_at": "2026-09-20T10:00:00+07:00"}


@pytest.fixture()
def officer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from sen_portal.web import dashboard, directory

    ASKED.clear()
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
    page = officer.get("/dashboard?district=Huyện+Lấp+Vò").get_data(as_text=True)  # named by the figures only
    assert '<option value="Huyện Lấp Vò" selected>' in page


@pytest.mark.parametrize("district", ["Huyện Hồng Ngự", "<b>x", "Huyện Cao Lãnh "])
def test_a_district_not_of_the_province_is_refused_not_added(officer, district):
    r = officer.get("/dashboard", query_string={"district": district})
    page = r.get_data(as_text=True)
    if district.strip() == "Huyện Cao Lãnh":  # spaces around a known one: that district
        assert r.status_code == 200 and '<option value="Huyện Cao Lãnh" selected>' in page
        return
    assert r.status_code == 400
    assert "Huyện trong đường dẫn không phải là một huyện của tỉnh" in page
    assert _options(page) == ["", "Huyện Cao Lãnh", "Huyện Lấp Vò", "Huyện Tháp Mười", "Thành phố Cao Lãnh"]
    assert " selected" not in page.split('<select id="district"', 1)[1].split("</select>", 1)[0]
    assert "<b>x" not in page and "&lt;b&gt;x" not in page and "Hồng Ngự" not in page  # not echoed
    assert 'data-chart="' not in page and district not in ASKED  # no figures, of the province or of it
    # its CSV: the same, a readable 400
    r = officer.get("/dashboard/ehr_coverage.csv", query_string={"district": district})
    assert r.status_code == 400 and r.mimetype == "text/html"
    assert "Huyện trong đường dẫn không phải là một huyện của tỉnh" in r.get_data(as_text=True)


def test_a_chosen_district_shows_the_districts_figures_only(officer):
    page = officer.get("/dashboard?district=Huyện+Cao+Lãnh").get_data(as_text=True)
    assert ASKED[-1] == "Huyện Cao Lãnh"
    assert re.search(r'data-testid="scope">[^<]*· Huyện Cao Lãnh</p>', page)
    # the province's baseline and goal are not the district's
    fac = page.split('id="h-fac"', 1)[1].split("</section>", 1)[0]
    assert "22" not in fac and "165" not in fac  # no baseline, no goal, no bar of them
    config = json.loads(re.search(r'id="chart-facilities">(.*?)</script>', fac, re.S).group(1))
    assert config["data"]["labels"] == ["Đang sử dụng"] and config["data"]["datasets"][0]["data"] == [1]
    assert re.search(r'data-testid="facilities-using">1</p>', page)
    assert "1 cơ sở của Huyện Cao Lãnh đang sử dụng." in page  # in use: the last 30 days, said under it
    # the EHR coverage is the district's own, and says how many records count in the province only
    ehr = page.split('id="h-ehr"', 1)[1].split("</section>", 1)[0]
    assert 'data-testid="ehr-share">75%<' in ehr and "3 hồ sơ trên 4 người dân của Huyện Cao Lãnh." in ehr
    assert "9 hồ sơ" not in ehr and "10 người dân" not in ehr  # not the province's
    ring = json.loads(re.search(r'id="chart-ehr">(.*?)</script>', ehr, re.S).group(1))
    assert ring["data"]["datasets"][0]["data"] == [3, 1]
    assert re.search(r'data-testid="ehr-without-district">2 hồ sơ không ghi huyện [^<]*: chỉ được tính vào số '
                     r'liệu toàn tỉnh\.</p>', ehr)
    # every download keeps the district
    links = re.findall(r'href="([^"]+)" download', page)
    assert links and all("district=Hu" in link for link in links), links
    whole = officer.get("/dashboard").get_data(as_text=True)
    assert re.search(r'data-testid="scope">[^<]*· Toàn tỉnh</p>', whole)
    assert "22 cơ sở trước Sen" in whole


def test_a_districts_coverage_in_english(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from sen_portal.web import dashboard, directory

    monkeypatch.setattr(dashboard, "figures", _figures)
    monkeypatch.setattr(directory, "names", lambda rtype: {})
    monkeypatch.setattr(dashboard, "org_districts", lambda: {"tyt-my-hiep": "Huyện Cao Lãnh"})
    client = portal_signed_in(portal_app(tmp_path, monkeypatch), "health-dept", "en")
    ehr = client.get("/dashboard?district=Huyện+Cao+Lãnh").get_data(as_text=True).split('id="h-ehr"', 1)[1]
    ehr = ehr.split("</section>", 1)[0]
    assert "3 records for 4 residents of Huyện Cao Lãnh." in ehr
    assert "2 records name no district (none in the patient's address" in ehr


@pytest.mark.parametrize(("population", "outdated", "says"), [
    (None, False, "3 hồ sơ của người dân Huyện Cao Lãnh; chưa khai số dân của huyện này"),
    (2, True, "3 hồ sơ, nhiều hơn 2 người dân đã khai cho Huyện Cao Lãnh: số dân chưa cập nhật")])
def test_a_districts_coverage_without_its_population_or_over_it_shows_no_share(officer, monkeypatch, population,
                                                                                outdated, says):
    from sen_portal.web import dashboard

    def district(start: date, end: date, district: str | None, facility: str | None = None) -> dict[str, Any]:
        data = _figures(start, end, district)
        data["ehr_coverage"] = {"patients": 3, "population": population, "share": None, "as_of": "2026-09-20",
                                "population_outdated": outdated, "without_district": 0}
        return data

    monkeypatch.setattr(dashboard, "figures", district)
    page = officer.get("/dashboard?district=Huyện+Cao+Lãnh").get_data(as_text=True)
    ehr = page.split('id="h-ehr"', 1)[1].split("</section>", 1)[0]
    assert 'data-testid="ehr-share">—<' in ehr and says in ehr and "SEN_REPORT_DISTRICT_POPULATIONS" in ehr
    assert 'data-chart="ehr"' not in ehr and "ehr-without-district" not in ehr  # every record placed


def test_records_over_the_population_say_the_population_is_out_of_date(officer, monkeypatch):
    from sen_portal.web import dashboard

    def stale(start: date, end: date, district: str | None, facility: str | None = None) -> dict[str, Any]:
        data = _figures(start, end, district)
        data["ehr_coverage"] = {"patients": 12, "population": 10, "share": None, "as_of": "2026-09-20",
                                "population_outdated": True}
        return data

    monkeypatch.setattr(dashboard, "figures", stale)
    page = officer.get("/dashboard").get_data(as_text=True)
    ehr = page.split('id="h-ehr"', 1)[1].split("</section>", 1)[0]
    assert "120" not in ehr and 'data-testid="ehr-share">—<' in ehr
    assert "12 hồ sơ, nhiều hơn 10 người dân đã khai cho tỉnh: số dân chưa cập nhật" in ehr
    assert 'data-chart="ehr"' not in ehr


def test_time_to_acceptance_is_not_called_the_answer_and_the_conclusion_is_beside_it(officer):
    page = officer.get("/dashboard").get_data(as_text=True)
    card = page.split('id="h-tta"', 1)[1].split("</section>", 1)[0]
    assert "Thời gian đến khi nhận ca và đến khi có kết luận theo mức độ ưu tiên" in card
    assert "trả lời" not in card.lower()
    acceptance = re.search(r'data-testid="time-to-answer">(.*?)</table>', card, re.S).group(1)
    conclusion = re.search(r'data-testid="time-to-conclusion">(.*?)</table>', card, re.S).group(1)
    assert "Thời gian đến khi nhận ca" in acceptance and "<td>Khẩn</td><td>2</td><td>0 phút</td>" in acceptance
    assert "Thời gian đến khi có kết luận" in conclusion
    assert "<td>Khẩn</td><td>1</td><td>6 phút</td><td>6 phút</td>" in conclusion
    label = re.search(r'<canvas data-chart="answer" role="img" aria-label="([^"]*)"', card).group(1)
    assert "nhận ca" in label and "biên bản hội chẩn được ký" in label
    config = json.loads(re.search(r'id="chart-answer">(.*?)</script>', card, re.S).group(1))
    assert [d["label"] for d in config["data"]["datasets"]] == [
        "Đến khi nhận ca: trung vị (phút)", "Đến khi có kết luận: trung vị (phút)"]
    assert config["data"]["datasets"][0]["data"][1] == 0 and config["data"]["datasets"][1]["data"][1] == 6  # urgent
    assert "Tải dữ liệu: Thời gian đến khi nhận ca (CSV)" in card
    assert "Tải dữ liệu: Thời gian đến khi có kết luận (CSV)" in card


def test_a_facilitys_district_is_its_first_address_district(monkeypatch):
    from sen_portal import caches
    from sen_portal.web import directory

    orgs = [{"resourceType": "Organization", "id": "tyt-my-hiep",
             "address": [{"city": "Mỹ Hiệp", "district": "Huyện Cao Lãnh", "state": "Đồng Tháp"}]},
            {"resourceType": "Organization", "id": "so-y-te", "address": [{"city": "Cao Lãnh"}]}]
    asked: list[dict[str, Any]] = []
    caches.forget_all()  # the districts of this test's Organizations
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
    assert len(links) == 8 and len(set(links)) == 8 and all(t.startswith("Tải dữ liệu: ") for t in links)
    assert "Tải dữ liệu: Số ca quá hạn trả lời (CSV)" in links


@pytest.mark.parametrize("lang,province,district", [
    ("vi", "ca hội chẩn được yêu cầu trong kỳ, mọi cơ sở",
     "ca hội chẩn được yêu cầu trong kỳ, các cơ sở thuộc Huyện Cao Lãnh"),
    ("en", "consults requested in this period, every facility",
     "consults requested in this period, facilities of Huyện Cao Lãnh"),
])
def test_the_consults_total_names_the_district_chosen(tmp_path, monkeypatch, lang, province, district):
    from sen_portal.web import dashboard, directory

    monkeypatch.setattr(dashboard, "figures", _figures)
    monkeypatch.setattr(directory, "names", lambda rtype: {})
    monkeypatch.setattr(dashboard, "org_districts", lambda: {"tyt-my-hiep": "Huyện Cao Lãnh"})
    client = portal_signed_in(portal_app(tmp_path, monkeypatch), "health-dept", lang)

    def label(query: str) -> str:
        page = client.get(f"/dashboard{query}").get_data(as_text=True)
        return re.search(r'data-testid="consults-total-label">([^<]*)</span>', page).group(1)

    assert label("") == province
    assert label("?district=Huy%E1%BB%87n+Cao+L%C3%A3nh") == district


@pytest.mark.parametrize(("populations", "says"), [
    ('{"Huyện Cao Lãnh": 8, "Huyện Tháp Mười": 3}', "add up to 11 residents, more than the province's"),
    ('{"Huyện Cao Lãnh": 0}', "a population above 0"),
    ('{" ": 3}', "a district needs a name"),
    ('["Huyện Cao Lãnh"]', "SEN_REPORT_DISTRICT_POPULATIONS")])
def test_district_populations_are_checked_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys,
                                                   populations, says):
    from sen_portal.config import settings_from_env

    for key, value in {"MONGO_URL": "mongodb://127.0.0.1:1/", "AMQP_URL": "amqp://127.0.0.1:1//", "SEN_ENV": "test",
                       "SEN_DEV_JWT_KEY": str(tmp_path / "dev.pem"), "SEN_REPORT_POPULATION": "10"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SEN_REPORT_DISTRICT_POPULATIONS", populations)
    with pytest.raises(SystemExit):
        settings_from_env()
    assert says in capsys.readouterr().err
    monkeypatch.setenv("SEN_REPORT_DISTRICT_POPULATIONS", '{"Huyện Cao Lãnh": 4, "Huyện Tháp Mười": 3}')
    assert settings_from_env().report_targets().district_populations == {"Huyện Cao Lãnh": 4, "Huyện Tháp Mười": 3}
