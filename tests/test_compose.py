"""docker-compose.yml and the worker Dockerfile stay consistent with the local services.

``docker compose config`` validates the file where the Compose plugin is
installed; otherwise the file is parsed (PyYAML when available, else a small
parser for the block-style subset the file is written in) and checked.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.dashboard.settings import DashboardSettings

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


def mount_point(volume: str) -> str:
    """The container path of a `source:target[:mode]` entry (the source may hold `:`)."""
    spec = volume.removesuffix(":ro").removesuffix(":rw")
    return spec.rsplit(":", 1)[1]


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
        env={
            "THUNDERHELM_HOST_DATA_DIR": str(tmp_path / "data"),
            "PATH": "/usr/bin:/usr/local/bin",
        },
    )
    assert done.returncode == 0, done.stderr


def test_services_images_and_ports() -> None:
    services = load_compose()["services"]
    assert set(services) == {"kafka", "jaeger", "worker", "dashboard"}
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
    settings = Settings.from_env(env)
    assert settings.bootstrap_servers == "kafka:9092"
    assert settings.otlp_endpoint == "http://jaeger:4318"
    assert settings.service_name == "thunderhelm-worker"
    mounts = {mount_point(v): v for v in worker["volumes"]}
    assert mounts[str(settings.data_root)].endswith(":ro")
    assert settings.text_dir.is_relative_to(settings.data_root)
    assert settings.artifact_dir.is_relative_to(env["THUNDERHELM_STATE_DIR"])
    state = mounts[env["THUNDERHELM_STATE_DIR"]].rsplit(":", 1)[0]
    assert state in load_compose()["volumes"]  # a named volume, kept across restarts
    assert worker["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert worker["depends_on"]["jaeger"]["condition"] == "service_healthy"


def _sentinel(name: str) -> str:
    return "6067" if name.endswith("_PORT") else f"/sentinel-{name.lower()}"


def _env_vars_read(names: list[str]) -> dict[str, bool]:
    """Whether Settings changes when each variable alone takes a new value."""
    base = Settings.from_env({})
    return {n: Settings.from_env({n: _sentinel(n)}) != base for n in names}


def test_every_compose_variable_is_read_by_the_worker() -> None:
    env = load_compose()["services"]["worker"]["environment"]
    read = _env_vars_read(list(env))
    assert all(read.values()), [n for n, r in read.items() if not r]
    assert not _env_vars_read(["THUNDERHELM_DATA_DIR"])["THUNDERHELM_DATA_DIR"]  # the check looks


def test_the_dashboard_runs_the_worker_image_and_reads_its_variables() -> None:
    dashboard = load_compose()["services"]["dashboard"]
    assert dashboard["image"] == load_compose()["services"]["worker"]["image"]
    assert dashboard["command"] == "thunderhelm dashboard"
    env = dashboard["environment"]
    base = DashboardSettings.from_env({})
    unread = [
        name
        for name in env
        if DashboardSettings.from_env({name: _sentinel(name)}) == base
        and not _env_vars_read([name])[name]
    ]
    assert unread == []
    ours = DashboardSettings.from_env(env)
    assert ours.host == "0.0.0.0" and f"127.0.0.1:{ours.port}:{ours.port}" in dashboard["ports"]
    assert ours.jaeger_ui_link == "http://localhost:16686"  # the image's Jaeger serves its UI


def test_every_service_has_a_healthcheck() -> None:
    for name, service in load_compose()["services"].items():
        test = service.get("healthcheck", {}).get("test")
        assert test, f"{name} has no healthcheck"


def test_worker_web_port_is_bound_for_the_container_and_published() -> None:
    worker = load_compose()["services"]["worker"]
    settings = Settings.from_env(worker["environment"])
    assert settings.web_host == "0.0.0.0"  # a published port reaches only a non-loopback bind
    published = {p.rsplit(":", 1)[1]: p for p in worker["ports"]}
    assert str(settings.web_port) in published
    assert published[str(settings.web_port)].startswith("127.0.0.1:")
    assert str(settings.web_port) in " ".join(worker["healthcheck"]["test"])
    # Healthy means ready to take runs: partitions assigned, producer up, pool warm.
    assert "/readyz" in " ".join(worker["healthcheck"]["test"])


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions per stage, as (INSTRUCTION, arguments)."""
    logical: list[str] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[list[tuple[str, str]]] = []
    for text in logical:
        word, _, rest = text.strip().partition(" ")
        if word.upper() == "FROM":
            stages.append([])
        stages[-1].append((word.upper(), rest.strip()))
    return stages


def test_image_runs_as_a_user_with_its_state_in_a_volume() -> None:
    final = dockerfile_stages()[-1]
    env: dict[str, str] = {}
    for word, rest in final:
        if word == "ENV":
            env.update(dict(shlex.split(pair)[0].split("=", 1) for pair in shlex.split(rest)))
    users = [rest for word, rest in final if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    settings = Settings.from_env(env)
    state = env["THUNDERHELM_STATE_DIR"]
    assert settings.artifact_dir.is_relative_to(state) and settings.web_host == "0.0.0.0"
    volumes = [json.loads(rest) for word, rest in final if word == "VOLUME"]
    assert [state] in volumes
    run = " ".join(rest for word, rest in final if word == "RUN")
    assert f"-o {users[-1]} " in run and state in run  # the volume's folder is the user's
    read = _env_vars_read([n for n in env if n.startswith("THUNDERHELM_")])
    assert all(read.values()), read
    compose = load_compose()["services"]["worker"]["healthcheck"]["test"]
    (check,) = [rest for word, rest in final if word == "HEALTHCHECK"]
    assert json.loads(check.split(" CMD ", 1)[1]) == compose[1:]  # the one the emulation runs
    assert dockerfile_stages()[0][-1] == ("RUN", "pip wheel --wheel-dir /wheels .")


def test_mini_yaml_parses_the_subset() -> None:
    text = 'a:\n  b: "x # y"  # note\n  c:\n    - 1\n    - "two"\n  d:\n  - e\n'
    assert mini_yaml(text) == {"a": {"b": "x # y", "c": ["1", "two"], "d": ["e"]}}
