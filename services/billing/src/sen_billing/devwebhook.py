"""Print a signed test webhook as a ``curl`` command, to watch an invoice turn paid locally.

    python -m sen_billing.devwebhook --reference SEN1234567 --amount 150000
    python -m sen_billing.devwebhook --provider casso --reference SEN1234567 --amount 150000 | sh
    python -m sen_billing.devwebhook --reference HDNOTEXIST1 --amount 70000 | sh   # the demo cashier's /unmatched
    python -m sen_billing.devwebhook --make-secrets   # what `make run` does once: fresh dev secrets

The secrets come from the environment (SEN_WEBHOOK_SECRET, SEN_CASSO_CHECKSUM_KEY,
SEN_PAYOS_CHECKSUM_KEY, SEN_SEPAY_API_KEY), else from ``$SEN_STATE_DIR/webhook-secrets.env``
(``.sen/`` by default), the file ``make run`` writes. Never for production: a real provider signs.

The transfer is to the receiving account billing is configured with (``SEN_BANK_ACCOUNT``, else
``$SEN_STATE_DIR/bank.env``, which ``make run`` writes each start; ``--account`` overrides): billing
puts a transfer whose note names no invoice in the queue of the facility owning that account
(``SEN_BANK_ACCOUNT_FACILITIES``; ``make run``: the demo cashier's ``tyt-my-hiep``). A transfer
naming no account, or one no facility owns, waits in the admins' queue only.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shlex
import sys
import time
import uuid
from pathlib import Path

from .config import BillingSettings
from .domain import webhooks

KEYS = {"standard": "SEN_WEBHOOK_SECRET", "casso": "SEN_CASSO_CHECKSUM_KEY", "payos": "SEN_PAYOS_CHECKSUM_KEY",
        "sepay": "SEN_SEPAY_API_KEY"}


def make_secrets() -> str:
    return "\n".join([
        f"SEN_WEBHOOK_SECRET=whsec_{base64.b64encode(secrets.token_bytes(24)).decode()}",
        f"SEN_CASSO_CHECKSUM_KEY={secrets.token_urlsafe(32)}",
        f"SEN_PAYOS_CHECKSUM_KEY={secrets.token_hex(32)}",
        f"SEN_SEPAY_API_KEY={secrets.token_urlsafe(24)}",
    ]) + "\n"


# the variable billing reads its receiving account from (config.BillingSettings.bank_account)
ACCOUNT_VAR = str(BillingSettings.model_fields["bank_account"].validation_alias)


def _state_file(name: str) -> Path:
    root = Path(__file__).resolve().parents[4]
    return Path(os.environ.get("SEN_STATE_DIR") or root / ".sen") / name


def _setting(name: str, file: str) -> str:
    """``name`` from the environment, else from the ``NAME=value`` lines of the state file ``file``; '' if neither."""
    if os.environ.get(name):
        return os.environ[name]
    state = _state_file(file)
    if state.exists():
        for line in state.read_text().splitlines():
            key, _, value = line.partition("=")
            if key == name:
                return value.strip()
    return ""


def _secret(provider: str) -> str:
    name = KEYS[provider]
    if secret := _setting(name, "webhook-secrets.env"):
        return secret
    raise SystemExit(f"no {name}: set it, or run `make run` once (it writes {_state_file('webhook-secrets.env')})")


def receiving_account() -> str:
    """The account billing receives transfers on: ``SEN_BANK_ACCOUNT``, else what ``make run`` wrote."""
    return _setting(ACCOUNT_VAR, "bank.env")


def signed_request(provider: str, reference: str, amount: int, txid: str, secret: str,
                   now: float, account: str = "") -> tuple[dict[str, str], bytes]:
    """Headers and body of a signed call reporting a transfer of ``amount`` with ``reference`` in its note,
    received on ``account`` (every scheme names it; the standard one leaves it out when it is '')."""
    note = f"Thanh toan vien phi {reference}"
    if provider == "standard":
        data = {"id": txid, "amount": amount, "description": note, **({"account": account} if account else {})}
        body = json.dumps({"type": "transfer.received", "data": data}, ensure_ascii=False).encode()
        msg, ts = f"msg_{txid}", str(int(now))
        return {"webhook-id": msg, "webhook-timestamp": ts,
                "webhook-signature": webhooks.standard_signature(msg, ts, body, secret)}, body
    if provider == "casso":
        obj = {"error": 0, "data": {"id": txid, "reference": f"FT{txid}", "description": note, "amount": amount,
                                    "transactionDateTime": time.strftime("%Y-%m-%d %H:%M:%S"),
                                    "accountNumber": account}}
        t = str(int(now * 1000))
        return {"X-Casso-Signature": f"t={t},v1={webhooks.casso_signature(t, obj, secret)}"}, \
            json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    if provider == "payos":
        data = {"orderCode": int(now), "amount": amount, "description": note, "accountNumber": account,
                "reference": f"FT{txid}", "transactionDateTime": time.strftime("%Y-%m-%d %H:%M:%S"),
                "currency": "VND", "paymentLinkId": uuid.uuid4().hex, "code": "00", "desc": "success"}
        obj = {"code": "00", "desc": "success", "success": True, "data": data,
               "signature": webhooks.payos_signature(data, secret)}
        return {}, json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    obj = {"id": int(txid, 16) % 10**9, "gateway": "Vietcombank", "transactionDate": time.strftime("%Y-%m-%d %H:%M:%S"),
           "accountNumber": account, "code": None, "content": note, "transferType": "in",
           "transferAmount": amount, "accumulated": 0, "subAccount": None, "referenceCode": f"FT{txid}",
           "description": ""}
    return {"Authorization": f"Apikey {secret}"}, json.dumps(obj, ensure_ascii=False).encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sen_billing.devwebhook", description=__doc__.splitlines()[0])
    parser.add_argument("--provider", choices=sorted(KEYS), default="standard")
    parser.add_argument("--reference", help="the invoice's reference code (from its $vietqr answer)")
    parser.add_argument("--amount", type=int, help="integer đồng")
    parser.add_argument("--account", help=f"the receiving account the transfer names (default: {ACCOUNT_VAR}, "
                                          "as billing reads it, else the one `make run` wrote)")
    parser.add_argument("--url", default=os.environ.get("SEN_BILLING_URL", "http://127.0.0.1:8083"))
    parser.add_argument("--make-secrets", action="store_true", help="print fresh development secrets and stop")
    args = parser.parse_args(argv)
    if args.make_secrets:
        sys.stdout.write(make_secrets())
        return 0
    if not args.reference or args.amount is None:
        parser.error("--reference and --amount are required")
    account = receiving_account() if args.account is None else args.account
    if not account:
        sys.stderr.write(f"devwebhook: no receiving account ({ACCOUNT_VAR}, --account): a transfer whose note names "
                         "no invoice waits in the admins' queue only\n")
    txid = uuid.uuid4().hex[:12]
    headers, body = signed_request(args.provider, args.reference, args.amount, txid, _secret(args.provider),
                                   time.time(), account)
    parts = ["curl", "-sS", "-X", "POST", f"{args.url.rstrip('/')}/webhooks/{args.provider}",
             "-H", "Content-Type: application/json"]
    for key, value in headers.items():
        parts += ["-H", f"{key}: {value}"]
    parts += ["--data-binary", body.decode()]
    sys.stdout.write(" ".join(shlex.quote(p) for p in parts) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
