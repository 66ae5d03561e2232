"""Unit tests of the FHIR REST engine's pure parts: validation, ETags, shaping, patches, bundle urls."""

from __future__ import annotations

import json

import pytest
from sen_shared.fhir.bundle import parse_url
from sen_shared.fhir.http import FhirRequest, response_type, shape_resource
from sen_shared.fhir.outcome import FhirError
from sen_shared.fhir.patch import apply_patch
from sen_shared.fhir.rest import compartment_param
from sen_shared.fhir.store import parse_etag, stamp
from sen_shared.fhir.store_time import iso, now
from sen_shared.fhir.validate import check_id, validate_resource


def test_valid_resource_passes():
    assert validate_resource({"resourceType": "Patient", "name": [{"family": "Nguyễn"}]}) == "Patient"


@pytest.mark.parametrize("resource,expression", [
    ({"resourceType": "Patient", "name": [{"family": 1}]}, "Patient.name[0].family"),
    ({"resourceType": "Patient", "bogus": 1}, "Patient.bogus"),
    ({"resourceType": "Observation", "code": {"text": "x"}}, "Observation.status"),
    ({"resourceType": "Patient", "id": "bad id"}, "Patient.id"),
    ({"resourceType": "Spaceship"}, "resourceType"),
])
def test_invalid_resource_names_the_element(resource, expression):
    with pytest.raises(FhirError) as exc:
        validate_resource(resource)
    assert exc.value.status == 400
    assert exc.value.to_outcome()["issue"][0]["expression"] == [expression]


def test_type_mismatch_and_non_object():
    with pytest.raises(FhirError):
        validate_resource({"resourceType": "Patient"}, expected_type="Observation")
    with pytest.raises(FhirError):
        validate_resource([1, 2])


@pytest.mark.parametrize("value", ["a" * 65, "a_b", "", "é", None, 5])
def test_bad_ids(value):
    with pytest.raises(FhirError):
        check_id(value)


def test_etags():
    assert parse_etag('W/"3"') == 3
    assert parse_etag('"12"') == 12
    assert parse_etag(None) is None
    assert parse_etag("W/\"x\"") == -1


def test_stamp_sets_server_owned_meta():
    when = now()
    res = stamp({"resourceType": "Patient", "meta": {"versionId": "99", "profile": ["p"]}}, "a", 2, when)
    assert res["id"] == "a"
    assert res["meta"] == {"versionId": "2", "lastUpdated": iso(when), "profile": ["p"]}
    assert iso(when).endswith("Z")


def test_shape_summary_and_elements():
    res = {"resourceType": "Patient", "id": "1", "meta": {}, "name": [{"family": "A"}], "text": {"div": "x"},
           "maritalStatus": {"text": "M"}}
    s = shape_resource(res, "true", None)
    assert "name" in s and "text" not in s and "maritalStatus" not in s
    e = shape_resource(res, None, ["maritalStatus"])
    assert set(e) == {"resourceType", "id", "meta", "maritalStatus"}
    assert e["meta"]["tag"][0]["code"] == "SUBSETTED"
    assert shape_resource(res, None, None) is res


def test_elements_go_into_elements():
    """``content.attachment.title``: each content item keeps its attachment's title only; an item
    without one is left out, a name past a primitive keeps nothing, a whole element stays whole."""
    doc = {"resourceType": "DocumentReference", "id": "d", "status": "current",
           "subject": {"reference": "Patient/1", "display": "Lan"},
           "content": [{"attachment": {"title": "a.pdf", "data": "QQ=="}, "format": {"code": "x"}},
                       {"attachment": {"data": "Qg=="}}]}
    stored = json.loads(json.dumps(doc))
    e = shape_resource(doc, None, ["content.attachment.title", "subject.reference", "status.x"])
    assert e["content"] == [{"attachment": {"title": "a.pdf"}}]
    assert e["subject"] == {"reference": "Patient/1"} and "status" not in e
    whole = shape_resource(doc, None, ["content", "content.attachment.title"])
    assert whole["content"] == doc["content"]
    assert doc == stored  # the resource itself is not changed


def test_negotiation():
    assert response_type(FhirRequest("GET")) == "application/fhir+json"
    assert response_type(FhirRequest("GET", params=[("_format", "json")])) == "application/fhir+json"
    assert response_type(FhirRequest("GET", headers={"accept": "application/json"})) == "application/json"
    with pytest.raises(FhirError) as exc:
        response_type(FhirRequest("GET", params=[("_format", "xml")]))
    assert exc.value.status == 406


def test_prefer_parsing():
    req = FhirRequest("POST", headers={"prefer": "return=minimal, handling=lenient"})
    assert req.prefer("return") == "minimal" and req.prefer("handling") == "lenient"


def test_patch():
    res = {"resourceType": "Patient", "id": "1", "gender": "male"}
    out = apply_patch(res, [{"op": "replace", "path": "/gender", "value": "female"}])
    assert out["gender"] == "female" and res["gender"] == "male"
    with pytest.raises(FhirError) as exc:
        apply_patch(res, [{"op": "test", "path": "/gender", "value": "female"}])
    assert exc.value.status == 422
    with pytest.raises(FhirError):
        apply_patch(res, {"op": "replace"})
    with pytest.raises(FhirError):
        apply_patch(res, [{"op": "explode", "path": "/x"}])


def test_bundle_urls():
    t = parse_url("Patient/123/_history/2", "http://h/fhir", "u")
    assert (t.resource_type, t.rid, t.tail, t.vid) == ("Patient", "123", "_history", "2")
    t = parse_url("http://h/fhir/Patient?identifier=a|b", "http://h/fhir", "u")
    assert t.resource_type == "Patient" and t.params == [("identifier", "a|b")] and t.has_query
    with pytest.raises(FhirError):
        parse_url("Patient/bad id", "", "u")
    with pytest.raises(FhirError):
        parse_url("", "", "u")


def test_compartment_params():
    assert compartment_param("Patient") == "_id"
    assert compartment_param("Observation") == "patient"
    assert compartment_param("Encounter") == "patient"
    assert compartment_param("Practitioner") is None


@pytest.mark.parametrize("environ", [
    {"HTTP_HOST": "sen.example:8443", "wsgi.url_scheme": "https", "CONTENT_TYPE": "application/fhir+json",
     "CONTENT_LENGTH": "12", "HTTP_X_CORRELATION_ID": "abc", "HTTP_ACCEPT": "*/*"},
    {"SERVER_NAME": "10.0.0.5", "SERVER_PORT": "8080", "CONTENT_LENGTH": "", "HTTP_IF_NONE_EXIST": "a=b"},
    {"HTTP_HOST": "sen.vn", "HTTP_CONTENT_TYPE": "odd", "HTTP_PREFER": "return=minimal"},
])
def test_the_request_headers_and_base_are_flasks_own(environ):
    """from_flask's headers and base URL (read from the environ, the base kept per host) are what
    Flask's request gives: ``{k.lower(): v for k, v in request.headers.items()}`` and ``host_url``."""
    import flask
    from sen_shared.fhir import http as fhir_http

    app = flask.Flask("t")
    with app.test_request_context("/fhir/Patient", method="POST", environ_overrides=environ):
        req = flask.request
        flasks = {k.lower(): v for k, v in req.headers.items()}
        assert fhir_http._headers(req.environ) == flasks
        made = fhir_http.from_flask("Patient", body=False)
        assert made.headers == flasks
        assert made.base == req.host_url.rstrip("/") + "/fhir"
        again = fhir_http.from_flask("Patient", body=False, base_path="/other")
        assert again.base == req.host_url.rstrip("/") + "/other"


def test_an_untrusted_host_is_refused_every_time():
    import flask
    from sen_shared.fhir import http as fhir_http
    from werkzeug.exceptions import SecurityError

    app = flask.Flask("t")
    app.config["TRUSTED_HOSTS"] = ["sen.example"]
    for _ in range(2):
        with app.test_request_context("/fhir/Patient", environ_overrides={"HTTP_HOST": "evil.example"}):
            with pytest.raises(SecurityError):
                fhir_http.from_flask("Patient", body=False)
    with app.test_request_context("/fhir/Patient", environ_overrides={"HTTP_HOST": "sen.example"}):
        assert fhir_http.from_flask("Patient", body=False).base == "http://sen.example/fhir"
