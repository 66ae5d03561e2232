"""sen_billing.domain.bhyt: benefit levels 80/95/100 %, the 15 %-of-base-salary threshold, and the
one rounding rule (the insurer's share of a line is floored to the đồng; the patient pays the rest)."""

from __future__ import annotations

import pytest
from sen_billing.domain import bhyt
from sen_billing.domain.bhyt import Line, split
from sen_shared import bhyt as shared_bhyt


def test_threshold_is_15_percent_of_the_base_salary() -> None:
    assert bhyt.threshold() == 351_000
    assert bhyt.threshold(1_800_000) == 270_000


@pytest.mark.parametrize(("level", "insurer", "patient"), [(80, 320_000, 80_000), (95, 380_000, 20_000),
                                                           (100, 400_000, 0)])
def test_levels_split_a_visit_above_the_threshold(level: int, insurer: int, patient: int) -> None:
    s = split([Line(250_000), Line(150_000)], level)
    assert (s.insurer, s.patient, s.total) == (insurer, patient, 400_000)
    assert not s.under_threshold and s.applied == level
    assert all(x.insurer + x.patient == x.amount for x in s.lines)


@pytest.mark.parametrize("level", [80, 95])
def test_under_the_threshold_is_covered_in_full(level: int) -> None:
    s = split([Line(200_000), Line(150_999)], level)  # 350,999 < 351,000
    assert s.under_threshold and s.applied == 100
    assert (s.insurer, s.patient) == (350_999, 0)


def test_at_the_threshold_the_card_level_applies() -> None:
    s = split([Line(351_000)], 80)  # not "under": 351,000 itself is split at 80 %
    assert not s.under_threshold
    assert (s.insurer, s.patient) == (280_800, 70_200)


def test_the_threshold_follows_the_configured_base_salary() -> None:
    assert split([Line(300_000)], 80, base_salary=1_800_000).patient == 60_000  # 300,000 ≥ 270,000
    assert split([Line(300_000)], 80).patient == 0  # < 351,000


def test_rounding_floors_the_insurers_share_per_line() -> None:
    # 95 % of 12,345 = 11,727.75 -> insurer 11,727, patient 618; 95 % of 99,999 = 94,999.05 -> 94,999 / 5,000
    s = split([Line(12_345), Line(99_999), Line(333_333)], 95)
    assert [(x.insurer, x.patient) for x in s.lines] == [(11_727, 618), (94_999, 5_000), (316_666, 16_667)]
    assert s.insurer + s.patient == s.total == 445_677
    # 80 % of 1 đồng: the insurer pays nothing, the patient 1
    assert split([Line(1), Line(400_000)], 80).lines[0] == bhyt.Share(1, 0, 1)


def test_uncovered_lines_are_the_patients_and_do_not_count_toward_the_threshold() -> None:
    s = split([Line(300_000), Line(100_000, covered=False)], 80)
    assert s.under_threshold  # the covered total 300,000 < 351,000
    assert [(x.insurer, x.patient) for x in s.lines] == [(300_000, 0), (0, 100_000)]


def test_no_card_means_the_patient_pays_everything() -> None:
    s = split([Line(100_000)], None)
    assert (s.insurer, s.patient, s.level) == (0, 100_000, 0)


@pytest.mark.parametrize("bad", [[Line(-1)], [Line(1.5)], [Line(True)]])  # type: ignore[arg-type]
def test_amounts_are_whole_non_negative_dong(bad) -> None:
    with pytest.raises(ValueError):
        split(bad, 80)


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError):
        split([Line(1)], 70)


@pytest.mark.parametrize(("card", "level"), [("DN4010123456789", 80), ("HT3878701234567", 95),
                                             ("TE1010123456789", 100), ("CC1010123456789", 100),
                                             ("HN2010123456789", 100), ("XX9010123456789", None), ("", None)])
def test_level_from_the_card_number(card: str, level: int | None) -> None:
    assert bhyt.level_from_card(card) == level


def test_benefit_level_of_a_coverage() -> None:
    cov = {"resourceType": "Coverage", "status": "active", "subscriberId": "DN4010123456789"}
    assert bhyt.benefit_level(cov) == 80
    cov["extension"] = [{"url": bhyt.LEVEL_EXTENSION, "valueUnsignedInt": 95}]
    assert bhyt.benefit_level(cov) == 95  # the extension wins over the card's digit
    assert bhyt.benefit_level({**cov, "status": "cancelled"}) is None
    assert bhyt.benefit_level(None) is None


@pytest.mark.parametrize("system", ["https://fhir.sen.vn/sid/bhyt", "https://sen.vn/fhir/sid/bhyt"])
def test_the_card_number_is_read_under_the_shared_system_and_billings_earlier_one(system: str) -> None:
    # one vocabulary for the EHR, billing and the portal (sen_shared.bhyt); Coverages billing stored
    # under its own earlier system keep their level
    cov = {"resourceType": "Coverage", "status": "active",
           "identifier": [{"system": system, "value": "HS3010123456789"}]}
    assert bhyt.benefit_level(cov) == 95
    assert shared_bhyt.card_number(cov) == "HS3010123456789"
    other = {**cov, "identifier": [{"system": "https://fhir.sen.vn/sid/cccd", "value": "HS3010123456789"}]}
    assert bhyt.benefit_level(other) is None and shared_bhyt.card_number(other) == ""
    assert bhyt.CARD_SYSTEM == shared_bhyt.CARD_SYSTEM == "https://fhir.sen.vn/sid/bhyt"
