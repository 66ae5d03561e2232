"""Every page carries what app.js says beside a suggestion box whose request failed (the connection box's
``data-suggest``), in the page's language: the diagnosis and secretary boxes' failures said "The request could
not be sent…" in the minutes form's own box, as if the minutes had failed to go. Flask's test client; no back-end
(tests/browser/test_suggestions_offline.py shows it said)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support import csrf_token, portal_app


@pytest.fixture()
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    return portal_app(tmp_path, monkeypatch).test_client()


def _said(page: str) -> str:
    box = re.search(r'<div id="connection-error"[^>]*>', page)
    assert box, page[:500]
    said = re.search(r'data-suggest="([^"]*)"', box.group(0))
    assert said, box.group(0)
    return said.group(1)


def test_the_suggestions_note_is_in_the_pages_language(client) -> None:
    page = client.get("/login").get_data(as_text=True)
    assert _said(page) == "Không tải được gợi ý."
    client.post("/language", data={"lang": "en", "next": "/login", "csrf_token": csrf_token(page)})
    assert _said(client.get("/login").get_data(as_text=True)) == "Suggestions could not be loaded."
