"""The price list: ChargeItemDefinitions in billing's FHIR store.

- Loaded at start from a JSON file (``data/price_list.json`` unless ``SEN_PRICE_LIST_FILE``):
  each definition is created under its own fixed id if it is not there yet, so a restart (or
  two workers starting at once: the store's create is an insert under the id) creates nothing
  twice and never overwrites a price an admin changed.
- Edited through FHIR by ``admin`` only (``fhir_server.py``); every change is a new version in
  the store's history (``/fhir/ChargeItemDefinition/{id}/_history``). A save that changes nothing
  (:func:`unchanged`: the same entry but for ``meta`` and who saves it) makes no version: billing
  answers 200 with the version in force, as FHIR servers answer an update that changes nothing.
- A consult's price by specialty and facility level: the definition
  ``consult-<SNOMED specialty>-<level>``, else ``consult-any-<level>`` (the general consult price
  at that level), else ``consult-any-district``. A charge copies the price it used into
  ``ChargeItem.priceOverride`` and names the definition version, so later edits change no
  existing charge.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pymongo.database import Database
from sen_shared.fhir.outcome import FhirError
from sen_shared.fhir.store import Store
from sen_shared.fhir.validate import validate_resource

DEFAULT_FILE = Path(__file__).resolve().parent.parent / "data" / "price_list.json"
LEVELS = ("central", "province", "district", "commune")
COVERED_EXT = "https://sen.vn/fhir/StructureDefinition/bhyt-covered"
SERVICE_SYSTEM = "urn:sen:billing:service"
MAX_PRICE = 10_000_000_000
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def _store(db: Database) -> Store:
    return Store(db, service="billing", emit_events=False)


def read_file(path: str | Path | None = None) -> list[dict[str, Any]]:
    data = json.loads(Path(path or DEFAULT_FILE).read_text(encoding="utf-8"))
    entries = data["entry"] if isinstance(data, dict) else data
    for res in entries:
        check_definition(res)
        if not _ID.match(str(res.get("id", ""))):
            raise ValueError(f"a price list entry needs an id: {res.get('title')!r}")
    return entries


def load(db: Database, path: str | Path | None = None) -> int:
    """Create the file's definitions that are missing; how many were created."""
    store, created = _store(db), 0
    for res in read_file(path):
        if store.head("ChargeItemDefinition", res["id"]) is not None:
            continue
        try:
            store.create(dict(res), res["id"])
            created += 1
        except FhirError as err:
            if err.status != 409:  # another process created it meanwhile: fine
                raise
    return created


def price(definition: dict[str, Any]) -> int:
    """The definition's base price in đồng (its one ``base`` price component)."""
    for group in definition.get("propertyGroup") or []:
        for pc in group.get("priceComponent") or []:
            if pc.get("type") == "base":
                return int((pc.get("amount") or {}).get("value"))
    raise ValueError(f"ChargeItemDefinition/{definition.get('id')} has no base price")


def covered(definition: dict[str, Any]) -> bool:
    """False when BHYT does not pay for the service (extension ``bhyt-covered`` false)."""
    for ext in definition.get("extension") or []:
        if ext.get("url") == COVERED_EXT:
            return bool(ext.get("valueBoolean", True))
    return True


def check_definition(res: Any) -> None:
    """A price list entry: a valid ChargeItemDefinition with exactly one base price in integer VND."""
    validate_resource(res, expected_type="ChargeItemDefinition")
    bases = [pc for g in res.get("propertyGroup") or [] for pc in g.get("priceComponent") or []
             if pc.get("type") == "base"]
    if len(bases) != 1:
        raise FhirError("a price list entry has exactly one base price component", status=422,
                        expression=["ChargeItemDefinition.propertyGroup.priceComponent"])
    amount = bases[0].get("amount") or {}
    value = amount.get("value")
    if amount.get("currency") != "VND" or isinstance(value, bool) or not isinstance(value, int | float) \
            or value != int(value) or not 0 <= value <= MAX_PRICE:
        raise FhirError("a price is a whole number of đồng (currency VND) from 0 to 10,000,000,000", status=422,
                        expression=["ChargeItemDefinition.propertyGroup.priceComponent.amount"])


CHANGED_BY = "https://sen.vn/fhir/StructureDefinition/price-changed-by"


def stamp_changer(res: dict[str, Any], principal: Any) -> dict[str, Any]:
    """``res`` naming who makes this version of it: the ``price-changed-by`` extension (``name``
    and ``user``) from the caller's token, whatever the body said. The store records no author, so
    billing writes it into every version written through its API (create, update, patch); a version
    written otherwise (the price list file at start) names nobody."""
    who = [{"url": "user", "valueString": principal.sub or "unknown"}]
    if principal.name:
        who.insert(0, {"url": "name", "valueString": principal.name})
    out = dict(res)
    out["extension"] = [e for e in res.get("extension") or []
                        if not (isinstance(e, dict) and e.get("url") == CHANGED_BY)]
    out["extension"].append({"url": CHANGED_BY, "extension": who})
    return out


def _substance(res: Mapping[str, Any]) -> dict[str, Any]:
    """``res`` without what a save does not decide: ``meta`` (the server's) and who saves it (:data:`CHANGED_BY`)."""
    out = {k: v for k, v in res.items() if k != "meta"}
    kept = [e for e in res.get("extension") or [] if not (isinstance(e, dict) and e.get("url") == CHANGED_BY)]
    if kept:
        out["extension"] = kept
    else:
        out.pop("extension", None)
    return out


def unchanged(current: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """True when saving ``new`` over ``current`` would change nothing in the entry: the same JSON but for
    ``meta`` and the author stamp (the version in force keeps the author who made it)."""
    return _substance(current) == _substance(new)


def consult_candidates(specialty: str | None, level: str) -> list[str]:
    """The definitions that may price a consult of ``specialty`` at a facility of ``level``, first wins."""
    candidates = [f"consult-{specialty}-{level}"] if specialty and _ID.match(f"consult-{specialty}") else []
    return [*candidates, f"consult-any-{level}", "consult-any-district"]


def consult_definition(db: Database, specialty: str | None, level: str) -> dict[str, Any]:
    """The active definition pricing a consult of ``specialty`` at a facility of ``level``."""
    store = _store(db)
    for rid in consult_candidates(specialty, level):
        doc = store.head("ChargeItemDefinition", rid)
        if doc is not None and not doc.get("del"):
            res = store.read_doc("ChargeItemDefinition", rid)["res"]
            if res.get("status") == "active":
                return res
    raise LookupError(f"the price list has no consult price for level {level!r}")


def definition(db: Database, ref: str) -> dict[str, Any]:
    """A definition by ``ChargeItemDefinition/<id>``, its canonical url, or its id."""
    rid = ref.rsplit("/", 1)[-1].split("|", 1)[0]
    if not _ID.match(rid):
        raise FhirError(f"{ref!r} names no ChargeItemDefinition", status=422)
    try:
        res = _store(db).read_doc("ChargeItemDefinition", rid)["res"]
    except FhirError:
        raise FhirError(f"the price list has no ChargeItemDefinition/{rid}", status=422) from None
    if res.get("status") != "active":
        raise FhirError(f"ChargeItemDefinition/{rid} is {res.get('status')}, not active", status=422)
    return res


__all__ = ["DEFAULT_FILE", "LEVELS", "check_definition", "consult_definition", "covered", "definition", "load",
           "price", "read_file"]
