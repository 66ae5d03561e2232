"""The portal on a slow phone link (review 10: a clinic nurse and a doctor at 360 px, 400 ms and ~50 KB/s):

- the ICD-10 suggestions answer the words they were asked for: typing on while an answer is on the way left the
  list of the words typed before ("ta": "A00 — Bệnh tả") under "tang huyet ap", and a tap picked it. The list
  names the box's text it answers (``data-typed``); app.js hides it once the box holds other words, ArrowDown does
  not bring it back, and the list for the box's text shows when it comes;
- a button of a form the browser posts says it is being sent ("Đang gửi…" beside it, the button looking busy):
  the answer takes seconds there, and the button looked the same after a tap (a second tap did nothing);
- a poll (the worklist's, every 30 s) failing offline says the page is not up to date and updates by itself,
  not "the request could not be sent… try again" (the user sent nothing); the next poll that works hides it.
Each is held or failed by the test (Playwright's routes, the page's clock), not timed."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.integration


def losing_the_first_answer(sent: list[int]):
    """A route for a form's POST: the first reaches the portal, which does what it asks (its status put in
    ``sent``), and its answer is lost on the way back (the connection reset); the others go on."""
    def route_it(route) -> None:
        if route.request.method == "POST" and not sent:
            sent.append(route.fetch(max_redirects=0).status)
            route.abort("connectionreset")
        else:
            route.continue_()
    return route_it


def without_htmx(page) -> None:
    """The tab's pages without htmx (its file cut off on the way, as on a slow link): every form is posted by the
    browser, as without JavaScript, app.js's notes beside its button."""
    page.route(re.compile(r".*/htmx\.min\.js(\?.*)?$"), lambda route: route.abort("connectionreset"))


def said_not_sent(page, box: str) -> None:
    """The form's own box (``box``, a selector) says, in Vietnamese, that the connection failed and what was typed
    is kept."""
    expect(page.locator(box)).to_be_visible()
    assert page.locator(box).inner_text() == ("Không gửi được yêu cầu do lỗi kết nối. Nội dung bạn đã nhập vẫn được "
                                              "giữ; hãy thử lại.")


def test_a_suggestion_list_for_words_no_longer_typed_is_not_offered(visitor_factory):
    v = visitor_factory("vi-360-slow-suggest", width=360, height=740)
    v.sign_in("clinic", to="/patients/bn-0001/consult")
    page = v.page
    page.locator("#reason").press_sequentially("ta")
    # the list for "ta" (a list for "t" comes first when a busy machine types the keys 250 ms apart)
    stale = page.locator("#reason-suggest[data-typed='ta'] [role=option]").first
    stale.wait_for()
    assert stale.get_attribute("data-pick").startswith("A00 — ")
    held: list = []  # the answers for what is typed next stay on the way
    holding = [True]
    page.route(re.compile(r".*/icd10\?.*"), lambda route: held.append(route) if holding else route.continue_())
    page.locator("#reason").press_sequentially("ng huyet ap")
    page.wait_for_function("() => document.getElementById('reason').value === 'tang huyet ap'")
    assert page.locator("#reason-suggest").is_hidden()  # the list for "ta" is not offered under other words
    page.press("#reason", "ArrowDown")
    assert page.locator("#reason-suggest").is_hidden() and page.input_value("#reason") == "tang huyet ap"
    # let go, the route left in place (passing the next ones on): unrouted, Playwright itself lets the routes
    # held go on, and a continue_() after it found one handled already ("Route is already handled!", seen once)
    holding.clear()
    for route in held:
        route.continue_()
    page.locator("#reason-suggest[data-typed='tang huyet ap'] [role=option]").first.wait_for()
    page.press("#reason", "ArrowDown")
    page.press("#reason", "Enter")
    assert page.input_value("#reason").startswith("I10 — ")


def test_a_button_of_a_form_the_browser_posts_says_it_is_sending(visitor_factory):
    v = visitor_factory("vi-360-slow-sending", width=360, height=740)
    page = v.page
    # every form is sent in place now (the new invoice's last, session 30): posted by the browser where htmx did not
    # load, as on a slow link whose htmx.min.js was cut off (the cashier's search of a patient on the new invoice)
    v.sign_in("cashier")
    without_htmx(page)
    v.go("/invoices/new")
    search = "#charge-form button[value=find-patient]"
    page.fill("#charge-form input[name$=who]", "nguyen")
    # the page is read while its POST is held (Playwright's locators wait for a navigation under way): what the
    # form shows once app.js has marked it is sent to the test, which then lets the POST go
    seen: list[dict] = []
    held: list = []

    def shown(state: dict) -> None:
        seen.append(state)
        for route in held:
            route.continue_()

    def post(route) -> None:
        if route.request.method != "POST" or seen:
            route.continue_()
        else:
            held.append(route)

    page.expose_function("senSeen", shown)
    page.route(re.compile(r".*/invoices/new(\?.*)?$"), post)
    page.evaluate("""() => document.addEventListener("submit", () => setTimeout(() => {
      const note = document.querySelector("[data-sending-note]");
      const button = document.querySelector("#charge-form button[value=find-patient]");
      window.senSeen({note: note && note.textContent, role: note && note.getAttribute("role"),
                      shown: !!note && note.getClientRects().length > 0,
                      next: note && note.previousElementSibling === button,
                      disabled: button.getAttribute("aria-disabled"), busy: button.classList.contains("sending")});
    }, 0))""")
    with page.expect_navigation():  # the page again (the patients found), once the POST is let go
        page.click(search, no_wait_after=True)
    assert seen == [{"note": "Đang gửi…", "role": "status", "shown": True, "next": True, "disabled": "true",
                     "busy": True}]
    page.wait_for_load_state("load")
    assert page.locator("[data-sending-note]").count() == 0


def test_a_poll_that_fails_offline_says_the_page_is_not_up_to_date(visitor_factory):
    v = visitor_factory("vi-360-slow-poll", width=360, height=740)
    v.sign_in("doctor")
    page = v.page
    page.clock.install()
    v.go("/worklist")
    page.route(re.compile(r".*/worklist.*"), lambda route: route.abort("internetdisconnected")
               if route.request.headers.get("hx-request") else route.continue_())
    page.clock.run_for(31_000)
    box = page.locator("#connection-error")
    box.wait_for(state="visible")
    assert box.inner_text() == ("Mất kết nối: trang này chưa được cập nhật. Trang sẽ tự cập nhật khi có kết nối "
                                "trở lại.")
    v.shot("vi-360-worklist-poll-offline", full_page=False)
    page.unroute(re.compile(r".*/worklist.*"))
    page.clock.run_for(31_000)
    box.wait_for(state="hidden")


def test_a_form_sent_after_signing_in_again_elsewhere_goes_through_when_sent_once_more(visitor_factory):
    """The consult form left open until the session ended, "Sign in again" in another tab, then sent from the
    first: the answer said "Go back, reload the page" (the page's CSRF token was the old session's), and the
    form, its files included, was lost a second time. Now it says the page can send, and sending it once more
    makes the consult. The box's "Sign in again" opens that other tab itself: followed in the same tab, it left
    the page with the nurse's question."""
    v = visitor_factory("vi-360-slow-signed-in-again", width=360, height=740)
    v.sign_in("clinic", to="/patients/bn-0001/consult")
    page = v.page
    page.fill("#reason", "J45")
    # its suggestions in before the session ends (asked 250 ms after the typing, they would be signed out too)
    page.locator("#reason-suggest[data-typed='J45']").wait_for(state="attached")
    question = "Khó thở về đêm, đã dùng salbutamol; xin ý kiến điều trị dự phòng."
    page.fill("#question", question)
    page.set_input_files("#files", files=[{"name": "phim.png", "mimeType": "image/png",
                                           "buffer": b"\x89PNG\r\n\x1a\n" + bytes(2_000)}])
    page.context.clear_cookies()  # the session ended
    page.click("#consult-form button.primary")
    box = page.locator("#page-problem")
    box.wait_for(state="visible")
    assert "Bạn đã bị đăng xuất" in box.inner_text()
    # "Đăng nhập lại" opens the sign-in in a new tab (in this one it left the page, the question and its files)
    with page.context.expect_page() as opened:
        box.locator("[data-testid=back]").click()
    other = opened.value
    other.wait_for_load_state()
    assert "/login" in other.url and page.input_value("#question") == question
    other.fill("#username", "clinic")
    other.fill("#password", "sen-clinic")
    other.click("form button.primary")
    other.wait_for_url(re.compile(r"^[^?]*/patients/bn-0001/consult$"))  # signed in, to the form's page (next=)
    other.close()
    page.click("#consult-form button.primary")
    page.wait_for_function("() => document.querySelector('#page-problem [data-csrf]') !== null")
    assert "Giờ trang đã gửi được: hãy gửi lại" in box.inner_text()
    assert page.input_value("#question") == question
    assert page.evaluate("document.getElementById('files').files.length") == 1
    page.click("#consult-form button.primary")
    page.wait_for_url(re.compile(r".*/consults/[^/?]+$"))
    assert "Phim.png".lower() in page.inner_text("[data-testid=attachments]").lower()


def test_typing_in_a_form_keeps_the_session_alive_every_five_minutes(visitor_factory):
    """Minutes written for longer than the idle expiry (an hour's video visit in another tab, no request) were
    signed out at "Sign off": typing asks /session/alive, at most every 5 minutes; a page only open asks nothing."""
    v = visitor_factory("vi-360-slow-alive", width=360, height=740)
    v.sign_in("clinic")
    page = v.page
    page.clock.install()
    v.go("/patients/bn-0001/consult")
    asked: list[int] = []
    page.on("response", lambda r: asked.append(r.status) if r.url.endswith("/session/alive") else None)
    page.fill("#question", "Ho kéo dài")
    page.clock.run_for(6 * 60_000)  # left open: nothing asked
    assert asked == []
    with page.expect_response(re.compile(r".*/session/alive$")):
        page.locator("#question").press_sequentially(" ba tuần")
    page.locator("#question").press_sequentially(", sốt về chiều")  # within the 5 minutes: not asked again
    assert asked == [204]


def test_a_form_sent_with_no_connection_says_so_and_stays(visitor_factory):
    """The doctor's minutes signed with no connection were the browser's own "no internet" page; a form the browser
    posts while the phone knows it is offline sends nothing, says so beside its button, and keeps what was typed;
    sent again once the connection is back, it goes through."""
    v = visitor_factory("vi-360-slow-offline", width=360, height=740)
    page = v.page
    # posted by the browser where htmx did not load (test_a_button_of_a_form_the_browser_posts_says_it_is_sending);
    # sent in place, a form with no connection says so in its "not sent" box (test_cashier_in_place)
    v.sign_in("cashier")
    without_htmx(page)
    v.go("/invoices/new")
    search, who = "#charge-form button[value=find-patient]", "#charge-form input[name$=who]"
    page.fill(who, "nguyen")
    page.context.set_offline(True)
    page.click(search)
    note = page.locator("[data-offline-note]")
    # its words are put in just after it (setTimeout 0, so that the alert is read): waited for, not read at once
    expect(note).to_have_text("Không có kết nối mạng: chưa gửi gì. Nội dung đã nhập vẫn được giữ; hãy gửi lại "
                              "khi có mạng trở lại.")
    assert note.get_attribute("role") == "alert" and page.url.endswith("/invoices/new")
    assert page.input_value(who) == "nguyen"
    assert page.locator("[data-sending-note]").count() == 0
    page.context.set_offline(False)
    v.check("search-offline")  # the note as said (axe-core, served by the portal, needs the connection)
    v.submit(search)  # sent once the connection is back: the page's answer (the patients found)
    assert page.locator("[data-offline-note]").count() == 0 and "/invoices/new" in page.url


def test_an_answer_whose_connection_drops_on_the_way_back_says_so_keeps_it_and_is_sent_once(visitor_factory, stack):
    """The nurse answers the hub's question with an X-ray and a lab report on a 400 kbit/s, 400 ms link: the answer
    was a form the browser posted, and the connection lost on the way back was Chromium's own English "This site
    can't be reached", the answer's files gone. It is sent in place now: the page stays and says so in the answer
    box, what was typed and the files kept; sent again, the portal's key makes it one answer with two files. A
    file over the limit is refused by name as it is chosen, nothing sent, the answer kept."""
    from tests.browser.test_pages import _submit

    tid = _submit(stack, "Ho kéo dài ba tuần, sốt về chiều; xin ý kiến.", patient="bn-0001")
    doctor = visitor_factory("vi-1280-slow-asks")
    doctor.sign_in("doctor", to=f"/tasks/{tid}")
    doctor.page.click("details:has(form[action$='/request-info']) summary")
    doctor.page.fill("form[action$='/request-info'] [name=question]", "Xin gửi phim X quang ngực và công thức máu.")
    doctor.page.click("form[action$='/request-info'] button")
    doctor.page.wait_for_selector("[data-testid=thread-question]")

    v = visitor_factory("vi-360-slow-answer", width=360, height=740)
    page = v.page
    cdp = page.context.new_cdp_session(page)  # a district clinic's 3G: 400 kbit/s, 400 ms
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 400, "downloadThroughput": 50_000,
                                                  "uploadThroughput": 50_000})
    v.sign_in("clinic")
    for _ in range(30):  # the portal keeps a user's answers a few seconds: the question shows within them
        v.go(f"/consults/{tid}")
        if page.locator("form[action$='/answer']").count():
            break
        page.wait_for_timeout(1_000)
    answer = "Phim X quang: mờ đáy phổi phải. Bạch cầu 13,5 G/L."
    page.fill("form[action$='/answer'] [name=answer]", answer)
    files = "form[action$='/answer'] input[type=file]"
    sent: list[int] = []

    # the answer reaches the portal, which sends it on; its answer is lost
    page.route(re.compile(r".*/consults/[^/]+/answer$"), losing_the_first_answer(sent))
    page.set_input_files(files, files=[{"name": "phim-lon.png", "mimeType": "image/png",
                                        "buffer": b"\x89PNG\r\n\x1a\n" + bytes(1_600_000)}])
    expect(page.locator("#answer-files-refused")).to_have_text("phim-lon.png lớn hơn 1,5 MB.")
    page.click("#consult-answer button.primary")
    assert sent == [] and page.input_value("form[action$='/answer'] [name=answer]") == answer
    page.set_input_files(files, files=[{"name": "x-quang.png", "mimeType": "image/png",
                                        "buffer": b"\x89PNG\r\n\x1a\n" + bytes(20_000)},
                                       {"name": "cong-thuc-mau.pdf", "mimeType": "application/pdf",
                                        "buffer": b"%PDF-1.4\n" + bytes(10_000)}])
    page.click("#consult-answer button.primary")
    said_not_sent(page, "#answer-live-error")
    assert sent == [204] and page.url.endswith(f"/consults/{tid}")  # the portal did it; the page stayed
    assert page.input_value("form[action$='/answer'] [name=answer]") == answer
    assert page.evaluate(f"document.querySelector(\"{files}\").files.length") == 2
    v.shot("vi-360-answer-connection-lost")
    page.click("#consult-answer button.primary")  # sent again: the same form, the same key
    page.wait_for_selector("[data-testid=answered]")
    assert page.locator("[data-testid=thread-answer]").count() == 1
    names = page.locator("[data-testid=thread-answer] [data-testid=thread-files] a").all_inner_texts()
    assert sorted(names) == ["cong-thuc-mau.pdf", "x-quang.png"], names


def test_a_message_whose_answer_is_lost_on_the_way_back_is_one_message_when_sent_again(visitor_factory, stack):
    """A message the browser posted, stored by teleconsult, its answer lost on the way back: Chromium's "This
    site can't be reached", then Back brought the text with a new form key, and sent again it was a second
    message on the thread. Sent in place now: the page stays, says so under the message box, and sent again
    with the same key it is one message."""
    from tests.browser.test_pages import _submit

    tid = _submit(stack, "Đau ngực trái khi gắng sức; xin ý kiến.", patient="bn-0001")
    v = visitor_factory("vi-360-slow-message", width=360, height=740)
    v.sign_in("clinic", to=f"/consults/{tid}")
    page = v.page
    text = "Sáng nay đau ngực tăng, huyết áp 160/95."
    page.fill("form[action$='/message'] [name=text]", text)
    sent: list[int] = []

    page.route(re.compile(r".*/consults/[^/]+/message$"), losing_the_first_answer(sent))
    page.click("form[action$='/message'] button")
    said_not_sent(page, "#message-live-error")
    assert sent == [204] and page.input_value("form[action$='/message'] [name=text]") == text
    page.click("form[action$='/message'] button")
    page.wait_for_selector("[data-testid=message-sent]")
    assert page.locator("[data-testid=thread-message]", has_text=text).count() == 1


def test_minutes_whose_answer_is_lost_on_the_way_back_are_kept_and_complete_the_consult_once(visitor_factory, stack):
    """The hub doctor signs long minutes between two patients: a form the browser posted, and a connection lost
    on the way was Chromium's own "This site can't be reached", Back perhaps losing the text. Sent in place now
    (the clinic's answer and messages' way): the page stays, says so under the minutes, what was typed kept;
    sent again on the version the page showed, the consult is completed once and the page says the doctor
    completed it, the minutes below."""
    from tests.browser.test_visit_changes import accepted_consult

    v = visitor_factory("vi-360-slow-minutes", width=360, height=740)
    tid = accepted_consult(v, stack, "vi", "Khó thở khi nằm, phù hai chân; xin ý kiến.")
    page = v.page
    typed = {"history": "Khó thở tăng dần 2 tuần, phù hai chân.", "findings": "Ran ẩm hai đáy phổi, gan to 3 cm.",
             "conclusion": "Suy tim mạn, đợt cấp.", "recommendations": "Furosemid 40 mg; tái khám sau 1 tuần.",
             "diagnosis": "I50.0"}
    for name, text in typed.items():
        page.fill(f"#{name}", text)
    sent: list[int] = []

    # the minutes reach the portal, which signs them; its answer is lost
    page.route(re.compile(r".*/tasks/[^/]+/complete$"), losing_the_first_answer(sent))
    page.click("form[action$='/complete'] button.primary")
    said_not_sent(page, "#minutes-live-error")
    assert sent == [204] and page.url.endswith(f"/tasks/{tid}")  # the portal did it; the page stayed
    for name, text in typed.items():
        assert page.input_value(f"#{name}") == text, name
    v.shot("vi-360-minutes-connection-lost")
    page.click("form[action$='/complete'] button.primary")  # sent again: the version the page showed
    said = page.locator("main .alert.error", has_text="Bạn đã hoàn thành ca hội chẩn này lúc")
    expect(said).to_be_visible()
    assert page.inner_text("[data-testid=task-status]") == "Đã hoàn thành"
    assert page.locator("form[action$='/complete']").count() == 0 and sent == [204]
    codes = [t.split()[0] for t in page.locator("[data-testid=result] [data-testid=diagnosis]").all_inner_texts()]
    assert codes == ["I50.0"], codes
    v.check("doctor-minutes-sent-again")


def _visits(stack, tid: str) -> list[dict]:
    """The consult's video visits as teleconsult holds them (its Appointment search, by the consult's request)."""
    import httpx

    from tests.browser.test_pages import _admin

    tc, admin = stack["teleconsult"], _admin(stack)
    task = httpx.get(f"{tc}/fhir/Task/{tid}", headers=admin, timeout=30).json()
    found = httpx.get(f"{tc}/fhir/Appointment", headers=admin, timeout=30,
                      params={"based-on": task["basedOn"][0]["reference"], "_count": "50"}).json()
    return [e["resource"] for e in found.get("entry") or [] if e["resource"]["resourceType"] == "Appointment"]


def test_a_booking_whose_answer_is_lost_on_the_way_back_books_one_visit(visitor_factory, stack):
    """The hub doctor books the consult's video visit on a slow link: a time's button was a form the browser
    posted, and the answer lost on the way back was Chromium's own "This site can't be reached" (Back, and the
    time pressed again, would hold and book anew). Sent in place now: the page and its free times stay, the
    visit's box says so, and the same time pressed again books one visit (the page's key)."""
    from tests.browser.test_visit_changes import accepted_consult

    v = visitor_factory("vi-360-slow-book", width=360, height=740)
    tid = accepted_consult(v, stack, "vi", "Hồi hộp, khó thở khi leo cầu thang; xin hẹn khám video.")
    page = v.page
    page.click("form[action$='/slots'] button")
    page.wait_for_selector("form[action$='/book'] button")
    sent: list[int] = []
    page.route(re.compile(r".*/tasks/[^/]+/book$"), losing_the_first_answer(sent))
    button = page.locator("form[action$='/book'] button").first
    label = button.get_attribute("aria-label")
    button.click()
    said_not_sent(page, "#visit-live-error")
    assert sent == [204] and f"/tasks/{tid}/slots?" in page.url  # the portal booked it; the page stayed
    page.locator(f"form[action$='/book'] button[aria-label='{label}']").click()  # pressed again
    page.wait_for_selector("[data-testid=booked]")
    assert page.url.endswith(f"/tasks/{tid}") and sent == [204]
    assert [a["status"] for a in _visits(stack, tid)] == ["booked"]


def test_a_move_whose_answer_is_lost_on_the_way_back_moves_the_visit_once(visitor_factory, stack):
    from tests.browser.test_visit_changes import _booked_visit

    v = visitor_factory("vi-360-slow-move", width=360, height=740)
    tid = _booked_visit(v, stack, "vi", "Phù hai chân tăng dần; xin dời lịch khám video.")
    page = v.page
    page.click("[data-testid=visit-move] summary")
    page.click("[data-testid=visit-move] form[action$='/slots'] button")
    page.wait_for_selector("form[action$='/visit/move'] button")
    target = page.locator("form[action$='/visit/move']").nth(1)
    start = target.locator("input[name=start]").get_attribute("value")
    sent: list[int] = []
    page.route(re.compile(r".*/tasks/[^/]+/visit/move$"), losing_the_first_answer(sent))
    target.locator("button").click()
    said_not_sent(page, "#visit-live-error")
    assert sent == [204] and f"/tasks/{tid}/slots?" in page.url
    target.locator("button").click()  # pressed again: the visit is there already, said moved
    page.wait_for_selector("[data-testid=moved]")
    visits = _visits(stack, tid)
    active = [a for a in visits if a["status"] in ("booked", "pending")]
    assert len(visits) == 2 and len(active) == 1, [(a["status"], a["start"]) for a in visits]
    from datetime import datetime

    assert datetime.fromisoformat(active[0]["start"]) == datetime.fromisoformat(start)


def test_a_visit_cancel_whose_answer_is_lost_on_the_way_back_keeps_the_reason_and_cancels_once(visitor_factory,
                                                                                             stack):
    from tests.browser.test_visit_changes import _booked_visit

    v = visitor_factory("vi-360-slow-visit-cancel", width=360, height=740)
    tid = _booked_visit(v, stack, "vi", "Đau đầu kéo dài; xin hẹn khám video.")
    page = v.page
    reason = "Bệnh nhân đã chuyển lên tuyến trên điều trị nội trú."
    page.click("[data-testid=visit-cancel] summary")
    page.fill("#visit-reason", reason)
    page.click("[data-testid=visit-cancel] button.danger")  # the step, in place: nothing sent yet
    page.wait_for_selector("[data-testid=visit-cancel] [data-testid=confirm-step]")
    page.check("[data-testid=visit-cancel] [data-testid=confirm-tick]")
    sent: list[int] = []
    page.route(re.compile(r".*/tasks/[^/]+/visit/cancel$"), losing_the_first_answer(sent))
    page.click("[data-testid=visit-cancel] [data-testid=confirm-button]")
    said_not_sent(page, "#visit-live-error")
    assert sent == [204] and page.input_value("#visit-reason") == reason
    v.shot("vi-360-visit-cancel-connection-lost")
    page.click("[data-testid=visit-cancel] [data-testid=confirm-button]")  # sent again
    page.wait_for_selector("[data-testid=visit-cancelled]")
    [visit] = _visits(stack, tid)
    assert visit["status"] == "cancelled" and visit["cancelationReason"]["text"] == reason


def test_a_reassign_whose_answer_is_lost_on_the_way_back_gives_the_consult_once(visitor_factory, stack):
    import httpx

    from tests.browser.test_pages import _admin, _submit

    tid = _submit(stack, "Rung nhĩ, xin ý kiến chống đông; chuyển bác sĩ khác nếu cần.", "urgent")
    v = visitor_factory("vi-360-slow-reassign", width=360, height=740)
    v.sign_in("doctor", to=f"/tasks/{tid}")
    page = v.page
    page.click("details:has(form[action$='/reassign']) summary")
    page.select_option("form[action$='/reassign'] select", "Practitioner/bs-tran-thi-bich")
    page.click("form[action$='/reassign'] button")
    confirm = page.locator("[data-testid=reassign-confirm]")  # the step, in place
    confirm.wait_for()
    confirm.locator("[data-testid=confirm-tick]").check()
    sent: list[int] = []
    page.route(re.compile(r".*/tasks/[^/]+/reassign$"), losing_the_first_answer(sent))
    confirm.locator("[data-testid=confirm-button]").click()
    said_not_sent(page, "#reassign-live-error")
    assert sent == [204] and page.url.endswith(f"/tasks/{tid}")
    confirm.locator("[data-testid=confirm-button]").click()  # sent again: teleconsult replays its answer
    page.wait_for_url(re.compile(r"/worklist$"))
    assert "Trần Thị Bích" in page.inner_text("[data-testid=reassigned]")
    admin = _admin(stack)
    task = httpx.get(f"{stack['teleconsult']}/fhir/Task/{tid}", headers=admin, timeout=30).json()
    assert task["owner"]["reference"] == "Practitioner/bs-tran-thi-bich"
    history = httpx.get(f"{stack['teleconsult']}/fhir/Task/{tid}/_history", headers=admin, timeout=30).json()
    owners = [e["resource"].get("owner", {}).get("reference") for e in history.get("entry") or []]
    assert owners.count("Practitioner/bs-tran-thi-bich") == 1, owners
