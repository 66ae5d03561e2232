"""Chained and reverse-chained (``_has``) searches see only what the caller may search (real FerretDB).

Security review (session 28): a search's own results were limited to what the caller reaches, but the
sub-search of a chain or a ``_has`` ran over every facility's records. A type the caller searches freely
(Practitioner, Organization for clinic and doctor; Patient for the cashier) then answered questions about
records the caller may not read: a clinic learnt that another facility's patient had an Observation by a
practitioner (``Practitioner?_has:Observation:performer:subject=Patient/<id>``), and a cashier, who reads no
clinical data, listed the patients holding a given diagnosis code (``Patient?_has:Observation:subject:code=``).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.test_ehr_access import clinic, ids_of, world
from tests.integration.test_ehr_consult_record import bearer, ehr, ehr_env, worker

pytestmark = pytest.mark.integration
__all__ = ["ehr", "ehr_env", "worker", "world"]


def test_a_reverse_chain_answers_only_from_records_the_clinic_reaches(ehr: Any, world: dict[str, Any],
                                                                       dev_key: Any) -> None:
    h, pract = clinic(dev_key), f"Practitioner/{world['pract']}"
    own = ehr.get(f"/fhir/Practitioner?_has:Observation:performer:subject=Patient/{world['pa']}", headers=h)
    assert own.status_code == 200 and ids_of(own.json()) == {pract}, own.text  # its own patient's: found
    other = ehr.get(f"/fhir/Practitioner?_has:Observation:performer:subject=Patient/{world['pb']}", headers=h)
    assert other.status_code == 200, other.text
    assert ids_of(other.json()) == set(), "another facility's Observation answered a clinic's search"
    # as an admin sees it, the practitioner did observe facility B's patient
    admin = ehr.get(f"/fhir/Practitioner?_has:Observation:performer:subject=Patient/{world['pb']}",
                    headers=world["admin"])
    assert ids_of(admin.json()) == {pract}


def test_a_forward_chain_answers_only_from_patients_the_doctor_reaches(ehr: Any, world: dict[str, Any],
                                                                       dev_key: Any) -> None:
    """A doctor of another hub: Practitioner?_has:Observation:performer:patient.name=tran named facility B's
    patient Trần through the chain of a chain."""
    h = bearer(dev_key, "doctor", facility="hub-khac", practitioner="pr-khac", sub="doctor-other-hub")
    r = ehr.get("/fhir/Practitioner?_has:Observation:performer:patient.name=tran", headers=h)
    assert r.status_code == 200 and ids_of(r.json()) == set(), r.text
    r = ehr.get("/fhir/Practitioner?_has:Observation:performer:patient.name=tran", headers=world["admin"])
    assert ids_of(r.json()) == {f"Practitioner/{world['pract']}"}


def test_a_cashier_cannot_search_patients_by_their_clinical_records(ehr: Any, world: dict[str, Any],
                                                                    dev_key: Any) -> None:
    """The cashier reads Patient and Coverage only: a search of patients through their Observations (or a chain
    into any type the cashier may not search) is refused for the role, whoever the patients are."""
    h = bearer(dev_key, "cashier", facility="fac-a", sub="cashier-chain")
    for query in ("Patient?_has:Observation:subject:code=8480-6",
                  f"Patient?_has:Observation:subject:performer=Practitioner/{world['pract']}",
                  "Coverage?beneficiary:Patient._has:Observation:subject:code=8480-6",
                  "Coverage?payor:Organization.name=x"):
        r = ehr.get(f"/fhir/{query}", headers=h)
        assert r.status_code == 403, (query, r.status_code, r.text)
        outcome = r.json()
        assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "forbidden"
    # what the cashier may search still chains: patients through their Coverage
    r = ehr.get("/fhir/Patient?_has:Coverage:beneficiary:status=active", headers=h)
    assert r.status_code == 200, r.text
