"""The minutes name their secretary (thư ký), who signs them beside the chair (Circular 49/2017/TT-BYT): the
doctor's minutes form has a "Thư ký / Secretary" box suggesting the participants' names (a datalist) or taking
one typed; one of the participants goes to teleconsult's ``$complete`` as ``secretary`` (its name in the
reference's display); one who is not, the chair, or a title alone is said on the box in the page's language,
nothing sent and everything typed kept; empty, nothing is sent as before (the printed block signed by hand).
The consult record and its print name the secretary the EHR keeps (its attester marked so), and a record without
one prints as before. Flask's test client, teleconsult and the EHR faked at the HTTP client."""

from __future__ import annotations

import re

import pytest

from services.portal.tests.test_clinic_consult_page import sign_in
from services.portal.tests.test_consult_record_print import Fakes, _pdf, _record, _text, needs_pdftotext
from services.portal.tests.test_consult_record_print import client as client  # noqa: F401 - a fixture
from services.portal.tests.test_consult_takeover import _minutes
from services.portal.tests.test_minutes_in_place import HTMX, _box
from services.portal.tests.test_minutes_in_place import app as app  # noqa: F401 - the fixtures, used by name
from services.portal.tests.test_minutes_in_place import fake as fake  # noqa: F401
from services.portal.tests.test_visit_changes import TID
from services.portal.tests.test_visit_changes import _text as _page_text
from tests.support import csrf_token, portal_signed_in

PARTICIPANTS = ("BS. Nguyễn Văn An — chủ trì\nBS. Trần Thị Bích — thư ký, Bệnh viện Đa khoa Đồng Tháp\n"
                "YS. Võ Minh Tâm — cơ sở gửi; ĐD. Lê Thị Hoa")


def _minutes_page(c, fake) -> str:
    fake.status, fake.owner = "in-progress", "Practitioner/bs-nguyen-van-an"
    return c.get(f"/tasks/{TID}").get_data(as_text=True)


def _sent_secretary(fake) -> list[dict]:
    return [p for p in fake.completed[-1]["parameter"] if p["name"] == "secretary"]


def test_the_form_suggests_the_participants_and_sends_the_secretary_chosen(app, fake):
    c = portal_signed_in(app, "doctor")
    page = _minutes_page(c, fake)
    box = _box(page)
    field = re.search(r'<input[^>]*name="secretary"[^>]*>', box).group(0)
    assert 'list="secretary-names"' in field and 'autocomplete="off"' in field, field
    assert "Thư ký" in _page_text(box) and "một trong những người tham dự" in _page_text(box)
    # the participants as first shown: the doctor (the chair) aside, the clinic's side suggested
    options = re.findall(r'<option value="([^"]*)">', box[box.index('id="secretary-names"'):])
    assert options and not any("Nguyễn Văn An" in o for o in options), options
    # typed participants: each one named, once, the chair aside
    r = c.post(f"/tasks/{TID}/complete", data={**_minutes(page, PARTICIPANTS), "secretary": "Võ Minh Tâm x"},
               headers=HTMX)
    box = _box(r.get_data(as_text=True))
    options = re.findall(r'<option value="([^"]*)">', box[box.index('id="secretary-names"'):])
    assert options == ["BS. Trần Thị Bích", "YS. Võ Minh Tâm", "ĐD. Lê Thị Hoa"], options
    # one of them, under another title, spaces as typed: sent by the name typed
    r = c.post(f"/tasks/{TID}/complete", data={**_minutes(page, PARTICIPANTS), "secretary": " ThS.BS.  Trần Thị Bích "})
    assert r.status_code == 302, _page_text(r.get_data(as_text=True))[:600]
    assert _sent_secretary(fake) == [{"name": "secretary", "valueReference": {"display": "ThS.BS. Trần Thị Bích"}}]


def test_the_suggestions_follow_the_participants_as_they_are_edited_on_the_page(app, fake):
    """The datalist was drawn once with the page: participants typed or changed after it left the suggestions as
    the page was drawn. The participants box and the chair's ask for them again as they are edited (htmx,
    POSTed: the names go in no URL), and the answer is the datalist it replaces."""
    c = portal_signed_in(app, "doctor")
    page = _minutes_page(c, fake)
    box = _box(page)
    for name in ("participants", "chair"):
        tag = re.search(rf'<(?:textarea|input)[^>]*name="{name}"[^>]*>', box).group(0)
        assert 'hx-post="/minutes/secretary-names"' in tag and 'hx-target="#secretary-names"' in tag, tag
        assert 'hx-swap="outerHTML"' in tag and 'hx-params="participants,chair"' in tag and "input" in tag, tag
    r = c.post("/minutes/secretary-names", data={"participants": PARTICIPANTS, "chair": "BS. Nguyễn Văn An",
                                                 "csrf_token": csrf_token(page)}, headers=HTMX)
    answer = r.get_data(as_text=True).strip()
    assert r.status_code == 200 and answer.startswith('<datalist id="secretary-names">'), answer
    assert re.findall(r'<option value="([^"]*)">', answer) == ["BS. Trần Thị Bích", "YS. Võ Minh Tâm",
                                                               "ĐD. Lê Thị Hoa"]
    # another chair named: the one who was chair is suggested, the new chair is not
    r = c.post("/minutes/secretary-names", data={"participants": PARTICIPANTS, "chair": "Trần Thị Bích",
                                                 "csrf_token": csrf_token(page)}, headers=HTMX)
    assert re.findall(r'<option value="([^"]*)">', r.get_data(as_text=True)) == [
        "BS. Nguyễn Văn An", "YS. Võ Minh Tâm", "ĐD. Lê Thị Hoa"]
    # nothing typed: no suggestion; without the form's token, refused as any form is
    r = c.post("/minutes/secretary-names", data={"participants": "", "chair": "", "csrf_token": csrf_token(page)})
    assert re.findall(r"<option", r.get_data(as_text=True)) == []
    assert c.post("/minutes/secretary-names", data={"participants": PARTICIPANTS}).status_code in (400, 403)
    clinic = portal_signed_in(app, "clinic")  # the doctor's only
    token = csrf_token(clinic.get("/", follow_redirects=True).get_data(as_text=True))
    r = clinic.post("/minutes/secretary-names", data={"participants": PARTICIPANTS, "csrf_token": token})
    assert r.status_code == 403 and "<option" not in r.get_data(as_text=True), r.status_code


def test_without_a_secretary_the_minutes_are_sent_as_before(app, fake):
    c = portal_signed_in(app, "doctor")
    page = _minutes_page(c, fake)
    r = c.post(f"/tasks/{TID}/complete", data={**_minutes(page, PARTICIPANTS), "secretary": "   "})
    assert r.status_code == 302 and len(fake.completed) == 1 and _sent_secretary(fake) == []


@pytest.mark.parametrize(("lang", "typed", "said"), [
    ("vi", "BS. Phạm Văn Tư", "BS. Phạm Văn Tư không có trong thành phần tham dự ở trên"),
    ("en", "BS. Phạm Văn Tư", "BS. Phạm Văn Tư is not among the participants above"),
    ("vi", "BS.CKII Nguyễn Văn An", "Người chủ trì không thể đồng thời là thư ký"),
    ("en", "Nguyễn Văn An", "The chair cannot also be the secretary"),
    ("vi", "BS.", "Hãy ghi họ tên thư ký, không chỉ chức danh."),
    ("en", "ThS. BS.", "Write the secretary's name, not only a title."),
    ("vi", "B" * 201, "Ghi tối đa 200 ký tự."),
])
def test_a_secretary_not_among_the_participants_is_said_on_the_box_and_everything_typed_is_kept(
        app, fake, lang, typed, said):
    c = portal_signed_in(app, "doctor", lang=lang)
    page = _minutes_page(c, fake)
    data = {**_minutes(page, PARTICIPANTS), "secretary": typed}
    for headers in ({}, HTMX):  # posted by the browser, and sent in place: the box again
        r = c.post(f"/tasks/{TID}/complete", data=data, headers=headers)
        assert r.status_code == (200 if headers else 422) and fake.completed == [], r.status_code
        box = _box(r.get_data(as_text=True))
        error = re.search(r'id="secretary-error"[^>]*>(.*?)</', box, re.S)
        assert error and said in _page_text(error.group(1)), _page_text(box)[:1500]
        field = re.search(r'<input[^>]*name="secretary"[^>]*>', box).group(0)
        assert 'aria-invalid="true"' in field and f'value="{typed}"' in field, field
        assert "Trần Thị Bích — thư ký, Bệnh viện Đa khoa Đồng Tháp" in box  # the participants as typed
        assert "Tăng huyết áp 5 năm." in box and csrf_token(box)


def test_the_record_page_names_the_secretary_the_ehr_keeps(client, monkeypatch):
    comp = _record(secretary={"display": "ĐD. Lê Thị Hoa"})
    Fakes(monkeypatch, comp)
    sign_in(client, "clinic")
    page = client.get("/patients/p1/consult-records/c1").get_data(as_text=True)
    assert re.search(r'data-testid="record-secretary">ĐD\. Lê Thị Hoa<', page), page[:3000]
    assert 'data-testid="record-chair">BS.CKII Nguyễn Văn An<' in page  # the chair is still the chair


@needs_pdftotext
def test_the_print_names_the_secretary_the_minutes_name_and_an_old_record_falls_back(client, monkeypatch,
                                                                                   tmp_path):
    # named in the minutes: printed under THƯ KÝ, though the participants' roles call another one thư ký
    Fakes(monkeypatch, _record(secretary={"display": "ĐD. Lê Thị Hoa"}))
    flat = re.sub(r"\s+", " ", _text(_pdf(client).data, tmp_path))
    assert "Thư ký ĐD. Lê Thị Hoa" in flat, flat
    assert flat.rindex("ĐD. Lê Thị Hoa") > flat.index("THƯ KÝ") and flat.count("ĐD. Lê Thị Hoa") == 2
    # a record stored before (no secretary attester): the participant whose role says thư ký, as before
    Fakes(monkeypatch, _record())
    flat = re.sub(r"\s+", " ", _text(_pdf(client).data, tmp_path))
    assert "Thư ký BS. Trần Thị Bích" in flat and flat.rindex("BS. Trần Thị Bích") > flat.index("THƯ KÝ"), flat
