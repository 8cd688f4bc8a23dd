"""Table-driven tests of the pure run saga, plus property tests of the fold."""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thunderhelm.schemas import events as ev
from thunderhelm.schemas.event_data import event_data
from thunderhelm.schemas.requests import Budget
from thunderhelm.schemas.results import RunResult
from thunderhelm.streams.domain import saga

REQUEST: dict[str, Any] = {
    "run_id": "r1",
    "dataset": {"name": "spirals"},
    "ga": {"generations": 2},
    "budget": {"timeout_s": 60.0, "max_evaluations": None},
}
_ids = itertools.count()
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, when the helpers' events happen
DEADLINE = T0 + 60.0  # REQUEST's budget.timeout_s after acceptance
TIMEOUT = saga.Finish("failed", "TimeoutError", "run exceeded its budget.timeout_s")
# Out of time with a generation done: the run delivers the best it found.
TIME_SPENT = saga.Finish("succeeded", stopped_by="timeout_s")
DONE = saga.Finish("succeeded", stopped_by="generations")


def event(kind: str, at: float = T0, **data: Any) -> saga.Event:
    return saga.Event(
        f"e{next(_ids)}",
        kind,
        "r1",
        "2026-01-01T00:00:00Z",
        event_data(kind, {"run_id": "r1", **data}),
        at=at,
    )


def accepted(at: float = T0, request: dict[str, Any] = REQUEST) -> saga.Event:
    return event(
        ev.RUN_ACCEPTED,
        at=at,
        request=request,
        traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01",
    )


def started(at: float = T0) -> saga.Event:
    return event(ev.RUN_STARTED, at=at, ga_state={"generation": 0})


def generation(k: int, *, failed: bool = False) -> saga.Event:
    """Generation `k` completed; `failed`: every candidate failed, so nothing is best."""
    return event(
        ev.GENERATION_COMPLETED,
        generation=k,
        fitnesses=[None if failed else 0.5],
        candidates=[],
        ga_state={"generation": k + 1, "work": 7.5 * (k + 1)},
        evaluations=(k + 1) * 4,
        best=None if failed else {"fitness": 0.5 + k},
    )


def result(status: str, revision: int = 1) -> dict[str, Any]:
    """A result of the contract's shape (nothing found, no artifact)."""
    return {
        "run_id": "r1",
        "status": status,
        "best": None,
        "generations": 0,
        "evaluations": 0,
        "duration_s": 0.0,
        "artifact": None,
        "revision": revision,
    }


def terminal(kind: str, revision: int = 1) -> saga.Event:
    return event(kind, result=result(kind.rsplit(".", 1)[1], revision))


def fold(*events: saga.Event) -> saga.RunState | None:
    state: saga.RunState | None = None
    for e in events:
        state = saga.evolve(state, e)
    return state


def test_happy_path_folds_to_succeeded_and_reacts_at_each_step() -> None:
    s = fold(accepted())
    assert s is not None and s.status == "accepted"
    assert s.traceparent and s.traceparent.startswith("00-aaaa")
    assert isinstance(saga.react(s, T0), saga.Start)
    s = saga.evolve(s, started())
    assert s is not None and s.status == "running"
    assert saga.react(s, T0) == saga.RunGeneration(0)
    s = saga.evolve(s, generation(0))
    assert s is not None and saga.react(s, T0) == saga.RunGeneration(1)
    s = saga.evolve(s, generation(1))
    assert s is not None and s.generation == 2 and s.evaluations == 8
    assert saga.react(s, T0) == DONE
    s = saga.evolve(s, terminal(ev.RUN_SUCCEEDED))
    assert s is not None and s.status == "succeeded"
    assert isinstance(saga.react(s, T0), saga.PublishResult)


@pytest.mark.parametrize(
    ("history", "illegal"),
    [
        ([], started()),  # started before accepted: nothing to fold onto
        ([accepted()], generation(0)),  # generation before started
        ([accepted(), started()], generation(1)),  # skipping a generation
        ([accepted(), started(), generation(0)], generation(0)),  # a repeated generation
        ([accepted(), started()], accepted()),  # a second accepted
        ([accepted(), terminal(ev.RUN_CANCELLED)], started()),  # anything after terminal
        ([accepted(), terminal(ev.RUN_FAILED)], terminal(ev.RUN_SUCCEEDED)),  # a second terminal
    ],
)
def test_illegal_or_duplicate_events_change_nothing(
    history: list[saga.Event], illegal: saga.Event
) -> None:
    before = fold(*history)
    assert saga.evolve(before, illegal) is before


def test_same_event_id_twice_is_applied_once() -> None:
    s = fold(accepted(), started())
    g = generation(0)
    once = saga.evolve(s, g)
    assert saga.evolve(once, g) is once


def test_decide_start_is_idempotent() -> None:
    start = saga.StartRun("c1", REQUEST, "t")
    assert [e.type for e in saga.decide(None, start)] == [ev.RUN_ACCEPTED]
    s = fold(accepted())
    assert saga.decide(s, start) == []
    assert saga.decide(s, saga.StartRun("c2", REQUEST, "t")) == []


def test_cancel_before_the_run_is_kept_and_applied() -> None:
    cancel = saga.CancelRun("c9", "r1", "stop", "t")
    (recorded,) = saga.decide(None, cancel)
    s = saga.evolve(None, event(recorded.type, **recorded.data.model_dump(exclude_unset=True)))
    assert s is not None and s.status == "cancel-pending" and saga.react(s, T0) is None
    (acc,) = saga.decide(s, saga.StartRun("c1", REQUEST, "t"))
    s = saga.evolve(s, event(acc.type, at=T0 + 5, **acc.data.model_dump(exclude_unset=True)))
    assert s is not None and s.status == "accepted" and s.deadline == DEADLINE + 5
    assert saga.react(s, T0) == saga.Finish("cancelled", "Cancelled", "stop")


def test_cancel_during_and_after() -> None:
    s = fold(accepted(), started(), event(ev.CANCEL_RECORDED, reason="x"))
    assert s is not None and saga.react(s, T0) == saga.Finish("cancelled", "Cancelled", "x")
    done = fold(accepted(), terminal(ev.RUN_SUCCEEDED))
    assert saga.decide(done, saga.CancelRun("c", "r1", "late", "t")) == []


BUDGETED = {**REQUEST, "budget": {"timeout_s": 60.0, "max_evaluations": 4}}
_RUNNING = [accepted(), started()]
_DONE = [*_RUNNING, generation(0), generation(1)]


@pytest.mark.parametrize(
    ("history", "now", "expected"),
    [
        ([accepted()], T0, saga.Start()),
        ([accepted()], DEADLINE + 1, TIMEOUT),  # out of time before it started
        (_RUNNING, DEADLINE, saga.RunGeneration(0)),  # at the deadline is still in time
        (_RUNNING, DEADLINE + 1, TIMEOUT),
        (_DONE, T0, DONE),
        (_DONE, DEADLINE + 1, TIME_SPENT),  # the last generation came in too late
        ([*_RUNNING, event(ev.CANCEL_RECORDED, reason="x")], DEADLINE + 1,
         saga.Finish("cancelled", "Cancelled", "x")),  # a recorded cancel wins over the clock
        ([*_DONE, terminal(ev.RUN_FAILED)], DEADLINE + 1,  # ended: publish, whenever
         saga.PublishResult(RunResult.model_validate(result("failed")))),
        ([accepted(request=BUDGETED), started()], T0, saga.RunGeneration(0)),
        ([accepted(request=BUDGETED), started(), generation(0)], T0,
         saga.Finish("succeeded", stopped_by="max_evaluations")),
        ([accepted(request=BUDGETED), started(), generation(0)], DEADLINE + 1, TIME_SPENT),
        # Budgets spent with nothing to deliver: the run fails and says which.
        ([accepted(request=BUDGETED), started(), generation(0, failed=True)], T0,
         saga.Finish("failed", "BudgetExceeded", "reached max_evaluations=4")),
        ([*_RUNNING, generation(0, failed=True)], DEADLINE + 1, TIMEOUT),
        ([accepted(T0 + 100), started()], DEADLINE + 1, saga.RunGeneration(0)),  # accepted later
    ],
)  # fmt: skip
def test_react_at_a_time(history: list[saga.Event], now: float, expected: saga.Action) -> None:
    state = fold(*history)
    assert state is not None
    assert saga.react(state, now) == expected


WORK_BUDGET = {**REQUEST, "budget": {"timeout_s": 60.0, "max_work": 15.0}}


def test_a_run_ends_when_its_training_work_reaches_max_work() -> None:
    running = [accepted(request=WORK_BUDGET), started()]
    once = fold(*running, generation(0))
    assert once is not None and saga.work_done(once) == 7.5
    assert saga.react(once, T0) == saga.RunGeneration(1)
    twice = fold(*running, generation(0), generation(1))
    assert twice is not None and saga.work_done(twice) == 15.0
    assert saga.react(twice, T0) == saga.Finish("succeeded", stopped_by="max_work")
    nothing = fold(*running, generation(0, failed=True), generation(1, failed=True))
    assert nothing is not None and saga.react(nothing, T0) == saga.Finish(
        "failed", "BudgetExceeded", "reached max_work=15.0"
    )


def test_react_times_out_exactly_when_now_passes_the_deadline() -> None:
    state = fold(accepted(), started(at=T0 + 30), generation(0))
    assert state is not None and state.deadline == DEADLINE  # fixed at acceptance
    assert saga.react(state, DEADLINE) == saga.RunGeneration(1)
    assert saga.react(state, math.nextafter(DEADLINE, math.inf)) == TIME_SPENT
    assert not saga.timed_out(state, DEADLINE) and saga.timed_out(state, DEADLINE + 1e-3)


def test_the_deadline_defaults_to_the_contracts_timeout() -> None:
    bare = {key: value for key, value in REQUEST.items() if key != "budget"}
    state = fold(accepted(request=bare))
    assert state is not None and state.deadline == T0 + saga.DEFAULT_TIMEOUT_S
    assert Budget().timeout_s == saga.DEFAULT_TIMEOUT_S  # the wire's default is the same


def test_rejected_is_terminal_without_a_result() -> None:
    s = fold(event(ev.RUN_REJECTED, reasons=["ga.population: too small"]))
    assert s is not None and s.status == "rejected" and saga.react(s, T0) is None


@pytest.mark.parametrize("end", [ev.RUN_SUCCEEDED, ev.RUN_FAILED, ev.RUN_CANCELLED])
def test_a_settled_run_absorbs_everything_like_the_full_state(end: str) -> None:
    full = fold(accepted(), started(), generation(0), terminal(end))
    assert full is not None and full.terminal
    small = saga.settled(full)
    assert small.status == full.status and small.version == full.version
    assert small.ga_state is None and small.result is None and small.seen_ids == ()
    assert len(repr(small.to_dict())) < len(repr(full.to_dict())) / 2
    later = [accepted(), started(), generation(1), terminal(ev.RUN_FAILED)]
    for e in later:
        assert saga.evolve(small, e) is small
    assert saga.decide(small, saga.StartRun("c7", REQUEST, "t")) == []
    assert saga.decide(small, saga.CancelRun("c8", "r1", "late", "t")) == []
    assert saga.react(full, T0) is not None and saga.react(small, T0) is None  # published once
    assert saga.RunState.from_dict(small.to_dict()) == small


def test_state_round_trips_through_dict() -> None:
    s = fold(accepted(), started(), generation(0))
    assert s is not None
    assert saga.RunState.from_dict(s.to_dict()) == s


_LOG = [
    accepted(),
    started(),
    generation(0),
    generation(1),
    terminal(ev.RUN_SUCCEEDED),
    terminal(ev.RUN_FAILED),
    event(ev.CANCEL_RECORDED, reason="c"),
    terminal(ev.RUN_CANCELLED),
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(range(len(_LOG))), max_size=30))
def test_random_redeliveries_never_regress_or_double_terminate(picks: list[int]) -> None:
    state: saga.RunState | None = None
    terminal_changes = 0
    generation_seen = 0
    for i in picks:
        before = state
        state = saga.evolve(state, _LOG[i])
        if state is None:
            continue
        assert state.generation >= generation_seen
        generation_seen = state.generation
        if state is not before and state.terminal and (before is None or not before.terminal):
            terminal_changes += 1
    assert terminal_changes <= 1


def test_a_dead_letter_note_counts_in_the_version_and_changes_nothing_else() -> None:
    """Even after the end: a run's version is its log's length (the next sequence)."""
    note = saga.Event(
        "n-1",
        ev.EVENT_DEAD_LETTERED,
        "r1",
        "2026-01-01T00:00:00Z",
        event_data(
            ev.EVENT_DEAD_LETTERED,
            {"run_id": "r1", "stage": "validate", "error_class": "X", "error_message": "bad"},
        ),
        at=0.0,
    )
    done = RunResult.model_validate(result("cancelled"))
    ended = saga.RunState("r1", "cancelled", result=done, version=4)
    after = saga.evolve(ended, note)
    assert after is not None and after.version == 5 and "n-1" in after.seen_ids
    assert dataclasses.replace(after, version=4, seen_ids=()) == ended
    assert saga.evolve(after, note) is after  # the same note again: nothing
    assert saga.evolve(None, note) is None  # an unknown run has no log to note in


def continued(state: saga.RunState, more: int = 2, **budget: Any) -> list[saga.NewEvent]:
    command = saga.ContinueRun(f"k{next(_ids)}", "r1", more, budget or None, "t")
    return saga.decide(state, command)


def as_event(new: saga.NewEvent, at: float = T0 + 1000.0) -> saga.Event:
    return saga.Event(f"e{next(_ids)}", new.type, "r1", "t", new.data, new.causation_id, at=at)


def test_a_succeeded_run_continues_from_its_checkpoint_in_a_new_revision() -> None:
    ended = fold(accepted(), started(), generation(0), generation(1), terminal(ev.RUN_SUCCEEDED))
    assert ended is not None and ended.status == "succeeded"
    [new] = continued(ended, more=3, max_evaluations=40)
    assert new.type == ev.RUN_CONTINUED
    assert new.data.request["ga"]["generations"] == 5
    # The budget's fields given replace the run's own; the others stay.
    assert new.data.request["budget"] == {"timeout_s": 60.0, "max_evaluations": 40}
    state = saga.evolve(ended, as_event(new))
    assert state is not None and state.status == "running" and state.revision == 2
    assert (state.generation, state.evaluations, state.best) == (2, 8, {"fitness": 1.5})
    assert state.ga_state == {"generation": 2, "work": 15.0}
    assert state.history == ended.history and state.traceparent == ended.traceparent
    assert state.deadline == T0 + 1000.0 + 60.0  # the time budget counts from the continue
    assert state.version == ended.version + 1 and state.result is None
    assert saga.react(state, T0 + 1000.0) == saga.RunGeneration(2, ())
    # The same continue again (a redelivery), even once the run has settled: nothing.
    again = saga.ContinueRun(new.causation_id or "", "r1", 3, None, "t")
    assert saga.decide(state, again) == []
    ended_again = saga.evolve(state, terminal(ev.RUN_SUCCEEDED, revision=2))
    assert ended_again is not None
    assert saga.decide(saga.settled(ended_again), again) == []
    # A second run.continued for the same revision changes nothing.
    assert saga.evolve(state, as_event(new)) is state


def test_a_continue_on_a_run_that_did_not_succeed_is_refused_with_why() -> None:
    running = fold(accepted(), started(), generation(0))
    failed = fold(accepted(), started(), terminal(ev.RUN_FAILED))
    for state, status in ((running, "running"), (failed, "failed")):
        assert state is not None
        [refused] = continued(state)
        assert refused.type == ev.CONTINUE_REJECTED
        assert refused.data.reasons == [f"run r1 is {status}: {saga.CONTINUABLE}"]
        after = saga.evolve(state, as_event(refused))
        # Recorded in the log, and nothing else changes.
        assert after is not None and after.version == state.version + 1
        assert dataclasses.replace(after, version=state.version, seen_ids=state.seen_ids) == state
    assert continued_on_nothing() == []


def continued_on_nothing() -> list[saga.NewEvent]:
    return saga.decide(None, saga.ContinueRun("k", "r1", 1, None, "t"))


def test_a_continued_run_reopens_the_log_for_the_invariants() -> None:
    from thunderhelm.streams.domain.invariants import violations

    ended = fold(accepted(), started(), generation(0), generation(1), terminal(ev.RUN_SUCCEEDED))
    assert ended is not None
    [new] = continued(ended, more=1)
    log = [accepted(), started(), generation(0), generation(1), terminal(ev.RUN_SUCCEEDED)]
    reopened = [*log, as_event(new), generation(2), terminal(ev.RUN_SUCCEEDED)]
    assert violations(reopened) == []
    assert violations([*log, generation(2)]) != []  # without the continue: after the end
    assert violations([*reopened[:-1]]) == ["no terminal event"]


def test_a_continued_run_takes_nothing_from_its_log_before_the_continue_read_again() -> None:
    # A worker that takes a continued run over reads run-events again from its
    # last committed offset, which may lie before the continue; the run
    # continued from its settled state, which forgot those events' ids.
    log = [accepted(), started(), generation(0), generation(1), terminal(ev.RUN_SUCCEEDED)]
    ended = fold(*log)
    assert ended is not None
    [new] = continued(ended, more=2)
    reopened = as_event(new)
    state = saga.evolve(saga.evolve(saga.settled(ended), reopened), generation(2))
    assert state is not None and (state.status, state.generation) == ("running", 3)
    for old in [*log, reopened]:
        assert saga.evolve(state, old) is state, old.type
    end = saga.evolve(state, terminal(ev.RUN_SUCCEEDED, revision=2))
    assert end is not None and end.status == "succeeded"
