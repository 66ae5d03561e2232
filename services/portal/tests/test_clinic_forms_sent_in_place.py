"""The clinic's registration and its consult's cancel on a slow link (session 27's walk, a district nurse at
400 kbit/s): both were forms the browser posted, and an answer lost on the way back was Chromium's own English
"This site can't be reached". Back then brought the patient search (the registration's details gone), and a
registration typed again and sent asked whether the patient just registered was "registered already".

Both are sent in place now (htmx, _form.html's sent_in_place): a lost connection is said in the form's own box,
what was typed kept. The registration has a form key: the same details sent again with it open the chart of the
patient the first registered (one patient, no question); changed, they are checked as any registration is.

Flask's test client; the EHR and teleconsult are scripted (the HTTP transport; the consult page's Backends)."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from sen_shared import http

from services.portal.tests.test_clinic_consult_page import Backends
from tests.support import csrf_token, portal_app, portal_signed_in

HX = {"HX-Request": "true", "HX-Current-URL": "http://localhost/patients/new"}
LOST = "Không gửi được yêu cầu do lỗi kết nối. Nội dung bạn đã nhập vẫn được giữ; hãy thử lại."


def _json(status: int, body: Any) -> http.Response:
    return http.Response(status, {"Content-Type": "application/fhir+json"}, json.dumps(body).encode())


class Ehr:
    """The EHR registering patients (``bn-moi-1``, ``-2``...) and finding them again by name, birth date, sex."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []

    def __call__(self, method: str, url: str, *, json: Any = None, params: Any = None, **_: Any) -> http.Response:
        path = urlsplit(url).path
        if method == "POST" and path.endswith("/fhir/Patient"):
            self.created.append({**json, "id": f"bn-moi-{len(self.created) + 1}"})
            return _json(201, self.created[-1])
        if method == "GET" and path.endswith("/fhir/Patient"):
            return _json(200, {"resourceType": "Bundle", "type": "searchset",
                               "entry": [{"resource": p} for p in self.created]})
        return _json(404, {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-found"}]})


@pytest.fixture()
def registering(tmp_path, monkeypatch):
    ehr = Ehr()
    monkeypatch.setattr(http, "request", ehr)
    c = portal_signed_in(portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9"), "clinic", "vi")
    return c, ehr


def _details(page: str, **more: str) -> dict[str, str]:
    key = re.search(r'name="key" type="hidden" value="([0-9a-f]{32})"', page).group(1)
    return {"family": "Đặng", "given": "Thị Hồng Vân", "gender": "female", "birth_date": "03/11/1988",
            "phone": "0912345678", "csrf_token": csrf_token(page), "key": key, **more}


def test_the_registration_is_sent_in_place_and_says_a_lost_connection_in_its_own_box(registering):
    c, _ehr = registering
    page = c.get("/patients/new").get_data(as_text=True)
    form = re.search(r'<form method="post" class="card" action="/patients/new"[^>]*>', page).group(0)
    assert 'hx-post="/patients/new"' in form and 'hx-select="#register"' in form and 'hx-target="#register"' in form
    assert 'data-live-error="register-live-error"' in form
    box = re.search(r'<div id="register-live-error"[^>]*>([^<]*)</div>', page)
    assert box and "hidden" in box.group(0) and box.group(1) == LOST
    # a detail missing: the box again with its errors, a 200 (htmx swaps a 2xx only), the key kept
    data = _details(page, given="")
    r = c.post("/patients/new", data=data, headers=HX)
    again = r.get_data(as_text=True)
    assert r.status_code == 200 and '<div id="register">' in again and f'value="{data["key"]}"' in again
    assert "Nhập tên đệm và tên." in again


def test_the_same_details_sent_again_after_the_answer_was_lost_open_the_patient_registered(registering):
    c, ehr = registering
    data = _details(c.get("/patients/new").get_data(as_text=True))
    r = c.post("/patients/new", data=data, headers=HX)
    assert r.status_code == 204 and r.headers["HX-Redirect"] == "/patients/bn-moi-1"
    # its answer lost on the way back: sent again in place, then by the browser (Back, Register): that chart
    r = c.post("/patients/new", data=data, headers=HX)
    assert r.status_code == 204 and r.headers["HX-Redirect"] == "/patients/bn-moi-1", r.get_data(as_text=True)
    r = c.post("/patients/new", data=data)
    assert r.status_code == 302 and urlsplit(r.headers["Location"]).path == "/patients/bn-moi-1"
    assert len(ehr.created) == 1


def test_details_changed_before_sending_again_are_checked_as_a_new_registration(registering):
    c, ehr = registering
    data = _details(c.get("/patients/new").get_data(as_text=True))
    c.post("/patients/new", data=data, headers=HX)
    r = c.post("/patients/new", data={**data, "phone": "0987654321"}, headers=HX)  # the phone corrected
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and 'data-testid="same-person"' in page and len(ehr.created) == 1
    # another form (another key) with the same details: asked too, never registered silently
    other = _details(c.get("/patients/new").get_data(as_text=True))
    assert 'data-testid="same-person"' in c.post("/patients/new", data=other, headers=HX).get_data(as_text=True)
    assert len(ehr.created) == 1


# ------------------------------------------------------------------ the consult's cancel

@pytest.fixture()
def consult(tmp_path, monkeypatch):
    with portal_app(tmp_path, monkeypatch).test_client() as c:
        backends = Backends(monkeypatch)
        page = c.get("/login").get_data(as_text=True)
        c.post("/login", data={"username": "clinic", "password": "sen-clinic", "csrf_token": csrf_token(page)})
        yield c, backends


def _cancel_form(page: str) -> tuple[str, str]:
    box = re.search(r'<div id="consult-cancel">.*?</details>\s*</div>', page, re.S).group(0)
    return box, re.search(r'name="key" type="hidden" value="([0-9a-f]{32})"', box).group(1)


def test_the_consults_cancel_is_sent_in_place_confirmed_and_done_once(consult):
    c, backends = consult
    page = c.get("/consults/t1").get_data(as_text=True)
    box, key = _cancel_form(page)
    form = re.search(r'<form method="post" action="/consults/t1/cancel"[^>]*>', box).group(0)
    assert 'hx-post="/consults/t1/cancel"' in form and 'hx-select="#consult-cancel"' in form
    assert 'data-live-error="cancel-live-error"' in form
    assert re.search(r'<div id="cancel-live-error" class="alert error" role="alert" hidden>' + re.escape(LOST), box)
    hx = {"HX-Request": "true", "HX-Current-URL": "http://localhost/consults/t1"}
    data = {"reason": "Người bệnh đã tự chuyển viện.", "key": key, "csrf_token": csrf_token(page)}
    posted = len(backends.posted)
    for step in ({}, {"confirming": "consult-cancel"}):  # the first press; the step sent without its tick
        r = c.post("/consults/t1/cancel", data={**data, **step}, headers=hx)
        box, kept = _cancel_form(r.get_data(as_text=True))
        assert r.status_code == 200 and kept == key and "Người bệnh đã tự chuyển viện.</textarea>" in box
        assert 'name="confirm" value="consult-cancel"' in box and len(backends.posted) == posted
        assert ("Hãy đánh dấu" in box) == bool(step), box  # the unticked step says so on the tick
    for _ in range(2):  # its answer lost, sent again: the same key, teleconsult replays the first answer
        r = c.post("/consults/t1/cancel", data={**data, "confirm": "consult-cancel"}, headers=hx)
        assert r.status_code == 204 and r.headers["HX-Redirect"] == "/consults/t1"
    keys = {h["Idempotency-Key"] for p, h in zip(backends.posted, backends.headers, strict=True)
            if p[0] == "/fhir/Task/t1/$cancel"}
    assert len(keys) == 1
    assert 'data-testid="cancelled"' in c.get("/consults/t1").get_data(as_text=True)


@pytest.mark.parametrize("closed", [False, True])
def test_a_cancel_teleconsult_refuses_is_the_page_now_with_the_refusal_above(consult, monkeypatch, closed):
    """Refused (most often: the consult changed meanwhile), the box alone was swapped: a consult closed since has
    no cancel box, so the box went and the refusal with it. The whole page is swapped, its state now."""
    from sen_portal.web import clinic
    from sen_portal.web.backend import BackendError

    c, backends = consult
    page = c.get("/consults/t1").get_data(as_text=True)
    _box, key = _cancel_form(page)

    def refused(*_a: Any, **_k: Any) -> Any:
        if closed:  # the hub rejected it a moment ago: teleconsult's 409 with its state
            backends.task.update(status="rejected", statusReason={"text": "Không thuộc chuyên khoa."})
            raise BackendError("refused", "teleconsult", 409, "Task is rejected", "conflict")
        raise BackendError("down", "teleconsult")

    monkeypatch.setattr(clinic, "fhir_post", refused)
    r = c.post("/consults/t1/cancel", data={"reason": "Người bệnh đã tự chuyển viện.", "key": key,
                                            "confirm": "consult-cancel", "csrf_token": csrf_token(page)},
               headers={"HX-Request": "true"})
    said = r.get_data(as_text=True)
    assert r.status_code == 200 and r.headers.get("HX-Retarget") == "#main", dict(r.headers)
    assert r.headers.get("HX-Reselect") == "#main" and r.headers.get("HX-Reswap") == "outerHTML"
    main = re.search(r'<main id="main".*</main>', said, re.S).group(0)
    assert re.search(r'<div class="alert error" role="alert">[^<]+</div>', main), main[:600]
    if closed:
        assert "Đã từ chối" in main and 'id="consult-cancel"' not in main
    else:
        assert _cancel_form(main)[1] == key and "Người bệnh đã tự chuyển viện.</textarea>" in main
    # a browser's post (no JavaScript): the page as before, no htmx headers
    r = c.post("/consults/t1/cancel", data={"reason": "Người bệnh đã tự chuyển viện.", "key": key,
                                            "confirm": "consult-cancel", "csrf_token": csrf_token(page)})
    assert r.status_code == 422 and "HX-Retarget" not in r.headers
