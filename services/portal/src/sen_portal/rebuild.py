"""Rebuild the reporting read model: ``python -m sen_portal.rebuild totals|facts|replay FILE...``.

What "rebuilt" means here (the events themselves live only on the bus and in the facts):

- ``totals``: drop every sealed total and sum them again from the facts (then seal what is
  over). Safe while the worker runs: totals are claims of deterministic content. The sums find
  facts by the arrival markers (day, hour, slot), so each fact's markers are claimed first, as the
  handler claims them today: facts stored before the one-minute slots under hours (10-minute
  slots, whose slot markers named no hour, and no hour markers) were otherwise summed by no hour,
  and a rebuild gave every figure of theirs as nothing (:func:`restore_markers`).
- ``facts``: re-derive every fact's dimensions from the event it keeps (envelope and
  ``data``'s top-level scalars), after the extraction table in ``domain.report_facts``
  changed; then ``totals``. This process is the only writer of existing facts (the handler
  only inserts new ones), so run one rebuild at a time. Two dimensions come from another
  fact: a refund of an assignment's money whose event does not say when its transfer came
  (billing's refund events before ``assignedFromReceivedAt``) gets that day from the assignment's
  fact (``report_facts.link_refund``; the handler does it too when the assignment came first), and
  an assignment whose event did not say whose unmatched queue the transfer waited in
  (``assignedFromQueue``, billing's events before it) gets the facility its transfer's own
  arrival fact is under, when not the invoice's (``from_facility``).
- ``replay FILE...``: feed events from JSON-lines files (one CloudEvent a line, e.g. a DLQ or
  broker dump, or an export of another installation) through the same handler: events already
  counted are skipped by their id, the others are counted as arriving now.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pymongo.database import Database
from sen_shared import mongo
from sen_shared.claims import claim_once

from .config import settings_from_env
from .domain.report_facts import ASSIGNMENT, extract, link_refund, refund_link
from .domain.reporting import FACTS, META, TOTALS, record_event, seal, sealed_cache


def restore_markers(db: Database) -> int:
    """Claim the arrival markers of every fact's slot (its day, hour and slot, as the handler's
    ``_arrive`` claims them), and bring older markers of past slots to that shape (the 10-minute
    slots' named no hour); how many were claimed or brought. Idempotent."""
    slots: dict[str, str] = {}
    for fact in db[FACTS].find({}, {"slot": 1, "sday": 1}):
        slot = fact.get("slot")
        if isinstance(slot, str) and len(slot) >= 16:
            slots[slot] = fact.get("sday") or slot[:10]
    done = 0
    for slot, day in sorted(slots.items()):
        hour = slot[:13]
        for key, doc in ((f"day/{day}", {"kind": "day", "day": day, "month": day[:7]}),
                         (f"hour/{hour}", {"kind": "hour", "hour": hour, "day": day}),
                         (f"slot/{slot}", {"kind": "slot", "slot": slot, "hour": hour, "day": day})):
            won, held = claim_once(db[META], key, doc)
            if won:
                done += 1
            elif any(held.get(k) != v for k, v in doc.items()):
                # single writer: this rebuild (the handler claims only the markers of the slot it stores in now,
                # and never changes one; an older marker of a past slot is no claim anyone still makes)
                db[META].replace_one({"_id": key}, {**held, **doc})
                done += 1
    return done


def rebuild_totals(db: Database) -> int:
    restore_markers(db)
    db.drop_collection(TOTALS)
    sealed_cache.clear()  # this process's; other processes hold the same content (or restart them)
    return seal(db)


def rebuild_facts(db: Database) -> int:
    # what other facts need of some: the day an assignment's transfer came (by the assignment's payment
    # id) and whose queue a transfer's arrival is under (by its payment id; None: no facility)
    assignments: dict[str, dict[str, Any]] = {}
    arrivals: dict[str, str | None] = {}
    for fact in db[FACTS].find({"k": "billing.payment.received"}, {"ev": 1}):
        fresh = extract(fact.get("ev") or {})
        if fresh.get(ASSIGNMENT):
            assignments[fresh[ASSIGNMENT]] = {"from_day": fresh.get("from_day")}
        elif fresh.get("outcome") == "unmatched":
            arrivals[str(((fact.get("ev") or {}).get("data") or {}).get("payment") or "")] = fresh.get("facility")
    changed = 0
    for fact in db[FACTS].find({}):
        fresh = {**extract(fact.get("ev") or {}), "slot": fact["slot"], "sday": fact["sday"], "at": fact["at"]}
        if (link := refund_link(fresh)) is not None:
            link_refund(fresh, assignments.get(link))
        data = (fact.get("ev") or {}).get("data") or {}
        if fresh.get(ASSIGNMENT) and "assignedFromQueue" not in data and fresh.get("restates") in arrivals:
            queue = arrivals[fresh["restates"]] or ""
            if queue != fresh.get("facility"):
                fresh["from_facility"] = queue
        if any(fact.get(k) != v for k, v in fresh.items()) or set(fact) - {"_id", *fresh}:
            # single writer: this rebuild (the handler never updates a fact it did not just insert)
            db[FACTS].replace_one({"_id": fact["_id"]}, fresh)
            changed += 1
    rebuild_totals(db)
    return changed


def _events(paths: list[Path]) -> Iterator[dict[str, Any]]:
    for path in paths:
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as err:
                        raise SystemExit(f"{path}:{n}: not a JSON event ({err.msg})") from None


def replay(db: Database, paths: list[Path]) -> tuple[int, int]:
    counted = skipped = 0
    for event in _events(paths):
        if not isinstance(event, dict) or not event.get("id") or not event.get("type"):
            raise SystemExit(f"not a CloudEvent (no id or type): {str(event)[:120]}")
        if record_event(db, event):
            counted += 1
        else:
            skipped += 1
    return counted, skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sen_portal.rebuild", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("totals", help="drop the sealed totals and sum them again from the facts")
    sub.add_parser("facts", help="re-derive the facts' dimensions from their events, then the totals")
    rp = sub.add_parser("replay", help="count the events of JSON-lines files (already counted ones are skipped)")
    rp.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    settings = settings_from_env()
    db = mongo.database(settings.mongo_url, settings.db_name)
    if args.what == "totals":
        print(f"totals dropped; {rebuild_totals(db)} buckets sealed again")
    elif args.what == "facts":
        print(f"{rebuild_facts(db)} facts re-derived; totals rebuilt")
    else:
        counted, skipped = replay(db, args.files)
        print(f"{counted} events counted, {skipped} already counted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
