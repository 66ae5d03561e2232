"""``apply_once`` against the real FerretDB: an event's effect is claimed by one insert keyed by its id.

Races are started together behind a barrier, several times over, because FerretDB's
updates lose writes only when they really overlap.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sen_shared.bus import apply_once
from sen_shared.claims import claim_once

pytestmark = pytest.mark.integration

THREADS = 20
RACES = 5


def race(fn: Callable[[int], Any], n: int = THREADS) -> list[Any]:
    """Run fn(0..n-1) on n threads released at once; their results in order (exceptions re-raised)."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(10)
            results[i] = fn(i)
        except BaseException as err:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return results


def test_twenty_different_events_on_one_effect_at_once_are_all_applied_once(fresh_db: Any) -> None:
    coll = fresh_db.effects
    for r in range(RACES):
        subject = f"ServiceRequest/sr-{r}"
        events = [str(uuid.uuid4()) for _ in range(THREADS)]
        applied = race(lambda i: apply_once(coll, events[i], {"subject": subject, "amount": 1000 * (i + 1)}))
        assert applied == [True] * THREADS
        docs = list(coll.find({"subject": subject}))
        assert sorted(d["_id"] for d in docs) == sorted(events)  # every one applied, none twice
        assert sum(d["amount"] for d in docs) == 1000 * THREADS * (THREADS + 1) // 2


def test_one_event_redelivered_twenty_times_at_once_is_applied_once(fresh_db: Any) -> None:
    coll = fresh_db.effects
    for r in range(RACES):
        event = str(uuid.uuid4())
        applied = race(lambda i: apply_once(coll, event, {"subject": f"s-{r}", "delivery": i}))
        assert applied.count(True) == 1
        [doc] = coll.find({"subject": f"s-{r}"})
        assert doc["_id"] == event and doc["delivery"] == applied.index(True)  # the winner's fact


def test_a_separate_idempotent_effect_survives_a_crash_before_the_claim_and_races(fresh_db: Any) -> None:
    claims, invoices = fresh_db.claims, fresh_db.invoices
    event = str(uuid.uuid4())

    def charge() -> None:  # idempotent, keyed by the event: a conditional insert
        claim_once(invoices, f"charge/{event}", {"amount": 150_000})

    def crash_after_effect() -> None:
        charge()
        raise SystemExit("killed between the effect and the claim")

    with pytest.raises(SystemExit):
        apply_once(claims, event, effect=crash_after_effect)
    assert claims.count_documents({}) == 0 and invoices.count_documents({}) == 1
    applied = race(lambda i: apply_once(claims, event, {"delivery": i}, effect=charge))
    assert applied.count(True) == 1
    assert claims.count_documents({}) == 1 and invoices.count_documents({}) == 1  # the effect is there, once
    assert apply_once(claims, event, effect=charge) is False


def test_apply_many_claims_each_event_once_in_one_insert(fresh_db: Any) -> None:
    from sen_shared.bus import apply_many

    coll = fresh_db.effects
    events = [str(uuid.uuid4()) for _ in range(20)]
    assert apply_many(coll, [(e, {"n": i}) for i, e in enumerate(events[:5])]) == [True] * 5
    batch = [(e, {"n": 100 + i}) for i, e in enumerate(events)] + [(events[7], {"n": -1}), (events[0], {"n": -2})]
    assert apply_many(coll, batch) == [False] * 5 + [True] * 15 + [False, False]
    docs = {d["_id"]: d["n"] for d in coll.find()}
    assert len(docs) == 20 and docs[events[0]] == 0 and docs[events[7]] == 107  # first writer's fact kept
    assert apply_many(coll, []) == []
    # concurrent groups racing on the same events: each event applied exactly once overall
    more = [str(uuid.uuid4()) for _ in range(40)]
    results = race(lambda i: apply_many(coll, [(e, {"by": i}) for e in more]))
    assert [sum(r[k] for r in results) for k in range(len(more))] == [1] * len(more)
