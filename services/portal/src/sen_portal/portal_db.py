"""The portal's own database (MongoDB), asked through one door: :func:`attempt`, so that a page asks it once when it
does not answer.

A page reads and writes it in several places: the sign-out check before the page (``web/signouts.py``), an OIDC
session's tokens before each back-end call (``web/tokens.py``), what the session keeps (``web/kept.py``), the
consults sent and the answers seen (``web/sent.py``, ``web/seen.py``), the dashboard's figures and its downloads
(``web/dashboard.py``, ``api/reports.py``). Out of reach, each of those used to wait out its own timeout: an OIDC
session's page waited the sign-out check's 0.5 s and then the tokens' 5 s before its "Service unavailable", a
dashboard's the check's and then the client's server selection, a sign-out each of its writes.

Now the first use in a request that finds the database out of reach (an error ``sen_shared.mongo.unavailable``
calls an outage) marks the request, and every later use in it fails at once with :class:`OutOfReach`, an outage
error like pymongo's (a ``ConnectionFailure``), so each caller answers as it did (its fallback, or its 503 and
message) without waiting again. The mark is the request's (its WSGI environ, which the page's side requests in
other threads share: ``copy_current_request_context``): the next request asks the database again, so a recovery
is seen at once. Outside a request (the worker) nothing is remembered.

The uses whose answer without the database costs nothing (the sign-out check serves the page, a consult sent or
an answer seen is not recorded or read) also skip it for :data:`BACKOFF_SECONDS` after a failure in this process
(``lately=True``), as the sign-out check did before, so an outage costs those pages no wait. The session's tokens,
what it keeps and the dashboard ask again at the next request (their answer without it is an error page, or a
page missing what the session kept). The session's tokens, read before a page's back-end calls with a long bound
(5 s: a page must not fail on a slow moment), are asked first with a ping of :data:`PROBE_SECONDS` in those
seconds (``probe=True``): an OIDC session's page in an outage waits that, not the read's bound, and a recovery
is still seen at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import pymongo
from flask import has_request_context, request
from pymongo.errors import ConnectionFailure, PyMongoError
from sen_shared.mongo import unavailable
from sen_shared.runtime import current

BACKOFF_SECONDS = 60.0
PROBE_SECONDS = 0.5  # a ping answers in milliseconds; as the sign-out check's read (signouts.READ_SECONDS)
_MARK = "sen_portal.database_out_of_reach"  # the request's WSGI environ: the error that said so
_unreachable_until = 0.0  # monotonic: the ``lately`` uses skip the database until then


class OutOfReach(ConnectionFailure):
    """The portal's database did not answer earlier in this request (or, for a ``lately`` use, in this process
    less than :data:`BACKOFF_SECONDS` ago): it is not asked again."""


def database() -> Any:
    """The portal's database (pymongo's ``Database``: connects on its first use)."""
    return current().db


def reachable(*, lately: bool = False) -> bool:
    """Whether the portal's database may be asked: not when it did not answer earlier in this request, nor, with
    ``lately``, when it did not answer in this process less than :data:`BACKOFF_SECONDS` ago."""
    if has_request_context() and _MARK in request.environ:
        return False
    return not lately or time.monotonic() >= _unreachable_until


def out_of_reach() -> None:
    """The portal's database did not answer: not asked again in this request, nor by a ``lately`` use in this
    process for :data:`BACKOFF_SECONDS`."""
    global _unreachable_until
    _unreachable_until = time.monotonic() + BACKOFF_SECONDS
    if has_request_context():
        request.environ[_MARK] = True


@contextmanager
def attempt(seconds: float | None = None, source: Callable[[], Any] = database, *, lately: bool = False,
            probe: bool = False) -> Iterator[Any]:
    """The portal's database (``source()``), for one use of it bounded by ``seconds`` (``pymongo.timeout``, which
    bounds the server's selection too; None: the client's own bounds). Not asked when :func:`reachable` says no:
    :class:`OutOfReach` at once. With ``probe``, while it did not answer in this process less than
    :data:`BACKOFF_SECONDS` ago, a ping of at most :data:`PROBE_SECONDS` first. An outage error
    (``sen_shared.mongo.unavailable``) marks it out of reach (:func:`out_of_reach`); every error goes on to the
    caller, who answers it as before."""
    if not reachable(lately=lately):
        raise OutOfReach("the portal's database did not answer just now: not asked again")
    try:
        db = source()
        if probe and not reachable(lately=True):
            with pymongo.timeout(PROBE_SECONDS):
                db.command("ping")
        with nullcontext() if seconds is None else pymongo.timeout(seconds):
            yield db
    except PyMongoError as err:
        if unavailable(err):
            out_of_reach()
        raise
