"""What the reporting read model keeps of each event, and how facts add up: definitions as data, no I/O.

:data:`FACT_FIELDS` says, per routing key, which ``data`` fields of an event become a
fact's dimensions (``time`` picks the field whose local day the fact counts on, or the first
present of a tuple of them; a pair
under ``minutes`` is a duration from the first time to the second, in whole minutes). An
event type that is not listed still becomes a fact (counted per type and day), dated by
its envelope ``time``. :data:`SECTIONS` says how facts are grouped for each chart: the
routing keys it takes, the dimensions it groups by (the fact's local ``day`` always first),
whether it sums ``amount``, which facts it leaves out (``skip``: those carrying that mark,
e.g. a payment event that ``restates`` money an earlier event counted) and which kinds it takes
away (``less``: their amount is subtracted and they are not counted, e.g. refunds). A section's rows
(``{day, <dims>, n[, amount]}``) merge by addition, so rows of any set of buckets add up to the
same rows as the facts themselves.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

VN = ZoneInfo("Asia/Ho_Chi_Minh")

# ``consult``: the consult's ServiceRequest, which every event of it names (what :data:`CONSULT_STATUS` links by)
_CONSULT = {"facility": "requester", "district": "district", "priority": "priority", "consult": "serviceRequest"}

FACT_FIELDS: dict[str, dict[str, Any]] = {
    "teleconsult.consult.requested": {"time": "requestedAt", **_CONSULT},
    "teleconsult.consult.accepted": {"time": "acceptedAt", **_CONSULT, "minutes": ("requestedAt", "acceptedAt")},
    "teleconsult.consult.rejected": {"time": "rejectedAt", **_CONSULT},
    "teleconsult.consult.cancelled": {"time": "cancelledAt", **_CONSULT},
    "teleconsult.consult.sla_breached": {"time": "breachedAt", **_CONSULT},
    "teleconsult.consult.completed": {"time": "completedAt", **_CONSULT, "minutes": ("requestedAt", "completedAt")},
    "teleconsult.appointment.booked": {"time": "bookedAt", "consult": "serviceRequest"},
    "billing.invoice.issued": {"time": "issuedAt", "facility": "facility", "district": "district", "amount": "total"},
    # ``assignedFrom``: a cashier put an unmatched transfer on an invoice; the money was counted by
    # that transfer's own event, so this one restates it (kept as the fact's ``restates``)
    # a transfer counts on its bank's day (``bankTime``, when its provider gave one), as billing's daily
    # reconciliation places it; else (cash, untimed providers, billing's older events) when billing received it
    "billing.payment.received": {"time": ("bankTime", "receivedAt"), "facility": "facility", "district": "district",
                                 "amount": "amount", "channel": "channel", "restates": "assignedFrom"},
    # money given back: ``channel`` is the refunded payment's; ``outcome`` the refunded payment's
    # (:func:`money_outcome`): only applied (or assigned) money given back comes off the takings
    "billing.payment.refunded": {"time": "refundedAt", "facility": "facility", "district": "district",
                                 "amount": "amount", "channel": "channel"},
    "billing.invoice.paid": {"time": "paidAt", "facility": "facility", "district": "district", "amount": "amount",
                             "channel": "channel"},
    # a patient record's district (its home address's; the EHR's events carry it): a registration adds
    # the record there and a deletion takes it away; a move (an update naming the replaced version's
    # district, ``from_district``; the EHR's backfill noting the district of a record counted without
    # one) takes it from one and adds it to the other. Events from before they named districts: none
    "ehr.patient.created": {"district": "district"},
    "ehr.patient.deleted": {"district": "district"},
    "ehr.patient.updated": {"district": "district", "from_district": "previousDistrict"},
    "ehr.patient.district_noted": {"district": "district"},
}

# billing's money events: a payment received and a payment (part of it) given back
MONEY_KINDS = ("billing.payment.received", "billing.payment.refunded")
# what became of a payment, as the dashboard tells money apart (:func:`money_outcome`)
OUTCOMES = ("applied", "assigned", "unmatched", "late")

# the events that say where a consult stands (the read model's statuses: :data:`.dashboard.STATUSES`)
CONSULT_STATUS = ("teleconsult.consult.requested", "teleconsult.consult.accepted", "teleconsult.appointment.booked",
                  "teleconsult.consult.completed", "teleconsult.consult.cancelled", "teleconsult.consult.rejected")

# patient events that move a record from ``from_district`` (None: no district) to ``district``
PATIENT_MOVES = ("ehr.patient.updated", "ehr.patient.district_noted")

SECTIONS: dict[str, dict[str, Any]] = {
    # every event, per type: /api/reports/events
    "events": {"kinds": None, "by": ("k",)},
    # consults requested per facility: facilities using teleconsultation, consults per facility per week
    "consults": {"kinds": ("teleconsult.consult.requested",), "by": ("district", "facility")},
    # time to acceptance (requested -> a hub doctor accepted the consult) as a histogram of whole
    # minutes per requesting facility and priority (the dashboard of one facility reads them). They
    # replaced "answers", "conclusions" and "breaches", which had no facility: stored totals of those
    # names are no longer read, and a bucket sealed without these is completed from its facts once
    "acceptance_minutes": {"kinds": ("teleconsult.consult.accepted",),
                           "by": ("district", "facility", "priority", "minutes")},
    # time to conclusion (requested -> the consult's minutes signed, ``completedAt``), the same way
    "conclusion_minutes": {"kinds": ("teleconsult.consult.completed",),
                           "by": ("district", "facility", "priority", "minutes")},
    "sla_breaches": {"kinds": ("teleconsult.consult.sla_breached",), "by": ("district", "facility", "priority")},
    # money received and given back, per facility, channel and :func:`money_outcome` (``k`` tells a
    # payment from a refund): the dashboard's cashless share and the parts it is told apart from
    # (unmatched transfers, late ones owed back, refunds), as billing's daily reconciliation counts them.
    # (It replaced "payments", which mixed them: stored totals of that name are no longer read.)
    # ``from_day``: an assigned transfer's, or an unmatched one given back, the day it came (the day whose
    # unmatched transfers it was; :func:`extract`); an assignment's refund, its transfer's (its event's
    # ``assignedFromReceivedAt``; billing's older refund events, from the assignment's fact: :func:`link_refund`);
    # None for the rest and for billing's older events. ``from_facility``: an assigned transfer's, whose
    # unmatched queue it waited in ("": the admins'), when not the invoice's facility; None for the rest
    "money": {"kinds": MONEY_KINDS,
              "by": ("district", "facility", "k", "channel", "outcome", "from_day", "from_facility"),
              "sum": "amount"},
    # each consult's events (its request, acceptance, booking, end), by consult: where the consults requested
    # in a range stand now (:func:`.dashboard.consult_statuses`). A booking names no facility: its consult's
    # request says whose it is. Facts stored before ``consult`` was kept have none (``rebuild facts`` adds it)
    "consult_status": {"kinds": CONSULT_STATUS, "by": ("district", "facility", "k", "consult")},
    # residents with an electronic record per district: created minus deleted, and the moves (:data:`PATIENT_MOVES`)
    "patients": {"kinds": ("ehr.patient.created", "ehr.patient.deleted", *PATIENT_MOVES),
                 "by": ("k", "district", "from_district")},
}

DIMENSIONS = ("facility", "district", "priority", "channel", "amount", "minutes", "from_district", "outcome",
              "from_day", "from_facility", "consult")


def instant(text: Any) -> datetime | None:
    """An ISO 8601 instant (``Z`` allowed) as an aware datetime; None when absent or unreadable."""
    if not isinstance(text, str):
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=VN)


@functools.lru_cache(maxsize=8192)
def iso_week(day: str | date) -> str:
    d = date.fromisoformat(day) if isinstance(day, str) else day
    year, week, _ = d.isocalendar()
    return f"{year}-W{week:02d}"


def routing_key(event_type: str) -> str:
    """``vn.sen.teleconsult.consult.requested.v1`` -> ``teleconsult.consult.requested``."""
    key = event_type.removeprefix("vn.sen.")
    head, _, tail = key.rpartition(".")
    return head if head and tail.startswith("v") and tail[1:].isdigit() else key


def extract(event: Mapping[str, Any]) -> dict[str, Any]:
    """The fact of one event: its type, local day and ISO week, dimensions, and the event itself.

    The event is kept (envelope and the top-level scalar fields of ``data``: references, codes,
    times, amounts; nested clinical content such as consult minutes is left out) so facts can be
    re-derived when this table changes (``python -m sen_portal.rebuild facts``).
    """
    kind = routing_key(str(event.get("type", "")))
    data = event.get("data") if isinstance(event.get("data"), Mapping) else {}
    spec = FACT_FIELDS.get(kind, {})
    times = spec.get("time", ())
    # the first of the spec's time fields the event carries (a tuple: the preferred first)
    when = next((t for f in ((times,) if isinstance(times, str) else times) if (t := instant(data.get(f)))), None)
    when = when or instant(event.get("time")) or datetime.now(VN)
    day = when.astimezone(VN).date()
    fact: dict[str, Any] = {"k": kind, "day": day.isoformat(), "week": iso_week(day)}
    for dim in ("facility", "district", "priority", "channel", "from_district", "consult"):
        value = data.get(spec[dim]) if dim in spec else None
        if isinstance(value, str) and value:
            fact[dim] = value
    if "amount" in spec and isinstance(data.get(spec["amount"]), int | float):
        fact["amount"] = int(data[spec["amount"]])
    if "restates" in spec and (restated := _restated(data, spec["restates"])):
        fact["restates"] = restated
    if kind in MONEY_KINDS:
        fact["outcome"] = money_outcome(kind, data)
        queue = data.get("queueFacility")  # an unmatched transfer: the facility whose queue it waits in
        if "facility" not in fact and isinstance(queue, str) and queue:
            fact["facility"] = queue
        came = _came(kind, fact["outcome"], data)
        if came is not None:
            fact["from_day"] = came.astimezone(VN).date().isoformat()
        if kind == "billing.payment.received" and fact["outcome"] == "assigned":
            fact[ASSIGNMENT] = str(data.get("payment") or "")  # what a refund of it names (:func:`link_refund`)
            queue = data.get("assignedFromQueue")  # whose unmatched queue it waited in ("": the admins')
            if isinstance(queue, str) and queue != fact.get("facility"):
                fact["from_facility"] = queue
    if "minutes" in spec:
        start, end = (instant(data.get(f)) for f in spec["minutes"])
        if start is not None and end is not None:
            fact["minutes"] = max(0, round((end - start).total_seconds() / 60))
    fact["ev"] = {"id": event.get("id"), "type": event.get("type"), "source": event.get("source"),
                  "time": event.get("time"), "subject": event.get("subject"),
                  "data": {k: v for k, v in data.items() if isinstance(v, str | int | float | bool) or v is None}}
    return fact


def money_outcome(kind: str, data: Mapping[str, Any]) -> str:
    """What a money event's payment was, one of :data:`OUTCOMES`: ``applied`` (counted toward its
    invoice when it came: takings), ``assigned`` (an unmatched transfer a cashier put on an invoice
    since: takings now, the same money its unmatched arrival announced), ``unmatched`` (named no
    invoice: waits in a queue, not takings) or ``late`` (came after its invoice was settled or
    cancelled: owed back, a refund task, not takings). A refund's is its refunded payment's
    (``applied``, ``assigned``: of an assignment's payment, ``assign:<transfer>``, e.g. its overpayment
    given back, ``unmatched`` or ``late``). Billing's older events carry no ``outcome``: a payment
    is then read from ``matched`` and ``invoice`` (matched with no invoice: late), a refund as applied."""
    said = str(data.get("outcome") or "")
    # an assignment's payment (``assign:<transfer>``; a refund of it names no assignedFrom: its payment's id tells)
    if _restated(data, "assignedFrom"):
        return "assigned"
    if kind == "billing.payment.received":
        if not said:
            said = "unmatched" if not data.get("matched") else "applied" if data.get("invoice") else "late"
    if said.startswith("late"):
        return "late"
    return "unmatched" if said == "unmatched" else "applied"


# an assignment's payment fact: its payment id (``assign:<transfer>``), which a refund of it names (indexed)
ASSIGNMENT = "assignment"


def refund_link(fact: Mapping[str, Any]) -> str | None:
    """The assignment a refund's fact gives money of back (``assign:<transfer>``), when the fact does
    not know yet when that transfer came (billing's refund events before ``assignedFromReceivedAt`` say
    only when the ASSIGNMENT was made, ``paymentReceivedAt``, not when its money came); None for every
    other fact, and for a refund whose event says it (its ``from_day`` set by :func:`extract`)."""
    if fact.get("k") != "billing.payment.refunded" or fact.get("outcome") != "assigned" or fact.get("from_day"):
        return None
    payment = ((fact.get("ev") or {}).get("data") or {}).get("payment")
    return payment if isinstance(payment, str) and payment else None


def link_refund(fact: dict[str, Any], assignment: Mapping[str, Any] | None) -> dict[str, Any]:
    """A refund of an assignment's money (:func:`refund_link`) given the day its transfer came, the
    assignment's fact's ``from_day``, so the refund comes off the range's assignments of earlier
    transfers (``assigned_earlier_*``) when theirs did; unchanged when the assignment is not known (yet)."""
    if assignment is not None and assignment.get("from_day"):
        fact["from_day"] = assignment["from_day"]
    return fact


def _came(kind: str, outcome: str, data: Mapping[str, Any]) -> datetime | None:
    """When the unmatched transfer a money event is about came: an assignment's (``assignedFromReceivedAt``),
    a refund's of an assignment's money (the same field, billing's refund events since it carries it) or a
    refund's of an unmatched transfer (``paymentReceivedAt``), each's bank time first when billing gave
    it (``assignedFromBankTime``, ``paymentBankTime``: the transfer's day on billing's CSV); None for
    other money and older events (a refund of an assignment's then learns it from the assignment's
    fact: :func:`link_refund`)."""
    if outcome == "assigned":  # its bank's time first (the day billing's CSV places the transfer on)
        return instant(data.get("assignedFromBankTime")) or instant(data.get("assignedFromReceivedAt"))
    if kind == "billing.payment.refunded" and outcome == "unmatched":
        return instant(data.get("paymentBankTime")) or instant(data.get("paymentReceivedAt"))
    return None


def _restated(data: Mapping[str, Any], field: str) -> str | None:
    """The earlier event's subject this event restates (an assigned transfer's first payment id);
    billing's events from before ``assignedFrom`` name it only in the id (``assign:<payment>``)."""
    value = data.get(field)
    if isinstance(value, str) and value:
        return value
    payment = data.get("payment")
    if isinstance(payment, str) and payment.startswith("assign:"):
        return payment.removeprefix("assign:") or None
    return None


# ------------------------------------------------------------------------------ rows

def _key(row: Mapping[str, Any], by: tuple[str, ...]) -> tuple[Any, ...]:
    return (row.get("day"), *(row.get(d) for d in by))


def rows_of_facts(facts: Iterable[Mapping[str, Any]], section: str) -> list[dict[str, Any]]:
    """Group facts into one section's rows."""
    spec = SECTIONS[section]
    kinds, by, total, skip, less = spec["kinds"], spec["by"], spec.get("sum"), spec.get("skip"), spec.get("less", ())
    acc: dict[tuple[Any, ...], dict[str, Any]] = {}
    for f in facts:
        if (kinds is not None and f.get("k") not in kinds) or (skip and f.get(skip)):
            continue
        key = _key(f, by)
        row = acc.get(key)
        if row is None:
            row = acc[key] = {"day": f.get("day"), **{d: f.get(d) for d in by}, "n": 0}
            if total:
                row[total] = 0
        minus = f.get("k") in less
        row["n"] += 0 if minus else 1
        if total:
            row[total] += int(f.get(total) or 0) * (-1 if minus else 1)
    return sorted(acc.values(), key=_sort_key)


def merge_rows(parts: Iterable[Iterable[Mapping[str, Any]]], section: str) -> list[dict[str, Any]]:
    """Add rows of one section from several buckets."""
    by, total = SECTIONS[section]["by"], SECTIONS[section].get("sum")
    acc: dict[tuple[Any, ...], dict[str, Any]] = {}
    for rows in parts:
        for r in rows:
            key = _key(r, by)
            row = acc.get(key)
            if row is None:
                acc[key] = dict(r)
                continue
            row["n"] += r["n"]
            if total:
                row[total] += r.get(total) or 0
    return sorted(acc.values(), key=_sort_key)


def _sort_key(row: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple("" if v is None else str(v) for v in row.values())


# ------------------------------------------------------------------------------ figures

def median_and_p90(histogram: Mapping[int, int]) -> tuple[float | None, int | None]:
    """Median (the middle value, or the mean of the two middle ones, :func:`one_decimal`) and the
    90th percentile (nearest rank) of whole minutes given as ``{minutes: count}``."""
    n = sum(histogram.values())
    if n == 0:
        return None, None
    values = sorted(histogram)

    def rank(r: int) -> int:  # the r-th smallest value, from 1
        seen = 0
        for v in values:
            seen += histogram[v]
            if seen >= r:
                return v
        return values[-1]

    median = (rank((n + 1) // 2) + rank(n // 2 + 1)) / 2
    return one_decimal(median), rank(max(1, math.ceil(0.9 * n)))


def one_decimal(value: float | None) -> int | float | None:
    """A figure of minutes as every output shows it (the page, the CSV, the API): a whole number as
    an int (``2``), else rounded half up to one decimal (``2.5``; the page writes ``2,5`` in Vietnamese)."""
    if value is None:
        return None
    tenths = math.floor(value * 10 + 0.5)
    return tenths // 10 if tenths % 10 == 0 else tenths / 10


__all__ = ["ASSIGNMENT", "CONSULT_STATUS", "DIMENSIONS", "FACT_FIELDS", "MONEY_KINDS", "OUTCOMES", "PATIENT_MOVES",
           "SECTIONS", "VN",
           "extract", "instant", "iso_week", "link_refund", "median_and_p90", "merge_rows", "money_outcome",
           "one_decimal", "refund_link", "routing_key", "rows_of_facts"]
