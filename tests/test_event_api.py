"""The machine-readable event API: JSON Schemas and the AsyncAPI document.

Both are generated from the models (scripts/gen_schemas.py); these tests fail
when the committed files drift from the models, when a schema is not valid
draft 2020-12, or when docs/asyncapi.yaml is not a valid AsyncAPI 3.0 document
by the official schema (npm package @asyncapi/specs, fetched by setup.sh).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from thunderhelm.schemas import events as ev
from thunderhelm.schemas.catalog import DATASCHEMA, ENTRIES, ENVELOPE, schema_uri
from thunderhelm.schemas.requests import COMMAND_TYPES
from thunderhelm.schemas.results import RUN_RESULT
from thunderhelm.streams.config.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "schemas" / "json"
ASYNCAPI = ROOT / "docs" / "asyncapi.yaml"
ASYNCAPI_SCHEMA = Path(
    os.environ.get(
        "THUNDERHELM_ASYNCAPI_SCHEMA", ROOT / ".venv/share/asyncapi-specs/schemas/3.0.0.json"
    )
)


def load_schema(name: str) -> dict[str, Any]:
    return dict(json.loads((SCHEMAS / f"{name}.json").read_text()))


def test_committed_files_are_what_the_models_generate() -> None:
    run = subprocess.run(
        [sys.executable, "scripts/gen_schemas.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_message_has_a_valid_draft_2020_12_schema() -> None:
    names = {e.name for e in ENTRIES}
    assert names >= set(ev.EVENT_TYPES) | set(COMMAND_TYPES) | {RUN_RESULT, ENVELOPE}
    assert {p.stem for p in SCHEMAS.glob("*.json")} == names
    for entry in ENTRIES:
        schema = load_schema(entry.name)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"] == schema_uri(entry.name)
        jsonschema.Draft202012Validator.check_schema(schema)
    assert set(DATASCHEMA) == names - {ENVELOPE, "dead-letter.headers"}


def test_schemas_hold_the_models_rules() -> None:
    request = jsonschema.Draft202012Validator(load_schema("thunderhelm.run.requested"))
    good = {"run_id": "nas-001", "dataset": {"name": "spirals", "seed": 7}}
    assert list(request.iter_errors(good)) == []
    for bad in (
        {**good, "run_id": "../x"},
        {**good, "unknown": 1},
        {**good, "dataset": {"name": "os.system"}},
        {"dataset": good["dataset"]},
    ):
        assert list(request.iter_errors(bad)), bad
    envelope = jsonschema.Draft202012Validator(load_schema(ENVELOPE))
    event = {"specversion": "1.0", "id": "1", "source": "s", "type": "t", "sequence": "007"}
    assert list(envelope.iter_errors(event)) == []
    assert list(envelope.iter_errors({**event, "sequence": 7}))  # a String by the extension
    assert list(envelope.iter_errors({**event, "partitionkey": "k"})) == []


def asyncapi() -> dict[str, Any]:
    return dict(yaml.safe_load(ASYNCAPI.read_text()))


def test_asyncapi_document_is_valid_asyncapi_3() -> None:
    assert ASYNCAPI_SCHEMA.is_file(), (
        f"{ASYNCAPI_SCHEMA} is missing: run scripts/setup.sh (needs npm) "
        "or set THUNDERHELM_ASYNCAPI_SCHEMA to AsyncAPI's 3.0.0.json"
    )
    official = json.loads(ASYNCAPI_SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(official)
    errors = sorted(validator.iter_errors(asyncapi()), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]
    broken = {**asyncapi(), "channels": {"x": {"address": 5}}}
    assert list(validator.iter_errors(broken))  # the validator does look


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        here = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return here + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_asyncapi_names_the_topics_and_every_schema() -> None:
    doc = asyncapi()
    s = Settings()
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == {
        s.run_requests,
        s.run_events,
        s.run_results,
        s.dead_letters,
        s.run_commands,
        s.candidate_tasks,
    }
    files = {r for r in _refs(doc) if not r.startswith("#")}
    for ref in files:
        assert (ASYNCAPI.parent / ref).resolve().is_file(), ref
    assert {Path(r).stem for r in files} == {e.name for e in ENTRIES}
    for ref in (r for r in _refs(doc) if r.startswith("#/")):
        node: Any = doc
        for part in ref[2:].split("/"):
            node = node[part]  # every internal reference resolves


@pytest.mark.parametrize("name", sorted(ev.EVENT_TYPES))
def test_each_event_message_pins_its_type_and_dataschema(name: str) -> None:
    message = asyncapi()["components"]["messages"][name.removeprefix("thunderhelm.")]
    pinned = message["payload"]["allOf"][1]["properties"]
    assert pinned["type"] == {"const": name} and pinned["dataschema"] == {"const": DATASCHEMA[name]}
    assert message["headers"]["properties"]["content-type"]["const"] == (
        "application/cloudevents+json"
    )
