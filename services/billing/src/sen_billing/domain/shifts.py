"""Cashier shifts: open, take cash, close with expected against counted cash and transfers.

A cashier's shifts are one claims chain ``shift:<cashier>`` in ``shifts``: an ``open`` link,
then a ``closed`` link, then the next ``open`` link... Opening and closing append the next link
(``sen_shared.claims.advance``), so two tabs closing the same shift at once make one close and
one 409; nothing is ever updated.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pymongo.database import Database
from sen_shared.claims import ClaimTaken, advance, link_id
from sen_shared.errors import Conflict, SenError

from .payments import PAYMENTS, REFUNDS, iso

SHIFTS = "shifts"


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
    if not principal.facility and "admin" not in principal.roles:
        raise SenError("a cashier's token must name their facility", status=403, title="Forbidden")
    last = latest(db[SHIFTS], _chain(principal))
    if last is not None and last.get("state") == "open":
        raise ShiftError("a shift is open already; close it first", shift=public(last))
    try:
        link = advance(db[SHIFTS], _chain(principal), last, {
            "state": "open", "shift": uuid.uuid4().hex[:16], "cashier": principal.sub,
            "cashier_name": _name(principal), "facility": principal.facility, "opened_at": datetime.now(UTC),
            "opening_cash": int(opening_cash)})
    except ClaimTaken:
        raise ShiftError("the shift changed meanwhile (another tab?); reload") from None
    return public(link)


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def shift_transfer(payment: dict[str, Any]) -> bool:
    """A transfer a shift counts (webhook transfers have no cashier): one to an invoice of the shift's
    facility, counted toward it or late (it came after the invoice was paid or cancelled: the money
    reached the bank all the same, and its refund is a refund of that shift or a later one)."""
    return payment.get("channel") == "transfer" and bool(payment.get("invoice") or payment.get("late_invoice")) \
        and bool(payment.get("facility"))


def open_during(db: Database, facility: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """The facility's shifts open at some time in ``[start, end]``, each ``{shift, opened_at,
    closed_at (None: open still), cashier_name}``, oldest first: its open links opened by ``end``
    and the closed links of those (equalities on ``facility`` and ``state``)."""
    opened = [link for link in db[SHIFTS].find({"facility": facility, "state": "open"},
                                               {"shift": 1, "opened_at": 1, "cashier_name": 1})
              if _aware(link["opened_at"]) <= end]
    if not opened:
        return []
    closed = {link["shift"]: _aware(link["closed_at"]) for link in db[SHIFTS].find(
        {"facility": facility, "state": "closed"}, {"shift": 1, "closed_at": 1})}
    out = [{"shift": link["shift"], "opened_at": _aware(link["opened_at"]), "closed_at": closed.get(link["shift"]),
            "cashier_name": str(link.get("cashier_name") or "")} for link in opened]
    return sorted((s for s in out if s["closed_at"] is None or s["closed_at"] >= start), key=lambda s: s["opened_at"])


def covering(shifts: list[dict[str, Any]], at: datetime) -> list[dict[str, Any]]:
    """Of :func:`open_during`'s shifts, those open at ``at`` (the ones a transfer then counts under)."""
    at = _aware(at)
    return [s for s in shifts if s["opened_at"] <= at and (s["closed_at"] is None or at <= s["closed_at"])]


def expected_totals(db: Database, shift: dict[str, Any], until: datetime) -> dict[str, int]:
    """What the drawer and the bank should show for a shift: cash taken by this cashier in it
    (less cash refunds), and the transfers to the facility's invoices while it was open
    (:func:`shift_transfer`: counted or late; the daily report names the same shifts on their rows)."""
    cash_in = sum(int(p["amount"]) for p in db[PAYMENTS].find({"shift": shift["shift"]}, {"amount": 1}))
    cash_out = sum(int(r["amount"]) for r in db[REFUNDS].find({"shift": shift["shift"]}, {"amount": 1}))
    opened = _aware(shift["opened_at"])
    transfers = 0
    if shift.get("facility"):
        for p in db[PAYMENTS].find({"facility": shift["facility"], "channel": "transfer"},
                                   {"amount": 1, "received_at": 1, "invoice": 1, "late_invoice": 1, "channel": 1,
                                    "facility": 1}):
            if shift_transfer(p) and opened <= _aware(p["received_at"]) <= until:
                transfers += int(p["amount"])
    return {"cash": int(shift.get("opening_cash", 0)) + cash_in - cash_out, "cashTaken": cash_in,
            "cashRefunded": cash_out, "transfers": transfers}


def close_shift(db: Database, principal: Any, counted_cash: int, counted_transfers: int,
                note: str = "") -> dict[str, Any]:
    last = latest(db[SHIFTS], _chain(principal))
    if last is None or last.get("state") != "open":
        raise Conflict("no shift is open")
    now = datetime.now(UTC)
    expected = expected_totals(db, last, now)
    difference = {"cash": int(counted_cash) - expected["cash"],
                  "transfers": int(counted_transfers) - expected["transfers"]}
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
            "expected": expected, "counted": {"cash": int(counted_cash), "transfers": int(counted_transfers)},
            "difference": difference, "note": (note or "").strip()[:500]})
    except ClaimTaken:
        raise Conflict("the shift was closed meanwhile") from None
    return public(link)


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
            out.append(public(link))
    return out


def _newest(db: Database, chain: str) -> int:
    from .receipts import newest_link_number

    return newest_link_number(db[SHIFTS], chain)


def public(link: dict[str, Any]) -> dict[str, Any]:
    out = {"id": link["shift"], "state": link["state"], "cashier": link.get("cashier"),
           "cashierName": link.get("cashier_name") or "",
           "facility": link.get("facility"), "openedAt": iso(link["opened_at"]),
           "openingCash": int(link.get("opening_cash", 0))}
    if link.get("closed_at"):
        out.update(closedAt=iso(link["closed_at"]), expected=link["expected"], counted=link["counted"],
                   difference=link["difference"], note=link.get("note", ""))
    return out
