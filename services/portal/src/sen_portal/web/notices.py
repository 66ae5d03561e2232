"""A step's confirmation ("the video visit is booked", "the refund is recorded") is said once, on the page
the step leads to: Post/Redirect/Get with Flask's message flashing, as Flask documents it. The POST that did
the step flashes the step's name for the page it redirects to (``step_done``); that page's GET takes it
out of the session and shows the confirmation (``steps_done``). A reload, Back and Forward, a bookmark
or a shared link then show the page as it is, without saying again that something was done (the step
was once a flag in the address, ``?booked=1``, which said it at every load).

The words stay in the page's template, which may read the page's own data (the visit's time, whether
BHYT pays it all), and keep their ``role="status"``. A step is flashed for one page (its path, without
query or anchor): a confirmation that page never took (the redirect not followed) is not said on
another page, and the next page that reads its own steps drops it, as Flask drops every flashed message
a page reads. A step may carry a value (``visit=moved``, the doctor a consult was given to); nothing
of it is in an address. The flashed messages ride in the signed session cookie, which a poll does not
send again within a minute of its signing (``SessionInterface``), so a poll answered meanwhile cannot put
back a message the page took.

Switching the language right after a step (the nurse sees "Đã đặt lịch", presses English) shows the same
page again: it says the step once more, in the new language. The page that said steps carries them in its
language form, signed with the app's key and naming the page (``said``, :func:`said_token`), and the switch
flashes them again for that page when it goes back to it (:func:`say_again`). A reload, Back or a link
still say nothing: only the page that said them can ask, and only for itself."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from flask import current_app, flash, g, get_flashed_messages, redirect, request
from itsdangerous import BadData, URLSafeSerializer
from werkzeug.wrappers import Response

from . import bp, is_htmx

PREFIX = "done:"  # the flashed category: "done:<the page's path>"


def step_done(url: str, step: str, value: str = "1") -> Response:
    """The redirect to ``url`` after a step, the page there saying once that ``step`` is done."""
    flash_step(url, step, value)
    return redirect(url)


def flash_step(url: str, step: str, value: str = "1") -> None:
    """Flash ``step`` (with ``value``) for the page at ``url``: for a redirect made otherwise (htmx's
    ``HX-Redirect``)."""
    flash(f"{step}={value}", PREFIX + unquote(urlsplit(url).path))


def steps_done() -> dict[str, str]:
    """The steps flashed for this page, by name (their values), said by this request only. None for htmx's
    requests (a poll refreshing part of the page, ``hx-select``): they leave the message to the page."""
    if is_htmx():
        return {}
    here = PREFIX + request.script_root + request.path
    steps = dict(m.partition("=")[::2] for m in get_flashed_messages(category_filter=[here]))
    if steps:
        g.steps_said = steps
    return steps


def _signer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.secret_key, salt="sen-portal-steps-said")


def said_token() -> str | None:
    """The steps this page said (:func:`steps_done`) and its path, signed, for its language form; None when it
    said none."""
    steps = g.get("steps_said")
    return _signer().dumps({"page": request.path, "steps": steps}) if steps else None


def say_again(token: str | None, url: str) -> None:
    """In the language switch going back to ``url``: flash again the steps ``token`` says that page said, when
    it names that page (and is the portal's own); nothing otherwise."""
    if not token:
        return
    try:
        said = _signer().loads(token)
    except BadData:
        return
    if not isinstance(said, dict) or said.get("page") != unquote(urlsplit(url).path):
        return
    for step, value in (said.get("steps") or {}).items():
        flash_step(url, str(step), str(value))


@bp.app_context_processor
def _said() -> dict[str, object]:
    return {"steps_said": said_token}
