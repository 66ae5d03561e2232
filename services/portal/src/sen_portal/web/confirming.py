"""Permanent actions are confirmed before they are done: one mechanism for every page that offers one
(the clinic cancelling a consult, the cashier cancelling an invoice, refunding or closing the shift, the
doctor rejecting a consult, giving it to another doctor or cancelling its video visit, the nurse taking a
patient of another facility on).

The action's form posts what was typed; the first press (no confirmation in it) does nothing and the page
comes back with everything typed kept and a confirmation step inside the same form (``_confirm.html``'s
``confirm_step``): a sentence naming what will happen, a tick ``confirm=<action>`` the server checks
and the button doing it. The check is here, never only in the browser: a POST without the tick (no
JavaScript, a stray click, a form sent by hand) changes nothing. The step pressed without the tick
says so on the tick (``missing``). A double click on the confirmed step is one action: each action
keeps its own idempotency (the form's key, the EHR's grant)."""

from __future__ import annotations

from typing import Any

from flask import request

FIELD = "confirm"  # the tick: its value names the action it confirms
STEP = "confirming"  # sent by the confirmation step itself: the tick left empty there is said on it


def confirmation(action: str) -> dict[str, Any] | None:
    """None when this POST confirms ``action``; else the confirmation step the page shows (the template's
    ``asked``): ``{"action": action, "missing": True}`` when the step was pressed without its tick."""
    if request.form.get(FIELD) == action:
        return None
    return {"action": action, "missing": request.form.get(STEP) == action}


def status(asked: dict[str, Any]) -> int:
    """The page's status with the step shown: 200 for the first press, 400 for the step sent unticked."""
    return 400 if asked.get("missing") else 200
