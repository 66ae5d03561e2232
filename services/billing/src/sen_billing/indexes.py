"""The billing service's MongoDB indexes, declared as data; `python -m sen_billing.indexes` creates them."""

from __future__ import annotations

from typing import Any

from sen_shared import mongo, runs
from sen_shared.bus.outbox import OUTBOX_INDEXES, outbox_indexes
from sen_shared.claims import chain_indexes

INDEXES: list[mongo.Index] = [*OUTBOX_INDEXES]

# payments (domain/payments.py, receipts.py, shifts.py, reconciliation.py); unique keys are the _ids
INDEXES += [
    mongo.Index("payments", (("invoice", 1),)),
    mongo.Index("payments", (("late_invoice", 1),)),
    mongo.Index("payments", (("day", 1),)),
    # a transfer received on another day than its bank's (reconciliation.rows: the bank's day's report)
    mongo.Index("payments", (("bank_day", 1),)),
    mongo.Index("payments", (("shift", 1),)),
    # no index on ``matched`` or ``facility``: no query of payments filters on ``matched``, and the one on
    # ``facility`` (reconciliation.rows) also names the ``day`` or ``bank_day``, whose index serves it. Each
    # index of payments is written by every payment's insert and again by the relay's update that empties
    # its outbox (FerretDB rewrites the whole row, so PostgreSQL updates every index of the table)
    mongo.Index("refunds", (("day", 1),)),
    mongo.Index("refunds", (("shift", 1),)),
    mongo.Index("refunds", (("invoice", 1),)),  # an invoice's refunds (domain/status.py)
    mongo.Index("shift_late_refunds", (("shift", 1),)),  # a closed shift's refunds recorded after its close
    mongo.Index("refund_tasks", (("invoice", 1),)),
    # the list of money to give back (payments.refund_tasks): a facility's, or every one's, in (at, _id) order
    mongo.Index("refund_tasks", (("facility", 1), ("at", 1), ("_id", 1)), name="facility_at_id"),
    mongo.Index("refund_tasks", (("at", 1), ("_id", 1)), name="at_id"),
    mongo.Index("unmatched_waiting", (("at", 1), ("_id", 1)), name="at_id"),  # an admin's pages (every facility)
    # a cashier's pages: their facility's entries (an equality), in (at, _id) order
    mongo.Index("unmatched_waiting", (("facility", 1), ("at", 1), ("_id", 1)), name="facility_at_id"),
    mongo.Index("invoice_balanced", (("done", 1),)),
    # overpaid invoices' credits on the list of money to give back (credits.page), as the refund tasks
    mongo.Index("credits", (("facility", 1), ("at", 1), ("_id", 1)), name="facility_at_id"),
    mongo.Index("credits", (("at", 1), ("_id", 1)), name="at_id"),
    *chain_indexes("credit_givebacks"),
    # an invoice's reference record by invoice (support and tests look it up). Declaring it also
    # makes the collection exist at the index step, where the local FerretDB's tune
    # (deploy/local/infra.sh) indexes every collection's _id: made later, by the first issued
    # invoice, every payment's reference look-up scanned the whole table (a bench run: 2,020
    # sequential scans of 700 references, no index scan). MongoDB indexes _id itself.
    mongo.Index("invoice_references", (("invoice", 1),)),
    # one number per invoice in its series, however many writers settle it (receipts._receipt_number)
    mongo.Index("receipt_numbers", (("invoice", 1), ("k", 1)), unique=True, name="invoice_k_unique"),
    *chain_indexes("receipt_numbers"),
    *chain_indexes("shifts"),
    # a facility's shifts open at a time (shifts.open_during): those open now, and a day's closed ones
    mongo.Index("open_shifts", (("facility", 1),)),
    mongo.Index("shift_days", (("fd", 1),)),
    # a facility's transfers of a local day (shifts.day_transfers): payments by fd, and the backfill's
    # records of those recorded before payments carried it
    mongo.Index("payments", (("fd", 1),)),
    mongo.Index("transfer_days", (("fd", 1),)),
    *outbox_indexes(["payments", "receipts"]),
    *runs.INDEXES,  # the unmatched backfill's run chain (worker.backfill_unmatched_once)
]



# the FHIR store (fhir_server.py): its search equalities
SEARCHED = ("identifier", "patient", "subject", "beneficiary", "status", "issuer", "owner", "requestor",
            "performing-organization", "account", "url")


def _fhir_indexes() -> list[mongo.Index]:
    from sen_shared.fhir.indexes import fhir_indexes

    from .fhir_server import RESOURCE_TYPES

    return fhir_indexes(RESOURCE_TYPES, SEARCHED)


def _invoice_indexes() -> list[mongo.Index]:
    from sen_shared import idempotency_key

    from .domain import invoices

    return [*chain_indexes(invoices.STATES), *chain_indexes(invoices.QR_CODES),
            *chain_indexes(invoices.CHARGE_INVOICED),  # one chain of claims per ChargeItem (charge_claims.py)
            *chain_indexes(invoices.invoice_port.GIVEBACKS),  # reversals and the settle decision per invoice
            *outbox_indexes([invoices.STATES]), *idempotency_key.INDEXES]


INDEXES += [*_fhir_indexes(), *_invoice_indexes()]


# indexes an earlier version declared, dropped by the index step (each one is written by every insert into its
# collection and by every update of it; no query uses them now): (collection, index name)
RETIRED: list[tuple[str, str]] = [
    ("payments", "matched_1"),  # until 2026-12-07 (see above)
    ("payments", "facility_1"),  # until 2026-12-07 (see above)
]


def drop_retired(db: Any) -> str:
    """Drop the :data:`RETIRED` indexes that exist (idempotent; the version before serves without them too:
    none of its queries used them); what was dropped."""
    dropped = []
    for coll, name in RETIRED:
        if name in {ix["name"] for ix in db[coll].list_indexes()}:
            db[coll].drop_index(name)
            dropped.append(f"{coll}.{name}")
    return f"retired indexes dropped: {', '.join(dropped) or 'none'}"


def main() -> int:
    from sen_shared.entrypoints import run_indexes

    from .config import settings_from_env

    return run_indexes(settings_from_env, INDEXES, migrate=drop_retired)


if __name__ == "__main__":
    raise SystemExit(main())
