"""The payment webhook inbox, ``POST /webhooks/{provider}``: authenticated by the provider's
signature or key (never a user token), the raw body stored before anything else."""

from __future__ import annotations

import time
from typing import Any

from flask import request
from sen_shared.runtime import current

from ..domain import payments
from ..domain.webhooks import PROVIDERS, SCHEMES, WebhookRejected, read_webhook

SECRET_SETTINGS = {"payos": "payos_checksum_key", "casso": "casso_checksum_key", "sepay": "sepay_api_key",
                   "standard": "webhook_secret"}


def _problem(status: int, title: str, detail: str, **extra: Any) -> tuple[dict[str, Any], int, dict[str, str]]:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail,
            "instance": request.path, **extra}
    return body, status, {"Content-Type": "application/problem+json"}


def receive(provider: str) -> Any:
    rt = current()
    settings = rt.settings
    if provider not in PROVIDERS:
        return _problem(404, "Not Found", f"no webhook provider {provider!r}; one of {', '.join(PROVIDERS)}")
    raw = request.get_data(cache=False)
    limit = int(getattr(settings, "webhook_max_bytes", 65536))
    if len(raw) > limit:
        return _problem(413, "Content Too Large", f"a webhook body is at most {limit} bytes")
    db = rt.db
    secret = str(getattr(settings, SECRET_SETTINGS[provider], "") or "")
    # The raw call is the first write, before anything is applied: checking its proof is pure
    # computation, so a verified call goes in with its transactions' claims in one insert (a
    # provider's retry is told apart by that insert, not by a look-up first).
    try:
        transfers = read_webhook(provider, raw, request.headers, secret, now=time.time())
    except WebhookRejected as err:
        inbox_id = payments.store_raw(db, provider, raw, request.headers)
        payments.record_outcome(db, inbox_id, provider, "rejected", reason=err.reason, detail=err.detail)
        title = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}.get(err.status, "Service Unavailable")
        return _problem(err.status, title, err.detail, reason=err.reason, inbox=inbox_id)
    except Exception:
        payments.store_raw(db, provider, raw, request.headers)  # kept, even when reading it failed
        raise
    inbox_id, seen = payments.store_call(db, provider, raw, request.headers, transfers)
    owners = getattr(settings, "account_facilities", None) or {}
    recorded = [payments.record_transfer(db, t, inbox_id, seen=payments.payment_id(t.provider, t.transaction_id)
                                         in seen, account_facilities=owners) for t in transfers]
    if not recorded:
        # an applied call is recorded by its payments (each names its inbox call), a retry by the
        # payment it repeats (same provider and transaction id, another inbox call); a call that
        # reports no incoming transfer (money going out, a test ping) gets an outcome record
        payments.record_outcome(db, inbox_id, provider, "ignored")
    return {**SCHEMES[provider].ack, "payments": [r.payment["_id"] for r in recorded],
            "duplicates": sum(1 for r in recorded if not r.created)}, 200, {"Content-Type": "application/json"}
