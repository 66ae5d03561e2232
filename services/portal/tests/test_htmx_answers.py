"""How the portal answers what is not a plain page: an htmx request answered by the portal's error page, an
address no route has, a GET of a POST-only address another page's address also matches.

- an htmx request (a form sent in place, a search, a poll) whose answer is the portal's error page (signed
  out, not allowed, refused) names the page's problem box (``HX-Retarget``, web.in_page): htmx swaps no 4xx
  by itself and said "connection failed" (or nothing); the signed-out page keeps what was typed and offers to
  sign in again, back to the page the user was on. A signed-out poll is that page too (401), never the
  sign-in page swapped into a part of the page;
- ``/nope`` opened by a browser is the portal's Vietnamese 404 page; the JSON API's and a JSON client's stay
  problem JSON;
- ``GET /patients/take-on`` and ``GET /patients/search`` (POST-only) go to the patients page (303), not to a
  chart of a patient named "take-on".

Flask's test client; no back-end is called."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support import csrf_token, portal_app, portal_signed_in

HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
HTMX = {"HX-Request": "true", "HX-Current-URL": "http://localhost/patients/bn-0002/consult", **HTML}


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    return portal_app(tmp_path, monkeypatch)


def _signed_out(client) -> None:
    """The session cookie gone (expired, cleared), as the reviewer's browser had it."""
    client.delete_cookie("sen_portal")


def _in_problem_box(r) -> None:
    assert r.headers.get("HX-Retarget") == "#page-problem"
    assert r.headers.get("HX-Reswap") == "innerHTML"
    assert r.headers.get("HX-Reselect") == "#problem"
    assert 'id="problem"' in r.get_data(as_text=True)


def test_an_expired_sessions_htmx_form_is_said_in_the_page_with_what_was_typed(app):
    c = portal_signed_in(app, "clinic")
    token = csrf_token(c.get("/patients").get_data(as_text=True))
    _signed_out(c)
    r = c.post("/patients/bn-0002/consult", headers=HTMX, data={
        "csrf_token": token, "priority": "routine", "reason": "I10", "question": "Huyết áp 180/110, xin ý kiến"})
    assert r.status_code == 400
    _in_problem_box(r)
    body = r.get_data(as_text=True)
    assert "Bạn đã bị đăng xuất" in body and "Huyết áp 180/110, xin ý kiến" in body
    assert "/login?next=/patients/bn-0002/consult" in body  # back to the form's page after signing in


def test_an_htmx_form_from_before_signing_in_again_is_given_the_sessions_token(app):
    """Review 10: a page opened before the session ended, sent after "Sign in again" in another tab, was told
    "Go back, reload the page" (its token the old session's) and its form lost; the answer now says it can send
    and carries the session's token (app.js puts it into the page), with which the form goes through."""
    c = portal_signed_in(app, "clinic")
    token = csrf_token(c.get("/patients").get_data(as_text=True))
    _signed_out(c)
    again = portal_signed_in(app, "clinic")  # signed in again: a new session
    r = again.post("/patients/search", headers=HTMX, data={"csrf_token": token, "q": "Nguyễn"})
    assert r.status_code == 400
    _in_problem_box(r)
    body = r.get_data(as_text=True)
    assert "Giờ trang đã gửi được: hãy gửi lại" in body and "Hãy quay lại, tải lại trang" not in body
    renewed = re.search(r'id="problem" data-csrf="([^"]+)"', body).group(1)
    assert again.post("/patients/search", headers=HTMX, data={"csrf_token": renewed, "q": "Nguyễn"}).status_code != 400
    # a page's own POST (not htmx) is said as before: what was typed, to copy
    plain = again.post("/patients/search", headers=HTML, data={"csrf_token": token, "q": "Nguyễn"})
    assert plain.status_code == 400 and "data-csrf" not in plain.get_data(as_text=True)


def test_an_expired_sessions_htmx_search_is_said_in_the_page(app):
    c = portal_signed_in(app, "clinic")
    token = csrf_token(c.get("/patients").get_data(as_text=True))
    _signed_out(c)
    r = c.post("/patients/search", headers={**HTMX, "HX-Current-URL": "http://localhost/patients"},
               data={"csrf_token": token, "q": "Nguyễn"})
    assert r.status_code == 400
    _in_problem_box(r)
    assert "Bạn đã bị đăng xuất" in r.get_data(as_text=True)


def test_a_signed_out_poll_is_the_signed_out_message_not_the_sign_in_page_swapped_in(app):
    c = app.test_client()
    r = c.get("/worklist", headers={**HTMX, "HX-Current-URL": "http://localhost/worklist"})
    assert r.status_code == 401
    _in_problem_box(r)
    assert "/login?next=/worklist" in r.get_data(as_text=True)
    # a page opened by the browser still goes to the sign-in page
    r = c.get("/worklist", headers=HTML)
    assert r.status_code == 302 and "/login" in r.headers["Location"]


def test_the_same_answers_without_htmx_are_pages(app):
    c = portal_signed_in(app, "clinic")
    token = csrf_token(c.get("/patients").get_data(as_text=True))
    _signed_out(c)
    r = c.post("/patients/search", headers=HTML, data={"csrf_token": token, "q": "Nguyễn"})
    assert r.status_code == 400 and "HX-Retarget" not in r.headers
    assert "Bạn đã bị đăng xuất" in r.get_data(as_text=True)


def test_a_refusal_of_an_htmx_request_is_said_in_the_page(app):
    c = portal_signed_in(app, "clinic")
    r = c.get("/worklist", headers={**HTMX, "HX-Current-URL": "http://localhost/worklist"})
    assert r.status_code == 403
    _in_problem_box(r)
    # an answer that is no error page (the search's results, a form's errors: 200) is swapped as it was
    token = csrf_token(c.get("/patients").get_data(as_text=True))
    r = c.post("/patients/search", headers=HTMX, data={"csrf_token": token, "q": ""})
    assert r.status_code == 200 and "HX-Retarget" not in r.headers


def test_an_unknown_address_is_the_portals_page_for_a_browser(app):
    c = portal_signed_in(app, "clinic")
    r = c.get("/nope", headers=HTML)
    assert r.status_code == 404 and r.mimetype == "text/html"
    body = r.get_data(as_text=True)
    assert "Không tìm thấy" in body and "Trang hoặc hồ sơ này không tồn tại." in body
    assert "no such endpoint" not in body
    assert r.headers["Cache-Control"] == "no-store"
    signed_out = app.test_client().get("/nope", headers=HTML)
    assert signed_out.status_code == 404 and "Không tìm thấy" in signed_out.get_data(as_text=True)
    english = portal_signed_in(app, "clinic", lang="en").get("/nope", headers=HTML)
    assert "This page or record does not exist." in english.get_data(as_text=True)


@pytest.mark.parametrize("path, accept", [("/api/nope", HTML["Accept"]), ("/nope", "application/json"),
                                          ("/nope", "*/*"), ("/nope", HTML["Accept"])])
def test_an_unknown_address_of_the_api_or_for_a_json_client_stays_problem_json(app, path, accept):
    from sen_portal.app import create_app

    with create_app().test_client() as asgi:  # the whole application: connexion's handlers answer there
        r = asgi.get(path, headers={"Accept": accept})
    assert r.status_code == 404
    if accept == HTML["Accept"] and path == "/nope":
        assert r.headers["content-type"].startswith("text/html") and "Không tìm thấy" in r.text
    else:
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["detail"].startswith(f"no such endpoint: {path} ")
        assert r.json()["title"] == "Not Found"


@pytest.mark.parametrize("path", ["/patients/take-on", "/patients/search"])
def test_a_get_of_a_post_only_patients_address_goes_to_the_patients_page(app, path):
    c = portal_signed_in(app, "clinic")
    r = c.get(path, headers=HTML)
    assert r.status_code == 303 and r.headers["Location"].endswith("/patients")
    assert c.get(path + "?x=1", headers=HTML).headers["Location"].endswith("/patients?x=1")
    # a patient's own addresses are as they were
    r = c.get("/patients/bn-0002/take-on", headers=HTML)
    assert r.status_code == 303 and r.headers["Location"].endswith("/patients/bn-0002")


def test_a_405_of_a_page_asked_by_htmx_is_said_in_the_page(app):
    c = portal_signed_in(app, "clinic")
    token = csrf_token(c.get("/patients").get_data(as_text=True))
    r = c.put("/patients/search", headers={**HTMX, "X-CSRFToken": token})
    assert r.status_code == 405
    _in_problem_box(r)


# a page a form's POST rendered on the way to a redirect (the take-on's confirmation step, the new invoice
# being filled) takes a GET address in the history (static/own-address.js): Back from the chart or the invoice
# the last press leads to, or a reload, sends nothing again (ERR_CACHE_MISS, "Confirm Form Resubmission")

@pytest.mark.parametrize("action, address", [("/patients/take-on", "/patients"),
                                             ("/patients/bn-0005/take-on", "/patients/new")])
def test_the_take_on_step_takes_the_address_it_came_from(app, action, address):
    c = portal_signed_in(app, "clinic")
    token = csrf_token(c.get("/patients").get_data(as_text=True))
    r = c.post(action, headers=HTML, data={"csrf_token": token, "system": "cccd", "number": "087048006170",
                                           "reason": "Người bệnh đến khám tại cơ sở"})
    assert r.status_code == 200 and 'data-testid="confirm-step"' in r.get_data(as_text=True)
    assert re.search(rf'<script src="/assets/own-address.js\?v=\w+" data-address="{address}" defer></script>',
                     r.get_data(as_text=True))


def test_the_new_invoice_filled_by_posts_takes_its_own_address(app):
    c = portal_signed_in(app, "cashier")
    page = c.get("/invoices/new?p=bn-0002", headers=HTML).get_data(as_text=True)
    assert "own-address.js" not in page
    r = c.post("/invoices/new", headers=HTML, data={"csrf_token": csrf_token(page), "patient": "bn-0002",
                                                    "remove": "0"})
    assert r.status_code == 200
    assert re.search(r'<script src="/assets/own-address.js\?v=\w+" data-address="/invoices/new\?p=bn-0002" defer>',
                     r.get_data(as_text=True))
