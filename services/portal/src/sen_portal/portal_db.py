"""The portal's own database (MongoDB), asked through one door: :func:`attempt`, so that a page asks it at most
once when it does not answer, and not at all while it is known out of reach.

A page reads and writes it in several places: the sign-out check before the page (``web/signouts.py``), an OIDC
session's tokens before each back-end call (``web/tokens.py``), what the session keeps (``web/kept.py``), the
consults sent and the answers seen (``web/sent.py``, ``web/seen.py``), the dashboard's figures and its downloads
(``web/dashboard.py``, ``api/reports.py``). Out of reach, each of those used to wait out its own timeout: an OIDC
session's page waited the sign-out check's 0.5 s and then the tokens' 5 s before its "Service unavailable", a
dashboard's the check's and then the client's server selection, a sign-out each of its writes.

One rule for every use, read or write:

- **known out of reach**: pymongo's client watches its servers in background threads (its monitor, every
  :data:`HEARTBEAT_MS`: ``heartbeatFrequencyMS``, set on the portal's ``MONGO_URL`` by ``config.PortalSettings``)
  and keeps what it found in its topology description (``MongoClient.topology_description``, public, no I/O).
  When every server's last check failed (their descriptions carry the error: :func:`known_out_of_reach`), a use
  fails at once with :class:`OutOfReach`, an outage error like pymongo's (a ``ConnectionFailure``), so each caller
  answers as it did (its fallback, or its 503 and message) without waiting. The monitor keeps checking: the
  database back, the next use after its check (within :data:`HEARTBEAT_MS`) asks it again. A client that has not
  checked yet (a new process) asks;
- **once a request**: the first use in a request that finds the database out of reach (an error
  ``sen_shared.mongo.unavailable`` calls an outage: a failed server selection, a refused connection, FerretDB's
  PostgreSQL away, a timeout) marks the request, and every later use in it fails at once with
  :class:`OutOfReach`. This covers what the monitor does not see (FerretDB answering its ``hello`` while the
  PostgreSQL under it is away, a command that timed out). The mark is the request's (its WSGI environ, which the
  page's side requests in other threads share: ``copy_current_request_context``): the next request asks again.
  Outside a request (the worker) only pymongo's knowledge counts.

Nothing of this is the portal's own state: what is known is the client's, one per database address and process
(``sen_shared.mongo.client``), so an app on another database (a test's) is not told about this one's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import pymongo
from flask import has_request_context, request
from pymongo.errors import ConnectionFailure, PyMongoError
from sen_shared.mongo import unavailable
from sen_shared.runtime import current

HEARTBEAT_MS = 1000  # pymongo's monitor checks each server this often (its default: 10 s; its floor: 0.5 s)
_MARK = "sen_portal.database_out_of_reach"  # the request's WSGI environ: the error that said so


class OutOfReach(ConnectionFailure):
    """The portal's database is known out of reach (pymongo's monitor found every server not answering), or did
    not answer earlier in this request: it is not asked."""


def database() -> Any:
    """The portal's database (pymongo's ``Database``: connects on its first use)."""
    return current().db


def known_out_of_reach(db: Any) -> bool:
    """Whether pymongo's client of ``db`` knows its database out of reach now: no server it may use, and every
    server's last check failed (a description with an error). No I/O, no wait: what its monitor found. A client
    not checked yet, or anything but a pymongo ``Database`` (a test's stand-in), is not known out of reach."""
    topology = getattr(getattr(db, "client", None), "topology_description", None)
    if topology is None or not hasattr(topology, "server_descriptions"):
        return False
    servers = topology.server_descriptions().values()
    return (not topology.has_readable_server(pymongo.ReadPreference.NEAREST) and bool(servers)
            and all(server.error is not None for server in servers))


def out_of_reach() -> None:
    """The portal's database did not answer: not asked again in this request."""
    if has_request_context():
        request.environ[_MARK] = True


@contextmanager
def attempt(seconds: float | None = None, source: Callable[[], Any] = database) -> Iterator[Any]:
    """The portal's database (``source()``), for one use of it bounded by ``seconds`` (``pymongo.timeout``, which
    bounds the server's selection too; None: the client's own bounds). Not asked when it did not answer earlier in
    this request, nor while pymongo knows it out of reach: :class:`OutOfReach` at once. An outage error
    (``sen_shared.mongo.unavailable``) marks the request (:func:`out_of_reach`); every error goes on to the
    caller, who answers it as before."""
    if has_request_context() and _MARK in request.environ:
        raise OutOfReach("the portal's database did not answer just now: not asked again")
    db = source()
    if known_out_of_reach(db):  # pymongo's knowledge, not this request's: the request is not marked
        raise OutOfReach("the portal's database is out of reach (its client's monitor found no server)")
    try:
        with nullcontext() if seconds is None else pymongo.timeout(seconds):
            yield db
    except PyMongoError as err:
        if unavailable(err):
            out_of_reach()
        raise
