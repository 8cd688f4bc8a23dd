"""`thunderhelm trace RUN_ID`: a run's trace as a tree in the terminal.

Jaeger's UI is not always there (a Go-built Jaeger serves a placeholder page,
and remote machines often have only a shell), but its HTTP API is. This finds
the run's trace id in the run's own log (the `accepted` event carries the
traceparent the whole run continues), fetches the trace from
`/api/traces/<id>`, and draws it: one line per span with its offset from the
trace's start, its duration and the attributes that matter for that kind of
span; errors are flagged (in red on a terminal). The UI link is printed too.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from thunderhelm.schemas import events as ev
from thunderhelm.streams.config.settings import Settings

RED = "\x1b[31m"
DIM = "\x1b[2m"
RESET = "\x1b[0m"

# Attributes worth a glance, per span; everything else is in Jaeger.
_SHOWN = (
    ("thunderhelm.candidates", "candidates"),
    ("thunderhelm.best_fitness", "best"),
    ("thunderhelm.val_accuracy", "acc"),
    ("thunderhelm.val_loss", "val_loss"),
    ("thunderhelm.train_loss", "loss"),
    ("thunderhelm.epochs", "epochs"),
    ("thunderhelm.params", "params"),
    ("thunderhelm.interpreter", "interp"),
    ("thunderhelm.saga.action", "action"),
    ("cloudevents.event_type", "type"),
    ("dlq.stage", "stage"),
    ("error.type", "error"),
)


@dataclass
class SpanNode:
    span_id: str
    name: str
    service: str
    start_us: int
    duration_us: int
    tags: dict[str, Any]
    parent_id: str | None
    children: list[SpanNode] = field(default_factory=list)

    @property
    def error(self) -> bool:
        return self.tags.get("error") is True or self.tags.get("otel.status_code") == "ERROR"


def build_tree(trace: Mapping[str, Any]) -> list[SpanNode]:
    """The trace's root spans, children sorted by start; orphans become roots."""
    processes = trace.get("processes", {})
    nodes: dict[str, SpanNode] = {}
    for raw in trace.get("spans", []):
        parent = next(
            (
                ref["spanID"]
                for ref in raw.get("references", [])
                if ref.get("refType") == "CHILD_OF" and ref.get("traceID") == raw.get("traceID")
            ),
            None,
        )
        process = processes.get(raw.get("processID"), {})
        nodes[raw["spanID"]] = SpanNode(
            span_id=raw["spanID"],
            name=raw.get("operationName", "?"),
            service=process.get("serviceName", "?"),
            start_us=int(raw.get("startTime", 0)),
            duration_us=int(raw.get("duration", 0)),
            tags={t["key"]: t.get("value") for t in raw.get("tags", [])},
            parent_id=parent,
        )
    roots = []
    for node in nodes.values():
        parent_node = nodes.get(node.parent_id) if node.parent_id else None
        if parent_node is None:
            roots.append(node)
        else:
            parent_node.children.append(node)
    for node in nodes.values():
        node.children.sort(key=lambda n: (n.start_us, n.name))
    roots.sort(key=lambda n: (n.start_us, n.name))
    return roots


def format_duration(us: int) -> str:
    if us < 1000:
        return f"{us}µs"
    if us < 1_000_000:
        return f"{us / 1000:.1f}ms"
    seconds = us / 1e6
    if seconds < 60:
        return f"{seconds:.2f}s"
    return f"{int(seconds // 60)}m{seconds % 60:04.1f}s"


def _attributes(node: SpanNode) -> str:
    parts = []
    for key, label in _SHOWN:
        value = node.tags.get(key)
        if value is None or (key == "error.type" and not node.error):
            continue
        if isinstance(value, float):
            value = f"{value:.4g}"
        parts.append(f"{label}={value}")
    return " ".join(parts)


def render(trace: Mapping[str, Any], *, color: bool = False) -> str:
    """The whole trace as text: a header line, then one line per span."""
    roots = build_tree(trace)
    spans = trace.get("spans", [])
    if not spans:
        return f"trace {trace.get('traceID', '?')}: no spans"
    begin = min(int(s.get("startTime", 0)) for s in spans)
    end = max(int(s.get("startTime", 0)) + int(s.get("duration", 0)) for s in spans)
    services = sorted({n.service for n in _walk(roots)})
    errors = sum(1 for n in _walk(roots) if n.error)
    header = (
        f"trace {trace.get('traceID', '?')}  {len(spans)} spans  "
        f"{format_duration(end - begin)}  services: {', '.join(services)}"
    )
    if errors:
        header += f"  {_paint(f'{errors} error(s)', RED, color)}"
    lines = [header]
    main_service = _main_service(roots)
    for index, root in enumerate(roots):
        last = index == len(roots) - 1
        _draw(root, "", last, begin, main_service, color, lines, top=True)
    return "\n".join(lines)


def _walk(nodes: Sequence[SpanNode]) -> list[SpanNode]:
    out: list[SpanNode] = []
    stack = list(nodes)
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(node.children)
    return out


def _main_service(roots: Sequence[SpanNode]) -> str:
    counts: dict[str, int] = {}
    for node in _walk(roots):
        counts[node.service] = counts.get(node.service, 0) + 1
    return max(counts, key=lambda s: counts[s]) if counts else ""


def _paint(text: str, code: str, color: bool) -> str:
    return f"{code}{text}{RESET}" if color else text


def _draw(
    node: SpanNode,
    prefix: str,
    last: bool,
    begin: int,
    main_service: str,
    color: bool,
    lines: list[str],
    *,
    top: bool = False,
) -> None:
    branch = "" if top else ("└─ " if last else "├─ ")
    label = node.name
    if node.service != main_service:
        label += f" [{node.service}]"
    if top and node.parent_id:
        label += " (parent not in trace)"
    timing = f"+{format_duration(node.start_us - begin)} {format_duration(node.duration_us)}"
    extra = _attributes(node)
    text = f"{label}  {_paint(timing, DIM, color)}" + (f"  {extra}" if extra else "")
    if node.error:
        message = node.tags.get("otel.status_description") or ""
        flag = "✗ ERROR" + (f": {message}" if message else "")
        text = f"{_paint(label, RED, color)}  {_paint(timing, DIM, color)}"
        text += f"  {extra}" if extra else ""
        text += f"  {_paint(flag[:200], RED, color)}"
    lines.append(f"{prefix}{branch}{text}")
    child_prefix = prefix if top else prefix + ("   " if last else "│  ")
    for index, child in enumerate(node.children):
        _draw(
            child,
            child_prefix,
            index == len(node.children) - 1,
            begin,
            main_service,
            color,
            lines,
        )


# --- finding and fetching --------------------------------------------------------------


async def find_trace_id(settings: Settings, run_id: str) -> str | None:
    """The run's trace id, read from its events on run-events (start of log to its end)."""
    from thunderhelm.schemas import events as ev
    from thunderhelm.streams.clients.client import run_events
    from thunderhelm.streams.observability import telemetry

    fallback = None
    for event in await run_events(settings, run_id):
        data = event.data if isinstance(event.data, dict) else {}
        if event.type == ev.RUN_ACCEPTED and data.get("traceparent"):
            return telemetry.trace_id_of(str(data["traceparent"]))
        if fallback is None and event.traceparent:
            fallback = telemetry.trace_id_of(event.traceparent)
    return fallback


def is_complete(trace: Mapping[str, Any]) -> bool:
    """Whether the trace holds the span that processed the run's terminal event.

    Until then the worker's batch exporter may still be sending spans.
    """
    for span in trace.get("spans") or []:
        for tag in span.get("tags") or []:
            if tag.get("key") == "cloudevents.event_type" and tag.get("value") in ev.TERMINAL_TYPES:
                return True
    return False


def fetch_trace(jaeger: str, trace_id: str, wait_s: float = 0.0) -> dict[str, Any] | None:
    """The trace from Jaeger's v1 API.

    Polls up to `wait_s` until the trace is complete (`is_complete`); at the
    deadline it returns what Jaeger has so far, or None when it has nothing.
    """
    deadline = time.monotonic() + wait_s
    found: dict[str, Any] | None = None
    while True:
        try:
            with urllib.request.urlopen(f"{jaeger}/api/traces/{trace_id}", timeout=10) as resp:
                body = json.load(resp)
            for trace in body.get("data") or []:
                if trace.get("spans"):
                    found = dict(trace)
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
        if (found is not None and is_complete(found)) or time.monotonic() >= deadline:
            return found
        time.sleep(1.0)


def rich_tree(trace: Mapping[str, Any]) -> Any:
    """The trace as a rich Tree (for a terminal): same lines as `render`, coloured."""
    from rich.text import Text
    from rich.tree import Tree

    roots = build_tree(trace)
    spans = trace.get("spans", [])
    lines = render(trace).splitlines()
    tree = Tree(Text(lines[0], style="bold"), guide_style="dim")
    if not spans:
        return tree
    begin = min(int(s.get("startTime", 0)) for s in spans)
    main_service = _main_service(roots)

    def add(parent: Any, node: SpanNode, top: bool) -> None:
        label = Text(node.name, style="red bold" if node.error else "bold")
        if node.service != main_service:
            label.append(f" [{node.service}]", style="cyan")
        if top and node.parent_id:
            label.append(" (parent not in trace)", style="yellow")
        timing = f"+{format_duration(node.start_us - begin)} {format_duration(node.duration_us)}"
        label.append(f"  {timing}", style="dim")
        extra = _attributes(node)
        if extra:
            label.append(f"  {extra}")
        if node.error:
            message = node.tags.get("otel.status_description") or ""
            label.append(("  ✗ ERROR" + (f": {message}" if message else ""))[:200], style="red")
        branch = parent.add(label)
        for child in node.children:
            add(branch, child, False)

    for root in roots:
        add(tree, root, True)
    return tree
