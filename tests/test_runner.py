"""The resumable runner behind every cached generation / rating / judging loop (handbook.core.runner)."""

import json

import pytest

from handbook.core.runner import ResumableCalls, RunPolicy

META = {"model": "m", "seed": 0}
KEYS = ("item", "phase")


class Backend:
    """Records the batches it is called with; optionally fails on its ``fail_on``-th call."""

    def __init__(self, fail_on: int | None = None):
        self.batches, self.fail_on = [], fail_on

    def __call__(self, payloads):
        if self.fail_on is not None and len(self.batches) == self.fail_on:
            raise RuntimeError("killed")  # a kill mid-run: this batch never returns
        self.batches.append(list(payloads))
        return [{"out": f"<{p}>"} for p in payloads]


def _items(n, phase=0):
    return [((f"i{k}", phase), f"p{k}.{phase}") for k in range(n)]


def _run(path, backend, n=10, batch_size=3, meta=META, phases=1, progress=False, policy=RunPolicy()):
    with ResumableCalls(path, meta, KEYS, total=n * phases, desc="test", progress=progress, policy=policy) as calls:
        for phase in range(phases):
            calls.run(_items(n, phase), backend, batch_size)
    return calls


def _lines(path):
    return path.read_text().splitlines()


def _records(path):
    return [json.loads(x) for x in _lines(path)[1:]]


def test_batches_have_the_asked_size_and_records_carry_the_key_fields(tmp_path):
    backend = Backend()
    calls = _run(tmp_path / "c.jsonl", backend, n=10, batch_size=3)
    assert [len(b) for b in backend.batches] == [3, 3, 3, 1]
    assert [p for b in backend.batches for p in b] == [f"p{k}.0" for k in range(10)]  # in item order
    assert calls.results[("i4", 0)] == {"item": "i4", "phase": 0, "out": "<p4.0>"}
    assert list(calls.results[("i4", 0)]) == ["item", "phase", "out"]  # key fields first
    assert json.loads(_lines(tmp_path / "c.jsonl")[0]) == {"meta": META}
    assert _records(tmp_path / "c.jsonl") == [calls.results[(f"i{k}", 0)] for k in range(10)]


def test_run_returns_the_records_of_its_items_done_or_not(tmp_path):
    backend = Backend()
    with ResumableCalls(None, META, KEYS, total=4, progress=False) as calls:
        calls.run(_items(2), backend, 5)
        out = calls.run(_items(4) + _items(1), backend, 5)  # two done, a repeated key
    assert [r["item"] for r in out] == ["i0", "i1", "i2", "i3", "i0"]
    assert backend.batches == [["p0.0", "p1.0"], ["p2.0", "p3.0"]]


def test_batch_size_none_is_one_batch_and_nothing_left_calls_nothing():
    backend = Backend()
    with ResumableCalls(None, META, KEYS, total=7, progress=False) as calls:
        calls.run(_items(7), backend, None)
        calls.run(_items(7), backend, None)
        calls.run([], backend, 2)
    assert [len(b) for b in backend.batches] == [7]


def test_a_returned_key_field_keeps_its_place_and_must_match_the_key():
    with ResumableCalls(None, META, KEYS, total=1, progress=False) as calls:
        out = calls.run([(("a", 1), "x")], lambda ps: [{"out": 1, "phase": 1, "extra": 2}])
        assert list(out[0]) == ["item", "out", "phase", "extra"]
        with pytest.raises(ValueError, match="phase=2"):
            calls.run([(("b", 1), "x")], lambda ps: [{"phase": 2}])
        with pytest.raises(ValueError, match="does not match the key fields"):
            calls.run([(("e",), "x")], lambda ps: [{}])
        with pytest.raises(ValueError, match="1 results for a batch of 2"):
            calls.run([(("c", 1), "x"), (("d", 1), "y")], lambda ps: [{}])


def test_a_second_run_with_the_same_meta_calls_nothing(tmp_path):
    path = tmp_path / "c.jsonl"
    first = _run(path, Backend(), phases=2)
    text = path.read_text()
    backend = Backend()
    second = _run(path, backend, phases=2)
    assert backend.batches == []
    assert second.results == first.results
    assert path.read_text() == text  # nothing appended


def test_other_meta_is_refused_with_a_message_naming_the_file(tmp_path):
    path = tmp_path / "c.jsonl"
    _run(path, Backend())
    text = path.read_text()
    backend = Backend()
    with pytest.raises(ValueError) as err:
        _run(path, backend, meta={**META, "seed": 1})
    assert str(path) in str(err.value) and "different arguments" in str(err.value)
    assert "seed: 0 in the cache, 1 now" in str(err.value)  # what changed, field by field
    assert "delete" in str(err.value) and "--allow_cache_reuse" in str(err.value)  # how to go on
    assert backend.batches == [] and path.read_text() == text


def test_a_torn_last_line_is_dropped_and_that_call_redone(tmp_path):
    path = tmp_path / "c.jsonl"
    reference = _run(path, Backend(), n=5, batch_size=2).results
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # killed mid-write
    backend = Backend()
    resumed = _run(path, backend, n=5, batch_size=2)
    assert backend.batches == [["p4.0"]]  # only the torn record's call
    assert resumed.results == reference
    assert path.read_text() == "".join(lines)  # truncated, then the record written again


def test_a_corrupt_line_before_the_last_is_an_error_naming_it(tmp_path):
    path = tmp_path / "c.jsonl"
    _run(path, Backend(), n=5)
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = '{"item": "i1", "pha\n'
    path.write_text("".join(lines))
    backend = Backend()
    with pytest.raises(ValueError, match=r"c\.jsonl, line 3: corrupt cache record"):
        _run(path, backend, n=5)
    lines[2] = '{"other": 1}\n'  # valid JSON, but no key fields
    path.write_text("".join(lines))
    with pytest.raises(ValueError, match="line 3"):
        _run(path, backend, n=5)
    assert backend.batches == []


def test_records_are_on_disk_as_batches_finish_and_a_rerun_does_only_the_rest(tmp_path):
    path = tmp_path / "c.jsonl"
    reference = _run(tmp_path / "ref.jsonl", Backend(), n=10, batch_size=3, phases=2).results

    with pytest.raises(RuntimeError, match="killed"):
        _run(path, Backend(fail_on=5), n=10, batch_size=3, phases=2)  # dies in phase 1's second batch
    on_disk = _records(path)
    assert [(r["item"], r["phase"]) for r in on_disk] == [(f"i{k}", 0) for k in range(10)] + [
        (f"i{k}", 1) for k in range(3)]

    backend = Backend()
    resumed = _run(path, backend, n=10, batch_size=3, phases=2)
    assert backend.batches == [[f"p{k}.1" for k in range(3, 6)], [f"p{k}.1" for k in range(6, 9)], ["p9.1"]]
    assert resumed.results == reference
    assert _records(path) == _records(tmp_path / "ref.jsonl")  # the same file as an uninterrupted run


def test_the_progress_bar_starts_at_what_is_done_and_advances_per_batch(tmp_path):
    path = tmp_path / "c.jsonl"
    with pytest.raises(RuntimeError, match="killed"):
        _run(path, Backend(fail_on=2), n=10, batch_size=3)
    seen = []

    def call(payloads):
        seen.append(calls.bar.n)  # the bar before this batch is recorded
        return [{} for _ in payloads]

    with ResumableCalls(path, META, KEYS, total=10, desc="resumed", progress=True) as calls:
        assert (calls.bar.total, calls.bar.n, calls.bar.desc) == (10, 6, "resumed")
        calls.run(_items(10), call, 3)
    assert seen == [6, 9]
    assert calls.bar.n == 10


def test_in_memory_mode_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    backend = Backend()
    memory = _run(None, backend, n=5, batch_size=2, phases=2)
    assert [len(b) for b in backend.batches] == [2, 2, 1, 2, 2, 1]
    assert memory.cache is None and list(tmp_path.iterdir()) == []
    assert memory.results == _run(tmp_path / "c.jsonl", Backend(), n=5, batch_size=2, phases=2).results


def test_only_the_main_process_writes(tmp_path, monkeypatch):
    path = tmp_path / "c.jsonl"
    _run(path, Backend(), n=2)
    text = path.read_text()
    monkeypatch.setenv("RANK", "1")
    with ResumableCalls(path, META, KEYS, total=4, progress=False) as calls:
        calls.run(_items(4), Backend(), 2)
    assert len(calls.results) == 4 and path.read_text() == text


# --- failures: never recorded, counted, made again by a rerun (issue #15) ------------------------------------------
class Flaky(Backend):
    """Fails (a TransportError in place) the payloads in ``down``; ``whole`` raises for every batch."""

    def __init__(self, down=(), whole=False):
        super().__init__()
        self.down, self.whole = set(down), whole

    def __call__(self, payloads):
        from handbook.core.backends import TransportError

        self.batches.append(list(payloads))
        if self.whole:
            raise TransportError("cannot reach http://127.0.0.1:9/v1")
        return [TransportError(f"HTTP 503 for {p}") if p in self.down else {"out": f"<{p}>"} for p in payloads]


def test_failed_calls_are_not_recorded_and_a_rerun_makes_exactly_them(tmp_path):
    from handbook.core.runner import CallsFailed

    path = tmp_path / "c.jsonl"
    with pytest.raises(CallsFailed) as err:
        _run(path, Flaky(down={"p1.0", "p7.0"}), n=10, batch_size=3)
    assert err.value.failed == 2 and err.value.not_attempted == 0
    assert "test: 2 of 10 call(s) failed and were not recorded" in str(err.value)
    assert "First error (item='i1', phase=0): HTTP 503 for p1.0" in str(err.value)
    assert sorted(r["item"] for r in _records(path)) == sorted(f"i{k}" for k in range(10) if k not in (1, 7))
    backend = Backend()
    resumed = _run(path, backend, n=10, batch_size=3)
    assert backend.batches == [["p1.0", "p7.0"]]  # exactly the failed calls, none of the recorded ones
    assert resumed.results == _run(tmp_path / "ref.jsonl", Backend(), n=10, batch_size=3).results


def test_a_batch_that_fails_whole_stops_the_run_and_later_phases_never_start(tmp_path):
    from handbook.core.runner import CallsFailed

    path = tmp_path / "c.jsonl"
    backend = Flaky(whole=True)
    with pytest.raises(CallsFailed, match=r"3 of 10 call\(s\) failed .*every call of a batch of 3 failed\), 7 call"):
        _run(path, backend, n=10, batch_size=3, phases=2)
    assert len(backend.batches) == 1 and _records(path) == []  # no outage written as a result


def test_no_batch_starts_past_the_time_bound(tmp_path):
    from handbook.core.deadline import Deadline
    from handbook.core.runner import CallsFailed

    path = tmp_path / "c.jsonl"

    def slow(payloads):
        import time

        time.sleep(0.3)
        return [{"out": p} for p in payloads]

    with pytest.raises(CallsFailed, match=r"0 of 10 call\(s\) failed .*time bound of 0.5 s"):
        _run(path, slow, n=10, batch_size=2, policy=RunPolicy(Deadline(0.5)))
    assert len(_records(path)) == 4  # two batches finished in the bound, and are kept


def test_a_time_bound_is_passed_never_inherited(tmp_path):
    """The bound is a value given to what it bounds (issue 23.5): a loop made while another run's guard is open,
    without that run's policy, is not bounded by it; the guard's deadline starts when the guard opens."""
    import time

    from handbook.core.deadline import Deadline
    from handbook.core.runner import guarded_run

    def slow(payloads):
        time.sleep(0.2)
        return [{"out": p} for p in payloads]

    with guarded_run(tmp_path / "out.lock", "out", max_total_seconds=0.3) as policy:
        assert policy.deadline.seconds == 0.3 and 0.2 < policy.deadline.left() <= 0.3 and not policy.allow_reuse
        time.sleep(0.35)
        assert policy.deadline.passed() and policy.deadline.message() == \
            "the time bound of 0.3 s (`max_total_seconds`) ran out"
        assert len(_run(tmp_path / "free.jsonl", slow, n=6, batch_size=2).results) == 6  # not given: not bounded
        with pytest.raises(Exception, match="time bound of 0.3 s"):
            _run(tmp_path / "bounded.jsonl", slow, n=6, batch_size=2, policy=policy)
    with guarded_run(tmp_path / "out.lock", "out", allow_reuse=True) as policy:
        assert policy.deadline is None and policy.allow_reuse
    assert Deadline.after(None) is None
    for bad in (0, -1, True, "10"):
        with pytest.raises(ValueError, match="`max_total_seconds`: invalid value"):
            Deadline(bad)
