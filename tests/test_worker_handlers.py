"""The worker's handlers, step runner and reconciler, without a broker.

Fakes stand in for the Faust table (a dict), the topics, the producer and the
executor; what is under test is the worker's own logic: a command becomes
events once, events fold into the stored state, the saga's steps run, the
result is published once, ownership decides who drives a run. The real
broker runs the same code in test_e2e_kafka.py and test_faults.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from faust.types import TP
from opentelemetry.context import Context
from pydantic import ValidationError

from thunderhelm.ga.pool.interpreter_pool import PoolStats
from thunderhelm.schemas import events as ev
from thunderhelm.schemas.codec import decode_record
from thunderhelm.schemas.envelope import format_sequence
from thunderhelm.schemas.event_data import EVENT_DATA, CancelRecorded, RunAccepted, event_data
from thunderhelm.schemas.requests import CONTINUE_REQUESTED
from thunderhelm.schemas.results import RUN_RESULT
from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.domain import saga
from thunderhelm.streams.execution.executor import ended
from thunderhelm.streams.execution.steps import Report
from thunderhelm.streams.wire.events import event_envelope, to_domain
from thunderhelm.streams.worker.components import RunWorker
from thunderhelm.streams.worker.events.ownership import Ownership

# The in-process path (the owner trains every candidate); fan-out has its own tests.
SETTINGS = Settings(topic_prefix="unit", fanout=False)
PARTITION = 1


@dataclass
class Message:
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int = PARTITION
    offset: int = 0
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp: float | None = None
    refs: int = 1
    superseded: Callable[[], bool] = field(default=lambda: False)

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)

    def incref(self, n: int = 1) -> None:
        self.refs += n


@dataclass
class Event:
    message: Message
    acks: int = 0

    @property
    def headers(self) -> dict[str, bytes]:
        return dict(self.message.headers)

    def ack(self) -> bool:
        self.acks += 1
        return True


class Topic:
    def __init__(self, name: str, sent: list[tuple[str, bytes | None, bytes]]) -> None:
        self.name, self.sent = name, sent
        # Records whose ack the broker holds back: (a marker in the value, the ack).
        self.held: list[tuple[bytes, asyncio.Future[None]]] = []

    async def send(self, *, key: bytes | None, value: bytes, headers: Any) -> asyncio.Future[None]:
        self.sent.append((self.name, key, value))
        for marker, ack in self.held:
            if marker in value:
                self.held.remove((marker, ack))
                return ack
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class Producer:
    def __init__(self) -> None:
        self.dead: list[tuple[str, bytes | None, list[tuple[str, bytes]]]] = []

    async def send(self, topic: str, key: Any, value: Any, p: Any, t: Any, headers: Any) -> Any:
        self.dead.append((topic, key, list(headers)))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class Assignor:
    def __init__(self, partitions: set[int]) -> None:
        self.partitions = partitions

    def assigned_actives(self) -> set[TP]:
        return {TP(SETTINGS.run_events, p) for p in self.partitions}


class App:
    def __init__(self, partitions: set[int]) -> None:
        self.assignor = Assignor(partitions)
        self.producer = Producer()
        self.rebalancing = False
        self.consumer = None  # no lag to report


class Executor:
    """Generations that score 0.5 each; an ending with a valid result."""

    def __init__(self) -> None:
        # (run id, whether the final model's retraining stops too)
        self.cancelled: list[tuple[str, bool]] = []
        self.generations_run = 0
        self.candidates = 0  # candidates each generation reports
        self.trained: list[tuple[int, int]] = []

    def start(self) -> None: ...

    def close(self) -> None: ...

    def cancel(self, run_id: str, *, final_model: bool = True) -> None:
        self.cancelled.append((run_id, final_model))

    def initial_ga_state(self, state: saga.RunState) -> dict[str, Any]:
        return {"population": []}

    async def run_generation(
        self, state: saga.RunState, context: Context | None, report: Report | None = None
    ) -> dict[str, Any]:
        self.generations_run += 1
        for index in range(self.candidates):
            if report is not None and index not in state.outcomes:
                self.trained.append((state.generation, index))
                outcome = {
                    "run_id": state.run_id,
                    "generation": state.generation,
                    "index": index,
                    "genome_key": f"g{index}",
                    "fitness": 0.5,
                    "metrics": {"val_accuracy": 0.5, "val_loss": 1.0, "params": 10},
                    "seed": index,
                    "duration_s": 0.01,
                }
                # The real step reports from its training thread and waits for the ack.
                await asyncio.to_thread(report, outcome)
        return {
            "run_id": state.run_id,
            "generation": state.generation,
            "fitnesses": [0.5],
            "candidates": [],
            "evaluations": state.evaluations + 1,
            "ga_state": {"population": []},
        }

    def _result(self, state: saga.RunState, status: str, why: str = "X") -> dict[str, Any]:
        error = None if status == "succeeded" else {"class": why, "message": "y"}
        return {
            "run_id": state.run_id,
            "status": status,
            "best": None,
            "generations": state.generation,
            "evaluations": state.evaluations,
            "duration_s": 0.1,
            "artifact": None,
            "error": error,
        }

    async def finish(self, state: saga.RunState, action: saga.Finish) -> dict[str, Any]:
        return self._result(state, action.status, action.error_class or "X")

    def failure_result(self, state: saga.RunState, exc: BaseException) -> dict[str, Any]:
        return self._result(state, "failed")

    def pool_stats(self) -> PoolStats | None:
        return None  # no pool

    # Fan-out is off here (SETTINGS): the owner trains every candidate itself.
    async def generation_tasks(self, state: saga.RunState) -> list[dict[str, Any]]:
        raise AssertionError("fan-out is off in these tests")

    def train_task(self, task: Mapping[str, Any], context: Context | None) -> dict[str, Any]:
        raise AssertionError("fan-out is off in these tests")

    def dataset_shape(self, spec: Mapping[str, Any]) -> tuple[int, int]:
        return 2, int(spec.get("classes", 3))


class Harness:
    def __init__(self, owned: set[int] | None = None) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.app = App({PARTITION} if owned is None else owned)
        self.table: dict[bytes, Any] = {}
        topics = {name: Topic(name, self.sent) for name in SETTINGS.topics}
        self.topics = topics
        self.executor = Executor()
        self.worker = RunWorker(SETTINGS, self.app, topics, self.table, executor=self.executor)
        self.read = 0  # how much of `sent` the run-events agent has consumed

    def hold_ack(self, event_type: str) -> asyncio.Future[None]:
        """Hold the broker's ack of the next `event_type` on run-events until it is set."""
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.topics[SETTINGS.run_events].held.append((f'"{event_type}"'.encode(), ack))
        return ack

    async def until(self, done: Callable[[], bool]) -> None:
        for _ in range(1000):
            if done():
                return
            await asyncio.sleep(0)
        raise AssertionError("the condition never came")

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(value) for name, _, value in self.sent if name == topic]

    def types(self) -> list[str]:
        return [record["type"] for record in self.on(SETTINGS.run_events)]

    async def command(
        self,
        data: dict[str, Any],
        kind: str,
        command_id: str,
        superseded: Callable[[], bool] = lambda: False,
    ) -> Event:
        value = json.dumps(
            {"specversion": "1.0", "id": command_id, "source": "t", "type": kind, "data": data}
        ).encode()
        key = str(data.get("run_id")).encode()
        event = Event(Message(SETTINGS.run_commands, key, value, superseded=superseded))
        await self.worker.commands.handle(event)
        return event

    async def event(self, value: bytes, key: bytes = b"r-1") -> Event:
        event = Event(Message(SETTINGS.run_events, key, value))
        await self.worker.events.handle(event)
        return event

    async def fold_until(self, done: Any) -> None:
        """Let steps finish and feed run-events back, one record at a time, until `done()`."""
        for _ in range(200):
            pending = [t for t in self.worker.runner.tasks.values() if not t.done()]
            if pending:
                await asyncio.gather(*pending)
                continue
            if done():
                return
            name, key, value = self.sent[self.read]
            self.read += 1
            if name == SETTINGS.run_events:
                await self.event(value, key or b"")
        raise AssertionError("the condition never came")

    def status(self, run_id: str) -> str | None:
        state = self.worker.state_of(run_id)
        return None if state is None else state.status

    async def settle(self) -> None:
        """Feed run-events back to the agent, and let steps run, until nothing moves."""
        for _ in range(200):
            await asyncio.sleep(0)
            pending = [t for t in self.worker.runner.tasks.values() if not t.done()]
            if pending:
                await asyncio.gather(*pending)
                continue
            if self.read < len(self.sent):
                name, key, value = self.sent[self.read]
                self.read += 1
                if name == SETTINGS.run_events:
                    await self.event(value, key or b"")
                continue
            return
        raise AssertionError("the run never settled")


def request(run_id: str = "r-1", generations: int = 2) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "dataset": {"name": "spirals", "samples": 300},
        "ga": {"population": 4, "generations": generations},
    }


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def wait_for(event: asyncio.Event) -> None:
    """A step that runs until `event` is set (as a runner's task)."""
    await event.wait()


def test_a_request_runs_to_one_published_result_and_settles() -> None:
    async def go() -> Harness:
        h = Harness()
        await h.command(request(), "thunderhelm.run.requested", "c-1")
        await h.settle()
        return h

    h = run(go())
    assert h.types() == [
        ev.RUN_ACCEPTED,
        ev.RUN_STARTED,
        ev.GENERATION_COMPLETED,
        ev.GENERATION_COMPLETED,
        ev.RUN_SUCCEEDED,
    ]
    sequences = [r["sequence"] for r in h.on(SETTINGS.run_events)]
    assert sequences == [format_sequence(n) for n in (1, 2, 3, 4, 5)]  # the extension: a String
    results = h.on(SETTINGS.run_results)
    assert len(results) == 1 and results[0]["id"] == "r-1/result"
    assert results[0]["type"] == RUN_RESULT and results[0]["data"]["status"] == "succeeded"
    state = h.worker.state_of("r-1")
    assert state is not None and state.settled and state.status == "succeeded"
    # The stored record keeps ownership beside the state, not in it.
    stored = h.table[b"r-1"]
    assert stored["partition"] == PARTITION
    assert set(stored["state"]) == set(saga.settled(state).to_dict())


def test_candidate_outcomes_read_after_their_step_start_nothing_again() -> None:
    """The agent may fold a generation's candidates only after its step ended:
    the generation is neither trained nor appended a second time."""

    async def go() -> Harness:
        h = Harness()
        h.executor.candidates = 3
        await h.command(request(), "thunderhelm.run.requested", "c-1")
        await h.settle()
        return h

    h = run(go())
    lifecycle = [t for t in h.types() if t != ev.CANDIDATE_COMPLETED]
    assert lifecycle == [
        ev.RUN_ACCEPTED,
        ev.RUN_STARTED,
        ev.GENERATION_COMPLETED,
        ev.GENERATION_COMPLETED,
        ev.RUN_SUCCEEDED,
    ]
    assert h.types().count(ev.CANDIDATE_COMPLETED) == 6
    assert h.executor.generations_run == 2
    assert h.executor.trained == [(g, i) for g in range(2) for i in range(3)]
    # Appended faster than the agent folds them, they still number the log 1, 2, 3, ...
    sequences = [int(r["sequence"]) for r in h.on(SETTINGS.run_events)]
    assert sequences == list(range(1, len(sequences) + 1))


def test_a_redelivered_terminal_event_publishes_nothing_more() -> None:
    async def go() -> Harness:
        h = Harness()
        await h.command(request(generations=1), "thunderhelm.run.requested", "c-1")
        await h.settle()
        terminal = next(v for n, _, v in h.sent if b"run.succeeded" in v and n.endswith("events"))
        await h.event(terminal)
        await h.settle()
        return h

    h = run(go())
    assert len(h.on(SETTINGS.run_results)) == 1


def test_a_terminal_event_folded_before_a_crash_gets_its_result_on_redelivery() -> None:
    async def go() -> Harness:
        h = Harness()
        await h.command(request(generations=1), "thunderhelm.run.requested", "c-1")
        await h.settle()
        log = [v for n, _, v in h.sent if n == SETTINGS.run_events]
        # As if the worker died after folding the terminal event, before the result.
        state = None
        for value in log:
            state = saga.evolve(state, to_domain(decode_record(value, {})))
        assert state is not None and state.terminal and not state.settled
        h.worker.store.put(state, PARTITION)
        h.sent.clear()
        await h.event(log[-1])
        return h

    h = run(go())
    assert len(h.on(SETTINGS.run_results)) == 1
    state = h.worker.state_of("r-1")
    assert state is not None and state.settled


ACCEPTED_AT = 1_767_225_600.0  # 2026-01-01T00:00:00Z; the budget is the default 600 s


def _accepted() -> saga.Event:
    data = RunAccepted(run_id="r-1", request={})
    return saga.Event("e-0", ev.RUN_ACCEPTED, "r-1", "2026-01-01T00:00:00Z", data, at=ACCEPTED_AT)


def test_a_second_start_before_the_first_is_read_back_adds_nothing() -> None:
    async def go() -> Harness:
        h = Harness()
        await h.command(request(), "thunderhelm.run.requested", "c-1")
        await h.command(request(), "thunderhelm.run.requested", "c-2")  # a retry, new id
        await h.command(request(), "thunderhelm.run.requested", "c-1")  # a redelivery
        return h

    h = run(go())
    assert h.types().count(ev.RUN_ACCEPTED) == 1


def test_an_invalid_request_is_rejected_with_its_reasons_and_never_started() -> None:
    async def go() -> Harness:
        h = Harness()
        bad = {**request(), "ga": {"population": 10**9, "generations": 1}}
        await h.command(bad, "thunderhelm.run.requested", "c-1")
        await h.settle()
        return h

    h = run(go())
    events = h.on(SETTINGS.run_events)
    assert [e["type"] for e in events] == [ev.RUN_REJECTED]
    assert any(r.startswith("ga.population") for r in events[0]["data"]["reasons"])
    assert h.on(SETTINGS.run_results) == [] and h.executor.generations_run == 0


def test_a_cancel_ends_the_run_cancelled() -> None:
    async def go() -> Harness:
        h = Harness()
        await h.command(request(generations=50), "thunderhelm.run.requested", "c-1")
        await h.command({"run_id": "r-1"}, "thunderhelm.run.cancel-requested", "c-2")
        await h.settle()
        return h

    h = run(go())
    assert h.types()[-1] == ev.RUN_CANCELLED
    assert ev.CANCEL_RECORDED in h.types()
    assert h.on(SETTINGS.run_results)[0]["data"]["status"] == "cancelled"


def test_a_decision_taken_while_the_ending_awaits_its_ack_ends_nothing_again() -> None:
    """The run's ending is written and its ack not back, so the stored state
    still reads `running`; the saga, asked again on it, ends the run once."""

    async def go() -> Harness:
        h = Harness()
        await h.command(request(generations=50), "thunderhelm.run.requested", "c-1")
        assert h.status("r-1") == "running"  # started, generation 0 launched
        ack = h.hold_ack(ev.RUN_CANCELLED)
        await h.command({"run_id": "r-1"}, "thunderhelm.run.cancel-requested", "c-2")
        await h.until(lambda: ev.RUN_CANCELLED in h.types())
        state = h.worker.state_of("r-1")
        assert state is not None and state.status == "running"  # folded only after its ack
        again = asyncio.create_task(h.worker.runner.act(state))
        await h.until(again.done)
        ack.set_result(None)
        await h.settle()
        return h

    h = run(go())
    assert h.types().count(ev.RUN_CANCELLED) == 1
    assert len(h.on(SETTINGS.run_results)) == 1


def test_a_continue_of_a_run_that_moves_on_while_it_waits_is_refused_in_its_log() -> None:
    """A running run's state moves on between reading it and the continue's turn
    in its lane (here: an append of the run's own waits for its ack); the
    refusal goes to the run's log, not to dead letters."""

    async def go() -> Harness:
        h = Harness()
        await h.command(request(generations=50), "thunderhelm.run.requested", "c-1")
        before = h.worker.state_of("r-1")
        assert before is not None and before.status == "running"
        ack = h.hold_ack(ev.GENERATION_COMPLETED)
        stepping = asyncio.create_task(h.settle())
        await h.until(lambda: ev.GENERATION_COMPLETED in h.types())
        more = {"run_id": "r-1", "generations": 2}
        continued = asyncio.create_task(h.command(more, CONTINUE_REQUESTED, "c-2"))
        for _ in range(20):
            await asyncio.sleep(0)  # the continue reads the run, then waits for the lane
        ack.set_result(None)
        await continued
        stepping.cancel()
        return h

    h = run(go())
    assert not h.app.producer.dead
    (refusal,) = [e for e in h.on(SETTINGS.run_events) if e["type"] == ev.CONTINUE_REJECTED]
    assert refusal["data"]["reasons"] == [f"run r-1 is running: {saga.CONTINUABLE}"]


def outcome_of(state: saga.RunState, **extra: Any) -> dict[str, Any]:
    return {
        "run_id": state.run_id,
        "generation": state.generation,
        "index": 0,
        "genome_key": "g0",
        "fitness": 0.5,
        "seed": 1,
        **extra,
    }


def test_an_outcome_decided_while_the_ending_awaits_its_ack_is_not_appended() -> None:
    """A candidate's outcome (another worker trained it) arrives while the
    run's ending waits for its ack: it waits for the run's lane, finds the run
    ended, and nothing follows the terminal event."""

    async def go() -> Harness:
        h = Harness()
        await h.command(request(generations=50), "thunderhelm.run.requested", "c-1")
        assert h.status("r-1") == "running"  # started, generation 0 launched
        ack = h.hold_ack(ev.RUN_CANCELLED)
        await h.command({"run_id": "r-1"}, "thunderhelm.run.cancel-requested", "c-2")
        await h.until(lambda: ev.RUN_CANCELLED in h.types())
        state = h.worker.state_of("r-1")
        assert state is not None and state.status == "running"
        metrics = {"status": "ok", "val_accuracy": 0.5}
        outcome = outcome_of(state, metrics=metrics, worker="other/1")
        late = asyncio.create_task(h.command(outcome, "thunderhelm.candidate.trained", "o-1"))
        for _ in range(20):
            await asyncio.sleep(0)
        ack.set_result(None)
        await late
        await h.settle()
        return h

    types = run(go()).types()
    assert types[-1] == ev.RUN_CANCELLED and ev.CANDIDATE_COMPLETED not in types


def test_a_training_that_reports_while_the_ending_awaits_its_ack_appends_nothing() -> None:
    """A cancel interrupts the step, but a training already running in the
    pool still reports its outcome while the run's ending waits for its ack:
    nothing follows the ending."""

    async def go() -> Harness:
        h = Harness()
        await h.command(request(generations=50), "thunderhelm.run.requested", "c-1")
        assert h.status("r-1") == "running"  # started, generation 0 launched
        ack = h.hold_ack(ev.RUN_CANCELLED)
        await h.command({"run_id": "r-1"}, "thunderhelm.run.cancel-requested", "c-2")
        await h.until(lambda: ev.RUN_CANCELLED in h.types())
        state = h.worker.state_of("r-1")
        assert state is not None and state.status == "running"
        report = h.worker.runner.candidate_reporter(state, None, h.worker.ownership.epoch)
        metrics = {"val_accuracy": 0.5, "val_loss": 1.0, "params": 10}
        outcome = outcome_of(state, metrics=metrics, seed=0, duration_s=0.01)
        # From the training thread, as the pool does.
        late = asyncio.create_task(asyncio.to_thread(report, outcome))
        await asyncio.sleep(0.05)
        ack.set_result(None)
        await late
        await h.settle()
        return h

    types = run(go()).types()
    assert types[-1] == ev.RUN_CANCELLED and ev.CANDIDATE_COMPLETED not in types


def test_an_event_of_the_wrong_shape_is_dead_lettered_at_validate() -> None:
    async def go() -> Harness:
        h = Harness()
        await h.command(request(), "thunderhelm.run.requested", "c-1")
        bad = {"run_id": "r-1", "generation": "zero", "fitnesses": [], "candidates": []}
        record = json.dumps(
            {"specversion": "1.0", "id": "x", "source": "t", "type": ev.GENERATION_COMPLETED}
            | {"data": bad | {"evaluations": 1, "ga_state": {}}}
        ).encode()
        await h.event(record)
        return h

    headers = only_dead_letter(run(go()))
    assert headers["dlq.stage"] == b"validate"
    assert b"generation" in headers["dlq.error.message"]


def only_dead_letter(h: Harness) -> dict[str, bytes]:
    """The headers of the one dead letter the harness wrote."""
    (dead,) = h.app.producer.dead
    return dict(dead[2])


def test_an_event_whose_time_is_not_rfc3339_is_dead_lettered_at_validate() -> None:
    # The saga's deadline is read from the accepted event's time: it must parse.
    h = Harness()
    accepted = {"specversion": "1.0", "id": "x", "source": "t", "type": ev.RUN_ACCEPTED}
    data = {"run_id": "r-2", "request": request("r-2")}
    run(h.event(json.dumps(accepted | {"time": "yesterday", "data": data}).encode(), b"r-2"))
    headers = only_dead_letter(h)
    assert headers["dlq.stage"] == b"validate"
    assert b"not RFC 3339" in headers["dlq.error.message"]
    assert h.worker.state_of("r-2") is None


def test_nothing_of_the_wrong_shape_is_written() -> None:
    with pytest.raises(ValidationError):  # an event's data is made by its model
        event_data(ev.RUN_STARTED, {"run_id": "r-1"})
    cancel = CancelRecorded(run_id="r-1", reason="by the user")
    with pytest.raises(TypeError):  # another type's data
        event_envelope("r-1", saga.NewEvent(ev.RUN_STARTED, cancel), 1)
    with pytest.raises(ValidationError):  # a result not of the contract's shape
        ended("r-1", {"run_id": "r-1", "status": "done"})


def test_only_the_owner_of_a_run_resumes_it() -> None:
    async def go(owned: set[int]) -> Harness:
        h = Harness(owned)
        h.worker.runner.clock = lambda: ACCEPTED_AT + 1
        h.worker.reconciler.idle_before_resume_s = 0.0
        accepted = saga.evolve(None, _accepted())
        assert accepted is not None
        h.worker.store.put(accepted, PARTITION)
        await h.worker.reconciler.reconcile()
        return h

    assert run(go({PARTITION})).types()[:1] == [ev.RUN_STARTED]  # resumed: started
    assert run(go({PARTITION + 1})).types() == []  # a standby copy: left alone


def test_the_reconciler_leaves_a_run_that_waits_for_its_candidates() -> None:
    # Its outcomes drive it; acting every few seconds would decide the same nothing.
    async def go(waiting: bool) -> list[str]:
        h = Harness()
        h.worker.runner.clock = lambda: ACCEPTED_AT + 1
        h.worker.reconciler.idle_before_resume_s = 0.0
        accepted = saga.evolve(None, _accepted())
        assert accepted is not None
        running = dataclasses.replace(
            accepted,
            status="running",
            request=request(),
            dispatched=(0, 1) if waiting else (),
        )
        h.worker.store.put(running, PARTITION)
        driven: list[str] = []

        async def act(state: saga.RunState, *, now: float | None = None) -> None:
            driven.append(state.run_id)

        h.worker.runner.act = act  # type: ignore[method-assign]
        await h.worker.reconciler.reconcile()
        return driven

    assert run(go(waiting=True)) == []
    assert run(go(waiting=False)) == ["r-1"]  # a generation to run: resumed


def test_the_reconciler_ends_a_run_past_its_deadline() -> None:
    async def go(busy: bool) -> Harness:
        h = Harness()
        h.worker.runner.clock = lambda: ACCEPTED_AT + 600.5  # the saga's clock only
        accepted = saga.evolve(None, _accepted())
        assert accepted is not None
        h.worker.store.put(accepted, PARTITION)
        if busy:  # a step is going: it is stopped, and the saga ends the run after it
            block = asyncio.Event()
            h.worker.runner.tasks["r-1"] = asyncio.create_task(wait_for(block))
        await h.worker.reconciler.reconcile()  # no idle wait for a run out of time
        if busy:
            h.worker.runner.tasks.pop("r-1").cancel()
        await h.settle()
        return h

    ended = run(go(busy=False))
    assert ended.types() == [ev.RUN_FAILED]
    assert ended.on(SETTINGS.run_events)[0]["data"]["result"]["error"]["class"] == "TimeoutError"
    stopped = run(go(busy=True))
    # The generation stops; a final model retraining would not: the run is owed its model.
    assert stopped.executor.cancelled == [("r-1", False)] and stopped.types() == []


def test_a_revoked_partition_stops_its_runs_steps() -> None:
    async def go() -> Harness:
        h = Harness()
        await h.command(request(generations=5), "thunderhelm.run.requested", "c-1")
        block = asyncio.Event()
        h.worker.runner.tasks["r-1"] = asyncio.create_task(wait_for(block))
        h.worker.reconciler.on_revoked({PARTITION})
        h.worker.runner.tasks.pop("r-1").cancel()
        return h

    assert run(go()).executor.cancelled == [("r-1", True)]


def test_a_training_that_reports_after_a_revocation_appends_nothing() -> None:
    """The partition went to another worker and came back: this worker may not
    have folded what the other wrote, so an outcome of a step launched before
    is stale."""

    async def go() -> Harness:
        h = Harness()
        await h.command(request(generations=5), "thunderhelm.run.requested", "c-1")
        for _ in range(50):  # until the run is running
            state = h.worker.state_of("r-1")
            if state is not None and state.status == "running":
                break
            if h.read < len(h.sent):
                name, key, value = h.sent[h.read]
                h.read += 1
                if name == SETTINGS.run_events:
                    await h.event(value, key or b"")
            await asyncio.sleep(0)
        state = h.worker.state_of("r-1")
        assert state is not None and state.status == "running"
        report = h.worker.runner.candidate_reporter(state, None, h.worker.ownership.epoch)
        h.worker.ownership.revoked()
        h.worker.ownership.reassigned()  # the same partition again
        outcome = {
            "run_id": "r-1",
            "generation": state.generation,
            "index": 0,
            "genome_key": "g0",
            "fitness": 0.5,
            "metrics": {"val_accuracy": 0.5, "val_loss": 1.0, "params": 10},
            "seed": 0,
            "duration_s": 0.01,
        }
        await asyncio.to_thread(report, outcome)
        return h

    assert ev.CANDIDATE_COMPLETED not in run(go()).types()


def test_a_worker_that_stood_still_past_the_session_timeout_owns_nothing_until_reassigned() -> None:
    now = [100.0]
    ownership = Ownership(App({PARTITION}), SETTINGS.run_events, 6.0, clock=lambda: now[0])
    assert ownership.owns(PARTITION)  # not watched yet: no clock to trust
    ownership.watch()
    now[0] += 5.0  # a busy loop, within the session timeout
    assert ownership.owns(PARTITION)
    ownership.watch()
    now[0] += 15.0  # SIGSTOP, then SIGCONT: nothing ran meanwhile
    assert not ownership.owns(PARTITION)  # at once, before the watch notices
    ownership.watch()
    now[0] += 1.0
    assert not ownership.owns(PARTITION)  # fenced after the watch, too
    ownership.reassigned()
    assert ownership.owns(PARTITION)
    now[0] += 15.0
    ownership.watch()
    for _ in range(12):  # fenced for one session timeout after the stall
        assert not ownership.owns(PARTITION)
        now[0] += 0.5
        ownership.watch()
    now[0] += 0.5
    ownership.watch()
    assert ownership.owns(PARTITION)  # no rebalance came by then: the group kept it


def test_a_worker_that_stood_still_before_its_first_watch_owns_nothing() -> None:
    now = [100.0]
    ownership = Ownership(App({PARTITION}), SETTINGS.run_events, 6.0, clock=lambda: now[0])
    ownership.reassigned()  # its first assignment: it decides, then stops before any watch
    assert ownership.owns(PARTITION)
    now[0] += 15.0  # SIGSTOP, then SIGCONT
    assert not ownership.owns(PARTITION)
    ownership.watch()
    now[0] += 1.0
    assert not ownership.owns(PARTITION)  # fenced until the group assigns again


def stood_still(h: Harness) -> list[float]:
    """Make the harness's worker one that stood still past the session timeout; its clock."""
    now = [100.0]
    ownership = h.worker.ownership
    ownership.clock, ownership.stall_limit_s = (lambda: now[0]), 6.0
    ownership.watch()
    now[0] += 15.0  # SIGSTOP, then SIGCONT
    return now


def test_a_command_read_before_partitions_moved_is_left_to_its_next_reader() -> None:
    async def go() -> Harness:
        h = Harness()
        await h.command(request(), "thunderhelm.run.requested", "c-1", superseded=lambda: True)
        return h

    h = run(go())
    assert h.types() == [] and h.worker.state_of("r-1") is None


def test_a_command_waits_out_a_stall_until_the_group_says_whose_the_run_is() -> None:
    async def go() -> tuple[list[str], Harness]:
        h = Harness()
        stood_still(h)
        handling = asyncio.create_task(h.command(request(), "thunderhelm.run.requested", "c-1"))
        await asyncio.sleep(0.5)
        during = h.types()
        assert not handling.done()
        h.worker.ownership.reassigned()  # the group assigned the same partition again
        await asyncio.wait_for(handling, 5)
        return during, h

    during, h = run(go())
    assert during == []
    assert h.types()[0] == ev.RUN_ACCEPTED


def test_a_command_held_by_a_stall_is_dropped_when_its_partition_moves() -> None:
    async def go() -> Harness:
        h = Harness()
        stood_still(h)
        moved = [False]
        handling = asyncio.create_task(
            h.command(request(), "thunderhelm.run.requested", "c-1", superseded=lambda: moved[0])
        )
        await asyncio.sleep(0.3)
        moved[0] = True  # the reader paused: the partition's next reader reads it again
        h.worker.ownership.revoked()
        h.worker.ownership.reassigned()
        await asyncio.wait_for(handling, 5)
        return h

    assert run(go()).types() == []


def test_every_event_type_has_a_data_model() -> None:
    assert set(EVENT_DATA) == ev.EVENT_TYPES


def test_the_events_agent_marks_what_it_folded_even_a_dead_letter() -> None:
    # A partition's new owner reads its commands only once this mark reaches
    # what the log held (command_reader.py).
    async def go() -> Harness:
        h = Harness()
        await h.command(request(), "thunderhelm.run.requested", "c-1")
        accepted = next(v for name, _, v in h.sent if name == SETTINGS.run_events)
        events = h.worker.events
        assert events.folded_to(PARTITION) == 0
        await events.handle(Event(Message(SETTINGS.run_events, b"r-1", accepted, offset=4)))
        assert events.folded_to(PARTITION) == 5
        await events.handle(Event(Message(SETTINGS.run_events, b"r-1", b"not json", offset=5)))
        assert events.folded_to(PARTITION) == 6
        assert events.folded_to(PARTITION + 1) == 0
        return h

    assert only_dead_letter(run(go()))["dlq.stage"] == b"decode"


def test_a_worker_that_stood_still_folds_nothing_it_reads_into_the_runs_table() -> None:
    """Its fold would reach the changelog after the new owner's writes, and a
    state restored from it later would be stale."""

    async def go() -> tuple[Harness, saga.RunState | None, saga.RunState | None]:
        h = Harness()
        await h.command(request(generations=50), "thunderhelm.run.requested", "c-1")
        before = h.worker.state_of("r-1")
        assert before is not None
        # Another worker's outcome for the run, read back after this one stood still.
        metrics = {"status": "ok", "val_accuracy": 0.5}
        data = event_data(ev.CANDIDATE_COMPLETED, outcome_of(before, index=7, metrics=metrics))
        other = saga.NewEvent(ev.CANDIDATE_COMPLETED, data)
        written = event_envelope("r-1", other, before.version + 1)
        stood_still(h)
        await h.event(written.model_dump_json().encode())
        return h, before, h.worker.state_of("r-1")

    _, before, after = run(go())
    assert after == before  # not folded, not stored
