"""Settling a paid invoice: one "balanced" link, one receipt number, one receipt, one event.

:func:`settle_invoice` runs after every payment that leaves nothing due:

0. it claims ``invoice_balanced/<invoice id>`` by insert (the settlement record: who settles,
   what they counted, ``done``): among any number of concurrent final payments exactly one
   wins, and only the winner goes on;
1. the winner advances the invoice's lifecycle chain (``invoice_port.STATES``) from ``issued``
   to ``balanced`` (from the issued link's number that the Invoice's document carries, else
   its reference record, without reading the chain first, when either has it). A cancel races
   for the same link: if the cancel won, the settlement is void (``done``, ``voided:
   cancelled``) and every payment gets a refund task;
2. a receipt number from the facility's series: a claims chain ``receipt:<facility>:<year>``
   in ``receipt_numbers`` whose link n IS receipt n (``advance`` after a link known to exist:
   the one this process, or another process of this machine, saw last, if recently, else the
   newest read; the processes of a machine take a series' numbers in turn; a writer that loses the
   race tries the number after the one refused, without reading its holder (see
   :func:`_claim_number`), so numbers have no gaps and are never given twice; no counter is
   ever updated). A unique index on (invoice, chain) gives an invoice one
   number however many writers settle it;
3. the PaymentReconciliation (FHIR, id ``pr-<invoice id>``: its create is the claim);
4. the Invoice's status ``balanced`` (a versioned write of the FHIR store: one writer wins);
5. the receipt document (``receipts``, keyed by the invoice id) carrying ``billing.invoice.paid``
   in its outbox, written by the same insert.

The settlement record's ``done`` is set by :func:`repair_settlements` (the worker's periodic
job) once the receipt is there, not by the request. Every step is an idempotent claim, so that
job can roll a crashed winner forward, in any number of worker replicas at once and while a slow
winner is still at it: two of them take one receipt number, one reconciliation, one receipt.
Receipts are shown (JSON, HTML, PDF by WeasyPrint) by :func:`receipt_view`: the stored receipt with
the Invoice's reference and lines (quantity, BHYT's share) and the refunds of its payments given
since, so a receipt printed after a refund shows the refund and the credit left.
"""

from __future__ import annotations

import fcntl
import hashlib
import html
import logging
import os
import struct
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from sen_shared.bus.events import make_event
from sen_shared.bus.outbox import new_document
from sen_shared.claims import CHAIN_SEQ, ClaimTaken, advance, claim_once, latest, link_id
from sen_shared.fhir.outcome import FhirError
from sen_shared.fhir.store import Store
from sen_shared.mongo import bulk_update, find_in
from sen_shared.pdf import FONT_FAMILY, html_to_pdf
from sen_shared.runtime import current

from . import credits, invoice_port, refund_links
from .invoice_port import STATES
from .invoices import SERVICE_EXT, service_of, vnd
from .payments import BALANCED, BANK_TIME, VN, assignments, iso, local_day, started_by
from .pricing import SERVICE_SYSTEM

log = logging.getLogger("sen.billing.receipts")

RECEIPTS = "receipts"
RECEIPT_NUMBERS = "receipt_numbers"


def settle_invoice(db: Database, invoice_id: str, *, channel: str, invoice: invoice_port.InvoiceView | None = None,
                   paid: int | None = None, counted: list[dict[str, Any]] | None = None,
                   payment: dict[str, Any] | None = None) -> bool:
    """Claim the invoice's settlement; True for the one caller that won (and settled it).
    ``invoice``, ``paid`` and ``counted`` (the payments): what the caller read already;
    ``payment``: the caller's own new payment (one the winner did not count is a late one)."""
    counted = invoice_port.counted_payments(db, invoice_id) if counted is None else counted
    paid = sum(int(p["amount"]) for p in counted) if paid is None else paid
    invoice = invoice if invoice is not None and invoice.id == invoice_id else invoice_port.get(db, invoice_id)
    if invoice is None:
        return False
    won, record = claim_once(db[BALANCED], invoice_id, {
        "facility": invoice.facility, "district": invoice.district, "paid": paid, "owed": invoice.owed,
        "channel": channel, "payments": [p["_id"] for p in counted], "done": False})
    if not won:
        if payment is not None and payment["_id"] not in (record.get("payments") or []):
            # the winner settled without it: money over what was owed, to give back
            invoice_port.refund_task(db, payment, invoice_id, "balanced")
        return False
    return _settle_claimed(db, invoice, record, fresh=True, counted=counted) is not None


def _balanced_link(db: Database, invoice_id: str, record: dict[str, Any],
                   issued_link: int | None = None) -> dict[str, Any] | None:
    """Step 1: the lifecycle chain's ``balanced`` link (won now or before), or None when a
    cancel won the chain (the settlement is then void and the payments go back).

    ``issued_link``: the number of the chain's ``issued`` link, as the Invoice's document gives it,
    else its reference record (``invoice_port.issued_link``: one point read). Only ``balanced`` or
    ``cancelled`` ever follows ``issued``, both as the next link, so the claim is made from it
    without reading the chain first; a lost claim's holder says what won."""
    known = {"state": "issued", CHAIN_SEQ: issued_link} if issued_link else None
    for _ in range(5):
        link, known = (known, None) if known is not None else (latest(db[STATES], invoice_id), None)
        if link is not None and link["state"] == "balanced":
            return link
        if link is not None and link["state"] == "cancelled":
            invoice_port.route_to_refunds(db, invoice_id, "cancelled")
            # written by the settlement's winner or the repair job, both the same values (see _settle)
            db[BALANCED].update_one({"_id": invoice_id}, {"$set": {"done": True, "voided": "cancelled"}})
            return None
        if link is not None and link["state"] != "issued":
            raise LookupError(f"invoice {invoice_id} is {link['state']}, not issued")
        # (no chain at all: an invoice stored as issued without one, as before the chains; it starts here)
        try:
            return advance(db[STATES], invoice_id, link, {"state": "balanced", "paid": record.get("paid"),
                                                         "owed": record.get("owed")})
        except ClaimTaken as taken:
            # a cancel, or a repairing worker: what won (its holder), else read the chain again
            if taken.holder is not None and taken.holder.get("state") in ("balanced", "cancelled"):
                known = taken.holder
            continue
    raise LookupError(f"invoice {invoice_id}: its lifecycle keeps changing")


def _settle_claimed(db: Database, invoice: invoice_port.InvoiceView, record: dict[str, Any], *, fresh: bool,
                    counted: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    # the winner claims the link after the issued one, whose number came with the Invoice (else the
    # reference record gives it: one point read, settling payments only); a repair reads the chain
    known = invoice_port.issued_link(db, invoice) if fresh else None
    if _balanced_link(db, invoice.id, record, known) is None:
        return None
    return _settle(db, invoice, record, fresh=fresh, counted=counted)


_newest_seen: dict[str, int] = {}  # "<database>/<chain>" -> the newest link number this process saw (a hint only)


def newest_link_number(coll: Collection, chain: str, start: int = 0) -> int:
    """The number of the newest link of ``chain`` (0: none), by ``_id`` look-ups only.

    ``claims.latest`` sorts the chain's links, which FerretDB does in its own code after
    fetching all of them: a receipt series grows by thousands a year. Links of a chain are
    contiguous (link n+1 is only ever claimed after link n), so a galloping search on the
    ``_id``s finds the newest in O(log n) point reads, and from this process's last answer
    (the hint) usually in one or two. ``start``: a link the caller believes exists (not known:
    it is checked as the hint is), when it is past the hint.
    """
    def exists(n: int) -> bool:
        return n == 0 or coll.find_one({"_id": link_id(chain, n)}, {"_id": 1}) is not None

    key = f"{coll.database.name}/{chain}"
    lo = max(_newest_seen.get(key, 0), start)
    if lo and exists(lo + 1):
        lo += 1  # another process took numbers since (links are contiguous: the hint exists too)
    elif lo and exists(lo):
        _newest_seen[key] = lo
        return lo  # the hint is the newest: two point reads
    else:  # no hint, or one from a wiped database: start over
        lo = 0
    step = 1
    hi = lo + step
    while exists(hi):
        lo, step = hi, step * 2
        hi = lo + step
    while hi - lo > 1:  # lo exists, hi does not
        mid = (lo + hi) // 2
        if exists(mid):
            lo = mid
        else:
            hi = mid
    _newest_seen[key] = lo
    return lo


HINT_TRUSTED_SECONDS = 10.0  # a link this process saw this recently is claimed after without a read first
_seen_at: dict[str, float] = {}  # "<database>/<chain>" -> when the hint was last confirmed (monotonic)
_chain_locks: dict[str, threading.Lock] = {}  # one claimer a chain in this process (efficiency, not safety)


def _remember(key: str, n: int) -> None:
    """Link ``n`` of the chain exists (this process claimed or read it): the hint moves up to it."""
    _newest_seen[key] = max(n, _newest_seen.get(key, 0))
    _seen_at[key] = time.monotonic()


def _receipt_number(db: Database, facility: str, invoice_id: str, year: int, *, fresh: bool) -> str:
    """The next number of the facility's series for this invoice (its own, if a crashed try took one)."""
    coll = db[RECEIPT_NUMBERS]
    chain = f"receipt:{facility}:{year}"
    mine = None if fresh else coll.find_one({"k": chain, "invoice": invoice_id})
    if mine is None:
        key = f"{coll.database.name}/{chain}"
        # the settlers of one process take the chain's numbers in turn: threads of one process
        # would otherwise claim the same next link and all but one pay a lost claim and a read;
        # and so do the processes of one machine (gunicorn's workers), through a file lock that
        # carries the newest link one of them claimed (:func:`_host_turn`). The numbers' safety
        # is the claims' (other machines race for the same links)
        with _chain_locks.setdefault(key, threading.Lock()), _host_turn(key, _server(db)):
            mine = _claim_number(coll, chain, key, invoice_id, facility, fresh=fresh)
    return f"{series_prefix(facility, configured_prefixes())}-{year}-{int(mine[CHAIN_SEQ]):06d}"


def configured_prefixes() -> Mapping[str, str]:
    """The facilities' configured receipt prefixes (``BillingSettings.receipt_prefixes``, checked unique) of
    the app serving this request: its settings, bound to it when it was made (``sen_shared.runtime``: the
    runtime in the app's extensions), so two billing apps in one process each print their own. Outside a
    request, the process's runtime (the worker installs its own); none configured where there is no billing
    runtime at all (a script). Every path to a settlement (a webhook, the cashier, an issue BHYT pays in
    full, an event, the repair job) numbers receipts here, none of them holds the settings."""
    try:
        settings = current().settings
    except RuntimeError:
        return {}
    return getattr(settings, "receipt_prefixes", None) or {}


def series_prefix(facility: str, prefixes: Mapping[str, str] | None = None) -> str:
    """What a facility's receipt numbers start with: its configured code (``prefixes``: the province file's
    ``receiptPrefix``), else its id, upper case, cut to 12 characters. Only what is printed: the series
    itself is the facility's (``receipt:<facility>:<year>``), so a code configured later goes on from the
    number reached (receipts made before keep theirs)."""
    return (prefixes or {}).get(facility) or facility.upper()[:12]


def prefix_clashes(facilities: Iterable[str], prefixes: Mapping[str, str] | None = None) -> list[list[str]]:
    """The groups of ``facilities`` whose receipts would print the same prefix (each sorted, two or more):
    their series are apart, their paper would not be. Billing refuses to start with one, and
    ``deploy/local/facility.py`` says it."""
    by_prefix: dict[str, set[str]] = {}
    for facility in facilities:
        by_prefix.setdefault(series_prefix(facility, prefixes), set()).add(facility)
    return [sorted(group) for _, group in sorted(by_prefix.items()) if len(group) > 1]


def clash_message(group: list[str], prefixes: Mapping[str, str] | None = None) -> str:
    """One clash said with both (all) facilities, the prefix and the way out."""
    both = "both" if len(group) == 2 else "all"
    return (f"the receipts of {' and '.join(group)} would {both} be numbered {series_prefix(group[0], prefixes)}"
            "-<year>-…: give each its own receiptPrefix (1 to 12 upper-case letters, digits or dashes)")


# The workers of one machine (gunicorn's, one per core) settle into the same series: each one's
# hint is behind by the numbers the others took since, and every number behind is a lost claim
# (a refused insert, FerretDB's costly error path) and, after two, reads of the chain. Measured
# on the webhook bench's load (two workers, 700 settlements of one facility, 17:35-17:37 UTC, two
# pairs in turn, load 9-15): 928 and 785 refused claims and 537 and 508 index reads of
# ``receipt_numbers`` for 700 numbers before; none of either after. So the processes of a
# machine take a series' numbers in turn too: an exclusive ``flock`` on a small file, which holds
# the newest link claimed or read under it and when (``_HOST_RECORD``). A series' file is one of
# :data:`HOST_FILES` (by a hash of the series: two series sharing one wait for each other and keep
# the hint of the last one only). Efficiency only, like the process lock: a process that cannot
# use the files (no writable temporary directory, a lock held longer than ``HOST_WAIT_SECONDS``)
# claims from its own hint as before, and the claims stay the safety. The kernel drops the lock
# of a process that dies holding it.
HOST_DIR = os.path.join(tempfile.gettempdir(), f"sen-series-{os.getuid()}")
HOST_FILES = 64
HOST_WAIT_SECONDS = 2.0
# the series (a digest of its key), its newest link number, when (epoch seconds), a check of all three
_HOST_RECORD = struct.Struct("<16sqdQ")
_HOST_CHECK = 0x5E45E21E5
_host_files: dict[tuple[int, int], int] = {}  # (pid, file number) -> open descriptor (never across a fork)
# one thread of this process at a file: a flock is held by the open file, not the thread, so two
# series sharing a file would otherwise take and drop each other's lock
_host_locks: dict[tuple[int, int], threading.Lock] = {}
_host_disabled: list[str] = []  # why the machine's files are not used in this process (logged once)


def _server(db: Database) -> str:
    """The database server, as this process's client knows it: another server's series of the same
    database name (a second stack on the machine) is another series here, never a hint for this one."""
    return ",".join(f"{host}:{port}" for host, port in sorted(db.client.nodes))


def _series_digest(key: str, server: str) -> bytes:
    return hashlib.sha256(f"{server}|{key}".encode()).digest()[:16]


def _host_file(number: int) -> int | None:
    """The descriptor of file ``number`` in :data:`HOST_DIR`, opened once per process (None: unusable)."""
    slot = (os.getpid(), number)
    fd = _host_files.get(slot)
    if fd is None and not _host_disabled:
        try:
            os.makedirs(HOST_DIR, mode=0o700, exist_ok=True)
            fd = os.open(os.path.join(HOST_DIR, f"{number:02d}"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as err:
            _host_disabled.append(str(err))
            log.warning("receipt series: no machine-wide turn, each process claims from its own hint",
                        extra={"error": str(err)})
            return None
        _host_files[slot] = fd
    return fd


def _check(digest: bytes, n: int, at: float) -> int:
    return (int.from_bytes(digest[:8], "little") ^ n ^ int(at * 1000) ^ _HOST_CHECK) & 0xFFFF_FFFF_FFFF_FFFF


@contextmanager
def _host_turn(key: str, server: str) -> Iterator[None]:
    """This process's turn at the series ``key`` of the database ``server`` among the processes of this
    machine: the newest link the last holder claimed or read becomes this process's hint (trusted as
    its own, for :data:`HINT_TRUSTED_SECONDS` from when it was written), and this process's newest
    goes back."""
    digest = _series_digest(key, server)
    number = int.from_bytes(digest[:4], "big") % HOST_FILES
    fd = _host_file(number)
    mine = _host_locks.setdefault((os.getpid(), number), threading.Lock())
    deadline = time.monotonic() + HOST_WAIT_SECONDS
    if fd is None or not server or not mine.acquire(timeout=HOST_WAIT_SECONDS):  # no server known: no turn
        yield
        return
    locked = False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break  # a holder stalled (its database call hangs?): claim from this process's hint
                time.sleep(0.0005)
            except OSError:
                break
        if locked:
            _load_host_hint(fd, key, digest)
        yield
        if locked:
            _store_host_hint(fd, key, digest)
    finally:
        if locked:
            fcntl.flock(fd, fcntl.LOCK_UN)
        mine.release()


def _load_host_hint(fd: int, key: str, digest: bytes) -> None:
    try:
        raw = os.pread(fd, _HOST_RECORD.size, 0)
    except OSError:
        return
    if len(raw) != _HOST_RECORD.size:
        return
    series, n, at, check = _HOST_RECORD.unpack(raw)
    age = time.time() - at
    if series != digest or n <= 0 or check != _check(digest, n, at) or not 0 <= age < HINT_TRUSTED_SECONDS:
        return  # another series' (sharing the file), torn, or old
    if n >= _newest_seen.get(key, 0):
        _newest_seen[key] = n
        _seen_at[key] = time.monotonic() - age


def _store_host_hint(fd: int, key: str, digest: bytes) -> None:
    n, seen = _newest_seen.get(key, 0), _seen_at.get(key)
    if n <= 0 or seen is None:
        return
    at = time.time() - max(0.0, time.monotonic() - seen)
    try:
        os.pwrite(fd, _HOST_RECORD.pack(digest, n, at, _check(digest, n, at)), 0)
    except OSError:
        pass


def _claim_number(coll: Collection, chain: str, key: str, invoice_id: str, facility: str, *,
                  fresh: bool = True) -> dict[str, Any]:
    """Claim the link after the newest of ``chain`` for ``invoice_id``: link n IS receipt n.

    Claimed from the hint first when this process confirmed that link within
    :data:`HINT_TRUSTED_SECONDS` (one insert, no read); the chain is read (galloping,
    :func:`newest_link_number`) only without a recent hint, or after two lost claims in a row.
    A lost claim is not followed by a read of its holder (two processes settling into one series
    at once lose 0.25-0.5 claims a settlement to each other: that read was ~1 of the ~3 reads a
    lost claim cost). Two unique indexes can refuse a claim of link n+1: its ``_id`` (link n+1
    exists: another invoice's, or this invoice's, taken by a repair) or (invoice, chain) (this
    invoice has its number already). So n+2 is tried next, which never leaves a gap: if this
    invoice had a number, the index refuses every claim of it (n+2 too), and a claim of n+2 that
    succeeds shows the invoice had none, so the refusal of n+1 was its ``_id``: link n+1 exists.
    The hint moves only to a link claimed or read. After two lost claims in a row the newest is
    read (from the last link refused, which is checked); after every fourth, this invoice's own
    number (a repair's, while this winner stalled). A repair (``fresh=False``), which races other
    repairs of the same invoice, reads this invoice's number after every lost claim. The one
    case a recent hint gets wrong is a database dropped and made again under the same name within
    those seconds while this process ran: its series would start after the old hint (a gap; never
    a number twice).
    """
    seen_at = _seen_at.get(key)
    recent = seen_at is not None and time.monotonic() - seen_at < HINT_TRUSTED_SECONDS
    last: int | None = _newest_seen.get(key, 0) if recent else None
    lost, probable = 0, 0  # probable: a link a lost claim was refused (most likely: it exists)
    while True:
        if last is None:
            last = newest_link_number(coll, chain, probable)
        try:
            mine = advance(coll, chain, {CHAIN_SEQ: last}, {"invoice": invoice_id, "facility": facility},
                           read_holder=False)
        except ClaimTaken:
            lost += 1
            if not fresh or lost % 4 == 0:  # this invoice's number already? the index refuses every other
                held = coll.find_one({"k": chain, "invoice": invoice_id})
                if held is not None:
                    _remember(key, int(held[CHAIN_SEQ]))
                    return held
            probable = max(probable, last + 1)
            last = last + 1 if lost < 2 else None  # far behind the others: read the newest
            continue
        _remember(key, int(mine[CHAIN_SEQ]))
        return mine


def complete_settlement(db: Database, invoice_id: str) -> dict[str, Any] | None:
    """Finish a claimed settlement (the repair job; idempotent): the receipt, whether it was there
    or not; None when a cancel had won the invoice (the payments then have refund tasks)."""
    balanced = db[BALANCED].find_one({"_id": invoice_id})
    invoice = invoice_port.get(db, invoice_id)
    if balanced is None or invoice is None:
        raise LookupError(f"invoice {invoice_id} is not being settled")
    done = db[RECEIPTS].find_one({"_id": invoice_id}, {"outbox": 0})
    if done is not None:
        db[BALANCED].update_one({"_id": invoice_id}, {"$set": {"done": True}})  # see the end of _settle
        return done
    return _settle_claimed(db, invoice, balanced, fresh=False)


def _settle(db: Database, invoice: invoice_port.InvoiceView, balanced: dict[str, Any], *,
            fresh: bool, counted: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Steps 2-5 for a claimed invoice whose ``balanced`` link is in: by the claim's winner
    (``fresh``) or repair jobs; each step is a claim, so any number of them make one of each."""
    invoice_id = invoice.id
    settled_at: datetime = balanced["at"]
    if settled_at.tzinfo is None:
        settled_at = settled_at.replace(tzinfo=UTC)
    facility = invoice.facility or "unknown"
    number = _receipt_number(db, facility, invoice_id, settled_at.astimezone(VN).year, fresh=fresh)
    # the payments read after the claim was won, or by the winner just before it: a payment
    # inserted later still counts toward the invoice (as credit), it is only not on the receipt
    if counted is None:  # a repair: the payments the winner counted (a later one is a late payment)
        ids = balanced.get("payments")
        counted = [p for p in invoice_port.counted_payments(db, invoice_id) if ids is None or p["_id"] in ids]
    payments = counted
    paid = sum(int(p["amount"]) for p in payments)
    channels = {p["channel"] for p in payments}
    # no payment at all: the patient owed nothing (BHYT pays the whole invoice, settled at issue)
    channel = channels.pop() if len(channels) == 1 else "mixed" if channels else "bhyt"
    reconciliation_id = f"pr-{invoice_id}"[:64]
    invoice_port.create_reconciliation(db, reconciliation_id, _reconciliation(
        invoice, number, paid, payments, settled_at), fresh=fresh)
    invoice_port.mark_balanced(db, invoice_id, invoice)
    data: dict[str, Any] = {"invoice": f"Invoice/{invoice_id}", "amount": paid, "currency": "VND",
                            "paidAt": iso(settled_at), "reconciliation": f"PaymentReconciliation/{reconciliation_id}"}
    if invoice.facility:
        data["facility"] = f"Organization/{invoice.facility}"
    if invoice.district:
        data["district"] = invoice.district
    if channel in ("transfer", "cash", "mixed", "bhyt"):
        data["channel"] = channel
    # validated against its schema in the tests (test_billing_webhooks), not on every settlement
    event = make_event("billing.invoice.paid", data, subject=f"Invoice/{invoice_id}", validate=False)
    receipt = {"number": number, "invoice": invoice_id, "facility": invoice.facility, "owed": invoice.owed,
               "paid": paid, "credit": max(0, paid - invoice.owed), "settled_at": settled_at,
               "day": local_day(settled_at), "reconciliation": reconciliation_id, "channel": channel,
               "payments": [{"id": p["_id"], "amount": int(p["amount"]), "channel": p["channel"],
                             "provider": p["provider"], "at": p["received_at"]} for p in payments],
               "lines": invoice.lines, "patient": invoice.patient_display, "invoice_title": invoice.title}
    if receipt["credit"] > 0:  # paid over what was owed: on the list of money to give back (credits.py)
        credits.note(db, invoice, receipt)
    _, held = claim_once(db[RECEIPTS], invoice_id, new_document(receipt, [event]))
    # ``done`` (and ``voided``) are the settlement record's only changing fields; their writers
    # (repair jobs, and the claim's winner when a cancel voids it) write the same values, only
    # ever False → True, so a lost update of one by another loses nothing. The record has no
    # outbox. ``voided`` is written only for an invoice whose chain went to cancelled, which never
    # gets a receipt, and ``done`` alone only once the receipt exists: the two never race on one
    # record. It lets the repair job find unfinished settlements by an equality. The request that
    # won the claim leaves it False: the job marks a settlement whose receipt is there as done
    # (one round trip less in the settling request; see repair_settlements).
    if not fresh:
        db[BALANCED].update_one({"_id": invoice_id}, {"$set": {"done": True}})
    return held


def _reconciliation(invoice: invoice_port.InvoiceView, number: str, paid: int, payments: list[dict[str, Any]],
                    settled_at: datetime) -> dict[str, Any]:
    pr: dict[str, Any] = {
        "resourceType": "PaymentReconciliation", "status": "active",
        "created": settled_at.astimezone(VN).isoformat(timespec="seconds"),
        "paymentDate": settled_at.astimezone(VN).date().isoformat(),
        "paymentAmount": {"value": paid, "currency": "VND"},
        "paymentIdentifier": {"system": "urn:sen:billing:receipt", "value": number},
        "outcome": "complete", "disposition": f"Hóa đơn đã thanh toán đủ; biên lai {number}",
        "detail": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/payment-type",
                                         "code": "payment"}]},
                    "identifier": {"system": "urn:sen:billing:payment", "value": p["_id"]},
                    "request": {"reference": f"Invoice/{invoice.id}"},
                    "date": p["received_at"].astimezone(VN).date().isoformat(),
                    "amount": {"value": int(p["amount"]), "currency": "VND"}} for p in payments],
    }
    if invoice.facility:
        pr["requestor"] = {"reference": f"Organization/{invoice.facility}"}
    return pr


def repair_settlements(db: Database, older_than: timedelta = timedelta(minutes=1)) -> int:
    """Finish settlements whose winner stopped half-way (the worker's periodic job); the number
    finished. Safe in several workers at once: each step is an idempotent claim (see the
    module's docstring). A settlement whose receipt is there (its winner finished: the request
    does not mark its record) is marked done, in commands of a few updates each."""
    cutoff = datetime.now(UTC) - older_than
    old = []
    for claim in db[BALANCED].find({"done": False}, {"_id": 1, "at": 1}):
        at = claim["at"] if claim["at"].tzinfo else claim["at"].replace(tzinfo=UTC)
        if at < cutoff:
            old.append(claim["_id"])
    finished = {r["_id"] for r in find_in(db[RECEIPTS], "_id", old, projection={"_id": 1})}
    # the same value as every other writer of ``done`` (see the end of _settle)
    bulk_update(db[BALANCED], (UpdateOne({"_id": iid}, {"$set": {"done": True}}) for iid in old if iid in finished))
    fixed = 0
    for invoice_id in old:
        if invoice_id not in finished:
            try:
                complete_settlement(db, invoice_id)
            except LookupError:  # one that cannot be finished does not hold up the others
                log.exception("settlement not repaired", extra={"invoice": invoice_id})
                continue
            fixed += 1
    return fixed


# ------------------------------------------------------------------------------- reading and rendering

CHANNELS = {"cash": "Tiền mặt", "transfer": "Chuyển khoản"}


def _component(line: dict[str, Any], code: str) -> int | None:
    for pc in line.get("priceComponent") or []:
        if any(c.get("code") == code for c in (pc.get("code") or {}).get("coding") or []):
            return int((pc.get("amount") or {}).get("value", 0))
    return None


def _service(line: dict[str, Any]) -> str | None:
    """The price list's service code the line names (``invoice-line-service``), for a reader to name it
    in its own language."""
    for ext in line.get("extension") or []:
        if ext.get("url") == SERVICE_EXT:
            for c in (ext.get("valueCodeableConcept") or {}).get("coding") or []:
                if c.get("system") == SERVICE_SYSTEM and c.get("code"):
                    return str(c["code"])
    return None


def printed_lines(db: Database, invoice: invoice_port.InvoiceView) -> list[dict[str, Any]]:
    """The invoice's lines as a receipt prints them: ``text``, ``service`` (the code, when the line
    has one), ``quantity`` and ``unitPrice`` (from its ChargeItem: the Invoice line has no quantity),
    ``amount`` (before BHYT), ``insurerShare`` (BHYT pays) and ``patientShare``. A few point reads
    of the ChargeItems, when the receipt is shown (never when it is made)."""
    store = Store(db, service="billing", emit_events=False)
    out = []
    for li, base in zip(invoice.resource.get("lineItem") or [], invoice.lines, strict=False):
        amount = next((int((pc.get("amount") or {}).get("value", 0)) for pc in li.get("priceComponent") or []
                       if pc.get("type") == "base"), int(base.get("patientShare") or 0))
        quantity, service = 1, _service(li)
        ref = str((li.get("chargeItemReference") or {}).get("reference") or "")
        if ref.startswith("ChargeItem/"):
            try:
                item = store.read_doc("ChargeItem", ref.split("/", 1)[1])["res"]
                quantity = max(1, int((item.get("quantity") or {}).get("value") or 1))
                # an invoice made before its lines carried the code: the charge's (copied from the price list)
                service = service or service_of(item)
            except (FhirError, TypeError, ValueError):
                quantity = 1  # a charge no longer readable: the line as one
        line = {"text": base.get("text") or "", "quantity": quantity, "unitPrice": amount // quantity,
                "amount": amount, "insurerShare": _component(li, "insurer-share") or 0,
                "patientShare": int(base.get("patientShare") or 0)}
        if service is not None:
            line["service"] = service
        out.append(line)
    return out


def _refund_line(r: dict[str, Any]) -> dict[str, Any]:
    """A refund as the receipt lists it; one another cashier started (``payments.refund``) also says who
    started it (``started_by``) and who finished it, handing the money over (``finished_by``), by name
    where their token gave one."""
    line = {"payment": r["_id"], "amount": int(r["amount"]), "at": r.get("at"),
            "channel": r.get("channel") or "cash", "reason": r.get("reason") or ""}
    started = started_by(r)
    if started is not None:
        line["started_by"] = started["cashierName"] or started["cashier"]
        line["finished_by"] = str(r.get("cashier_name") or r.get("cashier") or "")
    if r.get("after_settlement"):  # a paid invoice's payment given back: the receipt stands, the refund beside it
        line["after_settlement"] = True
        line["by"] = str(r.get("cashier_name") or r.get("cashier") or "")
    return line


def receipt_view(db: Database, receipt: dict[str, Any]) -> dict[str, Any]:
    """What a receipt shows, from the stored receipt (the payments it counted when the invoice was
    settled), the Invoice (its payment reference, its lines with quantity and BHYT's share) and the
    refunds given since of those payments: ``refunded`` and ``credit``, the credit LEFT (what was paid
    over what was owed, less what was given back)."""
    invoice = invoice_port.get(db, receipt["invoice"])
    ids = [p["id"] for p in receipt.get("payments") or []]
    # every refund of those payments: each payment's links (refund_links; several when given back in parts)
    given = refund_links.chains(db, ids, {"amount": 1, "at": 1, "channel": 1, "reason": 1, "cashier": 1,
                                          "cashier_name": 1, "started": 1, "after_settlement": 1}) if ids else {}
    refunds = sorted((r for links in given.values() for r in links), key=lambda r: (_aware(r.get("at")), str(r["_id"])))
    refunded = sum(int(r["amount"]) for r in refunds)
    # a transfer assigned from the unmatched queue: printed at the time the bank received it (the patient
    # paid then), not the assignment's, which the settlement stored
    came = assignments(db, receipt.get("payments") or [], names=False)
    paid = [{**p, "at": came[p["id"]][BANK_TIME], "assigned_at": p.get("at")} if BANK_TIME in came.get(p["id"], {})
            else p for p in receipt.get("payments") or []]
    view = {**receipt, "payments": sorted(paid, key=lambda p: _aware(p.get("at"))),
            "refunds": [_refund_line(r) for r in refunds],
            "refunded": refunded, "credit": max(0, int(receipt["paid"]) - int(receipt["owed"]) - refunded),
            "credit_at_settlement": int(receipt.get("credit") or 0)}
    if invoice is not None:
        view["reference"] = invoice.reference
        view["lines"] = printed_lines(db, invoice)
        view["patient"] = receipt.get("patient") or invoice.patient_display
        view["cancelled"] = invoice.status == "cancelled"  # one BHYT paid in full, cancelled since
        gross = (invoice.resource.get("totalGross") or {}).get("value")
        view["gross"] = int(gross) if gross is not None else sum(li["amount"] for li in view["lines"])
    else:  # the receipt alone (its lines as stored: what the patient paid for each)
        view["gross"] = sum(int(li.get("patientShare") or 0) for li in receipt.get("lines") or [])
    view["insurer"] = max(0, int(view["gross"]) - int(receipt["owed"]))
    return view


def _aware(at: Any) -> datetime:
    if not isinstance(at, datetime):
        return datetime.min.replace(tzinfo=UTC)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _money(amount: int) -> str:
    """``150.000 ₫`` with a non-breaking space: an amount never wraps between number and sign."""
    return vnd(amount).replace(" ", "\u00a0")


def _time(at: Any) -> str:
    return _aware(at).astimezone(VN).strftime("%d/%m/%Y %H:%M")


def _after(refund: dict[str, Any]) -> str:
    """A refund after payment on the printed receipt: said so, with its reason and who gave it back."""
    if not refund.get("after_settlement"):
        return ""
    esc = html.escape
    who = f"; thu ngân: {esc(str(refund['by']))}" if refund.get("by") else ""
    return f"<br><small>Đã hoàn sau thanh toán — lý do: {esc(str(refund.get('reason') or ''))}{who}</small>"


def receipt_html(receipt: dict[str, Any], facility_name: str | None = None) -> str:
    """The receipt as a page (:func:`receipt_view`'s answer), Vietnamese, as a hospital's biên lai
    reads: facility, number, the payment reference the patient saw, patient, time, the lines
    (service, quantity, unit price, amount, BHYT, patient), totals, the payments (time, channel,
    amount), refunds and the credit left. ``facility_name``: the facility's name (else its id)."""
    esc = html.escape
    settled = _aware(receipt["settled_at"])
    rows = []
    for n, li in enumerate(receipt.get("lines") or [], start=1):
        qty = int(li.get("quantity") or 1)
        amount = int(li.get("amount", li.get("patientShare", 0)) or 0)
        rows.append(
            f"<tr><td class=c>{n}</td><td>{esc(str(li.get('text', '')))}</td><td class=c>{qty}</td>"
            f"<td class=n>{_money(li.get('unitPrice', amount // max(qty, 1)))}</td><td class=n>{_money(amount)}</td>"
            f"<td class=n>{_money(li.get('insurerShare', 0))}</td><td class=n>{_money(li.get('patientShare', 0))}</td>"
            "</tr>")
    pays = "".join(
        f"<tr><td>{_time(p.get('at'))}</td><td>{CHANNELS.get(p.get('channel', ''), 'Chuyển khoản')}</td>"
        f"<td class=n>{_money(p['amount'])}</td></tr>" for p in receipt.get("payments") or [])
    refunds = "".join(
        f"<tr><td>{_time(r.get('at'))}</td><td>{CHANNELS.get(r.get('channel', ''), 'Tiền mặt')}{_after(r)}</td>"
        f"<td class=n>{_money(r['amount'])}</td></tr>" for r in receipt.get("refunds") or [])
    refund_table = (f"<h2>Đã hoàn trả người bệnh</h2><table class=pay><colgroup><col style=\"width:40%\">"
                    f"<col style=\"width:30%\"><col style=\"width:30%\"></colgroup><tr><th>Thời gian</th>"
                    f"<th>Hình thức</th><th class=n>Số tiền</th></tr>{refunds}</table>" if refunds else "")
    sums = [("Tổng chi phí", receipt.get("gross", receipt["owed"])), ("BHYT chi trả", receipt.get("insurer", 0)),
            ("Người bệnh phải trả", receipt["owed"]), ("Người bệnh đã trả", receipt["paid"])]
    if receipt.get("refunded"):
        sums.append(("Đã hoàn trả", receipt["refunded"]))
    if receipt.get("credit"):
        sums.append(("Tiền thừa còn lại (ghi có cho người bệnh)", receipt["credit"]))
    totals = "".join(f"<tr{' class=owed' if label == 'Người bệnh phải trả' else ''}><th>{label}</th>"
                     f"<td class=n>{_money(v)}</td></tr>" for label, v in sums)
    reference = receipt.get("reference")
    facts = [("Số biên lai", f"<b>{esc(receipt['number'])}</b>")]
    if reference:
        facts.append(("Mã tham chiếu", f"<b>{esc(reference)}</b>"))  # as the portal's pages name it
    if receipt.get("patient"):
        facts.append(("Người bệnh", esc(receipt["patient"])))
    facts.append(("Thời gian", f"{settled.astimezone(VN).strftime('%d/%m/%Y %H:%M')} (giờ Việt Nam)"))
    fact_rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
    return f"""<!doctype html>
<html lang="vi"><head><meta charset="utf-8"><title>Biên lai {esc(receipt['number'])}</title>
<style>
 body {{ font-family: {FONT_FAMILY}; font-size: 9.5pt; margin: 0; }}
 .facility {{ font-weight: bold; margin: 0; }}
 h1 {{ font-size: 15pt; text-align: center; margin: 10px 0 8px; }}
 h2 {{ font-size: 10.5pt; margin: 12px 0 4px; }}
 table {{ border-collapse: collapse; width: 100%; table-layout: fixed; }}
 td, th {{ padding: 3px 4px; text-align: left; vertical-align: top; overflow-wrap: anywhere; }}
 table.lines td, table.lines th, table.pay td, table.pay th {{ border: 1px solid #999; }}
 table.lines th, table.pay th {{ background: #eee; font-size: 8.5pt; }}
 .n {{ text-align: right; white-space: nowrap; overflow-wrap: normal; word-spacing: 0.1em; }}
 .c {{ text-align: center; }}
 table.facts th, table.sums th {{ font-weight: normal; color: #333; }}
 table.sums {{ width: 60%; margin-left: 40%; margin-top: 6px; }}
 table.sums tr.owed, table.sums tr.owed th {{ font-weight: bold; color: #000; }}
 table.sign {{ margin-top: 18px; }} table.sign td {{ text-align: center; font-weight: bold; height: 70px; }}
 table.sign i {{ font-weight: normal; font-size: 8.5pt; }}
 @page {{ size: A4; margin: 15mm; }}
</style></head>
<body>
<p class=facility>Cơ sở: {esc(facility_name or str(receipt.get('facility') or ''))}</p>
<h1>BIÊN LAI THU TIỀN{" (HÓA ĐƠN ĐÃ HỦY)" if receipt.get("cancelled") else ""}</h1>
<table class=facts><colgroup><col style="width:28%"><col></colgroup>{fact_rows}</table>
<h2>Dịch vụ</h2>
<table class=lines><colgroup><col style="width:5%"><col style="width:27%"><col style="width:6%">
<col style="width:15%"><col style="width:15%"><col style="width:15%"><col style="width:17%"></colgroup>
<tr><th class=c>STT</th><th>Dịch vụ</th><th class=c>SL</th><th class=n>Đơn giá</th><th class=n>Thành tiền</th>
<th class=n>BHYT trả</th><th class=n>Người bệnh trả</th></tr>{"".join(rows)}</table>
<table class=sums><colgroup><col style="width:60%"><col style="width:40%"></colgroup>{totals}</table>
<h2>Các lần thanh toán</h2>
<table class=pay><colgroup><col style="width:40%"><col style="width:30%"><col style="width:30%"></colgroup>
<tr><th>Thời gian</th><th>Hình thức</th><th class=n>Số tiền</th></tr>{pays}</table>
{refund_table}
<table class=sign><tr><td>Người nộp tiền<br><i>(Ký, ghi rõ họ tên)</i></td>
<td>Người thu tiền<br><i>(Ký, ghi rõ họ tên)</i></td></tr></table>
</body></html>
"""


def receipt_pdf(receipt: dict[str, Any], facility_name: str | None = None) -> bytes:
    """:func:`receipt_html` printed (A4) by Sen's one printing mechanism (:mod:`sen_shared.pdf`: its font
    with every Vietnamese letter, nothing fetched)."""
    return html_to_pdf(receipt_html(receipt, facility_name))
