"""Back to the consult form brings back the reason picked from the ICD-10 list, code and title, with the
question: the reason box has autocomplete=off (no browser list over its suggestions), which the browser's
own form state skips (the question comes back, the reason did not), so app.js keeps it in the page's history
entry and puts it back. A reload, or a new visit of the form, starts it empty. SEN_OLD_APP_JS=<commit> runs it
on that commit's app.js (it fails on the one before the fix)."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

pytestmark = pytest.mark.integration


def test_back_to_the_consult_form_brings_back_the_reason_picked(visitor_factory):
    v = visitor_factory("vi-1280-consult-back")
    v.sign_in("clinic")
    page = v.page
    if os.environ.get("SEN_OLD_APP_JS"):  # the script before the fix (to see this test fail on it)
        old = subprocess.run(["git", "show", f"{os.environ['SEN_OLD_APP_JS']}:services/portal/src/sen_portal/web/"
                              "static/app.js"], capture_output=True, check=True).stdout
        page.route(re.compile(r".*/assets/app\.js.*"), lambda route: route.fulfill(
            body=old, content_type="text/javascript"))
    v.go("/patients/bn-0001/consult")
    page.fill("#question", "Huyết áp 170/100 dù đã dùng amlodipin 5 mg; xin ý kiến.")
    page.fill("#reason", "tang huyet ap")
    first = page.locator("#reason-suggest [role=option]").first
    first.wait_for()
    chosen = first.get_attribute("data-pick")
    first.click()
    assert page.input_value("#reason") == chosen and chosen.startswith("I10 — ")

    page.goto(page.url.replace("/consult", ""))  # the chart, then Back
    page.wait_for_url(re.compile(r"/patients/bn-0001$"))
    page.go_back()
    page.wait_for_url(re.compile(r"/patients/bn-0001/consult$"))
    page.wait_for_load_state("load")
    assert page.input_value("#question").startswith("Huyết áp 170/100")
    assert page.input_value("#reason") == chosen
    # kept by app.js in the entry itself, and put back from there
    assert page.evaluate("(history.state || {}).senBoxes") == {"reason": chosen}
    v.check("clinic-consult-after-back")

    page.reload()  # a reload empties the form: the reason as the question
    page.wait_for_load_state("load")
    assert (page.input_value("#reason") == chosen) == (page.input_value("#question") != "")

    v.go("/patients/bn-0001")
    v.go("/patients/bn-0001/consult")  # a new visit of the form: nothing of the last one
    assert page.input_value("#reason") == "" and page.input_value("#question") == ""
