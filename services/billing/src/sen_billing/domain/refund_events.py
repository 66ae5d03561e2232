"""``billing.payment.refunded``: money of a payment given back, announced once per refund.

A refund is a link of the payment's refunds (``refund_links``: link 1 keyed by the payment, link n
by ``refund<n>:<payment>``); its event rides in the link's own insert (the outbox: the relay is the
refund document's only writer after). The event's id is derived from the link's ``_id``
(:func:`event_id`; link 1's is the payment's, as when a payment had one refund), so however often
it is published (a relay's redelivery, or :func:`backfill` of a refund made before refunds had
events) a consumer that deduplicates by event id (the portal's reporting facts) counts each refund
once, and two refunds of one payment twice.

``channel`` is the REFUNDED payment's channel, the takings the money is subtracted from (a late
transfer given back in cash at the desk lowers the transfers received, not the cash);
``refundChannel`` says how the money went back. ``paymentReceivedAt`` is when the refunded payment
came; a payment made by assigning an unmatched transfer to an invoice (``assign:<transfer>``) also
says when its transfer came (``assignedFromReceivedAt``, as its ``billing.payment.received`` does), so
a reader can put the refund beside that day's transfers without having seen the assignment's event
(the portal's ``assigned_earlier``, whatever order the two events arrive in). ``paymentBankTime`` and
``assignedFromBankTime`` are those transfers' bank times (when their provider gave one): the day billing's
daily report places them on, which a reader prefers.

:func:`backfill` (the billing worker, once: ``worker.backfill_refund_events_once``) announces the
refunds made before this event existed: each gets a document in ``refund_events`` keyed by the
refund (a claim; the event in its outbox), never an update of the refund itself.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pymongo.database import Database
from sen_shared.bus.outbox import new_document
from sen_shared.claims import claim_once

from . import invoice_port

KIND = "billing.payment.refunded"
BACKFILLED = "refund_events"  # {_id: refund (payment) id, outbox}: events of refunds made before the event
_NAMESPACE = uuid.UUID("2f6f1f52-6a55-4c55-9a1e-5b0c1d7e9a31")


def event_id(refund_key: str) -> str:
    """The refund event's id: the same for a refund (its record's ``_id``; a payment's first refund's
    is the payment's id) whoever publishes it."""
    return str(uuid.uuid5(_NAMESPACE, f"{KIND}:{refund_key}"))


def _iso(at: datetime) -> str:
    at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event(refund: Mapping[str, Any], payment: Mapping[str, Any]) -> dict[str, Any]:
    """The event of one refund (``refunds`` document, its ``at`` set) of ``payment``."""
    from sen_shared.bus.events import make_event

    at = refund.get("at") if isinstance(refund.get("at"), datetime) else datetime.now(UTC)
    data: dict[str, Any] = {"payment": str(payment["_id"]), "amount": int(refund["amount"]), "currency": "VND",
                            "channel": payment.get("channel") or "transfer",
                            "refundChannel": refund.get("channel") or "cash", "refundedAt": _iso(at)}
    invoice = refund.get("invoice") or payment.get("invoice") or payment.get("late_invoice")
    if invoice:
        data["invoice"] = f"Invoice/{invoice}"
    if refund.get("facility"):
        data["facility"] = f"Organization/{refund['facility']}"
    if payment.get("district"):
        data["district"] = payment["district"]
    if payment.get("outcome"):  # what the refunded payment was: applied (takings), late-* or unmatched (not)
        data["outcome"] = payment["outcome"]
    if isinstance(payment.get("received_at"), datetime):  # when the refunded payment came (its day)
        data["paymentReceivedAt"] = _iso(payment["received_at"])
    if isinstance(payment.get("assigned_from_received_at"), datetime):  # an assignment's: when its transfer came
        data["assignedFromReceivedAt"] = _iso(payment["assigned_from_received_at"])
    # when the bank says the refunded transfer was made (its provider gave a time): the day's report's day
    if isinstance(payment.get("bank_at"), datetime):
        data["paymentBankTime"] = _iso(payment["bank_at"])
    if isinstance(payment.get("assigned_from_bank_at"), datetime):
        data["assignedFromBankTime"] = _iso(payment["assigned_from_bank_at"])
    subject = data.get("invoice") or "PaymentNotice/" + re.sub(r"[^A-Za-z0-9\-.]", "-", str(payment["_id"]))[:64]
    key = str(refund.get("_id") or payment["_id"])  # the refund link's: link 1's is the payment's
    return make_event(KIND, data, subject=subject, event_id=event_id(key), time=_iso(at), validate=False)


def with_event(refund: dict[str, Any], payment: Mapping[str, Any]) -> dict[str, Any]:
    """The refund claim's document with its event in its outbox (one insert)."""
    refund.setdefault("at", datetime.now(UTC))
    return new_document(refund, [event(refund, payment)])


def backfill(db: Database) -> dict[str, int]:
    """Announce each refund stored without its event (made before the event existed): a claim in
    :data:`BACKFILLED` keyed by the refund, its event in the outbox. Safe twice: the claim is made
    once, and the event's id is the refund's whoever sends it."""
    made = 0
    for refund in db[invoice_port.REFUNDS].find({"outbox": {"$exists": False}}):
        payment = db[invoice_port.PAYMENTS].find_one({"_id": str(refund.get("payment") or refund["_id"])},
                                                     {"outbox": 0})
        if payment is None or db[BACKFILLED].find_one({"_id": refund["_id"]}, {"_id": 1}) is not None:
            continue
        created, _ = claim_once(db[BACKFILLED], refund["_id"], new_document({}, [event(refund, payment)]))
        made += created
    return {"refund_events": made}


__all__ = ["BACKFILLED", "KIND", "backfill", "event", "event_id", "with_event"]
