"""The doctor moves, cancels or marks no-show a booked video visit from the consult page; the clinic's
consult page shows what became of it. Flask's test client; the teleconsult service is a scripted fake
at the HTTP transport (``sen_shared.http.request``): it answers as teleconsult's operations do
(``$find``, ``$reschedule``, ``$cancel``, ``$noshow``; 409 for a taken slot, a visit that is no longer
booked, a no-show before the start) and lets a test change the visit "by someone else" between two
clicks. The real service is exercised in ``tests/integration/test_portal_visit_changes.py``."""

from __future__ import annotations

import copy
import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
from sen_shared import http

from tests.support import csrf_token, portal_app, portal_signed_in

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
TID, SR, PATIENT = "t-1", "sr-1", "Patient/p-1"


def _iso(dt: datetime) -> str:
    return dt.astimezone(TZ).isoformat(timespec="seconds")


def _outcome(status: int, text: str) -> http.Response:
    body = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "conflict",
                                                          "diagnostics": text}]}
    return http.Response(status, {}, json.dumps(body).encode())


class FakeTeleconsult:
    """The consult ``t-1`` (in progress) and its appointments, as teleconsult would keep them."""

    @classmethod
    def answering(cls, monkeypatch: pytest.MonkeyPatch) -> Any:
        """One, its visit tomorrow at this minute, answering the portal's HTTP calls (at the transport)."""
        fake = cls(datetime.now(TZ).replace(second=0, microsecond=0) + timedelta(days=1))
        monkeypatch.setattr(http, "request", fake)
        return fake

    def __init__(self, start: datetime) -> None:
        self.down = False
        self.taken: set[str] = set()  # slots someone else books just before the doctor's click
        self.calls: list[tuple[str, str, Any]] = []
        self.appts: dict[str, dict[str, Any]] = {}
        self.seq = 0
        self.week: int | None = None  # set: $find offers this many 30-minute times a day from 08:00, as asked
        self.puts: list[dict[str, Any]] = []  # the doctor's Schedule as the availability page saved it
        self.schedule: dict[str, Any] = {"resourceType": "Schedule", "id": "sch-an", "active": True,
                                         "actor": [{"reference": "Practitioner/bs-nguyen-van-an"}], "extension": []}
        self.searches: list[Any] = []  # the Appointment searches' parameters
        self.book(start)

    def book(self, start: datetime, status: str = "booked") -> dict[str, Any]:
        self.seq += 1
        aid = f"a-{self.seq}"
        self.appts[aid] = {
            "resourceType": "Appointment", "id": aid, "status": status, "start": _iso(start),
            "end": _iso(start + timedelta(minutes=30)), "slot": [{"reference": f"Slot/s-{start:%d%H%M}"}],
            "basedOn": [{"reference": f"ServiceRequest/{SR}"}],
            "meta": {"lastUpdated": f"2026-12-05T00:00:{self.seq:02d}Z"},
            "participant": [{"actor": {"reference": PATIENT}, "status": "accepted"},
                            {"actor": {"reference": "Practitioner/bs-nguyen-van-an"}, "status": "accepted"}]}
        return self.appts[aid]

    def change(self, aid: str, status: str, reason: str | None = None) -> None:
        self.seq += 1
        a = self.appts[aid]
        a["status"] = status
        a["meta"] = {"lastUpdated": f"2026-12-05T00:00:{self.seq:02d}Z"}
        if reason:
            a["cancelationReason"] = {"text": reason}

    def active(self) -> list[dict[str, Any]]:
        return [a for a in self.appts.values() if a["status"] in ("booked", "pending")]

    def __call__(self, method: str, url: str, *, timeout: float, params: Any = None, json: Any = None,
                 **_: Any) -> http.Response:
        parts = urlsplit(url)
        path = parts.path
        self.calls.append((method, path, json))
        if self.down:
            raise http.Unreachable("connection refused")
        if "/fhir/Task" in path and method == "GET":
            task = {"resourceType": "Task", "id": TID, "status": "in-progress", "intent": "order",
                    "priority": "urgent", "for": {"reference": PATIENT}, "authoredOn": "2026-12-04T08:00:00+07:00",
                    "basedOn": [{"reference": f"ServiceRequest/{SR}"}],
                    "requester": {"reference": "Organization/tyt-my-hiep"},
                    "owner": {"reference": "Practitioner/bs-nguyen-van-an"}}
            sr = {"resourceType": "ServiceRequest", "id": SR, "status": "active", "intent": "order",
                  "subject": {"reference": PATIENT}, "note": [{"text": "Xin ý kiến."}]}
            return self._bundle([task, sr])
        if path.endswith("/fhir/Appointment") and method == "GET":
            self.searches.append(params)
            return self._bundle(self._search(params))
        if path.endswith("/fhir/Schedule") and method == "GET":
            return self._bundle([copy.deepcopy(self.schedule)])
        if path.endswith("/fhir/Schedule/sch-an") and method == "PUT":
            self.puts.append(json)
            self.schedule = copy.deepcopy(json)
            return self._json(json)
        if path.endswith("/fhir/Patient") and method == "GET":  # the EHR: the consult's patient
            return self._bundle([{"resourceType": "Patient", "id": "p-1",
                                  "name": [{"family": "Lê", "given": ["Thị", "Mai"]}]}])
        if path.endswith("/fhir/Appointment/$find") and self.week is not None:
            return self._bundle(self._week_of_times(json or {}))
        if path.endswith("/fhir/Appointment/$find"):
            first = datetime.now(TZ).replace(hour=8, minute=0, second=0, microsecond=0) + timedelta(days=2)
            slots = [first + timedelta(minutes=30 * i) for i in range(3)]
            return self._bundle([{"resourceType": "Appointment", "status": "proposed", "start": _iso(s),
                                  "end": _iso(s + timedelta(minutes=30)),
                                  "slot": [{"reference": f"Slot/s-{s:%d%H%M}"}]} for s in slots])
        m = re.search(r"/fhir/Appointment/([^/]+)/\$(\w+)$", path)
        if m and method == "POST":
            return self._operation(m.group(1), m.group(2), json or {})
        if method == "GET":  # the EHR: names, the hub's doctors; nothing to say here
            return self._bundle([])
        return _outcome(404, f"no fake for {method} {path}")

    def _search(self, params: Any) -> list[dict[str, Any]]:
        """As teleconsult's Appointment search: ``based-on``, ``practitioner``, ``status`` (a list) and
        ``date`` (ge/le, repeated) narrow the appointments; other parameters are not faked."""
        pairs = list(params.items()) if isinstance(params, dict) else list(params or [])
        out = list(copy.deepcopy(self.appts).values())
        for name, value in pairs:
            if name == "status":
                out = [a for a in out if a["status"] in value.split(",")]
            elif name == "practitioner":
                out = [a for a in out if any(p["actor"]["reference"] in value.split(",") for p in a["participant"])]
            elif name == "date":
                bound = datetime.fromisoformat(value[2:].replace("Z", "+00:00"))
                keep = {"ge": lambda s: s >= bound, "le": lambda s: s <= bound}[value[:2]]
                out = [a for a in out if keep(datetime.fromisoformat(a["start"]))]
        return out

    def _week_of_times(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """As teleconsult's $find: the free times starting in [start, end), earliest first, at most _count."""
        p = {x["name"]: x.get("valueDateTime", x.get("valueInteger")) for x in body.get("parameter") or []}
        start, end = datetime.fromisoformat(p["start"]), datetime.fromisoformat(p["end"])
        out, day = [], start.astimezone(TZ).replace(hour=8, minute=0, second=0, microsecond=0)
        while day < end and len(out) < p["_count"]:
            for i in range(self.week or 0):
                s = day + timedelta(minutes=30 * i)
                if start <= s < end and len(out) < p["_count"]:
                    out.append({"resourceType": "Appointment", "status": "proposed", "start": _iso(s),
                                "end": _iso(s + timedelta(minutes=30)), "slot": [{"reference": f"Slot/s-{s:%d%H%M}"}]})
            day += timedelta(days=1)
        return out

    def _operation(self, aid: str, op: str, body: dict[str, Any]) -> http.Response:
        appt = self.appts.get(aid)
        if appt is None:
            return _outcome(404, f"Appointment/{aid} is not known")
        params = {p["name"]: p.get("resource", p.get("valueString")) for p in body.get("parameter") or []}
        if op == "cancel":
            if appt["status"] == "cancelled":  # teleconsult answers a second cancel as done
                return self._json(appt)
            if appt["status"] not in ("booked", "pending"):
                return _outcome(409, f"Appointment/{aid} is {appt['status']}: it cannot be cancelled")
            self.change(aid, "cancelled", params.get("reason"))
            return self._json(appt)
        if op == "noshow":
            if appt["status"] != "booked":
                return _outcome(409, f"Appointment/{aid} is {appt['status']}: it cannot be noshow")
            if datetime.fromisoformat(appt["start"]) > datetime.now(TZ):
                return _outcome(409, f"Appointment/{aid} has not started yet: it cannot be a no-show")
            self.change(aid, "noshow")
            return self._json(appt)
        if op == "reschedule":
            if appt["status"] not in ("booked", "pending"):
                return _outcome(409, f"Appointment/{aid} is {appt['status']}: it cannot be rescheduled")
            proposal = params["appointment-resource"]
            slot = proposal["slot"][0]["reference"]
            if slot[5:] in self.taken:
                return _outcome(409, f"{slot} is already booked by another appointment; find another slot")
            new = self.book(datetime.fromisoformat(proposal["start"]))
            new["slot"] = proposal["slot"]
            self.change(aid, "cancelled", "rescheduled")
            return self._json(new)
        return _outcome(404, f"no fake for ${op}")

    @staticmethod
    def _json(body: Any) -> http.Response:
        return http.Response(200, {}, json.dumps(body).encode())

    def _bundle(self, resources: list[dict[str, Any]]) -> http.Response:
        return self._json({"resourceType": "Bundle", "type": "searchset",
                           "entry": [{"resource": r} for r in resources]})


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeTeleconsult:
    return FakeTeleconsult.answering(monkeypatch)


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: FakeTeleconsult):
    # the fake answers at the transport: the URL is never reached; no kept answers, so another
    # user's change shows on the next page at once
    return portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9", SEN_PORTAL_CACHE_SECONDS="0")


def _text(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def _page(c: Any) -> str:
    r = c.get(f"/tasks/{TID}")
    assert r.status_code == 200, r.get_data(as_text=True)[:800]
    return r.get_data(as_text=True)


def _move_buttons(page: str) -> list[dict[str, str]]:
    forms = re.findall(r'<form method="post" action="/tasks/t-1/visit/move".*?</form>', page, re.S)
    return [dict(re.findall(r'name="(\w+)" value="([^"]*)"', f)) for f in forms]


def _find(c: Any, page: str) -> str:
    assert '<form method="get" action="/tasks/t-1/slots"' in page  # a GET: its fields in the address
    r = c.get(f"/tasks/{TID}/slots", query_string={"start": datetime.now(TZ).strftime("%d/%m/%Y"), "days": "7"})
    assert r.status_code == 200, r.get_data(as_text=True)[:800]
    return r.get_data(as_text=True)


def test_the_booked_visit_card_offers_move_cancel_and_no_no_show_before_its_time(app, fake):
    c = portal_signed_in(app, "doctor")
    page = _page(c)
    text = _text(page)
    assert "Đổi lịch" in text and "Hủy lịch" in text
    assert 'data-testid="visit-noshow"' not in page  # the visit is tomorrow
    assert 'action="/tasks/t-1/book"' not in page  # booked: no second visit offered


def test_the_doctor_moves_the_visit_and_the_page_shows_the_new_time(app, fake):
    c = portal_signed_in(app, "doctor")
    found = _find(c, _page(c))
    assert 'data-testid="visit-move" open' in found  # the times are shown inside the opened "move" box
    buttons = _move_buttons(found)
    assert len(buttons) == 3 and all(b["appointment"] == "a-1" for b in buttons)
    assert 'aria-label="Chuyển sang ' in found  # each button: the time, read out whole
    chosen = buttons[1]
    r = c.post(f"/tasks/{TID}/visit/move", data=chosen)
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/tasks/{TID}")  # "moved": flashed
    sent = [b for m, p, b in fake.calls if p.endswith("/a-1/$reschedule")]
    assert len(sent) == 1
    proposal = sent[0]["parameter"][0]["resource"]
    assert proposal["slot"] == [{"reference": f"Slot/{chosen['slot']}"}]
    assert proposal["participant"][0]["actor"] == {"reference": PATIENT}
    assert proposal["basedOn"] == [{"reference": f"ServiceRequest/{SR}"}]
    page = c.get(r.headers["Location"]).get_data(as_text=True)
    new_start = datetime.fromisoformat(chosen["start"]).astimezone(TZ)
    assert f"{new_start:%d/%m/%Y %H:%M}" in _text(page.split('data-testid="visit-time"')[1])
    assert "Đã dời lịch hội chẩn video sang" in _text(page)
    # said once, after the move: a reload (Back, a shared link) shows the visit without saying it moved again
    again = c.get(r.headers["Location"]).get_data(as_text=True)
    assert "Đã dời lịch hội chẩn video sang" not in _text(again) and 'class="alert ok"' not in again
    assert f"{new_start:%d/%m/%Y %H:%M}" in _text(again.split('data-testid="visit-time"')[1])
    # the clinic's consult page shows the new time, not the old one it was moved from
    clinic = portal_signed_in(app, "clinic")
    cpage = clinic.get(f"/consults/{TID}").get_data(as_text=True)
    assert f"{new_start:%d/%m/%Y %H:%M}" in _text(cpage.split('data-testid="visit-time"')[1])
    assert 'data-testid="visit-ended"' not in cpage


def test_a_time_taken_just_before_the_click_says_so_and_keeps_the_visit(app, fake):
    c = portal_signed_in(app, "doctor")
    chosen = _move_buttons(_find(c, _page(c)))[0]
    fake.taken.add(chosen["slot"])  # someone else books it meanwhile
    r = c.post(f"/tasks/{TID}/visit/move", data=chosen)
    assert r.status_code == 409
    text = _text(r.get_data(as_text=True))
    old = datetime.fromisoformat(fake.appts["a-1"]["start"])
    assert "Giờ này vừa có người khác đặt" in text and f"{old:%d/%m/%Y %H:%M}" in text
    assert "already booked" not in text  # the portal's words, not the back-end's
    assert fake.appts["a-1"]["status"] == "booked" and len(fake.active()) == 1


def test_a_visit_moved_by_someone_else_meanwhile_is_not_moved_again(app, fake):
    c = portal_signed_in(app, "doctor")
    chosen = _move_buttons(_find(c, _page(c)))[0]
    other = fake.book(datetime.now(TZ) + timedelta(days=5))  # another tab moved it
    fake.change("a-1", "cancelled", "rescheduled")
    r = c.post(f"/tasks/{TID}/visit/move", data=chosen)
    assert r.status_code == 409
    page = r.get_data(as_text=True)
    assert "đã được người khác thay đổi" in _text(page)
    assert not [p for m, p, b in fake.calls if p.endswith("$reschedule")]  # nothing sent for the stale visit
    shown = datetime.fromisoformat(other["start"]).astimezone(TZ)
    assert f"{shown:%d/%m/%Y %H:%M}" in _text(page.split('data-testid="visit-time"')[1])  # the state now


def test_the_doctor_cancels_with_a_reason_and_can_book_again(app, fake):
    c = portal_signed_in(app, "doctor")
    page = _page(c)
    r = c.post(f"/tasks/{TID}/visit/cancel", data={"csrf_token": csrf_token(page), "appointment": "a-1",
                                                   "visit-reason": ""})
    assert r.status_code == 422  # a reason is required
    assert "Nêu lý do." in _text(r.get_data(as_text=True))
    assert 'data-testid="visit-cancel" open' in r.get_data(as_text=True)
    assert fake.appts["a-1"]["status"] == "booked"
    sent = {"csrf_token": csrf_token(page), "appointment": "a-1", "visit-reason": "Bệnh nhân chuyển viện"}
    r = c.post(f"/tasks/{TID}/visit/cancel", data=sent)  # the first press: the step, nothing sent
    assert r.status_code == 200 and fake.appts["a-1"]["status"] == "booked"
    r = c.post(f"/tasks/{TID}/visit/cancel", data={**sent, "confirming": "visit-cancel", "confirm": "visit-cancel"})
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/tasks/{TID}")
    assert fake.appts["a-1"]["cancelationReason"] == {"text": "Bệnh nhân chuyển viện"}
    page = c.get(r.headers["Location"]).get_data(as_text=True)
    text = _text(page)
    assert "Đã hủy lịch hội chẩn video" in text and "Bệnh nhân chuyển viện" in text
    assert 'data-testid="visit-move"' not in page
    found = _find(c, page)  # free times again, each to book
    assert len(re.findall(r'action="/tasks/t-1/book"', found)) == 3
    # the clinic sees it cancelled, with the reason, and what to do
    cpage = _text(portal_signed_in(app, "clinic").get(f"/consults/{TID}").get_data(as_text=True))
    assert "đã bị hủy" in cpage and "Bệnh nhân chuyển viện" in cpage and "Vào phòng" not in cpage
    assert "hẹn giờ mới" in cpage


def test_cancelling_a_visit_someone_else_cancelled_meanwhile_says_so(app, fake):
    c = portal_signed_in(app, "doctor")
    page = _page(c)
    fake.change("a-1", "cancelled", "Phòng khám báo bận")
    r = c.post(f"/tasks/{TID}/visit/cancel", data={"csrf_token": csrf_token(page), "appointment": "a-1",
                                                   "visit-reason": "Trùng lịch"})
    assert r.status_code == 409
    text = _text(r.get_data(as_text=True))
    assert "đã bị người khác hủy" in text and "Phòng khám báo bận" in text  # the state now, with its reason
    assert not [p for m, p, b in fake.calls if p.endswith("$cancel")]


def test_no_show_is_offered_once_the_visit_began_and_the_clinic_sees_it(app, fake):
    fake.appts.clear()
    fake.book(datetime.now(TZ) - timedelta(minutes=20))
    c = portal_signed_in(app, "doctor", "en")
    page = _page(c)
    assert 'data-testid="visit-noshow"' in page and "Patient did not attend" in page
    sent = {"csrf_token": csrf_token(page), "appointment": "a-2"}
    # no undo: the first press sends nothing and asks, as "Cancel the visit" does (review 7: one click did it)
    r = c.post(f"/tasks/{TID}/visit/noshow", data=sent)
    asked = r.get_data(as_text=True)
    assert r.status_code == 200 and 'name="confirm" value="visit-noshow"' in asked
    assert "cannot be undone" in _text(asked) and 'data-testid="noshow-confirm"' in asked
    assert fake.appts["a-2"]["status"] == "booked" and not [p for m, p, b in fake.calls if p.endswith("$noshow")]
    r = c.post(f"/tasks/{TID}/visit/noshow", data={**sent, "confirming": "visit-noshow"})  # the step, unticked
    assert r.status_code == 400 and "Tick the box to confirm" in _text(r.get_data(as_text=True))
    assert fake.appts["a-2"]["status"] == "booked"
    r = c.post(f"/tasks/{TID}/visit/noshow", data={**sent, "confirming": "visit-noshow", "confirm": "visit-noshow"})
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/tasks/{TID}")
    text = _text(c.get(r.headers["Location"]).get_data(as_text=True))
    assert "the patient did not attend" in text and "Book another time below." in text
    cpage = _text(portal_signed_in(app, "clinic").get(f"/consults/{TID}").get_data(as_text=True))
    assert "Người bệnh không tham gia buổi khám" in cpage and "hẹn giờ mới" in cpage


def test_a_no_show_before_the_start_is_refused_in_the_pages_language(app, fake):
    c = portal_signed_in(app, "doctor", "en")
    page = _page(c)  # tomorrow's visit: the button is not offered; a crafted or stale post is refused
    r = c.post(f"/tasks/{TID}/visit/noshow", data={"csrf_token": csrf_token(page), "appointment": "a-1"})
    assert r.status_code == 409
    text = _text(r.get_data(as_text=True))
    assert "The visit has not begun yet" in text and "has not started yet" not in text
    assert fake.appts["a-1"]["status"] == "booked"


def test_a_back_end_that_does_not_answer_is_a_readable_page_never_a_500(app, fake):
    c = portal_signed_in(app, "doctor")
    page = _page(c)
    fake.down = True
    for path, data in ((f"/tasks/{TID}/visit/cancel", {"visit-reason": "x"}), (f"/tasks/{TID}/visit/noshow", {}),
                       (f"/tasks/{TID}/visit/move", {"slot": "s", "start": "2026-12-08T08:00:00+07:00",
                                                     "end": "2026-12-08T08:30:00+07:00"})):
        r = c.post(path, data={"csrf_token": csrf_token(page), "appointment": "a-1", **data})
        assert r.status_code == 503, path
        assert "không kết nối được" in _text(r.get_data(as_text=True)) and "Chưa có gì thay đổi" in _text(
            r.get_data(as_text=True))
    assert fake.appts["a-1"]["status"] == "booked"


def test_the_back_end_failing_during_the_change_shows_the_page_as_it_is(app, fake, monkeypatch):
    c = portal_signed_in(app, "doctor", "en")
    page = _page(c)
    real = fake._operation

    def slow(aid: str, op: str, body: dict[str, Any]) -> http.Response:
        raise http.TimedOut("no answer within 1 s")

    monkeypatch.setattr(fake, "_operation", slow)
    r = c.post(f"/tasks/{TID}/visit/cancel", data={"csrf_token": csrf_token(page), "appointment": "a-1",
                                                   "visit-reason": "Trùng lịch", "confirm": "visit-cancel"})
    assert r.status_code == 503
    text = _text(r.get_data(as_text=True))
    assert "answering too slowly" in text and 'data-testid="visit-time"' in r.get_data(as_text=True)
    assert "Trùng lịch" in r.get_data(as_text=True)  # what was typed is kept
    monkeypatch.setattr(fake, "_operation", real)


def test_the_visit_pages_need_the_doctor_role(app, fake):
    c = portal_signed_in(app, "clinic")
    page = c.get(f"/consults/{TID}").get_data(as_text=True)
    for op in ("move", "cancel", "noshow"):
        r = c.post(f"/tasks/{TID}/visit/{op}", data={"csrf_token": csrf_token(page), "appointment": "a-1"})
        assert r.status_code == 403 and "Không được phép" in _text(r.get_data(as_text=True))
    assert not [p for m, p, b in fake.calls if "$" in p and m == "POST"]


# ------------------------------------------------------------------ the free-time search: a GET, by day, with more


def _days_shown(page: str) -> list[tuple[str, list[str]]]:
    """Each day heading of the free times and the times (button texts) under it."""
    out = []
    for head, times in re.findall(r'data-testid="slot-day">([^<]+)</h3>\s*<ul class="slots">(.*?)</ul>', page, re.S):
        out.append((head.strip(), re.findall(r"<button aria-label=\"[^\"]+\">([^<]+)</button>", times)))
    return out


def test_a_weeks_search_shows_every_day_by_weekday_and_offers_the_later_times(app, fake):
    """#17: "Từ 05/12, 7 days" showed 12 times, all on the Monday, no weekday. Now every day of the range
    is shown under its weekday and date, each time a button whose label says the time whole; a range
    with more than the page shows ends on a "later times" link that continues after the last one."""
    fake.week = 14  # 08:00-14:30 each day: 7 x 14 = 98, all shown
    c = portal_signed_in(app, "doctor")
    first = datetime.now(TZ).date() + timedelta(days=2)
    r = c.get(f"/tasks/{TID}/slots", query_string={"start": first.strftime("%d/%m/%Y"), "days": "7"})
    assert r.status_code == 200
    page = r.get_data(as_text=True)
    shown = _days_shown(page)
    weekdays = ["Thứ Hai", "Thứ Ba", "Thứ Tư", "Thứ Năm", "Thứ Sáu", "Thứ Bảy", "Chủ Nhật"]
    assert [h for h, _ in shown] == [f"{weekdays[(first + timedelta(days=i)).weekday()]} "
                                     f"{first + timedelta(days=i):%d/%m}" for i in range(7)]
    assert all(times[0] == "08:00" and times[-1] == "14:30" and len(times) == 14 for _, times in shown)
    assert f'aria-label="Chuyển sang {first + timedelta(days=6):%d/%m/%Y} 14:30"' in page
    assert 'data-testid="later-times"' not in page  # all of them shown
    asked = [b for m, p, b in fake.calls if p.endswith("/$find")][-1]
    assert {"name": "_count", "valueInteger": 121} in asked["parameter"]

    fake.week = 24  # 08:00-19:30: 168 in the week, more than a page
    r = c.get(f"/tasks/{TID}/slots", query_string={"start": first.strftime("%d/%m/%Y"), "days": "7"})
    page = r.get_data(as_text=True)
    shown = _days_shown(page)
    assert sum(len(t) for _, t in shown) == 120 and len(shown) == 5  # 5 days of 24
    later = re.search(r'<a class="button" href="([^"]+)" data-testid="later-times">Các giờ trống muộn hơn</a>', page)
    assert later, _text(page)[-1500:]
    href = later.group(1).replace("&amp;", "&")
    r = c.get(href)
    assert r.status_code == 200
    page = r.get_data(as_text=True)
    rest = _days_shown(page)
    assert [len(t) for _, t in rest] == [24, 24] and rest[0][1][0] == "08:00"
    assert rest[0][0].endswith(f"{first + timedelta(days=5):%d/%m}")  # continues right after the last shown
    assert 'data-testid="later-times"' not in page and 'data-testid="slots-from"' in page
    assert "Về các giờ trống sớm nhất" in page


def test_the_search_is_a_get_and_back_after_booking_finds_it_again(app, fake):
    """#16: the search was a POST rendering its results, so the browser's Back after booking asked to
    resend a form. It is a GET now: no token in it, the same address answers again (after the visit
    changed too), and a POST to it is not a search."""
    c = portal_signed_in(app, "doctor")
    page = _page(c)
    form = re.search(r'<form method="get" action="/tasks/t-1/slots".*?</form>', page, re.S).group(0)
    assert "csrf_token" not in form and 'name="start"' in form and 'name="days"' in form
    address = f"/tasks/{TID}/slots?start={datetime.now(TZ):%d/%m/%Y}&days=7"
    assert c.get(address).status_code == 200
    chosen = _move_buttons(c.get(address).get_data(as_text=True))[0]
    assert c.post(f"/tasks/{TID}/visit/move", data=chosen).status_code == 302
    again = c.get(address)  # the browser's Back: the search again, no form resent
    assert again.status_code == 200 and _move_buttons(again.get_data(as_text=True))
    assert c.post(address, data={"csrf_token": chosen["csrf_token"]}).status_code == 405
    assert c.get(f"/tasks/{TID}/slots").status_code == 302  # nothing searched: the consult page


def test_a_wrong_search_keeps_what_was_typed_and_a_hand_edited_later_is_ignored(app, fake):
    c = portal_signed_in(app, "doctor")
    r = c.get(f"/tasks/{TID}/slots", query_string={"start": "32/13/2026", "days": "7"})
    assert r.status_code == 422
    page = r.get_data(as_text=True)
    assert 'value="32/13/2026"' in page and 'data-testid="slot-day"' not in page
    assert "Nhập ngày theo dạng ngày/tháng/năm" in _text(page) and "Not a valid date" not in page  # #11
    assert not [p for _, p, _ in fake.calls if p.endswith("/$find")]
    fake.week = 2
    first = datetime.now(TZ).date() + timedelta(days=2)
    r = c.get(f"/tasks/{TID}/slots", query_string={"start": first.strftime("%d/%m/%Y"), "days": "2",
                                                  "later": "2030-01-01T08:00:00+07:00"})
    assert r.status_code == 200 and len(_days_shown(r.get_data(as_text=True))) == 2  # the search from its first day
    assert 'data-testid="slots-from"' not in r.get_data(as_text=True)


# ------------------------------------------------------------------ leave over booked visits; the weekly hours


def _leave(c: Any, day: str, **more: str) -> Any:
    page = c.get("/availability").get_data(as_text=True)
    return c.post("/availability", data={"csrf_token": csrf_token(page), "which": "leave", "schedule": "sch-an",
                                         "leave-start": day, "leave-end": day, "leave-reason": "Hội nghị", **more})


def test_leave_over_a_booked_visit_is_confirmed_first_and_the_visit_stays_listed_after(app, fake):
    """#7: leave over a day with a booked visit was saved at once ("Đã lưu"), the visit left booked with
    no word. Now the page lists the visits first (time, patient, the consult page where it is moved or
    cancelled) and saves nothing; "add the leave anyway" saves it and the page says which visits stay
    booked inside it, each linked."""
    visit = datetime.fromisoformat(fake.appts["a-1"]["start"])
    day = f"{visit:%d/%m/%Y}"
    c = portal_signed_in(app, "doctor")
    r = _leave(c, day)
    assert r.status_code == 200
    page = r.get_data(as_text=True)
    assert 'data-testid="leave-confirm"' in page and fake.puts == []  # nothing saved yet
    text = _text(page)
    assert "Số buổi hội chẩn video đã đặt trong kỳ nghỉ này: 1" in text and "Chưa lưu gì" in text
    listed = _text(page.split('data-testid="leave-confirm"')[1].split("</section>")[0])
    assert f"{visit:%d/%m/%Y %H:%M}" in listed and "Lê Thị Mai" in listed
    # with its weekday, as the consult's page says the same visit ("Thứ Hai 07/12/2026 07:30")
    from babel.dates import format_date
    local = visit.astimezone(TZ)
    assert f"{format_date(local.date(), 'EEEE', locale='vi')} {local:%d/%m/%Y %H:%M}" in listed
    assert 'href="/tasks/t-1#visit"' in page and "Mở ca hội chẩn để đổi lịch hoặc hủy lịch" in text
    asked = fake.searches[-1]
    assert ("practitioner", "Practitioner/bs-nguyen-van-an") in asked and ("status", "booked,pending") in asked
    day_start = datetime.combine(visit.date(), datetime.min.time(), TZ)
    assert ("date", f"ge{day_start.astimezone(ZoneInfo('UTC')):%Y-%m-%dT%H:%M:%SZ}") in asked
    confirm = re.search(r'<section class="alert warn" role="alert" data-testid="leave-confirm">.*?</form>',
                        page, re.S).group(0)
    fields = {re.search(r'name="([\w-]+)"', tag).group(1): re.search(r'value="([^"]*)"', tag).group(1)
              for tag in re.findall(r"<(?:input|button)[^>]*>", confirm) if "name=" in tag}
    assert fields["leave-start"] == day and fields["leave-reason"] == "Hội nghị" and fields["confirm"] == "1"

    r = c.post("/availability", data=fields)
    assert r.status_code == 200
    page = r.get_data(as_text=True)
    [put] = fake.puts
    assert any(e["url"].endswith("schedule-not-available") for e in put["extension"])
    assert 'data-testid="leave-kept-visits"' in page and 'data-testid="leave-confirm"' not in page
    kept = _text(page.split('data-testid="leave-kept-visits"')[1].split("</section>")[0])
    assert "Đã lưu kỳ nghỉ" in kept and f"{visit:%d/%m/%Y %H:%M}" in kept and "Lê Thị Mai" in kept
    assert 'href="/tasks/t-1#visit"' in page
    assert fake.appts["a-1"]["status"] == "booked"  # leave cancels nothing by itself


def test_leave_on_a_day_without_visits_is_saved_at_once_and_a_silent_back_end_saves_nothing(app, fake):
    visit = datetime.fromisoformat(fake.appts["a-1"]["start"])
    c = portal_signed_in(app, "doctor")
    r = _leave(c, f"{visit + timedelta(days=3):%d/%m/%Y}")
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and len(fake.puts) == 1
    assert "Đã lưu" in _text(page) and 'data-testid="leave-confirm"' not in page
    assert 'data-testid="leave-kept-visits"' not in page
    fake.appts["a-1"]["status"] = "cancelled"  # a cancelled visit is no reason to ask
    assert 'data-testid="leave-confirm"' not in _leave(c, f"{visit:%d/%m/%Y}").get_data(as_text=True)
    assert len(fake.puts) == 2
    page = c.get("/availability").get_data(as_text=True)
    fake.down = True
    r = c.post("/availability", data={"csrf_token": csrf_token(page), "which": "leave", "schedule": "sch-an",
                                      "leave-start": f"{visit:%d/%m/%Y}", "leave-end": f"{visit:%d/%m/%Y}"})
    assert r.status_code in (200, 422) and len(fake.puts) == 2


@pytest.mark.parametrize("lang,said", [
    ("vi", "Ngày cuối (04/12/2026) đã qua: chỉ thêm được ngày nghỉ từ hôm nay (05/12/2026) trở đi."),
    ("en", "The last day (04/12/2026) has passed: leave can be added from today (05/12/2026) on.")])
def test_leave_ending_before_today_in_vietnam_is_refused_on_its_field_and_kept(app, fake, monkeypatch, lang, said):
    """Leave on 01/01/2020 was saved ("Đã lưu"): a slip of the year that frees no slot. A leave whose last
    day is before today (in Vietnam) is refused on the last day's field, what was typed kept, nothing
    saved; one ending today, or begun before and going on, is saved."""
    from datetime import date

    from sen_portal.web import formatting

    c = portal_signed_in(app, "doctor", lang)
    page = c.get("/availability").get_data(as_text=True)
    sent = {"csrf_token": csrf_token(page), "which": "leave", "schedule": "sch-an", "leave-reason": "Hội nghị"}
    r = c.post("/availability", data={**sent, "leave-start": "01/01/2020", "leave-end": "01/01/2020"})
    assert r.status_code == 422 and fake.puts == []
    body = r.get_data(as_text=True)
    assert 'id="leave-end-error"' in body and 'value="01/01/2020"' in body and 'value="Hội nghị"' in body
    assert ("Đã lưu" if lang == "vi" else "Saved") not in _text(body)
    monkeypatch.setattr(formatting, "today", lambda: date(2026, 12, 5))  # Vietnam's day, whatever the server's
    r = c.post("/availability", data={**sent, "leave-start": "01/12/2026", "leave-end": "04/12/2026"})
    body = r.get_data(as_text=True)
    assert r.status_code == 422 and fake.puts == []
    assert re.search(r'<p class="error" id="leave-end-error">(.*?)</p>', body).group(1) == said
    assert 'value="01/12/2026"' in body and 'value="04/12/2026"' in body
    r = c.post("/availability", data={**sent, "leave-start": "01/12/2026", "leave-end": "05/12/2026"})
    assert r.status_code == 200 and len(fake.puts) == 1  # going on today: saved


def _hours(c: Any, **windows: Any) -> Any:
    page = c.get("/availability").get_data(as_text=True)
    data = [("csrf_token", csrf_token(page)), ("which", "week"), ("schedule", "sch-an"), ("week-slot_minutes", "30")]
    for k, v in windows.items():
        for item in v if isinstance(v, list) else [v]:
            data.append((f"week-{k.replace('__', '-')}", item))
    from werkzeug.datastructures import MultiDict

    return c.post("/availability", data=MultiDict(data))


def test_a_window_with_times_but_no_days_is_refused_and_kept(app, fake):
    """#19: a window with times and no day ticked was dropped while the page said "Đã lưu"."""
    c = portal_signed_in(app, "doctor")
    r = _hours(c, windows__0__days=["mon"], windows__0__start_time="07:30", windows__0__end_time="11:30",
               windows__1__start_time="13:30", windows__1__end_time="17:00")
    assert r.status_code == 422 and fake.puts == []
    page = r.get_data(as_text=True)
    errors = re.findall(r'data-testid="window-days-error">([^<]+)<', page)
    assert errors == ["Hãy đánh dấu các ngày của khung giờ này, hoặc xóa cả hai giờ để bỏ khung giờ."]
    assert 'value="13:30"' in page and 'value="17:00"' in page and "Đã lưu" not in _text(page)
    only = _hours(c, windows__0__start_time="13:30", windows__0__end_time="17:00")  # the only row
    assert only.status_code == 422 and fake.puts == []
    assert re.findall(r'data-testid="window-days-error">([^<]+)<', only.get_data(as_text=True))
    ok = _hours(c, windows__0__days=["mon"], windows__0__start_time="07:30", windows__0__end_time="11:30",
                windows__1__start_time="", windows__1__end_time="")  # the empty row offered to add one
    assert ok.status_code == 200 and len(fake.puts) == 1


def test_a_wrong_time_flags_its_own_window_only(app, fake):
    """#19: 25:99 in window 1 also flagged window 2 as overlapping another window of the same day."""
    c = portal_signed_in(app, "doctor")
    r = _hours(c, windows__0__days=["mon"], windows__0__start_time="07:30", windows__0__end_time="25:99",
               windows__1__days=["mon"], windows__1__start_time="13:30", windows__1__end_time="17:00")
    assert r.status_code == 422 and fake.puts == []
    page = r.get_data(as_text=True)
    rows = re.findall(r'<fieldset class="field window[^"]*".*?</fieldset>', page, re.S)
    assert "invalid" in rows[0].split(">")[0] and "invalid" not in rows[1].split(">")[0]
    assert "Trùng với một khung giờ khác" not in page and "trùng nhau" not in page
    assert 'value="25:99"' in page


def test_a_page_a_post_rendered_takes_its_own_address_so_back_resends_nothing(app, fake):
    """#16: a reject refused for its empty reason is a page a POST rendered; Back to it, after the
    rejection that follows, asked to resend the form. Such a page (the consult's, the availability's)
    now loads static/own-address.js naming the page's GET address, which the history takes instead;
    a page a GET answered needs nothing of it."""
    c = portal_signed_in(app, "doctor")
    page = _page(c)
    assert "own-address.js" not in page
    r = c.post(f"/tasks/{TID}/reject", data={"csrf_token": csrf_token(page), "reason": ""})
    assert r.status_code == 422
    assert re.search(r'<script src="/assets/own-address.js\?v=[0-9a-f]{12}" data-address="/tasks/t-1" defer></script>',
                     r.get_data(as_text=True))
    r = _hours(c, windows__0__start_time="13:30", windows__0__end_time="17:00")
    assert r.status_code == 422 and re.search(r'own-address.js\?v=\w+" data-address="/availability"',
                                             r.get_data(as_text=True))
    assert "own-address.js" not in c.get("/availability").get_data(as_text=True)
    script = c.get("/assets/own-address.js")
    assert script.status_code == 200 and b"history.replaceState" in script.data


@pytest.mark.parametrize(("status", "said"), [(403, "Dịch vụ hội chẩn từ xa từ chối: bạn không có quyền"),
                                              (404, "Dịch vụ hội chẩn từ xa không có hồ sơ này"),
                                              (422, "Dịch vụ hội chẩn từ xa")])
def test_teleconsult_refusing_a_visit_change_gives_its_own_status(app, fake, monkeypatch, status, said):
    """A refusal of a visit's change other than its 409 (changed meanwhile) was a 409 page whatever teleconsult
    answered: now its own status (backend.page_status: a 404 is a 404, a 403 a 403), the page readable, the
    visit as it is."""
    c = portal_signed_in(app, "doctor")
    page = _page(c)
    monkeypatch.setattr(fake, "_operation", lambda aid, op, body: _outcome(status, f"refused with {status}"))
    for path, data in ((f"/tasks/{TID}/visit/cancel", {"visit-reason": "Trùng lịch", "confirm": "visit-cancel"}),
                       (f"/tasks/{TID}/visit/move", {"slot": "s", "start": "2026-12-08T08:00:00+07:00",
                                                     "end": "2026-12-08T08:30:00+07:00"})):
        r = c.post(path, data={"csrf_token": csrf_token(page), "appointment": "a-1", **data})
        body = r.get_data(as_text=True)
        assert r.status_code == status, (path, body[:800])
        assert said in _text(body) and 'data-testid="visit-time"' in body and "Traceback" not in body, path
    assert fake.appts["a-1"]["status"] == "booked"
