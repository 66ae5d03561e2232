"""The portal's own database taken away for a while, for real (a FerretDB of the test's own, killed and started again
on the same port: ``tests/own_database.py``): no page asks it while pymongo's monitor knows it out of reach, each
page answers as it does without it (here: a search kept in the address is an empty search), and once the monitor
finds it back (it checks every ``portal_db.HEARTBEAT_MS``) the next page works again, the search's words shown as
before the outage (``sen_portal.portal_db``). What is known is the database client's, not the process's: an app on
a database that answers is asked however another app's database fared. The asks counted are pymongo's server
selections (``services/portal/tests/database_attempts.py``), the only way a use reaches a server."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.sessions import SecureCookieSessionInterface
from pymongo import MongoClient

from services.portal.tests.database_attempts import failed_attempts
from tests.own_database import OwnFerretDB, own_ferretdb
from tests.support import app_client, csrf_token, portal_app, portal_signed_in

pytestmark = pytest.mark.integration

HTMX = {"HX-Request": "true"}
WORDS = "dang hung"


@pytest.fixture()
def ferretdb() -> Iterator[tuple[OwnFerretDB, str]]:
    """A FerretDB of this test's own over the shared PostgreSQL, and the name of the portal's database there
    (dropped afterwards, the FerretDB running again)."""
    from sen_shared import mongo

    name = f"sen_t_pdo_{uuid.uuid4().hex[:8]}"
    clients: dict[Any, Any] = {}  # the portal's client of this FerretDB: its own, closed after (its monitor too)
    with own_ferretdb() as fd, pytest.MonkeyPatch.context() as patch:
        patch.setattr(mongo, "_clients", clients)
        try:
            yield fd, name
        finally:
            for client in clients.values():
                client.close()
            if fd.proc is None or fd.proc.poll() is not None:  # killed: started again to drop the database
                fd.start()
            with MongoClient(fd.url, serverSelectionTimeoutMS=10_000) as client:
                client.drop_database(name)


def _until(what: str, ready: Any) -> None:
    """Wait (a poll, at most 30 s) until ``ready()``; the test fails if it never is."""
    deadline = time.monotonic() + 30
    while not ready():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _warm(db: Any, *collections: str) -> None:
    """FerretDB's first commands (its first after a start, a collection's creation) take longer than a page's bound
    (0.5 s: the sign-out check's, kept.READ_SECONDS) on this loaded machine (0.7-1.5 s measured): made here once,
    without that bound, so that the pages' own reads are what the test looks at."""
    for collection in collections:
        db[collection].insert_one({"_id": "warm", "until": datetime.now(UTC)})
        db[collection].delete_one({"_id": "warm"})


def _search(client: Any, address: str) -> tuple[int, str]:
    r = client.get(address)
    return r.status_code, r.get_data(as_text=True)


def test_no_page_asks_a_database_known_out_of_reach_and_the_next_works_once_it_is_back(ferretdb, tmp_path,
                                                                                       monkeypatch) -> None:
    from sen_portal import portal_db
    from sen_portal.web import clinic, kept, signouts

    fd, name = ferretdb

    def fhir_get(service, path, params=None, **_kw):  # the EHR answers: only the portal's database is away
        return {"resourceType": "Bundle", "type": "searchset", "total": 1, "entry": [{"resource": {
            "resourceType": "Patient", "id": "bn-1", "name": [{"family": "Đặng", "given": ["Văn", "Hùng"]}]}}]}

    monkeypatch.setattr(clinic, "fhir_get", fhir_get)
    app = portal_app(tmp_path, monkeypatch, MONGO_URL=fd.url, SEN_DB=name)
    with app.app_context():
        db = portal_db.database()
    # the portal's client checks its server every HEARTBEAT_MS: a recovery shows within that
    assert db.client.options.heartbeat_frequency == portal_db.HEARTBEAT_MS / 1000
    _warm(db, signouts.SIGNED_OUT, kept.KEPT)
    nurse = portal_signed_in(app, "clinic")
    page = nurse.get("/patients").get_data(as_text=True)
    r = nurse.post("/patients/search", data={"q": WORDS, "csrf_token": csrf_token(page)}, headers=HTMX)
    address = r.headers["HX-Push-Url"]  # the search kept in the portal's database (web/kept.py)
    status, body = _search(nurse, address)
    assert status == 200 and f'value="{WORDS}"' in body and "Đặng Văn Hùng" in body

    fd.kill()
    with failed_attempts() as attempts:
        status, body = _search(nurse, address)  # the first page may find it out: one use (pymongo retries a read)
        assert status == 200 and f'value="{WORDS}"' not in body and "Đặng Văn Hùng" not in body
        assert attempts.take() <= 1
        _until("pymongo's monitor did not find the killed FerretDB out of reach",
               lambda: portal_db.known_out_of_reach(db))
        attempts.asked()
        for headers in ({}, HTMX, {}):
            status, body = _search(nurse, address)
            assert status == 200 and f'value="{WORDS}"' not in body, body[-500:]  # an empty search, as before
        assert attempts.asked() == 0  # no page asked the database

        fd.start()
        _until("pymongo's monitor did not find the FerretDB back", lambda: db.client.topology_description
               .has_readable_server())
        assert attempts.asked() == 0  # nor did the monitor's checks: they are no use of the database
        _warm(db, kept.KEPT)  # a FerretDB just started answers its first command in 0.7-1.5 s: not the page's
        status, body = _search(nurse, address)  # the next page after the monitor found it back
        assert status == 200 and f'value="{WORDS}"' in body and "Đặng Văn Hùng" in body
        assert attempts.asked() >= 1


def _sid(flask_app: Any, cookie: str) -> str:
    return SecureCookieSessionInterface().get_signing_serializer(flask_app).loads(cookie)["sid"]


def test_an_app_on_a_database_that_answers_asks_it_whatever_another_apps_database_did(
        tmp_path, monkeypatch, base_env, run_id, mongo_client) -> None:
    """A page-test app (no database: a closed port) finds its database out of reach; an app built without
    ``portal_app`` on a database that answers (``tests.support.app_client``), in the same process, still asks its
    own: a sign-out another worker recorded there ends the session here. Failed before: "out of reach" was the
    process's, for a minute (``portal_app`` set it for good): the second app skipped its sign-out check and served
    the signed-out session's page."""
    from sen_portal import portal_db
    from sen_portal.web import signouts

    offline = portal_app(tmp_path, monkeypatch)
    assert portal_signed_in(offline, "clinic").get("/patients").status_code == 200  # its sign-out check: no answer
    with offline.app_context():
        closed = portal_db.database()
    _until("pymongo's monitor did not find the closed port out of reach", lambda: portal_db.known_out_of_reach(closed))

    db = f"sen_t{run_id}_pdo_{uuid.uuid4().hex[:6]}"
    with app_client("portal", base_env, db, mongo_client) as (_client, app):
        online = app.app
        online.config["TESTING"] = True
        nurse = portal_signed_in(online, "clinic")
        assert nurse.get("/patients").status_code == 200
        sid = _sid(online, nurse.get_cookie("sen_portal").value)
        mongo_client[db][signouts.SIGNED_OUT].insert_one(  # signed out through another worker
            {"_id": sid, "at": datetime.now(UTC), "until": datetime.now(UTC) + timedelta(hours=1)})
        signouts._seen_live.clear()  # this worker has not seen the session live lately
        page = nurse.get("/patients")
        assert page.status_code == 302 and "/login" in page.headers["Location"]  # failed before: 200
