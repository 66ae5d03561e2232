"""The doctor moves a booked video visit to another free time, in Vietnamese at 1280 and 360 px and in
English at 1280 px, and cancels one with a reason, which the clinic's consult page then shows. Each page
is checked by axe-core (conftest.Visitor.check)."""

from __future__ import annotations

import re
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect

from tests.browser.test_pages import _submit

pytestmark = pytest.mark.integration

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
TEXT = {"vi": {"move": "Đổi lịch", "cancel": "Hủy lịch", "moved": "Đã dời lịch hội chẩn video sang",
               "cancelled": "Đã hủy lịch hội chẩn video", "clinic": "đã bị hủy"},
        "en": {"move": "Move the visit", "cancel": "Cancel the visit", "moved": "The video visit is moved to",
               "cancelled": "The video visit is cancelled", "clinic": "was cancelled"}}


def _shown(start: str) -> str:
    return f"{datetime.fromisoformat(start).astimezone(TZ):%d/%m/%Y %H:%M}"


def _fits(v) -> None:
    """Nothing on the page scrolls sideways (the card's buttons and forms wrap at 360 px)."""
    m = v.page.evaluate("() => ({w: window.innerWidth, page: document.documentElement.scrollWidth})")
    assert m["page"] <= m["w"], m


def accepted_consult(v, stack, lang: str, question: str) -> str:
    """An urgent consult submitted, then accepted by the doctor on its page (left open); its Task id."""
    tid = _submit(stack, question, "urgent")
    v.sign_in("doctor")
    if lang == "en":
        v.english()
    v.go(f"/tasks/{tid}")
    v.page.click("form[action$='/accept'] button")
    expect(v.page.locator("[data-testid=task-accepted]")).to_be_visible()  # the page again: accepted, and when
    return tid


def pressed_in_place(v, button) -> None:
    """Press ``button``, a free time of the visit's box (its form sent in place), and wait for the answer: the
    consult's page again (booked, moved: HX-Redirect), or the box swapped with why not (a time taken meanwhile,
    a refusal). Not the network going quiet (the page before the answer is quiet too) nor a navigation (an
    answer in place is none): the box the press was made in is gone, the answer's in its place."""
    v.page.evaluate("document.getElementById('visit').setAttribute('data-pressed', '')")
    button.click()
    expect(v.page.locator("#visit[data-pressed]")).to_have_count(0)
    expect(v.page.locator("[data-testid=booked], [data-testid=moved], [data-testid=visit-problem],"
                          " main > .alert.error").first).to_be_visible()


def book_a_time(v, last: bool = False) -> None:
    """Book a free time the page shows, its first (``last``: its last, days away), and wait for the answer; booked
    in the end. A time another test booked a moment ago may still show free on the other worker (its link view
    learns others' claims within 0.25 s): the box then says it was taken, with the free times found again, and
    the same choice is pressed there (three tries)."""
    for _ in range(3):
        times = v.page.locator("form[action$='/book'] button")
        pressed_in_place(v, times.last if last else times.first)
        if not v.page.locator("[data-testid=visit-problem]").count():
            break
        time.sleep(0.5)
    assert v.page.locator("[data-testid=booked]").count() == 1, v.page.inner_text("main")[:600]


def _booked_visit(v, stack, lang: str, question: str) -> str:
    """A consult the doctor accepts and books the first free time of, on the page; its Task id."""
    tid = accepted_consult(v, stack, lang, question)
    v.page.click("form[action$='/slots'] button")
    v.page.wait_for_selector("form[action$='/book'] button")
    book_a_time(v)
    return tid


@pytest.mark.parametrize(("lang", "width"), [("vi", 1280), ("vi", 360), ("en", 1280)])
def test_doctor_moves_the_visit(visitor_factory, stack, lang, width):
    t = TEXT[lang]
    v = visitor_factory(f"{lang}-{width}", width=width)
    tid = _booked_visit(v, stack, lang, "Đau ngực khi gắng sức, xin hẹn khám video.")
    before = v.page.inner_text("[data-testid=visit-time]")
    v.page.click(f"[data-testid=visit-move] summary:has-text('{t['move']}')")
    v.page.click("[data-testid=visit-move] form[action$='/slots'] button")
    v.page.wait_for_selector("form[action$='/visit/move'] button")
    target = v.page.locator("form[action$='/visit/move']").nth(1)
    start = target.locator("input[name=start]").get_attribute("value")
    pressed_in_place(v, target.locator("button"))  # moved (the consult's page), or a refusal (said why)
    assert v.page.locator("[data-testid=moved]").count() == 1, v.page.inner_text("main")[:600]
    assert t["moved"] in v.page.inner_text("main") and v.page.url.endswith(f"/tasks/{tid}")  # no flag in it
    now = v.page.inner_text("[data-testid=visit-time]")
    assert _shown(start) in now and now != before
    _fits(v)
    v.check("doctor-visit-moved")
    # said once, after the move: a reload shows the visit at its new time without saying it moved again
    v.page.reload()
    assert v.page.locator("[data-testid=moved]").count() == 0 and t["moved"] not in v.page.inner_text("main")
    assert _shown(start) in v.page.inner_text("[data-testid=visit-time]")
    clinic = visitor_factory(f"{lang}-{width}", width=width)
    clinic.sign_in("clinic")
    if lang == "en":
        clinic.english()
    clinic.go(f"/consults/{tid}")
    assert _shown(start) in clinic.page.inner_text("[data-testid=visit-time]")  # the clinic sees the new time


def _slots_offered(v) -> list[str]:
    """The slots of the free times the page offers to book, in its order."""
    return v.page.locator("form[action$='/book'] input[name=slot]").evaluate_all("inputs => inputs.map(i => i.value)")


def test_a_time_taken_meanwhile_is_said_in_place_with_the_free_times_again(visitor_factory, stack):
    """The doctor has two consults' free times open in two tabs and books one time from the second; pressed on
    the first, that time's answer (teleconsult's 409) comes in the visit's box: the page stays (its address,
    the same document, the minutes being typed kept), the box says in Vietnamese that the time was just taken,
    with the free times of the same search found again, nothing booked; another time pressed there books it."""
    v = visitor_factory("vi-1280")
    accepted_consult(v, stack, "vi", "Hồi hộp từng cơn, xin hẹn khám video.")
    other = visitor_factory("vi-1280")
    accepted_consult(other, stack, "vi", "Chóng mặt khi đứng dậy, xin hẹn khám video.")
    for tab in (v, other):
        tab.page.click("form[action$='/slots'] button")
        tab.page.wait_for_selector("form[action$='/book'] button")
    theirs = _slots_offered(other)
    slot = next((s for s in _slots_offered(v) if s in theirs), None)
    assert slot, "the doctor's two consults offer no time in common"
    time_of = f"form[action$='/book']:has(input[name=slot][value='{slot}']) button"
    pressed_in_place(other, other.page.locator(time_of))  # the second tab takes it
    assert other.page.locator("[data-testid=booked]").count() == 1, other.page.inner_text("main")[:600]

    address = v.page.url
    v.page.fill("#history", "Hồi hộp 3 tháng nay, không đau ngực.")  # the minutes, begun
    v.page.evaluate("window.__sameDocument = true")
    pressed_in_place(v, v.page.locator(time_of))
    said = v.page.locator("#visit [data-testid=visit-problem]")
    expect(said).to_have_text(re.compile(r"^Giờ này vừa .+\. Hãy chọn giờ khác\.$"))
    assert v.page.evaluate("window.__sameDocument === true") and v.page.url == address  # in place: no new page
    assert v.page.input_value("#history") == "Hồi hộp 3 tháng nay, không đau ngực."
    assert v.page.locator("#visit-live-error").is_hidden()  # not a connection lost
    assert v.page.locator("[data-testid=booked], [data-testid=visit-time]").count() == 0  # nothing booked
    again = v.page.locator("#visit form[action$='/book']")  # the same search's times, found again, in the box
    assert again.count() >= 1
    assert {f.locator("input[name=search_days]").input_value() for f in again.all()} == {"7"}
    v.check("doctor-time-taken")
    book_a_time(v)
    assert v.page.locator("[data-testid=visit-time]").count() == 1


def test_doctor_cancels_the_visit_and_the_clinic_sees_why(visitor_factory, stack):
    t = TEXT["vi"]
    v = visitor_factory("vi-1280")
    tid = _booked_visit(v, stack, "vi", "Khó thở về đêm, xin hẹn khám video.")
    v.page.click(f"[data-testid=visit-cancel] summary:has-text('{t['cancel']}')")
    v.page.click("[data-testid=visit-cancel] button.danger")  # no reason: explained, nothing sent (in place)
    v.page.wait_for_selector("#visit-reason-error")
    assert v.page.locator("[data-testid=visit-time]").count() == 1  # still booked
    v.page.fill("#visit-reason", "Bệnh nhân chuyển lên tuyến trên điều trị nội trú")
    v.page.click("[data-testid=visit-cancel] button.danger")  # the first press: the step, nothing sent
    v.page.wait_for_selector("[data-testid=visit-cancel] [data-testid=confirm-step]")
    assert v.page.locator("[data-testid=visit-time]").count() == 1  # still booked
    v.page.check("[data-testid=visit-cancel] [data-testid=confirm-tick]")
    v.page.click("[data-testid=visit-cancel] [data-testid=confirm-button]")
    v.page.wait_for_selector("[data-testid=visit-cancelled]")
    assert t["cancelled"] in v.page.inner_text("main")
    assert v.page.locator("form[action$='/slots']").count() == 1  # another time can be booked here
    clinic = visitor_factory("vi-1280")
    clinic.sign_in("clinic", to=f"/consults/{tid}")
    ended = clinic.page.inner_text("[data-testid=visit-ended]")
    assert t["clinic"] in ended and "Bệnh nhân chuyển lên tuyến trên điều trị nội trú" in ended
    assert "hẹn giờ mới" in ended
    clinic.check("clinic-visit-cancelled")


def test_back_after_booking_or_rejecting_is_a_page_never_a_form_to_resend(visitor_factory, stack):
    """#16: "Tìm giờ trống" → "Đặt lịch …" → Back showed Chromium's "Confirm Form Resubmission"
    (ERR_CACHE_MISS): the search was a POST. It is a GET now, its times by day under the weekday; Back
    after booking comes to it again. A reject refused for its empty reason (a page a POST rendered) takes
    the consult's address, so Back after the rejection that follows comes to the consult page."""
    v = visitor_factory("vi-1280")
    tid = accepted_consult(v, stack, "vi", "Phù chân hai bên, xin hẹn khám video.")
    v.page.click("form[action$='/slots'] button")
    v.page.wait_for_selector("form[action$='/book'] button")
    assert re.search(rf"/tasks/{tid}/slots\?start=\d\d%2F\d\d%2F\d{{4}}&days=7$", v.page.url), v.page.url
    days = v.page.locator("[data-testid=slot-day]").all_inner_texts()
    assert days and all(re.fullmatch(r"(Thứ (Hai|Ba|Tư|Năm|Sáu|Bảy)|Chủ Nhật) \d\d/\d\d", d) for d in days), days
    v.check("doctor-slots-by-day")
    book_a_time(v)  # sent in place: booked (a time taken meanwhile, said in the box: another)
    v.page.go_back()  # an error here (ERR_CACHE_MISS) fails the test
    v.page.wait_for_selector("[data-testid=slot-day]")
    assert f"/tasks/{tid}/slots?" in v.page.url
    assert v.page.locator("[data-testid=visit-time]").count() == 1  # the page as it is now: the visit booked
    v.page.go_forward()  # the consult again from the history: the visit, not "booked" said a second time
    v.page.wait_for_selector("[data-testid=visit-time]")
    assert v.page.url.endswith(f"/tasks/{tid}") and v.page.locator("[data-testid=booked]").count() == 0

    other = _submit(stack, "Ho kéo dài, xin ý kiến chuyên khoa.", "routine")
    v.go(f"/tasks/{other}")
    v.page.click("details:has(form[action$='/reject']) summary")
    v.page.click("form[action$='/reject'] button")  # no reason: explained on a page the POST rendered
    v.page.wait_for_selector("#reason-error")
    v.page.wait_for_url(re.compile(rf"/tasks/{other}$"))  # that page takes the consult's own address
    v.page.fill("#reason", "Ngoài chuyên khoa của bệnh viện, xin chuyển tuyến khác.")
    v.page.click("form[action$='/reject'] button")  # the step: the reason kept, nothing rejected yet
    v.page.check("form[action$='/reject'] [data-testid=confirm-tick]")
    v.page.click("form[action$='/reject'] [data-testid=confirm-button]")
    v.page.wait_for_url(re.compile(r"/worklist"))
    v.page.go_back()
    v.page.wait_for_url(re.compile(rf"/tasks/{other}$"))
    assert "Ngoài chuyên khoa" in v.page.inner_text("main")  # the consult, rejected, with its reason


def test_leave_over_a_booked_visit_asks_first_and_links_the_visit(visitor_factory, stack):
    """#7: the doctor books a visit, then adds leave over its day: the page lists the visit (its time,
    the consult page to move or cancel it) and saves nothing until "Vẫn thêm kỳ nghỉ"; then it says the
    visit stays booked inside the leave, linked to its consult page. The leave is removed afterwards
    (the other tests book from the demo hours). Its reason is its own: test_pages leaves the same doctor's
    "Hội nghị tim mạch" on the stack, which a bare "Hội nghị" would find."""
    reason = "Hội nghị nội khoa"
    v = visitor_factory("vi-1280")
    tid = _booked_visit(v, stack, "vi", "Đánh trống ngực, xin hẹn khám video.")
    when = v.page.inner_text("[data-testid=visit-time]")
    day = re.search(r"\d\d/\d\d/\d{4}", when).group(0)
    v.go("/availability")
    v.page.fill("#leave-start", day)
    v.page.fill("#leave-end", day)
    v.page.fill("#leave-reason", reason)
    v.page.click("form:has(input[value=leave]) button.primary")
    v.page.wait_for_selector("[data-testid=leave-confirm]")
    listed = v.page.inner_text("[data-testid=leave-confirm]")
    assert when.split(" – ")[0] in listed and "Chưa lưu gì" in listed
    assert v.page.locator(f"[data-testid=leave-confirm] a[href='/tasks/{tid}#visit']").count() == 1
    assert v.page.locator("[data-testid=leave]", has_text=reason).count() == 0  # nothing saved
    v.check("doctor-leave-confirm")
    try:
        v.page.click("[data-testid=leave-confirm] button[name=confirm]")
        v.page.wait_for_selector("[data-testid=leave-kept-visits]")
        assert when.split(" – ")[0] in v.page.inner_text("[data-testid=leave-kept-visits]")
        assert v.page.locator("[data-testid=leave]", has_text=reason).count() == 1
        v.check("doctor-leave-kept-visits")
        v.page.click(f"[data-testid=leave-kept-visits] a[href='/tasks/{tid}#visit']")
        v.page.wait_for_url(re.compile(rf"/tasks/{tid}#visit$"))
        assert v.page.locator("[data-testid=visit-move]").count() == 1  # moved or cancelled from here
    finally:
        v.go("/availability")
        mine = v.page.locator("[data-testid=leave]", has_text=reason)
        if mine.count():
            mine.locator("summary").click()
            mine.locator("[data-testid=leave-remove]").click()
            expect(mine).to_have_count(0)  # removed before the test ends (its tab closed could cut the post off)
