"""``$take-on``'s pure rules: what the Parameters must hold, and when a number is the patient's."""

from __future__ import annotations

from typing import Any

import pytest
from sen_ehr.domain import take_on
from sen_shared import bhyt
from sen_shared.fhir.outcome import FhirError

CCCD = "https://fhir.sen.vn/sid/cccd"
PATIENT = {"resourceType": "Patient", "identifier": [{"system": CCCD, "value": "087048006170"},
                                                     {"system": bhyt.CARD_SYSTEM, "value": "HT2870000123456"}]}


def body(system: str = CCCD, value: str = "087048006170", reason: Any = "Người bệnh đến khám tại cơ sở") -> dict:
    return {"resourceType": "Parameters", "parameter": [
        {"name": "identifier", "valueIdentifier": {"system": system, "value": value}},
        {"name": "reason", "valueString": reason}]}


def test_the_full_cccd_or_card_number_is_the_patients() -> None:
    assert take_on.holds(PATIENT, take_on.parse(body(value="087 048 006 170")))
    assert take_on.holds(PATIENT, take_on.parse(body(bhyt.CARD_SYSTEM, "ht2870000123456")))


@pytest.mark.parametrize(("system", "value"), [(CCCD, "087048006171"), (CCCD, "08704800617"), (CCCD, "0870480061700"),
                                               (CCCD, "HT2870000123456"), (bhyt.CARD_SYSTEM, "087048006170")])
def test_a_number_not_the_patients_under_its_system_is_not(system: str, value: str) -> None:
    assert not take_on.holds(PATIENT, take_on.parse(body(system, value)))
    assert not take_on.holds(None, take_on.parse(body(system, value)))


def test_the_reason_is_kept_on_one_line() -> None:
    assert take_on.parse(body(reason="  Người bệnh\nđến khám  ")).reason == "Người bệnh đến khám"


@pytest.mark.parametrize("bad", [None, [], {"resourceType": "Patient"}, {"resourceType": "Parameters", "parameter": 1},
                                 body(reason=7), body(reason=""), body(value=" "), body(system="urn:x"),
                                 {"resourceType": "Parameters", "parameter": body()["parameter"] * 2},
                                 # a name that is no string (found by the API fuzz: was a TypeError, a 500)
                                 {"resourceType": "Parameters", "parameter": [{"name": ["reason"]}]},
                                 {"resourceType": "Parameters",
                                  "parameter": [{"name": {"a": 1}}, *body()["parameter"]]},
                                 body(system=["urn:x"])])
def test_bad_parameters_are_400(bad: Any) -> None:
    with pytest.raises(FhirError) as err:
        take_on.parse(bad)
    assert err.value.status == 400 and err.value.expression


def test_one_grant_key_per_patient_and_facility() -> None:
    assert take_on.grant_key("Patient/a", "Organization/b") == "take-on|Patient/a|Organization/b"
    assert take_on.grant_key("Patient/a", "Organization/b") != take_on.grant_key("Patient/a", "Organization/c")


def test_each_generation_and_its_end_have_their_own_key() -> None:
    from sen_ehr.domain.take_on import end_key

    assert take_on.grant_key("Patient/a", "Organization/b", 1) == take_on.grant_key("Patient/a", "Organization/b")
    assert take_on.grant_key("Patient/a", "Organization/b", 2) == "take-on|Patient/a|Organization/b|2"
    assert end_key("Patient/a", "Organization/b", 1) == "take-on-end|Patient/a|Organization/b|1"


def test_end_take_on_takes_a_reason_and_perhaps_the_facility() -> None:
    from sen_ehr.domain import end_take_on

    req = end_take_on.parse({"resourceType": "Parameters", "parameter": [
        {"name": "reason", "valueString": " Người bệnh\nchuyển về "},
        {"name": "grantee", "valueReference": {"reference": "Organization/tyt-a"}}]})
    assert req == end_take_on.Request("Người bệnh chuyển về", "Organization/tyt-a")
    for bad in ({"resourceType": "Parameters", "parameter": []},
                {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "x"},
                                                             {"name": "grantee", "valueString": "tyt-a"}]}):
        with pytest.raises(FhirError) as err:
            end_take_on.parse(bad)
        assert err.value.status == 400 and err.value.expression


def test_retry_when_enough_failures_have_left_the_window() -> None:
    from datetime import UTC, datetime, timedelta

    from sen_ehr.domain import take_on_failures as failures

    limit = failures.Limit(3, timedelta(minutes=15))
    t0 = datetime(2026, 12, 5, 4, 0, tzinfo=UTC)
    ats = [t0 + timedelta(minutes=m) for m in (0, 5, 10)]
    assert failures.retry_at(ats, limit) == t0 + timedelta(minutes=15)  # the oldest leaves: 2 left, 1 more allowed
    assert failures.retry_at([*ats, t0 + timedelta(minutes=11)], limit) == t0 + timedelta(minutes=20)
    err = failures.throttled(t0 + timedelta(minutes=15), t0 + timedelta(minutes=12, seconds=30), limit)
    assert err.status == 429 and err.code == "throttled" and err.headers == {"Retry-After": "150"}
    assert "2026-12-05T04:15:00Z" in err.detail
