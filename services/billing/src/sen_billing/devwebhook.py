"""Print a signed test webhook as a ``curl`` command, to watch an invoice turn paid locally.

    python -m sen_billing.devwebhook --reference SEN1234567 --amount 150000
    python -m sen_billing.devwebhook --provider casso --reference SEN1234567 --amount 150000 | sh
    python -m sen_billing.devwebhook --make-secrets   # what `make run` does once: fresh dev secrets

The secrets come from the environment (SEN_WEBHOOK_SECRET, SEN_CASSO_CHECKSUM_KEY,
SEN_PAYOS_CHECKSUM_KEY, SEN_SEPAY_API_KEY), else from ``$SEN_STATE_DIR/webhook-secrets.env``
(``.sen/`` by default), the file ``make run`` writes. Never for production: a real provider signs.
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


def _secret(provider: str) -> str:
    name = KEYS[provider]
    if os.environ.get(name):
        return os.environ[name]
    root = Path(__file__).resolve().parents[4]
    state = Path(os.environ.get("SEN_STATE_DIR") or root / ".sen") / "webhook-secrets.env"
    if state.exists():
        for line in state.read_text().splitlines():
            key, _, value = line.partition("=")
            if key == name:
                return value
    raise SystemExit(f"no {name}: set it, or run `make run` once (it writes {state})")


def signed_request(provider: str, reference: str, amount: int, txid: str, secret: str,
                   now: float) -> tuple[dict[str, str], bytes]:
    """Headers and body of a signed call reporting a transfer of ``amount`` with ``reference`` in its note."""
    note = f"Thanh toan vien phi {reference}"
    if provider == "standard":
        body = json.dumps({"type": "transfer.received", "data": {"id": txid, "amount": amount, "description": note}},
                          ensure_ascii=False).encode()
        msg, ts = f"msg_{txid}", str(int(now))
        return {"webhook-id": msg, "webhook-timestamp": ts,
                "webhook-signature": webhooks.standard_signature(msg, ts, body, secret)}, body
    if provider == "casso":
        obj = {"error": 0, "data": {"id": txid, "reference": f"FT{txid}", "description": note, "amount": amount,
                                    "transactionDateTime": time.strftime("%Y-%m-%d %H:%M:%S"),
                                    "accountNumber": "0011001932418"}}
        t = str(int(now * 1000))
        return {"X-Casso-Signature": f"t={t},v1={webhooks.casso_signature(t, obj, secret)}"}, \
            json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    if provider == "payos":
        data = {"orderCode": int(now), "amount": amount, "description": note, "accountNumber": "0011001932418",
                "reference": f"FT{txid}", "transactionDateTime": time.strftime("%Y-%m-%d %H:%M:%S"),
                "currency": "VND", "paymentLinkId": uuid.uuid4().hex, "code": "00", "desc": "success"}
        obj = {"code": "00", "desc": "success", "success": True, "data": data,
               "signature": webhooks.payos_signature(data, secret)}
        return {}, json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    obj = {"id": int(txid, 16) % 10**9, "gateway": "Vietcombank", "transactionDate": time.strftime("%Y-%m-%d %H:%M:%S"),
           "accountNumber": "0011001932418", "code": None, "content": note, "transferType": "in",
           "transferAmount": amount, "accumulated": 0, "subAccount": None, "referenceCode": f"FT{txid}",
           "description": ""}
    return {"Authorization": f"Apikey {secret}"}, json.dumps(obj, ensure_ascii=False).encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sen_billing.devwebhook", description=__doc__.splitlines()[0])
    parser.add_argument("--provider", choices=sorted(KEYS), default="standard")
    parser.add_argument("--reference", help="the invoice's reference code (from its $vietqr answer)")
    parser.add_argument("--amount", type=int, help="integer đồng")
    parser.add_argument("--url", default=os.environ.get("SEN_BILLING_URL", "http://127.0.0.1:8083"))
    parser.add_argument("--make-secrets", action="store_true", help="print fresh development secrets and stop")
    args = parser.parse_args(argv)
    if args.make_secrets:
        sys.stdout.write(make_secrets())
        return 0
    if not args.reference or args.amount is None:
        parser.error("--reference and --amount are required")
    txid = uuid.uuid4().hex[:12]
    headers, body = signed_request(args.provider, args.reference, args.amount, txid, _secret(args.provider),
                                   time.time())
    parts = ["curl", "-sS", "-X", "POST", f"{args.url.rstrip('/')}/webhooks/{args.provider}",
             "-H", "Content-Type: application/json"]
    for key, value in headers.items():
        parts += ["-H", f"{key}: {value}"]
    parts += ["--data-binary", body.decode()]
    sys.stdout.write(" ".join(shlex.quote(p) for p in parts) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
