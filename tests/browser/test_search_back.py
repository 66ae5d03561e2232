"""Back after opening a search result, and a refresh, show the search again: the clinic searches "dang
hung" (words in any order, no accents), opens Đặng Văn Hùng's chart, presses Back: the words typed and
the results are there, the address holding a key of the search, never the name (web/searches.py)."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.integration


def test_back_from_a_chart_and_a_refresh_show_the_patient_search_again(visitor_factory):
    v = visitor_factory("vi-1280-search-back")
    v.sign_in("clinic", to="/patients")
    v.page.fill("#q", "hung dang")  # "Đặng Văn Hùng", the words the other way round
    v.page.click("form.card button.primary")
    v.page.wait_for_selector("#results table")
    v.page.wait_for_url(re.compile(r"/patients\?s=[\w-]+$"))
    searched = v.page.url
    assert "dang" not in searched and "hung" not in searched
    v.page.locator("#results a[href='/patients/bn-0002']").first.click()
    v.page.wait_for_url(re.compile(r"/patients/bn-0002$"))

    v.page.go_back()
    v.page.wait_for_selector("#results table")
    assert v.page.url == searched and v.page.input_value("#q") == "hung dang"
    assert "Đặng Văn Hùng" in v.page.inner_text("#results")

    v.page.reload()
    v.page.wait_for_selector("#results table")
    assert v.page.input_value("#q") == "hung dang" and "Đặng Văn Hùng" in v.page.inner_text("#results")
    v.check("clinic-search-after-back")
