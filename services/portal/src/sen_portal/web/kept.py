"""What a session keeps of the patients it worked on: on the server, under the session's id, never in the cookie.

The portal's session is Flask's signed cookie, which anyone holding a copy reads with base64 (a shared clinic
computer's browser profile, a proxy's log, a support screenshot). It used to carry what the nurse typed at a
take-on (name, birth date, sex: ``taken_on``) and the last 8 searched names or CCCD/BHYT/phone numbers
(``searches``). They are now the portal database's ``session_kept``, as the OIDC tokens are ``session_tokens``
(web/tokens.py) and by the same rules:

- a record is inserted under ``<sid>/<name>`` (the session's random id, 128 bits, and a name that says what it
  is) and never updated: of two requests keeping the same name exactly one insert wins, and the name is made so
  that both kept the same thing (a search's key is an HMAC of what was searched; a take-on's a random reference);
- it lives as long as the sign-in may (``until``), which the read checks; a write sweeps ended records at most
  once a minute per process (``signouts.sweep``); signing out deletes the session's records (:func:`forget`);
- the database out of reach: nothing is kept or found (logged), and the page works without it (a search
  without its key in the address, a take-on's chart without the typed details compared); the rest of the request
  does not ask it again (``sen_portal.portal_db``); a session without ``sid`` (a cookie from before sign-ins had
  one) keeps nothing.

Which of the session's keys hold what the user typed, and why each is here: :mod:`.searches` (the words of a
search, for Back and refresh: the EHR cannot give them back) and ``clinic.patient_take_on`` (what the
registration form said, compared with the record the chart reads from the EHR; the reference to it rides in
the step's confirmation, a random value) and ``clinic.patient_new`` (the id of the patient a registration form
registered, under the form's key and a digest of its details: the same form sent again after its answer was
lost opens that chart instead of registering the patient twice). The rest of the cookie names the user, the
sign-in and the language: no patient's name, birth date or number. The pages a step was done for (by the
record's opaque id) ride in the notices' own cookie (:mod:`.notices`), with the same rule.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from flask import current_app, session
from pymongo.errors import DuplicateKeyError, PyMongoError
from sen_shared import mongo

from .. import portal_db
from . import signouts

log = logging.getLogger("sen.portal.kept")
KEPT = "session_kept"  # the portal database's collection: _id <sid>/<name>, sid, value, until
INDEXES = [mongo.Index(KEPT, (("sid", 1),), name="sid_1"), mongo.Index(KEPT, (("until", 1),), name="until_1")]
READ_SECONDS = signouts.READ_SECONDS  # a read by _id answers in milliseconds
WRITE_SECONDS = signouts.WRITE_SECONDS


def _db() -> Any:
    return portal_db.database()


def put(name: str, value: Any) -> bool:
    """Keep ``value`` under ``name`` for this session; False when it was not kept (no session id, the database
    out of reach). A record of that name kept already is the same value (see the module's docstring)."""
    sid = session.get("sid")
    if not sid:
        return False
    lifetime = current_app.config["WTF_CSRF_TIME_LIMIT"]  # SEN_PORTAL_SESSION_MINUTES, in seconds
    until = datetime.fromtimestamp(float(session.get("signed_in_at") or time.time()) + lifetime, UTC)
    record = {"_id": f"{sid}/{name}", "sid": sid, "value": value, "at": datetime.now(UTC), "until": until}
    try:
        with portal_db.attempt(WRITE_SECONDS, _db) as db:
            db[KEPT].insert_one(record)
    except DuplicateKeyError:
        pass
    except PyMongoError as err:
        log.warning("what a session keeps was not kept", extra={"error": type(err).__name__})
        return False
    signouts.sweep(db, KEPT)
    return True


def get(name: str, *, once: bool = False) -> Any:
    """What this session kept under ``name`` (None: nothing, ended, or the database out of reach); ``once``: the
    record is deleted as it is read (what a page says once)."""
    sid = session.get("sid")
    if not sid:
        return None
    try:
        with portal_db.attempt(READ_SECONDS, _db) as db:
            found = db[KEPT].find_one({"_id": f"{sid}/{name}", "until": {"$gt": datetime.now(UTC)}})
            if found is not None and once:
                db[KEPT].delete_one({"_id": found["_id"]})
    except PyMongoError as err:
        log.warning("what a session kept could not be read", extra={"error": type(err).__name__})
        return None
    return None if found is None else found.get("value")


def forget(sid: str | None) -> None:
    """Signing out: the session's records are deleted (the sweep deletes them at ``until`` otherwise)."""
    if not sid:
        return
    try:
        with portal_db.attempt(WRITE_SECONDS, _db) as db:
            db[KEPT].delete_many({"sid": sid})
    except PyMongoError as err:
        log.warning("a signed-out session's records were not deleted", extra={"error": type(err).__name__})
