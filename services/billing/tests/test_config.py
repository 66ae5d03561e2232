"""Billing's settings: a Standard Webhooks secret that is not 'whsec_' + base64 stops the process at
start, naming the variable (it made every standard webhook a 500 instead); so do a receipt prefix that is
no code and two facilities whose receipt numbers would start alike, naming both."""

from __future__ import annotations

import json

import pytest
from sen_billing.config import BillingSettings
from sen_shared.config import load_settings

BASE = {"MONGO_URL": "mongodb://127.0.0.1:1/", "AMQP_URL": "amqp://127.0.0.1:1//", "SEN_ENV": "test",
        "SEN_DEV_JWT_KEY": "/tmp/none.pem"}
# two facilities whose ids agree in their first 12 characters (receipts printed TTYT-HUYEN-C-… for both)
TWO = {"ttyt-huyen-cao-lanh": "TTYT Cao Lãnh", "ttyt-huyen-chau-thanh": "TTYT Châu Thành"}


@pytest.fixture()
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for k in list(os.environ):
        if k.startswith(("SEN_", "MONGO_", "AMQP_")):
            monkeypatch.delenv(k)
    for k, v in BASE.items():
        monkeypatch.setenv(k, v)
    return monkeypatch


@pytest.mark.parametrize("value", ["CHANGE_ME", "whsec_not base64!", "plain-secret"])
def test_a_malformed_standard_webhooks_secret_stops_the_process(env, capsys, value) -> None:
    env.setenv("SEN_WEBHOOK_SECRET", value)
    with pytest.raises(SystemExit) as exc:
        load_settings(BillingSettings)
    assert exc.value.code == 78
    err = capsys.readouterr().err
    assert err == "sen-billing: configuration error: SEN_WEBHOOK_SECRET: a Standard Webhooks secret is " \
                  "'whsec_' + base64\n"


def test_a_standard_webhooks_secret_or_none_is_accepted(env) -> None:
    assert load_settings(BillingSettings).webhook_secret == ""
    env.setenv("SEN_WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    assert load_settings(BillingSettings).webhook_secret == "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_a_configured_receipt_prefix_is_what_a_facilitys_receipts_print(env) -> None:
    from sen_billing.domain.receipts import series_prefix

    env.setenv("SEN_FACILITY_NAMES", json.dumps(TWO))
    env.setenv("SEN_FACILITY_RECEIPT_PREFIXES", '{"ttyt-huyen-chau-thanh": "TTYT-CT"}')
    settings = load_settings(BillingSettings)
    assert settings.receipt_prefixes == {"ttyt-huyen-chau-thanh": "TTYT-CT"}
    assert series_prefix("ttyt-huyen-chau-thanh", settings.receipt_prefixes) == "TTYT-CT"
    assert series_prefix("ttyt-huyen-cao-lanh", settings.receipt_prefixes) == "TTYT-HUYEN-C"  # none: as before


def test_the_worker_prints_the_receipt_prefixes_of_its_own_settings(env) -> None:
    """The worker has no app: its settings are installed as the process's runtime, which a settlement outside
    a request (the repair job, a consult's event) reads its prefixes from."""
    from sen_billing import worker
    from sen_billing.domain.receipts import configured_prefixes
    from sen_shared import runtime

    env.setattr(runtime, "_current", None)  # the test process's own runtime back afterwards
    assert configured_prefixes() == {}  # no runtime at all (a script): none configured
    env.setenv("SEN_FACILITY_NAMES", json.dumps(TWO))
    env.setenv("SEN_FACILITY_RECEIPT_PREFIXES", '{"ttyt-huyen-chau-thanh": "TTYT-CT"}')
    settings = worker.worker_settings()
    assert runtime.current().settings is settings
    assert configured_prefixes() == {"ttyt-huyen-chau-thanh": "TTYT-CT"}


@pytest.mark.parametrize("code", ["ttyt-ct", "TTYT CT", "TTYT-CHAU-THANH", "", "TTYT_CT", "ĐT-CT"])
def test_a_receipt_prefix_not_of_upper_case_letters_digits_or_dashes_up_to_12_stops_the_process(
        env, capsys, code) -> None:
    env.setenv("SEN_FACILITY_RECEIPT_PREFIXES", json.dumps({"ttyt-huyen-chau-thanh": code}))
    with pytest.raises(SystemExit) as exc:
        load_settings(BillingSettings)
    assert exc.value.code == 78
    err = capsys.readouterr().err
    assert err.startswith("sen-billing: configuration error: SEN_FACILITY_RECEIPT_PREFIXES: ttyt-huyen-chau-thanh: "
                          f"{code!r} is no receipt prefix: 1 to 12 upper-case letters, digits or dashes"), err


@pytest.mark.parametrize(("names", "prefixes"), [
    # two ids that agree in their first 12 characters, neither given a code
    (TWO, {}),
    # a code that is another facility's derived prefix
    (TWO, {"ttyt-huyen-cao-lanh": "TTYT-CL", "ttyt-huyen-chau-thanh": "TTYT-CL"}),
])
def test_two_facilities_whose_receipts_would_print_the_same_prefix_stop_the_process_naming_both(
        env, capsys, names, prefixes) -> None:
    env.setenv("SEN_FACILITY_NAMES", json.dumps(names))
    env.setenv("SEN_FACILITY_RECEIPT_PREFIXES", json.dumps(prefixes))
    with pytest.raises(SystemExit) as exc:
        load_settings(BillingSettings)
    assert exc.value.code == 78
    err = capsys.readouterr().err
    prefix = "TTYT-CL" if prefixes else "TTYT-HUYEN-C"
    assert err == ("sen-billing: configuration error: SEN_FACILITY_RECEIPT_PREFIXES: the receipts of "
                   f"ttyt-huyen-cao-lanh and ttyt-huyen-chau-thanh would both be numbered {prefix}-<year>-…: give "
                   "each its own receiptPrefix (1 to 12 upper-case letters, digits or dashes)\n"), err


def test_a_code_for_one_of_two_facilities_whose_ids_agree_tells_them_apart(env) -> None:
    env.setenv("SEN_FACILITY_LEVELS", '{"ttyt-huyen-cao-lanh": "district", "ttyt-huyen-chau-thanh": "district"}')
    env.setenv("SEN_FACILITY_RECEIPT_PREFIXES", '{"ttyt-huyen-chau-thanh": "TTYT-CT"}')
    assert load_settings(BillingSettings).receipt_prefixes == {"ttyt-huyen-chau-thanh": "TTYT-CT"}
