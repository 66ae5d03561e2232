"""Identifiers one resource holds at a time: a CCCD number or a BHYT card names one Patient.

A service names the identifier systems that must be unique per resource type
(``FhirConfig.unique_identifiers``). Each ``<type>|<system>|<value>`` is a **chain** of claims in
``fhir_unique`` (ARCHITECTURE.md §2, ``claims.advance``): a link ``{rid: "<id>"}`` says which
resource holds the identifier, a link ``{rid: None}`` that it was given up. A write that adds
the identifier (a create, an update that adds or changes it) claims the next link before it
claims its version; of two racing writers that read the same link, one wins and the other gets
409. A write that drops it (an update that removes or changes it, a delete) appends a release
link after its version is stored. Nothing is updated or deleted, so no release races a claim.

A link is held while its resource still carries the identifier, or while the link is younger
than the store's grace period (its writer may be between this claim and its version). A holder
that died in between, or dropped the identifier without its release landing, leaves a link
that is neither: the next claimer passes over it. Before claiming, a claimer also looks for a
stored resource carrying the identifier (an equality on the identifier's index field): one
stored before this rule, or one whose own release overtook its re-adding the identifier (two
writes of the same resource in quick succession). That search decides nothing between racing
claimers — the claim does — it only keeps such a holder from being passed over. A release is
skipped while the stored resource still carries the identifier.

Not serialized: two entries of one transaction that hand an identifier over (a DELETE of its
holder and a POST of a new one) — the POST is refused while the old holder holds it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pymongo.database import Database

from .. import claims
from .outcome import FhirError

COLLECTION = "fhir_unique"
RID = "rid"


def indexes() -> list[Any]:
    return claims.chain_indexes(COLLECTION)


def held_tokens(resource: Mapping[str, Any] | None, systems: frozenset[str]) -> set[str]:
    """``system|value`` of the resource's identifiers in ``systems`` (a resource about to be written)."""
    if not systems or not isinstance(resource, Mapping):
        return set()
    out: set[str] = set()
    for ident in resource.get("identifier") or []:
        if isinstance(ident, Mapping) and ident.get("system") in systems and ident.get("value"):
            out.add(f"{ident['system']}|{ident['value']}")
    return out


def head_tokens(head: Mapping[str, Any] | None, systems: frozenset[str]) -> set[str]:
    """The same tokens read from a stored document's index field ``sp_identifier`` (no body needed)."""
    if not systems or head is None or head.get("del"):
        return set()
    tokens = head.get("sp_identifier") or []
    return {t for t in tokens if isinstance(t, str) and t.partition("|")[0] in systems and t.partition("|")[2]}


def chain_key(resource_type: str, token: str) -> str:
    return f"{resource_type}|{token}"


def duplicate(resource_type: str, token: str, holder: str) -> FhirError:
    """409 naming the resource that holds the identifier (``Patient/<id>`` in the diagnostics and
    as the issue's location in ``expression``, for a client to link to it)."""
    system, _, value = token.partition("|")
    detail = (f"{resource_type}/{holder} already has the identifier {value} (system {system}); "
              f"an identifier of this system names one {resource_type}")
    return FhirError(detail, status=409, code="duplicate", issues=[{
        "severity": "error", "code": "duplicate", "diagnostics": detail,
        "details": {"coding": [{"system": "https://fhir.sen.vn/CodeSystem/outcome", "code": "duplicate-identifier"}],
                    "text": f"{resource_type}/{holder}"},
        "expression": [f"{resource_type}.identifier"]}])


class UniqueIdentifiers:
    """The claims of one store's unique identifiers (``systems``: resource type → systems)."""

    def __init__(self, db: Database, systems: Mapping[str, frozenset[str]], *,
                 is_stale: Any, holds: Any) -> None:
        self.db = db
        self.systems = systems
        self._is_stale = is_stale  # (link) -> bool: older than the grace period
        self._holds = holds  # (resource_type, rid, token) -> bool: the stored resource carries it

    @property
    def coll(self) -> Any:
        return self.db[COLLECTION]

    def for_type(self, resource_type: str) -> frozenset[str]:
        return self.systems.get(resource_type, frozenset())

    def _stored_holder(self, resource_type: str, rid: str, token: str) -> str | None:
        """A stored resource other than ``rid`` that carries ``token`` (an equality on the
        identifier's top-level index field, which a deleted resource no longer has)."""
        doc = self.db[resource_type].find_one({"sp_identifier": token, "_id": {"$ne": rid}}, {"_id": 1})
        return str(doc["_id"]) if doc else None

    def claim(self, resource_type: str, rid: str, tokens: Iterable[str]) -> list[str]:
        """Claim ``tokens`` for ``resource_type/rid``; the tokens newly claimed (to release if the
        write fails). 409 (:func:`duplicate`) when another resource holds one; what was claimed
        before the refusal is released first."""
        claimed: list[str] = []
        try:
            for token in sorted(tokens):
                if self._claim_one(resource_type, rid, token):
                    claimed.append(token)
        except BaseException:
            self.release(resource_type, rid, claimed)
            raise
        return claimed

    def _claim_one(self, resource_type: str, rid: str, token: str) -> bool:
        key = chain_key(resource_type, token)
        link = claims.latest(self.coll, key)
        if link is not None and link.get(RID) == rid:
            return False  # ours already
        if link is not None and link.get(RID) is not None:
            holder = str(link[RID])
            if not self._is_stale(link) or self._holds(resource_type, holder, token):
                raise duplicate(resource_type, token, holder)
        other = self._stored_holder(resource_type, rid, token)
        if other is not None:
            raise duplicate(resource_type, token, other)
        try:
            claims.advance(self.coll, key, link, {RID: rid})
        except claims.ClaimTaken as taken:
            winner = (taken.holder or {}).get(RID)
            raise duplicate(resource_type, token, str(winner) if winner else "?") from None
        return True

    def release(self, resource_type: str, rid: str, tokens: Iterable[str]) -> None:
        """Give up ``tokens`` held by ``rid`` (a release link after the newest link, when it is
        ``rid``'s and the stored resource does not carry the token). A release that loses its race
        had nothing left to release."""
        for token in tokens:
            key = chain_key(resource_type, token)
            link = claims.latest(self.coll, key)
            if link is None or link.get(RID) != rid or self._holds(resource_type, rid, token):
                continue
            try:
                claims.advance(self.coll, key, link, {RID: None})
            except claims.ClaimTaken:
                pass


__all__ = ["COLLECTION", "UniqueIdentifiers", "duplicate", "head_tokens", "held_tokens", "indexes"]
