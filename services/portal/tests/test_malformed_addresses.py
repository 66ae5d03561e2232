"""A page's address holding a control character (``/patients/%00``), as a browser opens it (a reviewer's walk,
session 20): the shared RequestMiddleware refuses it before any router; a page request gets the portal's
readable page (400) in the user's language, not problem JSON (sen_shared.web ``pages``, as a body over the
limit); the JSON API's paths and a JSON client keep the problem.

The whole ASGI application (the middleware in front)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.support import csrf_token, portal_app

HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def _text(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


# ------------------------------------------------------------------ a control character in the path

@pytest.fixture()
def asgi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from sen_portal.app import create_app

    portal_app(tmp_path, monkeypatch)  # the page tests' environment
    with create_app().test_client() as client:
        yield client


def _sign_in(client: Any, lang: str = "vi") -> None:
    token = csrf_token(client.get("/login").text)
    r = client.post("/login", data={"username": "clinic", "password": "sen-clinic", "csrf_token": token},
                    follow_redirects=False)
    assert r.status_code in (302, 303), r.text[:300]
    if lang != "vi":
        token = csrf_token(client.get("/login").text)
        client.post("/language", data={"lang": lang, "next": "/", "csrf_token": token}, follow_redirects=False)


@pytest.mark.parametrize("path", ["/patients/%00", "/patients/bn-0001%0A", "/%7F", "/consults/t1%1B/answer"])
@pytest.mark.parametrize("lang", ["vi", "en"])
def test_a_page_address_with_a_control_character_is_the_portals_readable_page(asgi, path, lang):
    _sign_in(asgi, lang)
    r = asgi.get(path, headers=HTML)
    assert r.status_code == 400, r.text[:300]
    assert r.headers["content-type"].startswith("text/html"), r.headers["content-type"]
    text = _text(r.text)
    if lang == "vi":
        assert "Địa chỉ không hợp lệ" in text and "Hãy mở trang từ trình đơn hoặc trang chủ." in text, text
    else:
        assert "This address is not valid" in text and "Open the page from the menu or your home page." in text
    assert "control characters" not in r.text and "\x00" not in r.text and "\x7f" not in r.text
    assert r.headers.get("X-Correlation-ID") and r.headers["Cache-Control"] == "no-store"


def test_signed_out_the_same_page(asgi):
    r = asgi.get("/patients/%00", headers=HTML)
    assert r.status_code == 400 and "Địa chỉ không hợp lệ" in r.text


@pytest.mark.parametrize(("path", "accept"), [("/api/reports/events%00", HTML["Accept"]),
                                              ("/admin/indexes%01", HTML["Accept"]),
                                              ("/healthz%01", HTML["Accept"]),  # no page: the operations' path
                                              ("/patients/%00", "application/json"), ("/nope%00", "*/*")])
def test_the_json_api_and_a_json_client_keep_the_problem_answer(asgi, path, accept):
    r = asgi.get(path, headers={"Accept": accept})
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"] == "the path contains control characters"


def test_a_client_cannot_name_the_refusal_itself(asgi):
    """The marker the middleware hands a page is never one a client sent."""
    _sign_in(asgi)
    r = asgi.get("/patients", headers={**HTML, "X-Sen-Refused": "path"})
    assert r.status_code != 400 and "Địa chỉ không hợp lệ" not in r.text
