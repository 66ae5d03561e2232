"""Run-once jobs: a backfill that every worker replica starts, run by one of them, once for good.

A job (typically the backfill of documents stored before a field existed) is started by every
worker at every start, but must run once: it may read a whole collection. :func:`run_once` keeps
each job's runs as a chain of claims (``sen_shared.claims``) in ``backfill_runs`` under the
job's name (``<name>/1``, ``<name>/2``, ...):

- the worker whose insert of the next ``running`` link wins runs the job; the others skip it
  (**single writer by construction**: nothing is ever updated, every step is an insert);
- a ``done`` link ends the chain for good: a later start does not run the job again;
- a ``failed`` link (the job raised, or answered a truthy ``failed`` count) lets the next start
  run it again;
- a ``running`` link older than ``stale`` is a run whose worker died: the next worker to start
  takes it over with the next link. A run that merely outlived ``stale`` may then overlap the
  one that took it over, so a job must be idempotent and safe to run twice at once (each of its
  writes a claim by insert, or with a single writer of its own).

A new job, or a new version of one that must run again, gets a new name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from pymongo.database import Database

from .claims import ClaimTaken, advance, chain_indexes, latest
from .fhir.store import is_stale

log = logging.getLogger("sen.run_once")

RUNS = "backfill_runs"
STALE = timedelta(minutes=15)  # a running link older than this: its worker died, the next one takes over
INDEXES = chain_indexes(RUNS)


def run_once(db: Database, name: str, job: Callable[[], Mapping[str, Any]], *,
             stale: timedelta = STALE) -> dict[str, Any] | None:
    """Run ``job`` unless its chain ``name`` is done or another worker is at it (see the module's
    note); the job's result (kept in its closing link), or None when this worker did not run it.
    An exception of the job closes the run as ``failed`` (the next start runs it again) and is raised."""
    coll = db[RUNS]
    last = latest(coll, name)
    if last is not None and (last.get("state") == "done"
                             or last.get("state") == "running" and not is_stale(last, stale)):
        return None
    try:
        mine = advance(coll, name, last, {"state": "running"})
    except ClaimTaken:
        return None  # another worker claimed the run
    try:
        result = dict(job())
    except Exception as err:
        _close(coll, name, mine, {"state": "failed", "error": type(err).__name__})
        raise
    _close(coll, name, mine, {"state": "failed" if result.get("failed") else "done", "result": result})
    return result


def _close(coll: Any, name: str, mine: Mapping[str, Any], doc: Mapping[str, Any]) -> None:
    try:
        advance(coll, name, mine, doc)
    except ClaimTaken:
        # taken over meanwhile (this run outlived ``stale``): the run that took over ends the chain
        log.warning("run taken over before it ended", extra={"job": name})


__all__ = ["INDEXES", "RUNS", "STALE", "run_once"]
