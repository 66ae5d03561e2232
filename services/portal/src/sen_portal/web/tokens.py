"""The signed-in user's OIDC tokens, kept on the server: the session cookie names the session, never holds a token.

The portal's session is Flask's signed cookie, which anyone holding a copy can read (signed, not encrypted). It
used to carry the OIDC access token, so a copied cookie (a shared clinic computer's browser profile, a proxy's
log) gave its holder the bearer token itself, to call teleconsult, billing and the EHR directly until it
expired, even after the user signed out of the portal (security review, session 26). The cookie now carries
what the pages show and nothing secret: the user's name, role and facility, the sign-in's time, its random
session id (``sid``, 128 bits: :func:`signouts.new_session_id`) and ``oidc``, that the session's tokens are
here. The tokens are in the portal's ``session_tokens`` collection, one document per generation, by insert only:

- the sign-in inserts generation 1 (``_id`` ``<sid>/1``: :func:`store`);
- a refresh (the access token expires within :data:`REFRESH_MARGIN`, a refresh token is held) inserts
  generation n+1 with the provider's new tokens (:func:`_refresh`). ``_id`` is the claim: of two workers
  refreshing the same session at once exactly one insert wins; the other takes the winner's tokens. No
  document is ever updated, so no two writers race on one (FerretDB applies an update as a read-modify-write);
- a read takes the newest generation (``sid`` equal, the highest ``n``; index ``sid_n``), kept per process
  for :data:`FRESH_SECONDS` (the sign-out check's bound: ``signouts.FRESH_SECONDS``), so an OIDC session's
  pages cost at most one indexed read per 5 s per worker; a development sign-in's (the demo users, whose
  tokens the portal mints: ``backend.user_token``) costs nothing;
- signing out deletes the session's generations (after ``signouts.sign_out`` recorded it, so a refresh
  racing the sign-out is refused and its record deleted by that refresh);
- the database out of reach: a page says so (:func:`_tokens_out_of_reach`) without asking it again in the request,
  and while pymongo's monitor knows it out of reach without asking it at all (``sen_portal.portal_db``: every use
  of the database);
- a record lives as long as its sign-in may (``until``: ``SEN_PORTAL_SESSION_MINUTES`` after it), which the
  read checks; a sign-in sweeps ended records at most once a minute per process. Not a TTL index: the
  handbook keeps expiry in queries and a sweeper, and FerretDB 1.24 refuses ``expireAfterSeconds``
  ("not implemented yet").

No tokens (swept, deleted by a sign-out, refused by the provider once expired): :class:`SessionEnded`, which
the pages answer as a session that ended: sign in again.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import pymongo
from flask import current_app, redirect, render_template, request, session, url_for
from flask_babel import gettext
from pymongo.errors import DuplicateKeyError, PyMongoError
from sen_shared import mongo

from .. import caches, portal_db
from . import bp, is_htmx, signed_out_page, signouts, typed_text

log = logging.getLogger("sen.portal.tokens")
TOKENS = "session_tokens"  # the portal database's collection: a session's tokens, a document per generation
INDEXES = [mongo.Index(TOKENS, (("sid", 1), ("n", 1)), name="sid_n"),
           mongo.Index(TOKENS, (("until", 1),), name="until_1")]
REFRESH_MARGIN = 60.0  # an access token expiring sooner is refreshed first (a back-end call takes seconds)
FRESH_SECONDS = signouts.FRESH_SECONDS
DB_SECONDS = 5.0  # as the client's server selection (sen_shared.mongo): a page's read by an index, a sign-in's insert
_KEPT = 4096  # sessions remembered per process

_kept: dict[str, tuple[dict[str, Any], float]] = caches.kept({})  # sid -> (newest generation read, when: monotonic)


class SessionEnded(Exception):
    """The session's tokens are gone or refused: the user signs in again."""


def store(sid: str, token: dict[str, Any], signed_in_at: float) -> None:
    """Keep a sign-in's tokens (Authlib's token: ``access_token``, ``refresh_token`` if any, ``expires_at``) as
    the session's generation 1. A database out of reach raises (PyMongoError): the sign-in did not happen."""
    lifetime = current_app.config["WTF_CSRF_TIME_LIMIT"]  # SEN_PORTAL_SESSION_MINUTES, in seconds
    record = _record(sid, 1, token, None, datetime.fromtimestamp(signed_in_at + lifetime, UTC))
    with portal_db.attempt(DB_SECONDS) as db:
        db[TOKENS].insert_one(record)
    _keep(sid, record)
    signouts.sweep(db, TOKENS)


class TokensOutOfReach(Exception):
    """The session's tokens could not be read (nor refreshed): the portal's database does not answer."""


def access_token(sid: str) -> str:
    """The session's access token for a back-end call: the newest generation's, refreshed first when it expires
    within :data:`REFRESH_MARGIN` and a refresh token is held. The database out of reach and no token kept in
    this process: :class:`TokensOutOfReach` (the page says so: :func:`_tokens_out_of_reach`)."""
    try:
        record = _newest(sid)
        expires = record.get("expires_at")
        if expires is not None and _epoch(expires) - time.time() < REFRESH_MARGIN and record.get("refresh_token"):
            record = _refresh(sid, record)
    except PyMongoError as err:
        if not mongo.unavailable(err):
            raise
        raise TokensOutOfReach from err
    return str(record["access_token"])


def forget(sid: str | None) -> None:
    """Signing out: the session's tokens are deleted (``signouts.sign_out`` has refused its cookie already)."""
    if not sid:
        return
    _kept.pop(sid, None)
    try:
        with portal_db.attempt(DB_SECONDS) as db:
            db[TOKENS].delete_many({"sid": sid})
    except PyMongoError as err:  # the sign-out's record refuses the cookie; the sweep deletes them at `until`
        log.warning("a signed-out session's tokens were not deleted", extra={"error": type(err).__name__})


def _record(sid: str, n: int, token: dict[str, Any], previous: dict[str, Any] | None,
            until: datetime) -> dict[str, Any]:
    expires_at = token.get("expires_at")
    if not expires_at and token.get("expires_in"):
        expires_at = time.time() + float(token["expires_in"])
    refresh_token = token.get("refresh_token") or (previous or {}).get("refresh_token")
    record = {"_id": f"{sid}/{n}", "sid": sid, "n": n, "access_token": str(token["access_token"]),
              "expires_at": datetime.fromtimestamp(float(expires_at), UTC) if expires_at else None,
              "at": datetime.now(UTC), "until": until}
    if refresh_token:
        record["refresh_token"] = str(refresh_token)
    return record


def _epoch(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()  # pymongo reads naive UTC


def _expired(record: dict[str, Any]) -> bool:
    expires = record.get("expires_at")
    return expires is not None and _epoch(expires) <= time.time()


def _newest(sid: str, *, fresh: bool = False) -> dict[str, Any]:
    """The session's newest generation: this process's when read within :data:`FRESH_SECONDS`, else the
    database's. None there: :class:`SessionEnded`. The database out of reach: the generation kept, while its
    access token is valid (logged), as the sign-out check serves pages then; else the error."""
    now = time.monotonic()
    kept = _kept.get(sid)
    if kept is not None and not fresh and now - kept[1] < FRESH_SECONDS:
        return kept[0]
    try:
        with portal_db.attempt(DB_SECONDS) as db:
            record = db[TOKENS].find_one(
                {"sid": sid, "until": {"$gt": datetime.now(UTC)}}, sort=[("n", pymongo.DESCENDING)])
    except PyMongoError as err:
        if kept is not None and not _expired(kept[0]):
            log.warning("a session's tokens could not be read; the ones kept are used",
                        extra={"error": type(err).__name__})
            return kept[0]
        raise
    if record is None:
        _kept.pop(sid, None)
        raise SessionEnded
    _keep(sid, record, now)
    return record


def _refresh(sid: str, record: dict[str, Any]) -> dict[str, Any]:
    """Generation n+1 from the provider (the refresh token grant, Authlib), inserted under ``<sid>/<n+1>``:
    the insert that wins is the session's; a worker that lost (another refreshed meanwhile) or whose refresh the
    provider refused (a refresh token another worker used, or ended) takes the newest generation there is."""
    from authlib.integrations.base_client import OAuthError

    oauth = current_app.extensions.get("sen_oauth")
    try:
        if oauth is None:
            raise OAuthError(error="not_configured")
        token = oauth.sen.fetch_access_token(grant_type="refresh_token", refresh_token=record["refresh_token"])
        if not token.get("access_token"):
            raise OAuthError(error="no_access_token")
    except OAuthError as err:
        log.warning("a session's refresh was refused: %s", err.error)
        return _after_refused(sid, record)
    except OSError as err:  # the provider out of reach: the token in hand, while it lasts
        log.warning("a session's refresh failed: %s", type(err).__name__)
        return _after_refused(sid, record)
    new = _record(sid, int(record["n"]) + 1, token, record, record["until"])
    try:
        with portal_db.attempt(DB_SECONDS) as db:
            db[TOKENS].insert_one(new)
            if db[signouts.SIGNED_OUT].find_one({"_id": sid}, {"_id": 1}) is not None:  # signed out meanwhile
                db[TOKENS].delete_many({"sid": sid})
                raise SessionEnded
    except DuplicateKeyError:  # another worker's refresh won: its tokens are the session's
        return _newest(sid, fresh=True)
    _keep(sid, new)
    return new


def _after_refused(sid: str, record: dict[str, Any]) -> dict[str, Any]:
    newest = _newest(sid, fresh=True)
    if int(newest["n"]) > int(record["n"]):
        return newest
    if _expired(newest):
        raise SessionEnded
    return newest  # still valid for a while: the next request tries again


def _keep(sid: str, record: dict[str, Any], now: float | None = None) -> None:
    if len(_kept) >= _KEPT:
        _kept.clear()
    _kept[sid] = (record, time.monotonic() if now is None else now)


@bp.errorhandler(TokensOutOfReach)
def _tokens_out_of_reach(err: TokensOutOfReach) -> Any:
    """A page whose back-end call needed the session's tokens while the portal's database does not answer: 503
    "Service unavailable" saying so in the user's language (not the dashboard's figures, which the general
    handler's words are about), with Retry-After; a form's typed text shown to copy, an htmx request's in the
    page's problem box (``web._headers``). The session stays: it works again once the database answers."""
    from sen_shared.web import DATABASE_RETRY_AFTER

    log.warning("a session's tokens could not be read: the portal's database does not answer (%s)",
                type(err.__cause__).__name__)
    response = current_app.make_response((render_template(
        "error.html", title=gettext("Service unavailable"),
        message=gettext("Your sign-in cannot be checked right now: the portal's database does not answer, so no "
                        "service was asked and nothing was sent. Try again in a moment."),
        typed=typed_text(request.form) if request.method == "POST" else None), 503))
    response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER)
    return response


@bp.errorhandler(SessionEnded)
def _session_ended(err: SessionEnded) -> Any:
    """A page whose back-end call found the session's tokens gone: the session is cleared (the language kept)
    and the page asks to sign in again, as for any session that ended (a page: the sign-in, back to it; a form
    or htmx's part: the signed-out page, what was typed shown)."""
    lang = session.get("lang")
    session.clear()
    if lang:
        session["lang"] = lang
    if request.method in ("GET", "HEAD") and not is_htmx():
        wanted = request.full_path if request.query_string else request.path
        return redirect(url_for("web.login", next=wanted))
    return signed_out_page(typed_text(request.form) if request.method == "POST" else None)
