"""What each hub doctor has seen of the clinics' answers: the worklist's "Cơ sở đã trả lời" until she reads it.

A worklist row says "Cơ sở đã trả lời / The clinic has answered" while the consult's latest version is the
requesting clinic's (its answer to her question: ``directory.answered_by_clinic``). It used to be cleared by a
booked Appointment of the consult no older than that version (booking leaves the Task alone), so a visit booked
before the question and changed after the answer (a reminder, a note, any update of the Appointment) cleared it
though she had not read the answer. It now says what she has not seen: opening the consult's page
(``doctor._task_page``, which shows the answer on its thread and from where she books) records that she saw the
consult at its version, and the row no longer says it for that version; the clinic answering again (a newer
version) says it again.

The portal database's ``answers_seen``: one record inserted per doctor, consult and version (``_id``
``<user>/<task>/<version>``, a claim: a second view of the same version changes nothing), never updated, kept
:data:`KEPT_DAYS` and swept after (``signouts.sweep``). The worklist asks once for its rows that would say it (the
user's records of those consults). The database out of reach: nothing is recorded, and the rows say the clinic
answered as before (``sen_portal.portal_db``: not asked again in the request nor while pymongo's monitor knows it
out of reach).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import g
from pymongo.errors import DuplicateKeyError, PyMongoError
from sen_shared import mongo

from .. import portal_db
from . import signouts

log = logging.getLogger("sen.portal.seen")
SEEN = "answers_seen"  # the portal database's collection: _id <user>/<task>/<version>, user, task, version, until
INDEXES = [mongo.Index(SEEN, (("user", 1),), name="user_1"), mongo.Index(SEEN, (("until", 1),), name="until_1")]
KEPT_DAYS = 90  # longer than a consult stays open


def _db() -> Any:
    return portal_db.database()


def _user() -> str:
    """The signed-in doctor as the records name her: her username and Practitioner."""
    return f"{g.user.username}|{g.user.practitioner or ''}"


def _version(task: dict[str, Any]) -> str:
    return str((task.get("meta") or {}).get("versionId") or "")


def mark_seen(task: dict[str, Any]) -> None:
    """The signed-in doctor has the consult ``task`` (as read now) on her screen: its version is seen."""
    tid, version = str(task.get("id") or ""), _version(task)
    if not tid or not version:
        return
    user = _user()
    record = {"_id": f"{user}/{tid}/{version}", "user": user, "task": tid, "version": version,
              "until": datetime.now(UTC) + timedelta(days=KEPT_DAYS)}
    try:
        with portal_db.attempt(signouts.WRITE_SECONDS, _db) as db:
            db[SEEN].insert_one(record)
    except (DuplicateKeyError, portal_db.OutOfReach):
        return  # seen before at this version, or the database known out of reach
    except PyMongoError as err:
        log.warning("a consult seen was not recorded", extra={"error": type(err).__name__})
        return
    signouts.sweep(db, SEEN)


def seen_of(tasks: list[dict[str, Any]]) -> set[str]:
    """The ids of ``tasks`` the signed-in doctor has seen at their current version (none when the database is out
    of reach): one read of her records of those consults."""
    versions = {str(t.get("id")): _version(t) for t in tasks if t.get("id") and _version(t)}
    if not versions:
        return set()
    try:
        with portal_db.attempt(signouts.READ_SECONDS, _db) as db:
            found = list(db[SEEN].find({"user": _user(), "task": {"$in": sorted(versions)}},
                                       {"task": 1, "version": 1}))
    except portal_db.OutOfReach:
        return set()
    except PyMongoError as err:
        log.warning("the consults seen could not be read", extra={"error": type(err).__name__})
        return set()
    return {d["task"] for d in found if versions.get(str(d.get("task"))) == d.get("version")}
