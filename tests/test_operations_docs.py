"""docs/alerts.yml and docs/operations.md against the metrics the worker really exports.

promtool is not available here, so the rules file is parsed as YAML, its
structure checked as Prometheus loads it, and every metric (and label) its
expressions name looked up in a real Prometheus scrape of the worker's
metrics module. tests/test_operations_worker.py repeats the metric lookup
against a live worker's /metrics.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "docs" / "alerts.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
# Labels Prometheus itself attaches to every scraped series, and its own metric.
TARGET_LABELS = {"job", "instance"}
PROMETHEUS_OWN = {"up"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}

# Records one of everything, then prints {sample name: [label names]} of the scrape.
_SCRAPE = """
import json, types
from opentelemetry.sdk.resources import Resource
from prometheus_client.parser import text_string_to_metric_families
from thunderhelm.streams.observability import metrics, prometheus
assert metrics.configure(Resource.create({"service.name": "probe"}), {})
metrics.run_ended("succeeded", 1.0)
metrics.generation_completed(1.0)
metrics.candidate_trained(1.0, "ok", {"val_accuracy": 0.5, "val_loss": 1.0})
metrics.dead_lettered("decode", "DecodeError")
metrics.consumer_lag("topic", 0, 3)
metrics.runs_active(1)
metrics.observe_pool(lambda: types.SimpleNamespace(busy=1, idle=1, queued=0))
body, _ = prometheus.exposition(None)
found = {}
for family in text_string_to_metric_families(body.decode()):
    for sample in family.samples:
        found.setdefault(sample.name, set()).update(sample.labels)
print(json.dumps({name: sorted(labels) for name, labels in found.items()}))
"""


@functools.cache
def exported() -> dict[str, set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _SCRAPE], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return {name: set(labels) for name, labels in json.loads(done.stdout).items()}


def rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(ALERTS.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched) for each series selector in a PromQL expression."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery durations
    text = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", text)  # grouping labels
    found = []
    pattern = r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?"
    for match in re.finditer(pattern, text):
        name, matchers = match.group(1), match.group(2) or ""
        if name in KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue
        found.append((name, set(re.findall(r"([a-zA-Z_]\w*)\s*[=!]~?", matchers))))
    return found


def test_the_rules_file_has_the_shape_prometheus_loads() -> None:
    loaded = yaml.safe_load(ALERTS.read_text())
    assert set(loaded) == {"groups"}
    groups = loaded["groups"]
    assert len({g["name"] for g in groups}) == len(groups) > 0
    names = [rule["alert"] for rule in rules()]
    assert len(set(names)) == len(names)
    for group in groups:
        assert set(group) == {"name", "rules"} and group["rules"]
    for rule in rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"]), rule["alert"]
        assert isinstance(rule["expr"], str) and rule["expr"].strip()
        assert re.fullmatch(r"\d+[smhd]", rule["for"]), rule["for"]
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        for opening, closing in ("()", "{}", "[]"):
            assert rule["expr"].count(opening) == rule["expr"].count(closing), rule["alert"]


def test_the_rules_cover_failed_runs_dead_letters_and_stalled_runs() -> None:
    by_name = {rule["alert"]: rule["expr"] for rule in rules()}
    assert 'thunderhelm_run_outcome="failed"' in by_name["ThunderhelmRunsFailing"]
    assert "rate(thunderhelm_dead_letters_total" in by_name["ThunderhelmDeadLetterRate"]
    stalled = by_name["ThunderhelmRunsStalled"]
    assert "thunderhelm_runs_active" in stalled and "thunderhelm_generations_total" in stalled


def test_every_metric_and_label_the_rules_name_is_exported() -> None:
    names = exported()
    used = [(rule["alert"], s) for rule in rules() for s in selectors(rule["expr"])]
    assert {metric for _, (metric, _) in used} >= {"thunderhelm_runs_total", "up"}
    for alert, (metric, labels) in used:
        if metric in PROMETHEUS_OWN:
            continue
        assert metric in names, f"{alert} uses {metric}, which the worker does not export"
        assert labels <= names[metric] | TARGET_LABELS, (alert, metric, labels)


def test_the_selector_reader_finds_a_wrong_name() -> None:
    # The check above looks: a misspelt metric or label is seen.
    assert selectors('sum by (x) (rate(thunderhelm_runs{a="b"}[5m])) > 0') == [
        ("thunderhelm_runs", {"a"})
    ]
    assert "thunderhelm_runs" not in exported()


def test_the_operations_page_lists_every_exported_metric() -> None:
    page = OPERATIONS.read_text()
    listed = set(re.findall(r"^\| `([a-z_]+)` \|", page, flags=re.MULTILINE))
    families = {
        re.sub(r"_(bucket|count|sum|created)$", "", name)
        for name in exported()
        if name.startswith(("thunderhelm_", "messaging_"))
    }
    assert listed == families
