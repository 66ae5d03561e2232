"""The composition root's product: what one process of a service is wired with.

``create_app`` (web) and ``worker.main`` (worker) build a :class:`Runtime` from
settings once and install it here; handlers reach their dependencies through
:func:`current` instead of importing globals. Tests install their own.
"""

from __future__ import annotations

from collections.abc import Sequence
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
        # resolved on each use so a forked worker gets its own client
        return mongo.database(self.settings.mongo_url, self.settings.db_name)


_current: Runtime | None = None


def install(rt: Runtime) -> Runtime:
    global _current
    _current = rt
    return rt


def current() -> Runtime:
    if _current is None:
        raise RuntimeError("no runtime installed: build the app with create_app() first")
    return _current
