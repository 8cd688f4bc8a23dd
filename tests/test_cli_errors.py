"""Expected failures end in one line on stderr and the documented exit code, never a traceback.

The commands run as a user runs them: the installed `thunderhelm` script in a
subprocess. "Broker down" is a real unreachable address (127.0.0.1:1, where
nothing listens); "Jaeger down" likewise. The Kafka-marked cases use the
real broker with fresh topic names.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.kafka_helpers import fresh_env
from thunderhelm.streams.cli.exits import ExitCode
from thunderhelm.streams.config.settings import Settings

SCRIPT = Path(sys.executable).with_name("thunderhelm")
NOWHERE = "127.0.0.1:1"  # nothing listens on port 1


def cli(*argv: str, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `thunderhelm ARGV...` in its own process."""
    command = (
        [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "thunderhelm.streams.cli"]
    )
    done = subprocess.run(
        [*command, *argv],
        env={**os.environ, "COLUMNS": "120", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done.returncode, done.stdout, done.stderr


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    return lines[0]


def down(tmp_path: Path) -> dict[str, str]:
    return {
        "THUNDERHELM_BOOTSTRAP_SERVERS": NOWHERE,
        "THUNDERHELM_STATE_DIR": str(tmp_path),
        "THUNDERHELM_LOCAL_LOG_DIR": str(tmp_path / "local-runs"),  # not the checkout's var/
        "OTEL_TRACES_EXPORTER": "none",
    }


@pytest.mark.parametrize(
    "argv",
    [
        ["submit", "--dataset", "spirals"],
        ["submit", "--wait"],
        ["cancel", "some-run"],
        ["watch", "some-run"],
        ["runs"],
        ["replay"],
        ["trace", "some-run"],
        ["dlq", "list"],
        ["dlq", "redrive", "--all"],
    ],
    ids=" ".join,
)
def test_with_the_broker_down_a_command_says_so_in_one_line_and_exits_3(
    argv: list[str], tmp_path: Path
) -> None:
    began = time.monotonic()
    code, out, err = cli(*argv, env=down(tmp_path))
    took = time.monotonic() - began
    line = one_line(err)
    assert code == ExitCode.UNREACHABLE, err
    assert line.startswith(f"thunderhelm {' '.join(a for a in argv[:2] if a.isalpha())}")
    assert f"cannot reach the Kafka broker at {NOWHERE}" in line
    assert out == ""
    assert took < 15, f"{argv} took {took:.1f}s"


def test_submit_with_the_broker_down_keeps_the_traced_path_quiet(tmp_path: Path) -> None:
    # Tracing on (the default exporter, the real Jaeger): still just the one line.
    env = {**down(tmp_path), "OTEL_TRACES_EXPORTER": "otlp"}
    code, _, err = cli("submit", "--dataset", "spirals", env=env)
    assert code == ExitCode.UNREACHABLE
    one_line(err)


def test_a_reader_that_left_stdout_ends_the_command_quietly(tmp_path: Path) -> None:
    """`thunderhelm … | head`: stdout's reader is gone before the command writes."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [str(SCRIPT), "services", "status"],
            env={**os.environ, **down(tmp_path)},
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write)
    assert done.stderr == ""  # not "cannot reach the Kafka broker ([Errno 32] Broken pipe)"
    assert done.returncode == 128 + signal.SIGPIPE


def test_jaeger_down_is_exit_3(tmp_path: Path) -> None:
    code, _, err = cli(
        "trace", "r", "--trace-id", "0" * 32, "--jaeger", "http://127.0.0.1:1", env=down(tmp_path)
    )
    assert code == ExitCode.UNREACHABLE
    assert "cannot reach Jaeger at http://127.0.0.1:1" in one_line(err)


@pytest.mark.parametrize("command", ["submit", "run"])
def test_a_missing_request_file_is_exit_5(command: str, tmp_path: Path) -> None:
    code, _, err = cli(command, "--file", str(tmp_path / "absent.json"), env=down(tmp_path))
    assert code == ExitCode.NOT_FOUND
    assert "absent.json" in one_line(err)


@pytest.mark.parametrize("command", ["submit", "run"])
def test_a_request_file_that_is_not_json_is_exit_5(command: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"run_id": "x", ')
    code, _, err = cli(command, "--file", str(bad), env=down(tmp_path))
    assert code == ExitCode.NOT_FOUND
    assert "not valid JSON" in one_line(err)


def test_an_invalid_request_is_exit_5_before_anything_is_sent(tmp_path: Path) -> None:
    # The broker is down: reaching it would be exit 3, so 5 proves nothing was tried.
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"run_id": "x", "dataset": {"name": "nope"}}))
    code, _, err = cli("submit", "--file", str(request), env=down(tmp_path))
    assert code == ExitCode.NOT_FOUND
    assert "invalid request" in one_line(err)


def test_a_bad_setting_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = cli("runs", env={**down(tmp_path), "THUNDERHELM_PARTITIONS": "many"})
    assert code == ExitCode.USAGE
    assert "THUNDERHELM_PARTITIONS" in one_line(err)


def test_usage_errors_are_exit_2(tmp_path: Path) -> None:
    assert cli("frobnicate", env=down(tmp_path))[0] == ExitCode.USAGE
    assert cli("submit", "--population", "zero", env=down(tmp_path))[0] == ExitCode.USAGE
    assert cli("dlq", "show", "not-a-record", env=down(tmp_path))[0] == ExitCode.USAGE
    code, _, err = cli("dlq", "redrive", env=down(tmp_path))  # no selector
    assert code == ExitCode.USAGE and "say which records" in one_line(err)


def test_a_missing_artifact_is_exit_5(tmp_path: Path) -> None:
    code, _, err = cli("predict", str(tmp_path / "none"), "--input", "x.csv", env=down(tmp_path))
    assert code == ExitCode.NOT_FOUND
    assert "none" in one_line(err)


@pytest.mark.kafka
def test_missing_topics_are_exit_3_and_say_which(tmp_path: Path) -> None:
    env = fresh_env(tmp_path, OTEL_TRACES_EXPORTER="none")  # its topics do not exist
    began = time.monotonic()
    code, _, err = cli("submit", env=env)
    assert code == ExitCode.UNREACHABLE
    assert f"topic {env['THUNDERHELM_TOPIC_PREFIX']}run-requests does not exist" in one_line(err)
    code, _, err = cli("watch", "some-run", env=env)
    assert code == ExitCode.UNREACHABLE and "does not exist" in one_line(err)
    assert time.monotonic() - began < 30


@pytest.mark.kafka
def test_a_follow_timeout_is_exit_4_and_an_unknown_run_is_exit_5(tmp_path: Path) -> None:
    from thunderhelm.streams.worker.kafka.topics import ensure_topics

    env = fresh_env(tmp_path, OTEL_TRACES_EXPORTER="none")
    asyncio.run(ensure_topics(Settings.from_env(env)))
    run_id = f"never-{uuid.uuid4().hex[:6]}"  # no worker: it never ends
    code, _, err = cli("watch", run_id, "--follow-timeout", "2", env=env)
    assert code == ExitCode.TIMEOUT
    assert f"run {run_id} did not finish within 2.0 s" in one_line(err)
    code, _, err = cli("trace", run_id, env=env)
    assert code == ExitCode.NOT_FOUND and f"no trace found for run {run_id}" in one_line(err)
    code, _, err = cli("dlq", "show", "0:12345", env=env)
    assert code == ExitCode.NOT_FOUND and "no dead letter at 0:12345" in one_line(err)


def _interrupted(
    argv: list[str], env: dict[str, str], ready: str, tmp_path: Path, settle: float = 0.5
) -> tuple[int, str]:
    """Start `thunderhelm ARGV`, wait for `ready` on its stdout, Ctrl-C it: (code, stderr)."""
    command = (
        [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "thunderhelm.streams.cli"]
    )
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(
            [*command, *argv], env={**os.environ, **env}, stdout=stdout, stderr=stderr
        )
        try:
            deadline = time.monotonic() + 60
            while ready not in out.read_text() and time.monotonic() < deadline:
                assert proc.poll() is None, err.read_text()
                time.sleep(0.1)
            time.sleep(settle)
            proc.send_signal(signal.SIGINT)
            code = proc.wait(60)
        finally:
            proc.kill()
    return code, err.read_text()


def test_ctrl_c_on_a_local_run_cancels_it_with_exit_130(tmp_path: Path) -> None:
    run_id = f"ctrl-c-{uuid.uuid4().hex[:6]}"
    argv = ["run", "--run-id", run_id, "--population", "8", "--generations", "30",
            "--epochs", "30", "--samples", "2000", "--pool-size", "2"]  # fmt: skip
    code, err = _interrupted(argv, down(tmp_path), f"run {run_id}: spirals", tmp_path)
    assert code == ExitCode.INTERRUPTED, err
    assert "Traceback" not in err


@pytest.mark.kafka
def test_ctrl_c_on_watch_is_exit_130_without_a_traceback(tmp_path: Path) -> None:
    from thunderhelm.streams.worker.kafka.topics import ensure_topics

    env = fresh_env(tmp_path, OTEL_TRACES_EXPORTER="none")
    asyncio.run(ensure_topics(Settings.from_env(env)))
    (tmp_path / "run").mkdir()
    # Plain output: no lines until an event comes; give it time to start consuming.
    code, err = _interrupted(["watch", "nobody"], env, "", tmp_path / "run", settle=4)
    assert code == ExitCode.INTERRUPTED
    assert "Traceback" not in err and "Aborted" not in err
