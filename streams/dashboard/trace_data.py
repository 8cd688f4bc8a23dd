"""A run's trace from Jaeger's HTTP API as rows for a waterfall."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import aiohttp

from thunderhelm.streams.clients.trace_view import SpanNode, build_tree

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


def waterfall(trace: Mapping[str, Any]) -> dict[str, Any]:
    """Spans depth-first in start order, with offsets from the trace's start (µs)."""
    roots = build_tree(trace)
    rows: list[dict[str, Any]] = []
    if not roots:
        return {"trace_id": trace.get("traceID"), "duration_us": 0, "spans": rows}
    spans = trace.get("spans", [])
    begin = min(int(s.get("startTime", 0)) for s in spans)
    end = max(int(s.get("startTime", 0)) + int(s.get("duration", 0)) for s in spans)

    def visit(node: SpanNode, depth: int) -> None:
        rows.append(
            {
                "span_id": node.span_id,
                "parent_id": node.parent_id,
                "name": node.name,
                "service": node.service,
                "depth": depth,
                "offset_us": node.start_us - begin,
                "duration_us": node.duration_us,
                "error": node.error,
                "attributes": {str(k): v for k, v in sorted(node.tags.items())},
            }
        )
        for child in node.children:
            visit(child, depth + 1)

    for root in roots:
        visit(root, 0)
    return {"trace_id": trace.get("traceID"), "duration_us": end - begin, "spans": rows}


async def fetch(session: aiohttp.ClientSession, jaeger: str, trace_id: str) -> dict[str, Any]:
    """The trace's spans (none yet: an empty waterfall); raises ValueError on a bad id."""
    if not TRACE_ID.match(trace_id):
        raise ValueError(f"not a trace id: {trace_id!r}")
    async with session.get(f"{jaeger}/api/traces/{trace_id}") as resp:
        if resp.status == 404:
            return {"trace_id": trace_id, "duration_us": 0, "spans": []}
        resp.raise_for_status()
        body = await resp.json()
    for trace in body.get("data") or []:
        if trace.get("spans"):
            return waterfall(trace)
    return {"trace_id": trace_id, "duration_us": 0, "spans": []}
