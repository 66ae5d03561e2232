import pytest
from sen_shared.fhir.search import SearchError, parse_search
from sen_shared.fhir.search.errors import UnsupportedSearch
from sen_shared.fhir.search.parse import DateValue, QuantityValue, TokenValue, split_values


def test_or_values_and_escaping():
    assert split_values(r"a,b\,c,d") == ["a", "b,c", "d"]
    req = parse_search("Patient", [("gender", "male,female"), ("gender", "other")])
    assert [[v.raw for v in c.values] for c in req.criteria] == [["male", "female"], ["other"]]


def test_token_forms():
    req = parse_search("Patient", [("identifier", "http://sys|123"), ("identifier", "|x"),
                                   ("identifier", "123"), ("identifier", "http://sys|")])
    assert [c.values[0].parsed for c in req.criteria] == [
        TokenValue("http://sys", "123"), TokenValue("", "x"), TokenValue(None, "123"), TokenValue("http://sys", None)]


def test_prefixes_and_quantity():
    req = parse_search("Observation", [("date", "ge2020-01"), ("value-quantity", "lt5.4|http://unitsofmeasure.org|mg")])
    d = req.criteria[0].values[0].parsed
    assert isinstance(d, DateValue) and d.prefix == "ge" and d.precision == 7
    q = req.criteria[1].values[0].parsed
    assert isinstance(q, QuantityValue) and q.prefix == "lt" and str(q.number.value) == "5.4"
    assert (q.system, q.code) == ("http://unitsofmeasure.org", "mg")
    assert str(q.number.lo) == "5.35" and str(q.number.hi) == "5.45"


@pytest.mark.parametrize(("name", "value"), [
    ("nosuch", "x"),                      # unknown parameter
    ("name:below", "x"),                  # modifier not valid for strings
    ("birthdate", "2020-13-01"),          # malformed date
    ("birthdate", "soon"),
    ("_count", "ten"),
    ("_sort", "nosuch"),
    ("_total", "maybe"),
    ("general-practitioner:Patient", "1"),  # not an allowed target
    ("gender:missing", "maybe"),
    ("_include", "Patient:gender"),         # not a reference
    ("name.family", "x"),                   # chain on a non-reference
])
def test_errors(name, value):
    with pytest.raises(SearchError) as exc:
        parse_search("Patient", [(name, value)])
    assert exc.value.status == 400 and exc.value.location == name


def test_number_errors():
    with pytest.raises(SearchError):
        parse_search("RiskAssessment", [("probability", "gtabc")])


def test_unsupported_is_an_error_unless_lenient():
    with pytest.raises(UnsupportedSearch):
        parse_search("Patient", [("_text", "x")])
    assert parse_search("Patient", [("_text", "x")], lenient=True).ignored == ["_text"]


def test_lenient_drops_unknown_only():
    req = parse_search("Patient", [("nosuch", "1"), ("name", "an")], lenient=True)
    assert req.ignored == ["nosuch"] and [c.code for c in req.criteria] == ["name"]
    with pytest.raises(SearchError):
        parse_search("Patient", [("birthdate", "bad")], lenient=True)


def test_unknown_type():
    with pytest.raises(SearchError) as exc:
        parse_search("Nope", [])
    assert exc.value.status == 404


def test_chain_with_type_and_without():
    req = parse_search("Observation", [("subject:Patient.name", "nguyen")])
    (c,) = req.criteria
    assert c.code == "subject" and list(c.chain) == ["Patient"]
    assert c.chain["Patient"].criteria[0].code == "name"
    req = parse_search("Observation", [("patient.identifier", "urn:vn:cccd|001")])
    assert list(req.criteria[0].chain) == ["Patient"]  # Group has no identifier? it does: both kept
    req = parse_search("Encounter", [("subject.organization.name", "bv")])
    assert req.criteria[0].chain["Patient"].criteria[0].chain["Organization"].criteria[0].code == "name"


def test_has():
    req = parse_search("Patient", [("_has:Observation:patient:code", "1234-5")])
    (c,) = req.criteria
    assert c.has.resource_type == "Observation" and c.has.reference_param == "patient"
    assert c.has.request.criteria[0].code == "code" and c.has.request.returns == "patient"
    with pytest.raises(SearchError):
        parse_search("Patient", [("_has:Observation:code:code", "x")])
    req = parse_search("Patient", [("_has:Observation:patient:_has:AuditEvent:entity:agent", "Practitioner/1")])
    assert req.criteria[0].has.request.criteria[0].has.resource_type == "AuditEvent"


def test_result_parameters():
    req = parse_search("Observation", [
        ("_sort", "-date,code"), ("_count", "5000"), ("_total", "accurate"), ("_summary", "count"),
        ("_elements", "id,code"), ("_include", "Observation:patient"), ("_include:iterate", "Patient:organization"),
        ("_revinclude", "Provenance:target"), ("_cursor", "abc"), ("_format", "json")])
    assert [(s.code, s.descending) for s in req.sort] == [("date", True), ("code", False)]
    assert req.count == 1000 and req.total == "accurate" and req.summary == "count"
    assert req.elements == ["id", "code"] and req.cursor == "abc"
    assert [(i.source_type, i.param, i.iterate) for i in req.include] == [
        ("Observation", "patient", False), ("Patient", "organization", True)]
    assert req.revinclude[0].reverse and req.revinclude[0].param == "target"


def test_common_parameters():
    req = parse_search("Patient", [("_id", "a,b"), ("_lastUpdated", "gt2024-01-01"), ("_tag", "s|c"),
                                   ("_profile", "http://p"), ("_security", "R"), ("_source", "http://s")])
    assert [c.code for c in req.criteria] == ["_id", "_lastUpdated", "_tag", "_profile", "_security", "_source"]
