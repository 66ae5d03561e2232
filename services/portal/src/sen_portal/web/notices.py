"""A step's confirmation ("the video visit is booked", "the refund is recorded") is said once, on the page
the step leads to: Post/Redirect/Get, as Flask's message flashing does it. The POST that did the step
records the step's name for the page it redirects to (``step_done``, :func:`flash_step`), or a sentence of
its own (:func:`flash`: "Recorded 20.000 ₫ cash, 19.000 ₫ still due", for the page its answer leads to);
that page's own load takes them and shows the confirmation (``steps_done``, the templates' ``notices``). A
reload, Back and Forward, a bookmark or a shared link then show the page as it is, without saying again that
something was done (the step was once a flag in the address, ``?booked=1``, which said it at every load).

The words stay in the page's template, which may read the page's own data (the visit's time, whether
BHYT pays it all), and keep their ``role="status"``. A message is for one page (its path, without query or
anchor) and only that page's full load (a GET, not htmx's) takes it, and only its own: a poll, a form's answer
sent in place, a refresh by ``hx-select`` take nothing, and a page opened meanwhile in another tab leaves the
message to the page it is for. One its page never took (the redirect not followed) is dropped after
:data:`KEPT_SECONDS`, and with the sign-in it was made in (it names the session's ``sid``). A step may carry a
value (``visit=moved``, the doctor a consult was given to); nothing of it is in an address.

The messages ride in a signed cookie of their own (:data:`COOKIE`), not in the session's. Flask's flashing
keeps them in the session cookie, which every answer computed from an older copy of it sends back whole: a
request that left before the step's answer and came back after it (the consult page's free-times box, whose
``$find`` then marked the session written; a poll re-signing the session, :class:`~sen_portal.web.SessionInterface`)
replaced the cookie holding the step's message with one without it, and the page after the step said nothing
(ci-local, session 29: "asked" missing after the question to the clinic). Only an answer that adds a message or
takes one sends this cookie, so no other request of the page can drop one, nor put back one a page took. Two
such answers computed at once from the same cookie (two tabs each doing a step in the same instant, or one's page
taking its message while the other's step is answered) still keep the later one's: what a cookie can do.

Switching the language right after a step (the nurse sees "Đã đặt lịch", presses English) shows the same
page again: it says the step once more, in the new language. The page that said steps carries them in its
language form, signed with the app's key and naming the page (``said``, :func:`said_token`), and the switch
flashes them again for that page when it goes back to it (:func:`say_again`). A reload, Back or a link
still say nothing: only the page that said them can ask, and only for itself."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import current_app, g, redirect, request, session
from itsdangerous import BadData, URLSafeSerializer, URLSafeTimedSerializer
from werkzeug.wrappers import Response

from . import bp, is_htmx

COOKIE = "sen_portal_notices"
STEP = "done"  # a step's category: its message "<step>=<value>"
KEPT_SECONDS = 300  # a message its page did not take within this is not said (a redirect not followed)
MOST = 16  # messages kept at once (the oldest go): a cookie stays small


def _cookie_signer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key, salt="sen-portal-notices")


def encoded(sid: str, notices: list[list[Any]]) -> str:
    """The cookie's value: ``notices`` (``[page, category, message, at]`` each) of the session ``sid``, signed."""
    return _cookie_signer().dumps({"sid": sid, "n": notices})


def decoded(value: str | None, sid: str, now: float | None = None) -> list[list[Any]]:
    """The messages a cookie's ``value`` holds for the session ``sid`` and not older than :data:`KEPT_SECONDS`;
    none for another session's, a forged or an unreadable one."""
    if not value:
        return []
    try:
        data = _cookie_signer().loads(value, max_age=KEPT_SECONDS)
    except BadData:
        return []
    if not isinstance(data, dict) or data.get("sid") != sid or not isinstance(data.get("n"), list):
        return []
    now = time.time() if now is None else now
    return [n for n in data["n"] if isinstance(n, list) and len(n) == 4 and all(isinstance(x, str) for x in n[:3])
            and isinstance(n[3], int | float) and 0 <= now - n[3] < KEPT_SECONDS]


def _sid() -> str:
    return str(session.get("sid") or "")


def _kept() -> list[list[Any]]:
    """This browser's messages, read once a request (and changed by it: sent back in :func:`_send`)."""
    if "notices" not in g:
        raw = request.cookies.get(COOKIE)
        g.notices = decoded(raw, _sid())
        g.notices_changed = bool(raw) and not g.notices  # ended, another sign-in's: the cookie goes
    return g.notices


def page_of(url: str) -> str:
    """The page a message for ``url`` is said on: its path, without query or anchor."""
    return unquote(urlsplit(url).path)


def say(url: str, category: str, message: str) -> None:
    """``message`` (of ``category``) to be said once by the page at ``url``: once even when the same form's
    answer reaches the browser twice (a lost answer's cookie kept, then the form sent again)."""
    kept = _kept()
    page = page_of(url)
    if any(n[:3] == [page, category, str(message)] for n in kept):
        return
    kept.append([page, category, str(message), time.time()])
    del kept[:-MOST]
    g.notices_changed = True


def flash(message: str, category: str) -> None:
    """``message`` said once by the page this request's answer leads to (its redirect, ``Location`` or htmx's
    ``HX-Redirect``; this page when it has none), as Flask's ``flash``."""
    g.setdefault("notices_unsent", []).append((category, str(message)))


def step_done(url: str, step: str, value: str = "1") -> Response:
    """The redirect to ``url`` after a step, the page there saying once that ``step`` is done."""
    flash_step(url, step, value)
    return redirect(url)


def flash_step(url: str, step: str, value: str = "1") -> None:
    """Flash ``step`` (with ``value``) for the page at ``url``: for a redirect made otherwise (htmx's
    ``HX-Redirect``)."""
    say(url, STEP, f"{step}={value}")


def taken() -> list[tuple[str, str]]:
    """The messages for this page, ``(category, message)`` each, taken by this request (the same list however
    often asked). None but to a page's full load (a GET, not htmx's: a poll, a part of the page, a form's answer in
    place leave them to it), and only this page's: those for other pages stay."""
    if "notices_taken" in g:
        return g.notices_taken
    mine: list[tuple[str, str]] = []
    if request.method == "GET" and not is_htmx() and request.cookies.get(COOKIE):
        here = request.script_root + request.path
        kept = _kept()
        mine = [(n[1], n[2]) for n in kept if n[0] == here]
        if mine:
            kept[:] = [n for n in kept if n[0] != here]
            g.notices_changed = True
    g.notices_taken = mine
    return mine


def said(category: str) -> list[str]:
    """The messages of ``category`` this page takes (:func:`taken`): what its template says."""
    return [message for cat, message in taken() if cat == category]


def steps_done() -> dict[str, str]:
    """The steps flashed for this page, by name (their values), said by this request only. None for htmx's
    requests (a poll refreshing part of the page, ``hx-select``): they leave the message to the page."""
    steps = dict(m.partition("=")[::2] for m in said(STEP))
    if steps:
        g.steps_said = steps
    return steps


@bp.after_app_request
def _send(response: Response) -> Response:
    """The messages this request added or took, in the answer's cookie: only then (see the module's docstring)."""
    unsent = g.pop("notices_unsent", None)
    if unsent:
        to = response.headers.get("HX-Redirect") or (response.location if 300 <= response.status_code < 400 else None)
        for category, message in unsent:
            say(to or request.script_root + request.path, category, message)
    if not g.get("notices_changed"):
        return response
    g.notices_changed = False
    secure, samesite = current_app.config["SESSION_COOKIE_SECURE"], current_app.config["SESSION_COOKIE_SAMESITE"]
    if g.notices:
        response.set_cookie(COOKIE, encoded(_sid(), g.notices), max_age=KEPT_SECONDS, path="/", httponly=True,
                            secure=secure, samesite=samesite)
    else:
        response.delete_cookie(COOKIE, path="/", httponly=True, secure=secure, samesite=samesite)
    return response


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
        said_before = _signer().loads(token)
    except BadData:
        return
    if not isinstance(said_before, dict) or said_before.get("page") != page_of(url):
        return
    for step, value in (said_before.get("steps") or {}).items():
        flash_step(url, str(step), str(value))


@bp.app_context_processor
def _said() -> dict[str, object]:
    return {"steps_said": said_token, "notices": said}
