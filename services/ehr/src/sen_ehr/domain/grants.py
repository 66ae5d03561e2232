"""Referral grants: ``teleconsult.referral.granted`` gives a doctor (or a hub) access to one patient's record.

One document per (patient, grantee) in the ``grants`` collection, ``_id`` =
``<Patient ref>|<grantee ref>``, upserted with ``apply_once`` so a redelivered
event changes nothing. A later event for the same pair (another referral)
keeps the later expiry (``$max``) and the latest reason. The access policy
(``sen_shared.fhir.access``) reads these documents by ``_id`` (one lookup per
grantee reference of the caller) and by ``grantee`` (searches).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo.database import Database
from sen_shared import mongo
from sen_shared.bus import apply_once
from sen_shared.fhir.access import GRANTS, grant_id

PURPOSE = "ehr.referral-grants"
INDEXES: list[mongo.Index] = [mongo.Index(GRANTS, (("grantee", 1),), name="grantee_1")]


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def handle_referral_granted(event: dict[str, Any], db: Database) -> bool:
    """Upsert the grant of a ``teleconsult.referral.granted`` event; False when already applied."""
    data = event["data"]
    patient, grantee = data["patient"], data["grantee"]
    now = datetime.now(UTC)
    update: dict[str, Any] = {
        "$set": {"patient": patient, "grantee": grantee, "reason": data["serviceRequest"],
                 "requester": data.get("requester"), "updated": now},
        "$max": {"expires": _instant(data["expires"])},
        "$setOnInsert": {"created": now},
    }
    return apply_once(db[GRANTS], {"_id": grant_id(patient, grantee)}, update, event["id"], upsert=True)
