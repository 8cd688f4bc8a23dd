"""The AsyncAPI 3 document of the event API (docs/asyncapi.yaml), built from the catalog.

Topics, keys, headers and messages come from the same models as the JSON
Schemas, so the document cannot describe a message the code does not write.
Payload schemas are `$ref`s to the files in schemas/json/.
"""

from __future__ import annotations

from typing import Any

from thunderhelm.schemas.catalog import DEAD_LETTER_HEADERS, ENTRIES, ENVELOPE, Entry
from thunderhelm.schemas.envelope import SCHEMA_VERSION, STRUCTURED_CONTENT_TYPE
from thunderhelm.schemas.event_data import EVENT_DATA
from thunderhelm.schemas.requests import (
    CANCEL_REQUESTED,
    CONTINUE_REQUESTED,
    RUN_ID_PATTERN,
    RUN_REQUESTED,
)
from thunderhelm.schemas.results import RUN_RESULT
from thunderhelm.schemas.tasks import CANDIDATE_TASK, CANDIDATE_TRAINED

SCHEMA_DIR = "../schemas/json"  # relative to docs/
KAFKA_BINDING = "0.5.0"
TRACEPARENT = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"

# channel id -> (topic, what is on it, message names)
CHANNELS: dict[str, tuple[str, str, list[str]]] = {
    "runRequests": (
        "thunderhelm.run-requests",
        "Commands from users. Structured mode as below, or binary mode (`ce_*` headers, "
        "value = `data`, `content-type: application/json`).",
        [RUN_REQUESTED, CANCEL_REQUESTED, CONTINUE_REQUESTED],
    ),
    "runEvents": (
        "thunderhelm.run-events",
        "The event log: every lifecycle event of every run, in order per run.",
        sorted(EVENT_DATA),
    ),
    "runResults": (
        "thunderhelm.run-results",
        "One record per run that reached succeeded, failed or cancelled (and one more "
        "per continue of a succeeded run: `revision` 2, 3, ...).",
        [RUN_RESULT],
    ),
    "deadLetters": (
        "thunderhelm.dead-letters",
        "Every input that could not be processed: key and value as received, "
        "the input's headers, then `dlq.*` headers.",
        [DEAD_LETTER_HEADERS],
    ),
    "runCommands": (
        "thunderhelm.run-commands",
        "Internal: run-requests records the intake admitted, unchanged, and the outcomes "
        "of candidates any worker trained, for the run's owner to append to its log.",
        [RUN_REQUESTED, CANCEL_REQUESTED, CONTINUE_REQUESTED, CANDIDATE_TRAINED],
    ),
    "candidateTasks": (
        "thunderhelm.candidate-tasks",
        "Internal: candidates of running generations, for any worker with a free "
        "interpreter; keyed `<run id>/<generation>/<index>` so they spread over partitions.",
        [CANDIDATE_TASK],
    ),
}
_KEYS = {
    "deadLetters": "the input's key.",
    "candidateTasks": "`<run id>/<generation>/<index>`.",
}
OPERATIONS: dict[str, tuple[str, str, str]] = {
    "sendCommand": ("send", "runRequests", "Start or cancel a run."),
    "receiveRunEvents": ("receive", "runEvents", "Follow runs; fold a run's events."),
    "receiveRunResults": ("receive", "runResults", "Read the result of finished runs."),
    "receiveDeadLetters": ("receive", "deadLetters", "Inspect or re-drive failed inputs."),
    "trainCandidates": ("receive", "candidateTasks", "Workers train the candidates of every run."),
}


def message_id(name: str) -> str:
    """An AsyncAPI component key for a message name (letters, digits, `.`, `-`, `_`)."""
    return name.removeprefix("thunderhelm.")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"{SCHEMA_DIR}/{name}.json"}


def _key() -> dict[str, Any]:
    return {"key": {"type": "string", "pattern": RUN_ID_PATTERN}, "bindingVersion": KAFKA_BINDING}


def _event_message(entry: Entry) -> dict[str, Any]:
    return {
        "name": entry.name,
        "title": entry.name,
        "summary": entry.description,
        "contentType": STRUCTURED_CONTENT_TYPE,
        "headers": {
            "type": "object",
            "required": ["traceparent"],
            "properties": {
                "content-type": {"type": "string", "const": STRUCTURED_CONTENT_TYPE},
                "traceparent": {"type": "string", "pattern": TRACEPARENT},
                "tracestate": {"type": "string"},
            },
        },
        "payload": {
            "allOf": [
                _ref(ENVELOPE),
                {
                    "type": "object",
                    "required": ["type", "data"],
                    "properties": {
                        "type": {"const": entry.name},
                        "dataschema": {"const": entry.uri},
                        "data": _ref(entry.name),
                    },
                },
            ]
        },
        "bindings": {"kafka": _key()},
    }


def _dead_letter_message(entry: Entry) -> dict[str, Any]:
    return {
        "name": entry.name,
        "title": "dead letter",
        "summary": entry.description,
        "headers": _ref(entry.name),
        "payload": {"description": "the input's value, byte for byte"},
        "bindings": {
            "kafka": {"key": {"description": "the input's key"}, "bindingVersion": KAFKA_BINDING}
        },
    }


def document() -> dict[str, Any]:
    entries = {e.name: e for e in ENTRIES}
    messages = {
        message_id(name): (
            _dead_letter_message(entries[name])
            if name == DEAD_LETTER_HEADERS
            else _event_message(entries[name])
        )
        for _, _, names in CHANNELS.values()
        for name in names
    }
    channels = {
        cid: {
            "address": topic,
            "description": f"{text} Key: "
            + _KEYS.get(cid, "the run id.")
            + " The prefix `thunderhelm.` is `THUNDERHELM_TOPIC_PREFIX`.",
            "messages": {
                message_id(n): {"$ref": f"#/components/messages/{message_id(n)}"} for n in names
            },
            "bindings": {"kafka": {"topic": topic, "bindingVersion": KAFKA_BINDING}},
        }
        for cid, (topic, text, names) in CHANNELS.items()
    }
    operations = {
        oid: {
            "action": action,
            "channel": {"$ref": f"#/channels/{cid}"},
            "summary": summary,
            "messages": [
                {"$ref": f"#/channels/{cid}/messages/{message_id(n)}"} for n in CHANNELS[cid][2]
            ],
        }
        for oid, (action, cid, summary) in OPERATIONS.items()
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "thunderhelm event API",
            "version": f"{SCHEMA_VERSION}.0.0",
            "description": "Neural-architecture-search runs as CloudEvents on Kafka "
            "(CloudEvents Kafka binding, structured mode). Generated by "
            "scripts/gen_schemas.py from schemas/; see docs/contract.md.",
        },
        "defaultContentType": STRUCTURED_CONTENT_TYPE,
        "servers": {
            "local": {
                "host": "127.0.0.1:9092",
                "protocol": "kafka",
                "description": "`thunderhelm services start` or `docker compose up`",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }
