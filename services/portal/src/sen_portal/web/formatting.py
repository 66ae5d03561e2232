"""How the pages show amounts, dates and names: Vietnamese conventions in both languages."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask_babel import format_date, format_datetime, format_decimal, gettext
from sen_shared.fhir.names import person_name

TZ = ZoneInfo("Asia/Ho_Chi_Minh")


def vnd(amount: Any) -> str:
    """150000 -> '150.000 ₫' (integer đồng, dots between thousands, in every language)."""
    try:
        n = int(amount)
    except (TypeError, ValueError):
        return "—"
    sign = "-" if n < 0 else ""
    return f"{sign}{abs(n):,}".replace(",", ".") + "\u00a0₫"


# billing's cap on every amount (specs/billing.yaml's ``maximum`` of cash, refunds and shift counts;
# sen_billing.domain.pricing.MAX_PRICE): the pages refuse more before sending it
MAX_VND = 10_000_000_000


class AmountTooLarge(ValueError):
    """An amount written right, but more than the most the page takes (:data:`MAX_VND`)."""


def parse_vnd(text: str, maximum: int = MAX_VND) -> int:
    """An amount typed as the pages write it (prices, cash, refunds, shift counts): ``150.000``,
    ``150 000``, ``150,000``, ``150000`` or ``150.000 ₫`` → 150000; ValueError else (a decimal part:
    an amount is a whole number of đồng), :class:`AmountTooLarge` over ``maximum``."""
    compact = re.sub(r"[\s\u00a0₫]|đồng|đ|VND", "", text.strip(), flags=re.IGNORECASE)
    if re.fullmatch(r"\d{1,3}([.,]\d{3})+", compact):
        compact = re.sub(r"[.,]", "", compact)
    if not re.fullmatch(r"\d+", compact):
        raise ValueError(compact)
    digits = compact.lstrip("0") or "0"
    if len(digits) > len(str(maximum)) or int(digits) > maximum:
        raise AmountTooLarge(compact[:20])
    return int(digits)


def thousands(amount: int) -> str:
    """150000 -> '150.000': an amount to edit in a form box, as :func:`vnd` writes it without the sign."""
    return vnd(amount).removesuffix("\u00a0₫")


def number(value: Any) -> str:
    """A measured value in the page's language: 61,5 on a Vietnamese page (the decimal comma, as the charts'
    axes write it), 61.5 on an English one; a value that is not a number as it is."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "—" if value is None else str(value)
    return format_decimal(value)


def today() -> date:
    """Today's date in Vietnam (Asia/Ho_Chi_Minh): a server on UTC is still on yesterday before 07:00 here."""
    return datetime.now(TZ).date()


def parse_instant(value: Any) -> datetime | None:
    if not value or not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=TZ)
    return dt


def when(value: Any, fmt: str = "short") -> str:
    """An instant in Asia/Ho_Chi_Minh (flask-babel's timezone), in the user's language."""
    dt = parse_instant(value) if not isinstance(value, datetime) else value
    if dt is None:
        return "—"
    if fmt == "short" and dt.tzinfo is not None:
        # digits only, the same in every language: the worklist formats a few per row, and babel's
        # pattern machinery was a twelfth of its CPU (the result is babel's "dd/MM/yyyy HH:mm", tested)
        return dt.astimezone(TZ).strftime("%d/%m/%Y %H:%M")
    return format_datetime(dt, "dd/MM/yyyy HH:mm" if fmt == "short" else fmt)


def day(value: Any) -> str:
    if isinstance(value, date):
        return format_date(value, "dd/MM/yyyy")
    try:
        return format_date(date.fromisoformat(str(value)[:10]), "dd/MM/yyyy")
    except ValueError:
        return "—"


def human_name(resource: dict[str, Any] | None) -> str:
    """The person's name as every Sen service writes it (``sen_shared.fhir.names``), or "—"."""
    return person_name(resource) or "—"


def identifier(resource: dict[str, Any] | None, system: str) -> str:
    for ident in (resource or {}).get("identifier") or []:
        if ident.get("system") == system:
            return str(ident.get("value", ""))
    return ""


def codeable(value: dict[str, Any] | None) -> str:
    if not value:
        return "—"
    if value.get("text"):
        return str(value["text"])
    for c in value.get("coding") or []:
        if c.get("display"):
            return str(c["display"])
        if c.get("code"):
            return str(c["code"])
    return "—"


def install(app: Any) -> None:
    app.jinja_env.filters.update(vnd=vnd, when=when, day=day, number=number, human_name=human_name,
                                 codeable=codeable, identifier=identifier)


# the payment gateways by billing's provider names (``POST /webhooks/{provider}``), as cashiers know them;
# "standard" (the bank's own signed webhooks) is a scheme, not a gateway: its transfers are shown as
# plain bank transfers (:func:`payment_method`)
GATEWAYS = {"payos": "payOS", "casso": "Casso", "sepay": "SePay"}


def payment_method(provider: Any, channel: Any) -> str:
    """How money came or went, for the cashier: "Tiền mặt", "Chuyển khoản (payOS)" naming the gateway
    it came through, "Chuyển khoản ngân hàng" for one the bank reported itself (provider ``standard``:
    the webhook scheme's name means nothing to a cashier), "Chuyển khoản" for a transfer the cashier sent back."""
    if channel == "cash":
        return gettext("Cash")
    if provider == "standard":
        return gettext("Direct bank transfer")
    gateway = GATEWAYS.get(str(provider or ""))
    return gettext("Bank transfer (%(gateway)s)", gateway=gateway) if gateway else gettext("Bank transfer")


def received_through(provider: Any, channel: Any) -> str:
    """The daily report's "received through": a gateway by its name (payOS, Casso, SePay), a transfer
    the bank reported as "Chuyển khoản ngân hàng", the cashier's cash as "Tiền mặt"."""
    if provider in GATEWAYS:
        return GATEWAYS[str(provider)]
    return payment_method(provider, channel)
