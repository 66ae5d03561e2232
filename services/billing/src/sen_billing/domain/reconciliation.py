"""The daily reconciliation report: every payment and refund of a day (Asia/Ho_Chi_Minh) as CSV.

One row per payment (transfer or cash, matched or not, late ones with their refund task) and
per refund, then totals per channel. Rows are read by the day key each record carries at the
top level (``day``), an equality FerretDB pushes down. A transfer is on its bank's day: the day of
the time its provider gave (``bank_time``; the payment's ``bank_day`` when that is not the day billing
received it, a second equality), its row's ``time`` still when billing received it.

A facility's day also lists the transfers that reached its account naming no invoice (its
unmatched queue's, waiting or assigned since): the money its bank statement shows. Those
recorded before payments carried ``queue_facility`` get the facility the queue gives them
(``payments.queue_facility`` from the receiving account, ``SEN_BANK_ACCOUNT_FACILITIES``), in
every report.

Unmatched transfers, one meaning (the portal's dashboard counts them alike): ``unmatched`` is every
transfer that came naming no invoice on the day (counted on the day it came, whatever became of it
since); of it, ``unmatched_assigned`` was assigned to an invoice since (that day or a later one: its
row says to which invoice and when, ``assigned_to``, ``assigned_at``), ``unmatched_refunded`` given back
by an admin since, ``unmatched_waiting`` still waits: unmatched = assigned + refunded + waiting, as of
when the report is read. An assignment counts in the takings on its own day (its ``assign:`` row):
``assigned_earlier`` is the day's assignments of transfers that came on an earlier day (in that day's
``unmatched``, not in this one's), net of the day's refunds of such assignments (an overpayment given
back), as the takings are.

A transfer that came to facility A's queue and an admin assigned to facility B's invoice: A's report
lists its arrival (``unmatched``, of it ``unmatched_assigned``: its row's ``assigned_to`` names B's
invoice), B's the assignment's ``assign:`` row (an assigned payment received: in ``assigned_earlier``
when the transfer came on an earlier day). The portal's dashboard counts it alike.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from typing import Any

from pymongo.database import Database
from sen_shared.mongo import find_in
from sen_shared.spreadsheet import cell

from . import refund_links
from .payments import PAYMENTS, REFUND_TASKS, REFUNDS, VN, iso, local_day, queue_facility, started_by
from .shifts import sent_back_from, shift_transfer, transfer_facility

COLUMNS = ["kind", "time", "id", "provider", "channel", "invoice", "facility", "amount", "matched",
           "outcome", "reference", "cashier", "shift", "note", "facility_name"]
# who the cashier is and when the row's shift opened (the shift's link: the name its token gave),
# for a reader who should not have to know the token's subject or the shift's id
COLUMNS += ["cashier_name", "shift_opened_at"]
# a payment given back (a late transfer's refund task done, on whatever day): how much and when, so the
# row no longer reads as money still to give back
COLUMNS += ["refunded_amount", "refunded_at"]
# the name each of the row's shifts was opened under, " | " between them: a transfer has no cashier, and
# counts under every shift of its facility open when it came (``shift`` and ``shift_opened_at`` then
# list them, a space between)
COLUMNS += ["shift_cashier_name"]
# what a cashier matches against the bank statement (``reference`` is the invoice's HD… code): a
# transfer's bank reference, else its transaction id; a refund's, the transfer it gives back; cash none
COLUMNS += ["bank_reference"]
# an unmatched transfer assigned to an invoice since (any day): the invoice (its HD… reference, else its
# id) and when the cashier assigned it; empty while it waits (or when given back)
COLUMNS += ["assigned_to", "assigned_at"]
# a shift closed that day (a ``shift`` row: its time the close, ``cashier``/``cashier_name`` who opened and
# closed it, ``shift_opened_at`` when it opened, ``note`` the cashier's): what the drawer and the statement
# should have shown against what was counted, and the difference (counted less expected), whole đồng
COLUMNS += ["expected_cash", "counted_cash", "cash_difference", "expected_transfers", "counted_transfers",
            "transfers_difference"]
# money recorded after a shift's close read it (it raced the close; ``shifts.recorded_after_close``), in no
# shift's expected figures: on a payment or refund row the shifts whose close missed it (" " between); on a
# shift row the nets so recorded, cash (taken less refunded) and transfers (received less sent back)
COLUMNS += ["recorded_after_close", "after_close_cash", "after_close_transfers"]
# when the bank says a transfer happened (the provider's transaction time, Asia/Ho_Chi_Minh), where the
# provider gave one: the row is on that time's day; ``time`` stays when billing received it
COLUMNS += ["bank_time"]


def _facility(payment: Mapping[str, Any], account_facilities: Mapping[str, str] | None) -> str:
    """The facility a payment's row is under: its invoice's, else its unmatched queue's (derived from
    the receiving account for one recorded before payments carried it), else none."""
    if payment.get("facility"):
        return str(payment["facility"])
    if "queue_facility" in payment:
        return str(payment["queue_facility"] or "")
    return queue_facility(payment, account_facilities) if payment.get("outcome") == "unmatched" else ""


def _report_day(payment: Mapping[str, Any]) -> str:
    """The day a payment's row is on: its bank's (``bank_day``), else the day billing received it."""
    return str(payment.get("bank_day") or payment.get("day") or "")


def rows(db: Database, day: date, facility: str | None = None, *,
         account_facilities: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The day's rows, every facility's or ``facility``'s. ``account_facilities``: receiving account
    → facility (settings), for the transfers recorded before payments carried their queue's."""
    query: dict[str, Any] = {"day": day.isoformat()}
    if facility:
        query["facility"] = facility
    out: list[dict[str, Any]] = []
    found: dict[str, dict[str, Any]] = {}
    # a payment's day on the report is its bank's (``payments.bank_day``, kept only when it is not the day
    # billing received it), else the day billing received it: the day's payments by ``day`` less those on
    # another bank day, and those received another day whose bank day is this one (one equality each)
    for key in ("day", "bank_day"):
        by_key = {key: day.isoformat(), **({"facility": facility} if facility else {})}
        found.update((p["_id"], p) for p in db[PAYMENTS].find(by_key, {"outbox": 0})
                     if _report_day(p) == day.isoformat())
        if facility:
            # and the day's transfers that named no invoice but reached this facility's account: the
            # day's unmatched transfers of every facility (two equalities FerretDB pushes down; no $or
            # or $exists, which it evaluates over the whole collection), kept when their queue's is ours
            found.update((p["_id"], p) for p in db[PAYMENTS].find({key: day.isoformat(), "outcome": "unmatched"},
                                                                 {"outbox": 0})
                         if _facility(p, account_facilities) == facility and _report_day(p) == day.isoformat())
    assigned, refunded = _fates(db, [i for i, p in found.items() if p.get("outcome") == "unmatched"])
    # the day's assignments of transfers that came on an earlier day (their own day: point reads)
    came = {p["_id"]: _report_day(p) for p in find_in(db[PAYMENTS], "_id", [str(p["assigned_from"]) for p in
                                                                           found.values() if p.get("assigned_from")],
                                                      projection={"day": 1, "bank_day": 1})}
    # the refund tasks of the day's payments (keyed by the payment; only one placed on an invoice, late or
    # counted, gets one): point reads by _id, never every task of every day
    tasks = {t["_id"]: t for t in find_in(db[REFUND_TASKS], "_id", [i for i, p in found.items()
                                                                     if p.get("invoice") or p.get("late_invoice")],
                                          projection={"reason": 1})}
    # the refunds of the day's late payments (their refund tasks), whatever day they were given back
    # (each payment's refund links: given back in parts, the row counts them all)
    given_back = refund_links.chains(db, [i for i in found if i in tasks], {"amount": 1, "at": 1}) if tasks else {}
    # the rows the shifts count by the facility's account (a transfer in, a refund by transfer): each row,
    # whose account and when
    transfers: list[tuple[dict[str, Any], str, datetime]] = []
    for p in sorted(found.values(), key=lambda p: p["received_at"]):
        task = tasks.get(p["_id"])
        out.append({"kind": "payment", "time": iso(p["received_at"]), "id": p["_id"], "provider": p["provider"],
                    "channel": p["channel"], "invoice": p.get("invoice") or p.get("late_invoice") or "",
                    "facility": _facility(p, account_facilities), "amount": int(p["amount"]),
                    "matched": "yes" if p.get("matched") else "no", "outcome": p.get("outcome", ""),
                    "reference": p.get("reference") or "", "cashier": p.get("cashier", ""),
                    "shift": p.get("shift", ""),
                    "note": (f"refund task: {task['reason']}" if task else
                             f"assigned from {p['assigned_from']}" if p.get("assigned_from") else ""),
                    **_given_back(given_back.get(p["_id"])), "bank_reference": _bank_reference(p),
                    **_assigned_to(assigned.get(p["_id"])),
                    "bank_time": iso(p["bank_at"]) if isinstance(p.get("bank_at"), datetime) else "",
                    RECORD: ("payment", p["_id"]),
                    # not columns: what became of an unmatched transfer since (any day), and whether an
                    # assignment's transfer came on an earlier day
                    FATE: _fate(p, assigned, refunded),
                    EARLIER: bool(p.get("assigned_from")) and (came.get(p["assigned_from"]) or p["day"]) < p["day"]})
        if shift_transfer(p) and not p.get("shift"):
            transfers.append((out[-1], transfer_facility(p), p["received_at"]))
    day_refunds = sorted(db[REFUNDS].find(query), key=lambda r: r["at"])
    # the payment each refund gives back (keyed alike), for its bank reference: the day's rows, else point reads
    # (a payment given back in parts has a refund row a part, each naming the payment: refund_links)
    of = refund_links.payment_of
    given = {**found, **{p["_id"]: p for p in find_in(db[PAYMENTS], "_id", [of(r) for r in day_refunds
                                                                               if of(r) not in found],
                                                      projection={"outbox": 0})}} if day_refunds else found
    for r in day_refunds:
        out.append({"kind": "refund", "time": iso(r["at"]), "id": of(r), "provider": "cashier",
                    "channel": r.get("channel", ""), "invoice": r.get("invoice") or "",
                    "facility": r.get("facility") or "", "amount": -int(r["amount"]), "matched": "",
                    "outcome": "refunded", "reference": "", "cashier": r.get("cashier", ""),
                    "shift": r.get("shift") or "", "note": _refund_note(r),
                    "bank_reference": _bank_reference(given.get(of(r)) or {}), RECORD: ("refund", r["_id"])})
        if sent_back_from(r):  # sent back from the facility's account: under its shifts open then
            transfers.append((out[-1], sent_back_from(r), r["at"]))
    _name_people(db, out)
    _transfer_shifts(db, day, transfers)
    _earlier_refunds(db, day, out)
    out += _closed_shifts(db, day, [facility] if facility else sorted(
        {str(r["facility"]) for r in out if r.get("facility")} | set((account_facilities or {}).values())))
    _after_close(db, out)
    return out


def _after_close(db: Database, out: list[dict[str, Any]]) -> None:
    """The rows' marks of money recorded after a close (``shifts.recorded_after_close``: it raced the close,
    which did not count it; no other shift does): on a payment or refund row, ``recorded_after_close``
    names the shifts whose close missed it; on a shift row, ``after_close_cash`` and
    ``after_close_transfers`` are the nets so recorded (taken less refunded; received less sent back),
    which the close's expected figures do not hold. One equality on ``shift`` per shift of the rows."""
    from .shifts import late_key, late_records, late_summary

    recorded = late_records(db, {sid for r in out for sid in str(r.get("shift") or "").split()})
    missed: dict[tuple[str, str], set[str]] = {}
    for sid, found in recorded.items():
        for x in found:
            missed.setdefault(late_key(x), set()).add(sid)
    for r in out:
        if r["kind"] == "shift":
            late = late_summary(recorded.get(r["id"]) or []) or {}
            r["after_close_cash"] = int(late.get("cashTaken", 0)) - int(late.get("cashRefunded", 0))
            r["after_close_transfers"] = int(late.get("transfersReceived", 0)) - int(late.get("transfersRefunded", 0))
        elif r.get(RECORD) in missed:
            r["recorded_after_close"] = " ".join(sorted(missed[r[RECORD]]))


def _closed_shifts(db: Database, day: date, facilities: list[str]) -> list[dict[str, Any]]:
    """A ``shift`` row for each shift of ``facilities`` closed on the day (``shifts.closed_on``). Every
    facility's report (an admin's) lists those of the facilities its rows or the receiving accounts name."""
    from .shifts import closed_on

    out = []
    for facility in facilities:
        for link in closed_on(db, facility, day.isoformat()):
            expected, counted = link.get("expected") or {}, link.get("counted") or {}
            difference = link.get("difference") or {}
            name = str(link.get("cashier_name") or "")
            out.append({"kind": "shift", "time": iso(link["closed_at"]), "id": link["shift"], "provider": "",
                        "channel": "", "invoice": "", "facility": facility, "amount": "", "matched": "",
                        "outcome": "", "reference": "", "cashier": link.get("cashier", ""), "shift": link["shift"],
                        "note": link.get("note", ""), "cashier_name": name,
                        "shift_opened_at": iso(link["opened_at"]), "shift_cashier_name": name,
                        "expected_cash": int(expected.get("cash", 0)), "counted_cash": int(counted.get("cash", 0)),
                        "cash_difference": int(difference.get("cash", 0)),
                        "expected_transfers": int(expected.get("transfers", 0)),
                        "counted_transfers": int(counted.get("transfers", 0)),
                        "transfers_difference": int(difference.get("transfers", 0))})
    return out


def _earlier_refunds(db: Database, day: date, out: list[dict[str, Any]]) -> None:
    """Mark (:data:`EARLIER`) the refund rows giving back money of an assignment (``assign:<transfer>``,
    the row's ``id``) whose transfer came on an earlier day (its bank's day when its provider gave a time,
    ``assigned_from_bank_at``, as the transfer's row is placed; else when billing received it, or, recorded
    before assignments kept that, the transfer's own day): they come off ``assigned_earlier``. Point reads, none
    when no refund of the day gives back an assignment."""
    ids = sorted({str(r["id"]) for r in out if r["kind"] == "refund" and str(r["id"]).startswith("assign:")})
    if not ids:
        return
    docs = list(find_in(db[PAYMENTS], "_id", ids, projection={"assigned_from": 1, "assigned_from_received_at": 1,
                                                               "assigned_from_bank_at": 1}))
    # its bank's day first (the day this report places the transfer on, as the assignment's row does)
    came = {d["_id"]: local_day(d.get("assigned_from_bank_at") or d["assigned_from_received_at"]) for d in docs
            if d.get("assigned_from_received_at")}
    older = {str(d.get("assigned_from") or d["_id"].removeprefix("assign:")): d["_id"] for d in docs
             if d["_id"] not in came}
    if older:
        came.update((older[p["_id"]], str(p.get("day") or ""))
                    for p in find_in(db[PAYMENTS], "_id", list(older), projection={"day": 1}))
    for r in out:
        if r["kind"] == "refund" and "" < came.get(str(r["id"]), "") < day.isoformat():
            r[EARLIER] = True


def _transfer_shifts(db: Database, day: date, transfers: list[tuple[dict[str, Any], str, datetime]]) -> None:
    """Each transfer row's shifts (a transfer in, or a refund by transfer): those of the facility whose
    account it reached or left open at its time (``shifts.covering``, as the shift's expected transfers
    count it, ``transfersReceived`` and ``transfersRefunded``); one read of the shifts of each facility in
    the rows."""
    from .shifts import covering, open_during

    start = datetime.combine(day, time.min, VN)
    end = start + timedelta(days=1)
    if transfers:  # a transfer on its bank's day, received by billing on another: its shifts are those of then
        start, end = min(start, *(at for _r, _f, at in transfers)), max(end, *(at for _r, _f, at in transfers))
    of: dict[str, list[dict[str, Any]]] = {}
    for row, facility, at in transfers:  # an unmatched transfer's facility: its queue's, whose account it reached
        if facility not in of:
            of[facility] = open_during(db, facility, start, end)
        found = covering(of[facility], at)
        row["shift"] = " ".join(s["shift"] for s in found)
        row["shift_opened_at"] = " ".join(iso(s["opened_at"]) for s in found)
        row["shift_cashier_name"] = " | ".join(s["cashier_name"] for s in found)


def _bank_reference(payment: Mapping[str, Any]) -> str:
    """The bank's own reference of a transfer (its statement line), else the gateway's transaction id;
    "" for cash."""
    if payment.get("channel") != "transfer":
        return ""
    return str(payment.get("bank_reference") or payment.get("transaction_id") or "")


def _refund_note(refund: Mapping[str, Any]) -> str:
    """A refund row's note: its reason, and who started it when another cashier finished it (the row's
    ``cashier``, who handed the money over; ``payments.refund``)."""
    started = started_by(refund)
    if started is None:
        return str(refund.get("reason", ""))
    return f"{refund.get('reason', '')} (started by {started['cashierName'] or started['cashier']})"


def _given_back(refunds: list[Mapping[str, Any]] | None) -> dict[str, Any]:
    """A payment row's ``refunded_amount`` (all its refunds) and ``refunded_at`` (the newest's; empty
    while not given back)."""
    if not refunds:
        return {"refunded_amount": "", "refunded_at": ""}
    at = refunds[-1].get("at")
    return {"refunded_amount": refund_links.total(refunds), "refunded_at": iso(at) if at else ""}


def _name_people(db: Database, out: list[dict[str, Any]]) -> None:
    """Each row's ``cashier_name`` and ``shift_opened_at`` from the shifts' links (one read a shift
    and, for a cashier with no shift in the rows, their chain's newest link)."""
    from .shifts import cashier_names, opened

    shifts = opened(db, {r["shift"] for r in out if r.get("shift")})
    names = {sid: str(link.get("cashier_name") or "") for sid, link in shifts.items()}
    by_cashier = {str(link.get("cashier")): n for sid, link in shifts.items() if (n := names[sid])}
    unnamed = {r["cashier"] for r in out if r.get("cashier") and r["cashier"] not in by_cashier}
    by_cashier.update(cashier_names(db, unnamed))
    for r in out:
        link = shifts.get(r.get("shift") or "")
        r["shift_opened_at"] = iso(link["opened_at"]) if link else ""
        r["shift_cashier_name"] = str(link.get("cashier_name") or "") if link else ""
        r["cashier_name"] = (names.get(r.get("shift") or "") or by_cashier.get(r.get("cashier") or "", "")
                             if r.get("cashier") else "")


# a payment row's marks (not written to the CSV)
RECORD = "_record"  # ("payment" | "refund", the record's _id): a refund row's ``id`` is the payment it gives back
FATE = "_fate"  # an unmatched transfer's: "assigned", "refunded" or "waiting" (since, whatever the day); else ""
EARLIER = "_earlier"  # an assignment's (``assign:``), or a refund's of one: its transfer came on an earlier day


def _fates(db: Database, unmatched: list[str]) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """Of these unmatched transfers, those assigned to an invoice since (their ``assign:<id>``
    payment, by transfer) and those refunded since, whatever the day: point reads by ``_id``
    (``find_in``), never a scan of all payments."""
    if not unmatched:
        return {}, set()
    assigned = {str(d["_id"]).removeprefix("assign:"): d
                for d in find_in(db[PAYMENTS], "_id", [f"assign:{i}" for i in unmatched],
                                 projection={"invoice": 1, "reference": 1, "received_at": 1})}
    return assigned, {r["_id"] for r in find_in(db[REFUNDS], "_id", unmatched, projection={"_id": 1})}


def _fate(payment: Mapping[str, Any], assigned: Mapping[str, Any], refunded: set[str]) -> str:
    if payment.get("outcome") != "unmatched":
        return ""
    return "assigned" if payment["_id"] in assigned else "refunded" if payment["_id"] in refunded else "waiting"


def _assigned_to(assignment: Mapping[str, Any] | None) -> dict[str, Any]:
    """An unmatched transfer row's ``assigned_to`` (the invoice's reference, else its id) and ``assigned_at``."""
    if assignment is None:
        return {"assigned_to": "", "assigned_at": ""}
    return {"assigned_to": str(assignment.get("reference") or assignment.get("invoice") or ""),
            "assigned_at": iso(assignment["received_at"]) if assignment.get("received_at") else ""}


def totals(report: list[dict[str, Any]]) -> dict[str, int]:
    pays = [r for r in report if r["kind"] == "payment"]
    # an assignment re-counts an unmatched transfer: count the money once (the original's row)
    money = [r for r in pays if not str(r["id"]).startswith("assign:")]
    unmatched = [r for r in pays if r["outcome"] == "unmatched"]
    # a row without its mark (built elsewhere): assigned when its assignment is among the rows, else waiting
    here = {str(r["id"]).removeprefix("assign:") for r in pays if str(r["id"]).startswith("assign:")}

    def fate(r: Mapping[str, Any]) -> str:
        return str(r.get(FATE) or ("assigned" if r["id"] in here else "waiting"))

    return {
        "transfers": sum(r["amount"] for r in money if r["channel"] == "transfer"),
        "cash": sum(r["amount"] for r in money if r["channel"] == "cash"),
        "refunds": -sum(r["amount"] for r in report if r["kind"] == "refund"),
        # the day's transfers that came naming no invoice, whatever became of them since (the module's rule)
        "unmatched": sum(r["amount"] for r in unmatched),
        "net": sum(r["amount"] for r in money) + sum(r["amount"] for r in report if r["kind"] == "refund"),
        "payments": len(money),
        # of ``unmatched``: assigned to an invoice since, given back since, still waiting
        "unmatched_assigned": sum(r["amount"] for r in unmatched if fate(r) == "assigned"),
        "unmatched_refunded": sum(r["amount"] for r in unmatched if fate(r) == "refunded"),
        "unmatched_waiting": sum(r["amount"] for r in unmatched if fate(r) == "waiting"),
        # the day's assignments of transfers that came on an earlier day (in that day's ``unmatched``), less
        # the day's refunds of such assignments (a refund row's amount is negative)
        "assigned_earlier": sum(r["amount"] for r in report if r["kind"] in ("payment", "refund") and r.get(EARLIER)),
    }


def to_csv(day: date, report: list[dict[str, Any]], facility_names: Mapping[str, str] | None = None) -> str:
    """The day's CSV; ``facility_names`` (``SEN_FACILITY_NAMES``: id → name) fills the last column,
    ``facility_name``, so a reader that may not read the EHR's Organizations (a cashier) has the name.
    A text a spreadsheet would run as a formula (a refund reason or a shift note typed ``=HYPERLINK(...)``)
    is written with ``'`` before it (:func:`sen_shared.spreadsheet.cell`)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\r\n", extrasaction="ignore")
    writer.writeheader()
    names = facility_names or {}
    writer.writerows({k: cell(v) for k, v in {**r, "facility_name": names.get(r.get("facility") or "", "")}.items()}
                     for r in report)
    for key, value in totals(report).items():
        writer.writerow({"kind": "total", "time": day.isoformat(), "id": key, "amount": value})
    return buf.getvalue()
