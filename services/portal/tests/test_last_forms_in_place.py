"""The portal's last forms the browser posted: the sign-in, the language switch, the sign-out, the doctor's
acceptance ("Nhận ca", its take-over too) and the clinic's end of a take-on. An answer lost on the way back (a
clinic's 3G) was Chromium's own English "This site can't be reached". Each is sent in place now (htmx, _form.html's
sent_in_place): a lost connection is said in the form's own box, the page staying; done, the page it leads to
(204 + HX-Redirect); refused, the box (or, for the acceptance, the whole page) saying why. Each is safe to send
again after its answer was lost: the same cookie and token as the first (the browser never got the answer's), and
the same outcome. Without JavaScript each is posted by the browser as before.

Also: a consult's cancel refused because another tab cancelled it already is said so ("Yêu cầu đã được hủy trước
đó."), the page showing its cancelled state, not a refusal telling the nurse to reload.

Flask's test client; the back-ends scripted at the HTTP transport."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from sen_shared import http

from services.portal.tests.test_clinic_forms_sent_in_place import _cancel_form, consult  # noqa: F401 - a fixture
from services.portal.tests.test_consult_takeover import BINH, TID, app, fake  # noqa: F401 - fixtures
from services.portal.tests.test_end_take_on import TAM, EndingEhr, _text, end_form, nurse
from tests.support import csrf_token, portal_app, portal_signed_in

COOKIE = "sen_portal"


def hx(page: str = "/patients") -> dict[str, str]:
    return {"HX-Request": "true", "HX-Current-URL": f"http://localhost{page}"}


def _form(page: str, action: str) -> str:
    m = re.search(rf'<form method="post" action="{re.escape(action)}[^"]*"[^>]*>', page)
    assert m, f"no form posting to {action}"
    return m.group(0)


def _in_place(form: str, box: str, live: str) -> None:
    assert 'hx-post="' in form and f'hx-target="#{box}"' in form and f'hx-select="#{box}"' in form, form
    assert f'data-live-error="{live}"' in form, form


def _cookie(c: Any) -> str:
    return c.get_cookie(COOKIE).value


def _answer_lost(c: Any, before: str) -> None:
    """The answer never reached the browser: its cookie is still the one it sent."""
    c.set_cookie(COOKIE, before)


# ------------------------------------------------------------------ the sign-in

def test_the_sign_in_is_sent_in_place_refused_in_its_box_and_safe_to_send_again(tmp_path, monkeypatch):
    c = portal_app(tmp_path, monkeypatch).test_client()
    page = c.get("/login?next=/consults").get_data(as_text=True)
    form = _form(page, "/login")
    _in_place(form, "sign-in", "sign-in-live-error")
    assert 'hx-history="false"' in form  # no copy of the form in htmx's history cache (localStorage)
    assert re.search(r'<div id="sign-in-live-error" class="alert error" role="alert" hidden>Không gửi được yêu cầu',
                     page)
    token = csrf_token(page)
    # the wrong password: the box again (htmx swaps a 2xx only), the user name kept, never the password
    r = c.post("/login", data={"username": "clinic", "password": "sai-mat-khau", "next": "/consults",
                               "csrf_token": token}, headers=hx("/login"))
    said = r.get_data(as_text=True)
    assert r.status_code == 200 and "HX-Redirect" not in r.headers
    box = re.search(r'<div id="sign-in">.*?</form>\s*</div>', said, re.S).group(0)
    assert "Tên đăng nhập hoặc mật khẩu không đúng." in box and 'value="clinic"' in box
    assert "sai-mat-khau" not in said
    # signed in: the page asked for; its answer lost (the new session's cookie with it), sent again: signed in again
    before = _cookie(c)
    data = {"username": "clinic", "password": "sen-clinic", "next": "/consults", "csrf_token": token}
    r = c.post("/login", data=data, headers=hx("/login"))
    assert r.status_code == 204 and r.headers["HX-Redirect"] == "/consults"
    _answer_lost(c, before)
    r = c.post("/login", data=data, headers=hx("/login"))
    assert r.status_code == 204 and r.headers["HX-Redirect"] == "/consults"
    assert urlsplit(c.get("/").headers["Location"]).path == "/patients"  # signed in: the clinic's home
    # the answer's cookie came (its headers), its body lost: the session is the new one, the form's token the old
    # one's; sent again, nothing to do but go on (not "the form expired")
    r = c.post("/login", data=data, headers=hx("/login"))
    assert r.status_code == 204 and r.headers["HX-Redirect"] == "/consults", r.get_data(as_text=True)[:300]
    # the browser's post (no JavaScript): as before
    c2 = portal_app(tmp_path, monkeypatch).test_client()
    token = csrf_token(c2.get("/login").get_data(as_text=True))
    r = c2.post("/login", data={"username": "clinic", "password": "sai", "csrf_token": token})
    assert r.status_code == 401
    r = c2.post("/login", data={"username": "clinic", "password": "sen-clinic", "csrf_token": token})
    assert r.status_code == 302 and "HX-Redirect" not in r.headers


# ------------------------------------------------------------------ the header's forms

def test_the_language_switch_is_sent_in_place_and_the_same_when_sent_again(tmp_path, monkeypatch):
    c = portal_signed_in(portal_app(tmp_path, monkeypatch), "clinic")
    page = c.get("/patients").get_data(as_text=True)
    _in_place(_form(page, "/language"), "language-form", "language-live-error")
    assert re.search(r'<div id="language-live-error" class="alert error" role="alert" hidden>Chưa đổi được ngôn ngữ do '
                     r'lỗi kết nối\. Hãy thử lại\.</div>', page)
    data = {"lang": "en", "next": "/patients", "csrf_token": csrf_token(page)}
    before = _cookie(c)
    r = c.post("/language", data=data, headers=hx())
    assert r.status_code == 204 and r.headers["HX-Redirect"] == "/patients"
    _answer_lost(c, before)  # still Vietnamese in the browser's cookie: sent again, the same
    r = c.post("/language", data=data, headers=hx())
    assert r.status_code == 204 and r.headers["HX-Redirect"] == "/patients"
    assert '<html lang="en">' in c.get("/patients").get_data(as_text=True)
    r = c.post("/language", data={**data, "lang": "vi"})  # the browser's post: as before
    assert r.status_code == 302 and urlsplit(r.headers["Location"]).path == "/patients"


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_the_sign_out_is_sent_in_place_says_it_may_not_be_done_and_is_safe_to_send_again(tmp_path, monkeypatch,
                                                                                          lang):
    c = portal_signed_in(portal_app(tmp_path, monkeypatch), "clinic", lang)
    page = c.get("/patients").get_data(as_text=True)
    _in_place(_form(page, "/logout"), "logout-form", "logout-live-error")
    words = {"vi": "Chưa xác nhận được việc đăng xuất do lỗi kết nối. Hãy bấm “Đăng xuất” lại trước khi rời máy "
                   "tính này.",
             "en": "The sign-out could not be confirmed: the connection failed. Press “Sign out” again before you "
                   "leave this computer."}[lang]
    assert re.search(r'<div id="logout-live-error" class="alert error" role="alert" hidden>' + re.escape(words), page)
    before = _cookie(c)
    data = {"csrf_token": csrf_token(page)}
    r = c.post("/logout", data=data, headers=hx())
    assert r.status_code == 204 and r.headers["HX-Redirect"] == "/login"
    # its answer lost: the browser still sends the signed-in cookie and its token; signed out already, it is
    # the sign-in page again, not "the form expired"
    _answer_lost(c, before)
    r = c.post("/logout", data=data, headers=hx())
    assert r.status_code == 204 and r.headers["HX-Redirect"] == "/login", r.get_data(as_text=True)[:400]
    r = c.get("/patients")
    assert r.status_code == 302 and urlsplit(r.headers["Location"]).path == "/login"
    # the answer's cookie came (the session cleared, its token gone), its body lost: sent again, the sign-in page
    r = c.post("/logout", data=data, headers=hx())
    assert r.status_code == 204 and r.headers["HX-Redirect"] == "/login", r.get_data(as_text=True)[:400]
    signed_out = portal_app(tmp_path, monkeypatch).test_client()
    assert _form(signed_out.get("/login").get_data(as_text=True), "/language")
    assert 'id="logout-live-error"' not in signed_out.get("/login").get_data(as_text=True)  # no sign-out there


# ------------------------------------------------------------------ the doctor's acceptance

@pytest.fixture()
def doctor(app, fake):  # noqa: F811 - test_consult_takeover's fixtures
    return portal_signed_in(app, "doctor"), fake


def test_the_take_over_is_sent_in_place_and_sent_again_is_one_acceptance(doctor):
    c, tc = doctor
    page = c.get(f"/tasks/{TID}").get_data(as_text=True)
    form = _form(page, f"/tasks/{TID}/accept")
    _in_place(form, "consult-accept", "accept-live-error")
    assert 'data-testid="takeover"' in form and 'id="accept-live-error"' in page
    data = {"csrf_token": csrf_token(page), "version": "2", "takeover": BINH}
    for _ in range(2):  # its answer lost, sent again: the page's version is gone, the consult this doctor's
        r = c.post(f"/tasks/{TID}/accept", data=data, headers=hx(f"/tasks/{TID}"))
        assert r.status_code == 204 and r.headers["HX-Redirect"] == f"/tasks/{TID}"
    assert tc.ops == ["accept"]
    assert 'data-testid="accepted"' in c.get(f"/tasks/{TID}").get_data(as_text=True)


def test_a_take_over_not_ticked_in_place_is_the_whole_page_saying_so(doctor):
    c, tc = doctor
    page = c.get(f"/tasks/{TID}").get_data(as_text=True)
    r = c.post(f"/tasks/{TID}/accept", data={"csrf_token": csrf_token(page), "version": "2"},
               headers=hx(f"/tasks/{TID}"))
    assert r.status_code == 200 and r.headers.get("HX-Retarget") == "#main" and tc.ops == []
    assert "đánh dấu ô" in r.get_data(as_text=True)


def test_a_plain_acceptance_is_sent_in_place(doctor):
    c, tc = doctor
    tc.owner, tc.history, tc.version = "Organization/bvdk-dong-thap", tc.history[:1], 1
    page = c.get(f"/tasks/{TID}").get_data(as_text=True)
    _in_place(_form(page, f"/tasks/{TID}/accept"), "consult-accept", "accept-live-error")
    r = c.post(f"/tasks/{TID}/accept", data={"csrf_token": csrf_token(page), "version": "1"},
               headers=hx(f"/tasks/{TID}"))
    assert r.status_code == 204 and r.headers["HX-Redirect"] == f"/tasks/{TID}" and tc.ops == ["accept"]


# ------------------------------------------------------------------ the end of a take-on

def test_the_end_of_a_take_on_is_sent_in_place_and_sent_again_is_one_end(tmp_path, monkeypatch):
    ehr = EndingEhr()
    c = nurse(tmp_path, monkeypatch, ehr)
    page = c.get(f"/patients/{TAM}").get_data(as_text=True)
    form = _form(end_form(page), f"/patients/{TAM}/end-take-on")
    _in_place(form, "end-take-on", "end-take-on-live-error")
    assert f'hx-post="/patients/{TAM}/end-take-on"' in form
    # not ticked: the box again with what to do and the reason kept (200: htmx swaps a 2xx only)
    r = c.post(f"/patients/{TAM}/end-take-on", data={"csrf_token": csrf_token(page), "reason": "Đã chuyển về"},
               headers=hx(f"/patients/{TAM}"))
    assert r.status_code == 200 and "Hãy đánh dấu" in end_form(r.get_data(as_text=True)) and ehr.ends == []
    data = {"csrf_token": csrf_token(page), "confirm": "y", "reason": "Người bệnh đã chuyển về cơ sở quản lý"}
    for _ in range(2):  # its answer lost, sent again: the EHR answers the end it made
        r = c.post(f"/patients/{TAM}/end-take-on", data=data, headers=hx(f"/patients/{TAM}"))
        assert r.status_code == 204 and r.headers["HX-Redirect"] == f"/patients/{TAM}"


def test_an_end_of_a_take_on_the_ehr_refuses_in_place_is_said_in_its_box(tmp_path, monkeypatch):
    c = nurse(tmp_path, monkeypatch, EndingEhr())
    page = c.get(f"/patients/{TAM}").get_data(as_text=True)
    ehr = EndingEhr(end_status=403)
    monkeypatch.setattr(http, "request", ehr)
    r = c.post(f"/patients/{TAM}/end-take-on", data={"csrf_token": csrf_token(page), "confirm": "y",
                                                       "reason": "nhầm"}, headers=hx(f"/patients/{TAM}"))
    box = end_form(r.get_data(as_text=True))
    assert r.status_code == 200 and 'data-testid="end-take-on-problem"' in box
    assert "cơ sở của bạn chưa tiếp nhận người bệnh này" in _text(box) and "nhầm</textarea>" in box


# ------------------------------------------------------------------ a consult cancelled already

@pytest.mark.parametrize("in_place", [True, False])
def test_a_cancel_of_a_consult_cancelled_already_says_so_and_shows_it_cancelled(consult, monkeypatch,  # noqa: F811
                                                                                in_place):
    """Another tab (a colleague) cancelled the consult: teleconsult refuses this one (409, the Task is
    'cancelled'), and the page said "this step is no longer possible. Reload the page." It says the request was
    cancelled already, as a status, the page below in its cancelled state with the reason the other gave."""
    from sen_portal.web import clinic
    from sen_portal.web.backend import BackendError

    c, backends = consult
    page = c.get("/consults/t1").get_data(as_text=True)
    _box, key = _cancel_form(page)

    def cancelled_elsewhere(*_a: Any, **_k: Any) -> Any:
        backends.task.update(status="cancelled", statusReason={"text": "Gia đình xin chuyển viện."})
        raise BackendError("refused", "teleconsult", 409, "$cancel is not allowed: the Task is 'cancelled'",
                           "business-rule")

    monkeypatch.setattr(clinic, "fhir_post", cancelled_elsewhere)
    r = c.post("/consults/t1/cancel", data={"reason": "Người bệnh đã tự chuyển viện.", "key": key,
                                            "confirm": "consult-cancel", "csrf_token": csrf_token(page)},
               headers=hx("/consults/t1") if in_place else {})
    said = r.get_data(as_text=True)
    assert r.status_code == 200
    if in_place:
        assert r.headers.get("HX-Retarget") == "#main" and r.headers.get("HX-Reselect") == "#main"
    main = re.search(r'<main id="main".*</main>', said, re.S).group(0)
    assert re.search(r'<div class="alert warn" role="status" data-testid="cancelled-before">Yêu cầu đã được hủy '
                     r'trước đó\.</div>', main), main[:800]
    assert not re.search(r'class="alert error" role="alert">', main)  # no refusal (the hidden boxes aside)
    assert "Tải lại" not in main and "Gia đình xin chuyển viện." in main and 'id="consult-cancel"' not in main
    assert "Đã hủy" in re.search(r'data-testid="task-status">([^<]+)<', main).group(1)
