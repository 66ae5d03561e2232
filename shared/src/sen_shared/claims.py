"""Invariants as claims: an insert under a unique key, never a guarded update.

FerretDB 1.24 (our local and test engine) applies an update as a read-modify-write of the
whole document without a lock: a guard in the filter (``{_id, state: "free"}``) let 1 to 20
of 20 racing threads win. An insert of the same ``_id`` (or the same key under a unique
index) always had exactly one winner, on FerretDB and on MongoDB. So every invariant in Sen
is a claim made by an insert (ARCHITECTURE.md §2):

- :func:`claim` inserts a document under its key; the loser gets :class:`ClaimTaken`
  carrying the holder's document (or None if it vanished meanwhile).
- :func:`claim_once` is the idempotent form: the same key again answers the first claim's
  document instead of failing (effects of an event, webhooks, ``Idempotency-Key``).
- A **chain** is a key whose state changes over time, kept as an append-only sequence of
  claims ``<key>/1``, ``<key>/2``, ...: :func:`latest` reads the newest link, :func:`advance`
  claims the next one. Two writers that read the same link race for the same next ``_id``,
  so exactly one of them wins; nothing is ever updated or deleted, so no release can race
  a new claim. Slots, tasks and anything else with a state machine use chains; the FHIR
  store's history (``<id>/<version>``) is the same mechanism.

A document written under a claim may be updated afterwards only by its single owner (say
which, in a comment where it happens).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo import DESCENDING
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, DuplicateKeyError

from .mongo import Index

CHAIN_KEY = "k"  # the chain a link belongs to
CHAIN_SEQ = "n"  # the link's place in its chain, from 1
DUPLICATE_KEY = 11000  # the server's error code for an insert under a key already held


class ClaimTaken(Exception):
    """Someone else holds the key. ``holder`` is their document (None if it was removed meanwhile)."""

    def __init__(self, key: Any, holder: Mapping[str, Any] | None) -> None:
        super().__init__(f"{key} is already claimed")
        self.key = key
        self.holder = dict(holder) if holder is not None else None


def claim(coll: Collection, key: Any, doc: Mapping[str, Any] | None = None, *,
          read_holder: bool = True, beside: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Insert ``doc`` under ``_id = key``; the inserted document, or :class:`ClaimTaken`.
    ``read_holder=False``: the loser does not read the holder (``ClaimTaken.holder`` is None), for a
    caller that decides without it: one round trip less on a lost claim. On FerretDB the error
    does not say which unique index refused the insert (the ``_id`` or another).

    ``beside``: documents of the same collection the winner writes with its claim, in the same
    ordered insert after it (one command instead of two): a lost claim stops the insert before
    them, so only the winner's are ever written. Their ids must be new (a duplicate among them
    is an error after the claim is made, as a second insert's would be)."""
    record = {**(doc or {}), "_id": key}
    record.setdefault("at", datetime.now(UTC))
    try:
        if beside:
            coll.insert_many([record, *beside], ordered=True)
        else:
            coll.insert_one(record)
    except DuplicateKeyError:
        raise ClaimTaken(key, coll.find_one({"_id": key}) if read_holder else None) from None
    except BulkWriteError as err:
        first = (err.details.get("writeErrors") or [{}])[0]
        if first.get("index") != 0 or first.get("code") != DUPLICATE_KEY:
            raise
        raise ClaimTaken(key, coll.find_one({"_id": key}) if read_holder else None) from None
    return record


def claim_once(coll: Collection, key: Any, doc: Mapping[str, Any] | None = None) -> tuple[bool, dict[str, Any]]:
    """Claim ``key`` unless it is claimed already: ``(True, the new document)`` for the winner,
    ``(False, the holder's document)`` for everyone after it."""
    try:
        return True, claim(coll, key, doc)
    except ClaimTaken as taken:
        if taken.holder is None:  # released between our insert and our read: try once more
            return claim_once(coll, key, doc)
        return False, taken.holder


def release(coll: Collection, key: Any) -> bool:
    """Remove the claim ``key``. Safe only where a single writer releases (the holder itself,
    or one sweeper process); racing releasers and claimers must use a chain instead."""
    return coll.delete_one({"_id": key}).deleted_count == 1


# ---------------------------------------------------------------------------------- chains

def chain_indexes(collection: str) -> list[Index]:
    """The index :func:`latest` needs in a collection of chains."""
    return [Index(collection, ((CHAIN_KEY, 1), (CHAIN_SEQ, -1)), name="chain_k_n")]


def link_id(key: str, seq: int) -> str:
    return f"{key}/{seq}"


def latest(coll: Collection, key: str) -> dict[str, Any] | None:
    """The newest link of the chain ``key`` (None for a chain not started)."""
    # an equality on a top-level field (pushed down by FerretDB), then the sort: a chain is short
    return coll.find_one({CHAIN_KEY: key}, sort=[(CHAIN_SEQ, DESCENDING)])


def advance(coll: Collection, key: str, after: Mapping[str, Any] | None, doc: Mapping[str, Any], *,
            read_holder: bool = True, beside: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Append the link after ``after`` (the link the caller read and decided on; None to start
    the chain) carrying ``doc``. :class:`ClaimTaken` (with the link that won, unless
    ``read_holder=False``: see :func:`claim`) when another writer advanced the chain from the
    same link first, or had already advanced past it. ``beside``: as :func:`claim`'s (they must
    not carry the chain's fields, or they would be taken for links)."""
    seq = (int(after[CHAIN_SEQ]) if after is not None else 0) + 1
    return claim(coll, link_id(key, seq), {**doc, CHAIN_KEY: key, CHAIN_SEQ: seq}, read_holder=read_holder,
                 beside=beside)


__all__ = ["ClaimTaken", "advance", "chain_indexes", "claim", "claim_once", "latest", "link_id", "release"]
