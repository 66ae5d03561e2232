"""Which district a Patient's events name (domain.patient_events): the home address's, now."""

from __future__ import annotations

from datetime import date

import pytest
from sen_ehr.domain.patient_events import EVENT_FIELDS, patient_district

TODAY = date(2026, 12, 5)


@pytest.mark.parametrize(("addresses", "district"), [
    ([{"district": "Huyện Tháp Mười", "city": "Mỹ An"}], "Huyện Tháp Mười"),
    # the home address before another current one, whatever the order
    ([{"use": "temp", "district": "Huyện Lấp Vò"}, {"use": "home", "district": "Huyện Cao Lãnh"}], "Huyện Cao Lãnh"),
    # an old, a work or a billing address is not where the patient lives
    ([{"use": "old", "district": "Huyện Lấp Vò"}, {"use": "work", "district": "Thành phố Cao Lãnh"},
      {"district": "Huyện Tháp Mười"}], "Huyện Tháp Mười"),
    # a home address that ended is not current; one that ends later is
    ([{"use": "home", "district": "Huyện Lấp Vò", "period": {"end": "2026-01-31"}},
      {"use": "home", "district": "Huyện Cao Lãnh", "period": {"start": "2026-02-01", "end": "2030-01-01"}}],
     "Huyện Cao Lãnh"),
    # spaces as typed are collapsed; an empty district is none
    ([{"district": "  Huyện   Cao Lãnh "}], "Huyện Cao Lãnh"),
    ([{"use": "home", "district": "   "}, {"city": "Cao Lãnh"}], None),
    ([{"use": "old", "district": "Huyện Lấp Vò"}], None),
    ([], None),
])
def test_the_district_is_the_current_home_address(addresses, district):
    assert patient_district({"resourceType": "Patient", "address": addresses}, TODAY) == district


def test_the_events_fields_are_the_district_only():
    fields = EVENT_FIELDS["Patient"]({"resourceType": "Patient", "name": [{"family": "Nguyễn"}],
                                      "address": [{"line": ["12 Nguyễn Huệ"], "district": "Huyện Tháp Mười"}]})
    assert fields == {"district": "Huyện Tháp Mười"}
    assert EVENT_FIELDS["Patient"]({"resourceType": "Patient"}) == {"district": None}


def test_a_district_longer_than_the_events_take_is_refused_not_cut():
    """A home address's district over 200 characters (the events' limit, common.json's district) was taken
    and its ehr.patient.* event failed its schema in the outbox, never reaching the dashboard: refused, 422
    naming the limit; at 200 the event is valid."""
    from sen_shared.bus import make_event
    from sen_shared.fhir.outcome import FhirError

    def patient(district: str) -> dict:
        return {"resourceType": "Patient", "address": [{"use": "home", "district": district}]}

    fields = EVENT_FIELDS["Patient"](patient("Huyện " + "x" * 194))
    assert len(fields["district"]) == 200
    make_event("ehr.patient.created", {"resourceType": "Patient", "id": "p1", "versionId": "1", **fields},
               subject="Patient/p1")
    with pytest.raises(FhirError) as err:
        EVENT_FIELDS["Patient"](patient("Huyện " + "x" * 195))
    assert err.value.status == 422 and "at most 200 characters" in str(err.value), str(err.value)
    assert err.value.expression == ["Patient.address.district"]
    # only the district the events would carry: an old address's is not checked
    assert EVENT_FIELDS["Patient"]({"resourceType": "Patient", "address": [
        {"use": "old", "district": "x" * 300}]}) == {"district": None}


def test_after_midnight_in_vietnam_an_address_that_ended_the_day_before_is_not_current(monkeypatch):
    """'Today' is Vietnam's: at 00:30 there on 6 December (17:30 UTC on the 5th) a home address that
    ended on the 5th is over, and the events name the new one (the server's UTC date said the 5th for
    seven hours a day)."""
    from datetime import UTC, datetime

    from sen_ehr.domain import patient_events

    class Clock(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 12, 5, 17, 30, tzinfo=UTC).astimezone(tz)

    monkeypatch.setattr(patient_events, "datetime", Clock)
    moved = {"resourceType": "Patient", "address": [
        {"use": "home", "district": "Huyện Lấp Vò", "period": {"end": "2026-12-05"}},
        {"use": "home", "district": "Huyện Cao Lãnh", "period": {"start": "2026-12-06"}}]}
    assert patient_district(moved) == "Huyện Cao Lãnh"
    assert patient_district(moved, date(2026, 12, 5)) == "Huyện Lấp Vò"  # on the 5th it was still current
