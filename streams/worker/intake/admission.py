"""What may enter: the screen of a run-requests record, and the forwarded record's shape.

The intake (`streams/worker/intake/reader.py`) screens every record users produce to
run-requests and either dead-letters it or forwards it to the internal
run-commands topic, where the run's owner drives the saga. Both sides screen
with `screen_command`, so they agree on what is admissible: a record is
dead-lettered when it cannot be read as a command (size, bytes, envelope,
type) or is an invalid request that names no run. An invalid request that
names its run is admitted: the run's owner answers it with `run.rejected` and the
reasons, so the user sees why. The screen validates a command once and hands
on what it found (`Admitted`): the typed request, cancel or rejection.

A forwarded record carries the input's key and value unchanged and its
headers with two changes, both undone by `unwrap_forwarded`: the input's
own `traceparent`/`tracestate` move to `thunderhelm.intake.*` (the forwarded
record's `traceparent` is the intake's span), and the input's partition,
offset and timestamp are added, so a record the owner dead-letters later is
reported against the run-requests record it came from.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from thunderhelm.schemas.codec import decode_record, describe_validation_error
from thunderhelm.schemas.envelope import CloudEvent
from thunderhelm.schemas.limits import Limits, record_bytes, validate_request
from thunderhelm.schemas.requests import (
    CANCEL_REQUESTED,
    COMMAND_TYPES,
    CONTINUE_REQUESTED,
    RUN_ID_PATTERN,
    RUN_REQUESTED,
    CancelRequest,
    ContinueRequest,
    RunRequest,
)
from thunderhelm.schemas.tasks import CANDIDATE_TRAINED, CandidateTrained
from thunderhelm.streams.wire.failures import Failure, InputRejected, Origin, Stage, classify

Headers = Sequence[tuple[str, bytes]]

FORWARD_PREFIX = "thunderhelm.intake."
_TRACE_HEADERS = ("traceparent", "tracestate")
_RUN_ID = re.compile(RUN_ID_PATTERN)


@dataclass(frozen=True)
class InvalidRequest:
    """A start whose fields are invalid, from a request that names its run."""

    run_id: str
    reasons: list[str]


@dataclass(frozen=True)
class Admitted:
    """A screened command: its envelope and its validated content."""

    envelope: CloudEvent
    command: RunRequest | CancelRequest | ContinueRequest | InvalidRequest | CandidateTrained


def run_id_in(data: Any) -> str | None:
    """The request's run id when it names a well-formed one."""
    if isinstance(data, dict):
        run_id = data.get("run_id")
        if isinstance(run_id, str) and _RUN_ID.fullmatch(run_id):
            return run_id
    return None


def run_id_of_key(key: bytes | None) -> str | None:
    """The record key read as a run id (the contract keys requests by run id)."""
    if not key:
        return None
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if _RUN_ID.fullmatch(text) else None


def screen_command(
    key: bytes | None,
    value: bytes | None,
    headers: Headers,
    limits: Limits,
    *,
    internal: bool = False,
) -> Admitted | Failure:
    """The command a run-requests record carries, or why it must be dead-lettered.

    `internal`: the record is on run-commands, where workers also send the
    outcomes of candidates they trained (never accepted from run-requests).
    """
    stage: Stage = "decode"
    try:
        size = record_bytes(key, value, headers)
        if size > limits.max_record_bytes:
            raise InputRejected(
                "decode", f"record of {size} bytes exceeds the limit of {limits.max_record_bytes}"
            )
        command = decode_record(value, dict(headers))
        stage = "validate"
        for name, _ in headers:
            if name.startswith(FORWARD_PREFIX):
                raise InputRejected("validate", f"header {name!r} is reserved for the intake")
        if internal and command.type == CANDIDATE_TRAINED:
            return Admitted(command, CandidateTrained.model_validate(command.data))
        if command.type not in COMMAND_TYPES:
            raise InputRejected("validate", f"unknown command type {command.type!r}")
        content: RunRequest | CancelRequest | ContinueRequest | InvalidRequest
        if command.type == RUN_REQUESTED:
            try:
                content = validate_request(command.data, limits)
            except ValidationError as exc:
                run_id = run_id_in(command.data)
                if run_id is None:
                    raise  # nobody to tell: dead-lettered
                content = InvalidRequest(run_id, describe_validation_error(exc))
        elif command.type == CONTINUE_REQUESTED:
            content = ContinueRequest.model_validate(command.data)
        else:
            assert command.type == CANCEL_REQUESTED
            content = CancelRequest.model_validate(command.data)
        return Admitted(command, content)
    except Exception as exc:  # every failure to read an input becomes its dead-letter reason
        return classify(exc, stage)


def forward_headers(
    original: Headers, origin: Origin, trace_headers: dict[str, bytes]
) -> list[tuple[str, bytes]]:
    """The headers of an admitted record on run-commands (inverse: `unwrap_forwarded`)."""
    out: list[tuple[str, bytes]] = []
    for name, value in original:  # screened: none starts with FORWARD_PREFIX
        out.append((f"{FORWARD_PREFIX}{name}" if name in _TRACE_HEADERS else name, value))
    out += [
        (f"{FORWARD_PREFIX}origin.topic", origin.topic.encode()),
        (f"{FORWARD_PREFIX}origin.partition", str(origin.partition).encode()),
        (f"{FORWARD_PREFIX}origin.offset", str(origin.offset).encode()),
        (f"{FORWARD_PREFIX}origin.timestamp", str(origin.timestamp_ms or "").encode()),
    ]
    return out + list(trace_headers.items())


def unwrap_forwarded(headers: Headers) -> tuple[list[tuple[str, bytes]], Origin | None]:
    """The input's own headers and its run-requests origin (None if not forwarded)."""
    original: list[tuple[str, bytes]] = []
    origin: dict[str, str] = {}
    for name, value in headers:
        if name in _TRACE_HEADERS:
            continue  # the intake's span, not the input's
        if not name.startswith(FORWARD_PREFIX):
            original.append((name, value))
            continue
        field = name.removeprefix(FORWARD_PREFIX)
        if field in _TRACE_HEADERS:
            original.append((field, value))
        elif field.startswith("origin."):
            origin[field.removeprefix("origin.")] = value.decode("utf-8", "replace")
    try:
        where = Origin(
            origin["topic"],
            int(origin["partition"]),
            int(origin["offset"]),
            int(origin["timestamp"]) if origin.get("timestamp") else None,
        )
    except (KeyError, ValueError):
        return [(n, v) for n, v in headers], None
    return original, where
