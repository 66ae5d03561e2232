"""Cashier shifts: open, take cash, close with expected against counted cash and transfers.

A cashier's shifts are one claims chain ``shift:<cashier>`` in ``shifts``: an ``open`` link,
then a ``closed`` link, then the next ``open`` link... Opening and closing append the next link
(``sen_shared.claims.advance``), so two tabs closing the same shift at once make one close and
one 409; nothing is ever updated.

Which of a facility's shifts were open at some time (a transfer's shifts on the daily report,
:func:`open_during`) is read from two small sets, never from the facility's whole history:

- ``open_shifts``: the shifts open now, ``{_id: shift, facility, opened_at, cashier_name, k, n}``
  (``k``/``n``: the chain and number of its open link). Claimed by the opener BEFORE its open
  link (an entry whose link lost its race is released at once; one a crash left without a link
  is skipped by readers, who check the link), removed after the close link by the closer, or by
  a reader who finds the close link there (a crash between the two): removals only, of a key
  never claimed again (shift ids are random), so two removers race harmlessly.
- ``shift_days``: one record per local day (Asia/Ho_Chi_Minh) a closed shift was open on,
  ``{_id: "<facility>|<day>|<shift>", fd: "<facility>|<day>", shift, opened_at, closed_at,
  cashier_name}``, inserted after the close link (by the closer, a reader's repair or the
  backfill: the same documents, a duplicate key is the record already there). A day's closed
  shifts are one equality on ``fd`` (FerretDB pushes top-level equalities down; a range on a
  time it evaluates itself over every document of the facility).

Shifts closed or opened before these records existed get them from :func:`backfill_days` (the
worker, once: ``worker.backfill_shift_days_once``).

A shift's expected transfers (:func:`expected_totals`, on the cashier's shift page and its close) are
read the same way, by the local days of the shift: each payment carries ``fd`` =
``<facility>|<day>`` (``payments.facility_day``, written in its own insert), and the transfers
recorded before it did have a record in ``transfer_days`` under the same key (:func:`backfill_transfer_days`,
the worker, once: ``worker.backfill_transfer_days_once``). So a shift reads its days' transfers,
never every transfer the facility ever had.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.database import Database
from pymongo.errors import BulkWriteError
from sen_shared.claims import CHAIN_KEY, CHAIN_SEQ, ClaimTaken, advance, claim_once, link_id, release
from sen_shared.errors import Conflict, SenError
from sen_shared.mongo import find_in

from .payments import PAYMENTS, REFUNDS, VN, facility_day, iso, local_day, now_utc

SHIFTS = "shifts"
OPEN_SHIFTS = "open_shifts"  # the shifts open now (see the module's docstring)
SHIFT_DAYS = "shift_days"  # a closed shift's record for each local day it was open on
TRANSFER_DAYS = "transfer_days"  # the day key of a transfer recorded before payments carried one (fd)


class ShiftError(SenError):
    status = 409
    title = "Conflict"


def _chain(principal: Any) -> str:
    return f"shift:{principal.sub}"


def latest(coll: Any, chain: str) -> dict[str, Any] | None:
    """The newest link of a cashier's chain by point reads (``receipts.newest_link_number``), not a
    sort over every shift the cashier ever had."""
    from .receipts import newest_link_number

    n = newest_link_number(coll, chain)
    return coll.find_one({"_id": link_id(chain, n)}) if n else None


def _name(principal: Any) -> str:
    """The cashier's name as their token gives it (the ``name`` claim), kept on the shift: the day's
    report and the shift's summary name the cashier, not the token's subject."""
    return str(getattr(principal, "name", None) or "")[:200]


def opened(db: Database, shift_ids: set[str]) -> dict[str, dict[str, Any]]:
    """Each shift's open link by its id (one equality each on the top-level ``shift``): when it was
    opened and by whom (``cashier_name``; older shifts: none)."""
    out: dict[str, dict[str, Any]] = {}
    for sid in shift_ids:
        link = db[SHIFTS].find_one({"shift": sid, "state": "open"}, {"opened_at": 1, "cashier": 1, "cashier_name": 1})
        if link is not None:
            out[sid] = link
    return out


def cashier_names(db: Database, subs: set[str]) -> dict[str, str]:
    """The name each cashier's newest shift link gave (``cashier``: their token's subject; point reads
    of their chain), for the rows that name a cashier but no shift (a refund by transfer)."""
    out: dict[str, str] = {}
    for sub in subs:
        link = latest(db[SHIFTS], f"shift:{sub}")
        if link is not None and link.get("cashier_name"):
            out[sub] = str(link["cashier_name"])
    return out


def current(db: Database, principal: Any) -> dict[str, Any] | None:
    """The cashier's open shift link, or None."""
    link = latest(db[SHIFTS], _chain(principal))
    return link if link is not None and link.get("state") == "open" else None


def open_shift(db: Database, principal: Any, opening_cash: int = 0) -> dict[str, Any]:
    if not principal.facility:  # whose drawer, account and daily report: an admin of none opens none
        raise SenError("a shift belongs to a facility (its cash drawer, its bank account, its daily report) and "
                       "this account names none: the facility's cashier opens it", status=403, title="Forbidden")
    chain = _chain(principal)
    last = latest(db[SHIFTS], chain)
    if last is not None and last.get("state") == "open":
        raise ShiftError("a shift is open already; close it first", shift=public(last))
    shift, now = uuid.uuid4().hex[:16], now_utc()
    # the open-shift entry first: an open shift is never missing from the set
    claim_once(db[OPEN_SHIFTS], shift, {"facility": principal.facility, "opened_at": now,
                                        "cashier_name": _name(principal), "k": chain,
                                        "n": (int(last[CHAIN_SEQ]) if last is not None else 0) + 1})
    try:
        link = advance(db[SHIFTS], chain, last, {
            "state": "open", "shift": shift, "cashier": principal.sub,
            "cashier_name": _name(principal), "facility": principal.facility, "opened_at": now,
            "opening_cash": int(opening_cash)})
    except ClaimTaken:
        release(db[OPEN_SHIFTS], shift)  # its only remover: the shift never opened
        raise ShiftError("the shift changed meanwhile (another tab?); reload") from None
    return public(link)


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def shift_transfer(payment: dict[str, Any]) -> bool:
    """A transfer a shift counts (webhook transfers have no cashier): money that reached the facility's
    account while it was open, as the bank statement shows it. One to an invoice of the shift's facility,
    counted toward it or late (it came after the invoice was paid or cancelled: the money reached the
    bank all the same, and its refund is a refund of that shift or a later one), and one that named no
    invoice, in the facility's unmatched queue (:func:`transfer_facility`), when it came. Never an
    assignment of such a transfer to an invoice (``assign:<transfer>``, made later, perhaps in another
    shift): no money reaches the bank then; it was counted when it came (review 12: a transfer that came
    before the shift, assigned in it, was expected on the shift's statement)."""
    if payment.get("channel") != "transfer" or payment.get("assigned_from") \
            or str(payment.get("_id") or "").startswith("assign:"):
        return False
    return bool(transfer_facility(payment))


def transfer_facility(payment: dict[str, Any]) -> str:
    """Whose account a transfer reached, for the shifts: its invoice's facility (counted or late), else the
    facility of the unmatched queue it waits in (``queue_facility``, the receiving account's); "" for
    none (an account no facility owns, or a transfer recorded before payments carried their queue)."""
    if payment.get("invoice") or payment.get("late_invoice"):
        return str(payment.get("facility") or "")
    if payment.get("outcome") == "unmatched":
        return str(payment.get("queue_facility") or "")
    return ""


def local_days(first: datetime, last: datetime) -> list[str]:
    """The local (Asia/Ho_Chi_Minh) days from ``first``'s to ``last``'s, both included, ISO."""
    day, end = _aware(first).astimezone(VN).date(), _aware(last).astimezone(VN).date()
    out = []
    while day <= end:
        out.append(day.isoformat())
        day += timedelta(days=1)
    return out


def _day_key(facility: str, day: str) -> str:
    return facility_day(facility, day)


def record_days(db: Database, closed: dict[str, Any]) -> int:
    """A closed link's ``shift_days`` records, one per local day the shift was open on (idempotent:
    a record already there is the same document); how many were new."""
    facility = closed.get("facility")
    if not facility:
        return 0  # a shift of no facility is on no facility's report
    return _insert_new(db[SHIFT_DAYS], [
        {"_id": f"{_day_key(facility, day)}|{closed['shift']}", "fd": _day_key(facility, day),
         "shift": closed["shift"], "opened_at": closed["opened_at"], "closed_at": closed["closed_at"],
         "cashier_name": str(closed.get("cashier_name") or "")}
        for day in local_days(closed["opened_at"], closed["closed_at"])])


def _insert_new(coll: Any, docs: list[dict[str, Any]]) -> int:
    """Insert records keyed by what they record (a duplicate key: the same record, there already);
    how many were new."""
    if not docs:
        return 0
    try:
        return len(coll.insert_many(docs, ordered=False).inserted_ids)
    except BulkWriteError as err:
        errors = err.details.get("writeErrors") or []
        if any(e.get("code") != 11000 for e in errors):
            raise
        return len(docs) - len(errors)


def _finish_close(db: Database, closed: dict[str, Any]) -> None:
    """After a close link: its day records, the money recorded meanwhile that it did not count
    (:func:`_report_missed`, after the day records: a record made after them finds the close by them),
    then the shift out of the open set (the closer; or a reader finding the close link there after a
    crash: same records, same claims, same removal)."""
    record_days(db, closed)
    _report_missed(db, closed)
    release(db[OPEN_SHIFTS], closed["shift"])


def open_during(db: Database, facility: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """The facility's shifts open at some time in ``[start, end]``, each ``{shift, opened_at,
    closed_at (None: open still), cashier_name}``, oldest first. Reads the shifts open now (one
    equality on ``facility``, then their open and next links by ``_id``) and the closed shifts'
    records of each local day of the range (one equality on ``fd`` a day): what it reads grows
    with the range's shifts and the shifts open now, never with the facility's history."""
    start, end = _aware(start), _aware(end)
    now_open = list(db[OPEN_SHIFTS].find({"facility": facility}))  # before the days: a close meanwhile shows there
    found: dict[str, dict[str, Any]] = {}
    for day in local_days(start, end):
        for r in db[SHIFT_DAYS].find({"fd": _day_key(facility, day)}):
            found[r["shift"]] = {"shift": r["shift"], "opened_at": _aware(r["opened_at"]),
                                 "closed_at": _aware(r["closed_at"]), "cashier_name": str(r.get("cashier_name") or "")}
    entries = [e for e in now_open if e["_id"] not in found]
    ids = [link_id(e["k"], int(e["n"]) + step) for e in entries for step in (0, 1)]
    links = {link["_id"]: link for link in find_in(db[SHIFTS], "_id", ids)} if ids else {}
    for e in entries:
        opened = links.get(link_id(e["k"], int(e["n"])))
        if opened is None or opened.get("shift") != e["_id"]:
            if opened is not None:  # another open link won that place: this shift never opened
                release(db[OPEN_SHIFTS], e["_id"])
            continue  # (no link: an open in flight, or one a crash stopped before its link)
        following = links.get(link_id(e["k"], int(e["n"]) + 1))
        closed_at = None
        if following is not None and following.get("state") == "closed" and following.get("shift") == e["_id"]:
            _finish_close(db, following)  # closed, and a crash left it in the open set: finished here
            closed_at = _aware(following["closed_at"])
        found[e["_id"]] = {"shift": e["_id"], "opened_at": _aware(opened["opened_at"]), "closed_at": closed_at,
                           "cashier_name": str(opened.get("cashier_name") or "")}
    return sorted((s for s in found.values() if s["opened_at"] <= end and (s["closed_at"] is None
                                                                          or s["closed_at"] >= start)),
                  key=lambda s: s["opened_at"])


def closed_on(db: Database, facility: str, day: str) -> list[dict[str, Any]]:
    """The facility's shifts closed on the local ``day`` (Asia/Ho_Chi_Minh), each its ``closed`` link (who
    opened and closed it and when, opening cash, expected, counted, difference, note), oldest close
    first: the day's ``shift_days`` records (one equality on ``fd``), then each closed one's link (one
    equality each on the top-level ``shift``, as :func:`opened` reads the open links)."""
    found = []
    for r in db[SHIFT_DAYS].find({"fd": _day_key(facility, day)}):
        if local_day(_aware(r["closed_at"])) != day:
            continue  # open that day, closed on a later one: on that day's report
        link = db[SHIFTS].find_one({"shift": r["shift"], "state": "closed"})
        if link is not None:
            found.append(link)
    return sorted(found, key=lambda link: _aware(link["closed_at"]))


def backfill_days(db: Database) -> dict[str, int]:
    """The day records of the shifts closed before they existed, and the open set's entries of the
    shifts open then (the worker, once; idempotent, safe twice at once). An open link gets its
    entry when its next link is not there; a close landing between that look and the entry leaves
    it in the open set, where :func:`open_during` finds the close link and finishes it."""
    days = entries = 0
    for link in db[SHIFTS].find({"state": "closed"}):
        days += record_days(db, link)
    for link in db[SHIFTS].find({"state": "open"}):
        if not link.get("facility") or db[SHIFTS].find_one({"_id": link_id(link[CHAIN_KEY], int(link[CHAIN_SEQ]) + 1)},
                                                            {"_id": 1}) is not None:
            continue
        made, _ = claim_once(db[OPEN_SHIFTS], link["shift"], {
            "facility": link["facility"], "opened_at": link["opened_at"],
            "cashier_name": str(link.get("cashier_name") or ""), "k": link[CHAIN_KEY], "n": int(link[CHAIN_SEQ])})
        entries += int(made)
    return {"days": days, "open": entries}


def counts_at(opened_at: datetime, closed_at: datetime | None, at: datetime, handed_over: bool) -> bool:
    """Whether a shift open from ``opened_at`` to ``closed_at`` (None: open still) counts money of the
    instant ``at``. Its close's instant is its own (the close read the money up to it, so a transfer
    recorded before the close in the same millisecond is counted by it), and so is its opening's, unless
    another shift of the facility closed at that very instant (``handed_over``): that instant is the
    closing shift's, so each instant of a hand-over counts in one shift, not in both."""
    opened_at, at = _aware(opened_at), _aware(at)
    started = opened_at < at or (opened_at == at and not handed_over)
    return started and (closed_at is None or at <= _aware(closed_at))


def _handed_over(shift_id: str, opened_at: datetime, closers: dict[str, datetime]) -> bool:
    """Whether a shift other than ``shift_id`` closed at ``opened_at`` (``closers``: shift -> its close)."""
    opened_at = _aware(opened_at)
    return any(at == opened_at for sid, at in closers.items() if sid != shift_id)


def covering(shifts: list[dict[str, Any]], at: datetime) -> list[dict[str, Any]]:
    """Of :func:`open_during`'s shifts, those open at ``at`` (the ones a transfer then counts under,
    :func:`counts_at`: a shift opened at the instant another of the facility closed starts after it)."""
    closers = {s["shift"]: _aware(s["closed_at"]) for s in shifts if s["closed_at"] is not None}
    return [s for s in shifts if counts_at(s["opened_at"], s["closed_at"], at,
                                           _handed_over(s["shift"], s["opened_at"], closers))]


def handed_over_at_open(db: Database, shift: dict[str, Any]) -> bool:
    """Whether another shift of ``shift``'s facility closed at the very instant it opened (its day
    records of that local day, one equality on ``fd``; a close writes them right after its link)."""
    facility, opened_at = shift.get("facility"), _aware(shift["opened_at"])
    if not facility:
        return False
    return any(r["shift"] != shift["shift"] and _aware(r["closed_at"]) == opened_at
               for r in db[SHIFT_DAYS].find({"fd": _day_key(facility, local_day(opened_at))},
                                             {"shift": 1, "closed_at": 1}))


_TRANSFER_FIELDS = ("amount", "received_at", "invoice", "late_invoice", "channel", "facility", "outcome",
                    "queue_facility", "assigned_from")


def day_transfers(db: Database, facility: str, days: list[str]) -> list[dict[str, Any]]:
    """The facility's transfers received on these local days that a shift counts (:func:`shift_transfer`),
    each ``{_id, amount, received_at, ...}``: per day, the payments by their ``fd`` (written with each
    payment since 2026-12-05) and the backfill's records of the payments recorded before
    (``transfer_days``, the same key), two equalities a day. What it reads grows with those days'
    transfers, never with the facility's history."""
    projection = dict.fromkeys(_TRANSFER_FIELDS, 1)
    found: dict[str, dict[str, Any]] = {}
    for day in days:
        key = _day_key(facility, day)
        for p in db[PAYMENTS].find({"fd": key, "channel": "transfer"}, projection):
            found[p["_id"]] = p
        for p in db[TRANSFER_DAYS].find({"fd": key}, projection):
            found.setdefault(p["_id"], p)
    return [p for p in found.values() if shift_transfer(p)]


def sent_back_from(refund: dict[str, Any]) -> str:
    """Whose account a refund sent money back from, for the shifts: a refund by transfer (``channel``
    ``transfer``, the way the money went back) leaves the account of its record's facility (the refunded
    payment's, or the unmatched queue's that held it); "" for a refund in cash, which leaves the drawer of
    the shift it names (read by ``shift``), or one of no facility."""
    return str(refund.get("facility") or "") if refund.get("channel") == "transfer" else ""


_REFUND_FIELDS = ("amount", "at", "channel", "facility")


def day_transfer_refunds(db: Database, facility: str, days: list[str]) -> list[dict[str, Any]]:
    """The facility's refunds by transfer recorded on these local days (:func:`sent_back_from`), each
    ``{_id, amount, at, ...}``: per day one read of the day's refunds of the facility (``day`` and
    ``facility`` equalities, as the daily report reads a day's refunds), the transfers among them kept."""
    projection = dict.fromkeys(_REFUND_FIELDS, 1)
    found: dict[str, dict[str, Any]] = {}
    for day in days:
        for r in db[REFUNDS].find({"day": day, "facility": facility, "channel": "transfer"}, projection):
            found[r["_id"]] = r
    return [r for r in found.values() if sent_back_from(r) == facility]


def expected_totals(db: Database, shift: dict[str, Any], until: datetime) -> dict[str, int]:
    """What the drawer and the bank should show for a shift: cash taken by this cashier in it
    (less cash refunds: one equality on ``shift`` each), and the transfers to the facility's invoices
    while it was open (:func:`shift_transfer`: counted or late; the daily report names the same shifts
    on their rows), less the money the facility's account sent back by transfer meanwhile (a refund by
    transfer, :func:`sent_back_from`, whoever gave it back: the statement shows it whoever did; the daily
    report names the same shifts on its refund rows), read from the local days from its opening to
    ``until`` only (:func:`day_transfers`, :func:`day_transfer_refunds`), never from all the facility's
    payments. ``transfers`` is the net (``transfersReceived`` less ``transfersRefunded``), as ``cash`` is."""
    return _expected(db, shift, until)[0]


def _expected(db: Database, shift: dict[str, Any], until: datetime) -> tuple[dict[str, int], dict[str, list[str]]]:
    """:func:`expected_totals`, and the ids of the records it counted, under the closed link's field of
    each kind (:data:`COUNTED`)."""
    found = _money_of(db, shift, until)
    cash_in = sum(int(p["amount"]) for p in found[TAKEN])
    cash_out = sum(int(r["amount"]) for r in found[REFUND] if r.get("shift"))
    transfers_in = sum(int(p["amount"]) for p in found[RECEIVED])
    transfers_out = sum(int(r["amount"]) for r in found[REFUND] if not r.get("shift"))
    return ({"cash": int(shift.get("opening_cash", 0)) + cash_in - cash_out, "cashTaken": cash_in,
             "cashRefunded": cash_out, "transfers": transfers_in - transfers_out, "transfersReceived": transfers_in,
             "transfersRefunded": transfers_out},
            {COUNTED[kind]: sorted(str(r["_id"]) for r in records) for kind, records in found.items()})


def _money_of(db: Database, shift: dict[str, Any], until: datetime) -> dict[str, list[dict[str, Any]]]:
    """The money records a shift counts up to ``until``, by kind: cash taken in it (payments naming it, one
    equality on ``shift``), transfers to its facility's account while it was open (:func:`day_transfers`),
    and refunds (:func:`_refunds_of`: a cash one carries the shift it names, one by transfer none)."""
    taken = list(db[PAYMENTS].find({"shift": shift["shift"]}, {"amount": 1, "received_at": 1}))
    opened, until = _aware(shift["opened_at"]), _aware(until)
    handed = bool(shift.get("facility")) and opened <= until and handed_over_at_open(db, shift)
    cash_refunds, transfer_refunds = _refunds_of(db, shift, until, handed)
    received: list[dict[str, Any]] = []
    if shift.get("facility") and opened <= until:
        received = [p for p in day_transfers(db, shift["facility"], local_days(opened, until))
                    if counts_at(opened, until, p["received_at"], handed)]
    return {TAKEN: taken, RECEIVED: received,
            REFUND: [{**r, "shift": shift["shift"]} for r in cash_refunds] + [{**r, "shift": None}
                                                                             for r in transfer_refunds]}


def _refunds_of(db: Database, shift: dict[str, Any], until: datetime,
                handed: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The refunds a shift counts up to ``until``: in cash from its drawer (those naming it, one equality on
    ``shift``), and by transfer from its facility's account while it was open (:func:`day_transfer_refunds`;
    ``handed``: another shift closed at its opening's instant, :func:`counts_at`)."""
    cash = list(db[REFUNDS].find({"shift": shift["shift"]}, {"amount": 1, "at": 1}))
    opened, until = _aware(shift["opened_at"]), _aware(until)
    transfers: list[dict[str, Any]] = []
    if shift.get("facility") and opened <= until:
        transfers = [r for r in day_transfer_refunds(db, shift["facility"], local_days(opened, until))
                     if counts_at(opened, until, r["at"], handed)]
    return cash, transfers


# ------------------------------------------------------------------ money recorded after a close
#
# A close reads the shift's money (cash taken, transfers received, refunds), then appends its link; a record
# is made at any moment between. One recorded after the close's read that the shift counts (cash taken or a
# cash refund naming it, read as its shift was still open; a transfer received, or a refund by transfer, of
# its facility's account whose time is within the shift: a webhook takes its time before its insert) is in
# no shift's figures: the next shift opened after it. Each side checks after its own write, so at least one
# sees the other: the close's link keeps the ids of the records it counted (:data:`COUNTED`), and after its
# link and its day records (:func:`_finish_close`) it reads the shift's money again; a record, after its
# insert, reads the closed shifts that count it (:func:`after_refund`, :func:`after_money_in`: the shift it
# names by one point read; by its facility's account, the day records of its time, which a close writes
# before its second read, one equality on ``fd``). A record the close did not count is then recorded once,
# by a claim under ``<shift>|<key>`` (whichever side sees it first; the other's insert is the same record),
# and the closed shift shows it apart (``recordedAfterClose``), its figures as counted left as they were.

LATE = "shift_late_refunds"  # {_id: "<shift>|<key>", shift, kind, refund | payment, amount, channel, at}
LATE_REFUNDS = LATE  # its name from when refunds were the only money recorded after a close

REFUND, RECEIVED, TAKEN = "refund", "transfer", "cash"  # the kinds of money a close counts
COUNTED = {REFUND: "counted_refunds", RECEIVED: "counted_transfers", TAKEN: "counted_cash"}  # on a closed link


def _late(db: Database, link: dict[str, Any], kind: str, record: dict[str, Any]) -> None:
    """Claim ``record`` as recorded after ``link``'s close: a refund under ``<shift>|<refund>`` (as since
    refunds were claimed), a payment under ``<shift>|<kind>:<payment>``."""
    rid = str(record["_id"])
    if kind == REFUND:
        key, doc = rid, {"refund": rid, "channel": "cash" if record.get("shift") else "transfer",
                         "at": record.get("at")}
    else:
        key, doc = f"{kind}:{rid}", {"payment": rid, "channel": kind, "at": record.get("received_at")}
    claim_once(db[LATE], f"{link['shift']}|{key}", {"shift": link["shift"], "kind": kind,
                                                      "amount": int(record["amount"]), **doc})


def _report_missed(db: Database, link: dict[str, Any]) -> None:
    """After a close's link and day records: the money the shift counts up to its close that its close did
    not read, of each kind its link lists (a close from before a kind was listed is left alone)."""
    if not any(field in link for field in COUNTED.values()):
        return
    for kind, records in _money_of(db, link, link["closed_at"]).items():
        if COUNTED[kind] in link:
            counted = set(link[COUNTED[kind]])
            for r in records:
                if str(r["_id"]) not in counted:
                    _late(db, link, kind, r)


def _closed_link(db: Database, shift_id: str) -> dict[str, Any] | None:
    return db[SHIFTS].find_one({"shift": shift_id, "state": "closed"})


def _closed_covering(db: Database, facility: str, at: datetime) -> list[dict[str, Any]]:
    """The closed links of ``facility``'s shifts open at ``at``: the day records of its local day (one
    equality on ``fd``; a close writes them before reading its money again), then the links of those
    covering it (point reads; none unless a shift closed after ``at``)."""
    at = _aware(at)
    records = list(db[SHIFT_DAYS].find({"fd": _day_key(facility, local_day(at))}))
    return [link for sid in _covering_ids(records, at) if (link := _closed_link(db, sid)) is not None]


def _covering_ids(records: list[dict[str, Any]], at: datetime) -> list[str]:
    """Of one day's ``shift_days`` records of a facility, the shifts that count the instant ``at``."""
    closers = {r["shift"]: _aware(r["closed_at"]) for r in records}
    return [r["shift"] for r in records if counts_at(r["opened_at"], r["closed_at"], at,
                                                     _handed_over(r["shift"], r["opened_at"], closers))]


def _after_record(db: Database, kind: str, record: dict[str, Any], links: list[dict[str, Any]]) -> None:
    for link in links:
        field = COUNTED[kind]
        if field in link and str(record["_id"]) not in link[field]:
            _late(db, link, kind, record)


def after_refund(db: Database, refund: dict[str, Any]) -> None:
    """After a refund's record (``payments.refund``): each closed shift that counts it (a cash refund: the
    shift it names; by transfer: its facility's shifts open at its time) whose close did not (not in the
    link's ``counted_refunds``) gets it as recorded after the close."""
    links = []
    if refund.get("shift") and (link := _closed_link(db, refund["shift"])) is not None:
        links.append(link)
    facility = sent_back_from(refund)
    if facility and isinstance(refund.get("at"), datetime):
        links += _closed_covering(db, facility, refund["at"])
    _after_record(db, REFUND, refund, links)


def after_money_in(db: Database, payment: dict[str, Any]) -> None:
    """After a payment's insert: cash taken in a shift closed meanwhile (one point read), or a transfer a
    shift counts (:func:`shift_transfer`) received while a shift of its facility that has closed since was
    open (one equality on the day records of its time: the webhook's one read more), that the close did not
    count, is recorded after the close."""
    if payment.get("channel") == "cash" and payment.get("shift"):
        link = _closed_link(db, payment["shift"])
        _after_record(db, TAKEN, payment, [link] if link is not None else [])
    elif shift_transfer(payment) and isinstance(payment.get("received_at"), datetime):
        _after_record(db, RECEIVED, payment, _closed_covering(db, transfer_facility(payment), payment["received_at"]))


REPAIR_DAYS = 2  # the local days :func:`repair_missed` reads: today's and yesterday's records


def repair_missed(db: Database, now: datetime | None = None, days: int = REPAIR_DAYS) -> int:
    """The check a record makes after its insert (:func:`after_money_in`, :func:`after_refund`), made again for
    the payments and refunds of the last ``days`` local days (the worker's periodic ``shift-missed`` job): a
    record whose request stopped between its insert and its check (a crash; a provider's retry finds the
    payment there and does not check, :func:`payments.record_transfer`), timed in a shift whose close had
    already read the money, is in no close's ids and no record of :data:`LATE`; here it is claimed there, as
    the check would have. The retry cannot tell cheaply whether the first call checked: a partial payment's
    first call writes nothing after its check, so a marker would be a write more on every transfer, and
    checking on every retry a read more on each. Reads per day: the day's payments and refunds (one equality
    on ``day`` each), the day records of each facility and day their times fall on (one equality on ``fd``),
    each closed shift found by its link and its records in :data:`LATE` (one equality on ``shift``); writes
    only the claims of what no close counted (none when nothing was missed). Claims by insert: safe in any
    number of worker replicas at once, and against a record's own check. How many were claimed."""
    today = _aware(now or now_utc()).astimezone(VN).date()
    wanted = [(today - timedelta(days=k)).isoformat() for k in range(max(1, int(days)))]
    day_records: dict[str, list[dict[str, Any]]] = {}
    links: dict[str, dict[str, Any] | None] = {}
    known: dict[str, set[str]] = {}

    def closed(sid: str) -> dict[str, Any] | None:
        if sid not in links:
            links[sid] = _closed_link(db, sid)
            known[sid] = {str(r["_id"]) for r in db[LATE].find({"shift": sid}, {"_id": 1})} if links[sid] else set()
        return links[sid]

    def covering_links(facility: str, at: datetime) -> list[dict[str, Any]]:
        if not facility or not isinstance(at, datetime):
            return []
        fd = _day_key(facility, local_day(_aware(at)))
        if fd not in day_records:
            day_records[fd] = list(db[SHIFT_DAYS].find({"fd": fd}))
        return [link for sid in _covering_ids(day_records[fd], _aware(at)) if (link := closed(sid)) is not None]

    def claim(kind: str, record: dict[str, Any], found: list[dict[str, Any]]) -> int:
        made = 0
        for link in found:
            key = f"{link['shift']}|{record['_id']}" if kind == REFUND else f"{link['shift']}|{kind}:{record['_id']}"
            counted = link.get(COUNTED[kind])
            if counted is not None and str(record["_id"]) not in counted and key not in known[link["shift"]]:
                _late(db, link, kind, record)
                known[link["shift"]].add(key)
                made += 1
        return made

    made = 0
    for day in wanted:
        for p in db[PAYMENTS].find({"day": day}, {**dict.fromkeys(_TRANSFER_FIELDS, 1), "shift": 1}):
            if p.get("channel") == "cash" and p.get("shift"):
                link = closed(str(p["shift"]))
                made += claim(TAKEN, p, [link] if link is not None else [])
            elif shift_transfer(p):
                made += claim(RECEIVED, p, covering_links(transfer_facility(p), p.get("received_at")))
        for r in db[REFUNDS].find({"day": day}, {**dict.fromkeys(_REFUND_FIELDS, 1), "shift": 1}):
            found = []
            if r.get("shift") and (link := closed(str(r["shift"]))) is not None:
                found.append(link)
            found += covering_links(sent_back_from(r), r.get("at"))
            made += claim(REFUND, r, found)
    return made


def recorded_after_close(db: Database, shift_id: str) -> dict[str, Any] | None:
    """The money a closed shift counts that was recorded after its close read it (one equality on ``shift``):
    :func:`late_summary` of its records, None if none."""
    return late_summary(list(db[LATE].find({"shift": shift_id})))


def late_summary(found: list[dict[str, Any]]) -> dict[str, Any] | None:
    """``{cashTaken, transfersReceived, cashRefunded, transfersRefunded, refunds: [{refund, amount, channel,
    at}], payments: [{payment, amount, channel, at}]}`` of a shift's records in :data:`LATE`, None if none."""
    if not found:
        return None
    found = sorted(found, key=lambda r: str(r["_id"]))

    def at(r: dict[str, Any]) -> str | None:
        return iso(r["at"]) if isinstance(r.get("at"), datetime) else None

    refunds = [r for r in found if r.get("kind", REFUND) == REFUND]
    paid = [r for r in found if r.get("kind", REFUND) != REFUND]
    return {"cashTaken": sum(int(r["amount"]) for r in paid if r.get("kind") == TAKEN),
            "transfersReceived": sum(int(r["amount"]) for r in paid if r.get("kind") == RECEIVED),
            "cashRefunded": sum(int(r["amount"]) for r in refunds if r.get("channel") == "cash"),
            "transfersRefunded": sum(int(r["amount"]) for r in refunds if r.get("channel") != "cash"),
            "refunds": [{"refund": r["refund"], "amount": int(r["amount"]), "channel": r.get("channel"), "at": at(r)}
                        for r in refunds],
            "payments": [{"payment": r["payment"], "amount": int(r["amount"]), "channel": r.get("channel"),
                          "at": at(r)} for r in paid]}


def late_records(db: Database, shift_ids: set[str]) -> dict[str, list[dict[str, Any]]]:
    """Each of these shifts' records in :data:`LATE` (money recorded after its close; one equality on ``shift``
    each), for the daily report's rows."""
    return {sid: list(db[LATE].find({"shift": sid})) for sid in sorted(shift_ids)}


def late_key(record: dict[str, Any]) -> tuple[str, str]:
    """A :data:`LATE` record's money record: ``("refund", refund id)`` or ``("payment", payment id)``."""
    return ("refund", str(record["refund"])) if record.get("kind", REFUND) == REFUND else ("payment",
                                                                                          str(record["payment"]))


def backfill_transfer_days(db: Database) -> int:
    """The day records (``transfer_days``, keyed by the payment, ``fd`` as a payment's) of the transfers
    recorded before payments carried ``fd``, those a shift counts (the worker, once: it reads every
    transfer). Inserts only, a duplicate key being the same record already there, so two runs at once
    make each record once and a payment is never written again (the outbox relay stays its only
    writer after its insert); how many were new."""
    made, batch = 0, []
    for p in db[PAYMENTS].find({"channel": "transfer"}, {**dict.fromkeys(_TRANSFER_FIELDS, 1), "fd": 1}):
        if "fd" in p or not shift_transfer(p):
            continue  # recorded with its key, or no shift counts it
        # the local day of its time, which the readers' range is made of (a payment's ``day`` says the same)
        batch.append({"_id": p["_id"], "fd": _day_key(transfer_facility(p), local_day(_aware(p["received_at"]))),
                      **{f: p.get(f) for f in _TRANSFER_FIELDS}})
        if len(batch) == 500:
            made, batch = made + _insert_new(db[TRANSFER_DAYS], batch), []
    return made + _insert_new(db[TRANSFER_DAYS], batch)


def close_shift(db: Database, principal: Any, counted_cash: int, counted_transfers: int,
                note: str = "", counted_transfers_refunded: int = 0) -> dict[str, Any]:
    """Close the cashier's open shift with what they counted: the cash in the drawer, and on the bank
    statement of the shift the transfers in (``counted_transfers``) and those sent back
    (``counted_transfers_refunded``: refunds by transfer). The statement's two totals are kept as counted
    (``transfersReceived``, ``transfersRefunded``) and compared as their net (``transfers``) with the net
    :func:`expected_totals` expects, so a refund by transfer in the shift is no false difference."""
    last = latest(db[SHIFTS], _chain(principal))
    if last is None or last.get("state") != "open":
        raise Conflict("no shift is open")
    now = now_utc()
    expected, seen = _expected(db, last, now)
    counted = {"cash": int(counted_cash), "transfers": int(counted_transfers) - int(counted_transfers_refunded),
               "transfersReceived": int(counted_transfers), "transfersRefunded": int(counted_transfers_refunded)}
    difference = {"cash": counted["cash"] - expected["cash"], "transfers": counted["transfers"] - expected["transfers"]}
    if any(difference.values()) and not (note or "").strip():
        # a drawer or a statement that does not match is explained by who counted it, when they count it
        raise SenError(f"the counted totals differ from the expected ones (cash {difference['cash']:+d}, transfers "
                       f"{difference['transfers']:+d} đồng): a note must say why", status=422,
                       title="Unprocessable Content", difference=difference, expected=expected)
    try:
        link = advance(db[SHIFTS], _chain(principal), last, {
            "state": "closed", "shift": last["shift"], "cashier": principal.sub,
            "cashier_name": last.get("cashier_name") or _name(principal), "facility": last.get("facility"),
            "opened_at": last["opened_at"], "closed_at": now, "opening_cash": last.get("opening_cash", 0),
            "expected": expected, "counted": counted, **seen,
            "difference": difference, "note": (note or "").strip()[:500]})
    except ClaimTaken:
        raise Conflict("the shift was closed meanwhile") from None
    _finish_close(db, link)  # after the link and its day records: money recorded meanwhile seen here or sees them
    return public(link, recorded_after_close(db, link["shift"]))


CLOSED_MAX = 50  # closed shifts one request lists at most


def closed_shifts(db: Database, principal: Any, limit: int = 5) -> list[dict[str, Any]]:
    """The cashier's own closed shifts, newest first, at most ``limit``: the ``closed`` links of
    their chain read back from the newest link by point reads (``_id`` ``shift:<cashier>/n``; the
    links alternate open/closed, so ``limit`` closes cost about ``2 × limit`` reads, never the
    whole history). Each closed link holds its whole summary (times, opening cash, expected,
    counted, difference, note), written once by the close."""
    chain = _chain(principal)
    n = _newest(db, chain)
    wanted = max(1, min(int(limit), CLOSED_MAX))
    out: list[dict[str, Any]] = []
    for k in range(n, 0, -1):
        if len(out) == wanted:
            break
        link = db[SHIFTS].find_one({"_id": link_id(chain, k)})
        if link is not None and link.get("state") == "closed":
            out.append(public(link, recorded_after_close(db, link["shift"]) if "counted_refunds" in link else None))
    return out


def _newest(db: Database, chain: str) -> int:
    from .receipts import newest_link_number

    return newest_link_number(db[SHIFTS], chain)


def public(link: dict[str, Any], late: dict[str, Any] | None = None) -> dict[str, Any]:
    """A shift as the API answers it; a closed one with its refunds recorded after its close (``late``:
    :func:`recorded_after_close`) as ``recordedAfterClose``."""
    out = {"id": link["shift"], "state": link["state"], "cashier": link.get("cashier"),
           "cashierName": link.get("cashier_name") or "",
           "facility": link.get("facility"), "openedAt": iso(link["opened_at"]),
           "openingCash": int(link.get("opening_cash", 0))}
    if link.get("closed_at"):
        out.update(closedAt=iso(link["closed_at"]), expected=link["expected"], counted=link["counted"],
                   difference=link["difference"], note=link.get("note", ""))
        if late:
            out["recordedAfterClose"] = late
    return out
