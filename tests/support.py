"""Helpers the suites share: a service app built from a test environment, and a service
started as in production (gunicorn + uvicorn worker) on a free loopback port."""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from jinja2.bccache import Bucket, BytecodeCache

ROOT = Path(__file__).resolve().parents[1]


def build_app(service: str, env: dict[str, str], db: str) -> Any:
    """``sen_<service>.app.create_app()`` with ``env`` (plus ``SEN_DB=db``) as its environment; its API spec checked
    against the OpenAPI schema once per process for each spec content (:func:`_check_spec_once`)."""
    from connexion.spec import Specification

    module = importlib.import_module(f"sen_{service}.app")
    old = dict(os.environ)
    os.environ.update(env, SEN_DB=db)
    _connexion_validate()  # connexion's own, kept before it is replaced
    saved = Specification.__dict__["_validate_spec"]
    Specification._validate_spec = classmethod(_check_spec_once)
    try:
        return module.create_app()
    finally:
        Specification._validate_spec = saved
        os.environ.clear()
        os.environ.update(old)


@contextmanager
def app_client(service: str, env: dict[str, str], db: str, mongo_client: Any) -> Iterator[tuple[Any, Any]]:
    """``(test client, app)`` of :func:`build_app`; the database is dropped afterwards."""
    app = build_app(service, env, db)
    try:
        with app.test_client() as client:
            yield client, app
    finally:
        # the AuditEvents its writer thread still holds first: stored after the drop, they
        # would bring the database back and leave it behind
        from sen_shared.runtime import EXTENSION

        fhir = app.app.extensions[EXTENSION].extras.get("fhir")
        if fhir is not None:
            fhir.auditor.flush()
        mongo_client.drop_database(db)


def admin_headers(dev_key: Path, media_type: str = "application/fhir+json") -> dict[str, str]:
    """An admin bearer token with the FHIR media type for both directions."""
    from sen_shared.auth import issue_dev_token

    return {"Authorization": f"Bearer {issue_dev_token(dev_key, 'admin')}", "Content-Type": media_type,
            "Accept": media_type}


_CSRF = (re.compile(r'name="csrf_token"[^>]*value="([^"]+)"'), re.compile(r'value="([^"]+)"[^>]*name="csrf_token"'))


def csrf_token(page: str) -> str:
    """The CSRF token of a portal page's form (Flask-WTF's hidden ``csrf_token``)."""
    m = _CSRF[0].search(page) or _CSRF[1].search(page)
    assert m, "no CSRF token on the page"
    return m.group(1)


def shows_alert(page: str) -> bool:
    """Whether ``page`` shows an alert box: a ``role="alert"`` element not ``hidden`` (the forms sent in place
    carry a hidden one each, shown only when the connection drops)."""
    return re.search(r'role="alert"(?![^>]*\bhidden\b)', page) is not None


def input_value(page: str, name: str) -> str:
    """The value of a page's ``<input name=...>`` (either attribute first), or ``""``."""
    m = re.search(rf'<input[^>]*name="{name}"[^>]*value="([^"]*)"', page) or re.search(
        rf'<input[^>]*value="([^"]*)"[^>]*name="{name}"', page)
    return m.group(1) if m else ""


# the demo users' passwords hashed with cheap scrypt parameters for every portal the tests start: a check takes
# ~0.2 ms, the built-in hashes' (werkzeug's default cost, n=2^15, r=8, p=1) ~0.1 s at each of the suites' hundreds
# of sign-ins. Production's hashes and cost are unchanged (services/portal/tests/test_demo_password_cost.py)
CHEAP_SCRYPT = "scrypt:1024:1:1"


@functools.cache
def demo_password_hashes() -> str:
    """``SEN_PORTAL_DEMO_PASSWORD_HASHES`` for a test portal: each demo user's password (``sen-<user>``) hashed
    with :data:`CHEAP_SCRYPT`, once per test process."""
    from sen_portal.web.users import DEMO_USERS
    from werkzeug.security import generate_password_hash

    return json.dumps({user: generate_password_hash(f"sen-{user}", CHEAP_SCRYPT) for user in DEMO_USERS})


def portal_app(tmp_path: Path, monkeypatch: Any, backend: str | None = None, **env: str) -> Any:
    """The portal's Flask app for page tests: no database or broker, every back-end at ``backend``
    (default: a free loopback port nothing listens on, so a call fails fast; tests stub the calls
    they answer), plus ``env``."""
    backend = backend or f"http://127.0.0.1:{free_port()}"
    settings = {"MONGO_URL": "mongodb://127.0.0.1:1/", "AMQP_URL": "amqp://127.0.0.1:1//", "SEN_ENV": "test",
                "SEN_DEV_JWT_KEY": str(tmp_path / "dev.pem"), "SEN_EHR_URL": backend, "SEN_TELECONSULT_URL": backend,
                "SEN_BILLING_URL": backend, "SEN_HTTP_TIMEOUT": "1", "LOG_LEVEL": "WARNING",
                "SEN_PORTAL_DEMO_PASSWORD_HASHES": demo_password_hashes(), **env}
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    from sen_portal import caches

    # a new app is a new process's portal: nothing a previous test's app learnt (sessions seen live or signed
    # out, tokens read, the back-ends' answers and names, the dashboard's figures: sen_portal.caches) carries
    # over into this one. Whether its database is out of reach is no state of the portal's: pymongo's client of
    # that address knows (sen_portal.portal_db), one per address in the process, so an app on another database
    # (app_client("portal"), a real one) is not told. Without one (page tests: MONGO_URL on a port nothing
    # listens on), the first use in the process waits its bound (the sign-out check's 0.5 s), the client's
    # monitor finds the port closed, and no later page waits (0.5 s a signed-in test was 11 min of `make test`)
    caches.forget_all()
    if "MONGO_URL" not in env:  # what a session keeps on the server (web/kept.py): this process's stand-in
        from sen_portal.web import kept

        monkeypatch.setattr(kept, "_db", KeptStandIn())
    if "SEN_DEV_JWT_KEY" not in env:
        seed_dev_key(tmp_path / "dev.pem")
    _dev_key_read_once(monkeypatch)
    _validate_spec_once(monkeypatch)
    from sen_portal.app import create_app

    flask_app = create_app().app
    flask_app.config["TESTING"] = True
    shared_templates(flask_app)
    return flask_app


class _CompiledTemplates(BytecodeCache):
    """Jinja's bytecode cache kept in this process's memory: each template's source compiled to Python once, not
    once per app (every page test builds its own app, whose Jinja environment compiled each template it rendered
    anew: 0.1-1.2 s a test). A bucket is keyed by the template's name and file and checked against its source's
    hash, so an edited template is compiled again."""

    def __init__(self) -> None:
        self.code: dict[str, bytes] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        if bucket.key in self.code:
            bucket.bytecode_from_string(self.code[bucket.key])

    def dump_bytecode(self, bucket: Bucket) -> None:
        self.code[bucket.key] = bucket.bytecode_to_string()


_TEMPLATES = _CompiledTemplates()


def shared_templates(flask_app: Any) -> Any:
    """``flask_app`` (a portal's Flask app built in a test) rendering its templates from code compiled by an
    earlier app of this process (:class:`_CompiledTemplates`): every portal app has the same Jinja environment
    (filters, extensions, autoescaping), so the compiled code is the same; what a page shows is not cached."""
    flask_app.jinja_env.bytecode_cache = _TEMPLATES
    return flask_app


_VALID_SPECS: set[str] = set()


def _validate_spec_once(monkeypatch: Any) -> None:
    """For this test, connexion's check of an API spec against the OpenAPI schema (and of each default against its
    schema) made once per process for each spec, as its content is: the first app built from it checks it (and
    fails as before when it is invalid), the next ones are built from the same content already checked (0.1-0.3 s
    of CPU each, a test's app)."""
    from connexion.spec import Specification

    _connexion_validate()  # connexion's own, kept before it is replaced
    monkeypatch.setattr(Specification, "_validate_spec", classmethod(_check_spec_once))


def _check_spec_once(cls: Any, spec: dict[str, Any]) -> None:
    """connexion's ``Specification._validate_spec`` (the spec against the OpenAPI schema), once per process for each
    spec content: the first app built from a spec checks it and fails as before when it is invalid; the next ones
    are built from the same content already checked (0.1-0.3 s of CPU an app: a billing test's app, a portal's)."""
    key = cls.__qualname__ + hashlib.sha256(json.dumps(spec, sort_keys=True, default=repr).encode()).hexdigest()
    if key not in _VALID_SPECS:
        _connexion_validate()(cls, spec)
        _VALID_SPECS.add(key)


@functools.cache
def _connexion_validate() -> Any:
    """connexion's own check, kept at the first call: every caller calls it before replacing it with
    :func:`_check_spec_once`."""
    from connexion.spec import Specification

    return Specification._validate_spec.__func__


@functools.cache
def _dev_key_pem() -> bytes:
    """One development issuer's key (PEM) for this process's test portals: generating a 2048-bit RSA key took
    0.1-0.5 s of CPU per app (sen_shared.auth.ensure_dev_key creates the file when missing)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@functools.cache
def _dev_key() -> Any:
    """:func:`_dev_key_pem`'s key, read (and checked) once."""
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(_dev_key_pem(), password=None)


def _dev_key_read_once(monkeypatch: Any) -> None:
    """For this test, sen_shared.auth.ensure_dev_key answering a file holding :func:`_dev_key_pem` with the key read
    from it once per process: loading a PEM checks the RSA key, 0.08 s of CPU, twice per app (the token verifier,
    the signer). Another file (or none yet) is read or created as before."""
    from sen_shared import auth

    ensure = auth.ensure_dev_key

    def once(path: str | Path) -> Any:
        try:
            held = Path(path).read_bytes()
        except OSError:
            held = None
        return _dev_key() if held == _dev_key_pem() else ensure(path)

    monkeypatch.setattr(auth, "ensure_dev_key", once)


def seed_dev_key(path: Path) -> None:
    """The test's development key file (mode 0600, as ensure_dev_key writes it) holding :func:`_dev_key_pem`,
    unless the test wrote one already."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(_dev_key_pem())


@contextmanager
def quick_server_selection(monkeypatch: Any, milliseconds: int = 300) -> Iterator[None]:
    """For a test whose database is out of reach on purpose: the MongoDB clients the code under test makes
    (sen_shared.mongo.client) wait ``milliseconds`` for a server, not production's 5 s, then fail with the same
    ServerSelectionTimeoutError; none made before (with production's wait) is reused, and they are closed after."""
    from sen_shared import mongo

    clients: dict[Any, Any] = {}
    monkeypatch.setattr(mongo, "_clients", clients)
    monkeypatch.setitem(mongo.CLIENT_OPTIONS, "serverSelectionTimeoutMS", milliseconds)
    try:
        yield
    finally:
        for client in clients.values():
            client.close()


class KeptStandIn:
    """The portal's ``session_kept`` collection for page tests without a database: the few calls web/kept.py
    makes (insert by ``_id``, a find by ``_id`` and ``until``, deletes by ``_id`` or ``sid``); the real one is
    tests/integration/test_portal_cookie_no_patient_data.py's."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}

    def __call__(self) -> KeptStandIn:  # the database
        return self

    def __getitem__(self, _name: str) -> KeptStandIn:  # its collection
        return self

    def insert_one(self, record: dict[str, Any]) -> None:
        from pymongo.errors import DuplicateKeyError

        if record["_id"] in self.records:
            raise DuplicateKeyError("E11000 duplicate key")
        self.records[record["_id"]] = dict(record)

    def find_one(self, query: dict[str, Any]) -> dict[str, Any] | None:
        found = self.records.get(query["_id"])
        return found if found is not None and found["until"] > query["until"]["$gt"] else None

    def delete_one(self, query: dict[str, Any]) -> None:
        self.records.pop(query["_id"], None)

    def delete_many(self, query: dict[str, Any]) -> None:  # a session's (sid), or the ended ones (the sweep)
        ended = query.get("until", {}).get("$lt")
        for key in [k for k, r in self.records.items()
                    if (r["sid"] == query["sid"] if "sid" in query else r["until"] < ended)]:
            del self.records[key]


def portal_signed_in(app: Any, user: str, lang: str = "vi") -> Any:
    """A Flask test client of the portal ``app`` signed in as the demo ``user`` (password
    ``sen-<user>``), its pages in ``lang``."""
    client = app.test_client()
    token = csrf_token(client.get("/login").get_data(as_text=True))
    r = client.post("/login", data={"username": user, "password": f"sen-{user}", "csrf_token": token})
    assert r.status_code in (302, 303), r.get_data(as_text=True)[:500]
    if lang != "vi":
        token = csrf_token(client.get("/login").get_data(as_text=True))
        r = client.post("/language", data={"lang": lang, "next": "/", "csrf_token": token})
        assert r.status_code in (302, 303), r.get_data(as_text=True)[:500]
    return client


def flash_step(client: Any, path: str, step: str, value: str = "1") -> None:
    """Put in the portal test ``client``'s cookies the confirmation a step flashes for the page at ``path``
    (sen_portal.web.notices: a cookie of its own, naming the session): for a test opening that page as the
    step's redirect would."""
    import time

    from sen_portal.web import notices

    sid, kept = _notices_of(client)
    with client.application.app_context():
        signed = notices.encoded(sid, [*kept, [path, notices.STEP, f"{step}={value}", time.time()]])
    client.set_cookie(notices.COOKIE, signed)


def _notices_of(client: Any) -> tuple[str, list[list[Any]]]:
    from sen_portal.web import notices

    with client.session_transaction() as session:
        sid = str(session.get("sid") or "")
    cookie = client.get_cookie(notices.COOKIE)
    with client.application.app_context():
        return sid, notices.decoded(cookie.value if cookie else None, sid)


def flashed_steps(client: Any) -> list[tuple[str, str]]:
    """The confirmations of steps the portal test ``client``'s cookies hold for pages still to show them:
    ``(page path, "step=value")`` each (sen_portal.web.notices)."""
    from sen_portal.web import notices

    return [(page, message) for page, category, message, _at in _notices_of(client)[1] if category == notices.STEP]


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll ``predicate`` until it holds, failing the test after ``timeout`` seconds (generous: a
    passing test never waits it out, and a loaded 2-core CI machine may take many seconds to carry
    an event over the bus to a worker)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


VN_TZ = ZoneInfo("Asia/Ho_Chi_Minh")


def vn_day_with_room(seconds: float = 180.0, *, clock: Callable[[], datetime] | None = None,
                     sleep: Callable[[float], Any] = time.sleep) -> date:
    """Today in Asia/Ho_Chi_Minh with at least ``seconds`` of it left: within ``seconds`` of midnight
    there (17:00 UTC; a CI run may start at 16:55) this waits for the new day first. For a test that
    records with the real clock and then reads "today" (a dashboard's day, a daily report, a shift's
    day): called first, its day is the day of everything the test records, however slow the machine
    (up to ``seconds``)."""
    clock = clock or (lambda: datetime.now(VN_TZ))
    now = clock()
    left = (datetime.combine(now.date() + timedelta(days=1), clock_time.min, VN_TZ) - now).total_seconds()
    if left < seconds:
        sleep(left + 1)
        now = clock()
    return now.date()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, seconds: float = 60, proc: subprocess.Popen | None = None,
               log: Path | None = None) -> httpx.Response:
    """Poll ``url``'s /readyz every 100 ms through one client until it answers 200 (that answer is returned): a
    refused connection costs next to nothing, where each ``httpx.get`` built a client (its TLS context: ~35 ms of
    CPU) and 300 ms between asks made every start wait 150 ms more on average."""
    deadline, last = time.monotonic() + seconds, None
    with httpx.Client(timeout=5) as client:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"exited {proc.returncode}: {log.read_text()[-2000:] if log else ''}")
            try:
                last = client.get(f"{url}/readyz")
                if last.status_code == 200:
                    return last
            except httpx.HTTPError as err:
                last = err
            time.sleep(0.1)
    raise AssertionError(f"{url} not ready: {last!r}")


def stop_processes(procs: Any) -> None:
    """SIGTERM to every process still running (a list, or a dict's values), then wait for each up
    to 30 s, killing one that does not stop."""
    procs = list(procs.values() if isinstance(procs, dict) else procs)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@contextmanager
def web_process(service: str, env: dict[str, str], log: Path, **extra: str) -> Iterator[str]:
    """A gunicorn web process of ``service``; yields its base URL and stops it with SIGTERM."""
    port = free_port()
    full = {**os.environ, **env, "HOST": "127.0.0.1", "PORT": str(port), "WEB_CONCURRENCY": "1", **extra}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
         f"sen_{service}.asgi:app"], env=full, cwd=ROOT, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc=proc, log=log)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def seeded_ehr(base_env: dict[str, str], db: str, tmp_path_factory: Any, mongo_client: Any, dev_key: Path,
               resources: list[dict[str, Any]]) -> Iterator[str]:
    """The URL of an EHR web process (gunicorn) on the database ``db`` holding ``resources``, each put by an
    admin at its id; the database is dropped after."""
    try:
        with web_process("ehr", {**base_env, "SEN_DB": db}, tmp_path_factory.mktemp("ehr") / "ehr.log") as url:
            put_resources(url, dev_key, resources)
            yield url
    finally:
        mongo_client.drop_database(db)


def put_resources(url: str, dev_key: Path, resources: list[dict[str, Any]]) -> None:
    """Each of ``resources`` put by an admin at its id on the FHIR server at ``url``, through one client (each
    ``httpx.put`` built a client of its own: its TLS context, ~40 ms of CPU a resource)."""
    import json

    with httpx.Client() as client:
        for res in resources:
            r = client.put(f"{url}/fhir/{res['resourceType']}/{res['id']}", content=json.dumps(res),
                           headers=admin_headers(dev_key))
            assert r.status_code in (200, 201), r.text


def emptied(mongo_client: Any, *names: str) -> None:
    """Every collection of the databases ``names`` emptied, their indexes kept: for a process started once
    for several modules, each module starting from databases as a fresh process would find them. The FHIR
    store's registries of what a database ever held are kept: a running process notes a resource type there
    once and trusts it after (sen_shared.fhir.store.note_type), so an emptied ``fhir_types`` hid a type an
    earlier module had written from the next module's ``Patient/$everything``."""
    from sen_shared.fhir.store import LAYOUTS_COLLECTION, TYPES_COLLECTION

    for name in names:
        db = mongo_client[name]
        for coll in db.list_collection_names():
            if coll not in (TYPES_COLLECTION, LAYOUTS_COLLECTION):
                db[coll].delete_many({})


@pytest.fixture(scope="module", name="billing")
def billing_service(request: Any, base_env: dict[str, str], run_id: str, mongo_client: Any,
                    tmp_path_factory: Any) -> Iterator[tuple[str, Any]]:
    """The ``billing`` fixture: billing's web process for the module that imports it, on a database of its
    own (indexes made, the price list loaded as billing's worker does at start), dropped after: (its URL, its
    database)."""
    from sen_billing.domain import pricing
    from sen_billing.indexes import INDEXES
    from sen_shared import mongo

    name = f"sen_t{run_id}_{request.module.__name__.rsplit('.', 1)[-1].removeprefix('test_')}_billing"[:63]
    mongo.ensure_indexes(mongo_client[name], INDEXES)
    assert pricing.load(mongo_client[name]) > 0  # what billing's worker does at start
    log = tmp_path_factory.mktemp("billing") / "web.log"
    with web_process("billing", {**base_env, "SEN_DB": name}, log) as url:
        yield url, mongo_client[name]
    mongo_client.drop_database(name)

def stub_invoice_desk(monkeypatch, invoice: dict, owed: int) -> None:
    """The portal's invoice page with no billing or EHR behind it: billing's desk answer for ``invoice``
    (issued, ``owed`` đồng due, nothing paid) and the EHR's patient search answering Nguyễn Văn A."""
    from sen_portal.web import cashier
    from sen_portal.web import patients as patient_module

    def desk(service, path, params=None, **_kw):
        return {"status": "issued", "owed": owed, "paid": 0, "balanceDue": owed, "reference": "HD7K2M9QX4C",
                "resource": invoice, "qr": None}

    def fhir_get(service, path, params=None, **_kw):
        return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {
            "resourceType": "Patient", "id": "pa", "name": [{"family": "Nguyễn", "given": ["Văn", "A"]}]}}]}

    monkeypatch.setattr(cashier, "shared_get", desk)
    monkeypatch.setattr(patient_module, "fhir_get", fhir_get)
