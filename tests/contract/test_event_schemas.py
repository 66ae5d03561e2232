"""Event contracts: examples against schemas, catalog against schemas, AsyncAPI against catalog."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator
from sen_shared.bus import InvalidEvent, load_catalog
from sen_shared.bus.catalog import specs_dir

EVENTS = specs_dir() / "events"
EXAMPLES = sorted((EVENTS / "examples").glob("*.json"))
CATALOG = load_catalog()


def test_there_is_an_example_per_catalog_entry() -> None:
    raw = yaml.safe_load((EVENTS / "catalog.yaml").read_text(encoding="utf-8"))
    stems = {p.stem.split("+")[0] for p in EXAMPLES}
    for key, ev in raw["events"].items():
        expanded = {key.replace("{entity}", e) for e in ev.get("entities", [])} or {key}
        assert stems & expanded, f"no example for {key}"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_validates_against_its_schema(path: Path) -> None:
    event = json.loads(path.read_text(encoding="utf-8"))
    spec = CATALOG.validate(event)
    assert spec.routing_key == path.stem.split("+")[0]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_schema_rejects_extra_data_such_as_a_patient_name(path: Path) -> None:
    event = json.loads(path.read_text(encoding="utf-8"))
    leaky = copy.deepcopy(event)
    leaky["data"]["patientName"] = "Nguyễn Văn A"
    with pytest.raises(InvalidEvent):
        CATALOG.validate(leaky)
    wrong_type = copy.deepcopy(event)
    wrong_type["source"] = "/sen/elsewhere"
    with pytest.raises(InvalidEvent):
        CATALOG.validate(wrong_type)


@pytest.mark.parametrize("path", sorted((EVENTS / "schemas").glob("*.json")), ids=lambda p: p.name)
def test_every_schema_is_a_valid_2020_12_schema(path: Path) -> None:
    schema = json.loads(path.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    assert schema["$id"].endswith("/" + path.name)


def test_catalog_references_only_existing_schemas_and_known_events() -> None:
    raw = yaml.safe_load((EVENTS / "catalog.yaml").read_text(encoding="utf-8"))
    for key, ev in raw["events"].items():
        assert (EVENTS / ev["schema"]).is_file(), f"{key}: {ev['schema']} missing"
        schema = json.loads((EVENTS / ev["schema"]).read_text(encoding="utf-8"))
        for rk in [key.replace("{entity}", e) for e in ev.get("entities", [])] or [key]:
            rule = schema["properties"]["type"]
            if "const" in rule:
                assert rule["const"] == f"vn.sen.{rk}.v1"
            else:
                assert re.fullmatch(rule["pattern"].strip("^$"), f"vn.sen.{rk}.v1"), rk
            assert rk in CATALOG.events
    for purpose, consumer in CATALOG.consumers.items():
        for key in consumer.bind:
            if "*" not in key and "#" not in key:
                assert key in CATALOG.events, f"{purpose} binds unknown event {key}"



def test_no_event_is_declared_for_what_the_server_alone_writes() -> None:
    """The audit trail is written by the server, with no outbox event, and no client can write it
    (``capability.SERVER_WRITTEN``): an ``ehr.auditevent.*`` in the catalog would be a contract nothing keeps."""
    from sen_shared.fhir.capability import SERVER_WRITTEN

    unsendable = {f"ehr.{t.lower()}.{verb}" for t in SERVER_WRITTEN for verb in ("created", "updated", "deleted")}
    assert unsendable.isdisjoint(CATALOG.events), sorted(unsendable & set(CATALOG.events))

def test_asyncapi_lists_every_catalog_event_and_consumer() -> None:
    doc = yaml.safe_load((EVENTS / "asyncapi.yaml").read_text(encoding="utf-8"))
    assert doc["asyncapi"].startswith("3.")
    addresses = {ch["address"] for ch in doc["channels"].values()}
    raw = yaml.safe_load((EVENTS / "catalog.yaml").read_text(encoding="utf-8"))
    assert addresses == set(raw["events"])
    for msg in doc["components"]["messages"].values():
        ref = msg["payload"]["schema"]["$ref"]
        assert (EVENTS / ref).is_file()
        rule = json.loads((EVENTS / ref).read_text())["properties"]["type"]
        if "const" in rule:
            assert msg["name"] == rule["const"]
        else:
            assert re.fullmatch(rule["pattern"].strip("^$"), msg["name"].replace("{entity}", "observation"))
    sent = {op["channel"]["$ref"].split("/")[-1] for op in doc["operations"].values() if op["action"] == "send"}
    assert sent == set(doc["channels"])
    receivers = {op["x-sen-queue"] for op in doc["operations"].values() if op["action"] == "receive"}
    assert receivers == set(CATALOG.consumers)


# envelope attributes the schemas allow that no Sen publisher sets (so no example shows them), and why
NOT_SENT = {"dataschema": "an optional CloudEvents attribute cloudevent.json allows; make_event never sets it"}


def _fields(schema: dict, base: Path, prefix: str = "") -> set[str]:
    """Every field ``schema`` names, as dotted paths (``data.minutes.sites[].display``): its ``properties``
    and those of what it refers to (``$ref``, ``allOf``/``anyOf``/``oneOf``) and of its array ``items``."""
    out: set[str] = set()
    if "$ref" in schema:
        where, _, pointer = schema["$ref"].partition("#")
        target = (base.parent / where) if where else base
        node = json.loads(target.read_text(encoding="utf-8"))
        for part in filter(None, pointer.split("/")):
            node = node[part]
        out |= _fields(node, target, prefix)
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in schema.get(key, []):
            out |= _fields(sub, base, prefix)
    for name, sub in (schema.get("properties") or {}).items():
        out |= {prefix + name} | _fields(sub, base, f"{prefix}{name}.")
    if isinstance(schema.get("items"), dict):
        out |= _fields(schema["items"], base, prefix.removesuffix(".") + "[].")
    return out


def _shown(value: object, prefix: str = "") -> set[str]:
    """The dotted paths of the fields ``value`` (an example) holds, as :func:`_fields` names them."""
    if isinstance(value, dict):
        return {p for k, v in value.items() for p in {prefix + k} | _shown(v, f"{prefix}{k}.")}
    if isinstance(value, list):
        return {p for v in value for p in _shown(v, prefix.removesuffix(".") + "[].")}
    return set()


def _unshown(schema_path: Path, examples: list[dict]) -> set[str]:
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    return _fields(schema, schema_path) - set().union(*(_shown(e) for e in examples)) - set(NOT_SENT)


def test_every_field_of_every_schema_is_shown_by_an_example() -> None:
    """An optional field added to a schema needs an example that carries it (``<routing key>+<case>.json``),
    so a consumer's author sees it and the example is checked against the schema like the others."""
    by_schema: dict[Path, list[dict]] = {}
    for path in EXAMPLES:
        event = json.loads(path.read_text(encoding="utf-8"))
        by_schema.setdefault(CATALOG.validate(event).schema, []).append(event)
    assert {spec.schema for spec in CATALOG.events.values()} == set(by_schema)  # every schema has examples
    unshown = {s.name: sorted(_unshown(s, examples)) for s, examples in by_schema.items()}
    assert {name: fields for name, fields in unshown.items() if fields} == {}
    for name in NOT_SENT:  # what no publisher sets is in no example either
        assert not any(name in json.loads(p.read_text(encoding="utf-8")) for p in EXAMPLES), name


def test_a_field_no_example_shows_is_found() -> None:
    """The check above can fail: a field added to a schema copy, nested in an array's items, no example
    carries; and one the examples hold is not reported."""
    schema_path = EVENTS / "schemas" / "teleconsult.consult.completed.v1.json"
    examples = [json.loads(p.read_text(encoding="utf-8")) for p in EXAMPLES
                if p.stem.split("+")[0] == "teleconsult.consult.completed"]
    assert _unshown(schema_path, examples) == set()
    grown = json.loads(schema_path.read_text(encoding="utf-8"))
    sites = grown["properties"]["data"]["properties"]["minutes"]["properties"]["sites"]
    sites["items"]["properties"]["role"] = {"type": "string"}
    copy_path = schema_path.with_name("grown.v1.json")  # never written: read through _fields directly
    assert _fields(grown, copy_path) - set().union(*(_shown(e) for e in examples)) - set(NOT_SENT) == {
        "data.minutes.sites[].role"}


def test_asyncapi_examples_exist_match_their_message_and_name_every_example() -> None:
    doc = yaml.safe_load((EVENTS / "asyncapi.yaml").read_text(encoding="utf-8"))
    named: set[str] = set()
    for key, msg in doc["components"]["messages"].items():
        schema = (EVENTS / msg["payload"]["schema"]["$ref"]).resolve()
        for example in msg.get("examples", []):
            ref = example["payload"]["$ref"]
            assert (EVENTS / ref).is_file(), f"{key}: {ref} does not exist"
            assert CATALOG.validate(json.loads((EVENTS / ref).read_text(encoding="utf-8"))).schema == schema, ref
            named.add(Path(ref).name)
    assert {p.name for p in EXAMPLES} == named


def _written_outcome(event: dict) -> str:
    """What the event's schema as written (its ``$ref``s looked up in the registry) says of ``event``:
    "valid", or the message ``Catalog.validate`` gives (the JSON path and the keyword that failed)."""
    from jsonschema.exceptions import best_match
    from sen_shared.bus.catalog import _load_json, _registry

    spec = CATALOG.event_for_type(event["type"])
    validator = Draft202012Validator(_load_json(spec.schema), registry=_registry(spec.schema.parent))
    error = best_match(validator.iter_errors(event))
    return "valid" if error is None else f"{spec.type} does not match its schema: " \
                                         f"{error.json_path} fails {error.validator!r}"


def _catalog_outcome(event: dict) -> str:
    try:
        CATALOG.validate(event)
    except InvalidEvent as err:
        return str(err)
    return "valid"


_ODD_VALUES = [None, 0, -1, 1.5, "", "x" * 400, "Invoice/", "Organization/org-1", "2026-12-08T08:00:00+07:00",
               [], ["x"], {}, {"x": 1}, True]


def _paths(value, path=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*path, key)
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield (*path, i)
            yield from _paths(item, (*path, i))


def _variants(event: dict):
    """The event with each value, at any depth, removed or replaced by an odd value, and with an
    unknown key in each object."""
    for path in _paths(event):
        if path == ("type",):
            continue  # the schema is chosen by it
        *parents, last = path
        for odd in [_DELETE, *_ODD_VALUES]:
            variant = copy.deepcopy(event)
            holder = variant
            for key in parents:
                holder = holder[key]
            if odd is _DELETE:
                if isinstance(holder, dict):
                    del holder[last]
                else:
                    holder.pop(last)
            else:
                holder[last] = copy.deepcopy(odd)
            yield variant
    for path in [(), *_paths(event)]:
        variant = copy.deepcopy(event)
        holder = variant
        for key in path:
            holder = holder[key]
        if isinstance(holder, dict):
            holder["zzUnknown"] = "x"
            yield variant


_DELETE = object()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_validation_says_what_the_schema_as_written_says(path: Path) -> None:
    """``Catalog.validate`` checks an event against its schema with the ``$ref``s put in place
    (``catalog.bundled``: nothing looked up on each event): the same verdict, and the same message,
    as the schema as written with its references looked up, for the example and for each of its
    variants (every value at any depth removed or replaced by an odd one, an unknown key in each
    object)."""
    event = json.loads(path.read_text(encoding="utf-8"))
    seen = 0
    for variant in [event, *_variants(event)]:
        assert _catalog_outcome(variant) == _written_outcome(variant), json.dumps(variant)[:300]
        seen += 1
    assert seen > 50


def test_every_schema_is_bundled_without_a_reference() -> None:
    """Every catalog schema is validated bundled (no ``$ref`` left where a schema applies), so no event's
    validation looks a reference up; a recursive reference is left as written (the registry resolves it)."""
    from referencing import Registry, Resource
    from sen_shared.bus.catalog import NotBundled, _load_json, _registry, bundled

    for spec in CATALOG.events.values():
        schema = bundled(_load_json(spec.schema), _registry(spec.schema.parent))
        assert '"$ref"' not in json.dumps({k: v for k, v in schema.items() if k != "$defs"}), spec.routing_key
        assert CATALOG.validator(spec).schema == schema
    tree = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "https://example.test/tree.json",
            "type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#"}}}}
    registry = Registry().with_resources([(tree["$id"], Resource.from_contents(tree))])
    with pytest.raises(NotBundled):
        bundled(tree, registry)
