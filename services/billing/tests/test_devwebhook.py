"""devwebhook: every scheme's test call names the receiving account billing is configured with.

Billing puts a transfer whose note names no invoice in the queue of the facility owning the
receiving account (``SEN_BANK_ACCOUNT_FACILITIES``); a call naming another account, or none, lands
in the admins' queue only, where the demo cashier never sees it. The end to end check (the demo
cashier's ``/payments/unmatched``) is ``tests/integration/test_billing_webhooks.py``.
"""

from __future__ import annotations

import base64
import shlex
import time
from pathlib import Path

import pytest
from sen_billing import devwebhook
from sen_billing.domain.webhooks import PROVIDERS, read_webhook

SECRETS = {"standard": "whsec_" + base64.b64encode(b"devwebhook-unit-test-secret").decode(),
           "casso": "casso-unit-key", "payos": "payos-unit-key", "sepay": "sepay-unit-key"}
ACCOUNT = "0011001234567"


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No receiving account or secret from the developer's shell or checkout: the state dir is empty."""
    for provider, name in devwebhook.KEYS.items():
        monkeypatch.setenv(name, SECRETS[provider])
    monkeypatch.delenv("SEN_BANK_ACCOUNT", raising=False)
    monkeypatch.setenv("SEN_STATE_DIR", str(tmp_path))
    return tmp_path


def sent(capsys: pytest.CaptureFixture, *argv: str) -> tuple[str, dict[str, str], bytes]:
    """What the printed curl command would send: URL, headers and body."""
    assert devwebhook.main(list(argv)) == 0
    parts = shlex.split(capsys.readouterr().out)
    headers = dict(parts[i + 1].split(": ", 1) for i, p in enumerate(parts) if p == "-H")
    return parts[parts.index("-X") + 2], headers, parts[parts.index("--data-binary") + 1].encode()


def test_billing_reads_its_receiving_account_from_the_variable_devwebhook_reads() -> None:
    assert devwebhook.ACCOUNT_VAR == "SEN_BANK_ACCOUNT"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_each_schemes_call_names_the_configured_account(provider: str, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("SEN_BANK_ACCOUNT", ACCOUNT)
    url, headers, body = sent(capsys, "--provider", provider, "--reference", "HDNOTEXIST1", "--amount", "70000")
    assert url.endswith(f"/webhooks/{provider}")
    [transfer] = read_webhook(provider, body, headers, SECRETS[provider], time.time())
    assert (transfer.account, transfer.amount) == (ACCOUNT, 70000)
    assert "HDNOTEXIST1" in transfer.description


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_account_make_run_wrote_serves_another_shell_and_account_overrides(
        provider: str, environment: Path, capsys: pytest.CaptureFixture) -> None:
    (environment / "bank.env").write_text("SEN_BANK_ACCOUNT=0011009999999\n")
    _, headers, body = sent(capsys, "--provider", provider, "--reference", "HDX", "--amount", "1000")
    assert read_webhook(provider, body, headers, SECRETS[provider], time.time())[0].account == "0011009999999"
    _, headers, body = sent(capsys, "--provider", provider, "--reference", "HDX", "--amount", "1000",
                            "--account", "0022000000001")
    assert read_webhook(provider, body, headers, SECRETS[provider], time.time())[0].account == "0022000000001"


def test_no_account_configured_says_where_the_transfer_will_wait(capsys: pytest.CaptureFixture) -> None:
    assert devwebhook.main(["--reference", "HDX", "--amount", "1000"]) == 0
    err = capsys.readouterr().err
    assert "SEN_BANK_ACCOUNT" in err and "admins' queue" in err
    headers, body = devwebhook.signed_request("standard", "HDX", 1000, "abc", SECRETS["standard"], time.time())
    assert read_webhook("standard", body, headers, SECRETS["standard"], time.time())[0].account == ""
