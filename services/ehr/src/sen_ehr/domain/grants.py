"""Referral grants: ``teleconsult.referral.granted`` gives a doctor (or a hub) access to one patient's record.

Each event becomes one insert-only grant document in the ``grants`` collection,
``_id`` = the event id (``apply_once``: the claim IS the effect, so a redelivered
event changes nothing and two referrals of the same pair never write one
document). ``pair`` = ``<Patient ref>|<grantee ref>`` (``access.grant_id``)
names the (patient, grantee) the grant is for; a later referral of the same
pair is a second document, and the pair is granted while any of its documents
is active (the latest expiry wins by construction). The access policy
(``sen_shared.fhir.access``, read in ``sen_shared.fhir.guarded``) reads these
documents by ``pair`` (the grantee references of the caller) and by ``grantee``
(searches); both are top-level equalities FerretDB pushes down. The same collection holds
the take-on grants of ``Patient/{id}/$take-on`` (``domain.take_on``: ``_id`` keyed by patient and
facility, no expiry), read the same way.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo.database import Database
from sen_shared import mongo
from sen_shared.bus import apply_once
from sen_shared.fhir.access import GRANTS, grant_id

PURPOSE = "ehr.referral-grants"
INDEXES: list[mongo.Index] = [mongo.Index(GRANTS, (("grantee", 1),), name="grantee_1"),
                              mongo.Index(GRANTS, (("pair", 1),), name="pair_1")]


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def handle_referral_granted(event: dict[str, Any], db: Database) -> bool:
    """Record the grant of a ``teleconsult.referral.granted`` event; False when already recorded."""
    data = event["data"]
    patient, grantee = data["patient"], data["grantee"]
    return apply_once(db[GRANTS], event["id"], {
        "pair": grant_id(patient, grantee), "patient": patient, "grantee": grantee,
        "reason": data["serviceRequest"], "requester": data.get("requester"),
        "expires": _instant(data["expires"]), "created": datetime.now(UTC)})
