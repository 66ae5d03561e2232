"""Consults the portal has just sent, so that no answer another user's pages keep hides them.

The portal keeps each user's back-end answers a few seconds (``backend.AnswerCache``, ``SEN_PORTAL_CACHE_SECONDS``).
A user's own write forgets their answers, but a consult a clinic's nurse sends is news for other users too: her
clinic's other staff (their consult lists) and the hub's doctors (the worklist). A doctor who reloaded the worklist
within those seconds got the list kept from before the consult, and the list then waited for its next refresh, 30 s
on: the consult sent a moment ago was hidden.

Each consult the portal sends (``clinic.consult_new``) is recorded here once teleconsult has answered: the portal
database's ``consults_sent``, inserted under the Task's id (a claim: the form sent again lands on the same consult,
and its record is the first's), with the two parties it is news for (the requesting facility and the hub) and when.
The clinic's list and the worklist (``clinic.teleconsult_page``) take a kept answer only if its fetch began after
the newest record of the user's facility (:func:`newest`): one read by the facility, made only when a kept answer
would be used. The records are needed only as long as an answer may be kept (at most 60 s): each lives
:data:`KEPT_SECONDS` and is swept after (``signouts.sweep``). The database out of reach: nothing is recorded or
read (the answers are kept their seconds, as before), and it is not asked again in the request nor while
pymongo's monitor knows it out of reach (``sen_portal.portal_db``). Another portal process (another host) stamps
its own clock: clocks apart by more than the time a page takes to load could still use an answer a moment older.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from pymongo.errors import DuplicateKeyError, PyMongoError
from sen_shared import mongo

from .. import portal_db
from . import signouts

log = logging.getLogger("sen.portal.sent")
SENT = "consults_sent"  # the portal database's collection: _id <task id>, parties, at (epoch seconds), until
INDEXES = [mongo.Index(SENT, (("parties", 1),), name="parties_1"), mongo.Index(SENT, (("until", 1),), name="until_1")]
KEPT_SECONDS = 300  # longer than an answer is ever kept (SEN_PORTAL_CACHE_SECONDS: at most 60)


def _db():  # type: ignore[no-untyped-def]
    return portal_db.database()


def record(task: str, facility: str | None, hub: str | None) -> None:
    """The consult ``task`` was just sent by ``facility`` to ``hub``: their users' kept lists are older than it."""
    parties = [p for p in (facility, hub) if p]
    if not parties:
        return
    now = time.time()
    doc = {"_id": task, "parties": parties, "at": now,
           "until": datetime.fromtimestamp(now, UTC) + timedelta(seconds=KEPT_SECONDS)}
    try:
        with portal_db.attempt(signouts.WRITE_SECONDS, _db) as db:
            db[SENT].insert_one(doc)
    except (DuplicateKeyError, portal_db.OutOfReach):
        return  # the form sent again (the consult's record is the first's), or the database known out of reach
    except PyMongoError as err:
        log.warning("a consult sent was not recorded", extra={"error": type(err).__name__})
        return
    signouts.sweep(db, SENT)


def newest(party: str | None) -> float:
    """When the newest consult ``party`` sent or was sent (epoch seconds; 0.0: none recorded, or the database out
    of reach): an answer about ``party``'s consults fetched before it is not used."""
    if not party:
        return 0.0
    since = time.time() - KEPT_SECONDS
    try:
        with portal_db.attempt(signouts.READ_SECONDS, _db) as db:
            found = list(db[SENT].find({"parties": party}, {"at": 1}))
    except portal_db.OutOfReach:
        return 0.0
    except PyMongoError as err:
        log.warning("the consults sent could not be read", extra={"error": type(err).__name__})
        return 0.0
    return max((float(d["at"]) for d in found if isinstance(d.get("at"), (int, float)) and d["at"] > since),
               default=0.0)
