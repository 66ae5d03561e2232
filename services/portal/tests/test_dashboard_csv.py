"""The dashboard's CSVs in the page's language: the priorities of ``time_to_answer.csv`` (and of
the breaches') by their names, as the charts say them (they were ``routine``/``urgent``/``asap``/
``stat`` in both languages), and the share column "Tỷ lệ" as the page writes it (the CSV said
"Tỉ lệ"). The file is written by ``csvfile`` (UTF-8 with its BOM), as the daily report's is."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from tests.support import csrf_token, portal_app, portal_signed_in

ROWS = {"time_to_answer": (["priority", "count", "median_minutes", "p90_minutes"],
                           [["routine", 3, 40.0, 55], ["urgent", 1, 12.0, 12], ["asap", 0, None, None],
                            ["stat", 2, 4.0, 6]]),
        "cashless_share": (["start", "end", "transfer_amount", "cash_amount", "share"],
                           [["2026-09-07", "2026-09-20", 150000, 50000, 0.75]])}


@pytest.fixture()
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from sen_portal.web import dashboard

    monkeypatch.setattr(dashboard, "csv_rows", lambda section, *a, **kw: ROWS[section])
    return portal_signed_in(portal_app(tmp_path, monkeypatch), "health-dept")


def rows(client, section: str) -> list[list[str]]:
    r = client.get(f"/dashboard/{section}.csv?start=07/09/2026&end=20/09/2026")
    assert r.status_code == 200, r.get_data(as_text=True)[:500]
    assert r.data.startswith("\ufeff".encode())
    return list(csv.reader(io.StringIO(r.data.decode("utf-8-sig"))))


def test_the_priorities_are_named_in_the_pages_language(client) -> None:
    got = rows(client, "time_to_answer")
    assert [r[0] for r in got[1:]] == ["Thường quy", "Khẩn", "Càng sớm càng tốt", "Cấp cứu"]
    assert got[1][1:] == ["3", "40.0", "55"] and got[3][1:] == ["0", "", ""]
    token = csrf_token(client.get("/dashboard").get_data(as_text=True))
    client.post("/language", data={"lang": "en", "next": "/dashboard", "csrf_token": token})
    got = rows(client, "time_to_answer")
    assert [r[0] for r in got[1:]] == ["Routine", "Urgent", "As soon as possible", "Emergency (stat)"]


def test_the_share_column_is_ty_le_as_on_the_page(client) -> None:
    header = rows(client, "cashless_share")[0]
    assert "Tỷ lệ (0–1)" in header and not any("Tỉ lệ" in h for h in header)
