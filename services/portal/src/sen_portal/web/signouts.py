"""Signing out ends the session everywhere, not only in the browser that signed out.

The portal's session is Flask's signed cookie: nothing of it is kept on the server, so "Đăng xuất"
only told the browser to forget the cookie. A copy taken before (a shared clinic computer's browser
profile, a cookie stolen by malware or read off a proxy's log) still opened every page afterwards,
until the idle expiry (``SEN_PORTAL_IDLE_MINUTES``) or the sign-in's end (``SEN_PORTAL_SESSION_MINUTES``)
(security review, session 25; OWASP ASVS 3.3.1). Each sign-in now carries a random session id
(``sid``, :func:`new_session_id`); signing out inserts it into ``signed_out`` (a claim: the insert under
its ``_id`` is the whole record, a second sign-out of the same session changes nothing), and every page
request of a session with a ``sid`` asks whether it was signed out (:func:`_refuse_signed_out`, one read
by ``_id``), which clears the session: the page then asks to sign in as for any session that ended.

A session seen not signed out is not asked again for :data:`FRESH_SECONDS` in this process (a
status box polled every 2 s costs one read in five); the worker that signed it out knows at once,
the others within those seconds. The portal's database out of reach (no answer within
:data:`READ_SECONDS`): the page is served (logged), as the pages that read no database were
before, and the rest of the request does not ask it again; while pymongo's monitor knows it out of reach the
check does not ask it at all (``sen_portal.portal_db``, every use of the database), so an outage costs a page
no wait. A record is kept as long as a session could live (``until``) and deleted by a
sign-out after that (:func:`sweep`, at most once a minute per process). A session made before
this had no ``sid``: it ends by its expiry, as before.
"""

from __future__ import annotations

import logging
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from flask import current_app, request, session
from pymongo.errors import DuplicateKeyError, PyMongoError

from .. import caches, portal_db
from . import ASSET_ENDPOINTS, bp

log = logging.getLogger("sen.portal.signouts")
SIGNED_OUT = "signed_out"  # the portal database's collection, keyed by the session id
FRESH_SECONDS = 5.0
READ_SECONDS = 0.5  # a read by _id answers in milliseconds; pymongo.timeout bounds the server's selection too
WRITE_SECONDS = 2.0
SWEEP_SECONDS = 60.0
_KEPT = 4096  # sessions remembered per process (either answer)

_signed_out: set[str] = caches.kept(set())
_seen_live: dict[str, float] = caches.kept({})  # session id -> when it was last seen not signed out
_swept: dict[str, float] = caches.kept({})  # collection -> when this process last swept it


def new_session_id() -> str:
    """A new sign-in's id: 128 random bits."""
    return secrets.token_urlsafe(16)


def sign_out(sid: str | None, signed_in_at: float | None) -> None:
    """Record that the session ``sid`` signed out; no copy of its cookie opens a page again."""
    if not sid:
        return
    _signed_out.add(sid)
    _seen_live.pop(sid, None)
    lifetime = current_app.config["WTF_CSRF_TIME_LIMIT"]  # SEN_PORTAL_SESSION_MINUTES, in seconds
    until = datetime.fromtimestamp((signed_in_at or time.time()) + lifetime, UTC)
    try:
        with portal_db.attempt(WRITE_SECONDS) as db:
            db[SIGNED_OUT].insert_one({"_id": sid, "at": datetime.now(UTC), "until": until})
    except DuplicateKeyError:
        pass  # signed out already (a second tab's sign-out)
    except portal_db.OutOfReach:
        log.warning("a sign-out was not recorded: the database was out of reach just now")
        return
    except PyMongoError as err:  # this process refuses the session still (above)
        log.warning("a sign-out was not recorded", extra={"error": type(err).__name__})
        return
    sweep(db)


def was_signed_out(sid: str) -> bool:
    """Whether the session ``sid`` signed out (this process's answer if fresh, else the database's)."""
    if sid in _signed_out:
        return True
    now = time.monotonic()
    seen = _seen_live.get(sid)
    if seen is not None and now - seen < FRESH_SECONDS:
        return False
    try:
        with portal_db.attempt(READ_SECONDS) as db:
            found = db[SIGNED_OUT].find_one({"_id": sid}, {"_id": 1}) is not None
    except portal_db.OutOfReach:
        return False  # known out of reach: not asked, nothing new to log
    except PyMongoError as err:
        log.warning("whether a session signed out could not be read", extra={"error": type(err).__name__})
        return False
    if len(_signed_out) >= _KEPT:
        _signed_out.clear()
    if len(_seen_live) >= _KEPT:
        _seen_live.clear()
    if found:
        _signed_out.add(sid)
    else:
        _seen_live[sid] = now
    return found


@bp.before_request
def _refuse_signed_out() -> Any:
    """A page request with the cookie of a session that signed out: the session is cleared (the
    language kept), so the page asks to sign in again. Not for the assets, whose answers read no session
    (no ``Vary: Cookie`` on them)."""
    if request.endpoint in ASSET_ENDPOINTS:
        return None
    sid = session.get("sid")
    if sid and session.get("user") and was_signed_out(sid):
        lang = session.get("lang")
        session.clear()
        if lang:
            session["lang"] = lang
    return None


def sweep(db: Any, collection: str = SIGNED_OUT) -> None:
    """Delete ``collection``'s records whose ``until`` passed (the sign-outs here, the sessions' tokens:
    web/tokens.py), at most once every :data:`SWEEP_SECONDS` per process and collection."""
    now = time.monotonic()
    if collection in _swept and now - _swept[collection] < SWEEP_SECONDS:
        return
    _swept[collection] = now
    try:
        with portal_db.attempt(WRITE_SECONDS, lambda: db):
            db[collection].delete_many({"until": {"$lt": datetime.now(UTC)}})
    except PyMongoError as err:
        log.warning("ended records were not swept", extra={"collection": collection, "error": type(err).__name__})
