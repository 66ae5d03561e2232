"""Each app's AuditEvents land in its own database, however many apps one process holds.

The EHR's and teleconsult's AuditEvents are stored by a writer thread, outside any request. It found its
database through ``sen_shared.runtime.current()``, which outside a request is the process's last-installed
runtime: with two apps in one process (tests), the first app's refusals landed in the second app's database.
A FHIR server's database is now bound to its own settings when the app is made
(``sen_shared.runtime.database_of``), billing's as the others'. Two apps of each service on two databases,
each refusing a caller of its own: each refusal is in its own app's trail and in no other.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import pytest
from sen_shared.auth import issue_dev_token
from sen_shared.fhir.body import unpack
from sen_shared.runtime import EXTENSION

from tests.support import app_client

pytestmark = pytest.mark.integration

# a request each service refuses by role (a 403 recorded once): (role, method, path)
REFUSALS: dict[str, tuple[str, str]] = {
    "ehr": ("cashier", "/fhir/Practitioner"),  # the cashier role reads Patient and Coverage only
    "teleconsult": ("cashier", "/fhir/Task/$worklist"),
    "billing": ("doctor", "/fhir/Invoice/sen-no-such-invoice"),
}


def _trail_of(db: Any, sub: str) -> list[dict[str, Any]]:
    return [e for e in (unpack(d)["res"] for d in db["AuditEvent"].find({}))
            if any(a.get("altId") == sub for a in e.get("agent", []))]


@pytest.mark.parametrize("service", sorted(REFUSALS))
def test_each_app_records_its_refusals_in_its_own_database(service, base_env, run_id, mongo_client, dev_key) -> None:
    role, path = REFUSALS[service]
    names = [f"sen_t{run_id}_own_trail_{service}_{n}" for n in (1, 2)]
    with ExitStack() as stack:
        apps = [stack.enter_context(app_client(service, base_env, name, mongo_client)) for name in names]
        subs = []
        for client, _app in apps:  # the second app is the process's last-installed runtime
            sub = f"{role}-{uuid.uuid4().hex[:8]}"
            token = issue_dev_token(dev_key, role, sub=sub, facility="tyt-a")
            r = client.get(path, headers={"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"})
            assert r.status_code == 403, (service, r.status_code, r.text)
            subs.append(sub)
        flushes: list[Callable[[], None]] = [app.app.extensions[EXTENSION].extras["fhir"].auditor.flush
                                             for _client, app in apps]
        for flush in flushes:  # the writer threads store in the background
            flush()
        for name, sub, other in zip(names, subs, reversed(subs), strict=True):
            db = mongo_client[name]
            mine = _trail_of(db, sub)
            assert [(e["outcome"], e["outcomeDesc"][:4]) for e in mine] == [("4", "403:")], (service, name, mine)
            assert _trail_of(db, other) == [], (service, name, "holds the other app's refusal")
