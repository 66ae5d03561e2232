"""A transfer is on the daily report of the day the bank says it happened, with the time billing received it
beside it (billing on the real FerretDB; the clock set by the test, and once through the real webhook).

payOS and Casso send ``transactionDateTime``, SePay ``transactionDate``: ``2026-03-14 23:59:58``, Vietnam's
local time with no zone. A transfer made at 23:59:58 and delivered at 00:00:03 (or retried by SePay an hour
later) was on the next day's report, while the bank statement the cashier reconciles against has it on the
first. Now the payment keeps the bank's time (``bank_at``, and ``bank_day`` when it is another day than
billing's), the report places it there (``time`` still when billing received it, ``bank_time`` beside it),
and shifts count it when it reached billing: the shift open then.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import date, datetime, time, timedelta
from types import SimpleNamespace

import httpx
import pytest
from sen_billing.domain import payments, reconciliation, shifts
from sen_billing.domain.payments import VN
from sen_billing.domain.webhooks import Transfer

from tests.billing_support import make_invoice, scratch_db

pytestmark = pytest.mark.integration

DAY = date(2026, 3, 14)
NEXT = DAY + timedelta(days=1)


@pytest.fixture()
def db(mongo_client):
    with scratch_db(mongo_client, "bd") as database:
        yield database


@pytest.fixture()
def clock(monkeypatch):
    now = [datetime.combine(NEXT, time.min, VN)]
    monkeypatch.setattr(payments, "now_utc", lambda: now[0])
    monkeypatch.setattr(shifts, "now_utc", lambda: now[0])
    return now


def _transfer(db, code: str, amount: int, paid_at: str, provider: str = "sepay") -> dict:  # noqa: ANN001
    t = Transfer(provider=provider, transaction_id=uuid.uuid4().hex[:10], amount=amount, description=f"TT {code}",
                 paid_at=paid_at)
    return payments.record_transfer(db, t, inbox_id=uuid.uuid4().hex).payment


def _rows(db, day: date) -> dict[str, dict]:  # noqa: ANN001
    return {r["id"]: r for r in reconciliation.rows(db, day, "org-a") if r["kind"] == "payment"}


def test_a_transfer_made_before_midnight_and_delivered_after_is_on_the_banks_day(db, clock) -> None:
    """Made at 23:59:58, delivered at 00:00:03 (payOS) and at 01:00 (SePay's retry of another): both on the
    14th's report with their received time and the bank's, not on the 15th's; one made and delivered on the
    15th stays there (its bank time beside it); a Standard one with no time is on the day billing received it.
    The shift opened at 00:00 counts all four: they reached billing while it was open."""
    thu = SimpleNamespace(roles={"cashier"}, facility="org-a", sub="thu-" + uuid.uuid4().hex[:6], name="Lê Thu")
    shifts.open_shift(db, thu)
    codes = [make_invoice(db, 50_000)[1] for _ in range(4)]
    clock[0] = datetime.combine(NEXT, time(0, 0, 3), VN)
    late = _transfer(db, codes[0], 50_000, "2026-03-14 23:59:58", provider="payos")
    clock[0] = datetime.combine(NEXT, time(1), VN)
    retried = _transfer(db, codes[1], 50_000, "2026-03-14 23:59:59")
    same = _transfer(db, codes[2], 50_000, "2026-03-15 00:59:30")
    untimed = _transfer(db, codes[3], 50_000, "", provider="standard")
    assert (late["bank_day"], retried["bank_day"]) == ("2026-03-14", "2026-03-14")
    assert "bank_day" not in same and same["bank_at"] == datetime.combine(NEXT, time(0, 59, 30), VN)
    assert "bank_at" not in untimed and "bank_day" not in untimed
    # billing.payment.received says it too (bankTime), for a report that counts by events
    from sen_shared.bus.catalog import load_catalog

    [event] = [json.loads(e["event"]) for e in db[payments.PAYMENTS].find_one({"_id": late["_id"]})["outbox"]]
    load_catalog().validate(event)
    assert (event["data"]["bankTime"], event["data"]["receivedAt"]) == ("2026-03-14T23:59:58+07:00",
                                                                        "2026-03-15T00:00:03+07:00")
    [event] = [json.loads(e["event"]) for e in db[payments.PAYMENTS].find_one({"_id": untimed["_id"]})["outbox"]]
    assert "bankTime" not in event["data"]

    first, second = _rows(db, DAY), _rows(db, NEXT)
    assert set(first) == {late["_id"], retried["_id"]} and set(second) == {same["_id"], untimed["_id"]}
    assert (first[late["_id"]]["time"], first[late["_id"]]["bank_time"]) == ("2026-03-15T00:00:03+07:00",
                                                                            "2026-03-14T23:59:58+07:00")
    assert second[same["_id"]]["bank_time"] == "2026-03-15T00:59:30+07:00" and second[untimed["_id"]]["bank_time"] == ""
    assert reconciliation.totals(list(first.values()))["transfers"] == 100_000
    # the rows name the shift open when billing received them, on either day's report
    shift = shifts.current(db, thu)["shift"]
    assert {r["shift"] for r in (*first.values(), *second.values())} == {shift}
    assert shifts.expected_totals(db, shifts.current(db, thu), clock[0])["transfersReceived"] == 200_000
    text = reconciliation.to_csv(DAY, reconciliation.rows(db, DAY, "org-a"))
    header = next(csv.reader(io.StringIO(text)))
    assert header[-1] == "bank_time" and header.index("time") == 1


def test_a_bank_time_after_billings_own_is_not_taken(db, clock) -> None:
    """A provider's time more than five minutes after billing's own clock is no bank's (a clock set wrong):
    the payment keeps the day billing received it."""
    _iid, code = make_invoice(db, 10_000)
    p = _transfer(db, code, 10_000, "2026-03-16 08:00:00")
    assert "bank_at" not in p and "bank_day" not in p and p["day"] == "2026-03-15"


def test_sepays_transaction_date_places_the_transfer_through_the_webhook(base_env, mongo_client, tmp_path_factory,
                                                                       dev_key) -> None:
    """The real webhook: a SePay call whose transactionDate is yesterday 23:59:58 (Vietnam) is on yesterday's
    daily CSV, not today's, its bank time beside the time billing received it."""
    from sen_shared.auth import issue_dev_token

    from tests.billing_support import billing_web
    from tests.support import vn_day_with_room

    today = vn_day_with_room()
    yesterday = today - timedelta(days=1)
    key = "sepay-bd-" + uuid.uuid4().hex[:8]
    facility = "org-" + uuid.uuid4().hex[:5]
    with billing_web(base_env, uuid.uuid4().hex[:6], tmp_path_factory, mongo_client, "bd",
                     {"SEN_SEPAY_API_KEY": key}) as (url, db):
        _iid, code = make_invoice(db, 70_000, facility=facility)
        txid = int(uuid.uuid4().int % 10**9)
        body = {"id": txid, "gateway": "Vietcombank", "transactionDate": f"{yesterday.isoformat()} 23:59:58",
                "accountNumber": "0011000000001", "code": None, "content": f"{code} thanh toan",
                "transferType": "in", "transferAmount": 70_000, "accumulated": 70_000,
                "referenceCode": f"FT{txid}", "description": ""}
        r = httpx.post(f"{url}/webhooks/sepay", json=body, headers={"Authorization": f"Apikey {key}"}, timeout=30)
        assert r.status_code == 200, r.text
        h = {"Authorization": "Bearer " + issue_dev_token(dev_key, "cashier", facility=facility, sub="thu-bd")}

        def day_rows(day: date) -> list[dict]:
            answer = httpx.get(f"{url}/payments/reports/daily.csv?day={day.isoformat()}", headers=h, timeout=30)
            assert answer.status_code == 200, answer.text
            return [r for r in csv.DictReader(io.StringIO(answer.text)) if r["kind"] == "payment"]

        [row] = day_rows(yesterday)
        assert row["id"] == f"sepay:{txid}" and row["bank_time"] == f"{yesterday.isoformat()}T23:59:58+07:00"
        assert row["time"].startswith(today.isoformat())  # received today
        assert day_rows(today) == []
