"""Decoding both CloudEvents Kafka binding modes, and the request schema."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from thunderhelm.schemas.codec import DecodeError, EnvelopeError, decode_record, encode_event
from thunderhelm.schemas.requests import RunRequest

DATA: dict[str, Any] = {"run_id": "nas-001", "dataset": {"name": "spirals", "seed": 7}}
STRUCTURED: dict[str, Any] = {
    "specversion": "1.0",
    "id": "c1",
    "source": "test",
    "type": "thunderhelm.run.requested",
    "subject": "nas-001",
    "data": DATA,
}


def test_structured_with_and_without_content_type_header() -> None:
    value = json.dumps(STRUCTURED).encode()
    for headers in ({}, {"content-type": b"application/cloudevents+json"}):
        event = decode_record(value, headers)
        assert event.id == "c1" and event.data == DATA


def test_binary_mode_reads_attributes_from_headers() -> None:
    headers = {
        "ce_specversion": b"1.0",
        "ce_id": b"c2",
        "ce_source": b"kcat",
        "ce_type": b"thunderhelm.run.requested",
        "content-type": b"application/json",
    }
    event = decode_record(json.dumps(DATA).encode(), headers)
    assert event.id == "c2" and event.source == "kcat" and event.data == DATA


def test_encode_is_structured_and_round_trips() -> None:
    event = decode_record(json.dumps(STRUCTURED).encode(), {})
    assert decode_record(encode_event(event), {}) == event


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (b"not json", DecodeError),
        (b"\xff\xfe", DecodeError),
        (b"[1,2]", DecodeError),
        (b'{"run_id": "x"}', DecodeError),
        (b"[" * 100 + b"]" * 100, DecodeError),
        (json.dumps({**STRUCTURED, "specversion": "0.3"}).encode(), EnvelopeError),
        (json.dumps({**STRUCTURED, "id": ""}).encode(), EnvelopeError),
        (json.dumps({**STRUCTURED, "evil": 1}).encode(), EnvelopeError),
        (json.dumps({**STRUCTURED, "id": 5}).encode(), EnvelopeError),
    ],
)
def test_bad_records_raise_clear_errors(value: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_record(value, {})


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_escape_as_other_errors(value: bytes) -> None:
    with contextlib.suppress(DecodeError, EnvelopeError):
        decode_record(value, {})


@pytest.mark.parametrize(
    "patch",
    [
        {"run_id": "../etc"},
        {"dataset": {"name": "csv", "path": "/etc/passwd"}},
        {"dataset": {"name": "csv", "path": "a/../../x.csv"}},
        {"dataset": {"name": "os.system"}},
        {"ga": {"population": 4, "elite": 4}},
        {"ga": {"population": "8"}},
        {"training": {"epochs": 10**9}},
        {"fitness": {"name": "builtins.eval"}},
    ],
)
def test_request_schema_refuses(patch: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RunRequest.model_validate({**DATA, **patch})


def test_request_defaults_fill_in() -> None:
    request = RunRequest.model_validate(DATA)
    assert request.ga.population == 8 and request.training.epochs == 3
