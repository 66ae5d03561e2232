"""References shown as names: a Task's owner, a schedule's actor, a minutes participant."""

from __future__ import annotations

import pytest
from sen_portal import caches
from sen_portal.web import directory
from sen_portal.web.backend import BackendError

BUNDLES = {
    "Organization": {"resourceType": "Bundle", "entry": [
        {"resource": {"resourceType": "Organization", "id": "bvdk-dong-thap", "name": "Bệnh viện Đa khoa Đồng Tháp"}}]},
    "Practitioner": {"resourceType": "Bundle", "entry": [
        {"resource": {"resourceType": "Practitioner", "id": "bs-an",
                      "name": [{"family": "Nguyễn", "given": ["Văn", "An"]}]}}]},
}


@pytest.fixture()
def ehr(monkeypatch):
    asked: list[str] = []

    def fhir_get(service, path, params=None, **_):
        rtype = path.rsplit("/", 1)[-1]
        asked.append(rtype)
        if rtype not in BUNDLES:
            raise BackendError("down", service)
        return BUNDLES[rtype]

    monkeypatch.setattr(directory, "fhir_get", fhir_get)
    caches.forget_all()  # the names of this fake, not of a test before
    return asked


def test_a_reference_reads_as_the_name_of_what_it_points_to(ehr):
    assert directory.party({"reference": "Organization/bvdk-dong-thap"}) == "Bệnh viện Đa khoa Đồng Tháp"
    assert directory.party({"reference": "Practitioner/bs-an"}) == "Nguyễn Văn An"
    assert directory.party({"reference": "Practitioner/bs-an", "display": "BS. An"}) == "BS. An"
    assert directory.party("Organization/nowhere") == "Organization/nowhere"  # unknown: the reference
    assert directory.party(None) == "—"
    assert ehr == ["Organization", "Practitioner"]  # one search per type, then kept
    directory.party({"reference": "Organization/bvdk-dong-thap"})
    assert ehr == ["Organization", "Practitioner"]


def test_when_the_ehr_does_not_answer_the_reference_is_shown_and_not_asked_again_at_once(ehr, monkeypatch):
    monkeypatch.setitem(BUNDLES, "Organization", None)
    monkeypatch.delitem(BUNDLES, "Organization")
    assert directory.party({"reference": "Organization/bvdk-dong-thap"}) == "Organization/bvdk-dong-thap"
    assert directory.party({"reference": "Organization/bvdk-dong-thap"}) == "Organization/bvdk-dong-thap"
    assert ehr == ["Organization"]  # the failure is kept a minute, not retried on every page


def test_a_search_refused_to_one_user_is_not_kept_for_the_others(ehr, monkeypatch):
    """The EHR refuses a cashier the Organization search (403); the next user, allowed, reads the names."""
    allowed = directory.fhir_get
    refused = []

    def as_cashier(service, path, params=None, **kw):
        refused.append(path)
        raise BackendError("refused", service, 403, "the cashier role reads Patient and Coverage only")

    monkeypatch.setattr(directory, "fhir_get", as_cashier)
    assert directory.org_names() == {}  # the cashier's receipt: the facility's id instead
    monkeypatch.setattr(directory, "fhir_get", allowed)
    assert directory.party({"reference": "Organization/bvdk-dong-thap"}) == "Bệnh viện Đa khoa Đồng Tháp"
    assert refused == ["/fhir/Organization"] and ehr == ["Organization"]
