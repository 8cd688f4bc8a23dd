"""Every message of the event API with the model that is its schema.

One source of truth: `scripts/gen_schemas.py` writes `schemas/json/` from
this catalog (a test fails when the committed files drift), and the codec
stamps each record's `dataschema` with the URI of its type's schema, which is
also that schema's `$id`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from thunderhelm.schemas.dead_letter import DeadLetterHeaders
from thunderhelm.schemas.envelope import SCHEMA_VERSION, CloudEvent
from thunderhelm.schemas.event_data import EVENT_DATA
from thunderhelm.schemas.requests import (
    CANCEL_REQUESTED,
    CONTINUE_REQUESTED,
    RUN_REQUESTED,
    CancelRequest,
    ContinueRequest,
    RunRequest,
)
from thunderhelm.schemas.results import RUN_RESULT, RunResult
from thunderhelm.schemas.tasks import (
    CANDIDATE_TASK,
    CANDIDATE_TRAINED,
    CandidateTask,
    CandidateTrained,
)

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ENVELOPE = "cloudevent"
DEAD_LETTER_HEADERS = "dead-letter.headers"


@dataclass(frozen=True)
class Entry:
    name: str  # the CloudEvents type, or what the document describes
    model: type[BaseModel]
    description: str

    @property
    def uri(self) -> str:
        return schema_uri(self.name)

    @property
    def file_name(self) -> str:
        return f"{self.name}.json"


def schema_uri(name: str) -> str:
    """The `$id` of a schema and the `dataschema` of records it describes."""
    return f"urn:thunderhelm:schema:v{SCHEMA_VERSION}:{name}"


ENTRIES: tuple[Entry, ...] = (
    Entry(ENVELOPE, CloudEvent, "The CloudEvents 1.0 envelope of every command and event."),
    Entry(RUN_REQUESTED, RunRequest, "`data` of a start command on run-requests."),
    Entry(CANCEL_REQUESTED, CancelRequest, "`data` of a cancel command on run-requests."),
    Entry(CONTINUE_REQUESTED, ContinueRequest, "`data` of a continue command on run-requests."),
    *(
        Entry(kind, model, f"`data` of a `{kind}` event on run-events.")
        for kind, model in EVENT_DATA.items()
    ),
    Entry(RUN_RESULT, RunResult, "`data` of the one record per finished run on run-results."),
    Entry(
        CANDIDATE_TASK,
        CandidateTask,
        "`data` of a candidate to train, on the internal candidate-tasks topic.",
    ),
    Entry(
        CANDIDATE_TRAINED,
        CandidateTrained,
        "`data` of a trained candidate's outcome for the run's owner, on run-commands.",
    ),
    Entry(
        DEAD_LETTER_HEADERS,
        DeadLetterHeaders,
        "Headers of a record on dead-letters (name to UTF-8 text); key and value are the input's.",
    ),
)

# The `dataschema` of each CloudEvents type the project writes or reads.
DATASCHEMA: dict[str, str] = {e.name: e.uri for e in ENTRIES if e.name.startswith("thunderhelm.")}


def json_schema(entry: Entry) -> dict[str, Any]:
    """Draft 2020-12 JSON Schema of an entry, with its `$id`."""
    body = entry.model.model_json_schema(by_alias=True, mode="validation")
    head = {"$schema": JSON_SCHEMA_DIALECT, "$id": entry.uri, "description": entry.description}
    body.pop("description", None)
    return {**head, **body}


def rendered(entry: Entry) -> str:
    """The committed text of an entry's schema file."""
    return json.dumps(json_schema(entry), indent=2, sort_keys=False) + "\n"
