"""The portal's static files on a slow link: Chart.js only on a page that draws a chart, every asset
gzip-compressed when the browser accepts it, and named by a hash of its bytes (``?v=``) so a browser keeps it
a year and a returning nurse downloads nothing. Flask's test client; the EHR scripted at the HTTP transport."""

from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path
from typing import Any

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


@pytest.mark.parametrize(("endpoint", "values"), [("web.vendor", {"name": "htmx.min.js"}),
                                                  ("web.static", {"filename": "app.css"})])
def test_an_asset_is_gzip_compressed_when_accepted_and_cached_a_year_at_its_versioned_address(
        app, endpoint, values):
    c = portal_signed_in(app, "clinic")
    url = _url(app, endpoint, **values)
    assert re.search(r"\?v=[0-9a-f]{12}$", url)
    plain = c.get(url)
    r = c.get(url, headers={"Accept-Encoding": "gzip, deflate, br"})
    assert r.status_code == 200 and r.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(r.get_data()) == plain.get_data() and len(r.get_data()) < len(plain.get_data())
    assert "Content-Encoding" not in plain.headers
    for resp in (r, plain):
        assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert resp.headers["Vary"] == "Accept-Encoding"  # never Cookie: a refreshed session cookie would miss
        assert "Set-Cookie" not in resp.headers
    again = c.get(url, headers={"Accept-Encoding": "gzip", "If-None-Match": r.headers["ETag"]})
    assert again.status_code == 304 and again.get_data() == b""
    # gzip refused (q=0): the plain bytes
    assert "Content-Encoding" not in c.get(url, headers={"Accept-Encoding": "gzip;q=0"}).headers


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
