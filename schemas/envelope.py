"""CloudEvents 1.0 envelope shared by every command and event on Kafka.

The envelope is the public wire contract (docs/contract.md): it carries
identity (`id`), the run (`subject`), order (`sequence`) and causality
(`causationid`, `correlationid`) so that consumers can de-duplicate and fold.

Extension attributes are typed as the CloudEvents documented extensions type
them (`sequence` is a String, `sampledrate` an Integer, ...). Those
extensions are accepted on input; any other attribute is refused, so a typo
never passes silently.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SPEC_VERSION = "1.0"
SCHEMA_VERSION = "1"
JSON_CONTENT_TYPE = "application/json"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"

# Zero-padded decimal: the sequence extension orders events by plain string
# comparison, and 20 digits hold any 64-bit count.
SEQUENCE_WIDTH = 20

# Attribute names are lowercase alphanumerics by the CloudEvents spec; the
# bounds keep a hostile producer from making us hold megabytes of metadata.
_ID = Field(min_length=1, max_length=200)


def _text(max_length: int = 200) -> Any:
    return Field(default=None, min_length=1, max_length=max_length)


class CloudEvent(BaseModel):
    """One CloudEvent in structured form; extension attributes are explicit."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    specversion: Literal["1.0"]
    id: str = _ID
    source: str = Field(min_length=1, max_length=500)
    type: str = Field(min_length=1, max_length=200)
    subject: str | None = Field(default=None, max_length=200)
    time: str | None = Field(default=None, max_length=64)
    datacontenttype: str | None = Field(default=None, max_length=200)
    dataschema: str | None = Field(default=None, max_length=500)
    data: Any = None
    # Extensions written by thunderhelm (consumers may ignore them).
    sequence: str | None = _text(128)  # sequence extension: a String
    schemaversion: str | None = Field(default=None, max_length=16)
    causationid: str | None = Field(default=None, max_length=200)  # correlation extension
    correlationid: str | None = Field(default=None, max_length=200)
    traceparent: str | None = Field(default=None, max_length=128)  # distributed tracing
    tracestate: str | None = Field(default=None, max_length=512)
    # Other documented extensions, accepted on input (thunderhelm does not act on them).
    partitionkey: str | None = _text(500)
    sampledrate: int | None = Field(default=None, ge=1)
    dataref: str | None = _text(500)
    recordedtime: str | None = _text(64)
    expirytime: str | None = _text(64)
    authtype: str | None = _text(64)
    authid: str | None = _text(500)
    authclaims: str | None = _text(2000)
    dataclassification: str | None = _text(64)
    dataregulation: str | None = _text(200)
    datacategory: str | None = _text(64)
    deprecated: bool | None = None
    deprecationfrom: str | None = _text(64)
    deprecationsunset: str | None = _text(64)
    deprecationmigration: str | None = _text(500)
    severitytext: str | None = _text(64)
    severitynumber: int | None = Field(default=None, ge=0)
    bamtxid: str | None = _text()
    bampid: str | None = _text()
    bamptxid: str | None = _text()
    bamptxsid: str | None = _text()
    bamptxsstatus: str | None = _text()
    bamptxcompleted: bool | None = None

    @field_validator("sequence", mode="before")
    @classmethod
    def _sequence_from_position(cls, value: Any) -> Any:
        """An integer position becomes its padded string.

        Writers pass the position; run logs written before the sequence
        became a string hold integers, and read back as the same string.
        """
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return format_sequence(value)
        return value


# Binary mode carries every attribute as a header string; these are the
# extensions whose spec type is not String (the codec converts them).
INTEGER_EXTENSIONS = frozenset({"sampledrate", "severitynumber"})
BOOLEAN_EXTENSIONS = frozenset({"deprecated", "bamptxcompleted"})


def format_sequence(position: int) -> str:
    """The `sequence` string of a run's `position`-th event (1-based)."""
    if position < 0:
        raise ValueError(f"sequence position {position} is negative")
    return str(position).zfill(SEQUENCE_WIDTH)


def sequence_position(sequence: str | None) -> int | None:
    """The position a thunderhelm `sequence` names; None for other writers' strings."""
    if sequence is None or not sequence.isascii() or not sequence.isdigit():
        return None
    return int(sequence)


def utc_now_iso() -> str:
    """RFC 3339 time in UTC with millisecond precision, as CloudEvents wants."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
