"""The dashboard's charts say their units (review 12): the cashless share's tooltips gave a bare number in the
browser's grouping ("448,000" in an English browser, "448.000" in a Vietnamese one, never "₫"), and the
charts' value axes had no title (minutes, consults). The tooltips now write đồng as every page does,
448.000 ₫ in both languages, and the axes say what they count.

The page is the portal's own (its template, charts.js and Chart.js), served to Chromium by the Flask test
client through Playwright's routing: no stack, no network."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.browser.served import fulfil_from
from tests.browser.test_dashboard_week_labels import _figures
from tests.support import portal_app, portal_signed_in

pytestmark = pytest.mark.integration


def _with_money(*args: Any, **kw: Any) -> dict[str, Any]:
    data = _figures(*args, **kw)
    money = {**data["cashless_share"], "transfer_amount": 448_000, "cash_amount": 48_000, "share": 0.9032}
    return {**data, "cashless_share": money}


@contextmanager
def _dashboard(browser: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lang: str, viewport: dict[str, int],
               locale: str, chart: str) -> Iterator[Any]:
    """The health department's dashboard (figures with money, one commune clinic) in a browser of ``locale``,
    the page in ``lang``, once its ``chart`` is drawn."""
    from sen_portal.web import dashboard

    monkeypatch.setattr(dashboard, "figures", _with_money)
    monkeypatch.setattr(dashboard, "org_names", lambda: {"tyt-my-hiep": "Trạm Y tế xã Mỹ Hiệp"})
    monkeypatch.setattr(dashboard, "org_districts", lambda: {"tyt-my-hiep": "Huyện Cao Lãnh"})
    monkeypatch.setattr(dashboard, "org_without_care", lambda: set())
    client = portal_signed_in(portal_app(tmp_path, monkeypatch), "health-dept", lang)

    def serve(route: Any) -> None:
        fulfil_from(client, route)

    ctx = browser.new_context(viewport=viewport, locale=locale, timezone_id="Asia/Ho_Chi_Minh")
    try:
        page = ctx.new_page()
        page.route("http://portal.test/**", serve)
        page.goto("http://portal.test/dashboard")
        page.wait_for_function("() => window.Chart && Chart.getChart(document.querySelector("
                               f"'canvas[data-chart={chart}]'))")
        yield page
    finally:
        ctx.close()


@pytest.mark.parametrize("lang,locale,transfer,minutes,consults", [
    ("vi", "en-US", "Chuyển khoản (QR): 448.000\u00a0₫", "Phút", "Số ca hội chẩn"),
    ("en", "en-US", "Bank transfer (QR): 448.000\u00a0₫", "Minutes", "Number of consults")])
def test_the_charts_say_dong_minutes_and_consults(browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  lang: str, locale: str, transfer: str, minutes: str,
                                                  consults: str) -> None:
    with _dashboard(browser, tmp_path, monkeypatch, lang, {"width": 1280, "height": 900}, locale, "cashless") \
            as page:
        # the tooltip's line for each part of the ring, as Chart.js builds it on hover
        lines = page.evaluate(
            "() => { const ch = Chart.getChart(document.querySelector('canvas[data-chart=cashless]'));"
            " const label = ch.options.plugins.tooltip.callbacks.label;"
            " const data = ch.data.datasets[0].data;"
            " return ch.data.labels.map((l, i) => label.call(ch.tooltip, {label: l, parsed: data[i],"
            " dataset: ch.data.datasets[0], dataIndex: i, formattedValue: String(data[i])})); }")
        assert lines[0] == transfer and lines[1].endswith(": 48.000\u00a0₫"), lines
        titles = page.evaluate(
            "() => Object.fromEntries(['answer', 'consults', 'breaches'].map(n => {"
            " const y = Chart.getChart(document.querySelector(`canvas[data-chart=${n}]`)).options.scales.y.title;"
            " return [n, y.display ? y.text : null]; }))")
        assert titles == {"answer": minutes, "consults": consults, "breaches": consults}, titles


@pytest.mark.parametrize("lang,half,thousands", [("vi", "2,5", "1.234"), ("en", "2.5", "1,234")])
def test_the_charts_numbers_are_written_in_the_pages_language_not_the_browsers(
        browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lang: str, half: str, thousands: str) -> None:
    """Chart.js writes its axis labels and tooltips with Intl in its ``locale`` option, by default the
    browser's: in an English browser the Vietnamese page's minutes axis and tooltips read 2.5 and 1,234 beside
    the page's "2,5 phút" (found walking the dashboard). charts.js now sets it to the page's language."""
    with _dashboard(browser, tmp_path, monkeypatch, lang, {"width": 360, "height": 780},
                    "en-US" if lang == "vi" else "vi-VN", "answer") as page:
        written = page.evaluate(
            "() => { const y = Chart.getChart(document.querySelector('canvas[data-chart=answer]')).scales.y;"
            " return [y.getLabelForValue(2.5), y.getLabelForValue(1234)]; }")
        assert written == [half, thousands], written
