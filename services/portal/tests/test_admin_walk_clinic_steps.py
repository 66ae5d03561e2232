"""What the admin's walk of session 28 found on the clinic's steps, the dashboard and the header.

1. The admin (an account of no facility) was offered "Đăng ký người bệnh mới" and the consult request form, and a
   patient registered there had no managingOrganization: no clinic could ever see them (the EHR makes a patient a
   clinic's by it). Those steps are the staff's of the facility caring for the patient: the admin is not offered
   them and is refused them in words on their addresses, nothing sent to the EHR or teleconsult.
2. The dashboard told the admin to "ask the administrator" to update the population: her, she is told what to
   change and where; every other role still asks the administrator.
3. The header read "Quản trị viên (quản trị)": the role said once."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from tests.support import csrf_token, portal_app, portal_signed_in

REFUSED_VI = "tài khoản của bạn không gắn với cơ sở nào"
REFUSED_EN = "your account names no facility"


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from sen_portal.web import clinic

    sent: list[str] = []

    def nothing_sent(service: str, path: str, *args: Any, **kwargs: Any) -> Any:
        sent.append(path)
        raise AssertionError(f"nothing is sent for an account of no facility: {service} {path}")

    monkeypatch.setattr(clinic, "fhir_post", nothing_sent)
    monkeypatch.setattr(clinic, "fhir_get", nothing_sent)
    flask_app = portal_app(tmp_path, monkeypatch)
    flask_app.sent = sent
    return flask_app


@pytest.mark.parametrize(("lang", "refusal"), [("vi", REFUSED_VI), ("en", REFUSED_EN)])
def test_the_admin_is_refused_registering_a_patient_in_words(app, lang, refusal):
    client = portal_signed_in(app, "admin", lang)
    page = client.get("/patients/new")
    assert page.status_code == 403
    assert refusal in page.get_data(as_text=True)
    token = csrf_token(client.get("/login").get_data(as_text=True))
    form = {"csrf_token": token, "family": "Nguyễn", "given": "Văn A", "birth_date": "1990-01-02", "gender": "male"}
    posted = client.post("/patients/new", data=form)
    assert posted.status_code == 403 and refusal in posted.get_data(as_text=True)
    assert app.sent == []


@pytest.mark.parametrize(("lang", "refusal"), [("vi", REFUSED_VI), ("en", REFUSED_EN)])
def test_the_admin_is_refused_the_consult_request_form_in_words(app, lang, refusal):
    client = portal_signed_in(app, "admin", lang)
    page = client.get("/patients/bn-0001/consult")
    assert page.status_code == 403
    assert refusal in page.get_data(as_text=True)
    token = csrf_token(client.get("/login").get_data(as_text=True))
    posted = client.post("/patients/bn-0001/consult", data={"csrf_token": token, "reason": "E11"})
    assert posted.status_code == 403 and refusal in posted.get_data(as_text=True)
    assert app.sent == []


def test_the_admin_is_refused_taking_a_patient_on(app):
    client = portal_signed_in(app, "admin")
    token = csrf_token(client.get("/login").get_data(as_text=True))
    r = client.post("/patients/take-on", data={"csrf_token": token, "system": "cccd", "number": "001090000001"})
    assert r.status_code == 403 and REFUSED_VI in r.get_data(as_text=True)


@pytest.mark.parametrize(("user", "offered"), [("clinic", True), ("admin", False)])
def test_registering_a_patient_is_offered_to_a_facilitys_clinic_only(app, user, offered):
    page = portal_signed_in(app, user).get("/patients").get_data(as_text=True)
    assert ('href="/patients/new"' in page) is offered


def test_a_clinic_still_opens_the_registration_form(app):
    page = portal_signed_in(app, "clinic").get("/patients/new")
    assert page.status_code == 200 and REFUSED_VI not in page.get_data(as_text=True)


def _outdated(start: date, end: date, district: str | None, facility: str | None = None) -> dict[str, Any]:
    coverage = {"patients": 12, "population": 10, "share": None, "as_of": "2026-12-05", "population_outdated": True,
                "without_district": 0}
    if district:
        coverage = {**coverage, "population": None} if district == "Huyện Tháp Mười" else coverage
    return {"range": {"start": "2026-12-05", "end": "2026-12-05", "district": district, "weeks": ["2026-W49"]},
            "facilities_using": {"count": 23, "new": 1, "baseline": 22, "goal": 165, "share": 0.14},
            "consults_per_facility_week": [], "time_to_answer": {}, "time_to_conclusion": {}, "sla_breaches": [],
            "cashless_share": {"transfer_amount": 0, "cash_amount": 0, "share": None, "transfer_count": 0,
                               "cash_count": 0},
            "ehr_coverage": coverage, "generated_at": "2026-12-05T10:00:00+07:00"}


@pytest.fixture()
def dashboard_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from sen_portal.web import dashboard, directory

    monkeypatch.setattr(dashboard, "figures", _outdated)
    monkeypatch.setattr(directory, "names", lambda rtype: {})
    monkeypatch.setattr(dashboard, "org_districts", lambda: {"tyt-my-hiep": "Huyện Cao Lãnh",
                                                             "tyt-doc-binh-kieu": "Huyện Tháp Mười"})
    return portal_app(tmp_path, monkeypatch)


def _ehr_note(client: Any, query: str = "") -> str:
    page = client.get(f"/dashboard{query}").get_data(as_text=True)
    section = page.split('id="h-ehr"', 1)[1].split("</section>", 1)[0]
    return section.split('data-testid="ehr-note">', 1)[1].split("</p>", 1)[0]


@pytest.mark.parametrize(("query", "setting", "key"), [
    ("", "SEN_REPORT_POPULATION", "population.province"),
    ("?district=Huyện Cao Lãnh", "SEN_REPORT_DISTRICT_POPULATIONS", "population.districts"),
    ("?district=Huyện Tháp Mười", "SEN_REPORT_DISTRICT_POPULATIONS", "population.districts")])
def test_the_admin_is_told_what_to_change_not_to_ask_herself(dashboard_app, query, setting, key):
    for lang in ("vi", "en"):
        note = _ehr_note(portal_signed_in(dashboard_app, "admin", lang), query)
        assert "quản trị viên" not in note.lower() and "administrator" not in note.lower(), note
        assert setting in note and key in note and "docs/operations.md" in note, note
    officer = _ehr_note(portal_signed_in(dashboard_app, "health-dept"), query)
    assert "đề nghị quản trị viên" in officer and setting in officer and "docs/operations.md" not in officer


@pytest.mark.parametrize(("lang", "header"), [("vi", '<span class="who">Quản trị viên</span>'),
                                              ("en", '<span class="who">Administrator</span>')])
def test_the_admins_header_says_her_role_once(app, lang, header):
    page = portal_signed_in(app, "admin", lang).get("/").get_data(as_text=True)
    assert header in page


def test_a_persons_header_still_names_the_role(app):
    page = portal_signed_in(app, "clinic").get("/patients").get_data(as_text=True)
    assert '<span class="who">Võ Minh Tâm <small>(' in page
