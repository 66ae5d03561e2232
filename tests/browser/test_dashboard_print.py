"""The dashboard printed (A4): a card's title was at the foot of page 1 and its chart on page 2, and the filter
form with its "Xem" button was printed. In print the form, the navigation and every button are left out, the
chosen filters read as the scope line, and no card is cut between two pages (``break-inside: avoid``)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_the_printed_dashboard_keeps_each_card_whole_and_leaves_out_the_form(visitor_factory):
    v = visitor_factory("vi-1280-print", width=1280)
    v.sign_in("health-dept", to="/dashboard?start=2026-11-01&end=2026-12-05")
    v.page.wait_for_selector("[data-testid=scope]")
    shown = lambda: v.page.evaluate(  # noqa: E731 - what is drawn, by kind of element
        "() => ({form: getComputedStyle(document.querySelector('main form')).display,"
        " buttons: [...document.querySelectorAll('button')].filter(b => b.offsetParent !== null).length,"
        " nav: getComputedStyle(document.querySelector('header.top')).display,"
        " cards: [...document.querySelectorAll('main section.card')].map(c => getComputedStyle(c).breakInside),"
        " scope: document.querySelector('[data-testid=scope]').offsetParent !== null})")
    on_screen = shown()
    assert on_screen["form"] != "none" and on_screen["buttons"] > 0 and on_screen["nav"] != "none", on_screen
    v.page.emulate_media(media="print")
    printed = shown()
    assert printed["form"] == "none" and printed["buttons"] == 0 and printed["nav"] == "none", printed
    assert len(printed["cards"]) >= 5 and set(printed["cards"]) == {"avoid"}, printed
    assert printed["scope"]  # the filters chosen, as text
    # review 12: the data tables behind "Bảng số liệu" (closed on screen) are printed, the CSV links are not
    tables = lambda: v.page.evaluate(  # noqa: E731
        "() => ({tables: [...document.querySelectorAll('main details table')].map(t => t.checkVisibility()),"
        " links: [...document.querySelectorAll('main a[download]')].filter(a => a.offsetParent !== null).length})")
    assert tables()["tables"] and all(tables()["tables"]), tables()
    assert tables()["links"] == 0, tables()
    v.page.emulate_media(media="screen")
    assert not any(tables()["tables"]) and tables()["links"] > 0, tables()  # closed on screen, as before
    v.page.emulate_media(media="print")
    assert v.page.inner_text("[data-testid=scope]").startswith("Từ 01/11/2026 đến 05/12/2026")
    # the province's goal, a line across the facilities chart, is printed with it (the chart drawn for the paper)
    v.page.wait_for_function(
        "() => window.Chart && Chart.getChart(document.querySelector('canvas[data-chart=facilities]'))")
    goal = v.page.evaluate(
        "() => { const c = document.querySelector('canvas[data-chart=facilities]'), ch = Chart.getChart(c);"
        " window.dispatchEvent(new Event('beforeprint')); ch.resize();"
        " const line = ch.data.datasets.find(d => d.type === 'line'), meta = ch.getDatasetMeta(1);"
        " return {shown: c.checkVisibility(), label: line && line.label, drawn: !!line && ch.isDatasetVisible(1)"
        " && meta.data.length === 2 && meta.data[1].x - meta.data[0].x >= ch.chartArea.width - 1}; }")
    assert goal == {"shown": True, "label": "Mục tiêu: 165 cơ sở", "drawn": True}, goal
    pdf = v.page.pdf(format="A4", print_background=True)
    assert pdf.startswith(b"%PDF")
