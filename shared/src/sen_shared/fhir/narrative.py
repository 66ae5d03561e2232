"""Narrative XHTML checked on write: no active content in any ``text.div``.

A resource's narrative (``Patient.text.div``, ``Composition.section[0].text.div``, a contained
resource's) is XHTML that other systems show as is: a hospital HIS, the national platform, a
browser-based FHIR viewer. FHIR R4 (narrative.html, invariant txt-1) allows "only the basic html
formatting elements and attributes" and says the XHTML "SHALL NOT contain a head, a body, external
stylesheet references, scripts, forms, base/link/xlink, frames, iframes and objects". ``fhir.resources``
checks none of it (a ``<script>`` or an unquoted ``onerror=`` was stored and served back), so every
write checks each ``div`` here (:func:`issues`, asked by ``validate.validate_resource``):

- it is well-formed XML whose root is a ``div`` (in the XHTML namespace, or in none); HTML's named
  entities (``&nbsp;``) are read as their characters; no DOCTYPE, entity declaration or processing
  instruction (``<?xml-stylesheet?>`` is an external stylesheet);
- every element is one of :data:`ELEMENTS` (the HTML 4 formatting, list, table, image and link
  elements the FHIR validator allows), in the XHTML namespace (no SVG, no MathML);
- every attribute is one of :data:`ATTRIBUTES` for any element or one of :data:`ELEMENT_ATTRIBUTES`
  for its element: never an event handler (``onload``), never ``xlink:href``;
- a link or image URL (``href``, ``src``, ``cite``, ``longdesc``, ``usemap``) is relative or of a
  scheme in :data:`SCHEMES`; an image may be ``data:image/...``; never ``javascript:``, ``vbscript:``,
  ``file:`` or another ``data:``;
- a ``style`` holds no script (``expression(``, ``javascript:``, ``-moz-binding``, ``behavior``) and
  fetches nothing (``@import``, a ``url(...)`` that is not ``data:image/``).

The official R4 examples' 6,563 narratives all pass (``tests/conformance``). A refusal is a 400
OperationOutcome (``invariant``) naming the ``div`` by its FHIRPath and what in it is refused.
"""

from __future__ import annotations

import html.entities
import re
from collections.abc import Iterator
from typing import Any
from xml.etree import ElementTree

XHTML = "http://www.w3.org/1999/xhtml"
XML_NS = "http://www.w3.org/XML/1998/namespace"

ELEMENTS = frozenset({
    "p", "br", "div", "h1", "h2", "h3", "h4", "h5", "h6", "a", "span", "b", "em", "i", "strong", "small", "big",
    "tt", "dfn", "q", "var", "abbr", "acronym", "cite", "blockquote", "hr", "address", "bdo", "kbd", "sub", "sup",
    "ul", "ol", "li", "dl", "dt", "dd", "pre", "table", "caption", "colgroup", "col", "thead", "tr", "tfoot",
    "tbody", "th", "td", "code", "samp", "img", "map", "area"})
ATTRIBUTES = frozenset({
    "title", "style", "class", "id", "lang", "xml:lang", "dir", "accesskey", "tabindex",
    "span", "width", "align", "valign", "char", "charoff", "abbr", "axis", "headers", "scope", "rowspan", "colspan"})
ELEMENT_ATTRIBUTES = {
    "a": frozenset({"href", "name"}),
    "img": frozenset({"src", "alt", "border", "usemap", "height", "longdesc", "hspace", "vspace"}),
    "area": frozenset({"href", "shape", "coords", "alt", "nohref"}),
    "map": frozenset({"name"}),
    "blockquote": frozenset({"cite"}),
    "q": frozenset({"cite"}),
    "table": frozenset({"border", "cellpadding", "cellspacing", "summary", "frame", "rules", "bgcolor"}),
    "td": frozenset({"nowrap", "bgcolor"}),
    "th": frozenset({"nowrap", "bgcolor"}),
    "tr": frozenset({"bgcolor"}),
    "ol": frozenset({"start", "type"}),
    "ul": frozenset({"type"}),
    "li": frozenset({"value", "type"}),
    "hr": frozenset({"size", "noshade"}),
}
URL_ATTRIBUTES = frozenset({"href", "src", "cite", "longdesc", "usemap"})
SCHEMES = frozenset({"http", "https", "mailto", "tel", "ftp", "urn"})

# what browsers drop from a URL before reading its scheme (``java\tscript:``, a leading space or NUL)
_URL_IGNORED = re.compile(r"[\x00-\x20\x7f]+")
_SCHEME = re.compile(r"([a-z][a-z0-9+.\-]*):")
_CSS_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_CSS_URL = re.compile(r"url\(['\"]?([^)'\"]*)")
_CSS_ACTIVE = ("expression(", "javascript:", "vbscript:", "-moz-binding", "behavior:", "@import")
_DECLARATIONS = ("<!DOCTYPE", "<!ENTITY", "<?")
_HTML_ENTITY = re.compile(r"&([A-Za-z][A-Za-z0-9]*);")
_XML_ENTITIES = frozenset({"amp", "lt", "gt", "quot", "apos"})


class NarrativeRefused(ValueError):
    """What in a narrative's XHTML is not allowed (said to the client)."""


def divs(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every ``div`` (Narrative.div, the only element of that name in FHIR R4) under ``value``, with its
    FHIRPath (``path``: the resource type, then ``.text.div``, ``.section[0].text.div``...)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "div":
                yield f"{path}.div", item
            elif isinstance(item, dict | list):
                yield from divs(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from divs(item, f"{path}[{i}]")


def issues(resource: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    """The OperationOutcome issue (``invariant``) of the first narrative of ``resource`` holding what
    FHIR's narrative rules refuse (the module's docstring), naming it by its FHIRPath; [] when all pass."""
    for where, div in divs(resource, rtype):
        try:
            check_div(div)
        except NarrativeRefused as why:
            return [{"severity": "error", "code": "invariant", "expression": [where],
                     "diagnostics": f"{where}: the narrative may hold only basic HTML formatting, never active "
                                    f"content (FHIR R4 txt-1): {why}"}]
    return []


def check_div(div: Any) -> None:
    """Raise :class:`NarrativeRefused` saying what is not allowed in the XHTML ``div``."""
    if not isinstance(div, str):
        raise NarrativeRefused("the div is not a string of XHTML")
    if any(declaration in div for declaration in _DECLARATIONS):
        raise NarrativeRefused("a DOCTYPE, an entity declaration or a processing instruction is not allowed")
    try:
        # no DOCTYPE got here, so no entity is declared (no expansion bomb, no external entity): the
        # standard library's parser reads what is left as defusedxml would
        root = ElementTree.fromstring(_HTML_ENTITY.sub(_character_reference, div))  # noqa: S314
    except ElementTree.ParseError as err:
        raise NarrativeRefused(f"it is not well-formed XHTML ({err})") from None
    namespace = _namespace(root.tag)
    if _local(root.tag) != "div" or namespace not in ("", XHTML):
        raise NarrativeRefused(f"its root must be a div in the XHTML namespace, not <{_local(root.tag)}>")
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue  # a comment
        name = _local(element.tag)
        if _namespace(element.tag) != namespace or name not in ELEMENTS:
            raise NarrativeRefused(f"<{name}> is not allowed")
        for attribute, value in element.attrib.items():
            _check_attribute(name, attribute, value)


def _check_attribute(element: str, attribute: str, value: str) -> None:
    name = "xml:" + _local(attribute) if _namespace(attribute) == XML_NS else attribute
    if _namespace(attribute) not in ("", XML_NS) or (
            name not in ATTRIBUTES and name not in ELEMENT_ATTRIBUTES.get(element, ())):
        shown = name if _namespace(attribute) in ("", XML_NS) else f"{{{_namespace(attribute)}}}{_local(attribute)}"
        raise NarrativeRefused(f"the attribute {shown!r} of <{element}> is not allowed")
    if name in URL_ATTRIBUTES:
        _check_url(element, name, value)
    elif name == "style":
        _check_style(element, value)


def _check_url(element: str, attribute: str, value: str) -> None:
    url = _URL_IGNORED.sub("", value).lower()
    scheme = _SCHEME.match(url)
    if scheme is None or scheme.group(1) in SCHEMES:
        return  # relative (a contained resource's #id, Binary/...), or a link out
    if scheme.group(1) == "data" and element == "img" and attribute == "src" and url.startswith("data:image/"):
        return
    raise NarrativeRefused(f"the {attribute} of <{element}> may not be a {scheme.group(1)}: URL")


def _check_style(element: str, value: str) -> None:
    css = _URL_IGNORED.sub("", _CSS_COMMENT.sub("", value)).replace("\\", "").lower()
    for active in _CSS_ACTIVE:
        if active in css:
            raise NarrativeRefused(f"the style of <{element}> may not use {active.rstrip('(:')}")
    for target in _CSS_URL.findall(css):
        if not target.startswith("data:image/"):
            raise NarrativeRefused(f"the style of <{element}> may not fetch a url(); only data:image/ is allowed")


def _character_reference(entity: re.Match[str]) -> str:
    """HTML's named entity (``&nbsp;``) as a character reference XML reads (``&#160;``); XML's own and an
    unknown name left as written (an unknown one is then a well-formedness error)."""
    name = entity.group(1)
    code = html.entities.name2codepoint.get(name)
    return entity.group() if name in _XML_ENTITIES or code is None else f"&#{code};"


def _namespace(tag: str) -> str:
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]
