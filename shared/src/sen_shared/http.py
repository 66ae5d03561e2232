"""HTTP calls from one Sen service to another, where a user is waiting for the answer.

One ``urllib3.PoolManager`` per process (kept-alive connections to each service), made on first
use and made again when the process id changes: never at import, and never shared across the
fork of a gunicorn worker. urllib3 rather than httpx: the portal measured about 1.05 ms of its
CPU a call against 1.69 ms (2,000 GETs of a status answer), and every page and every consult
submission makes one or more.

:func:`request` sends one request with ONE total timeout (connecting and waiting for the answer
together), reads the answer whole and returns a :class:`Response`, whatever its status: what a
4xx or 5xx means is the caller's to say. When no answer comes, it raises a
:class:`TransportError` saying which way:

- :class:`TimedOut`: the other side did not answer within the timeout (it may still be working);
- :class:`Unreachable`: no connection (refused, reset, name not resolved, broken answer).

Each caller maps these to its own errors (the portal: a sentence for the user; teleconsult: an
OperationOutcome). One retry only, and only where HTTP allows it (RFC 9110 §9.2.2): a request that
may be sent twice (``GET``/``HEAD``/``OPTIONS``, one carrying an ``Idempotency-Key``, or one the caller
marks ``replayable``, such as a batch of reads) that went out on a kept-alive connection the other side
had just closed (the server's keep-alive timer firing as the request arrived: the connection is reset or
closed with no answer). That is not the other side being down, and it happens at random under load: a
consult submission answered 503 "the EHR cannot be reached" while the EHR was up. Every other retry is
the caller's decision. Nothing is logged: bodies hold patient data.
"""

from __future__ import annotations

import json as jsonlib
import os
import threading
import time
from typing import Any
from urllib.parse import urlencode

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection

KEPT_PER_HOST = 16  # kept-alive connections a service; more at once are opened and closed after use
_lock = threading.Lock()
_pool: tuple[int, urllib3.PoolManager] | None = None
_sent = threading.local()  # did this thread's last request go out on a connection opened before it?
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class TransportError(Exception):
    """No answer came; ``reason`` says what happened, without the request's content."""

    kind = "transport"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TimedOut(TransportError):
    """The other side did not answer within the timeout."""

    kind = "timeout"


class Unreachable(TransportError):
    """No connection to the other side (refused, reset, unknown name, a broken answer)."""

    kind = "unreachable"


class Response:
    """An answer, read whole: ``status_code``, ``headers``, ``content``, ``json()``."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: Any, content: bytes) -> None:
        self.status_code, self.headers, self.content = status_code, headers, content

    def json(self) -> Any:
        return jsonlib.loads(self.content)


class _NotesReuse:
    """Mixed into urllib3's connections: notes per thread whether a request goes out on a socket opened before
    it (a kept-alive one) or on a new one."""

    sock: Any

    def request(self, *args: Any, **kwargs: Any) -> None:
        _sent.reused = self.sock is not None
        super().request(*args, **kwargs)  # type: ignore[misc]


class _Kept(_NotesReuse, HTTPConnection):
    pass


class _KeptTls(_NotesReuse, HTTPSConnection):
    pass


class _Pool(urllib3.HTTPConnectionPool):
    ConnectionCls = _Kept


class _TlsPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _KeptTls


def pool() -> urllib3.PoolManager:
    """This process's pool: made on first use, and again in a child after a fork."""
    global _pool
    pid = os.getpid()
    with _lock:
        if _pool is None or _pool[0] != pid:
            manager = urllib3.PoolManager(maxsize=KEPT_PER_HOST, block=False, retries=False)
            manager.pool_classes_by_scheme = {"http": _Pool, "https": _TlsPool}
            _pool = (pid, manager)
        return _pool[1]


def request(method: str, url: str, *, timeout: float, params: Any = None, json: Any = None,
            body: bytes | None = None, headers: dict[str, str] | None = None,
            replayable: bool | None = None) -> Response:
    """One request; its answer whatever the status, or :class:`TimedOut` / :class:`Unreachable`.

    ``params`` (a dict or a list of pairs, repeated names allowed) is added to the query;
    ``json`` is sent as UTF-8 JSON (set ``Content-Type`` in ``headers``); ``timeout`` in seconds
    bounds connecting and waiting together, a retry included. Redirects are not followed.
    ``replayable``: may the request be sent twice (default: a safe method, or an ``Idempotency-Key``
    header)? Such a request lost with a kept-alive connection the other side closed is sent once more
    on a new connection (the module's docstring).
    """
    if params:
        url += ("&" if "?" in url else "?") + urlencode(params, doseq=True)
    if json is not None:
        body = jsonlib.dumps(json, ensure_ascii=False).encode()
    if replayable is None:
        replayable = method.upper() in SAFE_METHODS or any(k.lower() == "idempotency-key" for k in headers or ())
    deadline = time.monotonic() + timeout
    left = timeout
    while True:
        _sent.reused = False
        try:
            raw = pool().request(method, url, body=body, headers=headers, redirect=False,
                                 timeout=urllib3.Timeout(total=left))
        except urllib3.exceptions.NewConnectionError as err:  # refused, unknown name (a connect-timeout subclass)
            raise Unreachable(_why(err)) from None
        except urllib3.exceptions.TimeoutError:
            raise TimedOut(f"no answer within {timeout:g} s") from None
        except urllib3.exceptions.HTTPError as err:  # reset, closed mid-answer, not HTTP
            retry = replayable and _sent.reused and _dropped(err)
            left = deadline - time.monotonic()
            if retry and left > 0:
                replayable = False  # once
                continue
            raise Unreachable(_why(err)) from None
        return Response(raw.status, raw.headers, raw.data)


def _dropped(err: Exception) -> bool:
    """Was the connection reset or closed by the other side (not an answer that is not HTTP)?"""
    seen: Any = err
    for _ in range(4):
        if seen is None:
            return False
        if isinstance(seen, ConnectionError):  # reset, aborted, broken pipe, closed with no answer
            return True
        inner = next((a for a in getattr(seen, "args", ()) if isinstance(a, BaseException)), None)
        seen = inner if inner is not None else seen.__context__
    return False


def _why(err: Exception) -> str:
    """What went wrong, without the URL (it may carry a query)."""
    cause = err.__context__ if isinstance(err.__context__, OSError) else None
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, urllib3.exceptions.NameResolutionError):
        return "unknown host name"
    if cause is not None and cause.strerror:
        return cause.strerror.lower()
    return type(err).__name__
