"""An id in a page's address that is no FHIR id (``/patients/`` + 3,000 × "a", ``/tasks/Nguyễn``), as a browser
opens it (a reviewer's walk, session 20): a record that cannot exist, the portal's 404 "Không tìm thấy" as for
an id no record has (``bn-9999``), nothing asked of a back-end (the EHR refused the id as malformed: a 400
"Yêu cầu bị từ chối ..."). Every page naming a record in its address (web.ID_ARGS), GET and POST.

Flask's test client, the back-ends scripted at the HTTP transport."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from sen_shared import http

from tests.support import csrf_token, portal_app, portal_signed_in

HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def _text(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


class Backends:
    """Every back-end as Sen's FHIR servers answer a read: an id that is no FHIR id refused as malformed (400),
    any other unknown (404). What was asked is kept."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, method: str, url: str, **_: Any) -> http.Response:
        path = unquote(urlsplit(url).path)
        self.asked.append(path)
        parts = path.strip("/").split("/")
        if parts[0] == "fhir" and len(parts) == 2:  # a search: nothing found
            return _json(200, {"resourceType": "Bundle", "type": "searchset", "entry": []})
        malformed = any(not FHIR_ID.fullmatch(p) for p in parts[2:3])
        if malformed:
            return _json(400, {"resourceType": "OperationOutcome", "issue": [{
                "severity": "error", "code": "invalid", "diagnostics": f"'{parts[2]}' does not match the id pattern"}]})
        return _json(404, {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-found"}]})


def _json(status: int, body: Any) -> http.Response:
    return http.Response(status, {"Content-Type": "application/fhir+json"}, json.dumps(body).encode())


BAD_IDS = ["a" * 3000, "a" * 65, "Nguyễn", "bn 1", "a_b", "bn-1;x", "%C3%28"]
PAGES = [  # (user, address with {id})
    ("clinic", "/patients/{id}"), ("clinic", "/patients/{id}/consult"), ("clinic", "/consults/{id}"),
    ("clinic", "/patients/bn-0001/consult-records/{id}"), ("clinic", "/patients/{id}/consult-records/c1"),
    ("clinic", "/documents/{id}"),
    ("doctor", "/tasks/{id}"), ("doctor", "/tasks/{id}/slots"), ("doctor", "/patients/{id}"),
    ("cashier", "/invoices/{id}"), ("cashier", "/invoices/{id}/status"), ("cashier", "/invoices/{id}/receipt"),
    ("cashier", "/invoices/{id}/receipt.pdf"), ("cashier", "/invoices/{id}/qr.svg"),
    ("admin", "/prices/{id}/history"),
]


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    return portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9", SEN_PORTAL_CACHE_SECONDS="0")


@pytest.mark.parametrize(("user", "address"), PAGES)
def test_an_id_that_is_no_fhir_id_is_not_found_and_nothing_is_asked(app, monkeypatch, user, address):
    backends = Backends()
    monkeypatch.setattr(http, "request", backends)
    c = portal_signed_in(app, user)
    for bad in BAD_IDS:
        r = c.get(address.format(id=bad), headers=HTML)
        text = _text(r.get_data(as_text=True))
        assert r.status_code == 404, (address, bad[:20], r.status_code, text[-400:])
        assert "Không tìm thấy" in text and "từ chối" not in text, text[-400:]
        assert not [p for p in backends.asked if bad in p or bad.replace("%C3%28", "\ufffd(") in p], backends.asked


@pytest.mark.parametrize(("user", "address", "fields"), [
    ("clinic", "/patients/{id}/take-on", {"reason": "Người bệnh đến khám tại cơ sở"}),
    ("clinic", "/consults/{id}/message", {"text": "Xin chào"}),
    ("doctor", "/tasks/{id}/accept", {}),
    ("cashier", "/invoices/{id}/cash", {"cash-amount": "10.000"}),
    ("admin", "/prices/{id}", {}),
])
def test_a_form_sent_to_an_id_that_is_no_fhir_id_is_not_found_and_nothing_is_sent(app, monkeypatch, user, address,
                                                                                    fields):
    backends = Backends()
    monkeypatch.setattr(http, "request", backends)
    c = portal_signed_in(app, user)
    token = csrf_token(c.get("/", follow_redirects=True).get_data(as_text=True))
    r = c.post(address.format(id="a" * 3000), data={"csrf_token": token, **fields}, headers=HTML)
    assert r.status_code == 404 and "Không tìm thấy" in _text(r.get_data(as_text=True))
    assert not [p for p in backends.asked if "a" * 65 in p]
