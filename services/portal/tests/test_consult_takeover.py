"""Taking a consult over, who holds it and since when, and the minutes' participants limit, on the doctor's
and the clinic's consult pages (Flask test client, teleconsult faked at the HTTP client).

- The take-over (and a plain acceptance) is sent with ``If-Match``, the Task version the page showed;
  teleconsult answering 412 or 409 (another doctor's step came first) gives the page again saying who
  took it and since when, nothing sent again; the doctor's own earlier click having won is done. A consult
  given to a doctor (reassigned) and not yet accepted is said as given ("vừa được chuyển cho"), not taken.
- The doctor's other steps (reassign, both presses; reject; question; start; minutes) carry the version too:
  a stale one is 412, said the same way, nothing changed and what was typed kept.
- The clinic's page (and the doctor's) says since when the holder has held the consult (the Task's history:
  the first of the newest versions owned by them).
- The participants box says its limit (``maxlength``, a hint) and a list that comes to more than the limit
  as the minutes write it is said on the field, nothing sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sen_shared import http

from services.portal.tests.test_doctor_consult_page import Consult, _fact
from services.portal.tests.test_visit_changes import TID, _text
from tests.support import csrf_token, flashed_steps, portal_app, portal_signed_in

ME, BINH, CUONG = "Practitioner/bs-nguyen-van-an", "Practitioner/bs-tran-thi-binh", "Practitioner/bs-le-van-cuong"


class Takeover(Consult):
    """The consult with a version and a history of owners; ``$accept`` answers as teleconsult would when
    ``winner`` took it first (412 naming them) or else takes it for the signed-in doctor."""

    def __init__(self, start: datetime) -> None:
        super().__init__(start)
        self.version = 2
        # the Task's versions: (status, owner, lastUpdated)
        self.history = [("requested", "Organization/bvdk-dong-thap", "2026-12-05T08:00:00+07:00"),
                        ("requested", BINH, "2026-12-05T08:10:00+07:00")]
        self.winner: str | None = None
        self.accept_headers: list[dict[str, str]] = []
        self.step_headers: list[tuple[str, dict[str, str]]] = []  # the other steps: (name, headers)
        self.updated = "2026-12-05T09:30:00+07:00"  # the current version's lastUpdated
        self.meanwhile: Callable[[Takeover], None] | None = None  # a change landing as a step arrives

    def task(self, status: str | None = None, begun: str | None = None) -> dict[str, Any]:
        task = super().task(status, begun)
        if status is None:
            task.setdefault("meta", {}).update(versionId=str(self.version), lastUpdated=self.updated)
        return task

    def change(self, status: str, owner: str, at: str = "2026-12-05T09:30:00+07:00") -> None:
        """A step of someone else's: the Task's next version."""
        self.status, self.owner, self.version, self.updated = status, owner, self.version + 1, at
        self.history.append((status, owner, at))

    def _took(self, owner: str, at: str) -> None:
        self.status, self.owner, self.version = "accepted", owner, self.version + 1
        self.history.append(("accepted", owner, at))

    def __call__(self, method: str, url: str, **kw: Any) -> http.Response:
        path = urlsplit(url).path
        if (m := re.search(rf"/fhir/Task/{TID}/_history/(\d+)$", path)) and method == "GET":  # a version read
            n = int(m.group(1))
            if n == self.version:
                return self._json(self.task())
            if n > len(self.history):
                return http.Response(404, {}, b'{"resourceType": "OperationOutcome", "issue": []}')
            status, owner, at = self.history[n - 1]
            return self._json({**super().task(status), "owner": {"reference": owner},
                               "meta": {"versionId": str(n), "lastUpdated": at}})
        if path.endswith(f"/fhir/Task/{TID}/_history") and method == "GET":
            versions = [{**super(Takeover, self).task(status), "owner": {"reference": owner},
                         "meta": {"versionId": str(n), "lastUpdated": at}}
                        for n, (status, owner, at) in enumerate(self.history, 1)]
            return self._bundle(versions[::-1])
        if path.endswith(f"/fhir/Task/{TID}/$accept") and method == "POST":
            self.accept_headers.append(dict(kw.get("headers") or {}))
            if self.winner:
                self._took(self.winner, "2026-12-05T09:01:00+07:00")
                self.winner = None
                outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "conflict",
                           "diagnostics": f"$accept was not applied: Task/{TID} changed since version 2"}]}
                return http.Response(412, {}, json.dumps(outcome).encode())
            if self.status != "requested":
                outcome = {"resourceType": "OperationOutcome", "issue": [{
                    "severity": "error", "code": "business-rule", "diagnostics": "the Task is 'accepted'"}]}
                return http.Response(409, {}, json.dumps(outcome).encode())
            self.ops.append("accept")
            self._took(ME, "2026-12-05T09:00:00+07:00")
            return self._json(self.task())
        if (m := re.search(rf"/fhir/Task/{TID}/\$(reassign|reject|request-info|start|complete)$", path)) and \
                method == "POST":
            headers = {k: v for k, v in (kw.get("headers") or {}).items() if k == "If-Match"}
            self.step_headers.append((m.group(1), headers))
            if self.meanwhile is not None:
                self.meanwhile(self)
            if "If-Match" in headers and headers["If-Match"] != f'W/"{self.version}"':  # as teleconsult does
                outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "conflict",
                           "diagnostics": f"${m.group(1)} was not applied: Task/{TID} changed"}]}
                return http.Response(412, {}, json.dumps(outcome).encode())
            if m.group(1) in ("reassign", "start"):
                self.ops.append(m.group(1))
                return self._json(self.task())
        return super().__call__(method, url, **kw)


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> Takeover:
    f = Takeover.answering(monkeypatch)
    f.status, f.owner = "requested", BINH
    from sen_portal.web import directory

    monkeypatch.setattr(directory, "names", lambda rtype: {
        "Organization": {"bvdk-dong-thap": "Bệnh viện Đa khoa Đồng Tháp", "tyt-my-hiep": "Trạm Y tế xã Mỹ Hiệp"},
        "Practitioner": {"bs-nguyen-van-an": "BS. Nguyễn Văn An", "bs-tran-thi-binh": "BS. Trần Thị Bình",
                         "bs-le-van-cuong": "BS. Lê Văn Cường"}}[rtype])
    return f


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: Takeover):
    return portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9", SEN_PORTAL_CACHE_SECONDS="0")


def _takeover_form(page: str) -> dict[str, str]:
    form = page[page.index('data-testid="takeover"'):]
    form = form[:form.index("</form>")]
    return dict(re.findall(r'name="(\w+)" (?:type="\w+" )?value="([^"]*)"', form))


def test_the_take_over_is_sent_on_the_version_the_page_showed(app, fake):
    c = portal_signed_in(app, "doctor")
    page = c.get(f"/tasks/{TID}").get_data(as_text=True)
    form = _takeover_form(page)
    assert form["version"] == "2" and form["takeover"] == BINH
    r = c.post(f"/tasks/{TID}/accept", data={"csrf_token": csrf_token(page), "version": "2", "takeover": BINH})
    assert r.status_code == 302 and fake.ops == ["accept"]
    assert fake.accept_headers[-1]["If-Match"] == 'W/"2"'


def test_a_take_over_lost_to_another_doctor_says_who_took_it_and_since_when(app, fake):
    """Two doctors take over the consult given to BS. Bình at once: teleconsult lets one through (the claim
    of the Task's next version) and answers the other 412. That one's page said nothing useful (the
    back-end's English); now it says, in the page's language, who took it meanwhile, and nothing is sent
    again."""
    c = portal_signed_in(app, "doctor")
    page = c.get(f"/tasks/{TID}").get_data(as_text=True)
    fake.winner = CUONG
    r = c.post(f"/tasks/{TID}/accept", data={"csrf_token": csrf_token(page), "version": "2", "takeover": BINH})
    assert r.status_code == 409 and fake.ops == []
    said = _text(r.get_data(as_text=True))
    assert "Trong lúc đó một bác sĩ khác đã nhận ca này: BS. Lê Văn Cường (từ 05/12/2026 09:01)" in said
    assert _fact(r.get_data(as_text=True), "task-owner") == ("Người giữ ca", "BS. Lê Văn Cường")
    assert 'data-testid="takeover"' not in r.get_data(as_text=True)  # accepted by him: nothing to take over
    # the same in English
    fake.status, fake.owner, fake.version, fake.history = "requested", BINH, 2, fake.history[:2]
    en = portal_signed_in(app, "doctor", lang="en")
    page = en.get(f"/tasks/{TID}").get_data(as_text=True)
    fake.winner = CUONG
    r = en.post(f"/tasks/{TID}/accept", data={"csrf_token": csrf_token(page), "version": "2", "takeover": BINH})
    assert "Another doctor took this consult meanwhile: BS. Lê Văn Cường (since 05/12/2026 09:01)" in \
        _text(r.get_data(as_text=True))


def test_a_holder_changed_since_the_page_is_said_before_anything_is_sent(app, fake):
    """The page named BS. Bình; BS. Cường was given the consult since: the ticked box names someone who no
    longer holds it, so nothing is sent and the page says who holds it now."""
    c = portal_signed_in(app, "doctor")
    page = c.get(f"/tasks/{TID}").get_data(as_text=True)
    fake.owner, fake.version = CUONG, 3
    fake.history.append(("requested", CUONG, "2026-12-05T08:55:00+07:00"))
    r = c.post(f"/tasks/{TID}/accept", data={"csrf_token": csrf_token(page), "version": "2", "takeover": BINH})
    assert r.status_code == 409 and fake.accept_headers == []
    # given to him, not accepted by him: the page says so, not that he took it
    said = _text(r.get_data(as_text=True))
    assert "Ca hội chẩn này vừa được chuyển cho BS. Lê Văn Cường (lúc 05/12/2026 08:55). Không có gì được thay " \
           "đổi." in said and "đã nhận ca này" not in said


def test_a_stale_acceptance_after_a_reassign_says_the_consult_was_given_not_taken(app, fake):
    """The page showed the consult new at the hub; another doctor gave it to BS. Cường since (still 'Mới – chờ
    tiếp nhận'): 'Nhận' said 'another doctor took this consult', which the status contradicted."""
    fake.owner, fake.version, fake.history = "Organization/bvdk-dong-thap", 1, fake.history[:1]
    for lang, said in (("vi", "Ca hội chẩn này vừa được chuyển cho BS. Lê Văn Cường (lúc 05/12/2026 08:55)."),
                       ("en", "This consult was just given to BS. Lê Văn Cường (at 05/12/2026 08:55). Nothing was "
                              "changed.")):
        fake.owner, fake.version, fake.history = "Organization/bvdk-dong-thap", 1, fake.history[:1]
        c = portal_signed_in(app, "doctor", lang=lang)
        page = c.get(f"/tasks/{TID}").get_data(as_text=True)
        fake.owner, fake.version = CUONG, 2
        fake.history.append(("requested", CUONG, "2026-12-05T08:55:00+07:00"))
        r = c.post(f"/tasks/{TID}/accept", data={"csrf_token": csrf_token(page), "version": "1"})
        assert r.status_code == 409 and fake.accept_headers == [] and fake.ops == [], lang
        assert said in _text(r.get_data(as_text=True)), lang


@pytest.fixture()
def hub(monkeypatch: pytest.MonkeyPatch) -> None:
    from sen_portal.web import doctor

    monkeypatch.setattr(doctor, "_hub_doctors", lambda facility, me: [(BINH, "BS. Trần Thị Bình"),
                                                                      (CUONG, "BS. Lê Văn Cường")])


def _versions(page: str) -> dict[str, str]:
    """Each step form's action and the version it carries."""
    out = {}
    for form in re.findall(r"<form method=\"post\" action=\"([^\"]+)\"(.*?)</form>", page, re.S):
        m = re.search(r'name="version" value="([^"]*)"', form[1])
        out[form[0].rsplit("/", 1)[-1]] = m.group(1) if m else None
    return out


def test_a_stale_reassign_confirmation_gives_nothing_and_says_who_accepted_meanwhile(app, fake, hub):
    """Doctor A chose BS. Cường and got the confirmation; meanwhile BS. Bình pressed 'Nhận'; A's confirmation
    gave the accepted consult to BS. Cường, who never accepted it. Both presses now carry the version the
    page showed (teleconsult's If-Match): the confirmation is answered 412 and the page says who took it."""
    for lang, said in (("vi", "Trong lúc đó một bác sĩ khác đã nhận ca này: BS. Trần Thị Bình (từ 05/12/2026 "
                              "09:01). Không có gì được thay đổi"),
                       ("en", "Another doctor took this consult meanwhile: BS. Trần Thị Bình (since 05/12/2026 "
                              "09:01). Nothing was changed")):
        fake.status, fake.owner, fake.version, fake.history = "requested", "Organization/bvdk-dong-thap", 1, \
            fake.history[:1]
        fake.ops, fake.step_headers = [], []
        c = portal_signed_in(app, "doctor", lang=lang)
        page = c.get(f"/tasks/{TID}").get_data(as_text=True)
        assert _versions(page)["reassign"] == "1" and _versions(page)["reject"] == "1"
        token = csrf_token(page)
        r = c.post(f"/tasks/{TID}/reassign", data={"csrf_token": token, "practitioner": CUONG, "version": "1"})
        body = r.get_data(as_text=True)
        confirm = body[body.index('data-testid="reassign-confirm"'):]
        assert r.status_code == 200 and 'name="version" value="1"' in confirm[:confirm.index("</form>")]
        fake._took(BINH, "2026-12-05T09:01:00+07:00")  # BS. Bình presses 'Nhận' meanwhile
        r = c.post(f"/tasks/{TID}/reassign", data={"csrf_token": token, "practitioner": CUONG, "confirm": "reassign",
                                                   "version": "1"})
        assert r.status_code == 409 and fake.ops == [], lang
        assert fake.step_headers == [("reassign", {"If-Match": 'W/"1"'})]
        assert said in _text(r.get_data(as_text=True)), lang
        assert fake.owner == BINH and fake.status == "accepted"


def test_a_reassign_chosen_on_a_page_changed_since_is_not_confirmed(app, fake, hub):
    """The first press on a stale page: the consult was given to BS. Bình since; no confirmation offered."""
    fake.owner, fake.version, fake.history = "Organization/bvdk-dong-thap", 1, fake.history[:1]
    c = portal_signed_in(app, "doctor")
    page = c.get(f"/tasks/{TID}").get_data(as_text=True)
    fake.owner, fake.version = BINH, 2
    fake.history.append(("requested", BINH, "2026-12-05T08:40:00+07:00"))
    r = c.post(f"/tasks/{TID}/reassign", data={"csrf_token": csrf_token(page), "practitioner": CUONG,
                                               "version": "1"})
    body = r.get_data(as_text=True)
    assert r.status_code == 409 and 'data-testid="reassign-confirm"' not in body and fake.step_headers == []
    assert "Ca hội chẩn này vừa được chuyển cho BS. Trần Thị Bình (lúc 05/12/2026 08:40)" in _text(body)


def test_a_stale_reject_or_question_changes_nothing_and_keeps_what_was_typed(app, fake, hub):
    fake.owner, fake.version, fake.history = "Organization/bvdk-dong-thap", 1, fake.history[:1]
    c = portal_signed_in(app, "doctor")
    page = c.get(f"/tasks/{TID}").get_data(as_text=True)
    assert _versions(page)["request-info"] == "1"
    fake._took(CUONG, "2026-12-05T09:01:00+07:00")
    r = c.post(f"/tasks/{TID}/reject", data={"csrf_token": csrf_token(page), "reason": "Ngoài chuyên khoa.",
                                             "version": "1", "confirm": "reject"})
    assert r.status_code == 409 and fake.ops == []
    assert "đã nhận ca này: BS. Lê Văn Cường (từ 05/12/2026 09:01)" in _text(r.get_data(as_text=True))
    r = c.post(f"/tasks/{TID}/request-info", data={"csrf_token": csrf_token(page), "question": "Xin kết quả ECG.",
                                                   "version": "1"})
    body = r.get_data(as_text=True)
    assert r.status_code == 409 and fake.ops == [] and "Xin kết quả ECG." in body
    assert [name for name, h in fake.step_headers if h == {"If-Match": 'W/"1"'}] == ["reject", "request-info"]


def _minutes_page(c: Any, fake: Takeover, status: str = "in-progress") -> str:
    """The doctor's page of the consult they hold, ``status``, at version 3."""
    fake.status, fake.owner, fake.version = status, ME, 3
    fake.history.append((status, ME, "2026-12-05T08:30:00+07:00"))
    page = c.get(f"/tasks/{TID}").get_data(as_text=True)
    assert _versions(page)["complete"] == "3"
    return page


def test_a_version_that_changed_nothing_the_doctor_saw_does_not_refuse_the_step(app, fake):
    """The page showed version 3; the clinic answered a question, or the SLA sweep escalated the consult, or
    the doctor started it in another tab since (version 4, same holder, same or started state). The minutes
    were refused once ('changed while you were looking'); now they are sent again on version 4 and nothing
    is said. Start is sent again the same way."""
    c = portal_signed_in(app, "doctor")
    page = _minutes_page(c, fake, "accepted")
    fake.change("accepted", ME)  # escalated, or asked and answered: the same holder and state
    r = c.post(f"/tasks/{TID}/start", data={"csrf_token": csrf_token(page), "version": "3"})
    assert r.status_code == 302 and flashed_steps(c) == [(f"/tasks/{TID}", "started=1")] and fake.ops == ["start"]
    assert fake.step_headers == [("start", {"If-Match": 'W/"3"'}), ("start", {"If-Match": 'W/"4"'})]
    fake.begun = "2026-12-05T09:35:00+07:00"
    fake.change("in-progress", ME)  # version 5: started (by the press above, as teleconsult would)
    r = c.post(f"/tasks/{TID}/complete", data={**_minutes(page, "BS. Nguyễn Văn An — chủ trì"), "version": "3"})
    assert r.status_code == 302 and (f"/tasks/{TID}", "done=1") in flashed_steps(c), \
        _text(r.get_data(as_text=True))[:800]
    assert len(fake.completed) == 1
    assert fake.step_headers[2:] == [("complete", {"If-Match": 'W/"3"'}), ("complete", {"If-Match": 'W/"5"'})]
    # the minutes' time starts when the consult was started, as the Task says now (the page knew no start)
    begun = next(p for p in fake.completed[0]["parameter"] if p["name"] == "start")["valueDateTime"]
    assert begun == "2026-12-05T09:35:00+07:00"


def test_a_start_pressed_again_after_it_started_is_done(app, fake):
    c = portal_signed_in(app, "doctor")
    page = _minutes_page(c, fake, "accepted")
    fake.change("in-progress", ME)  # the first click (or another tab) started it
    r = c.post(f"/tasks/{TID}/start", data={"csrf_token": csrf_token(page), "version": "3"})
    assert r.status_code == 302 and flashed_steps(c) == [(f"/tasks/{TID}", "started=1")] and fake.ops == []
    assert fake.step_headers == [("start", {"If-Match": 'W/"3"'})]


@pytest.mark.parametrize(("lang", "said"), [
    ("vi", "Phòng khám đã hủy ca hội chẩn này lúc 05/12/2026 09:40. Chưa có gì được gửi. Nội dung bạn đã nhập "
           "vẫn được giữ ở bên dưới."),
    ("en", "The clinic cancelled this consult at 05/12/2026 09:40. Nothing was sent. What you typed is kept "
           "below.")])
def test_minutes_on_a_consult_the_clinic_cancelled_meanwhile_are_refused_and_kept(app, fake, lang, said):
    c = portal_signed_in(app, "doctor", lang=lang)
    page = _minutes_page(c, fake)
    fake.reason = "Người bệnh đã chuyển viện."
    fake.change("cancelled", ME, "2026-12-05T09:40:00+07:00")
    r = c.post(f"/tasks/{TID}/complete", data={**_minutes(page, "BS. Nguyễn Văn An — chủ trì"), "version": "3"})
    body = r.get_data(as_text=True)
    assert r.status_code == 409 and fake.completed == []
    assert fake.step_headers == [("complete", {"If-Match": 'W/"3"'})]  # not sent again
    assert said in _text(body)
    assert "Người bệnh đã chuyển viện." in _text(body)  # the clinic's reason, on the page
    # the minutes form is gone (nothing to sign on a cancelled consult): what was typed is shown, not lost
    assert _versions(body).get("complete") is None
    unsent = body[body.index('data-testid="unsent"'):]
    for typed in ("HA 170/100 mmHg.", "Tăng huyết áp 5 năm.", "Tăng huyết áp độ 2.", "Amlodipin.", "I10"):
        assert typed in unsent, typed


@pytest.mark.parametrize(("status", "owner", "said"), [
    ("completed", CUONG, "BS. Lê Văn Cường đã hoàn thành ca hội chẩn này lúc 05/12/2026 09:30 (biên bản ở bên "
                         "dưới). Chưa có gì được gửi."),
    ("completed", ME, "Bạn đã hoàn thành ca hội chẩn này lúc 05/12/2026 09:30 (biên bản ở bên dưới). Không có gì "
                      "được gửi lại."),
    ("on-hold", ME, "Trong lúc đó đã có câu hỏi gửi phòng khám (05/12/2026 09:30): ca hội chẩn đang chờ trả lời. "
                    "Chưa có gì được gửi."),
    ("in-progress", CUONG, "Trong lúc đó một bác sĩ khác đã nhận ca này: BS. Lê Văn Cường (từ 05/12/2026 09:30)."),
])
def test_minutes_on_a_consult_changed_in_a_way_that_matters_are_refused_and_said(app, fake, status, owner, said):
    c = portal_signed_in(app, "doctor")
    page = _minutes_page(c, fake)
    fake.change(status, owner)
    r = c.post(f"/tasks/{TID}/complete", data={**_minutes(page, "BS. Nguyễn Văn An — chủ trì"), "version": "3"})
    body = r.get_data(as_text=True)
    assert r.status_code == 409 and fake.completed == [] and len(fake.step_headers) == 1
    assert said in _text(body), _text(body)[:1500]
    assert "HA 170/100 mmHg." in body  # kept: in the form when the page still offers it, else shown unsent
    if status == "in-progress":  # still open: the form again, on the version now shown; a second press signs
        assert _versions(body)["complete"] == "4" and 'data-testid="unsent"' not in body
        r = c.post(f"/tasks/{TID}/complete", data={**_minutes(body, "BS. Nguyễn Văn An — chủ trì"), "version": "4"})
        assert r.status_code == 302 and len(fake.completed) == 1


def test_a_change_that_matters_landing_while_the_step_is_sent_again_is_refused(app, fake):
    """The page's version is stale for a change that does not matter; the portal reads the consult again and
    sends the minutes on version 4, but the clinic cancels just before they arrive (version 5): teleconsult
    answers 412 again, and the portal judges version 5 against what the page showed, never sending on it."""
    c = portal_signed_in(app, "doctor")
    page = _minutes_page(c, fake)
    fake.change("in-progress", ME)
    sent: list[str] = []

    def cancelled_once_resent(f: Takeover) -> None:
        sent.append(f.step_headers[-1][1]["If-Match"])
        if len(sent) == 2:
            f.change("cancelled", ME, "2026-12-05T09:40:00+07:00")

    fake.meanwhile = cancelled_once_resent
    r = c.post(f"/tasks/{TID}/complete", data={**_minutes(page, "BS. Nguyễn Văn An — chủ trì"), "version": "3"})
    assert r.status_code == 409 and fake.completed == [] and sent == ['W/"3"', 'W/"4"']
    assert "Phòng khám đã hủy ca hội chẩn này lúc 05/12/2026 09:40." in _text(r.get_data(as_text=True))


def test_a_consult_changing_at_every_send_is_sent_a_bounded_number_of_times(app, fake):
    c = portal_signed_in(app, "doctor")
    page = _minutes_page(c, fake)
    fake.meanwhile = lambda f: f.change("in-progress", ME)  # a harmless version lands before every send
    r = c.post(f"/tasks/{TID}/complete", data={**_minutes(page, "BS. Nguyễn Văn An — chủ trì"), "version": "3"})
    assert r.status_code == 409 and fake.completed == [] and len(fake.step_headers) == 4
    assert "Ca hội chẩn này đã thay đổi trong lúc bạn đang xem" in _text(r.get_data(as_text=True))
    assert "HA 170/100 mmHg." in r.get_data(as_text=True)


def test_a_question_or_reject_goes_on_after_a_change_that_does_not_matter(app, fake, hub):
    """Reject from the page of a new consult escalated since (same holder, still new); a question from the
    page of an accepted consult started since."""
    fake.owner, fake.version, fake.history = "Organization/bvdk-dong-thap", 1, fake.history[:1]
    c = portal_signed_in(app, "doctor")
    page = c.get(f"/tasks/{TID}").get_data(as_text=True)
    fake.change("requested", "Organization/bvdk-dong-thap")  # the SLA sweep's escalation: version 2
    r = c.post(f"/tasks/{TID}/reject", data={"csrf_token": csrf_token(page), "reason": "Ngoài chuyên khoa.",
                                             "version": "1", "confirm": "reject"})
    assert r.status_code == 302 and fake.ops == ["reject"]
    assert fake.step_headers == [("reject", {"If-Match": 'W/"1"'}), ("reject", {"If-Match": 'W/"2"'})]
    fake.step_headers, fake.ops = [], []
    page = _minutes_page(c, fake, "accepted")
    fake.change("in-progress", ME)
    r = c.post(f"/tasks/{TID}/request-info", data={"csrf_token": csrf_token(page), "question": "Xin ECG.",
                                                   "version": "3"})
    assert r.status_code == 302 and fake.ops == ["request-info"]
    assert [h["If-Match"] for _, h in fake.step_headers] == ['W/"3"', 'W/"4"']


def test_a_double_click_whose_first_click_won_is_done(app, fake):
    c = portal_signed_in(app, "doctor")
    page = c.get(f"/tasks/{TID}").get_data(as_text=True)
    data = {"csrf_token": csrf_token(page), "version": "2", "takeover": BINH}
    assert c.post(f"/tasks/{TID}/accept", data=data).status_code == 302
    r = c.post(f"/tasks/{TID}/accept", data=data)  # the second click: the page's version is gone, the consult mine
    assert r.status_code == 302 and flashed_steps(c)[-1] == (f"/tasks/{TID}", "accepted=1") and fake.ops == ["accept"]


def test_a_plain_acceptance_is_sent_on_the_pages_version_too(app, fake):
    fake.owner, fake.history = "Organization/bvdk-dong-thap", fake.history[:1]
    fake.version = 1
    c = portal_signed_in(app, "doctor")
    page = c.get(f"/tasks/{TID}").get_data(as_text=True)
    assert 'data-testid="takeover"' not in page
    version = re.search(r'name="version" value="(\d+)"', page).group(1)
    assert version == "1"
    r = c.post(f"/tasks/{TID}/accept", data={"csrf_token": csrf_token(page), "version": version})
    assert r.status_code == 302 and fake.accept_headers[-1]["If-Match"] == 'W/"1"'


def test_the_clinic_sees_who_holds_the_consult_and_since_when(app, fake):
    """The clinic's page named the holder but not since when: the Task's history says it (the first of the
    newest versions the holder owns: given to BS. Bình at 08:10, still hers after later steps)."""
    fake.status = "accepted"
    fake.history.append(("accepted", BINH, "2026-12-05T08:30:00+07:00"))
    fake.version = 3
    for lang, labels in (("vi", ("Bác sĩ chuyên khoa", "Giữ ca từ")), ("en", ("Specialist", "Held since"))):
        page = portal_signed_in(app, "clinic", lang=lang).get(f"/consults/{TID}").get_data(as_text=True)
        assert _fact(page, "task-owner") == (labels[0], "BS. Trần Thị Bình"), lang
        assert _fact(page, "task-held-since") == (labels[1], "05/12/2026 08:10"), lang
    doctor = portal_signed_in(app, "doctor").get(f"/tasks/{TID}").get_data(as_text=True)
    assert _fact(doctor, "task-held-since") == ("Giữ ca từ", "05/12/2026 08:10")
    # the hub holding it: no doctor, no "since"
    fake.owner, fake.history = "Organization/bvdk-dong-thap", fake.history[:1]
    page = portal_signed_in(app, "clinic").get(f"/consults/{TID}").get_data(as_text=True)
    assert _fact(page, "task-held-since") is None and _fact(page, "task-owner")[0] == "Tuyến trên"


def _minutes(page: str, participants: str) -> dict[str, str]:
    return {"csrf_token": csrf_token(page), "participants": participants, "history": "Tăng huyết áp 5 năm.",
            "findings": "HA 170/100 mmHg.", "conclusion": "Tăng huyết áp độ 2.", "recommendations": "Amlodipin.",
            "diagnosis": "I10", "chair": "BS. Nguyễn Văn An"}


def test_the_participants_box_says_its_limit_and_a_longer_list_is_refused_on_the_field(app, fake):
    """teleconsult cut a participant's role at 200 characters, silently; the portal sends the whole list as
    the chair's role. teleconsult now keeps 2000 and refuses more; the box says so before sending."""
    fake.status, fake.owner, fake.history = "in-progress", ME, [("in-progress", ME, "2026-12-05T08:10:00+07:00")]
    c = portal_signed_in(app, "doctor")
    page = c.get(f"/tasks/{TID}").get_data(as_text=True)
    box = re.search(r'<textarea[^>]*name="participants"[^>]*>', page).group(0)
    assert 'maxlength="2000"' in box
    assert "tổng cộng tối đa 2000 ký tự" in _text(page)
    # 2000 typed, one per line: "; " between them as the minutes write it comes to more
    many = "\n".join(f"BS {i:03d} — tham dự" for i in range(134))[:2000]
    r = c.post(f"/tasks/{TID}/complete", data=_minutes(page, many))
    assert r.status_code == 422 and fake.completed == []
    said = _text(r.get_data(as_text=True))
    assert re.search(r"Thành phần tham gia thành 2\d\d\d ký tự khi ghi vào biên bản \(tối đa 2000\)", said)
    r = c.post(f"/tasks/{TID}/complete", data=_minutes(page, "x" * 2001))
    assert r.status_code == 422 and fake.completed == []
    assert "Tối đa 2000 ký tự" in _text(r.get_data(as_text=True))
    long_ok = "BS. Nguyễn Văn An — chủ trì; " + "; ".join(f"BS {i:03d} — tham dự" for i in range(60))
    assert 200 < len(long_ok) < 2000
    r = c.post(f"/tasks/{TID}/complete", data=_minutes(page, long_ok))
    assert r.status_code == 302, _text(r.get_data(as_text=True))[:600]
    role = next(p for p in fake.completed[-1]["parameter"] if p["name"] == "participant")["part"][1]["valueString"]
    assert len(role) > 200 and role.endswith("BS 059 — tham dự")


@pytest.mark.parametrize("step", ["complete", "reject", "request-info"])
def test_a_form_refused_on_its_own_checks_after_the_consult_changed_keeps_what_was_typed(app, fake, hub, step):
    """The walk between two tabs: the doctor writes the minutes (the history left empty) in one tab while a
    question goes to the clinic from the other; signing was refused for the empty field on a page that no
    longer offers the minutes (the consult waits for the answer): 422, no form, nothing said, the minutes
    lost. Now the page says what changed and shows what was typed, as for a refusal by teleconsult; the same
    for a reject or a question refused on its own checks. Nothing is sent."""
    c = portal_signed_in(app, "doctor")
    page = _minutes_page(c, fake)
    fake.change("on-hold", ME)  # the question, from the other tab
    data = {"complete": {**_minutes(page, "BS. Nguyễn Văn An — chủ trì"), "history": ""},
            "reject": {"csrf_token": csrf_token(page), "reason": "HA 170/100 mmHg." + "x" * 2100},
            "request-info": {"csrf_token": csrf_token(page), "question": "HA 170/100 mmHg." + "x" * 4000}}[step]
    r = c.post(f"/tasks/{TID}/{step}", data={**data, "version": "3"})
    body = r.get_data(as_text=True)
    assert r.status_code == 409 and fake.step_headers == [] and fake.completed == []
    assert "Trong lúc đó đã có câu hỏi gửi phòng khám (05/12/2026 09:30)" in _text(body), _text(body)[:1500]
    assert "HA 170/100 mmHg." in body  # what was typed, on the page (a reject's reason too: its form is known)
    assert "Nội dung bạn đã nhập vẫn được giữ ở bên dưới." in _text(body)


def test_minutes_refused_on_their_own_checks_on_an_unchanged_consult_are_the_form_with_its_error(app, fake):
    c = portal_signed_in(app, "doctor")
    page = _minutes_page(c, fake)
    r = c.post(f"/tasks/{TID}/complete", data={**_minutes(page, "BS. Nguyễn Văn An — chủ trì"), "history": "",
                                               "version": "3"})
    body = r.get_data(as_text=True)
    assert r.status_code == 422 and fake.step_headers == [] and _versions(body)["complete"] == "3"
    assert "Hãy tóm tắt tiền sử." in _text(body) or "history" in body
    assert "HA 170/100 mmHg." in body
