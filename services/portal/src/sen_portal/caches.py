"""What a portal process keeps in memory between requests, and one way to forget all of it.

Each module-level cache of what the process learnt (the back-ends' answers and names, the database's
totals and markers, the sessions and tokens it has seen) registers itself here when its module is
imported (:func:`kept`); :func:`forget_all` empties every one, leaving the process as if it had just
started. The tests' portal (tests/support.py ``portal_app``) starts with it, so nothing one test's app
learnt is read by the next, whatever their order. Caches of the installed code and files (the assets,
checked against their mtime; the ICD-10 index; the list of forms) are not registered: a new process
would read them the same.
"""

from __future__ import annotations

from typing import Protocol, TypeVar


class Clearable(Protocol):
    def clear(self) -> None: ...


C = TypeVar("C", bound=Clearable)
_registered: list[Clearable] = []


def kept(cache: C) -> C:
    """``cache`` (a dict, set, or anything with ``clear()``), registered for :func:`forget_all`."""
    _registered.append(cache)
    return cache


def forget_all() -> None:
    """Empty every registered cache. Meant for a process serving nothing yet (an app being built, a test
    starting): a request meanwhile would only find an answer missing and ask for it again."""
    for cache in _registered:
        cache.clear()
