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
