"""The `dlq.*` headers of a record on `thunderhelm.dead-letters`, as a model.

A dead letter's key and value are the input's own bytes; what the record
says about the failure is in headers (streams/worker/dead_letters/acks.py writes
them). This model is the source of their JSON Schema: the headers as one JSON
object of name to UTF-8 text, other headers (the input's own) allowed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

_DIGITS = r"^[0-9]+$"


class DeadLetterHeaders(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)

    error_class: str = Field(alias="dlq.error.class", min_length=1)
    error_message: str = Field(alias="dlq.error.message")
    stage: Literal["decode", "validate", "decide", "execute", "produce"] = Field(alias="dlq.stage")
    retryable: Literal["true", "false"] = Field(alias="dlq.retryable")
    original_topic: str = Field(alias="dlq.original.topic", min_length=1)
    original_partition: str = Field(alias="dlq.original.partition", pattern=_DIGITS)
    original_offset: str = Field(alias="dlq.original.offset", pattern=_DIGITS)
    original_timestamp: str = Field(
        alias="dlq.original.timestamp",
        pattern=r"^[0-9]*$",
        description="ms since the epoch; empty when the input had none",
    )
    attempt: str = Field(alias="dlq.attempt", pattern=r"^[1-9][0-9]*$")
    first_failure_time: str = Field(alias="dlq.first.failure.time", pattern=_DIGITS)
    time: str = Field(alias="dlq.time", pattern=_DIGITS, description="ms since the epoch")
    traceparent: str = Field(
        description="the dead-letter span",
        pattern=r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
    )
    original_traceparent: str | None = Field(default=None, alias="dlq.original.traceparent")
    original_tracestate: str | None = Field(default=None, alias="dlq.original.tracestate")
