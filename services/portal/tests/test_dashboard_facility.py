"""The dashboard filtered by facility (web/dashboard.py): the health department officer picks one of the
province's facilities (grouped by district, only the chosen district's when one is), the choice is kept
in the link (a GET form like the district's: shareable, Back works), the heading names the facility, the
figures and every download are that facility's, and a facility with nothing in the period says so.

A facility in the link that is not the province's is a readable 400 (Vietnamese, or English), never
echoed, never empty figures; one of another district than the chosen one says where it is. The
dashboard stays the health department's (and the admin's): a clinic's user asking for their own
facility's figures is refused as before."""

from __future__ import annotations

import html
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from services.portal.tests.read_model import read_model_answers
from tests.support import portal_app, portal_signed_in

ASKED: list[tuple[str | None, str | None]] = []
NAMES = {"tyt-my-hiep": "Trạm Y tế xã Mỹ Hiệp", "tyt-my-long": "Trạm Y tế xã Mỹ Long",
         "bvdk-dong-thap": "Bệnh viện Đa khoa Đồng Tháp", "tyt-doc-binh-kieu": "Trạm Y tế xã Đốc Binh Kiều",
         "so-y-te-dong-thap": "Sở Y tế Đồng Tháp", "pk-an-binh": "Phòng khám An Bình"}
DISTRICTS = {"tyt-my-hiep": "Huyện Cao Lãnh", "tyt-my-long": "Huyện Cao Lãnh",
             "bvdk-dong-thap": "Thành phố Cao Lãnh", "tyt-doc-binh-kieu": "Huyện Tháp Mười",
             "so-y-te-dong-thap": "Thành phố Cao Lãnh"}


def _figures(start: date, end: date, district: str | None, facility: str | None = None) -> dict[str, Any]:
    """domain.dashboard's figures: Mỹ Hiệp's own (2 consults, 1 breach, one transfer), Mỹ Long none; the
    province's name a facility the EHR does not (its id only)."""
    from sen_portal.domain.dashboard import cashless

    ASKED.append((district, facility))
    quiet = facility == "tyt-my-long"
    rows = [] if quiet else [{"facility": "Organization/tyt-my-hiep", "district": "Huyện Cao Lãnh",
                              "week": "2026-W38", "count": 2}]
    if facility is None and district is None:
        rows = [*rows, {"facility": "Organization/tyt-moi", "district": "Huyện Lấp Vò", "week": "2026-W38",
                        "count": 1}]
    return {"range": {"start": "2026-09-07", "end": "2026-09-20", "district": district,
                      "facility": f"Organization/{facility}" if facility else None,
                      "weeks": ["2026-W37", "2026-W38"]},
            "facilities_using": {"count": 0 if quiet else 1, "new": 0 if quiet else 1, "baseline": None,
                                 "goal": None, "share": None} if facility else
            {"count": 23, "new": 1, "baseline": 22, "goal": 165, "share": 0.14},
            "consults_per_facility_week": rows,
            "time_to_answer": {p: {"count": 0, "median_minutes": None, "p90_minutes": None}
                               for p in ("routine", "urgent", "asap", "stat")},
            "time_to_conclusion": {},
            "sla_breaches": [] if quiet else [{"week": "2026-W38", "priority": "urgent", "count": 1}],
            "cashless_share": cashless([] if quiet else [{"k": "billing.payment.received", "channel": "transfer",
                                                          "outcome": "applied", "amount": 150000, "n": 1,
                                                          "facility": "Organization/tyt-my-hiep"}]),
            "ehr_coverage": {"patients": None, "population": None, "share": None, "as_of": "2026-09-20",
                             "population_outdated": False, "without_district": 0} if facility else
            {"patients": 9, "population": 10, "share": 0.9, "as_of": "2026-09-20", "population_outdated": False,
             "without_district": 0},
            "generated_at": "2026-09-20T10:00:00+07:00"}


def _app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from sen_portal.web import dashboard

    ASKED.clear()
    monkeypatch.setattr(dashboard, "figures", _figures)
    monkeypatch.setattr(dashboard, "org_names", lambda: NAMES)
    monkeypatch.setattr(dashboard, "org_districts", lambda: DISTRICTS)
    monkeypatch.setattr(dashboard, "org_without_care", lambda: {"so-y-te-dong-thap"})  # its type: govt
    read_model_answers(monkeypatch)
    return portal_app(tmp_path, monkeypatch)


@pytest.fixture()
def officer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    return portal_signed_in(_app(tmp_path, monkeypatch), "health-dept")


def _select(page: str) -> str:
    return re.search(r'<select id="facility" name="facility">(.*?)</select>', page, re.S).group(1)


def _groups(page: str) -> list[tuple[str, list[str]]]:
    return [(label, re.findall(r'<option value="([^"]*)"', body))
            for label, body in re.findall(r'<optgroup label="([^"]*)">(.*?)</optgroup>', _select(page), re.S)]


def test_the_facility_filter_lists_the_provinces_facilities_by_district(officer):
    page = officer.get("/dashboard").get_data(as_text=True)
    assert re.search(r'<label for="facility">Cơ sở</label>', page)
    assert '<option value="">Tất cả cơ sở</option>' in _select(page)
    # by district, each group by name; a facility the figures name but the EHR does not, by its id;
    # one with no district last; the health department itself (no provider of care) is no facility
    assert _groups(page) == [("Huyện Cao Lãnh", ["tyt-my-hiep", "tyt-my-long"]),
                             ("Huyện Lấp Vò", ["tyt-moi"]),
                             ("Huyện Tháp Mười", ["tyt-doc-binh-kieu"]),
                             ("Thành phố Cao Lãnh", ["bvdk-dong-thap"]),
                             ("Chưa rõ huyện", ["pk-an-binh"])]
    assert '<option value="tyt-my-hiep">Trạm Y tế xã Mỹ Hiệp</option>' in page
    assert 'data-testid="facility-heading"' not in page
    # a district chosen: only its facilities
    page = officer.get("/dashboard?district=Huyện+Cao+Lãnh").get_data(as_text=True)
    assert _groups(page) == [("Huyện Cao Lãnh", ["tyt-my-hiep", "tyt-my-long"])]


@pytest.mark.parametrize("asked", ["tyt-my-hiep", "Organization/tyt-my-hiep", " tyt-my-hiep "])
def test_a_chosen_facility_is_kept_in_the_link_and_scopes_the_page(officer, asked):
    r = officer.get("/dashboard", query_string={"start": "07/09/2026", "end": "20/09/2026", "facility": asked})
    page = r.get_data(as_text=True)
    assert r.status_code == 200
    assert ASKED[-1] == (None, "tyt-my-hiep")  # the figures asked for are the facility's
    assert '<option value="tyt-my-hiep" selected>Trạm Y tế xã Mỹ Hiệp</option>' in _select(page)
    assert re.search(r'data-testid="facility-heading">Cơ sở: Trạm Y tế xã Mỹ Hiệp · Huyện Cao Lãnh</h2>', page)
    # the period's scope: the facility's district (the directory's, as the filter's), never "Whole province"
    assert re.search(r'data-testid="scope">Từ 07/09/2026 đến 20/09/2026 · Huyện Cao Lãnh · Trạm Y tế xã Mỹ Hiệp</p>',
                     page)
    assert "Toàn tỉnh" not in page
    # its own figures, said as its own; no province-only figure, no coverage by facility
    assert re.search(r'consults-total">2</span> <span data-testid="consults-total-label">ca hội chẩn được Trạm Y tế '
                     r'xã Mỹ Hiệp yêu cầu trong kỳ</span>', page)
    assert "Trạm Y tế xã Mỹ Hiệp đã gửi 2 yêu cầu hội chẩn trong kỳ." in page
    assert "165" not in page.split('id="h-fac"', 1)[1].split("</section>", 1)[0]
    assert "Hồ sơ được tính theo huyện nơi người bệnh cư trú, không theo cơ sở" in page
    assert "Cơ sở này: tiền của riêng cơ sở" in page
    # every download keeps the facility (and the dates): the link is the page's own
    links = re.findall(r'href="([^"]+)" download', page)
    assert len(links) == 16 and all("facility=" in link and "start=07" in link for link in links), links  # xlsx, csv
    # the same link again (shared, or Back) shows the same
    again = officer.get(r.request.full_path).get_data(as_text=True)
    assert '<option value="tyt-my-hiep" selected>' in again and ASKED[-1] == (None, "tyt-my-hiep")


def test_a_facility_with_its_district_and_the_province_again(officer):
    page = officer.get("/dashboard?district=Huyện+Cao+Lãnh&facility=tyt-my-hiep").get_data(as_text=True)
    assert ASKED[-1] == ("Huyện Cao Lãnh", "tyt-my-hiep")
    assert re.search(r'data-testid="scope">[^<]*· Huyện Cao Lãnh · Trạm Y tế xã Mỹ Hiệp</p>', page)
    page = officer.get("/dashboard?district=Huyện+Cao+Lãnh&facility=").get_data(as_text=True)
    assert ASKED[-1] == ("Huyện Cao Lãnh", None) and 'data-testid="facility-heading"' not in page
    assert " selected" not in _select(page)


def test_a_facility_without_figures_in_the_period_says_so(officer):
    r = officer.get("/dashboard?facility=tyt-my-long")
    page = r.get_data(as_text=True)
    assert r.status_code == 200
    assert re.search(r'data-testid="facility-empty">Trạm Y tế xã Mỹ Long không có ca hội chẩn và không có khoản '
                     r'thanh toán nào từ 07/09/2026 đến 20/09/2026: cơ sở chưa dùng Sen trong kỳ này\.</div>', page)
    assert 'data-chart="' not in page  # no charts of zeros
    assert "Cơ sở: Trạm Y tế xã Mỹ Long" in page
    # one with figures: no such message
    assert 'data-testid="facility-empty"' not in officer.get("/dashboard?facility=tyt-my-hiep").get_data(as_text=True)


@pytest.mark.parametrize("asked", ["tyt-khong-co", "<b>x", "Organization/", "so-y-te-dong-thap"])
def test_a_facility_not_of_the_province_is_a_readable_400(officer, asked):
    r = officer.get("/dashboard", query_string={"facility": asked})
    page = r.get_data(as_text=True)
    if asked == "Organization/":  # no id: every facility
        assert r.status_code == 200 and ASKED[-1] == (None, None)
        return
    assert r.status_code == 400
    assert "Cơ sở trong đường dẫn không phải là một cơ sở của tỉnh: hãy chọn một cơ sở trong danh sách, " \
           "hoặc Tất cả cơ sở." in page
    main = page.split("<main", 1)[1]  # (the language switch above it comes back to the page's own link)
    assert asked not in main and "&lt;b&gt;x" not in main and "khong-co" not in main  # not echoed
    assert "Sở Y tế Đồng Tháp" not in main
    assert " selected" not in _select(page) and 'data-chart="' not in page
    assert all(f != asked for _d, f in ASKED)  # no figures of it
    assert _groups(page)[0] == ("Huyện Cao Lãnh", ["tyt-my-hiep", "tyt-my-long"])  # the list to choose from
    # its CSV: the same, a readable 400
    r = officer.get("/dashboard/consults_per_facility_week.csv", query_string={"facility": asked})
    assert r.status_code == 400 and r.mimetype == "text/html"
    assert "Cơ sở trong đường dẫn không phải là một cơ sở của tỉnh" in r.get_data(as_text=True)


def test_a_facility_not_of_the_district_chosen_says_where_it_is(officer):
    r = officer.get("/dashboard?district=Huyện+Cao+Lãnh&facility=tyt-doc-binh-kieu")
    page = r.get_data(as_text=True)
    assert r.status_code == 400 and 'data-chart="' not in page
    assert "Trạm Y tế xã Đốc Binh Kiều thuộc Huyện Tháp Mười, không thuộc Huyện Cao Lãnh: hãy chọn một cơ sở " \
           "của huyện này, hoặc Tất cả cơ sở." in page
    assert ("Huyện Cao Lãnh", "tyt-doc-binh-kieu") not in ASKED  # never zeros shown as its figures
    # the district stays chosen, its facilities listed
    assert '<option value="Huyện Cao Lãnh" selected>' in page
    assert _groups(page) == [("Huyện Cao Lãnh", ["tyt-my-hiep", "tyt-my-long"])]
    # one whose district is not known
    page = officer.get("/dashboard?district=Huyện+Cao+Lãnh&facility=pk-an-binh").get_data(as_text=True)
    assert "Chưa rõ huyện của Phòng khám An Bình, nên cơ sở không được hiển thị trong Huyện Cao Lãnh" in page
    r = officer.get("/dashboard/cashless_share.csv?district=Huyện+Cao+Lãnh&facility=tyt-doc-binh-kieu")
    assert r.status_code == 400 and "thuộc Huyện Tháp Mười, không thuộc Huyện Cao Lãnh" in r.get_data(as_text=True)


def test_refusals_in_english(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    client = portal_signed_in(_app(tmp_path, monkeypatch), "health-dept", "en")
    page = html.unescape(client.get("/dashboard?facility=nope").get_data(as_text=True))
    assert "The facility in the link is not one of the province's facilities: choose a facility from the list, " \
           "or All facilities." in page
    page = client.get("/dashboard?district=Huyện+Cao+Lãnh&facility=tyt-doc-binh-kieu").get_data(as_text=True)
    assert "Trạm Y tế xã Đốc Binh Kiều is in Huyện Tháp Mười, not in Huyện Cao Lãnh" in page
    page = client.get("/dashboard?facility=tyt-my-hiep").get_data(as_text=True)
    assert "Facility: Trạm Y tế xã Mỹ Hiệp" in page and '<option value="">All facilities</option>' in page


def test_a_facilitys_csv_is_named_by_it(officer, monkeypatch):
    from sen_portal.web import dashboard

    seen: list[Any] = []

    def rows(section, db, start, end, district, **kw):
        seen.append(kw.get("facility"))  # csv_rows writes the facility's district given (the API's CSV alike)
        return (["start", "end", "district", "facility", "transfer_amount"],
                [["2026-09-07", "2026-09-20", district or kw.get("facility_district"), "tyt-my-hiep", 150000]])

    monkeypatch.setattr(dashboard, "csv_rows", rows)
    r = officer.get("/dashboard/cashless_share.csv?start=07/09/2026&end=20/09/2026&facility=tyt-my-hiep")
    assert r.status_code == 200 and seen == ["tyt-my-hiep"]
    assert "cashless_share_tyt-my-hiep_2026-09-07_2026-09-20.csv" in r.headers["Content-Disposition"]
    text = r.data.decode("utf-8-sig")
    assert text.splitlines()[0] == "Từ,Đến,Huyện,Mã cơ sở,Cơ sở,Chuyển khoản (đồng)"
    # its district (the directory's), not "Whole province"; its id as the file's name has it
    assert text.splitlines()[1] == "2026-09-07,2026-09-20,Huyện Cao Lãnh,tyt-my-hiep,Trạm Y tế xã Mỹ Hiệp,150000"


@pytest.mark.parametrize("role", ["clinic", "cashier", "doctor"])
def test_a_facilitys_own_users_cannot_open_its_dashboard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, role):
    """The dashboard is the health department's (and the admin's); the facility filter widens it to no one."""
    client = portal_signed_in(_app(tmp_path, monkeypatch), role)
    for path in ("/dashboard?facility=tyt-my-hiep", "/dashboard/consults_per_facility_week.csv?facility=tyt-my-hiep",
                 "/dashboard?facility=bvdk-dong-thap"):
        assert client.get(path).status_code == 403
    assert ASKED == []
    admin = portal_signed_in(_app(tmp_path, monkeypatch), "admin")
    assert admin.get("/dashboard?facility=tyt-my-hiep").status_code == 200


def test_the_organizations_that_give_no_care_are_read_from_their_type(monkeypatch):
    from sen_portal import caches
    from sen_portal.web import directory

    def org(oid: str, *codes: str) -> dict[str, Any]:
        return {"resource": {"resourceType": "Organization", "id": oid, "type": [{"coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": c} for c in codes]}]
            if codes else []}}

    asked: list[dict[str, Any]] = []

    def fhir_get(service, path, params=None, **_):
        asked.append(params)
        return {"resourceType": "Bundle", "type": "searchset", "entry": [
            org("so-y-te-dong-thap", "govt"), org("tyt-my-hiep", "prov"), org("bv-quan-y", "govt", "prov"),
            org("pk-an-binh")]}

    caches.forget_all()  # the types of this test's Organizations
    monkeypatch.setattr(directory, "fhir_get", fhir_get)
    assert directory.org_without_care() == {"so-y-te-dong-thap"}
    assert asked == [{"_count": "500", "_elements": "type"}]
    directory.org_without_care()
    assert len(asked) == 1  # kept, as the names are


def test_a_facility_of_no_known_district_is_not_said_to_be_the_whole_province(officer):
    page = officer.get("/dashboard?start=07/09/2026&end=20/09/2026&facility=pk-an-binh").get_data(as_text=True)
    assert re.search(r'data-testid="scope">Từ 07/09/2026 đến 20/09/2026 · Phòng khám An Bình</p>', page)
    assert "Toàn tỉnh" not in page


def _district_select(page: str) -> str:
    return re.search(r'<select id="district" name="district">(.*?)</select>', page, re.S).group(1)


def test_a_facility_alone_in_the_link_shows_its_district_in_the_district_select(officer):
    """Review 8: /dashboard?facility=... said "· Huyện Cao Lãnh" in the heading while the district select
    stayed on "Tất cả huyện". The select follows the facility's district and the facility select lists that
    district's facilities, as when both are chosen; the figures stay the facility's own."""
    page = officer.get("/dashboard?facility=tyt-my-hiep").get_data(as_text=True)
    assert ASKED[-1] == (None, "tyt-my-hiep")
    assert '<option value="Huyện Cao Lãnh" selected>Huyện Cao Lãnh</option>' in _district_select(page)
    assert '<option value="" selected' not in _district_select(page)
    assert _groups(page) == [("Huyện Cao Lãnh", ["tyt-my-hiep", "tyt-my-long"])]
    # the form sent again as it shows (district and facility) is the same facility, not refused
    again = officer.get("/dashboard?district=Huyện+Cao+Lãnh&facility=tyt-my-hiep")
    assert again.status_code == 200 and ASKED[-1] == ("Huyện Cao Lãnh", "tyt-my-hiep")
    # a facility of no known district: the select stays on All districts, every facility listed
    page = officer.get("/dashboard?facility=pk-an-binh").get_data(as_text=True)
    assert " selected" not in _district_select(page) and len(_groups(page)) == 5
    # a facility outside the chosen district is still refused, the district kept (page and CSV alike)
    assert officer.get("/dashboard?district=Huyện+Tháp+Mười&facility=tyt-my-hiep").status_code == 400
    assert officer.get("/dashboard/cashless_share.csv?district=Huyện+Tháp+Mười&facility=tyt-my-hiep"
                       ).status_code == 400


def test_the_payment_counts_agree_with_their_number_in_english(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Review 8: "Cash: 1 payments"; one payment is "1 payment" (Vietnamese has one form: "1 lần")."""
    client = portal_signed_in(_app(tmp_path, monkeypatch), "health-dept", "en")
    page = html.unescape(client.get("/dashboard?facility=tyt-my-hiep").get_data(as_text=True))
    counts = re.search(r'data-testid="cashless-counts">(.*?)</span>', page).group(1)
    assert re.fullmatch(r"Transfers: 1 payment, 150[.,]000\s?₫ · Cash: 0 payments, 0\s?₫", counts), counts
    vi = portal_signed_in(_app(tmp_path, monkeypatch), "health-dept")
    page = html.unescape(vi.get("/dashboard?facility=tyt-my-hiep").get_data(as_text=True))
    counts = re.search(r'data-testid="cashless-counts">(.*?)</span>', page).group(1)
    assert counts.replace("\xa0", " ") == "Chuyển khoản: 1 lần, 150.000 ₫ · Tiền mặt: 0 lần, 0 ₫", counts
