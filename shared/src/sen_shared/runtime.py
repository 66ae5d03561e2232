"""The composition root's product: what one process of a service is wired with.

``create_app`` (web) and ``worker.main`` (worker) build a :class:`Runtime` from
settings once; the web app keeps it in its Flask extensions (so several apps can
live in one test process) and the process keeps the last one installed for code
outside a request. Handlers reach their dependencies through :func:`current`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymongo.database import Database

from . import mongo
from .config import Settings


@dataclass
class Runtime:
    settings: Settings
    indexes: Sequence[mongo.Index] = ()
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def db(self) -> Database:
        return database_of(self.settings)()


def database_of(settings: Settings) -> Callable[[], Database]:
    """The database of ``settings``, resolved on each call (a forked worker gets its own client) and bound to
    them when made: what a FHIR server (and the AuditEvent writer thread behind it) is given, so that work
    done outside a request reaches its own app's database. :func:`current` outside a request answers the
    process's last-installed runtime: another app's, where one process holds two (tests)."""
    return lambda: mongo.database(settings.mongo_url, settings.db_name)


_current: Runtime | None = None


def install(rt: Runtime) -> Runtime:
    global _current
    _current = rt
    return rt


EXTENSION = "sen_runtime"


def current() -> Runtime:
    """The runtime of the app serving this request, else the process's (workers, scripts)."""
    from flask import current_app, has_app_context

    if has_app_context():
        rt = current_app.extensions.get(EXTENSION)
        if rt is not None:
            return rt
    if _current is None:
        raise RuntimeError("no runtime installed: build the app with create_app() first")
    return _current
