"""An ended take-on grants nothing: the end record among a pair's documents (pure: no servers)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sen_shared.auth import Principal
from sen_shared.fhir import access
from sen_shared.fhir.access import ENDED, Denied, PatientFacts, active_grants, check, ended_at

B = "Organization/fac-b"
PAIR = "Patient/p|Organization/fac-b"
GEN1 = {"_id": "take-on|Patient/p|Organization/fac-b", "pair": PAIR, "kind": "take-on", "expires": None}
GEN2 = {"_id": "take-on|Patient/p|Organization/fac-b|2", "pair": PAIR, "kind": "take-on", "generation": 2,
        "expires": None}
END1 = {"_id": "take-on-end|Patient/p|Organization/fac-b|1", "pair": PAIR, "kind": ENDED, "ends": GEN1["_id"],
        "created": datetime(2026, 12, 5, 4, 30, tzinfo=UTC)}
REFERRAL = {"_id": "evt-1", "pair": PAIR, "expires": datetime(2099, 1, 1, tzinfo=UTC)}


def test_an_end_record_ends_the_grant_it_names_only() -> None:
    assert active_grants([GEN1]) == [GEN1]
    assert active_grants([GEN1, END1]) == []
    assert active_grants([GEN1, END1, GEN2]) == [GEN2]  # taken on again: the next generation
    assert active_grants([GEN1, END1, REFERRAL]) == [REFERRAL]  # a referral grant is not ended by it
    assert not access.grant_active(END1)  # an end record never grants by itself


def test_the_refusal_says_when_the_take_on_was_ended() -> None:
    assert ended_at([GEN1, END1]) == "2026-12-05T04:30:00Z"
    assert ended_at([GEN1]) is None
    nurse = Principal(sub="n", roles=frozenset({"clinic"}), facility="fac-b", practitioner=None, scopes=frozenset())
    ended = PatientFacts("Patient/p", owners=frozenset({"Organization/fac-a"}), ended={B: "2026-12-05T04:30:00Z"})
    with pytest.raises(Denied, match="take-on of this patient was ended at 2026-12-05T04:30:00Z"):
        check(nurse, "read", "Patient", compartment=True, patients=[ended])
    granted = PatientFacts("Patient/p", owners=frozenset({"Organization/fac-a"}), granted_to=frozenset({B}))
    check(nurse, "read", "Patient", compartment=True, patients=[granted])
