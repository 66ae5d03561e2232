"""The portal's static files on a slow link: Chart.js only on a page that draws a chart, every asset and every
page compressed when the browser accepts it (brotli for browsers, gzip for others: Flask-Compress), and the
assets named by a hash of their bytes (``?v=``) so a browser keeps them a year and a returning nurse downloads
none. Flask's test client; the EHR scripted at the HTTP transport."""

from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path
from typing import Any

import brotli
import pytest
from flask import url_for
from sen_portal import web
from sen_shared import http

from tests.support import portal_app, portal_signed_in

PATIENT = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Nguyễn", "given": ["Văn An"]}],
           "gender": "male", "birthDate": "1968-03-12"}


def _systolic(i: int, value: int) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": f"o{i}", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6", "display": "Huyết áp tâm thu"}]},
            "effectiveDateTime": f"2026-0{i + 1}-01T08:00:00+07:00",
            "valueQuantity": {"value": value, "unit": "mmHg"}}


def _ehr(monkeypatch: pytest.MonkeyPatch, *resources: dict[str, Any]) -> None:
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}

    def request(method: str, url: str, **_: Any) -> http.Response:
        return http.Response(200, {"Content-Type": "application/fhir+json"}, json.dumps(bundle).encode())

    monkeypatch.setattr(http, "request", request)


def _chart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *observations: dict[str, Any]) -> str:
    _ehr(monkeypatch, PATIENT, *observations)
    app = portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9", SEN_PORTAL_CACHE_SECONDS="0")
    r = portal_signed_in(app, "clinic").get("/patients/p1")
    assert r.status_code == 200
    return r.get_data(as_text=True)


def test_a_chart_without_measurements_loads_no_chart_library(tmp_path, monkeypatch):
    page = _chart(tmp_path, monkeypatch)
    assert "Chưa có chỉ số nào." in page and "<canvas" not in page
    assert "chart.umd" not in page and "charts.js" not in page
    assert re.search(r'<script src="/assets/vendor/htmx\.min\.js\?v=[0-9a-f]{12}" defer>', page)


def test_a_chart_with_measurements_loads_the_chart_library(tmp_path, monkeypatch):
    page = _chart(tmp_path, monkeypatch, _systolic(0, 120), _systolic(1, 135))
    assert '<canvas data-series="8480-6"' in page
    assert re.search(r'<script src="/assets/vendor/chart\.umd\.min\.js\?v=[0-9a-f]{12}" defer>', page)
    assert re.search(r'<script src="/assets/charts\.js\?v=[0-9a-f]{12}" defer>', page)


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The portal with its npm packages at tmp_path/node_modules (an htmx.min.js of our own)."""
    dist = tmp_path / "node_modules" / "htmx.org" / "dist"
    dist.mkdir(parents=True)
    (dist / "htmx.min.js").write_text("var htmx = {};\n" * 400)
    flask_app = portal_app(tmp_path, monkeypatch)
    flask_app.config["SEN_ASSETS"] = str(tmp_path / "node_modules")
    return flask_app


def _url(app: Any, endpoint: str, **values: str) -> str:
    with app.test_request_context():
        return url_for(endpoint, **values)


BROWSER = "gzip, deflate, br, zstd"  # what Chromium sends


@pytest.mark.parametrize(("endpoint", "values"), [("web.vendor", {"name": "htmx.min.js"}),
                                                  ("web.static", {"filename": "app.css"})])
def test_an_asset_is_compressed_when_accepted_and_cached_a_year_at_its_versioned_address(app, endpoint, values):
    c = portal_signed_in(app, "clinic")
    url = _url(app, endpoint, **values)
    assert re.search(r"\?v=[0-9a-f]{12}$", url)
    plain = c.get(url)
    r = c.get(url, headers={"Accept-Encoding": BROWSER})
    assert r.status_code == 200 and r.headers["Content-Encoding"] == "br"  # a browser: brotli (gzip before)
    assert brotli.decompress(r.get_data()) == plain.get_data() and len(r.get_data()) < len(plain.get_data())
    assert "Content-Encoding" not in plain.headers
    gz = c.get(url, headers={"Accept-Encoding": "gzip"})  # a client without brotli (curl --compressed)
    assert gz.headers["Content-Encoding"] == "gzip" and gzip.decompress(gz.get_data()) == plain.get_data()
    for resp in (r, gz, plain):
        assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert resp.headers["Vary"] == "Accept-Encoding"  # never Cookie: a refreshed session cookie would miss
        assert "Set-Cookie" not in resp.headers
    again = c.get(url, headers={"Accept-Encoding": BROWSER, "If-None-Match": r.headers["ETag"]})
    assert again.status_code == 304 and again.get_data() == b""
    # no compression asked: the plain bytes (Flask-Compress 1.25 reads "br;q=0" as asking for brotli, at the lowest
    # preference; no browser sends it)
    assert "Content-Encoding" not in c.get(url, headers={"Accept-Encoding": "identity"}).headers


# a page's CSRF token is signed with the second it was made (Flask-WTF's timed serializer): two renders of
# the same page differ there when a second boundary falls between them (a loaded machine: often)
_CSRF = re.compile(rb'("X-CSRFToken": "|name="csrf_token"[^>]*? value=")[^"]+')


def _tokens_masked(page: bytes) -> bytes:
    masked, count = _CSRF.subn(rb"\1-", page)
    assert count, "no CSRF token found: the page changed; mask what differs between two renders"
    return masked


def test_a_page_and_an_htmx_part_are_compressed_when_accepted(tmp_path, monkeypatch):
    """A page's HTML is most of what a returning nurse downloads (its assets kept a year): 8 KB of consult page
    on a 400 kbit/s link. It left uncompressed; it leaves brotli-compressed now, still no-store."""
    _ehr(monkeypatch, PATIENT)
    app = portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9", SEN_PORTAL_CACHE_SECONDS="0")
    c = portal_signed_in(app, "clinic")
    plain = c.get("/patients/p1")
    r = c.get("/patients/p1", headers={"Accept-Encoding": BROWSER})
    assert r.status_code == 200 and r.headers["Content-Encoding"] == "br"
    assert _tokens_masked(brotli.decompress(r.get_data())) == _tokens_masked(plain.get_data())
    assert len(r.get_data()) * 2 < len(plain.get_data())
    assert r.headers["Cache-Control"] == "no-store" and "Accept-Encoding" in r.headers["Vary"]
    part = c.get("/icd10?reason=tang+huyet+ap&for=reason", headers={"Accept-Encoding": BROWSER, "HX-Request": "true"})
    assert part.status_code == 200 and part.headers["Content-Encoding"] == "br"
    assert "I10" in brotli.decompress(part.get_data()).decode()


def test_an_address_without_the_current_version_is_revalidated_not_kept(app):
    c = app.test_client()
    r = c.get("/assets/app.css")
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-cache" and r.headers["ETag"]
    assert c.get("/assets/app.css?v=000000000000").headers["Cache-Control"] == "no-cache"
    for missing in ("/assets/vendor/not-a-package.js", "/assets/vendor/chart.umd.min.js", "/assets/nothing.css",
                    "/assets/../__init__.py", "/assets/%2e%2e/__init__.py"):
        assert c.get(missing).status_code == 404, missing


def test_the_versioned_address_changes_when_the_file_does(app, tmp_path):
    path = tmp_path / "node_modules" / "htmx.org" / "dist" / "htmx.min.js"
    before = _url(app, "web.vendor", name="htmx.min.js")
    assert _url(app, "web.vendor", name="htmx.min.js") == before
    path.write_text("var htmx = {version: '2'};\n")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    after = _url(app, "web.vendor", name="htmx.min.js")
    assert after != before
    c = app.test_client()
    assert c.get(after).get_data() == b"var htmx = {version: '2'};\n"
    assert c.get(before).headers["Cache-Control"] == "no-cache"  # an old page's address: not kept a year


def test_the_favicon_is_still_served(app):
    r = app.test_client().get("/favicon.ico")
    assert r.status_code == 200 and r.mimetype == "image/svg+xml" and "max-age=86400" in r.headers["Cache-Control"]
    assert web.STATIC.joinpath("favicon.svg").is_file()
