"""A facility's receipt numbers start with its configured code (SEN_FACILITY_RECEIPT_PREFIXES, the province
file's receiptPrefix): ttyt-huyen-cao-lanh and ttyt-huyen-chau-thanh both printed TTYT-HUYEN-C-<year>-… before.
The series is the facility's, so a code configured later goes on from the number reached: the receipts made
before keep theirs, the next one prints the code."""

from __future__ import annotations

import json

import pytest

from tests.billing_support import billing_app, make_invoice, pay

pytestmark = pytest.mark.integration

CAO_LANH, CHAU_THANH = "ttyt-huyen-cao-lanh", "ttyt-huyen-chau-thanh"


def _paid(db, facility: str) -> str:  # noqa: ANN001 - the test database
    iid, code = make_invoice(db, 50_000, facility)
    pay(db, code, 50_000)
    return db["receipts"].find_one({"_id": iid})["number"]


def test_a_receipt_prints_its_facilitys_configured_code_and_goes_on_in_its_series(
        base_env, mongo_client, monkeypatch) -> None:
    names = json.dumps({CAO_LANH: "Trung tâm Y tế huyện Cao Lãnh", CHAU_THANH: "Trung tâm Y tế huyện Châu Thành"},
                       ensure_ascii=False)
    # before: Cao Lãnh alone in the settings, its id's first 12 characters printed
    with billing_app(base_env, mongo_client, monkeypatch, "rp",
                     {"SEN_FACILITY_NAMES": json.dumps({CAO_LANH: "Trung tâm Y tế huyện Cao Lãnh"})}) as (_c, db):
        first = _paid(db, CAO_LANH)
        assert first.startswith("TTYT-HUYEN-C-") and first.endswith("-000001"), first
        # then both facilities, each with its code: the same series goes on under the code
        with billing_app(base_env, mongo_client, monkeypatch, "rp2", {
                "SEN_FACILITY_NAMES": names,
                "SEN_FACILITY_RECEIPT_PREFIXES": json.dumps({CAO_LANH: "TTYT-CL", CHAU_THANH: "TTYT-CT"})}):
            second = _paid(db, CAO_LANH)
            other = _paid(db, CHAU_THANH)
        assert second == first.replace("TTYT-HUYEN-C-", "TTYT-CL-").replace("-000001", "-000002"), second
        assert other.startswith("TTYT-CT-") and other.endswith("-000001"), other
        assert db["receipts"].find_one({"number": first}) is not None  # the receipt made before keeps its number


def test_two_billing_apps_in_one_process_each_print_their_own_prefix(base_env, mongo_client, monkeypatch,
                                                                      dev_key) -> None:
    """The prefixes are the app's (its settings), not the process's: the last app made printed its own codes on
    the other's receipts, as a second province (or a test) in one process would."""
    from tests.billing_support import cash_on_a_new_invoice, cashier_headers

    def cash_receipt(client, db) -> str:  # noqa: ANN001 - the app's test client and database
        me = cashier_headers(dev_key)
        assert client.post("/payments/shifts", json={"openingCash": 0}, headers=me).status_code == 201
        iid, _cash = cash_on_a_new_invoice(client, db, me, 100_000)
        return db["receipts"].find_one({"_id": iid})["number"]

    with billing_app(base_env, mongo_client, monkeypatch, "rpa",
                     {"SEN_FACILITY_RECEIPT_PREFIXES": json.dumps({"org-a": "TYT-MOT"})}) as (one, one_db), \
            billing_app(base_env, mongo_client, monkeypatch, "rpb",
                        {"SEN_FACILITY_RECEIPT_PREFIXES": json.dumps({"org-a": "TYT-HAI"})}) as (two, two_db):
        first = cash_receipt(one, one_db)
        second = cash_receipt(two, two_db)
    assert first.startswith("TYT-MOT-") and first.endswith("-000001"), first
    assert second.startswith("TYT-HAI-") and second.endswith("-000001"), second
