"""Invoice operations: ``$issue``, ``$cancel`` and ``$vietqr`` (thin handlers over domain/invoices.py).

Cashiers act on their own facility's invoices only, admins on every facility's
(``BillingFhirServer.invoice_for``). Errors are OperationOutcomes.
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from typing import Any

from flask import Response, request
from sen_shared.fhir.http import FhirRequest, FhirResponse, from_flask, to_connexion
from sen_shared.fhir.outcome import FhirError
from sen_shared.fhir.parameters import parameter_list
from sen_shared.fhir.store import etag
from sen_shared.idempotency_key import idempotent
from sen_shared.runtime import current

from ..domain import invoice_port, status, vietqr
from ..domain import invoices as inv
from ..fhir_server import BillingFhirServer

Reply = Any


def _fhir() -> BillingFhirServer:
    return current().extras["fhir"]


def _answer(req: FhirRequest, rid: str, status: int = 200) -> Reply:
    doc = _fhir().store().read_doc("Invoice", rid)
    return to_connexion(FhirResponse(status, doc["res"], {"ETag": etag(doc["v"])}), req)


@idempotent()
def issue(id: str, **_: Any) -> Reply:  # noqa: A002 - the spec's name
    """draft → issued (publishes billing.invoice.issued); issuing an issued invoice answers it again."""
    req = from_flask("Invoice", id, body=False, operation="$issue")
    _fhir().invoice_for(id, "$issue")
    inv.issue(_fhir().db, id)
    return _answer(req, id)


def _reason(body: Any) -> str:
    """The reason of a cancellation: a Parameters ``reason`` (valueString) or ``{"reason": ...}``."""
    text = None
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        for part in parameter_list(body):
            if part.get("name") == "reason":
                text = part.get("valueString")
    elif isinstance(body, dict):
        text = body.get("reason")
    if not isinstance(text, str) or not text.strip() or len(text) > 500:
        raise FhirError("a cancellation needs a reason (Parameters 'reason', 1-500 characters)", status=422,
                        expression=["Parameters.parameter.where(name='reason')"])
    return text.strip()


@idempotent()
def cancel(id: str, **_: Any) -> Reply:  # noqa: A002 - the spec's name
    """draft or issued → cancelled, with a reason; refused once anything was paid toward it."""
    req = from_flask("Invoice", id, operation="$cancel")
    _fhir().invoice_for(id, "$cancel")
    inv.cancel(_fhir().db, id, _reason(req.body))
    return _answer(req, id)


def vietqr_code(id: str, **_: Any) -> Reply:  # noqa: A002 - the spec's name
    """The invoice's VietQR: JSON {payload, reference, amount, expiresAt}, or the image
    (``_format=png`` / ``svg``). A new payload once the last one expired or the balance changed."""
    fmt = (request.args.get("_format") or "json").lower()
    if fmt not in ("json", "application/json", "application/fhir+json", "png", "image/png", "svg",
                   "image/svg+xml"):
        raise FhirError(f"_format={fmt} is not served here: json, png or svg", status=406)
    settings = _fhir().settings
    res = _fhir().invoice_for(id, "$vietqr")  # read once: the access check's document is the QR's too
    bank = settings.bank_of(invoice_port.view(id, {"res": res}).facility)  # the issuer's account, else the province's
    if bank is None:
        raise FhirError("no receiving bank account is configured (SEN_BANK_BIN, SEN_BANK_ACCOUNT)", status=503,
                        code="transient")
    qr = inv.current_qr(_fhir().db, id, bank, timedelta(seconds=settings.qr_ttl_seconds), invoice=res)
    expires = inv.iso_vn(qr["expires"])
    headers = {"Cache-Control": "no-store", "X-VietQR-Expires": expires}
    if fmt in ("png", "image/png"):
        return Response(_png(qr["payload"]), 200, headers, content_type="image/png")
    if fmt in ("svg", "image/svg+xml"):
        return Response(_svg(qr["payload"]), 200, headers, content_type="image/svg+xml")
    return Response(_json(status.qr_json(qr, bank, id)), 200, headers, content_type="application/json")


# a payload's image never changes: drawn once per process while the payload is served (a payload
# lives until it expires or the balance changes; the page asks for its image on every view)
@lru_cache(maxsize=256)
def _png(payload: str) -> bytes:
    return vietqr.png(payload)


@lru_cache(maxsize=256)
def _svg(payload: str) -> bytes:
    return vietqr.svg(payload)


def _json(body: dict[str, Any]) -> bytes:
    import json

    return json.dumps(body, ensure_ascii=False).encode()
