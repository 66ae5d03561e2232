"""The doctor signs the minutes with several ICD-10 diagnoses in the browser: codes typed, then one
picked from the suggestions with the keyboard (added after them, not replacing them), then another typed; an unknown
code is named and the text kept; the signed minutes list every diagnosis in order and name the chair
once. Checked by axe-core (conftest.Visitor.check)."""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from tests.browser.test_visit_changes import accepted_consult

pytestmark = pytest.mark.integration


def test_the_minutes_take_several_diagnoses_typed_and_picked(visitor_factory, stack):
    v = visitor_factory("vi-1280")
    accepted_consult(v, stack, "vi", "Đau ngực khi gắng sức, kèm tăng huyết áp và đái tháo đường.")
    page = v.page
    for name, text in (("history", "Đau ngực 2 tuần."), ("findings", "ECG: ST chênh xuống."),
                       ("conclusion", "Đau thắt ngực không ổn định trên nền tăng huyết áp."),
                       ("recommendations", "Chuyển tuyến trên.")):
        page.fill(f"#{name}", text)
    page.fill("#diagnosis", "I20.0, X99.9")
    page.click("form[action$='/complete'] button.primary")
    page.wait_for_selector("#diagnosis-error")  # the minutes' box again (sent in place), the code named
    assert "X99.9" in page.inner_text("#diagnosis-error") and page.input_value("#diagnosis") == "I20.0, X99.9"

    page.fill("#diagnosis", "I20.0, ")
    page.locator("#diagnosis").press_sequentially("tăng huyết")
    pick = page.locator("#diagnosis-suggest [role=option][data-query='tăng huyết'][data-pick^='I10 ']")
    pick.wait_for()
    # picked with the keyboard (the focus stays in the box; Enter picks the suggestion moved to, no new line)
    box = page.locator("#diagnosis")
    for _ in range(page.locator("#diagnosis-suggest [role=option]").count()):
        box.press("ArrowDown")
        if box.get_attribute("aria-activedescendant") == pick.get_attribute("id"):
            break
    assert pick.get_attribute("aria-selected") == "true" and page.evaluate("document.activeElement.id") == "diagnosis"
    box.press("Enter")
    assert page.input_value("#diagnosis") == "I20.0\nI10 — Tăng huyết áp vô căn (nguyên phát)\n"
    assert page.locator("#diagnosis-suggest").is_hidden()
    page.locator("#diagnosis").press_sequentially("E11.9")
    v.check("doctor-minutes-several-diagnoses")
    page.click("form[action$='/complete'] button.primary")
    page.wait_for_selector("[data-testid=done]")  # signed: said once, on the consult's own address
    codes = [t.split()[0] for t in page.locator("[data-testid=result] [data-testid=diagnosis]").all_inner_texts()]
    assert codes == ["I20.0", "I10", "E11.9"], codes
    page.click("summary:has-text('Toàn văn biên bản')")
    assert page.inner_text("[data-testid=minutes-chair]").strip() == "BS. Nguyễn Văn An"
    people = page.inner_text("[data-testid=minutes-participants]")
    assert people.count("Nguyễn Văn An") == 1, people
    v.check("doctor-minutes-signed")


PARTICIPANTS = ("BS. Nguyễn Văn An — chủ trì\nBS. Trần Thị Bích — thư ký, Bệnh viện Đa khoa Đồng Tháp\n"
                "YS. Võ Minh Tâm — cơ sở gửi, Trạm Y tế xã Mỹ Hiệp")


def test_the_minutes_name_their_secretary_from_the_participants_and_the_print_signs_them(
        visitor_factory, stack, tmp_path):
    """The secretary (thư ký) signs the minutes beside the chair: the box suggests the participants (the chair
    aside); one who is not among them is said in Vietnamese on the box, everything typed kept; one of them signs,
    the full minutes name them, and the clinic's printed minutes carry that name under THƯ KÝ (before, the print
    took the participant whose role says thư ký)."""
    v = visitor_factory("vi-1280")
    tid = accepted_consult(v, stack, "vi", "Khó thở khi nằm, phù hai chân, xin hội chẩn tim mạch.")
    page = v.page
    suggested = page.eval_on_selector_all("#secretary-names option", "os => os.map(o => o.value)")
    assert suggested and not any("Nguyễn Văn An" in s for s in suggested), suggested  # the chair aside
    page.fill("#participants", PARTICIPANTS)
    for name, text in (("history", "Khó thở 1 tuần."), ("findings", "Phù mềm hai chân, ran ẩm hai đáy phổi."),
                       ("conclusion", "Suy tim."), ("recommendations", "Lợi tiểu, hẹn tái khám.")):
        page.fill(f"#{name}", text)
    page.fill("#diagnosis", "I50")
    page.fill("#secretary", "BS. Phạm Văn Tư")
    page.click("form[action$='/complete'] button.primary")
    page.wait_for_selector("#secretary-error")  # the minutes' box again (sent in place), the name said
    assert "BS. Phạm Văn Tư không có trong thành phần tham dự" in page.inner_text("#secretary-error")
    assert page.input_value("#secretary") == "BS. Phạm Văn Tư" and page.input_value("#participants") == PARTICIPANTS
    assert page.input_value("#findings") == "Phù mềm hai chân, ran ẩm hai đáy phổi."
    suggested = page.eval_on_selector_all("#secretary-names option", "os => os.map(o => o.value)")
    assert suggested == ["BS. Trần Thị Bích", "YS. Võ Minh Tâm"], suggested  # the participants as typed
    v.check("doctor-minutes-secretary-refused")
    page.fill("#secretary", suggested[1])  # chosen from the suggestions (not the one whose role says thư ký)
    page.click("form[action$='/complete'] button.primary")
    page.wait_for_selector("[data-testid=done]")
    page.click("summary:has-text('Toàn văn biên bản')")
    assert page.inner_text("[data-testid=minutes-secretary]").strip() == "YS. Võ Minh Tâm"

    # the clinic prints the minutes once the EHR has filed them (202 "being filed" until the event is handled)
    clinic = visitor_factory("vi-clinic")
    clinic.sign_in("clinic")
    got = None
    for _ in range(120):
        got = clinic.page.request.get(f"{clinic.base}/consults/{tid}/minutes.pdf")
        if got.status == 200:
            break
        assert got.status == 202, (got.status, got.text()[:300])
        time.sleep(0.5)
    assert got is not None and got.status == 200 and got.headers["content-type"] == "application/pdf"
    (tmp_path / "minutes.pdf").write_bytes(got.body())
    text = subprocess.run(["pdftotext", str(tmp_path / "minutes.pdf"), "-"], capture_output=True, text=True,
                          check=True).stdout
    flat = re.sub(r"\s+", " ", text)
    # the one the minutes name, not the participant whose role says thư ký (what the print took before)
    assert "Thư ký YS. Võ Minh Tâm" in flat and flat.rindex("YS. Võ Minh Tâm") > flat.index("THƯ KÝ"), flat
    assert "Thư ký BS. Trần Thị Bích" not in flat
