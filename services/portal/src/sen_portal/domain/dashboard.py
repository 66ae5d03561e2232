"""The health department's dashboard, computed from the reporting read model (:mod:`.reporting`).

The interface the portal's pages call (and ``GET /api/reports/dashboard`` returns as JSON)::

    dashboard(db, start: date, end: date, district: str | None, *, targets=Targets(), now=None) -> dict
    csv_rows(section, db, start, end, district, *, targets=Targets(), now=None) -> (header, rows)

``start`` and ``end`` are local days (Asia/Ho_Chi_Minh), both included; an event counts on the
local day of its own time (requestedAt, acceptedAt, receivedAt, ...; a transfer on its bank's day,
``bankTime``, when its provider gave one, as billing's daily reconciliation). ``district`` keeps the
events that name that district (events without one are left out when a district is asked; a money
event naming only its facility, e.g. an unmatched transfer to a facility's account, is in that
facility's district when ``facility_districts`` (facility id → district, the EHR's) knows it).
``facility`` (an id or ``Organization/<id>``) keeps that facility's events only: the consults it
requested (teleconsult's ``requester``), their times and breaches, and its money (the figures
billing's daily reconciliation gives the facility); with ``district`` too, the events of both.
A figure that exists only for the whole province (the facilities' baseline and goal) is None for
a district or a facility, never the province's; the EHR coverage counts records by the patient's
home district, not by facility: for a facility its patients, population and share are None.
The dict::

    range                      {start, end, district, facility (Organization/<id> or None),
                                weeks: ["2026-W49", ...]}
    facilities_using           {count, new, baseline, goal, share, baseline_named, baseline_using,
                                since, until}
                               IN USE ("Đang sử dụng"): a facility that requested at least one consult
                               in the :data:`IN_USE_DAYS` (30) days up to ``end`` (``since``..``until``,
                               local days, both included, whatever the range's start) that is not
                               cancelled or rejected as of now (waiting for the hub, accepted, booked
                               or completed: :func:`facilities_in_use`); a request stored before facts
                               kept their consult counts (its end is not known). A facility whose
                               requests were all withdrawn or refused got no remote diagnosis; one
                               whose last request is older than 30 days is no longer in use.
                               new: the facilities in use that are not among the facilities already
                               using teleconsultation before Sen (``Targets.baseline_facilities``,
                               when the settings name them); count = baseline (how many used it
                               before Sen, a setting) + new, at most goal; share = count / goal.
                               baseline_using: of the named baseline facilities, those in use
                               (counted in the baseline, never again in new); baseline_named False
                               (baseline_using None) when the settings give only their number: a
                               baseline facility in use through Sen is then in new too, counted
                               twice (the page says so).
                               For a district or a facility: count = new (a facility: 1 when it is
                               in use, else 0); baseline, goal, share, baseline_named,
                               baseline_using None (the settings are the province's)
    consults_per_facility_week [{facility, district, week, count}]   consults requested
    time_to_answer             {priority: {count, median_minutes, p90_minutes}} for routine, urgent,
                               asap, stat: time to acceptance, requested -> accepted (a hub doctor
                               took the consult; not its answer), whole minutes; median of the
                               middle value(s) (whole, else one decimal: 2.5), p90 by nearest
                               rank; None when count is 0
    time_to_conclusion         the same, requested -> completed (the consult's minutes signed)
    consults_by_status         [{facility, district, status, count}] where the consults requested in
                               the range (``consults_per_facility_week``'s) stand now, per requesting
                               facility (:func:`consult_statuses`): status one of :data:`STATUSES`,
                               by the furthest event of the consult the read model has: completed,
                               cancelled, rejected, booked (an appointment made), accepted (a hub
                               doctor took it), waiting (requested only); ``unknown``: a request
                               stored before facts kept their consult (``rebuild facts`` tells them)
    sla_breaches               [{week, priority, count}]
    cashless_share             {transfer_amount, cash_amount, share, transfer_count, cash_count,
                                assigned_amount, assigned_count, unmatched_amount, unmatched_count,
                                unmatched_without_facility, late_amount, late_count, refunds,
                                refunds_of_takings, refunds_owed, received_transfer_amount,
                                received_cash_amount, received_count, net,
                                unmatched_assigned_*, unmatched_refunded_*, unmatched_waiting_*,
                                assigned_earlier_* (amount and count each)}
                               integer đồng, each on its event's local day (a refund on its own):
                               TAKINGS (the chart and its share): transfer_amount / cash_amount =
                               money applied to invoices by that channel (matched when it came, or
                               an unmatched transfer assigned to an invoice since: counted once, on
                               the assignment's day) less the refunds of such money (a refund comes
                               off the refunded payment's channel); counts: the payments applied.
                               share = transfer / (transfer + cash), None when both are 0 or either
                               is negative (more given back than taken).
                               APART from the takings: assigned_* (of the transfers' takings: those
                               assigned from the unmatched queue, the amount net of what of them was
                               given back, e.g. an overpayment, as the takings are; the count: the
                               assignments); unmatched_* (transfers that came
                               naming no invoice, on the day they came, assigned since or not;
                               unmatched_without_facility: those to an account no facility owns,
                               in the province's figure only), and of them (:func:`unmatched_since`,
                               as of now) unmatched_assigned_* (assigned to an invoice since, that
                               day or later), unmatched_refunded_* (given back since),
                               unmatched_waiting_* (still waiting): unmatched = assigned + refunded
                               + waiting (an assignment of a transfer of another facility's queue
                               counts in that facility's, where it came: :func:`_money_rows`'s
                               ``queue``); assigned_earlier_* (of assigned_*: transfers that came
                               before the range, in their own day's unmatched; the amount net of
                               the range's refunds of them, as assigned_* is); late_* (came after
                               their invoice was settled or cancelled: owed back, a refund task); refunds (all money
                               given back), refunds_of_takings (of applied money) and refunds_owed
                               (of late or unmatched transfers: never takings).
                               BILLING'S DAILY RECONCILIATION (a facility's, a day's):
                               received_transfer_amount = its ``transfers`` (every transfer that
                               came, applied, unmatched or late, each once: an assignment is not new
                               money), received_cash_amount = ``cash``, refunds = ``refunds``,
                               received_count = ``payments``, net = ``net`` (received − refunds),
                               unmatched_amount = ``unmatched``, unmatched_assigned_amount =
                               ``unmatched_assigned``, unmatched_refunded_amount =
                               ``unmatched_refunded``, unmatched_waiting_amount =
                               ``unmatched_waiting``, assigned_earlier_amount = ``assigned_earlier``
    ehr_coverage               {patients, population, share, as_of, population_outdated, without_district}
                               patients = Patient records created minus deleted up to ``end`` (each
                               record once: facts are keyed by event id); population is a setting.
                               share = patients / population, None when the records outnumber the
                               population (population_outdated: the setting is too small, e.g. the
                               demo's default, or records of test patients count) rather than over
                               100 %. For a district: the records whose home address is in it (the
                               EHR's events name the district of each version; a move takes the record
                               from the old district, whatever order the events came in) over the
                               district's population (``Targets.district_populations``; None when not
                               set: population and share None). without_district: records counted in
                               the province only (no district in their address, or registered before
                               the events named districts and not yet noted by the EHR's backfill)

CSV sections (:data:`CSV_SECTIONS`) are the same figures flattened, one row per point.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from pymongo.database import Database

from .report_facts import PATIENT_MOVES, iso_week, median_and_p90
from .reporting import gather, local

PRIORITIES = ("routine", "urgent", "asap", "stat")
CSV_SECTIONS = ("facilities_using", "consults_per_facility_week", "consults_by_status", "time_to_answer",
                "time_to_conclusion", "sla_breaches", "cashless_share", "ehr_coverage")
# where a consult stands, in the order a consult goes (the ends last); the furthest event a consult has says it
STATUSES = ("waiting", "accepted", "booked", "completed", "cancelled", "rejected")
_STATUS_OF = {"teleconsult.consult.accepted": "accepted", "teleconsult.appointment.booked": "booked",
              "teleconsult.consult.completed": "completed", "teleconsult.consult.cancelled": "cancelled",
              "teleconsult.consult.rejected": "rejected"}
# which of a consult's events wins: an end over a booking over an acceptance (a consult ends once)
_STATUS_RANK = {"waiting": 0, "accepted": 1, "booked": 2, "rejected": 3, "cancelled": 4, "completed": 5}
# the columns of the one-row sections' CSV after start, end, district (None: the whole province)
_SUMMARY_COLUMNS = {"facilities_using": ("count", "new", "baseline", "goal", "share", "since", "until"),
                    "cashless_share": ("transfer_amount", "cash_amount", "share", "transfer_count", "cash_count",
                                       "assigned_amount", "unmatched_amount", "unmatched_assigned_amount",
                                       "unmatched_refunded_amount", "unmatched_waiting_amount",
                                       "assigned_earlier_amount", "unmatched_without_facility",
                                       "late_amount", "refunds", "refunds_of_takings", "refunds_owed",
                                       "received_transfer_amount", "received_cash_amount", "net"),
                    "ehr_coverage": ("patients", "population", "share", "as_of")}
MAX_DAYS = 3 * 366
# a facility is in use when it requested a consult (not cancelled or rejected) in the last 30 days of the range
IN_USE_DAYS = 30


class RangeError(ValueError):
    """A date range the dashboard cannot answer, said in English (the API's problem detail) and as a
    ``code`` with its facts for the pages to say in the user's language: ``out-of-bounds`` (``day``
    outside ``EARLIEST``..``LATEST``), ``start-after-end`` (``start``, ``end``), ``too-long`` (``days``)."""

    def __init__(self, message: str, *, code: str, start: date | None = None, end: date | None = None,
                 day: date | None = None, days: int | None = None) -> None:
        super().__init__(message)
        self.code, self.start, self.end, self.day, self.days = code, start, end, day, days


@dataclass(frozen=True)
class Targets:
    """The province's figures the dashboard measures against (portal settings)."""

    facility_goal: int = 165
    facility_baseline: int = 22
    # the baseline's facilities by Organization id, when the settings name them (then the baseline is how many):
    # one of them requesting consults through Sen is in the baseline, not counted again as new
    baseline_facilities: frozenset[str] = frozenset()
    population: int = 10
    # residents per district, by the district's name as addresses write it (those not listed: no coverage)
    district_populations: Mapping[str, int] = field(default_factory=dict)


EARLIEST, LATEST = date(2000, 1, 1), date(2099, 12, 31)


def check_range(start: date, end: date) -> None:
    for d in (start, end):
        if not EARLIEST <= d <= LATEST:
            raise RangeError(f"dates from {EARLIEST.isoformat()} to {LATEST.isoformat()}, not {d.isoformat()}",
                             code="out-of-bounds", start=start, end=end, day=d)
    if start > end:
        raise RangeError(f"start ({start.isoformat()}) is after end ({end.isoformat()})",
                         code="start-after-end", start=start, end=end)
    if (end - start).days + 1 > MAX_DAYS:
        raise RangeError(f"a range of at most {MAX_DAYS} days, not {(end - start).days + 1}",
                         code="too-long", start=start, end=end, days=(end - start).days + 1)


def _weeks(start: date, end: date) -> list[str]:
    out: list[str] = []
    d = start
    while d <= end:
        w = iso_week(d)
        if not out or out[-1] != w:
            out.append(w)
        d += timedelta(days=1)
    return out


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole > 0 else None


def facility_reference(facility: str | None) -> str | None:
    """A facility as the events name it (``Organization/<id>``), from an id or a reference; None for none."""
    if not facility:
        return None
    return facility if facility.startswith("Organization/") else f"Organization/{facility}"


def facility_id(facility: str | None) -> str | None:
    """A facility's id (``tyt-my-hiep``) from a reference (``Organization/tyt-my-hiep``) or an id; None for none."""
    return facility.removeprefix("Organization/") if facility else None


def dashboard(db: Database, start: date, end: date, district: str | None = None, *,
              targets: Targets | None = None, now: datetime | None = None, facility: str | None = None,
              facility_districts: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every figure of the dashboard for ``start``..``end`` (local days, inclusive)."""
    check_range(start, end)
    targets = targets or Targets()
    now = local(now)
    first, last = start.isoformat(), end.isoformat()
    wanted = facility_reference(facility)
    in_use_since = end - timedelta(days=IN_USE_DAYS - 1)
    # events of a day arrive on or after it (a day's grace for publishers' clocks)
    rows = gather(db, ("consults", "acceptance_minutes", "conclusion_minutes", "sla_breaches", "money",
                       "consult_status"), since=min(start, in_use_since) - timedelta(days=1), now=now)

    def within(section: str) -> list[dict[str, Any]]:
        return [r for r in rows[section] if first <= (r["day"] or "") <= last
                and (district is None or r.get("district") == district)
                and (wanted is None or r.get("facility") == wanted)]

    consults = within("consults")
    window = {"since": in_use_since.isoformat(), "until": last}
    facilities = facilities_in_use(rows["consult_status"], window["since"], last, district, wanted)
    if district is None and wanted is None:
        # a facility of the baseline that requested consults is in the baseline already: not new, not twice
        named = {facility_reference(f) for f in targets.baseline_facilities}
        new = len(facilities - named)
        using = min(targets.facility_goal, targets.facility_baseline + new)
        fac: dict[str, Any] = {"count": using, "new": new, "baseline": targets.facility_baseline,
                               "goal": targets.facility_goal, "share": _share(using, targets.facility_goal),
                               "baseline_named": bool(named),
                               "baseline_using": len(facilities & named) if named else None, **window}
    else:  # the baseline and the goal are the province's: no district's or facility's share of them
        fac = {"count": len(facilities), "new": len(facilities), "baseline": None, "goal": None, "share": None,
               "baseline_named": None, "baseline_using": None, **window}

    per_week: dict[tuple[str, str], dict[str, Any]] = {}
    for r in consults:
        key = (r.get("facility") or "", iso_week(r["day"]))
        row = per_week.setdefault(key, {"facility": r.get("facility"), "district": r.get("district"),
                                        "week": key[1], "count": 0})
        row["count"] += r["n"]

    def durations(section: str) -> dict[str, dict[str, Any]]:
        hist: dict[str, dict[int, int]] = {p: defaultdict(int) for p in PRIORITIES}
        for r in within(section):
            if r.get("minutes") is None:
                continue
            hist.setdefault(r.get("priority") or "unknown", defaultdict(int))[int(r["minutes"])] += r["n"]
        out: dict[str, dict[str, Any]] = {}
        for priority, h in hist.items():
            median, p90 = median_and_p90(h)
            out[priority] = {"count": sum(h.values()), "median_minutes": median, "p90_minutes": p90}
        return out

    breaches: dict[tuple[str, str], int] = defaultdict(int)
    for r in within("sla_breaches"):
        breaches[(iso_week(r["day"]), r.get("priority") or "unknown")] += r["n"]

    money = cashless(_money_rows(rows["money"], first, last, district, wanted, facility_districts or {}))
    # what became of the range's unmatched transfers since: the money rows from ``start`` to now; an
    # assignment's transfer among the unmatched of the facility whose queue it came to (``queued``)
    since = {queue: _money_rows(rows["money"], first, LATEST.isoformat(), district, wanted, facility_districts or {},
                                queue=queue) for queue in (False, True)}
    money.update(unmatched_since(since[False], first, last, queued=since[True]))
    # records are counted by the patient's home district, not by the facility that registered them
    coverage = _coverage(db, last, district, targets, now) if wanted is None else {
        "patients": None, "population": None, "share": None, "as_of": last, "population_outdated": False,
        "without_district": 0}

    return {
        "range": {"start": first, "end": last, "district": district, "facility": wanted,
                  "weeks": _weeks(start, end)},
        "facilities_using": fac,
        "consults_per_facility_week": sorted(per_week.values(), key=lambda r: (r["week"], r["facility"] or "")),
        "consults_by_status": consult_statuses(rows["consult_status"], first, last, district, wanted),
        "time_to_answer": durations("acceptance_minutes"),
        "time_to_conclusion": durations("conclusion_minutes"),
        "sla_breaches": [{"week": w, "priority": p, "count": n} for (w, p), n in sorted(breaches.items())],
        "cashless_share": money,
        "ehr_coverage": coverage,
        "generated_at": now.isoformat(timespec="seconds"),
    }


def facilities_in_use(rows: list[dict[str, Any]], first: str, last: str, district: str | None,
                      facility: str | None) -> set[str]:
    """The facilities (``Organization/<id>``) that requested from ``first`` to ``last`` (of ``district``, of
    ``facility``) at least one consult that stands now neither cancelled nor rejected (:func:`_stand`), or one
    whose consult the fact does not name (stored before it was kept: its end is not known, so it counts as
    the figure always counted it). ``rows``: the ``consult_status`` section's from before ``first`` to now."""
    requested, status, unknown = _stand(rows, first, last, district, facility)
    going = {requested[c][0] for c, s in status.items() if s not in ("cancelled", "rejected")}
    return {f for f in going | {f for f, _ in unknown} if f}


def consult_statuses(rows: list[dict[str, Any]], first: str, last: str, district: str | None,
                     facility: str | None) -> list[dict[str, Any]]:
    """Where the consults requested from ``first`` to ``last`` (of ``district``, of ``facility``: their
    request's) stand now, ``[{facility, district, status, count}]`` by facility then :data:`STATUSES`'
    order. ``rows``: the ``consult_status`` section's from before ``first`` to now (a consult's later
    events count whenever they came). A consult's status is its furthest event's (:data:`_STATUS_RANK`);
    a booking names no facility, its request does. Requests with no consult (facts stored before it was
    kept) are ``unknown``, counted, never guessed."""
    requested, status, unknown = _stand(rows, first, last, district, facility)
    counts: dict[tuple[str | None, str | None, str], int] = defaultdict(int)
    for consult, (fac, dist) in requested.items():
        counts[(fac, dist, status[consult])] += 1
    for (fac, dist), n in unknown.items():
        counts[(fac, dist, "unknown")] += n
    order = {s: i for i, s in enumerate((*STATUSES, "unknown"))}
    return [{"facility": f, "district": d, "status": s, "count": n}
            for (f, d, s), n in sorted(counts.items(), key=lambda kv: (kv[0][0] or "", order[kv[0][2]]))]


_Where = tuple[str | None, str | None]  # a request's facility and district


def _stand(rows: list[dict[str, Any]], first: str, last: str, district: str | None, facility: str | None
           ) -> tuple[dict[str, _Where], dict[str, str], dict[_Where, int]]:
    """The consults requested from ``first`` to ``last`` (their request's facility and district), where each
    stands now (its furthest event), and the requests naming no consult counted by facility and district."""
    requested: dict[str, tuple[str | None, str | None]] = {}
    unknown: dict[tuple[str | None, str | None], int] = defaultdict(int)
    for r in rows:
        if r.get("k") != "teleconsult.consult.requested":
            continue
        if not (first <= (r.get("day") or "") <= last) or (district is not None and r.get("district") != district) \
                or (facility is not None and r.get("facility") != facility):
            continue
        if r.get("consult"):
            requested.setdefault(r["consult"], (r.get("facility"), r.get("district")))
        else:
            unknown[(r.get("facility"), r.get("district"))] += r["n"]
    status: dict[str, str] = dict.fromkeys(requested, "waiting")
    for r in rows:
        now = _STATUS_OF.get(str(r.get("k") or ""))
        consult = r.get("consult")
        if now is not None and consult in status and _STATUS_RANK[now] > _STATUS_RANK[status[consult]]:
            status[consult] = now
    return requested, status, unknown


def _coverage(db: Database, last: str, district: str | None, targets: Targets, now: datetime) -> dict[str, Any]:
    """The EHR coverage (the module's ``ehr_coverage``) of the province, or of ``district``, on ``last``."""
    records = patients_by_district(gather(db, ("patients",), now=now)["patients"], last)
    if district is None:
        patients = sum(records.values())
        population: int | None = targets.population
    else:  # (negative only while a move's event has come before the record's registration)
        patients = max(0, records.get(district, 0))
        population = targets.district_populations.get(district)
    outdated = population is not None and patients > population
    share = None if outdated or population is None else _share(patients, population)
    return {"patients": patients, "population": population, "share": share, "as_of": last,
            "population_outdated": outdated, "without_district": max(0, records.get(None, 0))}


def _money_rows(rows: list[dict[str, Any]], first: str, last: str, district: str | None, facility: str | None,
                facility_districts: Mapping[str, str], *, queue: bool = False) -> list[dict[str, Any]]:
    """The ``money`` rows of ``first``..``last`` in ``district`` (a row naming no district: its
    facility's, from ``facility_districts``) and of ``facility`` (an id or a reference). ``queue``: an
    assignment of a transfer that came to another facility's unmatched queue (``from_facility``; "" the
    admins') is that facility's, in its district, where the transfer's arrival is counted; else the
    invoice's facility's (its takings)."""
    wanted = facility_reference(facility)
    out = []
    for r in rows:
        fac = r.get("facility") or ""
        where = r.get("district") or facility_districts.get(fac.removeprefix("Organization/"))
        if queue and r.get("from_facility") is not None:
            fac = r["from_facility"]
            where = facility_districts.get(fac.removeprefix("Organization/"))
        if first <= (r["day"] or "") <= last and (district is None or where == district) \
                and (wanted is None or fac == wanted):
            out.append(r)
    return out


def cashless(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The cashless share and the money told apart from it (the module's ``cashless_share``) from
    ``money`` rows (:data:`.report_facts.SECTIONS`): sums, so any order of events gives the same."""
    got: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])  # (kind, channel, outcome)
    no_facility = 0
    for r in rows:
        kind = "refund" if r.get("k") == "billing.payment.refunded" else "payment"
        cell = got[(kind, r.get("channel") or "", r.get("outcome") or "applied")]
        cell[0] += int(r.get("amount") or 0)
        cell[1] += r["n"]
        if kind == "payment" and r.get("outcome") == "unmatched" and not r.get("facility"):
            no_facility += int(r.get("amount") or 0)

    def paid(channel: str, *outcomes: str, i: int = 0) -> int:
        return sum(got[("payment", channel, o)][i] for o in outcomes)

    def given(*outcomes: str, channels: tuple[str, ...] = ("transfer", "cash")) -> int:
        return sum(got[("refund", c, o)][0] for c in channels for o in outcomes)

    # a refund of applied or assigned money comes off the takings of its channel; of an assignment's
    # (its overpayment given back) off the assigned part of the transfers too: a part within its whole
    takings = {c: paid(c, "applied", "assigned") - given("applied", "assigned", channels=(c,))
               for c in ("transfer", "cash")}
    received = {c: paid(c, "applied", "unmatched", "late") for c in ("transfer", "cash")}
    refunds = given("applied", "assigned", "unmatched", "late")
    t_amount, c_amount = takings["transfer"], takings["cash"]
    return {"transfer_amount": t_amount, "cash_amount": c_amount,
            "share": _share(t_amount, t_amount + c_amount) if min(t_amount, c_amount) >= 0 else None,
            "transfer_count": paid("transfer", "applied", "assigned", i=1),
            "cash_count": paid("cash", "applied", "assigned", i=1),
            "assigned_amount": paid("transfer", "assigned") - given("assigned", channels=("transfer",)),
            "assigned_count": paid("transfer", "assigned", i=1),
            "unmatched_amount": paid("transfer", "unmatched") + paid("cash", "unmatched"),
            "unmatched_count": paid("transfer", "unmatched", i=1) + paid("cash", "unmatched", i=1),
            "unmatched_without_facility": no_facility,
            "late_amount": paid("transfer", "late") + paid("cash", "late"),
            "late_count": paid("transfer", "late", i=1) + paid("cash", "late", i=1),
            "refunds": refunds, "refunds_of_takings": given("applied", "assigned"),
            "refunds_owed": given("unmatched", "late"),
            "received_transfer_amount": received["transfer"], "received_cash_amount": received["cash"],
            "received_count": sum(paid(c, "applied", "unmatched", "late", i=1) for c in ("transfer", "cash")),
            "net": received["transfer"] + received["cash"] - refunds}


def unmatched_since(rows: list[dict[str, Any]], first: str, last: str, *,
                    queued: list[dict[str, Any]] | None = None) -> dict[str, int]:
    """What became of the unmatched transfers that came from ``first`` to ``last`` (billing's daily
    reconciliation's rule), from ``money`` rows of days ``first`` onward (until now): of them, those
    assigned to an invoice (``unmatched_assigned_*``, on whatever day) and given back
    (``unmatched_refunded_*``) since, and those still waiting (``unmatched_waiting_*``, the rest); and
    the range's assignments of transfers that came before ``first`` (``assigned_earlier_*``: in the
    takings of the range, in the unmatched transfers of their own day), the amount net of the range's
    refunds of such assignments (an overpayment given back), as ``assigned_amount`` is. ``queued``:
    the same rows with each assignment where its transfer came (``_money_rows(queue=True)``), for the
    unmatched figures: a transfer that came to facility A's queue, assigned to B's invoice, is A's
    arrival, assigned since (B's figures: its takings and, when it came before, ``assigned_earlier``).
    Billing's events from before they said when an assigned or refunded transfer came (``from_day``
    None): an assignment counts as of an earlier transfer, and its transfer as still waiting; a refund
    of an assignment whose transfer's day is not known comes off no ``assigned_earlier``."""
    queued = rows if queued is None else queued
    came = [r for r in queued if (r["day"] or "") <= last and r.get("outcome") == "unmatched"
            and r.get("k") != "billing.payment.refunded"]
    payments = [r for r in rows if r.get("k") != "billing.payment.refunded"]
    assigned = [r for r in queued if r.get("k") != "billing.payment.refunded" and r.get("outcome") == "assigned"
                and first <= (r.get("from_day") or "") <= last]
    refunded = [r for r in queued if r.get("k") == "billing.payment.refunded" and r.get("outcome") == "unmatched"
                and first <= (r.get("from_day") or "") <= last]
    earlier = [r for r in payments if r.get("outcome") == "assigned" and (r["day"] or "") <= last
               and (r.get("from_day") or "") < first]
    earlier_back = [r for r in rows if r.get("k") == "billing.payment.refunded" and r.get("outcome") == "assigned"
                    and (r["day"] or "") <= last and "" < (r.get("from_day") or "") < first]

    def amount(part: list[dict[str, Any]]) -> int:
        return sum(int(r.get("amount") or 0) for r in part)

    def count(part: list[dict[str, Any]]) -> int:
        return sum(r["n"] for r in part)

    return {"unmatched_assigned_amount": amount(assigned), "unmatched_assigned_count": count(assigned),
            "unmatched_refunded_amount": amount(refunded), "unmatched_refunded_count": count(refunded),
            "unmatched_waiting_amount": amount(came) - amount(assigned) - amount(refunded),
            "unmatched_waiting_count": count(came) - count(assigned) - count(refunded),
            "assigned_earlier_amount": amount(earlier) - amount(earlier_back), "assigned_earlier_count": count(earlier)}


def patients_by_district(rows: list[dict[str, Any]], last: str) -> dict[str | None, int]:
    """Patient records per district (None: no district) from the ``patients`` rows of days up to
    ``last``: a registration adds one to its district, a deletion takes one away, a move takes one
    from ``from_district`` and adds it to ``district``. Sums, so the order events came in does not
    matter; the districts add up to the province's records (a move nets nothing)."""
    out: dict[str | None, int] = defaultdict(int)
    for r in rows:
        if (r["day"] or "") > last:
            continue
        if r["k"] == "ehr.patient.created":
            out[r.get("district")] += r["n"]
        elif r["k"] == "ehr.patient.deleted":
            out[r.get("district")] -= r["n"]
        elif r["k"] in PATIENT_MOVES and r.get("district") != r.get("from_district"):
            out[r.get("district")] += r["n"]
            out[r.get("from_district")] -= r["n"]
    return dict(out)


def csv_rows(section: str, db: Database, start: date, end: date, district: str | None = None, *,
             targets: Targets | None = None, now: datetime | None = None, facility: str | None = None,
             facility_districts: Mapping[str, str] | None = None,
             facility_district: str | None = None) -> tuple[list[str], list[list[Any]]]:
    """One chart's data as a header and rows, for CSV export; with ``facility``, a one-row figure
    names it in a ``facility`` column after the district, and its district column is the facility's
    (``facility_district``, as the filter knows it) when no district was chosen: the page's CSV and the
    API's say the same. A facility column holds the facility's id (``tyt-my-hiep``, as the filter takes
    it and the page's file is named), not its reference."""
    if section not in CSV_SECTIONS:
        raise KeyError(section)
    data = dashboard(db, start, end, district, targets=targets, now=now, facility=facility,
                     facility_districts=facility_districts)
    figure = data[section]
    if section == "consults_per_facility_week":
        return ["week", "facility", "district", "count"], [
            [r["week"], facility_id(r["facility"]), r["district"], r["count"]] for r in figure]
    if section == "consults_by_status":
        return ["facility", "district", "status", "count"], [
            [facility_id(r["facility"]), r["district"], r["status"], r["count"]] for r in figure]
    if section == "sla_breaches":
        return ["week", "priority", "count"], [[r["week"], r["priority"], r["count"]] for r in figure]
    if section in ("time_to_answer", "time_to_conclusion"):
        return ["priority", "count", "median_minutes", "p90_minutes"], [
            [p, v["count"], v["median_minutes"], v["p90_minutes"]] for p, v in figure.items()]
    columns = _SUMMARY_COLUMNS[section]
    scope = [data["range"]["start"], data["range"]["end"], district]
    if data["range"]["facility"]:
        scope[2] = district or facility_district  # one facility's figure: its district, never the province's
        return ["start", "end", "district", "facility", *columns], [
            [*scope, facility_id(data["range"]["facility"]), *(figure[c] for c in columns)]]
    return ["start", "end", "district", *columns], [[*scope, *(figure[c] for c in columns)]]


__all__ = ["CSV_SECTIONS", "PRIORITIES", "STATUSES", "RangeError", "Targets", "cashless", "check_range",
           "consult_statuses", "csv_rows", "dashboard", "facility_id",
           "facility_reference", "patients_by_district", "unmatched_since"]
