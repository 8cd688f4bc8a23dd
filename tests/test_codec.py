"""Decoding both CloudEvents Kafka binding modes, and the request schema."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from thunderhelm.schemas.catalog import DATASCHEMA
from thunderhelm.schemas.codec import (
    DecodeError,
    EnvelopeError,
    decode_record,
    encode_event,
    structured_headers,
)
from thunderhelm.schemas.envelope import format_sequence, sequence_position
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
    # Encoding adds the type's dataschema; everything else comes back as it was.
    again = decode_record(encode_event(event), {})
    assert again.dataschema == DATASCHEMA["thunderhelm.run.requested"]
    assert again == event.model_copy(update={"dataschema": again.dataschema})
    assert decode_record(encode_event(again), {}) == again


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


def test_sequence_is_a_zero_padded_string_in_log_order() -> None:
    assert format_sequence(7) == "00000000000000000007"
    positions = [1, 2, 9, 10, 11, 99, 100, 12345]
    strings = [format_sequence(p) for p in positions]
    assert strings == sorted(strings)  # string order is numeric order
    assert [sequence_position(q) for q in strings] == positions
    assert sequence_position("abc") is None


def test_integer_sequence_of_an_older_log_reads_as_its_string() -> None:
    event = decode_record(json.dumps({**STRUCTURED, "sequence": 3}).encode(), {})
    assert event.sequence == "00000000000000000003"
    for bad in (-1, True, "", 1.5):
        with pytest.raises(EnvelopeError):
            decode_record(json.dumps({**STRUCTURED, "sequence": bad}).encode(), {})


def test_documented_extensions_are_accepted_and_typed() -> None:
    extensions = {
        "partitionkey": "nas-001",
        "sampledrate": 5,
        "sequence": "b-17",
        "recordedtime": "2026-01-01T00:00:00Z",
        "deprecated": False,
        "severitynumber": 9,
        "authtype": "user",
    }
    event = decode_record(json.dumps({**STRUCTURED, **extensions}).encode(), {})
    assert {k: getattr(event, k) for k in extensions} == extensions
    headers = {
        "ce_specversion": b"1.0",
        "ce_id": b"c3",
        "ce_source": b"kcat",
        "ce_type": b"thunderhelm.run.requested",
        "ce_partitionkey": b"nas-001",
        "ce_sampledrate": b"5",
        "ce_deprecated": b"true",
        "ce_sequence": b"abc",
        "content-type": b"application/json",
    }
    binary = decode_record(json.dumps(DATA).encode(), headers)
    assert (binary.partitionkey, binary.sampledrate, binary.deprecated) == ("nas-001", 5, True)
    assert binary.sequence == "abc"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("sampledrate", b"abc"),
        ("sampledrate", b"0"),
        ("sampledrate", b"--1"),
        ("deprecated", b"yes"),
    ],
)
def test_binary_extension_of_the_wrong_type_is_refused(name: str, value: bytes) -> None:
    headers = {
        "ce_specversion": b"1.0",
        "ce_id": b"c4",
        "ce_source": b"kcat",
        "ce_type": b"thunderhelm.run.requested",
        f"ce_{name}": value,
    }
    with pytest.raises(EnvelopeError):
        decode_record(json.dumps(DATA).encode(), headers)


def test_unknown_extension_is_still_refused() -> None:
    with pytest.raises(EnvelopeError):
        decode_record(json.dumps({**STRUCTURED, "comexamplefoo": "x"}).encode(), {})


def test_structured_headers_carry_one_content_type() -> None:
    headers = structured_headers([("content-type", b"text/plain"), ("traceparent", b"t")])
    assert headers == [("content-type", b"application/cloudevents+json"), ("traceparent", b"t")]
