"""Portal pages under 20 concurrent users (``make bench``): p50/p95/p99 of the health department's
dashboard, the doctor's worklist, a patient chart and the cashier's invoice page (when billing
serves invoices), each a signed-in page rendered server-side, against every service started as
``make run`` starts them (gunicorn, 2 workers each; seeded demo province plus 12 consults).

Who the clients are matters: the portal keeps each user's back-end answers 3 s
(``SEN_PORTAL_CACHE_SECONDS``), so one user asking 20 times at once is its best case. Each page is
measured three ways, 20 connections each:

- **20 users**: 20 distinct users of the page's role and facility (the headline figure); each
  reloads as fast as it can, so a user's own answers kept 3 s still serve their next reloads;
- **fresh users**: every request from a user not seen for more than 3 s (600 users taking turns,
  each signed in and warmed once before), so no answer is ever kept for it: the cache never helps;
- **1 user** (the earlier figure): the 20 connections share one signed-in user.

The users are sessions as the development sign-in makes them (``{"user": ..., "signed_in_at": ...}``,
the portal minting each its development token), signed with the stack's ``SEN_PORTAL_SECRET_KEY``
through Flask's own session serializer: the demo sign-in has one user per role.

Target (issue 16): page p95 <= 150 ms on this machine. Prints one markdown table (also written to
``.sen/bench/portal.md``). No timing assertions.
"""

from __future__ import annotations

import html
import itertools
import os
import re
import secrets
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.browser.stack import running_stack
from tests.perf.loadgen import percentile, request_bytes, run
from tests.perf.test_ehr_bench import machine

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = 20
FRESH_USERS = 600  # at <= 150 requests/s a user comes back after > 3 s: their kept answers have expired
SECONDS = float(os.environ.get("SEN_BENCH_SECONDS", "12"))
SECRET = f"portal-bench-{uuid.uuid4().hex}"  # the stack's SEN_PORTAL_SECRET_KEY: the bench signs sessions
HUB_DOCTORS = ("bs-nguyen-van-an", "bs-tran-thi-bich", "bs-le-hoang-duc")  # the demo hub's (demo-province.json)
ROLES = {"health-dept": {"facility": "so-y-te-dong-thap"}, "clinic": {"facility": "tyt-my-hiep"},
         "cashier": {"facility": "tyt-my-hiep"}, "doctor": {"facility": "bvdk-dong-thap"}}


def _sessions(role: str, n: int, tag: str) -> list[str]:
    """``n`` distinct signed-in users of ``role`` (its facility; doctors the hub's), as Cookie headers:
    the session the development sign-in writes, signed with Flask's serializer and the stack's key."""
    from flask import Flask
    from flask.sessions import SecureCookieSessionInterface

    app = Flask("portal-bench")
    app.secret_key = SECRET
    signer = SecureCookieSessionInterface().get_signing_serializer(app)
    out = []
    for i in range(n):
        user = {"username": f"bench-{role}-{tag}-{i}", "role": role, "name": f"Người dùng thử {i}",
                "facility": ROLES[role]["facility"],
                "practitioner": HUB_DOCTORS[i % len(HUB_DOCTORS)] if role == "doctor" else None}
        # what a browser's cookie holds once it has loaded a page: its sign-in's id and the form token Flask-WTF
        # adds to the session on the first page with a form (without it, every page wrote it again, and the
        # bench, which sends the same cookie each time, paid a new signed cookie on every answer)
        kept = {"sid": secrets.token_urlsafe(16), "csrf_token": secrets.token_hex(20)}
        session = {"user": user, "signed_in_at": time.time(), "_permanent": True, **kept}
        out.append("sen_portal=" + signer.dumps(session))
    return out


def _cookie(portal: str, user: str) -> str:
    with httpx.Client(base_url=portal, follow_redirects=False, timeout=30) as c:
        page = c.get("/login").text
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page) or re.search(
            r'csrf_token" value="([^"]+)"', page)
        r = c.post("/login", data={"username": user, "password": f"sen-{user}", "csrf_token": token.group(1)})
        assert r.status_code == 302, r.text[:300]
        c.get(r.headers["location"])  # the first page after signing in, as a browser loads it (its cookie's form token)
        return "; ".join(f"{k}={v}" for k, v in c.cookies.items())


def _consults(urls: dict[str, str], key: str, n: int) -> None:
    from sen_shared.auth import issue_dev_token

    token = issue_dev_token(key, "clinic", facility="tyt-my-hiep")
    for i in range(n):
        sr = {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
              "priority": ("routine", "urgent", "asap", "stat")[i % 4],
              "subject": {"reference": f"Patient/bn-000{1 + i % 2}"},
              "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10"}]}],
              "note": [{"text": f"Câu hỏi hội chẩn số {i}"}], "requester": {"reference": "Organization/tyt-my-hiep"},
              "performer": [{"reference": "Organization/bvdk-dong-thap"}]}
        r = httpx.post(f"{urls['teleconsult']}/fhir/ServiceRequest/$submit", json=sr, timeout=30,
                       headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"})
        assert r.status_code == 201, r.text[:300]


def _completed_consult(urls: dict[str, str], key: str) -> None:
    """One consult accepted and completed (minutes signed), so billing issues its invoice."""
    from sen_shared.auth import issue_dev_token

    fhir = {"Content-Type": "application/fhir+json"}
    clinic = {**fhir, "Authorization": f"Bearer {issue_dev_token(key, 'clinic', facility='tyt-my-hiep')}"}
    doctor = {**fhir, "Authorization": "Bearer " + issue_dev_token(
        key, "doctor", facility="bvdk-dong-thap", practitioner="bs-nguyen-van-an")}
    sr = {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "priority": "urgent",
          "subject": {"reference": "Patient/bn-0001"}, "requester": {"reference": "Organization/tyt-my-hiep"},
          "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10"}]}],
          "note": [{"text": "Hội chẩn cho hóa đơn"}], "performer": [{"reference": "Organization/bvdk-dong-thap"}]}
    r = httpx.post(f"{urls['teleconsult']}/fhir/ServiceRequest/$submit", json=sr, headers=clinic, timeout=30)
    task = next(e["resource"]["id"] for e in r.json()["entry"] if e["resource"]["resourceType"] == "Task")
    assert httpx.post(f"{urls['teleconsult']}/fhir/Task/{task}/$accept", json={"resourceType": "Parameters"},
                      headers=doctor, timeout=30).status_code == 200
    minutes = {"resourceType": "Parameters", "parameter": [
        {"name": "start", "valueDateTime": "2026-01-05T08:00:00+07:00"},
        {"name": "end", "valueDateTime": "2026-01-05T08:30:00+07:00"},
        {"name": "site", "valueReference": {"reference": "Organization/bvdk-dong-thap"}},
        {"name": "site", "valueReference": {"reference": "Organization/tyt-my-hiep"}},
        {"name": "participant", "part": [
            {"name": "who", "valueReference": {"reference": "Practitioner/bs-nguyen-van-an"}},
            {"name": "role", "valueString": "chủ trì"}]},
        {"name": "history", "valueString": "Tăng huyết áp"}, {"name": "findings-clinical", "valueString": "HA 160/95"},
        {"name": "conclusion", "valueCoding": {"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10"}},
        {"name": "recommendations", "valueString": "Tăng liều"},
        {"name": "chair", "valueReference": {"reference": "Practitioner/bs-nguyen-van-an"}}]}
    r = httpx.post(f"{urls['teleconsult']}/fhir/Task/{task}/$complete", json=minutes, headers=doctor, timeout=30)
    assert r.status_code == 200, r.text[:300]


def _measure(portal: str, path: str, cookie: str, role: str) -> dict[str, float]:
    u = urlsplit(portal)

    def prepared(cookies: list[str]) -> list[bytes]:
        return [request_bytes(u.hostname, u.port, path, {"Cookie": c, "Accept-Encoding": "identity"})
                for c in cookies]

    def loaded(requests: list[bytes], prefix: str, out: dict[str, float]) -> None:
        lat, statuses = run(u.hostname, u.port, {}, itertools.cycle(requests), CLIENTS, time.monotonic() + SECONDS)
        out.update({f"{prefix}n": len(lat), f"{prefix}rps": len(lat) / SECONDS, f"{prefix}p50": percentile(lat, 50),
                    f"{prefix}p95": percentile(lat, 95), f"{prefix}p99": percentile(lat, 99),
                    f"{prefix}ok": statuses.get(200, 0) / max(1, len(lat))})

    one, twenty, fresh = prepared([cookie]), prepared(_sessions(role, CLIENTS, "a")), prepared(
        _sessions(role, FRESH_USERS, "b"))
    warm, _ = run(u.hostname, u.port, {}, iter(one * 40 + twenty * 2), 4, time.monotonic() + 60)
    alone, _ = run(u.hostname, u.port, {}, iter(one * 50), 1, time.monotonic() + 30)
    m = {"alone50": percentile(alone, 50), "alone95": percentile(alone, 95)}
    loaded(twenty, "", m)
    run(u.hostname, u.port, {}, iter(fresh), 4, time.monotonic() + 120)  # each signed in once (its token minted)
    time.sleep(3.5)  # every answer kept for them has expired
    loaded(fresh, "fresh_", m)
    loaded(one, "one_", m)
    return m


@pytest.mark.integration
def test_portal_pages_under_20_users(base_env, run_id, tmp_path_factory, mongo_client):
    env = {**base_env, "SEN_ENV": "development", "LOG_LEVEL": "WARNING", "SEN_PORTAL_SECRET_KEY": SECRET,
           "SEN_BANK_BIN": "970436",
           "SEN_BANK_ACCOUNT": "0011001932418", "SEN_BANK_ACCOUNT_NAME": "BV DK DONG THAP"}
    prefix = f"sen_t{run_id}_pbench"
    rows: list[tuple[str, dict[str, float]]] = []
    try:
        with running_stack(env, tmp_path_factory.mktemp("portal-bench"), prefix) as urls:
            _consults(urls, base_env["SEN_DEV_JWT_KEY"], 12)
            portal = urls["portal"]
            pages = [("dashboard (12 weeks)", "/dashboard", "health-dept"),
                     ("worklist", "/worklist", "doctor"),
                     ("patient chart", "/patients/bn-0001", "clinic")]
            _completed_consult(urls, base_env["SEN_DEV_JWT_KEY"])
            cashier = _cookie(portal, "cashier")
            invoice = None
            for _ in range(30):  # billing issues the consult's invoice from the completed event
                # an invoice's own link, as the queue gives it (its query: the patient, ?p=), not the queue's 'New
                # invoice' button (/invoices/new, the first such link since eb512ad: until session 35 the page row
                # measured the new invoice's form, and the status box row /invoices/new/status: no such invoice)
                invoice = re.search(r'href="(/invoices/(?!new\b)[^"/?]+)((?:\?[^"]*)?)"', httpx.get(
                    portal + "/invoices", headers={"Cookie": cashier}, timeout=30).text)
                if invoice:
                    break
                time.sleep(1)
            if invoice:
                pages.append(("invoice page", invoice.group(1) + html.unescape(invoice.group(2)), "cashier"))
                # the queue: billing's Invoice search, then its patients' names in one EHR search
                pages.append(("invoice queue", "/invoices", "cashier"))
                # the page's status box reads billing's summary fresh, at once and every 2 s while open
                pages.append(("invoice status box", invoice.group(1) + "/status", "cashier"))
            only = [w.strip() for w in os.environ.get("SEN_BENCH_PAGES", "").split(",") if w.strip()]
            for name, path, user in pages:
                if only and not any(w in name for w in only):
                    continue  # SEN_BENCH_PAGES=worklist,invoice: only the pages whose names hold one of these
                rows.append((name, _measure(portal, path, _cookie(portal, user), user)))
    finally:
        for svc in ("ehr", "teleconsult", "billing", "portal"):
            mongo_client.drop_database(f"{prefix}_{svc}")
    lines = [f"Portal pages, {CLIENTS} concurrent connections, {SECONDS:.0f} s each ({machine()}). "
             f"20 users: 20 distinct signed-in users; fresh users: each request a user not seen for > 3 s "
             f"({FRESH_USERS} taking turns: no kept answer helps); 1 user: the 20 share one (the earlier figure)", "",
             "| page | 1 request at a time p50 / p95 ms | 20 users: req/s | p50 ms | p95 ms | p99 ms "
             "| fresh users: req/s | p95 ms | p99 ms | 1 user: p95 ms | 200s | 20-user p95 target 150 ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, m in rows:
        ok = min(m["ok"], m["fresh_ok"], m["one_ok"])
        lines.append(f"| {name} | {m['alone50']:.1f} / {m['alone95']:.1f} "
                     f"| {m['rps']:.0f} | {m['p50']:.1f} | {m['p95']:.1f} | {m['p99']:.1f} "
                     f"| {m['fresh_rps']:.0f} | {m['fresh_p95']:.1f} | {m['fresh_p99']:.1f} | {m['one_p95']:.1f} "
                     f"| {ok:.0%} | {'met' if m['p95'] <= 150 else 'missed'} |")
    if not any(name == "invoice page" for name, _ in rows):
        lines.append("")
        lines.append("invoice page: not measured (billing serves no Invoice the cashier can open yet)")
    table = "\n".join(lines)
    print("\n" + table)
    out = ROOT / ".sen" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "portal.md").write_text(table + "\n", encoding="utf-8")
    assert rows and all(min(m["ok"], m["fresh_ok"], m["one_ok"]) > 0.99 for _, m in rows)
