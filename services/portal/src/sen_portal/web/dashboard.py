"""The health department's dashboard: the reporting read model's figures as charts, with filters
(district, facility, date range) and each chart's data as CSV. The figures come from
``sen_portal.domain.dashboard`` in this process (the portal's own database), no HTTP round trip."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple

from flask import abort, render_template, request, url_for
from flask_babel import format_date, get_locale, gettext, lazy_gettext
from sen_shared.runtime import current

from .. import caches, portal_db
from ..domain.dashboard import CSV_SECTIONS, PRIORITIES, STATUSES, RangeError, check_range, csv_rows
from ..domain.dashboard import dashboard as compute
from . import bp, csvfile, current_user, login_required, said, status_label, xlsxfile
from .directory import org_districts, org_names, org_without_care
from .formatting import TZ
from .forms import DashboardFilter

DEFAULT_DAYS = 84
COLORS = ["#8a1c4a", "#1f5fbf", "#0b6b2e", "#9c3d00", "#5b3a99", "#00696b", "#6b6b00", "#a4161a"]


def districts(start: date | None = None, end: date | None = None) -> list[str]:
    """The district filter's choices, and the only districts the page and its CSVs accept: the
    districts of the province's facilities (the EHR's Organization addresses, which teleconsult
    copies into a consult's events and billing into the consult's invoice and payments) and those
    the province's figures of ``start``..``end`` name; by name. A district typed into the link is
    never added: it is refused (:func:`unknown_district`)."""
    found = set(org_districts().values())
    if start is not None and end is not None:
        try:
            province = figures(start, end, None)
        except RangeError:
            province = {}
        found.update(r["district"] for r in province.get("consults_per_facility_week") or [] if r.get("district"))
    return sorted(found, key=lambda d: (d.casefold(), d))


def unknown_district() -> str:
    """Why a district in the link is not shown, in the user's language (the name itself is not
    repeated: it came from the link, not from the province)."""
    return gettext("The district in the link is not one of the province's districts: choose a district "
                   "from the list, or All districts.")


Known = dict[str, tuple[str, str | None]]  # a facility's id -> (its name, its district)


class FacilityRefused(ValueError):
    """A facility in the link the dashboard does not show: ``unknown`` (not one of the province's) or
    ``elsewhere`` (not in the district chosen; ``district``: its own, None when not known)."""

    def __init__(self, code: str, facility: str, district: str | None = None) -> None:
        super().__init__(code)
        self.code, self.facility, self.district = code, facility, district


def facilities(start: date | None = None, end: date | None = None) -> Known:
    """The facility filter's choices and the only facilities the page, its CSVs and the API accept:
    ``{id: (name, district)}`` of the province's facilities (the EHR's Organizations that give care,
    :func:`.directory.org_without_care`, with their districts read the way :func:`districts` reads
    them) and of those the province's figures of ``start``..``end`` name (by their id when the EHR
    does not name them). One typed into the link is never added."""
    names, where, apart = org_names(), org_districts(), org_without_care()
    found: Known = {fid: (names.get(fid, fid), where.get(fid)) for fid in {*names, *where} - apart}
    if start is not None and end is not None:
        try:
            province = figures(start, end, None)
        except RangeError:
            province = {}
        for r in province.get("consults_per_facility_week") or []:
            fid = (r.get("facility") or "").removeprefix("Organization/")
            if fid and (fid not in found or found[fid][1] is None):
                found[fid] = (names.get(fid, fid), where.get(fid) or r.get("district"))
    return found


def facility_groups(known: Known, district: str | None) -> list[tuple[str, list[tuple[str, str]]]]:
    """The facility select's options grouped by district (only the district chosen, when one is),
    each group and its facilities by name; facilities of no known district last."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for fid, (name, its) in known.items():
        if district is None or its == district:
            groups.setdefault(its or "", []).append((fid, name))
    order = sorted(groups, key=lambda d: (not d, d.casefold(), d))
    return [(d or gettext("District not known"), sorted(groups[d], key=lambda f: (f[1].casefold(), f[0])))
            for d in order]


def facility_scope(asked: str | None, district: str | None, start: date, end: date,
                   known: Known | None = None) -> str | None:
    """The facility asked for (an id, or ``Organization/<id>``; spaces around it aside) as its id, None
    for every facility; :class:`FacilityRefused` when it is not one of :func:`facilities` or not in
    ``district``: never empty figures for a facility the officer cannot have meant."""
    fid = (asked or "").strip().removeprefix("Organization/").strip() or None
    if fid is None:
        return None
    known = facilities(start, end) if known is None else known
    if fid not in known:
        raise FacilityRefused("unknown", fid)
    its = known[fid][1]
    if district is not None and its != district:
        raise FacilityRefused("elsewhere", fid, its)
    return fid


def facility_problem(err: FacilityRefused, district: str | None, known: Known) -> str:
    """Why a facility in the link is not shown, in the user's language (an unknown one is not repeated:
    it came from the link, not from the province)."""
    if err.code == "unknown":
        return gettext("The facility in the link is not one of the province's facilities: choose a facility "
                       "from the list, or All facilities.")
    name = known.get(err.facility, (err.facility, None))[0]
    if err.district is None:
        return gettext("The district of %(facility)s is not known, so it is not shown within %(district)s: "
                       "choose All districts to see it.", facility=name, district=district)
    return gettext("%(facility)s is in %(its)s, not in %(district)s: choose one of the district's facilities, "
                   "or All facilities.", facility=name, its=err.district, district=district)


def _range(form: DashboardFilter) -> tuple[date, date]:
    end = form.end.data or datetime.now(TZ).date()
    start = form.start.data or end - timedelta(days=DEFAULT_DAYS - 1)
    return start, end


def _facility(ref: str | None, names: dict[str, str]) -> str:
    if not ref:
        return gettext("unknown")
    fid = ref.split("/")[-1]
    return names.get(fid, fid)


def week_start(week: str) -> date | None:
    """The Monday of an ISO week (``2026-W37`` -> 2026-09-07), None for anything else."""
    try:
        year, _, number = week.partition("-W")
        return date.fromisocalendar(int(year), int(number), 1)
    except (TypeError, ValueError):
        return None


def week_label(week: str, fmt: str = "dd/MM") -> str:
    """A week as people read it, by its first day (``07/09``): the read model's ISO code (``2026-W37``)
    is for the CSV, not for the charts."""
    monday = week_start(week)
    return format_date(monday, fmt) if monday else week


_PRIORITY = {"routine": lazy_gettext("Routine"), "urgent": lazy_gettext("Urgent"),
             "asap": lazy_gettext("As soon as possible"), "stat": lazy_gettext("Emergency (stat)")}


def priority_label(p: str | None) -> str:
    label = _PRIORITY.get(p or "")
    return said(label) if label is not None else (p or "—")  # translated once a process and language


def consult_status_label(code: str | None) -> str:
    """Where a consult stands (:data:`..domain.dashboard.STATUSES`) in the user's language, as the worklists
    say it (a requested consult waits for the hub); ``unknown``: a request counted before the read model kept
    its consult."""
    if code == "unknown":
        return gettext("Not known (counted before statuses were kept)")
    return status_label("requested" if code == "waiting" else code)


def status_totals(rows: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """The consults by status of every facility shown, in :data:`STATUSES`' order (each, zero included;
    ``unknown`` only when some are)."""
    totals: dict[str, int] = dict.fromkeys(STATUSES, 0)
    for r in rows:
        totals[r["status"]] = totals.get(r["status"], 0) + r["count"]
    return [(s, n) for s, n in totals.items() if n or s != "unknown"]


def facility_series(rows: list[dict[str, Any]], names: dict[str, str]) -> list[tuple[str, dict[str, int], str]]:
    """The weekly consults chart's series, ``(label, {week: count}, colour)``: one a facility, by its reference
    (two facilities of one name, as communes of different districts are, each its own series, its district
    beside its name; their counts were one series, a week's of the one overwriting the other's), each in a
    colour of its own: past :data:`COLORS`' eight, the busiest seven and one grey series of the others
    ("12 other facilities"; the table under the chart lists every facility)."""
    per: dict[str | None, dict[str, int]] = {}
    where: dict[str | None, str | None] = {}
    for r in rows:
        counts = per.setdefault(r["facility"], {})
        counts[r["week"]] = counts.get(r["week"], 0) + r["count"]
        where[r["facility"]] = r.get("district")
    label = {ref: _facility(ref, names) for ref in per}
    named = Counter(label.values())
    label = {ref: f"{text} ({where[ref]})" if named[text] > 1 and where.get(ref) else text
             for ref, text in label.items()}
    ordered = sorted(per, key=lambda ref: (label[ref].casefold(), ref or ""))
    if len(ordered) <= len(COLORS):
        return [(label[ref], per[ref], COLORS[i]) for i, ref in enumerate(ordered)]
    busiest = set(sorted(ordered, key=lambda ref: (-sum(per[ref].values()), label[ref].casefold(), ref or ""))
                  [:len(COLORS) - 1])
    others: dict[str, int] = {}
    for ref in ordered:
        if ref not in busiest:
            for week, n in per[ref].items():
                others[week] = others.get(week, 0) + n
    shown = [ref for ref in ordered if ref in busiest]
    return [*((label[ref], per[ref], COLORS[i]) for i, ref in enumerate(shown)),
            (gettext("%(n)d other facilities", n=len(ordered) - len(shown)), others, "#767676")]


def goal_chart(fu: dict[str, Any]) -> dict[str, Any]:
    """The province's facilities using teleconsultation, before Sen and now, as two bars, and the goal as a line
    across them (Chart.js's own mixed chart: a line dataset on a hidden linear axis from 0 to 1, so the line runs
    the chart's whole width at the goal, not from the middle of one bar to the next), named in the legend with
    its figure ("Mục tiêu: 165 cơ sở"), which no tooltip repeats (its ends' points are on the hidden axis, 0 and
    1); the bars' own legend entry is left out (charts.js: ``inLegend``), their axis says what it counts. The goal
    was a third bar, read as a count of facilities like the others."""
    goal = fu["goal"]
    return {"type": "bar", "data": {"labels": [gettext("Before Sen"), gettext("Using now")], "datasets": [
        {"label": gettext("Facilities"), "data": [fu["baseline"], fu["count"]],
         "backgroundColor": ["#767676", COLORS[0]], "order": 2, "inLegend": False},
        {"type": "line", "label": gettext("Goal: %(goal)d facilities", goal=goal), "xAxisID": "goal",
         "data": [{"x": 0, "y": goal}, {"x": 1, "y": goal}], "borderColor": "#1a1a1a", "backgroundColor": "#1a1a1a",
         "borderWidth": 2, "borderDash": [6, 4], "pointRadius": 0, "pointHitRadius": 0, "pointStyle": "line",
         "order": 1}]},
        "options": {"plugins": {"legend": {"display": True, "labels": {"usePointStyle": True}}},
                    "scales": {"x": {},
                               "goal": {"type": "linear", "display": False, "offset": False, "min": 0, "max": 1},
                               "y": {"beginAtZero": True, "suggestedMax": goal, "grace": "8%",
                                     "ticks": {"precision": 0},
                                     "title": {"display": True, "text": gettext("Number of facilities")}}}}}


def charts(data: dict[str, Any], names: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Chart.js configurations for the six figures."""
    weeks = data["range"]["weeks"]
    labels = [week_label(w) for w in weeks]
    fu = data["facilities_using"]
    breaches: dict[str, dict[str, int]] = {}
    for r in data["sla_breaches"]:
        breaches.setdefault(r["priority"], {})[r["week"]] = r["count"]
    tta = data["time_to_answer"]
    ttc = data.get("time_to_conclusion") or {}
    cash = data["cashless_share"]
    ehr = data["ehr_coverage"]
    # the count axes say what they count; the minutes axis its unit (the legends name the series)
    counted = {"display": True, "text": gettext("Number of consults")}
    stacked = {"scales": {"x": {"stacked": True}, "y": {"stacked": True, "beginAtZero": True,
                                                       "ticks": {"precision": 0}, "title": counted}}}
    if fu.get("goal") is None:  # a district: its facilities that used Sen; the goal is the province's
        facilities = {"type": "bar", "data": {"labels": [gettext("Using now")], "datasets": [
            {"label": gettext("Facilities"), "data": [fu["count"]], "backgroundColor": [COLORS[0]]}]},
            "options": {"indexAxis": "y", "plugins": {"legend": {"display": False}},
                        "scales": {"x": {"beginAtZero": True, "ticks": {"precision": 0}}}}}
    else:
        facilities = goal_chart(fu)

    def series(label: Any, figure: dict[str, Any], field: str, color: str) -> dict[str, Any]:
        return {"label": str(label), "data": [figure.get(p, {}).get(field) for p in PRIORITIES],
                "backgroundColor": color}

    out: dict[str, dict[str, Any]] = {
        "facilities": facilities,
        "consults": {"type": "bar", "data": {"labels": labels, "datasets": [
            {"label": fac, "data": [counts.get(w, 0) for w in weeks], "backgroundColor": color}
            for fac, counts, color in facility_series(data["consults_per_facility_week"], names)]}, "options": stacked,
            "keepEnds": True},  # charts.js: the first and the last week labelled, however narrow
        "answer": {"type": "bar", "data": {"labels": [priority_label(p) for p in PRIORITIES], "datasets": [
            # the medians (a narrow card holds two series); the tables and CSVs give the 90th percentiles
            series(gettext("To acceptance: median (minutes)"), tta, "median_minutes", COLORS[1]),
            series(gettext("To conclusion: median (minutes)"), ttc, "median_minutes", COLORS[3])]},
            "options": {"plugins": {"legend": {"labels": {"boxWidth": 12}}}, "scales": {
                # whole minutes: every median 0 drew 0 to 1 in tenths (review 12)
                "y": {"beginAtZero": True, "ticks": {"precision": 0},
                      "title": {"display": True, "text": gettext("Minutes")}}}}},
        "breaches": {"type": "bar", "data": {"labels": labels, "datasets": [
            {"label": priority_label(p), "data": [breaches.get(p, {}).get(w, 0) for w in weeks],
             "backgroundColor": COLORS[(i + 4) % len(COLORS)]} for i, p in enumerate(PRIORITIES)]},
            "options": stacked, "keepEnds": True},
        "cashless": {"type": "doughnut", "data": {"labels": [gettext("Bank transfer (QR)"), gettext("Cash")],
                                                   "datasets": [{"data": [cash["transfer_amount"], cash["cash_amount"]],
                                                                 "backgroundColor": [COLORS[2], "#c8c8c8"]}]},
                     "money": True},  # charts.js: its tooltips say đồng as the page does, 448.000 ₫
    }
    if ehr.get("share") is not None:  # no ring without a population set, or one smaller than the records
        out["ehr"] = {"type": "doughnut", "data": {
            "labels": [gettext("With an electronic record"), gettext("Without")],
            "datasets": [{"data": [ehr["patients"], max(0, ehr["population"] - ehr["patients"])],
                          "backgroundColor": [COLORS[1], "#c8c8c8"]}]}}
    return out


_figures: dict[tuple[Any, ...], tuple[float, dict[str, Any]]] = caches.kept({})
FIGURES_SECONDS = 15.0  # the read model seals its totals once a minute; every user sees the same aggregate


def figures(start: date, end: date, district: str | None, facility: str | None = None) -> dict[str, Any]:
    """The dashboard's figures, computed at most once per FIGURES_SECONDS per filter in a process
    (aggregates, the same for every health-department user; no patient data)."""
    key = (current().settings.db_name, start, end, district, facility)
    hit = _figures.get(key)
    now = time.monotonic()
    if hit is not None and now - hit[0] < FIGURES_SECONDS:
        return hit[1]
    # a district's money includes the transfers naming only their facility (an unmatched one to its account)
    with portal_db.attempt() as db:  # out of reach (just now in this request too): the handler's 503
        data = compute(db, start, end, district, targets=current().settings.report_targets(),
                       facility=facility, facility_districts=org_districts() if district else None)
    if len(_figures) > 256:
        _figures.clear()
    _figures[key] = (now, data)
    return data


def range_problem(err: RangeError) -> str:
    """Why the dashboard cannot show a date range, in the user's language, dates as dd/MM/yyyy."""
    from ..domain.dashboard import EARLIEST, LATEST, MAX_DAYS

    def d(value: date | None) -> str:
        return format_date(value, "dd/MM/yyyy") if value else "—"

    if err.code == "start-after-end":
        return gettext("The start date %(start)s is after the end date %(end)s: choose a start on or "
                       "before the end.", start=d(err.start), end=d(err.end))
    if err.code == "too-long":
        return gettext("The range is %(days)d days long; the dashboard shows at most %(max)d days at once.",
                       days=err.days or 0, max=MAX_DAYS)
    if err.code == "out-of-bounds":
        return gettext("The date %(day)s is outside the dates the dashboard knows (%(first)s to %(last)s).",
                       day=d(err.day), first=d(EARLIEST), last=d(LATEST))
    return gettext("The date range cannot be shown.")


# the page's CSV: its header in the page's language (the API's CSV, /api/reports, keeps the codes)
_HEADERS = {"week": lazy_gettext("Week (ISO)"), "facility": lazy_gettext("Facility ID"),
            "facility_name": lazy_gettext("Facility"), "district": lazy_gettext("District"),
            "count": lazy_gettext("Count"), "priority": lazy_gettext("Priority"), "status": lazy_gettext("Status"),
            "median_minutes": lazy_gettext("Median (minutes)"),
            "p90_minutes": lazy_gettext("90th percentile (minutes)"),
            "start": lazy_gettext("From"), "end": lazy_gettext("To"),
            "new": lazy_gettext("New facilities"), "baseline": lazy_gettext("Before Sen"),
            "goal": lazy_gettext("Goal"), "share": lazy_gettext("Share (0–1)"),
            # the 30 days a facility counts as in use in (domain.dashboard.IN_USE_DAYS)
            "since": lazy_gettext("In use: from"), "until": lazy_gettext("In use: to"),
            "transfer_amount": lazy_gettext("Bank transfers (đồng)"), "cash_amount": lazy_gettext("Cash (đồng)"),
            "transfer_count": lazy_gettext("Bank transfers (number)"),
            "cash_count": lazy_gettext("Cash payments (number)"),
            # apart from the takings, and billing's daily reconciliation's figures (domain.dashboard)
            "assigned_amount": lazy_gettext("Assigned from the unmatched queue (đồng)"),
            "unmatched_amount": lazy_gettext("Unmatched transfers (đồng)"),
            "unmatched_assigned_amount": lazy_gettext("Unmatched transfers: assigned to invoices since (đồng)"),
            "unmatched_refunded_amount": lazy_gettext("Unmatched transfers: given back since (đồng)"),
            "unmatched_waiting_amount": lazy_gettext("Unmatched transfers: still waiting (đồng)"),
            "assigned_earlier_amount": lazy_gettext(
                "Assigned from transfers that came before the period, less what was given back of them (đồng)"),
            "unmatched_without_facility": lazy_gettext("Unmatched, to accounts of no facility (đồng)"),
            "late_amount": lazy_gettext("Late transfers owed back (đồng)"),
            "refunds": lazy_gettext("Given back (đồng)"),
            "refunds_of_takings": lazy_gettext("Given back of takings (đồng)"),
            "refunds_owed": lazy_gettext("Given back of late or unmatched transfers (đồng)"),
            "received_transfer_amount": lazy_gettext("Transfers received, as the daily report (đồng)"),
            "received_cash_amount": lazy_gettext("Cash received, as the daily report (đồng)"),
            "net": lazy_gettext("Net takings, as the daily report (đồng)"),
            "patients": lazy_gettext("Patients with a record"), "population": lazy_gettext("Population"),
            "as_of": lazy_gettext("As of")}


def page_csv(header: list[str], rows: list[list[Any]], names: dict[str, str]) -> tuple[list[str], list[list[Any]]]:
    """The export's header in the page's language, and its rows (:func:`page_table`)."""
    keys, rows = page_table(header, rows, names)
    return labels(keys), rows


def labels(keys: list[str], own: dict[str, Any] | None = None) -> list[str]:
    """The columns' names in the page's language (``own``: a file's own, before the CSV's)."""
    return [str((own or {}).get(h) or _HEADERS.get(h) or h) for h in keys]


def page_table(header: list[str], rows: list[list[Any]],
               names: dict[str, str]) -> tuple[list[str], list[list[Any]]]:
    """The export's columns (``csv_rows``'s keys) and rows: beside a facility's id (kept for machines), its name;
    a priority (``routine``, ``urgent``...) by its name in the page's language, as the chart says it;
    a one-row figure's district by its name, or "Whole province" when the figure is the province's (one
    facility's: its district, as :func:`csv_rows` gives it for the page and the API alike; empty when not
    known, never the province)."""
    if header[:3] == ["start", "end", "district"]:
        def scope(row: list[Any]) -> str:
            if row[2]:
                return row[2]
            return "" if header[3:4] == ["facility"] and row[3] else gettext("Whole province")

        rows = [[*row[:2], scope(row), *row[3:]] for row in rows]
    if "priority" in header:
        at = header.index("priority")
        rows = [[*row[:at], priority_label(row[at]) if row[at] else row[at], *row[at + 1:]] for row in rows]
    if "status" in header:
        at = header.index("status")
        rows = [[*row[:at], consult_status_label(row[at]), *row[at + 1:]] for row in rows]
    if "facility" in header:
        at = header.index("facility") + 1
        header = [*header[:at], "facility_name", *header[at:]]
        rows = [[*row[:at], _facility(row[at - 1], names) if row[at - 1] else "", *row[at:]] for row in rows]
    return header, rows


def _district(form: DashboardFilter) -> str | None:
    return (form.district.data or "").strip() or None


def has_figures(data: dict[str, Any]) -> bool:
    """Whether the figures count anything of their own (a facility's: a consult, a time, a breach or money)."""
    money = data["cashless_share"]
    return bool(data["consults_per_facility_week"] or data["sla_breaches"]
                or any(v.get("count") for v in (*data["time_to_answer"].values(),
                                                 *(data.get("time_to_conclusion") or {}).values()))
                or any(money.get(k) for k in ("transfer_count", "cash_count", "received_count", "unmatched_count",
                                              "late_count", "refunds")))


@bp.route("/dashboard")
@login_required("health-dept")
def dashboard() -> Any:
    form = DashboardFilter(request.args)
    problem, data, choices, known, district, chosen = None, None, None, None, None, None
    shown: str | None = None  # the district the select shows when the link names only a facility
    if form.validate():
        start, end = _range(form)
        for box, day in ((form.start, start), (form.end, end)):  # the boxes say the period shown, a default too
            box.data, box.raw_data = day, None  # (a box sent empty rendered what was sent, not the data)
        district = form.district.data = _district(form)
        try:
            check_range(start, end)  # a range it cannot show is said whether or not the database answers
            choices = districts(start, end)
            known = facilities(start, end)
            if district is not None and district not in choices:
                problem, form.district.data = unknown_district(), None  # refused: not kept on the page
                district = None
            else:
                chosen = form.facility.data = facility_scope(form.facility.data, district, start, end, known)
                data = figures(start, end, district, chosen)
                if chosen and district is None and known[chosen][1] in choices:
                    # the district select says the chosen facility's district, as the heading does, and the
                    # facility select lists that district's facilities (as when the district is chosen); the
                    # figures stay the facility's own (the link asked for no district)
                    form.district.data = shown = known[chosen][1]
        except RangeError as err:
            problem = range_problem(err)
        except FacilityRefused as err:
            problem, form.facility.data = facility_problem(err, district, known or {}), None
    else:
        problem = gettext("Please correct the highlighted fields.")
    known = known if known is not None else facilities()
    facility_shown = (chosen, *known[chosen]) if chosen else None
    return render_template("dashboard.html", problem=problem, data=data,
                           filter_part=filter_part(form, choices if choices is not None else districts(),
                                                   facility_groups(known, shown or district)),
                           figures_part=figures_part(data, facility_shown) if data else None,
                           chosen=facility_shown, title=gettext("Health department dashboard")), 200 if data else 400


# the filter's part of the page as rendered, by all it shows (the language, the boxes' values, the choices)
_filters: dict[tuple[Any, ...], str] = caches.kept({})


def filter_part(form: DashboardFilter, choices: list[str], groups: list[tuple[str, list[tuple[str, str]]]]) -> str:
    """The filter (``_dashboard_filter.html``: the period's boxes, the district and facility selects), kept as
    rendered when every box shows its value (none refused: no box holds what was typed, no error) under a key
    of everything it shows: the language, the values, the districts and the facilities by district. The two
    date boxes' widgets and the selects' hundred options were a fifth of the page's CPU once the figures were
    kept (:func:`figures_part`)."""
    boxes = (form.start, form.end, form.district, form.facility)
    shown_as_data = not form.errors and form.start.raw_data is None and form.end.raw_data is None
    key = (str(get_locale()), *(box.data for box in boxes), tuple(choices),
           tuple((group, tuple(members)) for group, members in groups)) if shown_as_data else None
    hit = _filters.get(key) if key is not None else None
    if hit is not None:
        return hit
    html = render_template("_dashboard_filter.html", form=form, districts=choices, facility_groups=groups)
    if key is not None:
        if len(_filters) >= PARTS_KEPT:
            _filters.clear()
        _filters[key] = html
    return html


# the figures' part of the page as rendered, by what else it reads (the link, the facility shown, the language,
# the role, the site's path): (the figures, the facility names it was rendered from, the HTML)
_parts: dict[tuple[Any, ...], tuple[dict[str, Any], dict[str, str], str]] = caches.kept({})
PARTS_KEPT = 256


def figures_part(data: dict[str, Any], chosen: tuple[str, str, str | None] | None) -> str:
    """The figures' part of the page (``_dashboard_figures.html``: the cards, their charts' data, tables and
    downloads), rendered again only when its figures or the facility names are other objects than last time
    (:func:`figures` keeps a filter's figures FIGURES_SECONDS, :func:`.directory.org_names` the names ten
    minutes: a new computation is a new object, so the part is never older than the figures the page would
    show) or the link, the language or the role differ. Every health-department user of a filter sees the
    same figures; rendering them (the charts' JSON, ~110 translated strings, the tables) was two thirds of
    the page's CPU."""
    names = org_names()
    user = current_user()
    key = (request.query_string, request.script_root, chosen, str(get_locale()), user.role if user else None)
    hit = _parts.get(key)
    if hit is not None and hit[0] is data and hit[1] is names:
        return hit[2]
    configs = charts(data, names)
    html = render_template(  # HTML, escaped as it was rendered (the page shows it |safe)
        "_dashboard_figures.html", data=data, chosen=chosen,
        configs={k: json.dumps(v, ensure_ascii=False).replace("</", "<\\/") for k, v in configs.items()},
        empty=bool(chosen and not has_figures(data)), query=request.query_string.decode(),
        facility=lambda ref: _facility(ref, names), week_label=week_label,
        consult_status_label=consult_status_label, status_totals=status_totals)
    if len(_parts) >= PARTS_KEPT:
        _parts.clear()
    _parts[key] = (data, names, html)
    return html


def _csv_refused(message: str) -> Any:
    return render_template("error.html", title=gettext("The data cannot be downloaded"), message=message,
                           back=url_for("web.dashboard"), back_label=gettext("Back to the dashboard")), 400


@bp.route("/dashboard/<section>.csv")
@login_required("health-dept")
def dashboard_csv(section: str) -> Any:
    """One chart's figures as CSV, for machines (a decimal point, ISO dates) and Excel in English."""
    table = _export(section)
    if not isinstance(table, Export):
        return table
    return csvfile.download(labels(table.keys), table.rows, f"{table.name}.csv")


# the workbook's header where it differs from the CSV's: its share is a percentage (the CSV's, 0 to 1)
_XLSX_HEADERS = {"share": lazy_gettext("Share")}


@bp.route("/dashboard/<section>.xlsx")
@login_required("health-dept")
def dashboard_xlsx(section: str) -> Any:
    """One chart's figures as an Excel workbook (``xlsxfile``): the same rows as its CSV, typed, for Excel
    with Vietnamese regional settings, which misreads the CSV's decimal points and splits its columns."""
    table = _export(section)
    if not isinstance(table, Export):
        return table
    return xlsxfile.download(table.keys, labels(table.keys, _XLSX_HEADERS), table.rows, f"{table.name}.xlsx",
                             section)


class Export(NamedTuple):
    """A chart's figures for a download: its columns (``csv_rows``'s keys), its rows in the page's language
    and the file's name without its extension."""

    keys: list[str]
    rows: list[list[Any]]
    name: str


def _export(section: str) -> Export | Any:
    """The figures of the chart ``section`` the link's filter asks for, or the readable page refusing it."""
    if section not in CSV_SECTIONS:
        abort(404)
    form = DashboardFilter(request.args)
    if not form.validate():
        return _csv_refused(gettext("The dates in the link are not valid dates: choose them on the dashboard."))
    start, end = _range(form)
    district = _district(form)
    known: Known = {}
    try:
        check_range(start, end)
        if district is not None and district not in districts(start, end):
            return _csv_refused(unknown_district())
        known = facilities(start, end)
        chosen = facility_scope(form.facility.data, district, start, end, known)
        with portal_db.attempt() as db:
            header, rows = csv_rows(section, db, start, end, district,
                                    targets=current().settings.report_targets(), facility=chosen,
                                    facility_districts=org_districts() if district else None,
                                    facility_district=known[chosen][1] if chosen else None)
    except RangeError as err:
        return _csv_refused(range_problem(err))
    except FacilityRefused as err:
        return _csv_refused(facility_problem(err, district, known))
    keys, rows = page_table(header, rows, org_names() if "facility" in header else {})
    scope = f"{chosen}_" if chosen else ""
    return Export(keys, rows, f"{section}_{scope}{start.isoformat()}_{end.isoformat()}")
