"""Billing's settings: a Standard Webhooks secret that is not 'whsec_' + base64 stops the process at
start, naming the variable (it made every standard webhook a 500 instead)."""

from __future__ import annotations

import pytest
from sen_billing.config import BillingSettings
from sen_shared.config import load_settings

BASE = {"MONGO_URL": "mongodb://127.0.0.1:1/", "AMQP_URL": "amqp://127.0.0.1:1//", "SEN_ENV": "test",
        "SEN_DEV_JWT_KEY": "/tmp/none.pem"}


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
