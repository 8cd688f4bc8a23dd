"""docker-compose.yml and the worker Dockerfile stay consistent with the local services.

``docker compose config`` validates the file where the Compose plugin is
installed; otherwise the file is parsed (PyYAML when available, else a small
parser for the block-style subset the file is written in) and checked.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"


def _scalar(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    if text == "":
        return None
    return text


def _strip_comment(line: str) -> str:
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


def mini_yaml(text: str) -> Any:
    """Parse block-style YAML: nested mappings, ``- scalar`` sequences, quoted scalars."""
    lines = [
        (len(raw) - len(raw.lstrip(" ")), raw.strip())
        for raw in (_strip_comment(x) for x in text.splitlines())
        if raw.strip()
    ]
    pos = 0

    def block(indent: int) -> Any:
        nonlocal pos
        if lines[pos][1].startswith("- "):
            items: list[Any] = []
            while pos < len(lines) and lines[pos][0] == indent and lines[pos][1].startswith("- "):
                items.append(_scalar(lines[pos][1][2:]))
                pos += 1
            return items
        mapping: dict[str, Any] = {}
        while pos < len(lines) and lines[pos][0] == indent:
            key, sep, rest = lines[pos][1].partition(":")
            assert sep, f"not a mapping entry: {lines[pos][1]!r}"
            pos += 1
            if rest.strip():
                mapping[key.strip()] = _scalar(rest)
            elif pos < len(lines) and lines[pos][0] > indent:
                mapping[key.strip()] = block(lines[pos][0])
            elif pos < len(lines) and lines[pos][0] == indent and lines[pos][1].startswith("- "):
                mapping[key.strip()] = block(indent)
            else:
                mapping[key.strip()] = None
        return mapping

    result = block(0)
    assert pos == len(lines), f"unparsed line: {lines[pos][1]!r}"
    return result


def load_compose() -> dict[str, Any]:
    text = COMPOSE.read_text()
    try:
        import yaml  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        data: dict[str, Any] = mini_yaml(text)
    else:
        data = yaml.safe_load(text)
    return data


def _compose_cli() -> list[str] | None:
    for argv in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(argv[0]) is None:
            continue
        done = subprocess.run([*argv, "version"], capture_output=True, text=True, check=False)
        if done.returncode == 0:
            return argv
    return None


def test_docker_compose_config_validates(tmp_path: Path) -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("the Docker Compose CLI is not installed")
    (tmp_path / "data").mkdir()
    done = subprocess.run(
        [*cli, "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
        env={"THUNDERHELM_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/usr/local/bin"},
    )
    assert done.returncode == 0, done.stderr


def test_services_images_and_ports() -> None:
    services = load_compose()["services"]
    assert set(services) == {"kafka", "jaeger", "worker"}
    assert re.fullmatch(r"apache/kafka:4\.1\.\d+", services["kafka"]["image"])
    assert services["jaeger"]["image"] == "jaegertracing/jaeger:2.13.0"
    assert services["kafka"]["ports"] == ["127.0.0.1:9092:29092"]
    jaeger_ports = {p.rsplit(":", 1)[1] for p in services["jaeger"]["ports"]}
    assert jaeger_ports == {"16686", "4317", "4318"}


def test_kafka_listeners_reach_worker_and_host() -> None:
    env = load_compose()["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    advertised = env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert "INTERNAL://kafka:9092" in advertised
    assert "HOST://localhost:9092" in advertised
    assert "HOST://0.0.0.0:29092" in env["KAFKA_LISTENERS"].split(",")
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[key] == "1"


def test_worker_is_wired_to_kafka_and_jaeger() -> None:
    worker = load_compose()["services"]["worker"]
    assert worker["build"]["dockerfile"] == "Dockerfile"
    assert worker["command"] == "thunderhelm worker"
    env = worker["environment"]
    assert env["THUNDERHELM_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
    assert env["OTEL_SERVICE_NAME"] == "thunderhelm-worker"
    data_mount = next(v for v in worker["volumes"] if v.endswith(":ro"))
    assert data_mount.split(":")[-2] == env["THUNDERHELM_DATA_DIR"]
    assert worker["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_dockerfile_builds_the_worker() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("FROM python:3.13-slim") == 2
    assert "build-essential" in text
    assert 'CMD ["thunderhelm", "worker"]' in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "var", ".git"} <= set(ignored)


def test_mini_yaml_parses_the_subset() -> None:
    text = 'a:\n  b: "x # y"  # note\n  c:\n    - 1\n    - "two"\n  d:\n  - e\n'
    assert mini_yaml(text) == {"a": {"b": "x # y", "c": ["1", "two"], "d": ["e"]}}
