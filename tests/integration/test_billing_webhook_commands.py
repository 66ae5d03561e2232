"""The database commands a payment webhook sends, counted in process (pymongo's command monitoring on the
app's own client, as ``test_teleconsult_book_commands`` counts ``$book``'s), for each kind of call: held here
so that a command added back fails a test, not only a bench's figure.

The kinds and why each command is there (the billing README's Performance section says more):

- every call: ``insert webhook_inbox``, the raw body first, with a claim per bank transaction it reports in the
  same insert (``tx:<provider>:<transaction>``: a provider's retry is told apart by that insert refusing the
  claim, not by a read before it);
- a rejected call (a bad signature, an old timestamp): that insert without claims and its outcome record
  (``insert webhook_outcomes``, what the tests and support read about a refusal): 2;
- a new transfer: ``find Invoice`` (by the note's reference code, one equality on its identifier index field),
  ``insert payments`` (the payment with its ``billing.payment.received`` event: the outbox), ``find
  shift_days`` (a shift of its facility closed meanwhile without it is told: ``shifts.after_money_in``) and
  ``find payments`` (the invoice's other payments, read after the insert: does it settle?): 5;
- the payment that settles its invoice, 9 claims and writes more: the give-backs chain's ``settle`` link
  (ordered against reversals), the settlement claim (one winner), the lifecycle's ``balanced`` link (against a
  cancel), the receipt number, the PaymentReconciliation (history and current), the Invoice's version (history
  and current) and the receipt with ``billing.invoice.paid``: 14;
- a provider's retry: the refused claim, the payment by ``_id`` (is it there? a call still in flight, or cut
  off before it, is not), its invoice's settlement (done?) and, with none yet, the invoice's payments (still
  below what it owed: nothing to finish): 3 or 4; a cut-off call's effects are finished by its retry
  (``payments.finish_payment``);
- an unmatched transfer: its queue entry, then the payment: 3; a late one (its invoice balanced): the
  refund task instead of the payments' read: 5.
"""

from __future__ import annotations

import json
import time

import pytest
from pymongo import monitoring
from sen_billing.domain import webhooks

from tests.perf import test_billing_webhook_bench as bench
from tests.support import app_client

pytestmark = pytest.mark.integration


class _Commands(monitoring.CommandListener):
    """``command collection`` of every command started while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.seen: list[str] = []

    def started(self, event) -> None:
        if self.on:
            self.seen.append(f"{event.command_name} {event.command.get(event.command_name)}")

    def succeeded(self, event) -> None: ...

    def failed(self, event) -> None: ...


_commands = _Commands()

REJECTED = ["insert webhook_inbox", "insert webhook_outcomes"]


def test_each_kind_of_webhook_sends_the_commands_it_needs_and_no_more(base_env, run_id, mongo_client,
                                                                       monkeypatch) -> None:
    from sen_billing.indexes import INDEXES
    from sen_shared import mongo

    monitoring.register(_commands)
    # a URL of its own, so the app gets a client made after the listener was registered (a process keeps one
    # client per URL; an earlier test's would not report its commands)
    url = base_env["MONGO_URL"]
    url += ("&" if "?" in url else ("?" if url.endswith("/") else "/?")) + "connectTimeoutMS=20003"
    db_name = f"sen_t{run_id}_billcmds"
    mongo.ensure_indexes(mongo_client[db_name], INDEXES)
    env = {**base_env, "MONGO_URL": url, "SEN_ENV": "development", "SEN_WEBHOOK_SECRET": bench.STD_SECRET}
    with app_client("billing", env, db_name, mongo_client) as (client, _app):
        monkeypatch.setattr(bench, "INVOICES", 2)
        codes = bench._invoices(mongo_client[db_name])

        def send(i: int, code: str, *, signed: bool = True) -> tuple[int, list[str]]:
            note = f"thanh toan {code}" if code else "chuyen tien kham benh"  # no code: unmatched
            body = json.dumps({"type": "transfer.received", "data": {"id": f"c{i}", "amount": 10000,
                                                                     "description": note}}).encode()
            ts = str(int(time.time()))
            secret = bench.STD_SECRET if signed else "whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="
            headers = {"webhook-id": f"msg_c{i}", "webhook-timestamp": ts, "Content-Type": "application/json",
                       "webhook-signature": webhooks.standard_signature(f"msg_c{i}", ts, body, secret)}
            _commands.seen.clear()
            _commands.on = True
            try:
                answer = client.post("/webhooks/standard", content=body, headers=headers)
            finally:
                _commands.on = False
            return answer.status_code, list(_commands.seen)

        for i in range(3):  # warm-up on the other invoice (a process's first look-ups are not a request's)
            assert send(100 + i, codes[1])[0] == 200
        seen: dict[str, list[str]] = {}
        for kind, i in (("partial payment", 1), ("retry", 1), ("partial payment", 2), ("settling payment", 3),
                        ("retry of the settling payment", 3), ("unmatched transfer (no code in its note)", 4),
                        ("late payment (its invoice balanced)", 5)):
            status, names = send(i, "" if i == 4 else codes[0])
            assert status == 200, kind
            seen.setdefault(kind, names)
        status, names = send(6, codes[0], signed=False)
        assert status == 401
        seen["bad signature"] = names
    assert seen == {**bench.ROUND_TRIPS, "bad signature": REJECTED}
