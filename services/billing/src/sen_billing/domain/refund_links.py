"""Several refunds of one payment: a chain of refund records per payment, each link a claim by insert.

A payment is given back in parts (a credit refund, then a refund after settlement; a late transfer in
two goes; a cancelled invoice's payment after a part of it went back as credit), each part its own
record in ``refunds``, never an update of an earlier one (FerretDB applies updates unlocked):

- link 1 is the payment's first refund, under ``_id`` = the payment's id (the single record refunds
  were before, so every record made before this chain is its link 1 as it stands: no migration, and
  the point reads "was this payment given back at all" by ``_id`` keep their meaning);
- link n (n >= 2) is ``refund<n>:<payment>`` (no payment id starts so: they are ``<provider>:…`` and
  ``assign:…``), claimed by an insert under that key: two refunds that read the same last link race
  for the same next ``_id``, one wins, the other reads again;
- every link carries ``payment``, ``n`` and ``total``, the running total given back of the payment
  with it (a link 1 from before has only its ``amount``: its total), and is refused when the total
  would pass the payment's amount (:func:`record`), whatever the concurrency: the total of the chain
  never passes the payment, the absolute bound behind each kind's own (the credit left, what is
  left after settlement, the payment's share after a cancel), which its decision's chain checks;
- a link made to finish a decision (``payments.refund``: the give-backs or credit chain's link, an
  unmatched transfer's fate) names it (``decision``), so a decision is recorded once: the link of a
  decision recorded before is the answer, not a second refund. A link 1 from before refunds had
  ``decision`` recorded the payment's first decision of its kind (:func:`unrecorded`).

Its ``billing.payment.refunded`` event rides in the link's insert, its id derived from the link's
``_id`` (``refund_events.event_id``): link 1's is the payment's, as before.

Readers by invoice, shift or day (``find`` on those fields) see every link; readers by payment id use
:func:`chains` (point reads by ``_id``, one round a link: a payment given back once costs one read
more, ``refund2:…``, which finds nothing).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pymongo.database import Database
from sen_shared.claims import ClaimTaken, claim
from sen_shared.errors import Conflict, SenError
from sen_shared.mongo import find_in

from . import invoice_port

REFUNDS = invoice_port.REFUNDS
TRIES = 64  # each round one contender wins the next link: as many rounds as cashiers at once

REVERSAL, AFTER, CREDIT = "reversal", "after", "credit"  # a record's kind, as its decision's chain says


def key(payment_key: str, n: int) -> str:
    """The ``_id`` of link ``n`` of a payment's refunds."""
    return payment_key if n == 1 else f"refund{n}:{payment_key}"


def payment_of(r: Mapping[str, Any]) -> str:
    """The payment a refund record gives back (a link 1 from before: its ``_id``)."""
    return str(r.get("payment") or r["_id"])


def seq(r: Mapping[str, Any]) -> int:
    return int(r.get("n") or 1)


def total(links: list[Mapping[str, Any]]) -> int:
    """What a payment's links gave back in all."""
    return sum(int(r["amount"]) for r in links)


def kind(r: Mapping[str, Any]) -> str:
    """Which decision chain a record finishes: a reversal, a refund after settlement, else a credit's
    give-back (or a late payment's, an unmatched transfer's, with no chain)."""
    return REVERSAL if r.get("reverses") else AFTER if r.get("after_settlement") else CREDIT


def chains(db: Database, payment_ids: Iterable[str], projection: Mapping[str, Any] | None = None,
           ) -> dict[str, list[dict[str, Any]]]:
    """Each payment's refund links, oldest first (a payment never given back: absent). Point reads by
    ``_id`` (``find_in``; an ``$in`` reads the whole collection on FerretDB), one round a link."""
    fields = {**projection, "payment": 1, "n": 1, "amount": 1} if projection else None
    out: dict[str, list[dict[str, Any]]] = {}
    wanted = list(dict.fromkeys(str(p) for p in payment_ids))
    n = 1
    while wanted:
        found = {payment_of(r): r for r in find_in(db[REFUNDS], "_id", [key(p, n) for p in wanted],
                                                   projection=fields)}
        for p, r in found.items():
            out.setdefault(p, []).append(r)
        wanted = [p for p in wanted if p in found]
        n += 1
    return out


def chain(db: Database, payment_key: str, projection: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """One payment's refund links, oldest first."""
    return chains(db, [payment_key], projection).get(payment_key, [])


def by_payment(refunds: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Records read by invoice, shift or day, grouped by payment, oldest link first."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in sorted(refunds, key=seq):
        out.setdefault(payment_of(r), []).append(r)
    return out


def refunded(refunds: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """What each payment's records gave back in all."""
    return {p: total(links) for p, links in by_payment(refunds).items()}


def decision_id(collection: str, link: Mapping[str, Any]) -> str:
    """How a refund record names the decision it finishes: its collection and ``_id`` (the give-backs
    and the credit's chains both key their links ``<invoice>/<n>``)."""
    return f"{collection}/{link['_id']}"


def unrecorded(links: list[Mapping[str, Any]], decisions: list[Mapping[str, Any]], collection: str,
               of_kind: str) -> dict[str, Any] | None:
    """The oldest of a payment's ``decisions`` (its links in the decision chain ``collection``, oldest
    first, all of ``of_kind``) no refund record of ``links`` finishes yet (a try that stopped before
    its record, or one in flight), else None. A link 1 from before records named their decision
    finished the payment's first decision of its kind (refunds were one a payment then)."""
    done = {str(r["decision"]) for r in links if r.get("decision")}
    legacy = any(not r.get("decision") and kind(r) == of_kind for r in links)
    for i, d in enumerate(decisions):
        if decision_id(collection, d) in done or (legacy and i == 0):
            continue
        return dict(d)
    return None


def record(db: Database, payment: Mapping[str, Any], doc: Mapping[str, Any], *,
           decision: str | None = None, with_event: Any = None) -> tuple[bool, dict[str, Any]]:
    """Claim the next link of ``payment``'s refunds carrying ``doc`` (its ``amount``): ``(True, the
    link)``; ``(False, the link)`` when ``decision`` is recorded already (by another try finishing
    it). Refused when the payment's total would pass its amount: nothing left, a Conflict; less left
    than asked, 422 with ``refundable``. ``with_event``: builds the insert (its outbox) from the link."""
    pid = str(payment["_id"])
    whole = int(payment["amount"])
    amount = int(doc["amount"])
    for _ in range(TRIES):
        links = chain(db, pid)
        if decision is not None:
            done = next((r for r in links if r.get("decision") == decision), None)
            if done is not None:
                return False, done
        given = total(links)
        if given >= whole:
            raise Conflict("this payment was refunded already", refundable=0, why="refunded")
        if given + amount > whole:
            raise SenError(f"at most {whole - given} đồng of this payment can be refunded", status=422,
                           title="Unprocessable Content", refundable=whole - given, why="refunded")
        n = len(links) + 1
        link = {**doc, "_id": key(pid, n), "payment": pid, "n": n, "total": given + amount,
                **({"decision": decision} if decision is not None else {})}
        link.setdefault("at", datetime.now(UTC))
        try:
            return True, claim(db[REFUNDS], link["_id"], with_event(link) if with_event else link, read_holder=False)
        except ClaimTaken:
            continue  # another refund of this payment won the link: read the chain again
    raise Conflict("this payment is being given back meanwhile; try again")


__all__ = ["AFTER", "CREDIT", "REVERSAL", "by_payment", "chain", "chains", "decision_id", "key", "kind",
           "payment_of", "record", "refunded", "seq", "total", "unrecorded"]
