"""The in-order offset tracker the aiokafka readers share (streams/worker/kafka/offsets.py)."""

from thunderhelm.streams.worker.kafka.offsets import InFlightOffsets


def test_the_commit_point_passes_only_finished_records_and_none_is_taken_twice() -> None:
    offsets = InFlightOffsets()
    assert offsets.take(5) and offsets.take(6) and offsets.take(7)
    assert not offsets.take(6)  # read again after a rebalance while in hand
    assert offsets.finish(7) == 5  # 5 and 6 are still in hand
    assert not offsets.take(7)  # done, not yet committed past
    assert offsets.finish(5) == 6
    assert offsets.finish(6) == 8
    assert offsets.in_flight() == 0 and offsets.commit_point() == 8


def test_reading_from_the_committed_offset_starts_the_commit_point_there() -> None:
    offsets = InFlightOffsets(start=40)
    assert offsets.commit_point() == 40  # nothing read yet: nothing to pass
    assert offsets.take(40) and offsets.take(42)  # 41 was never there (a compacted gap)
    assert offsets.finish(42) == 40
    assert offsets.finish(40) == 43


def test_records_finish_in_any_order() -> None:
    offsets = InFlightOffsets()
    for offset in range(10):
        assert offsets.take(offset)
    points = [offsets.finish(offset) for offset in (3, 1, 0, 2, 9, 4, 8, 5, 6, 7)]
    assert points == [0, 0, 2, 4, 4, 5, 5, 6, 7, 10]
    assert points == sorted(points)  # the commit point never goes back
