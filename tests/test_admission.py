"""What the intake admits, the forwarded record's headers, and the nesting scan (no broker)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from thunderhelm.schemas.codec import MAX_NESTING, DecodeError, _nests_deeper, parse_json
from thunderhelm.schemas.limits import Limits
from thunderhelm.schemas.requests import CancelRequest, RunRequest
from thunderhelm.streams.wire.failures import Failure, Origin
from thunderhelm.streams.worker.intake.admission import (
    FORWARD_PREFIX,
    Admitted,
    InvalidRequest,
    forward_headers,
    run_id_of_key,
    screen_command,
    unwrap_forwarded,
)

LIMITS = Limits()


def envelope(data: Any, kind: str = "thunderhelm.run.requested") -> bytes:
    return json.dumps(
        {"specversion": "1.0", "id": "e-1", "source": "tests", "type": kind, "data": data}
    ).encode()


def request(run_id: str = "r-1", **extra: Any) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "dataset": {"name": "spirals", "samples": 300},
        "ga": {"population": 4, "generations": 1},
        **extra,
    }


def test_a_valid_request_and_a_cancel_are_admitted() -> None:
    admitted = screen_command(b"r-1", envelope(request()), [], LIMITS)
    assert isinstance(admitted, Admitted)
    assert admitted.envelope.type == "thunderhelm.run.requested"
    assert isinstance(admitted.command, RunRequest) and admitted.command.run_id == "r-1"
    cancel = screen_command(
        b"r-1", envelope({"run_id": "r-1"}, "thunderhelm.run.cancel-requested"), [], LIMITS
    )
    assert isinstance(cancel, Admitted) and isinstance(cancel.command, CancelRequest)


def test_an_invalid_request_that_names_its_run_is_admitted_to_be_rejected() -> None:
    bad = request(ga={"population": 10**9, "generations": 1})
    admitted = screen_command(b"r-1", envelope(bad), [], LIMITS)
    assert isinstance(admitted, Admitted) and isinstance(admitted.command, InvalidRequest)
    assert admitted.command.run_id == "r-1"
    assert any(reason.startswith("ga.population") for reason in admitted.command.reasons)


def test_what_cannot_be_read_as_a_command_fails_with_its_stage() -> None:
    cases: list[tuple[bytes | None, list[tuple[str, bytes]], str, str]] = [
        (b"\xff\xfe", [], "decode", "DecodeError"),
        (None, [], "decode", "DecodeError"),
        (b"[1]", [], "decode", "DecodeError"),
        (envelope(request(), "thunderhelm.run.deleted"), [], "validate", "InputRejected"),
        (envelope({"dataset": {"name": "spirals"}}), [], "validate", "ValidationError"),
        (
            envelope({"run_id": 5}, "thunderhelm.run.cancel-requested"),
            [],
            "validate",
            "ValidationError",
        ),
        (b"x" * (LIMITS.max_record_bytes + 1), [], "decode", "InputRejected"),
        # Only the intake may say where a forwarded record came from.
        (envelope(request()), [(f"{FORWARD_PREFIX}origin.offset", b"7")], "validate", ""),
    ]
    for value, headers, stage, error_class in cases:
        failure = screen_command(b"k", value, headers, LIMITS)
        assert isinstance(failure, Failure), value
        assert failure.stage == stage, (value, failure)
        assert not error_class or failure.error_class == error_class, (value, failure)
        assert failure.message


def test_forwarded_headers_unwrap_to_the_input_and_its_origin() -> None:
    original = [
        ("x-a", b"1"),
        ("traceparent", b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01"),
        ("x-a", b"2"),
        ("tracestate", b"k=v"),
    ]
    origin = Origin("t.run-requests", 3, 41, 1_700_000_000_000)
    intake_span = {"traceparent": b"00-" + b"c" * 32 + b"-" + b"d" * 16 + b"-01"}
    forwarded = forward_headers(original, origin, intake_span)
    # One traceparent on the forwarded record: the intake's.
    assert [v for n, v in forwarded if n == "traceparent"] == [intake_span["traceparent"]]
    assert unwrap_forwarded(forwarded) == (original, origin)
    assert unwrap_forwarded(forward_headers([], Origin("t", 0, 0, None), {})) == (
        [],
        Origin("t", 0, 0, None),
    )


def test_a_record_not_forwarded_by_the_intake_unwraps_to_itself() -> None:
    headers = [("x", b"1"), (f"{FORWARD_PREFIX}origin.offset", b"not a number")]
    assert unwrap_forwarded(headers) == (headers, None)


def test_run_id_of_key() -> None:
    assert run_id_of_key(b"run-1") == "run-1"
    assert run_id_of_key(None) is None and run_id_of_key(b"") is None
    assert run_id_of_key(b"\xff") is None and run_id_of_key(b"../x") is None


# --- nesting, found before parsing -----------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ ab', max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=60,
)


def containers_depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((containers_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((containers_depth(v) for v in value.values()), default=0)
    return 0


@settings(max_examples=400, deadline=None)
@given(json_values, st.integers(0, 8), st.sampled_from([None, 0, 2]))
def test_the_scan_agrees_with_the_parsed_depth(value: Any, limit: int, indent: int | None) -> None:
    text = json.dumps(value, indent=indent)
    assert _nests_deeper(text, limit) == (containers_depth(value) > limit)


def test_deep_values_are_refused_and_brackets_in_strings_are_not_nesting() -> None:
    for depth in (MAX_NESTING + 1, 5000):
        deep = "[" * depth + "]" * depth
        for text in (deep, '{"a": ' + deep + "}", "[" * depth):
            try:
                parse_json(text.encode())
            except DecodeError as exc:
                assert "nested" in str(exc) or "not JSON" in str(exc)
            else:
                raise AssertionError("a deep value was parsed")
    in_strings = json.dumps({"s": "[" * 100, "t": ['{"' * 50]})
    assert parse_json(in_strings.encode())["s"] == "[" * 100
    at_limit = "[" * MAX_NESTING + "]" * MAX_NESTING
    assert isinstance(parse_json(at_limit.encode()), list)
