"""Real worker processes and record polling, shared by the broker tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.worker.supervisor import started_pids

REPO = Path(__file__).resolve().parents[2]
BOOTSTRAP = os.environ.get("THUNDERHELM_BOOTSTRAP_SERVERS", "127.0.0.1:9092")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fresh_env(tmp: Path, **extra: str) -> dict[str, str]:
    """Environment for a worker with its own topics, consumer group and folders."""
    tag = uuid.uuid4().hex[:8]
    env = dict(os.environ)
    env.update(
        THUNDERHELM_BOOTSTRAP_SERVERS=BOOTSTRAP,
        THUNDERHELM_TOPIC_PREFIX=f"test-{tag}.",
        THUNDERHELM_APP_ID=f"thunderhelm-test-{tag}",
        THUNDERHELM_WEB_PORT=str(free_port()),
        THUNDERHELM_ARTIFACT_DIR=str(tmp / "artifacts"),
        THUNDERHELM_DATA_ROOT=str(tmp / "data"),
        THUNDERHELM_FAUST_DIR=str(tmp / "faust"),
        THUNDERHELM_PARTITIONS="2",
        THUNDERHELM_POOL_SIZE="2",
        OTEL_SERVICE_NAME="thunderhelm-worker",
    )
    env.update(extra)
    return env


@dataclass
class WorkerProcess:
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    web_port: int = 0
    _log: object = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    def start(self, ready_timeout: float = 90.0) -> None:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self._log = log
        # Each process gets its own web port: several workers may share an env.
        self.web_port = free_port()
        env = {**self.env, "THUNDERHELM_WEB_PORT": str(self.web_port)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "thunderhelm.streams.cli.main", "worker"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop(kill=True)  # the supervisor's worker, if it outlived it
                raise RuntimeError(f"worker exited: {self._tail()}")
            if b"Ready" in self.log_path.read_bytes()[offset:]:
                return
            time.sleep(0.3)
        # Callers start a worker before the `try` that stops it: one that never got
        # ready (no broker, say) would otherwise outlive them, restarted by its
        # supervisor, loading the broker and the cores the next tests use.
        self.stop(kill=True)
        raise TimeoutError(f"worker not ready: {self._tail()}")

    def _tail(self) -> str:
        """The log's last lines, for an error (a cut multi-byte character is replaced)."""
        return self.log_path.read_bytes()[-3000:].decode(errors="replace")

    @property
    def worker_pid(self) -> int:
        """The worker's own process: `proc` is the supervisor that runs it."""
        pids = started_pids(self.log_path.read_text(errors="replace"))
        if not pids:
            raise RuntimeError(f"no worker started yet: see {self.log_path}")
        return pids[-1]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:  # the whole group: the worker too, should its supervisor be gone
            self._kill_group()
        if self.proc.poll() is None:
            if not kill:
                self.proc.terminate()  # the supervisor stops its worker, then itself
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self._kill_group()
                self.proc.wait(10)
        self.proc = None

    def _kill_group(self) -> None:
        # `thunderhelm worker` is a supervisor with the worker as its child, both
        # in the session started for it: SIGKILL reaches them at once.
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


async def collect(
    topics: list[str],
    until: Callable[[list[ConsumerRecord[bytes, bytes]]], bool],
    *,
    timeout_s: float = 120.0,
    bootstrap: str = BOOTSTRAP,
    alive: Callable[[], bool] | None = None,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read the topics from the start until `until(records)` holds or time runs out.

    With `alive` (a worker's), stop as soon as it returns False: a dead worker
    will not write what is awaited, and a benchmark should say so at once.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    seen: list[ConsumerRecord[bytes, bytes]] = []
    try:
        parts: list[TopicPartition] = []
        deadline = time.monotonic() + timeout_s
        for topic in topics:
            while not consumer.partitions_for_topic(topic):
                await consumer._client.force_metadata_update()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"topic {topic} never appeared")
                await asyncio.sleep(0.2)
            parts += [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                seen.extend(records)
            if until(seen):
                return seen
            if alive is not None and not alive():
                raise RuntimeError("the worker died while records were awaited")
        return seen
    finally:
        await consumer.stop()
