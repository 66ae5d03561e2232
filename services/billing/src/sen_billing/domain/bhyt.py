"""Social health insurance (BHYT): who pays what of each line, in integer đồng.

- The benefit level comes from the patient's card (Health Insurance Law art. 22): 80, 95 or
  100 % of covered costs. Read from a Coverage (:func:`benefit_level`): the extension
  ``bhyt-benefit-level`` if present, else the card number's 3rd character (the benefit code
  printed on the card: 1, 2 and 5 → 100 %, 3 → 95 %, 4 → 80 %). The card's vocabulary (its
  identifier system, the level extension, the code table) is every service's: ``sen_shared.bhyt``.
- A visit whose covered total is under 15 % of the base salary is covered 100 %, whatever the
  card says (Decree 146/2018/ND-CP art. 14): with the base salary of 2,340,000 đồng (since
  2024-07, configurable) the threshold is 351,000 đồng, and a total BELOW it (strictly) is
  covered in full; 351,000 itself is split at the card's level.
- Rounding rule (one, tested): per line, the insurer's share is
  ``floor(covered amount × level / 100)``; the patient pays the rest of the line. Shares are
  integers, each line's two shares add up to the line, and the invoice's totals are the sums
  of the lines. Rounding always favours the patient by less than 1 đồng per line.
- A line the insurance does not cover (``covered=False``) is the patient's alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sen_shared.bhyt import CARD_SYSTEM, LEVEL_EXTENSION, LEVELS, level_from_card, recorded_level

BASE_SALARY = 2_340_000
THRESHOLD_PERCENT = 15


@dataclass(frozen=True)
class Line:
    amount: int  # the line's gross amount, đồng
    covered: bool = True


@dataclass(frozen=True)
class Share:
    amount: int
    insurer: int
    patient: int


@dataclass(frozen=True)
class Split:
    level: int  # the card's benefit level, 0 without a card
    applied: int  # the percentage used (100 under the threshold)
    under_threshold: bool
    lines: tuple[Share, ...]

    @property
    def total(self) -> int:
        return sum(s.amount for s in self.lines)

    @property
    def insurer(self) -> int:
        return sum(s.insurer for s in self.lines)

    @property
    def patient(self) -> int:
        return sum(s.patient for s in self.lines)


def threshold(base_salary: int = BASE_SALARY) -> int:
    """15 % of the base salary, in đồng (2,340,000 → 351,000)."""
    return base_salary * THRESHOLD_PERCENT // 100


def split(lines: Sequence[Line], level: int | None, *, base_salary: int = BASE_SALARY) -> Split:
    """Each line split between the insurer and the patient (``level`` None or 0: no BHYT card)."""
    for line in lines:
        if isinstance(line.amount, bool) or not isinstance(line.amount, int) or line.amount < 0:
            raise ValueError("a line's amount is a non-negative integer (đồng)")
    level = int(level or 0)
    if level not in (0, *LEVELS):
        raise ValueError(f"a BHYT benefit level is one of {LEVELS}")
    covered_total = sum(line.amount for line in lines if line.covered)
    under = level > 0 and covered_total < threshold(base_salary)
    applied = 100 if under else level
    shares = []
    for line in lines:
        insurer = line.amount * applied // 100 if line.covered else 0
        shares.append(Share(line.amount, insurer, line.amount - insurer))
    return Split(level=level, applied=applied, under_threshold=under, lines=tuple(shares))


def benefit_level(coverage: dict[str, Any] | None) -> int | None:
    """The benefit level of an active BHYT Coverage, or None."""
    if not coverage or coverage.get("status") != "active":
        return None
    return recorded_level(coverage)


__all__ = ["BASE_SALARY", "CARD_SYSTEM", "LEVELS", "LEVEL_EXTENSION", "Line", "Share", "Split", "benefit_level",
           "level_from_card", "split", "threshold"]
