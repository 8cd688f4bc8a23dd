"""Decode Kafka records into CloudEvents (both binding modes) and encode ours.

Input arrives in structured mode (the whole event as JSON in the value) or in
binary mode (the value is `data`, attributes in `ce_*` headers). Output is
always structured and says so in a `content-type: application/cloudevents+json`
header, which the Kafka binding requires: without it a conformant receiver
reads the record as binary mode and fails.
Decoding failures raise `DecodeError` (not JSON, not UTF-8, not an envelope)
or `EnvelopeError` (a well-formed envelope with bad attributes).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from json.decoder import scanstring  # type: ignore[attr-defined]  # exists; typeshed omits it
from typing import Any

from pydantic import ValidationError

from thunderhelm.schemas.catalog import DATASCHEMA
from thunderhelm.schemas.envelope import (
    BOOLEAN_EXTENSIONS,
    INTEGER_EXTENSIONS,
    JSON_CONTENT_TYPE,
    STRUCTURED_CONTENT_TYPE,
    CloudEvent,
)

MAX_NESTING = 32
CONTENT_TYPE_HEADER = "content-type"
_INTEGER = re.compile(r"-?[0-9]{1,19}")
STRUCTURED_HEADER = (CONTENT_TYPE_HEADER, STRUCTURED_CONTENT_TYPE.encode())


class DecodeError(ValueError):
    """The record's bytes are not a CloudEvent we can read."""


class EnvelopeError(ValueError):
    """The record is JSON but its CloudEvents attributes are invalid."""


def _header(headers: Mapping[str, bytes], name: str) -> str | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"header {name!r} is not UTF-8") from exc


def _nests_deeper(text: str, limit: int) -> bool:
    """Whether JSON `text` nests deeper than `limit`, found before parsing it.

    Parsing first costs time in proportion to the depth (a hostile value can
    nest thousands of levels); this scan skips strings with the json module's
    own string scanner and counts brackets with `str.count`, looking at
    single characters only in a stretch that could cross the limit.
    """
    depth, pos, end = 0, 0, len(text)
    while pos < end:
        quote = text.find('"', pos)
        stop = end if quote < 0 else quote
        opens = text.count("[", pos, stop) + text.count("{", pos, stop)
        if depth + opens > limit:
            for char in text[pos:stop]:
                if char in "[{":
                    depth += 1
                    if depth > limit:
                        return True
                elif char in "]}":
                    depth -= 1
        else:
            depth += opens - text.count("]", pos, stop) - text.count("}", pos, stop)
        if quote < 0:
            return False
        try:
            _, pos = scanstring(text, quote + 1, True)
        except ValueError:
            return False  # not JSON: json.loads says where
    return False


def parse_json(value: bytes) -> Any:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"value is not UTF-8: {exc.reason} at byte {exc.start}") from exc
    # Few brackets cannot nest deeply: most records skip the scan.
    if text.count("{") + text.count("[") > MAX_NESTING and _nests_deeper(text, MAX_NESTING):
        raise DecodeError(f"value is nested deeper than {MAX_NESTING} levels")
    try:
        return json.loads(text)
    except RecursionError as exc:
        raise DecodeError("value is nested too deeply") from exc
    except json.JSONDecodeError as exc:
        raise DecodeError(f"value is not JSON: {exc.msg} at char {exc.pos}") from exc


def _validate(envelope: Mapping[str, Any]) -> CloudEvent:
    try:
        return CloudEvent.model_validate(dict(envelope))
    except ValidationError as exc:
        raise EnvelopeError(_summarise(exc)) from exc


def _summarise(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{where}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def _type_binary_extensions(attributes: dict[str, Any]) -> None:
    """Header strings of Integer and Boolean extensions as their spec types."""
    for name in INTEGER_EXTENSIONS & attributes.keys():
        text = attributes[name]
        if _INTEGER.fullmatch(text) is None:
            raise EnvelopeError(f"ce_{name} is not an integer")
        attributes[name] = int(text)
    for name in BOOLEAN_EXTENSIONS & attributes.keys():
        if attributes[name] not in ("true", "false"):
            raise EnvelopeError(f"ce_{name} is not true or false")
        attributes[name] = attributes[name] == "true"


def decode_record(value: bytes | None, headers: Mapping[str, bytes]) -> CloudEvent:
    """Read a CloudEvent from a Kafka record in either binding mode."""
    if value is None:
        raise DecodeError("record has no value (tombstone)")
    content_type = (_header(headers, "content-type") or "").split(";")[0].strip().lower()
    if "ce_specversion" in headers and content_type != STRUCTURED_CONTENT_TYPE:
        attributes: dict[str, Any] = {}
        for name in headers:
            if name.startswith("ce_"):
                attributes[name[3:]] = _header(headers, name)
        _type_binary_extensions(attributes)
        if content_type:
            attributes["datacontenttype"] = content_type
        if content_type in ("", JSON_CONTENT_TYPE) or content_type.endswith("+json"):
            attributes["data"] = parse_json(value)
        else:
            raise EnvelopeError(f"unsupported data content type {content_type!r}")
        return _validate(attributes)
    parsed = parse_json(value)
    if not isinstance(parsed, dict):
        raise DecodeError(f"value is JSON {type(parsed).__name__}, not a CloudEvent object")
    if "specversion" not in parsed:
        raise DecodeError("value is JSON but not a CloudEvent (no 'specversion')")
    return _validate(parsed)


def encode_event(event: CloudEvent) -> bytes:
    """Structured-mode bytes of an event (compact JSON, no nulls).

    An event of one of our types that names no `dataschema` gets its type's
    (schemas/catalog.py), so every record points at the schema of its data.
    """
    body = event.model_dump(mode="json", exclude_none=True)
    if "dataschema" not in body and event.type in DATASCHEMA:
        body["dataschema"] = DATASCHEMA[event.type]
    return json.dumps(body, separators=(",", ":"), sort_keys=False).encode("utf-8")


def structured_headers(headers: Iterable[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """`headers` of a record we write in structured mode, with one `content-type`."""
    kept = [(n, v) for n, v in headers if n.lower() != CONTENT_TYPE_HEADER]
    return [STRUCTURED_HEADER, *kept]


def describe_validation_error(exc: ValidationError) -> list[str]:
    """Human reasons, one per field error, for a rejected request."""
    reasons = []
    for err in exc.errors()[:20]:
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        reasons.append(f"{where}: {err['msg']}")
    return reasons
