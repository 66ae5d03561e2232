"""The BHYT (social health insurance) card's vocabulary, one for every service.

The EHR records the card number on the Patient, billing keeps the card in force as a Coverage
and splits invoices by its benefit level, the portal reads and records both: they name the card
and its level the same way, from here.

- :data:`CARD_SYSTEM`: the identifier system of a card number (``DN4010123456789``), beside
  ``https://fhir.sen.vn/sid/cccd`` for the citizen id. Billing wrote Coverages with
  ``https://sen.vn/fhir/sid/bhyt`` before it came from here (:data:`OLD_CARD_SYSTEMS`); readers
  accept both (:func:`is_card_system`).
- :data:`LEVEL_EXTENSION`: the benefit level recorded with the card (80, 95 or 100 %, Health
  Insurance Law art. 22).
- :func:`level_from_card`: the level printed in the number itself, its 3rd character (the benefit
  code: 1, 2 and 5 → 100 %, 3 → 95 %, 4 → 80 %).
"""

from __future__ import annotations

from typing import Any

CARD_SYSTEM = "https://fhir.sen.vn/sid/bhyt"
OLD_CARD_SYSTEMS = ("https://sen.vn/fhir/sid/bhyt",)
LEVEL_EXTENSION = "https://sen.vn/fhir/StructureDefinition/bhyt-benefit-level"
LEVELS = (80, 95, 100)
_CARD_LEVEL = {"1": 100, "2": 100, "3": 95, "4": 80, "5": 100}


def is_card_system(system: object) -> bool:
    """Whether ``system`` names a BHYT card number (today's system or billing's earlier one)."""
    return system == CARD_SYSTEM or system in OLD_CARD_SYSTEMS


def level_from_card(card: str | None) -> int | None:
    """The benefit level printed in a BHYT card number (e.g. ``DN4010123456789`` → 80), or None."""
    card = (card or "").strip().upper()
    if len(card) < 3 or not card[:2].isalpha():
        return None
    return _CARD_LEVEL.get(card[2])


def card_number(coverage: dict[str, Any]) -> str:
    """The card number of a BHYT Coverage: its card identifier, else its ``subscriberId``."""
    for ident in coverage.get("identifier") or []:
        if is_card_system(ident.get("system")) and ident.get("value"):
            return str(ident["value"])
    return str(coverage.get("subscriberId") or "")


def recorded_level(coverage: dict[str, Any]) -> int | None:
    """The benefit level of a BHYT Coverage, in force or not: the level recorded with it
    (:data:`LEVEL_EXTENSION`; a value that is no level gives None), else the one its number prints."""
    for ext in coverage.get("extension") or []:
        if ext.get("url") == LEVEL_EXTENSION:
            value = ext.get("valueUnsignedInt", ext.get("valueInteger"))
            return int(value) if value in LEVELS else None
    for ident in coverage.get("identifier") or []:
        if is_card_system(ident.get("system")) and (level := level_from_card(str(ident.get("value", "")))):
            return level
    return level_from_card(str(coverage.get("subscriberId") or ""))
