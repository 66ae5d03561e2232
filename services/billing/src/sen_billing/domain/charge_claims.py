"""Which invoice holds each ChargeItem: one chain of claims per charge (``charge_invoiced``).

A ChargeItem is on one live invoice at most. The charge's chain (``sen_shared.claims``) says
who holds it: link ``<charge id>/<n>`` is ``{invoice, state: "invoiced"}`` when an invoice took
the charge (:func:`take`, by ``invoices.create_draft``) and ``{invoice, state: "released"}``
when that invoice gave it back (:func:`release`, by ``invoices.cancel``). A take and a release
both claim the link after the one they read, so exactly one of two racing writers wins: a new
invoice either takes a released charge or is told who holds it (409), never both invoices.

Why a chain and not a delete of the claim: FerretDB 1.24 deletes by reading the documents the
filter matches, then deleting their ``_id`` s (``handler/msg_delete.go``, the PostgreSQL
backend's ``DeleteAll``: ``DELETE ... WHERE _id IN (...)``). Two releasers of the same invoice
(a cancel and its re-call after a crash, a double click) could both read its claim, and the
second delete would remove the claim a new invoice inserted between them. Links are never
updated or deleted, so nothing can be removed from under a new holder, and any number of
releasers may run (the repair of a cancel that stopped half-way is one more release).

A claim written before the chain (one document ``{_id: <charge id>, invoice}``) counts as the
chain's link 0, so charges invoiced before this module stay invoiced; nothing writes that
shape any more.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pymongo.database import Database
from sen_shared.claims import CHAIN_KEY, CHAIN_SEQ, ClaimTaken, advance, latest
from sen_shared.mongo import find_in

COLLECTION = "charge_invoiced"
INVOICED, RELEASED = "invoiced", "released"
TRIES = 5  # a writer that keeps losing its link to others answers "try again" after this many


class Busy(Exception):
    """The charge's chain kept moving under this writer (others took and released it meanwhile)."""


def current(db: Database, charge: str) -> dict[str, Any] | None:
    """The charge's newest link (a claim from before the chain as link 0), None if never invoiced."""
    link = latest(db[COLLECTION], charge)
    if link is not None:
        return link
    old = db[COLLECTION].find_one({"_id": charge})
    return {**old, CHAIN_KEY: charge, CHAIN_SEQ: 0, "state": INVOICED} if old is not None else None


def holder_of(link: dict[str, Any] | None) -> str | None:
    """The invoice id a link says holds the charge (None: free)."""
    if link is None or link.get("state", INVOICED) != INVOICED:
        return None
    return str(link["invoice"])


def holder(db: Database, charge: str) -> str | None:
    """The invoice holding ``charge`` now, None when no invoice does."""
    return holder_of(current(db, charge))


def holders(db: Database, charges: Iterable[str]) -> dict[str, str]:
    """``{charge: invoice}`` for the charges among ``charges`` an invoice holds (one equality query
    per charge on the chain key, and one per charge without a chain for a claim from before it)."""
    wanted = list(dict.fromkeys(charges))
    newest: dict[str, dict[str, Any]] = {}
    for link in find_in(db[COLLECTION], CHAIN_KEY, wanted):
        key = link[CHAIN_KEY]
        if key not in newest or link[CHAIN_SEQ] > newest[key][CHAIN_SEQ]:
            newest[key] = link
    held = {key: inv for key, link in newest.items() if (inv := holder_of(link)) is not None}
    for old in find_in(db[COLLECTION], "_id", [c for c in wanted if c not in newest]):
        held[str(old["_id"])] = str(old["invoice"])
    return held


def given_back_by(db: Database, charges: Iterable[str], invoice: str) -> dict[str, str]:
    """``{charge: the invoice that gave it back}`` for those of ``charges`` that ``invoice`` took after
    another invoice released them: the link just before ``invoice``'s first take of the charge is a
    ``released`` one (a cancelled invoice's charge invoiced again). Read from the chains alone (one
    equality query per charge), so every caller, however many race, finds the same answer."""
    chains: dict[str, dict[int, dict[str, Any]]] = {}
    for link in find_in(db[COLLECTION], CHAIN_KEY, charges):
        chains.setdefault(link[CHAIN_KEY], {})[int(link[CHAIN_SEQ])] = link
    out: dict[str, str] = {}
    for charge, chain in chains.items():
        took = [n for n, link in chain.items() if link.get("invoice") == invoice and link.get("state") == INVOICED]
        before = chain.get(min(took) - 1) if took else None
        if before is not None and before.get("state") == RELEASED and before.get("invoice") != invoice:
            out[charge] = str(before["invoice"])
    return out


def take(db: Database, charge: str, invoice: str) -> str | None:
    """Claim ``charge`` for ``invoice``: None once it holds it (now or already), else the invoice
    that holds it. :class:`Busy` if the chain kept moving under us (a 409 to try again)."""
    for _ in range(TRIES):
        link = current(db, charge)
        held = holder_of(link)
        if held is not None:
            return None if held == invoice else held
        try:
            advance(db[COLLECTION], charge, link, {"invoice": invoice, "state": INVOICED})
            return None
        except ClaimTaken:
            continue  # someone else moved the chain first: read who holds it now
    raise Busy(charge)


def release(db: Database, charge: str, invoice: str) -> bool:
    """Give ``charge`` back if ``invoice`` holds it; True if this call released it. A charge
    released already, or held by another invoice since, is left as it is."""
    for _ in range(TRIES):
        link = current(db, charge)
        if holder_of(link) != invoice:
            return False
        try:
            advance(db[COLLECTION], charge, link, {"invoice": invoice, "state": RELEASED})
            return True
        except ClaimTaken:
            continue  # another release of it, or a take after one: read again
    raise Busy(charge)


__all__ = ["COLLECTION", "INVOICED", "RELEASED", "Busy", "current", "given_back_by", "holder", "holder_of", "holders",
           "release", "take"]
