"""``HEAD`` answers as ``GET`` would, without the body, in every environment: where responses are validated
against the spec (``SEN_ENV=test``), connexion's validator took the empty body for JSON the spec did not
describe and answered 500 (``HEAD /healthz`` on every service)."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.support import admin_headers, app_client

pytestmark = pytest.mark.integration

SERVICES = ("ehr", "teleconsult", "billing")
SERVED = {"ehr": "Organization", "teleconsult": "Schedule", "billing": "Account"}  # a type each serves
_RESOURCE = {"Organization": {"resourceType": "Organization", "name": "Trạm Y tế xã Mỹ Hội"},
             "Schedule": {"resourceType": "Schedule", "actor": [{"reference": "Practitioner/bs-lan"}]},
             "Account": {"resourceType": "Account", "status": "active", "name": "Quầy thu ngân"}}


def _db(service: str) -> str:
    return f"sen_head{uuid.uuid4().hex[:8]}_{service[:2]}"


@pytest.mark.parametrize("service", SERVICES)
def test_head_answers_as_get_without_the_body_where_responses_are_validated(service, base_env, mongo_client,
                                                                            dev_key) -> None:
    assert base_env["SEN_ENV"] == "test"  # responses validated against the spec
    with app_client(service, base_env, _db(service), mongo_client) as (client, _app):
        H = admin_headers(dev_key)
        rtype = SERVED[service]
        made = client.post(f"/fhir/{rtype}", content=json.dumps(_RESOURCE[rtype]), headers=H)
        assert made.status_code == 201, made.text
        rid = made.json()["id"]
        for path, headers in (("/healthz", {}), (f"/fhir/{rtype}/{rid}", H), (f"/fhir/{rtype}/{rid}/_history/1", H),
                              ("/fhir/metadata", H)):
            got = client.get(path, headers=headers)
            head = client.head(path, headers=headers)
            assert got.status_code == 200 and head.status_code == 200, (path, head.status_code, head.text)
            assert head.content == b"", path
            assert head.headers["content-type"] == got.headers["content-type"], path
            if "etag" in got.headers:
                assert head.headers["etag"] == got.headers["etag"], path
        # a HEAD of what is missing is the GET's 404, without the body
        assert client.head(f"/fhir/{rtype}/nope", headers=H).status_code == 404
