"""The refusals a user can cause at billing and teleconsult, said in the user's language.

The back-ends answer a refused request with an English sentence (a FHIR OperationOutcome's
``diagnostics``, an RFC 9457 problem's ``detail``) meant for developers and logs. The pages show
the sentence of :data:`RULES` that matches the refusal's stable fields: the service, the status,
the code (``issue[0].code``; a problem's ``title``, billing's problems all being ``about:blank``)
and the start of the detail, the only stable text some refusals have (the detail's wording is
part of those services' tests). Numbers are kept where they are part of the answer (billing's
``refundable``, a visit's time); a FHIR id is never shown. :func:`explain` answers None for a
refusal it does not know: the page then says the generic sentence.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import g, request, url_for
from flask_babel import gettext
from markupsafe import Markup

from .backend import BackendError, user_subject
from .formatting import vnd, when


@dataclass(frozen=True)
class Rule:
    services: frozenset[str]
    statuses: frozenset[int]  # the statuses the refusal comes with (0: a detail the portal passed on)
    codes: frozenset[str]  # the codes it comes with (empty: any)
    detail: re.Pattern[str]  # matched at the detail's start
    say: Callable[[re.Match[str], BackendError], str]


def _rule(service: str, statuses: tuple[int, ...], codes: tuple[str, ...], detail: str,
          say: Callable[[re.Match[str], BackendError], str]) -> Rule:
    """``service``: one service, or several separated by spaces."""
    return Rule(frozenset(service.split()), frozenset((*statuses, 0)), frozenset(codes), re.compile(detail), say)


def _changed(_m: re.Match[str], _e: BackendError) -> str:
    return gettext("Someone else changed this record meanwhile (another tab, another user). "
                   "Reload the page and try again.")


def _refundable(m: re.Match[str], err: BackendError) -> str:
    raw = err.extra.get("refundable", m.group(1))
    try:
        amount = int(raw)
    except (TypeError, ValueError):
        return gettext("The amount is more than what can be refunded from this payment.")
    if amount <= 0:
        return gettext("Nothing is left to refund on this payment: it was refunded already or the "
                       "invoice does not owe it back.")
    return gettext("At most %(amount)s of this payment can be refunded.", amount=vnd(amount))


def _credit_left(m: re.Match[str], err: BackendError) -> str:
    try:
        amount = int(err.extra.get("refundable", m.group(1)))
    except (TypeError, ValueError):
        amount = 0
    return gettext("Only %(amount)s of this invoice's credit is left to refund.", amount=vnd(max(0, amount)))


def _refunded_already(_m: re.Match[str], err: BackendError) -> str:
    refund = err.extra.get("refund")
    return given_back_message(refund) if isinstance(refund, dict) else gettext("This payment was refunded already.")


def given_back_message(refund: dict[str, Any] | None) -> str:
    """The money was given back already: by whom and when, where billing's refund says (``cashierName``,
    ``at``; one a colleague started and another finished names both). The signed-in cashier's own refund
    (they started it and a colleague's request finished it) is said as theirs, recorded, with who recorded it
    and when: it went back once, under the finisher's shift."""
    refund = refund if isinstance(refund, dict) else {}
    who = refund.get("cashierName") or refund.get("cashier")
    started = refund.get("startedBy") if isinstance(refund.get("startedBy"), dict) else {}
    starter = started.get("cashierName") or started.get("cashier")
    me = user_subject()
    # their own record (a second click, another tab, or a new try once nothing is left) is said as any record:
    # given back already, by their name, when and how much; billing's 409 cannot tell which of those it was
    if me and refund.get("at") and started.get("cashier") == me and refund.get("cashier") != me:
        return gettext("Your refund of %(amount)s was recorded (by %(name)s, at %(when)s): it counts in their shift "
                       "and they hand the money over; nothing more to do.", amount=vnd(refund.get("amount")),
                       name=who or "—", when=when(refund["at"]))
    if who and starter and starter != who:
        who = gettext("%(started)s (started) and %(finished)s (finished)", started=starter, finished=who)
    if who and refund.get("at"):
        return gettext("This money was given back already, by %(who)s at %(when)s (%(amount)s): nothing is left "
                       "to give back.", who=who, when=when(refund["at"]), amount=vnd(refund.get("amount")))
    return gettext("This money was given back already (another tab or a colleague): nothing is left to give back.")


def _whole(m: re.Match[str], _e: BackendError) -> str:
    return whole_payment_message(int(m.group(1)))


def whole_payment_message(amount: int) -> str:
    """A part of a payment toward an invoice still owed was asked for: billing gives it back whole (its
    refusal's sentence, and the invoice page's before the confirmation step)."""
    return gettext("A payment toward an invoice still owed is given back whole (%(amount)s): leave the amount "
                   "empty or enter all of it.", amount=vnd(amount))


def _invoice_state(m: re.Match[str], _e: BackendError) -> str:
    state = m.group(1)
    if state == "balanced":
        return gettext("This invoice is paid already: it is no longer awaiting payment.")
    if state == "cancelled":
        return gettext("This invoice is cancelled: it is no longer awaiting payment.")
    return gettext("This invoice is not awaiting payment. Reload the page to see its state.")


def _visit_at(m: re.Match[str], _e: BackendError) -> str:
    shown = when(m.group(1))
    if shown == "—":
        return gettext("This consult already has a visit: move it or cancel it instead of booking another.")
    return gettext("This consult already has a visit at %(when)s: move it or cancel it instead of booking "
                   "another.", when=shown)


def _task_state(m: re.Match[str], _e: BackendError) -> str:
    from . import status_label

    return gettext("This consult is now “%(status)s”: this step is no longer possible. Reload the page.",
                   status=status_label(m.group(1)))


def _no_messages(m: re.Match[str], _e: BackendError) -> str:
    from . import status_label

    return gettext("This consult is now “%(status)s”: it takes no more messages. Reload the page.",
                   status=status_label(m.group(1)))


def _say(text: str) -> Callable[[re.Match[str], BackendError], str]:
    """A fixed sentence (``text`` is a msgid, translated when the page is shown; ``_say`` marks it for pybabel
    extract, :data:`sen_portal.catalog.KEYWORDS`)."""
    return lambda _m, _e: gettext(text)


def shift_needs_a_facility() -> str:
    """Why an account of no facility (the province's admin) opens no shift, and who does: billing refuses it
    too (a shift is its facility's drawer, bank account and daily report)."""
    return gettext("A shift belongs to a facility: its cash drawer, its bank account and its daily report. Your "
                   "account names no facility, so it opens no shift: the facility's cashier opens it, signed in "
                   "with their own account.")


def _no_shift(_m: re.Match[str], _e: BackendError) -> str:
    """The sentence with a link to where the shift is opened (Markup: the page shows the link); refused on an
    invoice's page (its cash, refund...), the shift page brings the cashier back to that invoice once opened."""
    # the province's admin: a shift is a facility's, not hers to open (web.shift)
    if not getattr(getattr(g, "user", None), "facility", "-"):
        return " ".join((gettext("No shift is open."), shift_needs_a_facility()))
    iid = (request.view_args or {}).get("iid") if request.endpoint != "web.shift" else None
    back = url_for("web.invoice", iid=iid, **({"p": request.args["p"]} if request.args.get("p") else {})) \
        if iid else None
    return Markup('{} <a href="{}" data-testid="open-shift-link">{}</a>').format(
        gettext("No shift is open: open your shift first."),
        url_for("web.shift", **({"back": back} if back else {})), gettext("Open the shift"))


def _signed(value: Any) -> str:
    try:
        n = int(value)
    except (TypeError, ValueError):
        return "—"
    return ("+" if n > 0 else "") + vnd(n)


def _gap_needs_note(_m: re.Match[str], err: BackendError) -> str:
    return gap_message(err.extra.get("difference") if isinstance(err.extra.get("difference"), dict) else {})


def gap_message(gap: dict[str, Any]) -> str:
    """A shift's counts differ from what it expects (``gap``: counted less expected, cash and transfers)
    and no note says why: billing's refusal, and the shift page's own check before its confirmation step."""
    return gettext("The counted totals differ from what was expected (cash %(cash)s, transfers %(transfers)s): "
                   "say why in the note, then close the shift.", cash=_signed(gap.get("cash", 0)),
                   transfers=_signed(gap.get("transfers", 0)))


_CONFLICT = ("Conflict", "conflict")
RULES: tuple[Rule, ...] = (
    # billing: payments (RFC 9457 problems, title "Conflict" / "Bad Request")
    _rule("billing", (422,), (), r"at most (-?\d+) đồng of this payment can be refunded", _refundable),
    _rule("billing", (422,), (), r"a payment toward an invoice still owed is given back whole: (\d+) đồng", _whole),
    _rule("billing", (409,), _CONFLICT, r"this invoice is paid in full \(balanced\): only its credit",
          _say("This invoice is paid in full: only its credit (what was paid over the amount owed) can be "
               "refunded, and none is left.")),
    _rule("billing", (409,), _CONFLICT, r"this invoice is being settled: only its credit",
          _say("A payment is settling this invoice right now: only its credit can be refunded. Reload the page.")),
    _rule("billing", (409,), _CONFLICT, r"this cancelled invoice's payments were all given back",
          _say("This cancelled invoice's payments were all given back already.")),
    _rule("billing", (409,), _CONFLICT, r"this payment was refunded already", _refunded_already),
    # two cashiers' refunds of one payment at once, the rounds used up (payments.refund, refund_links.record)
    _rule("billing", (409,), _CONFLICT, r"this payment is being given back meanwhile",
          _say("Someone is giving this payment back right now. Reload the page to see what is left, then try "
               "again.")),
    # billing: an overpaid invoice's credit (domain/credits.py), once however many cashiers give it back
    _rule("billing", (409,), _CONFLICT, r"this invoice's credit \(money paid over what was owed\) was given back",
          _say("This invoice's credit (what was paid over the amount owed) was given back already: nothing is "
               "left to refund.")),
    _rule("billing", (422,), (), r"at most (-?\d+) đồng of this invoice's credit is left", _credit_left),
    _rule("billing", (409,), _CONFLICT, r"this invoice's credit is being given back meanwhile",
          _say("Someone is giving this credit back right now. Reload the page to see what is left.")),
    _rule("billing", (409,), _CONFLICT, r"invoice \S+ is ([a-z-]+), not awaiting payment", _invoice_state),
    _rule("billing", (409,), _CONFLICT, r"this transfer was assigned already",
          _say("This transfer was assigned to an invoice already.")),
    _rule("billing", (409,), _CONFLICT, r"this payment is not in the unmatched queue",
          _say("This transfer is no longer waiting to be matched: it was assigned or refunded meanwhile.")),
    _rule("billing", (409,), _CONFLICT, r"an unmatched transfer is assigned to an invoice",
          _say("A transfer that matched no invoice is assigned to one; only an administrator can refund it.")),
    _rule("billing", (422,), (), r"a refund needs a reason", _say("A refund needs a reason.")),
    _rule("billing", (422,), (), r"the amount must be a positive number",
          _say("The amount must be a positive number of đồng.")),
    # billing: the cashier's shift
    _rule("billing", (409,), _CONFLICT, r"a shift is open already",
          _say("A shift is open already: close it before opening another.")),
    _rule("billing", (409,), _CONFLICT, r"(no shift is open|open a shift first)", _no_shift),
    _rule("billing", (422,), (), r"the counted totals differ from the expected ones", _gap_needs_note),
    _rule("billing", (409,), _CONFLICT, r"the shift (changed|was closed) meanwhile",
          _say("The shift changed meanwhile (another tab?). Reload the page.")),
    # billing: invoices (FHIR OperationOutcomes, code "conflict")
    _rule("billing", (409,), ("conflict",), r"Invoice/\S+ is cancelled; its charges are being released",
          _say("This invoice is cancelled, but its services are still being released: cancel it again to "
               "finish.")),
    _rule("billing", (409,), ("conflict",), r"Invoice/\S+ is cancelled",
          _say("This invoice is cancelled already.")),
    _rule("billing", (409,), ("conflict",), r"Invoice/\S+ (is balanced|is being settled|was balanced meanwhile)",
          _say("This invoice is paid in full: it can no longer be cancelled. Only a credit (what was paid over "
               "the amount owed) can be refunded.")),
    _rule("billing", (409,), ("conflict",), r"Invoice/\S+ has payments",
          _say("This invoice has payments: refund them before cancelling it.")),
    _rule("billing", (409,), ("conflict",), r"Invoice/\S+ has nothing left to pay",
          _say("Nothing is left to pay on this invoice.")),
    _rule("billing", (409,), ("conflict",), r"Invoice/\S+ is [a-z-]+: no QR to pay",
          _say("This invoice is not awaiting payment: it has no QR code to pay.")),
    _rule("billing", (409,), ("conflict",), r"ChargeItem/\S+ is on Invoice/\S+ already",
          _say("A service of this invoice is on another invoice already. Reload the page.")),
    _rule("billing", (409,), ("conflict",), r"(ChargeItem/\S+ is being invoiced|the QR code is being renewed)",
          _say("Someone else is working on this invoice at this moment. Try again in a moment.")),
    # teleconsult: booking a visit
    _rule("teleconsult", (409,), ("conflict",), r"Slot/\S+ is already \w+ by another appointment",
          _say("This time was just taken by another appointment. Choose another time.")),
    _rule("teleconsult", (409,), ("not-found",), r"", _say("This time is no longer offered. Choose another time.")),
    _rule("teleconsult", (409,), ("business-rule",), r"ServiceRequest/\S+ already has a visit at (\S+)", _visit_at),
    _rule("teleconsult", (409,), ("business-rule",), r"Appointment/\S+ was rescheduled already",
          _say("This visit was moved already. Reload the page.")),
    _rule("teleconsult", (409,), ("business-rule",), r"Appointment/\S+ has not started yet",
          _say("The visit has not started yet: it cannot be marked as missed.")),
    _rule("teleconsult", (409,), ("business-rule",), r"Appointment/\S+ is .+: it cannot be",
          _say("This visit was cancelled, held or changed meanwhile: it cannot be changed this way. "
               "Reload the page.")),
    # teleconsult: the consult's steps, and its thread's messages
    _rule("teleconsult", (409,), ("business-rule",), r"\$message is not allowed: the Task is '([a-z-]+)'",
          _no_messages),
    _rule("teleconsult", (409,), ("business-rule",), r"\$[a-z-]+ is not allowed: the Task is '([a-z-]+)'",
          _task_state),
    _rule("teleconsult", (409,), ("conflict",), r"Task/\S+ exists already", _say("This consult was sent already.")),
    # any service: the record changed between the page and the click
    _rule("billing teleconsult", (409, 412), (), r".*(meanwhile|changing too fast|no longer at version|is at version)",
          _changed),
)


def explain(err: BackendError) -> str | None:
    """The user's sentence for a refusal ``err`` (kind ``refused``), or None when none of :data:`RULES` fits."""
    for rule in RULES:
        if err.service not in rule.services or err.status not in rule.statuses:
            continue
        if rule.codes and err.code not in rule.codes and (err.code or not rule.detail.pattern):
            continue  # an answer without a code (a detail the portal passed on): its text decides
        m = rule.detail.match(err.detail or "")
        if m is not None:
            return rule.say(m, err)
    return None


def detail_of(err: BackendError) -> dict[str, Any]:
    """What the log keeps of a refusal: its service, status, code and the service's English detail."""
    return {"backend": err.service, "backend_status": err.status, "backend_code": err.code,
            "backend_detail": err.detail}
