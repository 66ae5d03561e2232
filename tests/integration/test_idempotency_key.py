"""``sen_shared.idempotency_key`` on the real FerretDB: one execution per key, whatever the concurrency."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sen_shared.idempotency_key import Answer, IdempotencyError, IdempotencyKeys, fingerprint

pytestmark = pytest.mark.integration


@pytest.fixture()
def keys(fresh_db):
    return IdempotencyKeys(fresh_db.idempotency_keys, wait_seconds=10, poll_seconds=0.01)


def test_twenty_concurrent_retries_run_once_and_all_get_the_first_answer(keys):
    runs: list[int] = []
    barrier = threading.Barrier(20)

    def execute() -> Answer:
        runs.append(1)
        time.sleep(0.2)  # still running while the others arrive
        return Answer(201, {"content-type": "application/fhir+json"}, f"made {len(runs)}".encode())

    def call(_: int) -> Answer:
        barrier.wait()
        return keys.run("nv-a@tyt", "k1", fingerprint("POST", "/x", b'{"a": 1}'), execute)

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(call, range(20)))
    assert len(runs) == 1
    assert {(a.status, a.body) for a in answers} == {(201, b"made 1")}


def test_same_key_other_request_is_422_and_json_is_compared_canonically(keys):
    fp = fingerprint("POST", "/x", b'{"a": 1, "b": [1, 2]}')
    keys.run("u", "k", fp, lambda: Answer(200, {}, b"ok"))
    assert fingerprint("POST", "/x", b'{ "b": [1,2], "a": 1 }') == fp
    assert keys.run("u", "k", fp, lambda: Answer(500, {}, b"never")).body == b"ok"
    with pytest.raises(IdempotencyError) as err:
        keys.run("u", "k", fingerprint("POST", "/x", b'{"a": 2}'), lambda: Answer(200, {}, b"no"))
    assert err.value.status == 422
    # another caller's same key is another key
    assert keys.run("v", "k", fingerprint("POST", "/x", b'{"a": 2}'), lambda: Answer(200, {}, b"v")).body == b"v"


def test_a_server_error_or_exception_releases_the_key(keys):
    fp = fingerprint("POST", "/x", b"{}")
    assert keys.run("u", "k", fp, lambda: Answer(503, {}, b"down")).status == 503
    with pytest.raises(RuntimeError):
        keys.run("u", "k", fp, lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    assert keys.run("u", "k", fp, lambda: Answer(201, {}, b"made")).body == b"made"
    assert keys.run("u", "k", fp, lambda: Answer(201, {}, b"again")).body == b"made"


def test_a_retry_during_a_long_first_request_gets_409_after_waiting(fresh_db):
    keys = IdempotencyKeys(fresh_db.idempotency_keys, wait_seconds=0.2, poll_seconds=0.01)
    fp = fingerprint("POST", "/x", b"{}")
    started, release = threading.Event(), threading.Event()

    def slow() -> Answer:
        started.set()
        release.wait(10)
        return Answer(200, {}, b"late")

    t = threading.Thread(target=keys.run, args=("u", "k", fp, slow))
    t.start()
    started.wait(10)
    with pytest.raises(IdempotencyError) as err:
        keys.run("u", "k", fp, lambda: Answer(200, {}, b"second"))
    assert err.value.status == 409
    release.set()
    t.join()
    assert keys.run("u", "k", fp, lambda: Answer(200, {}, b"third")).body == b"late"


def test_an_attempt_whose_process_died_is_taken_over_after_its_lease(fresh_db):
    keys = IdempotencyKeys(fresh_db.idempotency_keys, lease_seconds=60)
    fp = fingerprint("POST", "/x", b"{}")
    # a first attempt that never answered (its process died), started two minutes ago
    fresh_db.idempotency_keys.insert_one({"_id": "u|k/1", "k": "u|k", "n": 1, "fp": fp,
                                          "at": datetime.now(UTC) - timedelta(minutes=2)})
    assert keys.run("u", "k", fp, lambda: Answer(201, {}, b"redone")).body == b"redone"


@pytest.mark.parametrize("bad", ["", "x" * 256, "tab\there", "khóa"])
def test_a_malformed_key_is_400(keys, bad):
    with pytest.raises(IdempotencyError) as err:
        keys.run("u", bad, "fp", lambda: Answer(200, {}, b""))
    assert err.value.status == 400
