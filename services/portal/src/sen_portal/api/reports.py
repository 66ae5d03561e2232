"""Reporting read model endpoints for the health department's dashboard (roles health-dept and admin).

``/api/reports/dashboard`` answers :func:`..domain.dashboard.dashboard` as JSON (the province's, a
district's or one facility's, as the dashboard page's filters),
``/api/reports/{section}.csv`` one chart's data as CSV (UTF-8 with a byte-order mark, so
spreadsheet programs read the Vietnamese right), ``/api/reports/events`` the events counted
per type on one local day.
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta
from typing import Any

from sen_shared.auth import require_roles
from sen_shared.errors import SenError
from sen_shared.responses import json_response
from sen_shared.runtime import current
from sen_shared.spreadsheet import cell

from .. import portal_db
from ..domain.dashboard import RangeError, Targets, check_range, csv_rows, dashboard
from ..domain.report_facts import VN
from ..domain.reporting import gather
from ..web.dashboard import FacilityRefused, Known, districts, facilities, facility_scope
from ..web.directory import org_districts

DEFAULT_DAYS = 84  # twelve weeks


def _day(name: str, value: str | None, default: date) -> date:
    if not value:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise SenError(f"{name} must be a date as YYYY-MM-DD, not {value!r}") from None


def _range(start: str | None, end: str | None) -> tuple[date, date]:
    last = _day("end", end, datetime.now(VN).date())
    try:
        first = _day("start", start, last) if start else last - timedelta(days=DEFAULT_DAYS - 1)
        check_range(first, last)
    except OverflowError:
        raise SenError(f"end {last.isoformat()} leaves no room for a default start: give start") from None
    except RangeError as err:
        raise SenError(str(err)) from None
    return first, last


def _district(district: str | None, first: date, last: date) -> str | None:
    """The district asked for (spaces around it aside), None for the whole province; one the portal's
    dashboard does not know (:func:`..web.dashboard.districts`, the page's own list) is a 400 naming
    the districts it knows, never empty figures."""
    name = (district or "").strip() or None
    if name is None:
        return None
    known = districts(first, last)
    if name not in known:
        raise SenError(f"{name!r} is not one of the province's districts: give one of "
                       f"{', '.join(known) or '(none known yet)'}, or no district for the whole province",
                       title="Unknown district", districts=known)
    return name


def _facility(facility: str | None, district: str | None, first: date, last: date,
              known: Known | None = None) -> str | None:
    """The facility asked for as its id, None for all; one the dashboard does not know
    (:func:`..web.dashboard.facilities`, the page's own list, or ``known`` read already) or not in
    ``district`` is a 400 saying so."""
    if not (facility or "").strip():
        return None
    known = facilities(first, last) if known is None else known
    try:
        return facility_scope(facility, district, first, last, known)
    except FacilityRefused as err:
        if err.code == "unknown":
            raise SenError(f"{err.facility!r} is not one of the province's facilities: give a facility's id "
                           "(its Organization's), or no facility for all of them", title="Unknown facility",
                           facilities=sorted(known)) from None
        raise SenError(f"{err.facility!r} is not in {district!r}: it is in {err.district!r}" if err.district
                       else f"{err.facility!r} is not in {district!r}: its district is not known",
                       title="Facility not in the district", facility_district=err.district) from None


def _targets() -> Targets:
    settings = current().settings
    make = getattr(settings, "report_targets", None)
    return make() if callable(make) else Targets()


@require_roles("health-dept")
def get_dashboard(start: str | None = None, end: str | None = None, district: str | None = None,
                  facility: str | None = None) -> tuple[Any, int, dict[str, str]]:
    first, last = _range(start, end)
    name = _district(district, first, last)
    scope = _facility(facility, name, first, last)
    with portal_db.attempt() as db:
        data = dashboard(db, first, last, name, targets=_targets(), facility=scope,
                         facility_districts=org_districts() if name else None)
    return json_response(data)


@require_roles("health-dept")
def get_csv(section: str, start: str | None = None, end: str | None = None, district: str | None = None,
            facility: str | None = None) -> tuple[Any, int, dict[str, str]]:
    first, last = _range(start, end)
    name = _district(district, first, last)
    known = facilities(first, last) if (facility or "").strip() else {}
    fid = _facility(facility, name, first, last, known)
    # one facility's figure names its district as the page's CSV does (known: the filter's, as the page has it)
    with portal_db.attempt() as db:
        header, rows = csv_rows(section, db, first, last, name, targets=_targets(), facility=fid,
                                facility_districts=org_districts() if name else None,
                                facility_district=known[fid][1] if fid else None)
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([cell(h) for h in header])  # no text runs as a formula, as in the page's CSV (csvfile)
    writer.writerows(["" if v is None else cell(v) for v in row] for row in rows)
    name = f"{section}_{first.isoformat()}_{last.isoformat()}.csv"
    return out.getvalue(), 200, {"Content-Type": "text/csv",  # UTF-8, marked by the BOM
                                 "Content-Disposition": f'attachment; filename="{name}"'}


@require_roles("health-dept")
def event_counts(day: str | None = None) -> tuple[Any, int, dict[str, str]]:
    the_day = _day("day", day, datetime.now(VN).date())
    since = max(the_day, date(1, 1, 2)) - timedelta(days=1)  # the day's events arrive from the day before on
    with portal_db.attempt() as db:
        rows = gather(db, ["events"], since=since)["events"]
    counts: dict[str, int] = {}
    for r in rows:
        if r["day"] == the_day.isoformat():
            kind = (r["k"] or "unknown").replace(".", "_")
            counts[kind] = counts.get(kind, 0) + r["n"]
    return json_response({"day": the_day.isoformat(), "counts": counts})
