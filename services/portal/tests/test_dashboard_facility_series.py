"""The weekly consults chart's series (review 12): keyed by the facility's name, two facilities of one name
(communes of different districts often share one) were one series, and a week's count of the one replaced
the other's, so the chart added up to less than the card; and past eight facilities the colours repeated,
two facilities in one colour. Now a series a facility (its district beside a shared name), counts summed,
and past eight the busiest seven and one grey "N other facilities"."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import portal_app


def _row(fid: str, week: str, count: int, district: str = "Huyện Cao Lãnh") -> dict:
    return {"facility": f"Organization/{fid}", "district": district, "week": week, "count": count}


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    return portal_app(tmp_path, monkeypatch)


def test_two_facilities_of_one_name_are_two_series_and_add_up(app) -> None:
    from sen_portal.web.dashboard import facility_series

    rows = [_row("tyt-an-binh-cl", "2026-W48", 3), _row("tyt-an-binh-cl", "2026-W49", 1),
            _row("tyt-an-binh-tm", "2026-W49", 2, "Huyện Tháp Mười")]
    names = {"tyt-an-binh-cl": "Trạm Y tế xã An Bình", "tyt-an-binh-tm": "Trạm Y tế xã An Bình"}
    with app.test_request_context():
        series = facility_series(rows, names)
    assert [(label, counts) for label, counts, _ in series] == [
        ("Trạm Y tế xã An Bình (Huyện Cao Lãnh)", {"2026-W48": 3, "2026-W49": 1}),
        ("Trạm Y tế xã An Bình (Huyện Tháp Mười)", {"2026-W49": 2})]
    assert sum(sum(c.values()) for _, c, _ in series) == 6  # as the card's total
    assert len({color for *_, color in series}) == 2


def test_past_eight_facilities_the_busiest_seven_and_the_others_in_grey(app) -> None:
    from sen_portal.web.dashboard import COLORS, facility_series

    rows = [_row(f"tyt-{i:02d}", "2026-W49", i + 1) for i in range(12)]  # tyt-11 the busiest, tyt-00 the least
    with app.test_request_context():
        series = facility_series(rows, {})
    assert [label for label, *_ in series] == [f"tyt-{i:02d}" for i in range(5, 12)] + ["5 cơ sở khác"]
    assert series[-1][1] == {"2026-W49": 1 + 2 + 3 + 4 + 5}
    colors = [color for *_, color in series]
    assert len(set(colors)) == len(colors) == len(COLORS)  # every series a colour of its own
    assert sum(sum(c.values()) for _, c, _ in series) == sum(range(1, 13))


def test_the_table_under_the_chart_says_each_facilitys_district(app, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two facilities of one name are told apart in the table too: a District column."""
    from sen_portal.web import dashboard, directory

    from tests.support import portal_signed_in

    rows = [_row("tyt-an-binh-cl", "2026-W49", 1), _row("tyt-an-binh-tm", "2026-W49", 2, "Huyện Tháp Mười")]

    def figures(start, end, district, facility=None) -> dict:
        return {"range": {"start": "2026-12-05", "end": "2026-12-06", "district": None, "facility": None,
                          "weeks": ["2026-W49"]},
                "facilities_using": {"count": 24, "new": 2, "baseline": 22, "goal": 165, "share": 0.1455},
                "consults_per_facility_week": rows, "consults_by_status": [], "time_to_answer": {},
                "time_to_conclusion": {}, "sla_breaches": [],
                "cashless_share": {"transfer_amount": 0, "cash_amount": 0, "share": None, "transfer_count": 0,
                                   "cash_count": 0},
                "ehr_coverage": {"patients": 9, "population": 10, "share": 0.9, "as_of": "2026-12-06",
                                 "population_outdated": False},
                "generated_at": "2026-12-06T10:00:00+07:00"}

    monkeypatch.setattr(dashboard, "figures", figures)
    monkeypatch.setattr(directory, "names", lambda rtype: {})
    monkeypatch.setattr(dashboard, "org_names", lambda: {"tyt-an-binh-cl": "Trạm Y tế xã An Bình",
                                                         "tyt-an-binh-tm": "Trạm Y tế xã An Bình"})
    page = portal_signed_in(app, "health-dept").get("/dashboard").get_data(as_text=True)
    assert '<th scope="col">Huyện</th>' in page
    assert "<td>Trạm Y tế xã An Bình</td><td>Huyện Cao Lãnh</td><td>1</td>" in page
    assert "<td>Trạm Y tế xã An Bình</td><td>Huyện Tháp Mười</td><td>2</td>" in page
