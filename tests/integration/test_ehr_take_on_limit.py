"""Wrong numbers at ``$take-on`` are limited per user (``SEN_TAKE_ON_MAX_FAILURES``, here 3), on the real FerretDB.

After 3 wrong numbers the same nurse's next attempt, the right number included, is 429 with a
Retry-After and an OperationOutcome saying until when, and grants nothing (the number was not
compared); another nurse is unaffected; right numbers and bad input are no failures. Once the
failures have left the window the nurse takes the patient on (a second app on the same database
with a 1-second window: no long sleep). Attempts racing each other never get more than 3 wrong
numbers compared (12 threads at once, 5 rounds).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from sen_shared.fhir.access import GRANTS

from tests.integration.test_ehr_consult_record import _env, bearer, ehr
from tests.integration.test_ehr_take_on import BHYT, B, Tam, params, post, t
from tests.integration.test_idempotency import race

pytestmark = pytest.mark.integration
__all__ = ["ehr", "t"]

LIMIT = 3


@pytest.fixture(scope="module")
def ehr_env(base_env: dict[str, str], run_id: str) -> dict[str, str]:
    return {**base_env, "SEN_DB": f"sen_t{run_id}_ehr_{uuid.uuid4().hex[:4]}", "SEN_TAKE_ON_MAX_FAILURES": str(LIMIT)}


def nurse(dev_key: Any) -> tuple[str, dict[str, str]]:
    """A nurse of facility B of her own (the limit is per user)."""
    sub = f"nurse-{uuid.uuid4().hex[:8]}"
    return sub, bearer(dev_key, "clinic", facility=B, sub=sub)


def wrong(t: Tam) -> str:
    return t.cccd[:-1] + str((int(t.cccd[-1]) + 1) % 10)


def fail(ehr: Any, h: dict[str, str], t: Tam, times: int = LIMIT) -> None:
    for _ in range(times):
        r = post(ehr, h, f"/fhir/Patient/{t.pid}/$take-on", params(value=wrong(t)))
        assert r.status_code == 403, r.text


def test_after_the_limit_the_right_number_is_429_and_another_nurse_is_unaffected(
        ehr: Any, dev_key: Any, t: Tam, mongo_client: Any, ehr_env: dict[str, str]) -> None:
    sub, h = nurse(dev_key)
    fail(ehr, h, t)
    r = post(ehr, h, f"/fhir/Patient/{t.pid}/$take-on", params(value=t.cccd))
    assert r.status_code == 429, r.text
    retry = int(r.headers["Retry-After"])
    assert 0 < retry <= 900
    issue = r.json()["issue"][0]
    assert r.json()["resourceType"] == "OperationOutcome" and issue["code"] == "throttled"
    assert "no number is compared before 20" in issue["diagnostics"] and t.cccd not in r.text
    # by the card alone (the type-level operation) too, and nothing was granted
    assert post(ehr, h, "/fhir/Patient/$take-on", params(BHYT, t.card)).status_code == 429
    assert ehr.get(f"/fhir/Patient/{t.pid}", headers=h).status_code == 404  # refused: as if it did not exist
    assert mongo_client[ehr_env["SEN_DB"]][GRANTS].count_documents({"patient": f"Patient/{t.pid}"}) == 0
    # the refusals were audited as such
    admin = bearer(dev_key, "admin")
    trail = ehr.get(f"/fhir/AuditEvent?patient=Patient/{t.pid}&altid={sub}&_count=50", headers=admin).json()
    descs = sorted(e["resource"].get("outcomeDesc", "")[:3] for e in trail.get("entry", [])
                   if any(s.get("code") == "take-on" for s in e["resource"]["subtype"]))
    assert descs == ["403"] * LIMIT + ["429"]

    # another nurse of the same facility, the right number: taken on
    _, other = nurse(dev_key)
    assert post(ehr, other, f"/fhir/Patient/{t.pid}/$take-on", params(value=t.cccd)).status_code == 201


def test_right_numbers_and_bad_input_are_no_failures(ehr: Any, dev_key: Any, t: Tam) -> None:
    _, h = nurse(dev_key)
    fail(ehr, h, t, LIMIT - 1)
    for _ in range(4):
        assert post(ehr, h, f"/fhir/Patient/{t.pid}/$take-on", params(reason=None)).status_code == 400
    assert post(ehr, h, f"/fhir/Patient/{t.pid}/$take-on", params(value=t.cccd)).status_code == 201
    assert post(ehr, h, f"/fhir/Patient/{t.pid}/$take-on", params(value=t.cccd)).status_code == 200
    # a number nobody holds is a wrong number too: the limit's last one
    assert post(ehr, h, "/fhir/Patient/$take-on", params(value="000000000001")).status_code == 403
    assert post(ehr, h, f"/fhir/Patient/{t.pid}/$take-on", params(value=t.cccd)).status_code == 429


def test_after_the_window_the_nurse_takes_the_patient_on(ehr: Any, dev_key: Any, t: Tam,
                                                        ehr_env: dict[str, str]) -> None:
    from sen_ehr.app import create_app
    from sen_ehr.config import EhrSettings
    from sen_shared.runtime import EXTENSION

    _, h = nurse(dev_key)
    fail(ehr, h, t)
    r = post(ehr, h, f"/fhir/Patient/{t.pid}/$take-on", params(value=t.cccd))
    assert r.status_code == 429
    failed = time.monotonic()  # every failure is older than this
    # the same failures, counted by an EHR whose window is 0.3 s, once that window has passed
    window = 0.3
    with _env({**ehr_env, "SEN_TAKE_ON_FAILURE_WINDOW_SECONDS": str(window)}):
        short = create_app(EhrSettings())
    time.sleep(max(0.0, failed + window + 0.02 - time.monotonic()))
    with short.test_client() as c:
        r = post(c, h, f"/fhir/Patient/{t.pid}/$take-on", params(value=t.cccd))
    short.app.extensions[EXTENSION].extras["fhir"].auditor.flush()  # stored before the module drops the database
    assert r.status_code == 201, r.text


def test_attempts_at_once_never_compare_more_than_the_limit(ehr_env: dict[str, str], mongo_client: Any) -> None:
    """12 threads of one user at once, each a wrong number (begin, compare, keep), 5 rounds on FerretDB:
    at most LIMIT of them get to compare, and each that did left its record."""
    from datetime import timedelta

    from sen_ehr.domain import take_on_failures as failures
    from sen_shared.fhir.outcome import FhirError

    db = mongo_client[ehr_env["SEN_DB"]]
    limit = failures.Limit(LIMIT, timedelta(minutes=15))
    for round_ in range(5):
        user = f"race-{round_}-{uuid.uuid4().hex[:6]}"

        def go(i: int, user: str = user) -> bool:
            """One wrong number: True when it got to be compared."""
            try:
                failures.begin(db, user, limit)
            except FhirError as err:
                assert err.status == 429 and int(err.headers["Retry-After"]) > 0
                return False
            failures.keep(db, user, limit)  # the number compared: wrong
            return True

        outcomes = race(go, 12)
        compared = [i for i, ok in enumerate(outcomes) if ok]
        refused = [i for i, ok in enumerate(outcomes) if not ok]
        assert len(compared) + len(refused) == 12
        assert len(compared) <= LIMIT, compared
        assert db[failures.FAILURES].count_documents({"user": user}) == len(compared)

