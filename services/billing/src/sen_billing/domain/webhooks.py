"""Payment webhook schemes: how each provider signs its calls, and what a call says was paid.

Pure functions, no I/O. One :class:`Scheme` per provider turns a raw request (body bytes and
headers) into the bank transfers it reports, or raises :class:`WebhookRejected`:

- **payOS**: the body carries ``data`` and ``signature``; the signature is HMAC-SHA256 with the
  checksum key over ``data`` as ``key=value`` pairs sorted by key and joined with ``&`` (null
  as the empty string, an array or object as JSON with sorted keys). No timestamp in the scheme.
- **Casso v2**: header ``X-Casso-Signature: t=<ms>,v1=<hex>``, HMAC-SHA512 with the checksum
  key over ``t + "." +`` the whole body as compact JSON with keys sorted at every level.
- **SePay**: header ``Authorization: Apikey <key>``; the key is the only proof (no timestamp).
- **Standard Webhooks**: headers ``webhook-id``, ``webhook-timestamp`` (seconds) and
  ``webhook-signature`` (space-separated ``v1,<base64>`` entries), HMAC-SHA256 with the
  base64-decoded ``whsec_`` secret over ``id.timestamp.body``.

Every comparison of a signature or key is :func:`hmac.compare_digest`. A scheme with a
timestamp refuses one more than :data:`TOLERANCE_SECONDS` away from now (either way).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from .vietqr import MAX_AMOUNT_DIGITS

TOLERANCE_SECONDS = 300  # five minutes, as the Standard Webhooks spec suggests

PROVIDERS = ("payos", "casso", "sepay", "standard")
MAX_AMOUNT = 10**MAX_AMOUNT_DIGITS - 1  # đồng: what a VietQR can ask for; more is no transfer (nor fits a BSON int)
# what the database cannot store (sen_shared.web.check_storable refuses it in the JSON APIs): a NUL, which
# PostgreSQL under FerretDB refuses, and a lone UTF-16 surrogate (JSON's "\ud800" alone), no UTF-8 text
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class WebhookRejected(Exception):
    """The call is not proven to come from the provider (401), or it is not a valid call (400)."""

    def __init__(self, reason: str, detail: str, status: int = 401) -> None:
        super().__init__(detail)
        self.reason = reason  # short machine code: bad_signature, stale, missing_signature, malformed...
        self.detail = detail
        self.status = status


@dataclass(frozen=True)
class Transfer:
    """One incoming bank transfer as a provider reports it. ``amount`` is integer đồng."""

    provider: str
    transaction_id: str
    amount: int
    description: str
    bank_reference: str = ""
    account: str = ""
    paid_at: str = ""  # as the provider wrote it (local time, no zone, for the Vietnamese ones)


# ------------------------------------------------------------------------------- helpers

_VN = ZoneInfo("Asia/Ho_Chi_Minh")


def bank_time(paid_at: str) -> datetime | None:
    """When the bank says the transfer happened, from a provider's ``paid_at`` (payOS and Casso
    ``transactionDateTime``, SePay ``transactionDate``: ``2023-03-25 14:02:37``, Vietnam's local time with
    no zone, as their webhook documentation shows; an ISO 8601 time with its offset, as the Standard
    scheme's ``time`` may carry, is taken at its word). None when there is none or it is no time."""
    text = (paid_at or "").strip()
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when.replace(tzinfo=_VN) if when.tzinfo is None else when

def _header(headers: Mapping[str, str], name: str) -> str:
    """A header by case-insensitive name ('' when absent)."""
    lname = name.lower()
    for key, value in headers.items():
        if key.lower() == lname:
            return value
    return ""


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise WebhookRejected("malformed", "the body is not UTF-8 JSON", 400) from None
    except RecursionError:
        raise WebhookRejected("malformed", "the body is nested too deeply", 400) from None
    if not isinstance(body, dict):
        raise WebhookRejected("malformed", "the body is JSON but not an object", 400)
    return body


def _check_window(timestamp_seconds: float, now: float) -> None:
    if abs(now - timestamp_seconds) > TOLERANCE_SECONDS:
        raise WebhookRejected("stale", f"the timestamp is more than {TOLERANCE_SECONDS // 60} minutes "
                                       "away from now; a replayed or delayed call is not applied")


def _amount(value: Any, field: str) -> int:
    """An integer amount of đồng; a float with no fraction is accepted (JSON has one number type)."""
    if isinstance(value, bool):
        raise WebhookRejected("malformed", f"{field} is not an amount", 400)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or value < 0:
        raise WebhookRejected("malformed", f"{field} must be a whole, non-negative number of đồng", 400)
    if value > MAX_AMOUNT:
        raise WebhookRejected("malformed", f"{field} is more than {MAX_AMOUNT_DIGITS} digits of đồng, which no "
                                           "transfer is", 400)
    return value


def _text(value: Any) -> str:
    return "" if value is None else str(value)


# ------------------------------------------------------------------------------- payOS

def _payos_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        # arrays (and objects) as JSON with the keys of each object sorted
        return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def payos_signature(data: Mapping[str, Any], checksum_key: str) -> str:
    """payOS's HMAC-SHA256 (hex) of ``data``: sorted ``key=value`` joined by ``&``."""
    text = "&".join(f"{key}={_payos_value(data[key])}" for key in sorted(data))
    return hmac.new(checksum_key.encode(), text.encode("utf-8"), hashlib.sha256).hexdigest()


def verify_payos(raw: bytes, headers: Mapping[str, str], secret: str, now: float) -> dict[str, Any]:
    body = _json_object(raw)
    data, signature = body.get("data"), body.get("signature")
    if not isinstance(signature, str) or not signature:
        raise WebhookRejected("missing_signature", "the body has no signature")
    if not isinstance(data, dict):
        raise WebhookRejected("malformed", "the body has no data object", 400)
    if not hmac.compare_digest(payos_signature(data, secret).encode(), signature.strip().lower().encode()):
        raise WebhookRejected("bad_signature", "the signature does not match the data")
    return body


def transfers_payos(body: Mapping[str, Any]) -> list[Transfer]:
    data = body["data"]
    # payOS's own test call (orderCode 123, "VQRIO123") also arrives here: it matches no invoice
    txid = _text(data.get("reference")) or f"{_text(data.get('paymentLinkId'))}:{_text(data.get('orderCode'))}"
    return [Transfer(provider="payos", transaction_id=txid, amount=_amount(data.get("amount"), "data.amount"),
                     description=_text(data.get("description")), bank_reference=_text(data.get("reference")),
                     account=_text(data.get("accountNumber")), paid_at=_text(data.get("transactionDateTime")))]


# ------------------------------------------------------------------------------- Casso v2

_CASSO = re.compile(r"^\s*t=(\d{1,16}),\s*v1=([0-9a-fA-F]{128})\s*$")


def _sorted_deep(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted_deep(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted_deep(v) for v in value]
    return value


def casso_signature(timestamp_ms: str, body: Any, checksum_key: str) -> str:
    """Casso v2's HMAC-SHA512 (hex) over ``t.`` + the body as compact JSON, keys sorted recursively."""
    text = f"{timestamp_ms}." + json.dumps(_sorted_deep(body), ensure_ascii=False, separators=(",", ":"))
    return hmac.new(checksum_key.encode(), text.encode("utf-8"), hashlib.sha512).hexdigest()


def verify_casso(raw: bytes, headers: Mapping[str, str], secret: str, now: float) -> dict[str, Any]:
    header = _header(headers, "X-Casso-Signature")
    if not header:
        raise WebhookRejected("missing_signature", "the X-Casso-Signature header is missing")
    match = _CASSO.match(header)
    if not match:
        raise WebhookRejected("bad_signature", "X-Casso-Signature is not 't=<ms>,v1=<hex>'")
    timestamp, signature = match.group(1), match.group(2).lower()
    body = _json_object(raw)
    if not hmac.compare_digest(casso_signature(timestamp, body, secret).encode(), signature.encode()):
        raise WebhookRejected("bad_signature", "the signature does not match the body")
    _check_window(int(timestamp) / 1000.0, now)
    return body


def transfers_casso(body: Mapping[str, Any]) -> list[Transfer]:
    data = body.get("data")
    items = data if isinstance(data, list) else [data] if isinstance(data, dict) else []
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise WebhookRejected("malformed", "data must be an object", 400)
        amount = item.get("amount")
        if isinstance(amount, int | float) and not isinstance(amount, bool) and amount < 0:
            continue  # money going out of the account: not a payment
        out.append(Transfer(provider="casso", transaction_id=_text(item.get("id") if item.get("id") is not None
                                                                   else item.get("tid")),
                            amount=_amount(amount, "data.amount"), description=_text(item.get("description")),
                            bank_reference=_text(item.get("reference")), account=_text(item.get("accountNumber")),
                            paid_at=_text(item.get("transactionDateTime") or item.get("when"))))
    return out


# ------------------------------------------------------------------------------- SePay

def verify_sepay(raw: bytes, headers: Mapping[str, str], secret: str, now: float) -> dict[str, Any]:
    auth = _header(headers, "Authorization").strip()
    if not auth:
        raise WebhookRejected("missing_signature", "the Authorization header is missing: 'Apikey <key>'")
    scheme, _, key = auth.partition(" ")
    if scheme.lower() != "apikey" or not hmac.compare_digest(key.strip().encode(), secret.encode()):
        raise WebhookRejected("bad_signature", "the API key is not valid")
    return _json_object(raw)


def transfers_sepay(body: Mapping[str, Any]) -> list[Transfer]:
    if _text(body.get("transferType")).lower() == "out":
        return []  # money going out of the account: not a payment
    if body.get("id") is None:
        raise WebhookRejected("malformed", "the body has no transaction id", 400)
    # SePay's 'code' is the payment code it recognised in the note; the note itself is 'content'
    note = " ".join(part for part in (_text(body.get("code")), _text(body.get("content"))) if part)
    return [Transfer(provider="sepay", transaction_id=_text(body.get("id")),
                     amount=_amount(body.get("transferAmount"), "transferAmount"), description=note,
                     bank_reference=_text(body.get("referenceCode")), account=_text(body.get("accountNumber")),
                     paid_at=_text(body.get("transactionDate")))]


# ------------------------------------------------------------------------------- Standard Webhooks

def _whsec_key(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a Standard Webhooks secret is 'whsec_' + base64") from None


def standard_signature(msg_id: str, timestamp: str, raw: bytes, secret: str) -> str:
    """``v1,<base64 HMAC-SHA256>`` over ``id.timestamp.body`` with the decoded ``whsec_`` secret."""
    mac = hmac.new(_whsec_key(secret), f"{msg_id}.{timestamp}.".encode() + raw, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def verify_standard(raw: bytes, headers: Mapping[str, str], secret: str, now: float) -> dict[str, Any]:
    msg_id, timestamp = _header(headers, "webhook-id"), _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    if not (msg_id and timestamp and signatures):
        raise WebhookRejected("missing_signature",
                              "webhook-id, webhook-timestamp and webhook-signature are all required")
    if not timestamp.isdigit():
        raise WebhookRejected("bad_signature", "webhook-timestamp must be whole seconds since 1970")
    expected = standard_signature(msg_id, timestamp, raw, secret).encode()
    # compare with every v1 entry (a sender rotating its secret sends several); no early exit
    ok = False
    for candidate in signatures.split():
        ok |= candidate.startswith("v1,") and hmac.compare_digest(expected, candidate.encode())
    if not ok:
        raise WebhookRejected("bad_signature", "no webhook-signature entry matches the body")
    _check_window(int(timestamp), now)
    body = _json_object(raw)
    body.setdefault("_webhook_id", msg_id)
    return body


def transfers_standard(body: Mapping[str, Any]) -> list[Transfer]:
    """Sen's generic event: ``{"type": "transfer.received", "data": {"id", "amount", "description",
    "reference"?, "account"?, "time"?}}``; another type is acknowledged and ignored."""
    if body.get("type") != "transfer.received":
        return []
    data = body.get("data")
    if not isinstance(data, dict):
        raise WebhookRejected("malformed", "data must be an object", 400)
    txid = _text(data.get("id")) or _text(body.get("_webhook_id"))
    return [Transfer(provider="standard", transaction_id=txid, amount=_amount(data.get("amount"), "data.amount"),
                     description=_text(data.get("description")), bank_reference=_text(data.get("reference")),
                     account=_text(data.get("account")), paid_at=_text(data.get("time")))]


# ------------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class Scheme:
    name: str
    verify: Callable[[bytes, Mapping[str, str], str, float], dict[str, Any]]
    transfers: Callable[[Mapping[str, Any]], list[Transfer]]
    ack: dict[str, Any]  # what the provider wants to read back on success


SCHEMES: dict[str, Scheme] = {
    "payos": Scheme("payos", verify_payos, transfers_payos, {"success": True}),
    "casso": Scheme("casso", verify_casso, transfers_casso, {"success": True}),
    "sepay": Scheme("sepay", verify_sepay, transfers_sepay, {"success": True}),
    "standard": Scheme("standard", verify_standard, transfers_standard, {"success": True}),
}


def read_webhook(provider: str, raw: bytes, headers: Mapping[str, str], secret: str,
                 now: float) -> list[Transfer]:
    """Verify a provider's call and return the incoming transfers it reports.

    Raises :class:`WebhookRejected` (status 401 when the call is not proven, 400 when it is
    proven but not understood); a transfer is returned only from a verified call.
    """
    scheme = SCHEMES.get(provider)
    if scheme is None:
        raise WebhookRejected("unknown_provider", f"no such provider {provider!r}", 404)
    if not secret:
        raise WebhookRejected("not_configured", f"no secret is configured for {provider}", 503)
    body = scheme.verify(raw, headers, secret, now)
    transfers = scheme.transfers(body)
    for t in transfers:
        if not t.transaction_id or len(t.transaction_id) > 200 or _UNSTORABLE.search(t.transaction_id):
            raise WebhookRejected("malformed", "a transfer has no usable transaction id", 400)
    # a NUL or a lone surrogate cannot be stored: the money still counts, its note and bank details are
    # kept with each NUL as a space and each lone surrogate as U+FFFD (the raw call keeps what was sent)
    return [replace(t, **{f: _storable(getattr(t, f)) for f in _TEXT_FIELDS if _UNSTORABLE.search(getattr(t, f))})
            for t in transfers]


def _storable(text: str) -> str:
    return _UNSTORABLE.sub(lambda m: " " if m.group() == "\x00" else "\ufffd", text)


_TEXT_FIELDS = ("description", "bank_reference", "account", "paid_at")
