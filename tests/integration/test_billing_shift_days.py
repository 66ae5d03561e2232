"""A facility's shifts open at a transfer's time (``shifts.open_during``: the daily report's shift
columns) on the real FerretDB, read from the shifts open now and the range's days' records, never
from the facility's whole history: with 60 closed shifts in history a day's look-up reads that
day's shifts and the open ones (counted by pymongo's command monitoring), and finds what the
whole history says (a reference computed from every link). A close that a crash stopped before
its day records is finished by the next reader; an open-set entry whose link never came is
skipped; two closes at once make one set of records; the backfill (twice at once) gives the
shifts recorded before the records the same answer."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, time, timedelta
from types import SimpleNamespace

import pytest
from sen_billing.domain import shifts
from sen_billing.domain.payments import VN
from sen_shared.claims import advance, latest
from sen_shared.errors import Conflict

from tests.billing_support import counted_db
from tests.support import vn_day_with_room

pytestmark = pytest.mark.integration

FACILITY = "org-a"


@pytest.fixture()
def counted(mongo_url: str, mongo_client):
    with counted_db(mongo_url, mongo_client, "sd") as (db, reads):
        yield db, reads


def _cashier(name: str = "Lê Thị Thu", facility: str = FACILITY) -> SimpleNamespace:
    return SimpleNamespace(sub=f"tn-{uuid.uuid4().hex[:6]}", facility=facility, roles=["cashier"], name=name)


def _old_style(db, who: SimpleNamespace, opened_at: datetime, closed_at: datetime | None) -> str:
    """A shift as the links alone recorded it before the day records and the open set (no entry)."""
    chain = f"shift:{who.sub}"
    sid = uuid.uuid4().hex[:16]
    link = advance(db[shifts.SHIFTS], chain, latest(db[shifts.SHIFTS], chain), {
        "state": "open", "shift": sid, "cashier": who.sub, "cashier_name": who.name, "facility": who.facility,
        "opened_at": opened_at, "opening_cash": 0})
    if closed_at is not None:
        advance(db[shifts.SHIFTS], chain, link, {
            "state": "closed", "shift": sid, "cashier": who.sub, "cashier_name": who.name,
            "facility": who.facility, "opened_at": opened_at, "closed_at": closed_at, "opening_cash": 0,
            "expected": {}, "counted": {}, "difference": {}, "note": ""})
    return sid


def _reference(db, facility: str, start: datetime, end: datetime) -> list[tuple[str, datetime | None]]:
    """What every link of the facility says (the look-up as it was: the whole history)."""
    links = list(db[shifts.SHIFTS].find({"facility": facility}))
    closed = {x["shift"]: x["closed_at"] for x in links if x["state"] == "closed"}
    out = [(x["opened_at"], x["shift"], closed.get(x["shift"])) for x in links if x["state"] == "open"]
    return [(sid, c) for o, sid, c in sorted(out) if o <= end and (c is None or c >= start)]


def _day(d: datetime) -> tuple[datetime, datetime]:
    start = datetime.combine(d.astimezone(VN).date(), time.min, VN)
    return start, start + timedelta(days=1)


def _answer(found: list[dict]) -> list[tuple[str, datetime | None]]:
    return [(s["shift"], s["closed_at"]) for s in found]


def test_a_days_lookup_reads_that_days_shifts_and_the_open_ones_not_the_history(counted) -> None:
    db, reads = counted
    today, _ = _day(datetime.now(UTC))
    # 60 closed shifts over the 30 days before today (two a day), one across a midnight, one still
    # open since three days ago: all as the links alone recorded them, then backfilled
    staff = [_cashier(f"Thu ngân {i}") for i in range(4)]
    for k in range(30, 0, -1):
        day = today - timedelta(days=k)
        for j, hours in enumerate(((7, 12), (13, 17))):
            _old_style(db, staff[j], day + timedelta(hours=hours[0]), day + timedelta(hours=hours[1]))
    night = _old_style(db, staff[2], today - timedelta(hours=2), today + timedelta(hours=3))
    since = _old_style(db, staff[3], today - timedelta(days=3, hours=-8), None)
    _old_style(db, _cashier(facility="org-b"), today + timedelta(hours=1), None)  # another facility's
    assert shifts.backfill_days(db) == {"days": 62, "open": 2}
    # today through the cashiers' own requests: one opened and closed, one opened
    a, b = _cashier("Trần Văn Bình"), _cashier("Ngô Thị C")
    shifts.open_shift(db, a)
    shifts.close_shift(db, a, 0, 0)
    shifts.open_shift(db, b)

    for start, end in (_day(today - timedelta(days=5)), _day(today - timedelta(days=1)), _day(today),
                       (today - timedelta(days=1, hours=-20), today + timedelta(hours=2))):
        reads.commands.clear()
        reads.returned = 0
        reads.on = True
        found = shifts.open_during(db, FACILITY, start, end)
        reads.on = False
        assert _answer(found) == _reference(db, FACILITY, start, end)
        assert all(f["opened_at"] <= f2["opened_at"] for f, f2 in zip(found, found[1:], strict=False))
        # the links are read by _id only (the open ones'), never by facility; what comes back is
        # the range's day records and the open set (2 open now: their open and next links)
        assert all(set(flt) == {"_id"} for _cmd, coll, flt in reads.commands if coll == shifts.SHIFTS), reads.commands
        days = len(shifts.local_days(start, end))
        assert reads.returned <= 2 + 2 * 2 + days * 4, (reads.returned, reads.commands)

    names = {s["shift"]: s for s in shifts.open_during(db, FACILITY, *_day(today))}
    assert night in names and since in names and names[since]["closed_at"] is None
    assert names[night]["cashier_name"] == "Thu ngân 2"


def test_a_close_stopped_before_its_records_is_finished_by_the_next_reader(counted) -> None:
    db, _reads = counted
    who = _cashier()
    opened = shifts.open_shift(db, who)
    # the close link alone, as a crash right after it leaves things: still in the open set, no records
    last = latest(db[shifts.SHIFTS], f"shift:{who.sub}")
    now = datetime.now(UTC)
    advance(db[shifts.SHIFTS], f"shift:{who.sub}", last, {
        "state": "closed", "shift": opened["id"], "cashier": who.sub, "cashier_name": who.name,
        "facility": FACILITY, "opened_at": last["opened_at"], "closed_at": now, "opening_cash": 0,
        "expected": {}, "counted": {}, "difference": {}, "note": ""})
    assert db[shifts.OPEN_SHIFTS].count_documents({"_id": opened["id"]}) == 1
    found = shifts.open_during(db, FACILITY, *_day(now))
    assert [(s["shift"], s["closed_at"] is not None) for s in found] == [(opened["id"], True)]
    assert db[shifts.OPEN_SHIFTS].count_documents({"_id": opened["id"]}) == 0
    assert db[shifts.SHIFT_DAYS].count_documents({"shift": opened["id"]}) == len(
        shifts.local_days(last["opened_at"], now))
    # an entry whose open link never came (a crash between the two) is no shift
    db[shifts.OPEN_SHIFTS].insert_one({"_id": "ghost", "facility": FACILITY, "opened_at": now,
                                       "cashier_name": "", "k": "shift:nobody", "n": 1})
    assert [s["shift"] for s in shifts.open_during(db, FACILITY, *_day(now))] == [opened["id"]]


def test_two_closes_at_once_make_one_close_and_one_set_of_records_while_readers_read(counted) -> None:
    db, _reads = counted
    vn_day_with_room()  # each shift opens and closes within one day in Vietnam: one day record
    for _round in range(5):
        who = _cashier()
        opened = shifts.open_shift(db, who)
        gate = threading.Barrier(4)
        outcomes: list[str] = []
        seen: list[list[tuple[str, bool]]] = []

        def close() -> None:
            gate.wait()
            try:
                shifts.close_shift(db, who, 0, 0)
                outcomes.append("closed")
            except Conflict:
                outcomes.append("409")

        def read() -> None:
            gate.wait()
            for _ in range(3):
                seen.append([(s["shift"], s["closed_at"] is None)
                             for s in shifts.open_during(db, FACILITY, *_day(datetime.now(UTC)))
                             if s["shift"] == opened["id"]])

        threads = [threading.Thread(target=close), threading.Thread(target=close),
                   threading.Thread(target=read), threading.Thread(target=read)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["409", "closed"]
        assert all(len(s) == 1 for s in seen)  # the shift is always found, open or closed, once
        assert db[shifts.OPEN_SHIFTS].count_documents({"_id": opened["id"]}) == 0
        assert db[shifts.SHIFT_DAYS].count_documents({"shift": opened["id"]}) == 1
        found = [s for s in shifts.open_during(db, FACILITY, *_day(datetime.now(UTC))) if s["shift"] == opened["id"]]
        assert len(found) == 1 and found[0]["closed_at"] is not None


def test_the_backfill_twice_at_once_makes_each_record_once(counted) -> None:
    db, _reads = counted
    today, _ = _day(datetime.now(UTC))
    who = _cashier()
    for k in range(1, 11):
        _old_style(db, who, today - timedelta(days=k, hours=-8), today - timedelta(days=k, hours=-16))
    still = _old_style(db, _cashier(), today + timedelta(hours=1), None)
    results: list[dict] = []
    gate = threading.Barrier(2)

    def run() -> None:
        gate.wait()
        results.append(shifts.backfill_days(db))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r["days"] for r in results) == 10 and sum(r["open"] for r in results) == 1
    assert db[shifts.SHIFT_DAYS].count_documents({}) == 10
    assert [d["_id"] for d in db[shifts.OPEN_SHIFTS].find()] == [still]
    start, end = today - timedelta(days=10), today + timedelta(days=1)
    assert _answer(shifts.open_during(db, FACILITY, start, end)) == _reference(db, FACILITY, start, end)
