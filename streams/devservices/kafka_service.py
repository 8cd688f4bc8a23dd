"""A single-node Apache Kafka (KRaft) broker run from Maven Central jars on local Java.

There is no Docker engine on dev and CI machines, so the broker is assembled
from the jars that ``tools/kafka/pom.xml`` lists (copied once into the cache
dir, keyed by version), formatted once, and run as ``kafka.Kafka`` with a
generated ``server.properties`` and ``log4j2.yaml`` under the state dir.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path

from thunderhelm.streams.devservices.local_service import (
    LocalService,
    ServicesSettings,
    ServiceState,
)
from thunderhelm.streams.devservices.processes import (
    ServicesError,
    accepts_connections,
    require_java,
    require_mvn,
)

NAME = "kafka"
MAIN_CLASS = "kafka.Kafka"


def kafka_version(settings: ServicesSettings) -> str:
    """The Kafka version pinned in ``tools/kafka/pom.xml`` (the single source of truth)."""
    pom = settings.tools_dir / "kafka" / "pom.xml"
    try:
        text = pom.read_text()
    except OSError as exc:
        raise ServicesError(f"cannot read {pom}: run from a thunderhelm source checkout") from exc
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", text)
    if found is None:
        raise ServicesError(f"{pom} has no <kafka.version> property")
    return found.group(1).strip()


def libs_dir(settings: ServicesSettings) -> Path:
    return settings.cache_dir / f"kafka-{kafka_version(settings)}" / "libs"


def server_properties(settings: ServicesSettings) -> Path:
    return settings.kafka_dir / "server.properties"


def log_file(settings: ServicesSettings) -> Path:
    return Kafka(settings).log_file()


def pid_file(settings: ServicesSettings) -> Path:
    return Kafka(settings).pid_file()


def data_dir(settings: ServicesSettings) -> Path:
    return settings.kafka_dir / "data"


def new_cluster_id() -> str:
    """What ``kafka-storage random-uuid`` prints: 16 random bytes, URL-safe base64, no padding."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def render_server_properties(settings: ServicesSettings) -> str:
    host = settings.host
    controller = f"{host}:{settings.kafka_controller_port}"
    listeners = f"PLAINTEXT://{host}:{settings.kafka_port},CONTROLLER://{controller}"
    auto_create = "true" if settings.kafka_auto_create_topics else "false"
    return f"""\
# Written by `thunderhelm services start` on every start; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers={controller}
listeners={listeners}
advertised.listeners={listeners}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data_dir(settings)}
num.partitions=1
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
auto.create.topics.enable={auto_create}
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1
group.initial.rebalance.delay.ms=0
"""


LOG4J2_YAML = """\
# Written by `thunderhelm services start`. Console only: stdout goes to kafka.log.
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
      - name: kafka.Kafka$
        level: INFO
"""


def ensure_libs(settings: ServicesSettings) -> Path:
    """Copy the broker's jars from Maven Central into the cache once (skipped when present)."""
    libs = libs_dir(settings)
    version = kafka_version(settings)
    if (libs / f"kafka_2.13-{version}.jar").exists():
        return libs
    mvn = require_mvn()
    tmp = libs.with_name(f"libs.partial-{uuid.uuid4().hex[:8]}")
    argv = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(settings.tools_dir / "kafka" / "pom.xml"),
        "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={tmp}",
    ]
    print(f"kafka: downloading Kafka {version} jars into {libs.parent} (once) ...", flush=True)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ServicesError("downloading the Kafka jars with Maven timed out") from exc
    if done.returncode != 0 or not (tmp / f"kafka_2.13-{version}.jar").exists():
        shutil.rmtree(tmp, ignore_errors=True)
        raise ServicesError(
            f"`{' '.join(argv)}` failed (exit {done.returncode}):\n"
            f"{(done.stdout + done.stderr)[-3000:]}"
        )
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    return libs


def _jvm_base(settings: ServicesSettings, java: str, libs: Path) -> list[str]:
    return [
        java,
        f"-Dlog4j2.configurationFile={settings.kafka_dir / 'log4j2.yaml'}",
        f"-Dkafka.logs.dir={settings.kafka_dir / 'logs'}",
        "-Djava.awt.headless=true",
        "-cp",
        f"{libs}/*",
    ]


def _write_config(settings: ServicesSettings) -> None:
    settings.kafka_dir.mkdir(parents=True, exist_ok=True)
    server_properties(settings).write_text(render_server_properties(settings))
    (settings.kafka_dir / "log4j2.yaml").write_text(LOG4J2_YAML)


def ensure_formatted(settings: ServicesSettings, java: str, libs: Path) -> str:
    """Format the KRaft storage once; re-format (wiping data) if the controller moved.

    Returns a note for the user when data was wiped, else "".
    """
    stamp_file = settings.kafka_dir / "formatted.json"
    controller = f"{settings.host}:{settings.kafka_controller_port}"
    note = ""
    if (data_dir(settings) / "meta.properties").exists():
        try:
            stamp = json.loads(stamp_file.read_text())
        except (OSError, ValueError):
            stamp = {}
        if stamp.get("controller") == controller:
            return ""
        note = f"Kafka data wiped: the controller address changed to {controller}"
        shutil.rmtree(data_dir(settings), ignore_errors=True)
    cluster_id = new_cluster_id()
    argv = [
        *_jvm_base(settings, java, libs),
        "-Xmx256m",
        "kafka.tools.StorageTool",
        "format",
        "-t",
        cluster_id,
        "-c",
        str(server_properties(settings)),
        "--standalone",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise ServicesError(
            f"formatting Kafka storage failed (exit {done.returncode}):\n"
            f"{(done.stdout + done.stderr)[-3000:]}"
        )
    stamp_file.write_text(json.dumps({"cluster_id": cluster_id, "controller": controller}))
    return note


def wipe_data(settings: ServicesSettings) -> None:
    shutil.rmtree(data_dir(settings), ignore_errors=True)
    (settings.kafka_dir / "formatted.json").unlink(missing_ok=True)


def broker_answers(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """A Kafka protocol check: bootstrap an admin client and read cluster metadata.

    Runs in its own thread and event loop, so it works whether or not the caller
    is already inside an asyncio loop.
    """
    from aiokafka.admin import AIOKafkaAdminClient

    async def probe() -> bool:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000)
        )
        try:
            await asyncio.wait_for(admin.start(), timeout_s)
            cluster = await asyncio.wait_for(admin.describe_cluster(), timeout_s)
            return bool(cluster.get("brokers"))
        finally:
            await admin.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            return pool.submit(asyncio.run, probe()).result(timeout_s * 3)
        except Exception:
            return False


class Kafka(LocalService):
    name = NAME
    title = "Kafka"
    poll_s = 0.5
    not_up = "process up, broker not (yet) accepting connections"

    @property
    def home(self) -> Path:
        return self.settings.kafka_dir

    def markers(self) -> tuple[str, ...]:
        return (MAIN_CLASS, str(server_properties(self.settings)))

    def ports(self) -> tuple[int, ...]:
        return self.settings.kafka_ports()

    def address(self) -> str:
        s = self.settings
        return f"PLAINTEXT {s.bootstrap_servers} (controller {s.host}:{s.kafka_controller_port})"

    @property
    def ready_address(self) -> str:
        return self.settings.bootstrap_servers

    def up(self) -> bool:
        return accepts_connections(self.settings.host, self.settings.kafka_port)

    def ready(self) -> bool:
        return self.up() and broker_answers(self.settings.bootstrap_servers)

    def prepare(self) -> tuple[list[str], str]:
        settings = self.settings
        java = require_java()
        libs = ensure_libs(settings)
        _write_config(settings)
        note = ensure_formatted(settings, java, libs)
        argv = [
            *_jvm_base(settings, java, libs),
            "-Xms256m",
            f"-Xmx{settings.kafka_heap_max}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            MAIN_CLASS,
            str(server_properties(settings)),
        ]
        return argv, note


def status(settings: ServicesSettings) -> ServiceState:
    return Kafka(settings).status()


def start(settings: ServicesSettings) -> ServiceState:
    """Start the broker unless it already runs; return once it answers Kafka requests."""
    return Kafka(settings).start()


def stop(settings: ServicesSettings) -> ServiceState:
    """Stop our broker (never another process), then wait until its ports are free."""
    return Kafka(settings).stop()
