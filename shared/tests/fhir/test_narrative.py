"""A narrative's XHTML holds no active content (:mod:`sen_shared.fhir.narrative`, FHIR R4 txt-1): every write
refuses a script, an event handler, a ``javascript:`` link, a form or frame, a style that runs or fetches."""

from __future__ import annotations

import pytest
from sen_shared.fhir.narrative import NarrativeRefused, check_div, divs
from sen_shared.fhir.outcome import FhirError
from sen_shared.fhir.validate import validate_resource

X = 'xmlns="http://www.w3.org/1999/xhtml"'


@pytest.mark.parametrize(("inner", "said"), [
    ("<script>alert(1)</script>", "<script>"),
    ('<img src="x" onerror="alert(1)"/>', "'onerror'"),
    ('<p onmouseover="alert(1)">x</p>', "'onmouseover'"),
    ('<img src=x onerror=alert(1)/>', "not well-formed"),
    ('<a href="javascript:alert(1)">x</a>', "javascript: URL"),
    ('<a href=" JaVa&#9;ScRiPt:alert(1)">x</a>', "javascript: URL"),
    ('<a href="vbscript:msgbox(1)">x</a>', "vbscript: URL"),
    ('<a href="data:text/html,&lt;script&gt;alert(1)&lt;/script&gt;">x</a>', "data: URL"),
    ('<img src="data:text/html;base64,PHNjcmlwdD4="/>', "data: URL"),
    ('<img src="file:///etc/passwd"/>', "file: URL"),
    ('<a xmlns:xlink="http://www.w3.org/1999/xlink" xlink:href="javascript:alert(1)">x</a>', "xlink"),
    ('<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "<svg>"),
    ('<form action="https://evil.example/"><input name="pw"/></form>', "<form>"),
    ('<iframe src="https://evil.example/"/>', "<iframe>"),
    ('<object data="x.swf"/>', "<object>"),
    ('<link rel="stylesheet" href="https://evil.example/x.css"/>', "<link>"),
    ('<a href="https://x.example/" target="_blank">x</a>', "'target'"),
    ('<p style="width: expression(alert(1))">x</p>', "expression"),
    ('<p style="width: exp/**/ression(alert(1))">x</p>', "expression"),
    ('<p style="background: url(https://evil.example/track.png)">x</p>', "url()"),
    ('<p style="-moz-binding: url(x.xml#x)">x</p>', "-moz-binding"),
])
def test_active_content_is_refused(inner, said):
    with pytest.raises(NarrativeRefused) as err:
        check_div(f"<div {X}>{inner}</div>")
    assert said in str(err.value)


@pytest.mark.parametrize("div", [
    '<!DOCTYPE div [<!ENTITY a "b">]><div xmlns="http://www.w3.org/1999/xhtml">&a;</div>',
    '<?xml-stylesheet href="https://evil.example/x.xsl"?><div xmlns="http://www.w3.org/1999/xhtml">x</div>',
    '<p xmlns="http://www.w3.org/1999/xhtml">x</p>',
    '<div xmlns="http://www.w3.org/2000/svg">x</div>',
    "plain text",
    42,
])
def test_a_div_that_is_no_xhtml_div_is_refused(div):
    with pytest.raises(NarrativeRefused):
        check_div(div)


@pytest.mark.parametrize("div", [
    f"<div {X}><p>Nguyễn Văn An, 45 tuổi: tăng huyết áp độ 2.</p></div>",
    f"<div {X}><p>Nguyễn&nbsp;Văn &amp; &lt;An&gt;</p></div>",  # HTML's named entities read as characters
    "<div>x</div>",  # no namespace declared: read as XHTML
    f'<div {X}><a href="https://sen.vn/">x</a> <a href="Patient/bn-1">p</a> <a href="#c1">c</a> '
    f'<a href="mailto:bs@sen.vn">m</a> <a name="top">t</a></div>',
    f'<div {X}><img src="data: image/png;base64,iVBORw0KGgo=" alt="x" style="width: 2px"/>'
    f'<table class="grid" border="1" cellpadding="2">'
    f'<tr><td style="background-image: url(data: image/png;base64,AA==)" '
    f'colspan="2">x</td></tr></table><!-- a comment --><span xml:lang="vi" title="t">y</span></div>',
])
def test_basic_formatting_passes(div):
    check_div(div)


def test_every_div_of_a_resource_is_found_by_its_fhirpath():
    composition = {"resourceType": "Composition", "text": {"div": "a"},
                   "section": [{"text": {"div": "b"}, "section": [{"text": {"div": "c"}}]}],
                   "contained": [{"resourceType": "Patient", "text": {"div": "d"}}]}
    assert list(divs(composition, "Composition")) == [
        ("Composition.text.div", "a"), ("Composition.section[0].text.div", "b"),
        ("Composition.section[0].section[0].text.div", "c"), ("Composition.contained[0].text.div", "d")]


def test_a_write_with_a_script_in_its_narrative_is_a_400_naming_the_div():
    patient = {"resourceType": "Patient", "name": [{"family": "Nguyễn"}], "text": {
        "status": "generated", "div": f'<div {X}><p>ok</p><img src="x" onerror="alert(document.cookie)"/></div>'}}
    with pytest.raises(FhirError) as err:
        validate_resource(patient)
    assert err.value.status == 400
    issue = err.value.to_outcome()["issue"][0]
    assert issue["code"] == "invariant" and issue["expression"] == ["Patient.text.div"]
    assert "onerror" in issue["diagnostics"]
    # an entry of a transaction is named by where it is in the Bundle
    with pytest.raises(FhirError) as err:
        validate_resource(patient, where="Bundle.entry[2].resource")
    assert err.value.to_outcome()["issue"][0]["expression"] == ["Bundle.entry[2].resource.text.div"]
    patient["text"]["div"] = f"<div {X}><p>ok</p></div>"
    assert validate_resource(patient) == "Patient"
