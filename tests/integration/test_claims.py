"""The claim primitive on the real FerretDB: exactly one winner per key, whatever the race."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sen_shared import claims
from sen_shared.mongo import ensure_indexes

pytestmark = pytest.mark.integration


def _race(n: int, fn):
    barrier = threading.Barrier(n)

    def run(i: int):
        barrier.wait()
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def test_twenty_threads_claiming_one_key_make_one_winner(fresh_db) -> None:
    coll = fresh_db.locks
    for race in range(5):
        def attempt(i: int, race=race) -> bool:
            try:
                claims.claim(coll, f"slot-{race}", {"by": i})
                return True
            except claims.ClaimTaken as taken:
                assert taken.holder is not None and taken.holder["_id"] == f"slot-{race}"
                return False

        assert sum(_race(20, attempt)) == 1
    assert coll.count_documents({}) == 5


def test_claim_once_answers_the_first_claim_to_everyone(fresh_db) -> None:
    results = _race(20, lambda i: claims.claim_once(fresh_db.effects, "event-1", {"by": i}))
    winners = [doc for won, doc in results if won]
    assert len(winners) == 1
    assert {doc["by"] for _, doc in results} == {winners[0]["by"]}


def test_a_chain_advances_once_from_each_link(fresh_db) -> None:
    coll = fresh_db.chains
    ensure_indexes(fresh_db, claims.chain_indexes("chains"))
    claims.advance(coll, "task-1", None, {"state": "requested"})
    head = claims.latest(coll, "task-1")

    def accept(i: int) -> bool:
        try:
            claims.advance(coll, "task-1", head, {"state": "accepted", "by": i})
            return True
        except claims.ClaimTaken:
            return False

    assert sum(_race(20, accept)) == 1
    newest = claims.latest(coll, "task-1")
    assert newest["n"] == 2 and newest["state"] == "accepted"
    with pytest.raises(claims.ClaimTaken):  # a writer that read the old link loses later too
        claims.advance(coll, "task-1", head, {"state": "rejected"})
    assert claims.latest(coll, "other") is None


def test_documents_beside_a_claim_are_written_only_with_the_winning_claim(fresh_db) -> None:
    """``beside``: one ordered insert, the claim first. Of 20 racing writers, each with its own
    documents beside, only the winner's are written; a loser gets ClaimTaken naming the link that won."""
    coll = fresh_db.chains
    ensure_indexes(fresh_db, claims.chain_indexes("chains"))

    def book(i: int) -> bool:
        try:
            claims.advance(coll, "slot-1", None, {"by": i}, beside=[{"_id": f"note-{i}-a", "of": i},
                                                                    {"_id": f"note-{i}-b", "of": i}])
            return True
        except claims.ClaimTaken as taken:
            assert taken.holder is not None and taken.holder["_id"] == "slot-1/1"
            return False

    assert sum(_race(20, book)) == 1
    winner = claims.latest(coll, "slot-1")["by"]
    assert sorted(d["_id"] for d in coll.find({"of": {"$exists": True}})) == [f"note-{winner}-a", f"note-{winner}-b"]
    with pytest.raises(claims.ClaimTaken):  # without reading the holder too
        claims.claim(coll, "slot-1/1", {}, read_holder=False, beside=[{"_id": "late"}])
    assert coll.find_one({"_id": "late"}) is None
