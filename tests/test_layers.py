"""The layering rules the folders promise, read from the import statements.

Each rule names the folder it constrains and what it may not import; a new
import that crosses a layer fails here with the file and the line.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = ("streams", "ga", "schemas")


def imports(folder: str) -> Iterator[tuple[str, int, str]]:
    """(file, line, imported module) for every import under `folder`."""
    for path in sorted((ROOT / folder).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                yield str(path.relative_to(ROOT)), node.lineno, name


def offenders(folder: str, allowed: object) -> list[str]:
    assert callable(allowed)
    return [
        f"{file}:{line} imports {name}" for file, line, name in imports(folder) if not allowed(name)
    ]


def top(name: str) -> str:
    return name.split(".")[0]


def test_production_code_never_imports_tests_or_benchmarks() -> None:
    for folder in PRODUCTION:
        assert offenders(folder, lambda n: top(n) not in ("tests", "bench")) == []


def test_modules_are_imported_by_their_installed_names() -> None:
    # The distribution installs only `thunderhelm`; a bare `import streams`
    # would work in a checkout and fail in site-packages.
    for folder in (*PRODUCTION, "tests", "bench"):
        assert offenders(folder, lambda n: top(n) not in PRODUCTION) == []


FORBIDDEN_IN_DOMAIN = ("faust", "mode", "aiokafka", "opentelemetry", "numpy", "pydantic", "time",
                       "datetime", "asyncio")  # fmt: skip


def test_the_domain_is_pure() -> None:
    def allowed(name: str) -> bool:
        if top(name) in FORBIDDEN_IN_DOMAIN:
            return False
        inner = name.startswith("thunderhelm.streams.")
        return not inner or name.startswith("thunderhelm.streams.domain")

    assert offenders("streams/domain", allowed) == []


def test_importing_the_domain_loads_none_of_the_edge() -> None:
    # The domain's events are the contract's frozen models (schemas/event_data.py),
    # so pydantic comes in through them; nothing of Kafka, tracing or numpy may.
    probe = (
        "import sys, thunderhelm.streams.domain.saga, thunderhelm.streams.domain.invariants\n"
        "print(sorted({m.split('.')[0] for m in sys.modules}))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = set(ast.literal_eval(done.stdout))
    assert loaded.isdisjoint({"faust", "mode", "aiokafka", "opentelemetry", "numpy"})


def test_the_ga_core_uses_the_standard_library_only() -> None:
    def allowed(name: str) -> bool:
        return name.startswith("thunderhelm.ga.core") or (
            top(name) in sys.stdlib_module_names and top(name) != "thunderhelm"
        )

    assert offenders("ga/core", allowed) == []


def test_the_ga_knows_nothing_of_streams_or_schemas() -> None:
    def allowed(name: str) -> bool:
        return not name.startswith(("thunderhelm.streams", "thunderhelm.schemas"))

    assert offenders("ga", allowed) == []


POOL_MAY_USE = (
    "thunderhelm.ga.pool",
    "thunderhelm.ga.training.blas",
    "thunderhelm.ga.training._kernel",
)
POOL_PACKAGES = ("thunderhelm.ga", "thunderhelm.ga.training", "thunderhelm.ga.check_python")


@pytest.mark.parametrize("module", ["interpreter_pool", "slot", "backend", "task_runner", "types"])
def test_the_pool_loads_nothing_an_isolated_interpreter_cannot(module: str) -> None:
    # Task runners execute inside isolated sub-interpreters, where numpy and
    # most extension modules cannot be imported.
    def allowed(name: str) -> bool:
        if top(name) == "thunderhelm":
            return name.startswith(POOL_MAY_USE) or name in POOL_PACKAGES
        return top(name) in sys.stdlib_module_names

    found = [o for o in offenders("ga/pool", allowed) if o.startswith(f"ga/pool/{module}.py")]
    assert found == []


def test_the_layer_rules_catch_a_crossing(tmp_path: Path) -> None:
    # The walker itself: a domain module importing faust is found.
    probe = ROOT / "streams" / "domain" / "_layer_probe.py"
    probe.write_text("import faust\n")
    try:
        assert any("faust" in o for o in offenders("streams/domain", lambda n: top(n) != "faust"))
    finally:
        probe.unlink()


# The folders of streams/, lowest first: each imports only from its own and lower ones.
STREAMS_LAYERS = (
    "config",  # settings from the environment
    "domain",  # the pure saga
    "wire",  # records, envelopes, failures as the worker reads and writes them
    "observability",  # tracing, metrics, logs
    "execution",  # running a step of a run on the pool; the local run
    "worker",  # the Kafka edge
    "devservices",  # local Kafka and Jaeger, a worker process for tests
    "clients",  # what the CLI and the dashboard share
    "dashboard",
    "cli",
)


def streams_layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[:2] != ["thunderhelm", "streams"] or len(parts) < 3:
        return None
    return parts[2] if parts[2] in STREAMS_LAYERS else None


def upward_imports() -> list[str]:
    found = []
    for layer in STREAMS_LAYERS:
        rank = STREAMS_LAYERS.index(layer)

        def allowed(name: str, rank: int = rank) -> bool:
            target = streams_layer(name)
            return target is None or STREAMS_LAYERS.index(target) <= rank

        found += offenders(f"streams/{layer}", allowed)
    return found


def test_every_streams_folder_has_its_place_in_the_layers() -> None:
    folders = {p.name for p in (ROOT / "streams").iterdir() if (p / "__init__.py").is_file()}
    assert folders == set(STREAMS_LAYERS)


def test_streams_layers_import_downward_only() -> None:
    assert upward_imports() == []


def test_an_upward_import_is_caught() -> None:
    probe = ROOT / "streams" / "wire" / "_layer_probe.py"
    probe.write_text("from thunderhelm.streams.worker import app\n")
    try:
        assert any("_layer_probe" in o for o in upward_imports())
    finally:
        probe.unlink()


def import_graph() -> dict[str, set[str]]:
    """Module -> the production modules it imports (at the top or inside functions)."""

    def module_of(file: str) -> str:
        return "thunderhelm." + ".".join(Path(file).with_suffix("").parts).removesuffix(".__init__")

    graph: dict[str, set[str]] = {}
    for folder in PRODUCTION:
        for path in (ROOT / folder).rglob("*.py"):
            graph[module_of(str(path.relative_to(ROOT)))] = set()
    for folder in PRODUCTION:
        for file, _, name in imports(folder):
            module = module_of(file)
            if name in graph and name != module:
                graph[module].add(name)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of `graph` (its strongly connected parts of two or more)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_between_files() -> None:
    graph = import_graph()
    assert "thunderhelm.streams.domain.saga" in graph["thunderhelm.streams.worker.steps.runner"]
    assert circles(graph) == []
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
