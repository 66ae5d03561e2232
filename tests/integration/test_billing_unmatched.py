"""Issue 15, the unmatched-transfers queue on the real FerretDB: scoped to the facility owning the
receiving account, paged per facility by ``(at, _id)``, and backfilled (idempotently, by any
number of workers at once) with the transfers recorded unmatched before the queue existed.

The HTTP side (a cashier of A neither sees B's transfer nor assigns it: 404, as a payment not held) is in
``test_billing_webhooks.py`` (``test_a_cashier_sees_and_assigns_only_their_facilitys_unmatched_transfers``);
an admin's ``?facility=`` filter over HTTP is here.
"""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sen_billing import worker
from sen_billing.config import settings_from_env
from sen_billing.domain import payments, reconciliation
from sen_billing.domain.webhooks import Transfer
from sen_shared.auth import issue_dev_token
from sen_shared.errors import Conflict, Forbidden, NotFound
from sen_shared.fhir.guarded import Hidden

from tests.billing_support import scratch_db
from tests.support import app_client, vn_day_with_room

pytestmark = pytest.mark.integration

ACCOUNTS = {"0011000000001": "org-a", "0011000000002": "org-b"}


@pytest.fixture()
def db(mongo_client):
    with scratch_db(mongo_client, "u") as database:
        yield database


def transfer(db, account: str, note: str = "chuyen tien", amount: int = 10_000) -> str:
    t = Transfer(provider="standard", transaction_id=uuid.uuid4().hex[:12], amount=amount, description=note,
                 account=account)
    return payments.record_transfer(db, t, uuid.uuid4().hex, account_facilities=ACCOUNTS).payment["_id"]


def whole_queue(db, facility, limit: int) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        rows, cursor = payments.unmatched_queue(db, limit=limit, after=cursor, facility=facility)
        pages.append([p["_id"] for p in rows])
        if cursor is None:
            return pages


def test_entries_carry_the_receiving_accounts_facility_and_each_facility_pages_its_own(db) -> None:
    sent: dict[str, list[str]] = {"org-a": [], "org-b": [], payments.NO_FACILITY: []}
    for i in range(7):  # interleaved: each facility's entries sit between the others' in (at, _id)
        sent["org-a"].append(transfer(db, "0011000000001", f"a {i}"))
        sent["org-b"].append(transfer(db, "0011-0000-00002", f"b {i}"))  # as a bank may write it
        if i % 3 == 0:
            sent[payments.NO_FACILITY].append(transfer(db, "0099000000009", f"n {i}"))
    # entries sharing one instant: the cursor's _id part orders and separates them
    same = datetime.now(UTC) + timedelta(seconds=5)
    for key in ("standard:zz-1", "standard:zz-0"):
        db["payments"].insert_one({"_id": key, "provider": "standard", "transaction_id": key, "channel": "transfer",
                                   "amount": 1000, "description": "cung luc", "received_at": same,
                                   "day": "2026-12-04", "matched": False, "outcome": "unmatched", "invoice": None,
                                   "facility": None, "account": "0011000000001", "queue_facility": "org-a"})
        db["unmatched_waiting"].insert_one({"_id": key, "at": same, "facility": "org-a"})
    sent["org-a"] += ["standard:zz-0", "standard:zz-1"]
    assert {e["facility"] for e in db["unmatched_waiting"].find()} == {"org-a", "org-b", ""}

    for facility, ids in sent.items():
        for limit in (1, 2, 3, 50):
            pages = whole_queue(db, facility, limit)
            flat = [i for page in pages for i in page]
            assert flat == ids, (facility, limit)  # every entry once, oldest first, nothing of another facility
            assert all(len(p) <= limit for p in pages)
    everything = [i for page in whole_queue(db, payments.ALL_FACILITIES, 4) for i in page]
    assert sorted(everything) == sorted(i for ids in sent.values() for i in ids)
    # an admin's page mixes the queues: each row names the facility whose queue holds it
    rows, _ = payments.unmatched_queue(db, 200, None, payments.ALL_FACILITIES)
    shown = {r["_id"]: payments.public_payment(r).get("facility", payments.NO_FACILITY) for r in rows}
    assert shown == {i: facility for facility, ids in sent.items() for i in ids}


def test_the_scope_of_a_principal_and_assigning_across_facilities(db) -> None:
    cashier_a = SimpleNamespace(sub="c-a", roles=["cashier"], facility="org-a")
    admin = SimpleNamespace(sub="ad", roles=["admin"], facility=None)
    assert payments.queue_scope(cashier_a) == "org-a"
    assert payments.queue_scope(admin) is payments.ALL_FACILITIES
    with pytest.raises(Forbidden):
        payments.queue_scope(SimpleNamespace(sub="c", roles=["cashier"], facility=None))
    # one queue asked for: any for an admin, only their own for a cashier
    assert payments.queue_scope(admin, "org-b") == "org-b"
    assert payments.queue_scope(admin, payments.UNOWNED) == payments.NO_FACILITY
    assert payments.queue_scope(cashier_a, "org-a") == "org-a"
    for other in ("org-b", payments.UNOWNED, payments.NO_FACILITY):
        with pytest.raises(Forbidden):
            payments.queue_scope(cashier_a, other)
    to_b = transfer(db, "0011000000002")
    to_nobody = transfer(db, "0099000000009")
    # another facility's transfer, or one of the admins' queue: as a payment not held (its problem, byte for
    # byte); the refusal (why) is for the trail the handler records
    with pytest.raises(NotFound) as made_up:
        payments.assign_unmatched(db, "standard:khong-co", "inv-any", cashier_a)
    for key in (to_b, to_nobody):
        with pytest.raises(Hidden) as hidden:
            payments.assign_unmatched(db, key, "inv-any", cashier_a)
        assert "another facility's queue" in str(hidden.value)
        answer = hidden.value.answer
        assert isinstance(answer, NotFound)
        assert answer.problem() == {**made_up.value.problem(), "detail": f"no payment {key}"}
    assert db["payments"].count_documents({"assigned_from": {"$exists": True}}) == 0


def old_style_unmatched(db, account: str, *, at: datetime) -> str:
    """A payment as recorded before the queue existed: unmatched, no queue entry, no queue facility."""
    key = f"sepay:{uuid.uuid4().hex[:10]}"
    db["payments"].insert_one({"_id": key, "provider": "sepay", "transaction_id": key[6:], "channel": "transfer",
                               "amount": 50_000, "description": "tien kham khong ghi ma", "account": account,
                               "received_at": at, "day": at.date().isoformat(), "inbox": "old", "matched": False,
                               "outcome": "unmatched", "invoice": None, "facility": None, "district": None,
                               "outbox": []})
    return key


def worker_settings(db, base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    """The billing worker's settings on ``db``, with the accounts of org-a and org-b."""
    for key, value in {**base_env, "SEN_DB": db.name, "SEN_BANK_ACCOUNT_FACILITIES": json.dumps(ACCOUNTS)}.items():
        monkeypatch.setenv(key, value)
    settings = settings_from_env()
    assert settings.account_facilities == ACCOUNTS
    return settings


def test_the_backfill_run_twice_at_once_makes_each_entry_once_in_its_facilitys_queue(
        db, base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    old = datetime.now(UTC) - timedelta(days=3)
    waiting = old_style_unmatched(db, "0011000000002", at=old)  # to org-b's account
    nobody = old_style_unmatched(db, "0099000000009", at=old + timedelta(seconds=1))
    assigned = old_style_unmatched(db, "0011000000002", at=old + timedelta(seconds=2))
    db["payments"].insert_one({"_id": f"assign:{assigned}", "assigned_from": assigned, "matched": True,
                               "outcome": "applied", "invoice": "inv-x", "amount": 50_000})
    refunded = old_style_unmatched(db, "0011000000002", at=old + timedelta(seconds=3))
    db["refunds"].insert_one({"_id": refunded, "payment": refunded, "amount": 50_000, "reason": "trả lại"})
    legacy_entry = old_style_unmatched(db, "0011000000001", at=old + timedelta(seconds=4))
    db["unmatched_waiting"].insert_one({"_id": legacy_entry, "at": old + timedelta(seconds=4)})  # no facility yet
    recent = transfer(db, "0011000000002", "moi")  # recorded with its entry: left alone

    settings = worker_settings(db, base_env, monkeypatch)
    start = threading.Barrier(2)
    results: list[dict[str, int]] = []

    def run() -> None:
        start.wait()
        results.append(worker.backfill_unmatched(settings))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 2
    assert sum(r["entries"] for r in results) == 2  # waiting and nobody, each made by one of the two
    assert worker.backfill_unmatched(settings) == {"entries": 0, "facilities": 0}  # again: nothing new

    entries = {e["_id"]: e for e in db["unmatched_waiting"].find()}
    assert set(entries) == {waiting, nobody, legacy_entry, recent}  # not the assigned, not the refunded
    assert db["unmatched_waiting"].count_documents({"_id": waiting}) == 1
    assert entries[waiting]["facility"] == "org-b"
    assert entries[waiting]["at"] == old.replace(microsecond=old.microsecond // 1000 * 1000)  # in its place
    assert entries[nobody]["facility"] == payments.NO_FACILITY
    assert entries[legacy_entry]["facility"] == "org-a"
    assert [i for p in whole_queue(db, "org-b", 1) for i in p] == [waiting, recent]  # oldest first
    assert [i for p in whole_queue(db, "org-a", 1) for i in p] == [legacy_entry]
    assert [i for p in whole_queue(db, payments.NO_FACILITY, 1) for i in p] == [nobody]

    # B's cashier assigns the backfilled transfer (the old payment has no queue facility: derived)
    from tests.billing_support import make_invoice

    iid, _ = make_invoice(db, 50_000, facility="org-b")
    with pytest.raises(Hidden):  # A's cashier: as a payment not held
        payments.assign_unmatched(db, waiting, iid, SimpleNamespace(sub="c-a", roles=["cashier"], facility="org-a"),
                                  ACCOUNTS)
    payments.assign_unmatched(db, waiting, iid, SimpleNamespace(sub="c-b", roles=["cashier"], facility="org-b"),
                              ACCOUNTS)
    assert [i for p in whole_queue(db, "org-b", 1) for i in p] == [recent]


def test_a_transfer_is_assigned_by_the_invoices_reference_as_printed(db) -> None:
    """The cashier types the reference the QR and the receipt show (any case, spaces, dashes, O for 0),
    or the id; a reference no invoice has, or another facility's invoice (answered alike, 404), is refused
    naming what was typed (``invoice``), so the portal can say "no invoice HD123 at this facility"."""
    from tests.billing_support import make_invoice

    cashier = SimpleNamespace(sub="c-a", roles=["cashier"], facility="org-a")
    iid, code = make_invoice(db, 10_000, facility="org-a")
    other, other_code = make_invoice(db, 10_000, facility="org-b")
    waiting = transfer(db, "0011000000001")
    for typed in ("HD123", code[:-1] + ("X" if code[-1] != "X" else "Y"), "inv-nothing"):
        with pytest.raises(NotFound) as wrong:
            payments.assign_unmatched(db, waiting, typed, cashier, ACCOUNTS)
        assert wrong.value.extra == {"invoice": typed}
    with pytest.raises(Hidden) as elsewhere:
        payments.assign_unmatched(db, waiting, other_code.lower(), cashier, ACCOUNTS)
    answer = elsewhere.value.answer
    assert isinstance(answer, NotFound) and answer.extra == {"invoice": other_code.lower()}
    assert answer.detail == f"no invoice {other_code.lower()}"  # as a reference no invoice has
    typed = " ".join([code[:2].lower(), code[2:6].lower(), code[6:]]).replace("0", "O")  # "hd 0p2b 6ZNPM"
    assigned = payments.assign_unmatched(db, waiting, typed, cashier, ACCOUNTS).payment
    assert assigned["invoice"] == iid and assigned["reference"] == code
    second = transfer(db, "0011000000001")
    with pytest.raises(Conflict, match=code):  # paid in full by the first: no longer awaiting payment
        payments.assign_unmatched(db, second, iid, cashier, ACCOUNTS)


def test_a_facilitys_daily_report_lists_the_transfers_that_reached_its_account_unmatched(db) -> None:
    vn_day_with_room()  # every payment and refund below is of one day in Vietnam: the report's
    to_a = transfer(db, "0011000000001", "chuyen tien kham", 70_000)
    transfer(db, "0011000000002", "chuyen tien khac", 30_000)  # org-b's
    day = date.fromisoformat(db["payments"].find_one({"_id": to_a})["day"])
    report = reconciliation.rows(db, day, "org-a")
    assert [(r["id"], r["facility"], r["outcome"]) for r in report] == [(to_a, "org-a", "unmatched")]
    assert reconciliation.totals(report)["unmatched"] == 70_000
    assert reconciliation.totals(report)["transfers"] == 70_000
    everyone = reconciliation.rows(db, day)  # the province's report: both, each under its facility
    assert {r["facility"] for r in everyone} == {"org-a", "org-b"}


def test_an_unmatched_transfer_assigned_or_given_back_is_no_longer_counted_waiting(db) -> None:
    """The day report's unmatched total is every transfer that came naming no invoice; of it, what
    still waits: after the only unmatched 45.000 ₫ transfer is assigned to an invoice, 0 waits and
    45.000 is assigned (its row stays, saying to which invoice, the money counted once); one given
    back by an admin waits no more either. The CSV's total rows say the same."""
    vn_day_with_room()  # every payment and refund below is of one day in Vietnam: the report's
    from tests.billing_support import make_invoice

    waiting = transfer(db, "0011000000001", "chuyen tien kham", 45_000)
    day = date.fromisoformat(db["payments"].find_one({"_id": waiting})["day"])
    assert reconciliation.totals(reconciliation.rows(db, day, "org-a"))["unmatched_waiting"] == 45_000
    iid, code = make_invoice(db, 100_000, facility="org-a")
    cashier = SimpleNamespace(roles={"cashier"}, facility="org-a", sub="thu-ngan-1")
    payments.assign_unmatched(db, waiting, iid, cashier, ACCOUNTS)
    report = reconciliation.rows(db, day, "org-a")
    assert [r["id"] for r in report] == [waiting, f"assign:{waiting}"]
    got = reconciliation.totals(report)
    assert (got["unmatched"], got["unmatched_assigned"], got["unmatched_waiting"], got["transfers"],
            got["payments"]) == (45_000, 45_000, 0, 45_000, 1)
    assert report[0]["assigned_to"] == code and report[0]["assigned_at"] == report[1]["time"]
    assert f"total,{day.isoformat()},unmatched_waiting,,,,,0," in reconciliation.to_csv(day, report)
    assert f"total,{day.isoformat()},unmatched,,,,,45000," in reconciliation.to_csv(day, report)
    assert "_fate" not in reconciliation.to_csv(day, report)
    admin = SimpleNamespace(roles=["admin"], facility=None, sub="admin@so-y-te")
    with pytest.raises(Conflict):  # assigned: its money is given back on the invoice, not twice
        payments.refund(db, waiting, None, "chuyển nhầm", admin, None)
    back = transfer(db, "0011000000001", "chuyen nham", 20_000)
    assert reconciliation.totals(reconciliation.rows(db, day, "org-a"))["unmatched_waiting"] == 20_000
    payments.refund(db, back, None, "chuyển nhầm tài khoản", admin, None)
    got = reconciliation.totals(reconciliation.rows(db, day, "org-a"))
    assert (got["unmatched"], got["unmatched_assigned"], got["unmatched_refunded"], got["unmatched_waiting"]) == (
        65_000, 45_000, 20_000, 0)
    with pytest.raises(Conflict):  # given back: no longer assignable
        payments.assign_unmatched(db, back, iid, cashier, ACCOUNTS)


def test_an_assignment_and_an_admins_refund_racing_for_a_transfer_one_wins(db) -> None:
    """12 unmatched transfers; for each, a cashier's assignment and an admin's refund at once: exactly
    one goes through (their fate claim), so the money is never both counted and given back."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.billing_support import make_invoice

    cashier = SimpleNamespace(roles={"cashier"}, facility="org-a", sub="thu-ngan-1")
    admin = SimpleNamespace(roles=["admin"], facility=None, sub="admin@so-y-te")
    made = [(transfer(db, "0011000000001", "chuyen tien", 30_000), make_invoice(db, 100_000)[0]) for _ in range(12)]
    done: dict[str, list[str]] = {key: [] for key, _ in made}

    def assign(key: str, iid: str, gate: threading.Barrier) -> None:
        gate.wait()
        try:
            payments.assign_unmatched(db, key, iid, cashier, ACCOUNTS)
            done[key].append("assigned")
        except Conflict:
            pass

    def give_back(key: str, gate: threading.Barrier) -> None:
        gate.wait()
        try:
            payments.refund(db, key, None, "chuyển nhầm", admin, None)
            done[key].append("refunded")
        except Conflict:
            pass

    with ThreadPoolExecutor(8) as pool:
        futures = []
        for key, iid in made:
            gate = threading.Barrier(2)
            futures += [pool.submit(assign, key, iid, gate), pool.submit(give_back, key, gate)]
        for f in futures:
            f.result()
    for key, _iid in made:
        assigned = db["payments"].count_documents({"_id": f"assign:{key}"})
        refunded = db["refunds"].count_documents({"_id": key})
        assert len(done[key]) == 1 and assigned + refunded == 1, (key, done[key])
        assert done[key] == (["assigned"] if assigned else ["refunded"])
    assert payments.unmatched_queue(db, facility="org-a")[0] == []


def test_an_admins_refund_of_an_unmatched_transfer_is_in_its_facilitys_daily_report(db) -> None:
    """The money that came to org-a's account and went back is in org-a's report (both rows), and
    in no other facility's."""
    vn_day_with_room()  # every payment and refund below is of one day in Vietnam: the report's
    to_a = transfer(db, "0011000000001", "chuyen nham", 40_000)
    admin = SimpleNamespace(roles=["admin"], facility=None, sub="admin@so-y-te")
    payments.refund(db, to_a, None, "chuyển nhầm tài khoản", admin, None)
    day = date.fromisoformat(db["payments"].find_one({"_id": to_a})["day"])
    report = reconciliation.rows(db, day, "org-a", account_facilities=ACCOUNTS)
    assert [(r["kind"], r["id"], r["facility"], r["amount"]) for r in report] == [
        ("payment", to_a, "org-a", 40_000), ("refund", to_a, "org-a", -40_000)]
    assert reconciliation.totals(report)["net"] == 0
    assert reconciliation.rows(db, day, "org-b", account_facilities=ACCOUNTS) == []


def test_a_facilitys_daily_report_lists_its_transfers_recorded_before_they_carried_their_queue(db) -> None:
    """A transfer recorded before payments carried ``queue_facility`` is in its facility's report
    (the facility derived from the receiving account, as the queue does), in no other's, and the
    province's report names that facility."""
    at = datetime.now(UTC) - timedelta(days=2)
    old_a = old_style_unmatched(db, "0011-0000-00001", at=at)  # to org-a's account, as a bank may write it
    old_b = old_style_unmatched(db, "0011000000002", at=at + timedelta(seconds=1))
    nobody = old_style_unmatched(db, "0099000000009", at=at + timedelta(seconds=2))
    day = date.fromisoformat(db["payments"].find_one({"_id": old_a})["day"])
    new_a = db["payments"].find_one({"_id": transfer(db, "0011000000001", "moi", 20_000)})
    db["payments"].update_one({"_id": new_a["_id"]}, {"$set": {"day": day.isoformat()}})  # the test's one writer

    report = reconciliation.rows(db, day, "org-a", account_facilities=ACCOUNTS)
    assert [(r["id"], r["facility"]) for r in report] == [(old_a, "org-a"), (new_a["_id"], "org-a")]
    assert reconciliation.totals(report)["unmatched"] == 70_000
    assert [r["id"] for r in reconciliation.rows(db, day, "org-b", account_facilities=ACCOUNTS)] == [old_b]
    everyone = {r["id"]: r["facility"] for r in reconciliation.rows(db, day, account_facilities=ACCOUNTS)}
    assert everyone == {old_a: "org-a", old_b: "org-b", nobody: payments.NO_FACILITY, new_a["_id"]: "org-a"}


def run_links(db) -> list[str]:
    return [link["state"] for link in db["backfill_runs"].find({"k": worker.UNMATCHED_BACKFILL}, sort=[("n", 1)])]


def test_the_backfill_runs_once_across_worker_starts(db, base_env: dict[str, str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's start runs the backfill once for good: a second start reads no payment (an
    old-style payment that turned up in between, which a run would enqueue, stays out)."""
    settings = worker_settings(db, base_env, monkeypatch)
    old = datetime.now(UTC) - timedelta(days=3)
    first = old_style_unmatched(db, "0011000000001", at=old)
    assert worker.backfill_unmatched_once(settings) == {"entries": 1, "facilities": 0}
    assert run_links(db) == ["running", "done"]
    later = old_style_unmatched(db, "0011000000002", at=old + timedelta(seconds=1))
    assert worker.backfill_unmatched_once(settings) is None  # the second start: not run
    assert worker.backfill_unmatched_once(settings, stale=timedelta(0)) is None  # done is done, however old
    assert run_links(db) == ["running", "done"]
    assert {e["_id"] for e in db["unmatched_waiting"].find()} == {first}
    assert later not in {e["_id"] for e in db["unmatched_waiting"].find()}


def test_a_backfill_run_whose_worker_died_is_taken_over_and_a_failed_one_runs_again(
        db, base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from sen_shared.claims import advance

    settings = worker_settings(db, base_env, monkeypatch)
    waiting = old_style_unmatched(db, "0011000000002", at=datetime.now(UTC) - timedelta(days=3))
    # a worker claimed the run 2 minutes ago and died before its end (no done link)
    advance(db["backfill_runs"], worker.UNMATCHED_BACKFILL, None,
            {"state": "running", "at": datetime.now(UTC) - timedelta(minutes=2)})
    assert worker.backfill_unmatched_once(settings) is None  # younger than 15 min: another worker's run
    assert db["unmatched_waiting"].count_documents({}) == 0
    # older than the stale limit: the next start takes it over with the next link and ends it
    assert worker.backfill_unmatched_once(settings, stale=timedelta(minutes=1)) == {"entries": 1, "facilities": 0}
    assert run_links(db) == ["running", "running", "done"]
    assert [e["facility"] for e in db["unmatched_waiting"].find({"_id": waiting})] == ["org-b"]

    # a run that raised is closed as failed, and the next start runs it again
    with scratch_db(db.client, "u") as other:
        settings = worker_settings(other, base_env, monkeypatch)
        again = old_style_unmatched(other, "0011000000001", at=datetime.now(UTC) - timedelta(days=1))
        real = payments.backfill_unmatched

        def broken(*args, **kwargs):
            raise RuntimeError("the database went away")

        monkeypatch.setattr(payments, "backfill_unmatched", broken)
        with pytest.raises(RuntimeError):
            worker.backfill_unmatched_once(settings)
        assert run_links(other) == ["running", "failed"]
        monkeypatch.setattr(payments, "backfill_unmatched", real)
        assert worker.backfill_unmatched_once(settings) == {"entries": 1, "facilities": 0}
        assert run_links(other) == ["running", "failed", "running", "done"]
        assert other["unmatched_waiting"].count_documents({"_id": again}) == 1


def bearer(dev_key: Path, role: str, facility: str | None = None) -> dict[str, str]:
    claims = {"facility": facility} if facility else {}
    return {"Authorization": f"Bearer {issue_dev_token(dev_key, role, sub=f'{role}-{uuid.uuid4().hex[:6]}', **claims)}"}


def test_an_admin_reads_one_facilitys_queue_and_a_cashier_only_their_own(base_env: dict[str, str], mongo_client,
                                                                          dev_key: Path) -> None:
    """``GET /payments/unmatched?facility=``: an admin pages one facility's queue (``_unowned``: the
    transfers to an account no facility owns), the cursor keeping to it; a cashier naming their own
    facility gets it, another's or ``_unowned`` 403 (problem details); a malformed one 400."""
    name = f"sen_billing_q{uuid.uuid4().hex[:8]}"
    with app_client("billing", {**base_env, "SEN_BANK_ACCOUNT_FACILITIES": json.dumps(ACCOUNTS)}, name,
                    mongo_client) as (client, _app):
        db = mongo_client[name]
        sent: dict[str, list[str]] = {"org-a": [], "org-b": [], "_unowned": []}
        for i in range(3):
            sent["org-a"].append(transfer(db, "0011000000001", f"a {i}"))
            sent["org-b"].append(transfer(db, "0011000000002", f"b {i}"))
            sent["_unowned"].append(transfer(db, "0099000000009", f"n {i}"))
        admin = bearer(dev_key, "admin")

        def pages(headers: dict[str, str], facility: str | None) -> list[str]:
            ids, after = [], None
            while True:
                params = {"limit": 2, **({"facility": facility} if facility is not None else {}),
                          **({"after": after} if after else {})}
                r = client.get("/payments/unmatched", params=params, headers=headers)
                assert r.status_code == 200, r.text
                rows = r.json()["payments"]
                ids += [p["id"] for p in rows]
                if facility is not None:  # each row names the facility whose queue holds it
                    assert {p.get("facility", "_unowned") for p in rows} <= {facility}
                if not (after := r.json().get("next")):
                    return ids

        for facility, ids in sent.items():
            assert pages(admin, facility) == ids, facility  # that queue only, oldest first, over 2 pages
        assert sorted(pages(admin, None)) == sorted(i for ids in sent.values() for i in ids)
        assert pages(admin, "org-zz") == []  # a facility with nothing waiting

        cashier_a = bearer(dev_key, "cashier", "org-a")
        assert pages(cashier_a, "org-a") == pages(cashier_a, None) == sent["org-a"]
        for other in ("org-b", "_unowned"):
            r = client.get("/payments/unmatched", params={"facility": other}, headers=cashier_a)
            assert r.status_code == 403, r.text
            assert r.headers["content-type"].startswith("application/problem+json") and r.json()["status"] == 403
        for bad in ("", "org a", "x" * 65, "_none"):
            r = client.get("/payments/unmatched", params={"facility": bad}, headers=admin)
            assert r.status_code == 400, (bad, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
