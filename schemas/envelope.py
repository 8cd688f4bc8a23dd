"""CloudEvents 1.0 envelope shared by every command and event on Kafka.

The envelope is the public wire contract (docs/contract.md): it carries
identity (`id`), the run (`subject`), order (`sequence`) and causality
(`causationid`, `correlationid`) so that consumers can de-duplicate and fold.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SPEC_VERSION = "1.0"
SCHEMA_VERSION = "1"
JSON_CONTENT_TYPE = "application/json"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"

# Attribute names are lowercase alphanumerics by the CloudEvents spec; the
# bounds keep a hostile producer from making us hold megabytes of metadata.
_ID = Field(min_length=1, max_length=200)


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
    sequence: int | None = Field(default=None, ge=0)
    schemaversion: str | None = Field(default=None, max_length=16)
    causationid: str | None = Field(default=None, max_length=200)
    correlationid: str | None = Field(default=None, max_length=200)
    traceparent: str | None = Field(default=None, max_length=128)
    tracestate: str | None = Field(default=None, max_length=512)


def utc_now_iso() -> str:
    """RFC 3339 time in UTC with millisecond precision, as CloudEvents wants."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
