"""agent/ota/journal.py: the update state machine (every pair of steps) and its crash-safe journal file."""

from __future__ import annotations

import itertools
import json
from collections import deque
from pathlib import Path

import pytest

from agent.ota.errors import PolicyError, StoreError
from agent.ota.journal import (
    ACTIVE_STEPS,
    REST_STEPS,
    IllegalTransition,
    Journal,
    JournalState,
    Step,
    UpdateAbandoned,
    allowed,
    start,
    transition,
)

# The intended state machine, written out by hand: a change to journal.TRANSITIONS must change this too.
EXPECTED = {
    ("idle", "checking"), ("idle", "downloading"),
    ("checking", "idle"), ("checking", "downloading"), ("checking", "failed"),
    ("downloading", "downloading"), ("downloading", "verified"), ("downloading", "failed"),
    ("verified", "staged"), ("verified", "failed"),
    ("staged", "swapping"), ("staged", "failed"),
    ("swapping", "trial"), ("swapping", "rolled_back"), ("swapping", "failed"),
    ("trial", "committed"), ("trial", "rolled_back"),
    ("committed", "idle"), ("committed", "checking"), ("committed", "downloading"),
    ("rolled_back", "idle"), ("rolled_back", "checking"), ("rolled_back", "downloading"),
    ("failed", "idle"), ("failed", "checking"), ("failed", "downloading"),
}  # fmt: skip
ALL_PAIRS = list(itertools.product([s.value for s in Step], repeat=2))
MODEL, V = "shapes", "2.0"


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        self.t += 1
        return self.t


def _at(step: str, **extra: object) -> JournalState:
    target = {} if step in ("idle", "checking") else {"model": MODEL, "version": V, "from_version": "1.0"}
    return JournalState.model_validate({"step": step, **target, "transitions": 3, **extra})


def _journal_at(tmp_path: Path, step: str, **extra: object) -> Journal:
    path = tmp_path / "journal.json"
    path.write_text(_at(step, **extra).model_dump_json())
    return Journal.open(path, clock=Clock())


def _on_disk(journal: Journal) -> JournalState:
    return JournalState.model_validate_json(journal.path.read_bytes())


# ---- the table -----------------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b"), ALL_PAIRS)
def test_allowed_matches_the_intended_table(a: str, b: str) -> None:
    assert allowed(a, b) == ((a, b) in EXPECTED)


@pytest.mark.parametrize(("a", "b"), ALL_PAIRS)
def test_every_pair_through_a_real_journal(tmp_path: Path, a: str, b: str) -> None:
    """Each move either persists the new step before returning, or raises and leaves the file untouched."""
    journal = _journal_at(tmp_path, a)
    before = journal.path.read_bytes()
    if b == "downloading" and a != "downloading":  # an update starts with begin(), never with advance()
        with pytest.raises(IllegalTransition, match="begin" if (a, b) in EXPECTED else "not an allowed"):
            journal.advance(b)
        assert journal.path.read_bytes() == before
        if Step(a) in REST_STEPS or a == "checking":
            state = journal.begin(MODEL, "3.0", "1.0")
            assert state.step is Step.downloading and _on_disk(journal) == state
        return
    if (a, b) in EXPECTED:
        state = journal.advance(b)
        assert state.step.value == b
        assert _on_disk(journal) == state == journal.state
        assert state.history[-1].step.value == b
    else:
        with pytest.raises(IllegalTransition):
            journal.advance(b)
        assert journal.path.read_bytes() == before
        assert journal.state.step.value == a


def _reachable(start_step: Step) -> set[Step]:
    seen, todo = {start_step}, deque([start_step])
    while todo:
        for nxt in Step:
            if allowed(todo[0], nxt) and nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
        todo.popleft()
    return seen


def test_every_step_is_reachable_and_every_update_can_end() -> None:
    assert _reachable(Step.idle) == set(Step)
    for step in Step:
        assert _reachable(step) & REST_STEPS, f"{step} is a dead end"


def test_once_the_candidate_may_serve_only_commit_or_rollback_end_it() -> None:
    assert not allowed("trial", "failed")  # "failed" means the old model never stopped serving
    exits = {step: {s for s in Step if allowed(step, s) and s not in ACTIVE_STEPS} for step in ACTIVE_STEPS}
    assert exits == {Step.swapping: {Step.rolled_back, Step.failed}, Step.trial: {Step.committed, Step.rolled_back}}
    assert [s for s in Step if allowed(s, "committed")] == [Step.trial]


# ---- the pure core -------------------------------------------------------------------------


def test_a_new_cycle_forgets_the_last_target_and_counts_from_one() -> None:
    done = _at("committed", transitions=7)
    checking = transition(done, "checking", now=5.0)
    assert (checking.model, checking.version, checking.transitions) == (None, None, 1)
    begun = start(checking, MODEL, V, "1.0", now=6.0)
    assert (begun.step, begun.model, begun.version, begun.from_version) == (Step.downloading, MODEL, V, "1.0")
    assert begun.transitions == 2 and begun.started_at == 6.0 and begun.attempts == {f"{MODEL}@{V}": 1}


def test_commit_raises_the_floor_but_never_lowers_it() -> None:
    trial = _at("trial", highest_committed={MODEL: "1.0"}, attempts={f"{MODEL}@{V}": 2, "other@1": 1})
    done = transition(trial, "committed", now=1.0)
    assert done.highest_committed == {MODEL: V}
    assert done.attempts == {"other@1": 1}
    lower = _at("trial", highest_committed={MODEL: "3.0"})
    assert transition(lower, "committed", now=1.0).highest_committed == {MODEL: "3.0"}


@pytest.mark.parametrize(
    ("reason", "retry", "recorded"),
    [("selftest_failed", None, True), ("hash_mismatch", None, True), ("connection", None, False),
     ("disk_full", None, False), ("connection", False, True), ("selftest_failed", True, False)],
)  # fmt: skip
def test_failures_mark_the_version_unless_retryable(reason: str, retry: bool | None, recorded: bool) -> None:
    failed = transition(_at("staged"), "failed", now=1.0, reason=reason, retry=retry)
    assert failed.reason == reason
    assert failed.failed == ({f"{MODEL}@{V}": reason} if recorded else {})
    rolled = transition(_at("trial"), "rolled_back", now=1.0, reason=reason, retry=retry)
    assert rolled.failed == ({f"{MODEL}@{V}": reason} if recorded else {})


def test_a_check_that_fails_marks_no_version() -> None:
    assert transition(_at("checking"), "failed", now=1.0, reason="metadata_rejected").failed == {}


def test_state_loop_before_the_swap_forces_failed() -> None:
    looping = _at("downloading", transitions=32)
    with pytest.raises(UpdateAbandoned) as info:
        transition(looping, "downloading", now=1.0)
    assert info.value.reason == "state_loop"
    forced = info.value.state
    assert forced is not None and forced.step is Step.failed and forced.reason == "state_loop"
    assert forced.failed == {f"{MODEL}@{V}": "state_loop"}
    assert transition(looping, "failed", now=1.0, reason="connection").step is Step.failed  # the exit stays open


def test_state_loop_after_the_swap_only_lets_the_rollback_through() -> None:
    looping = _at("trial", transitions=32)
    with pytest.raises(UpdateAbandoned) as info:
        transition(looping, "committed", now=1.0)
    assert info.value.state is None and "roll back" in str(info.value)
    assert transition(looping, "rolled_back", now=1.0, reason="state_loop").step is Step.rolled_back


def test_history_keeps_the_last_50() -> None:
    state = _at("idle")
    for i in range(40):
        state = transition(state, "checking", now=float(i))
        state = transition(state, "idle", now=float(i))
    assert len(state.history) == 50
    assert state.history[-1].time == 39.0 and state.history[-1].step is Step.idle


# ---- the journal file ----------------------------------------------------------------------


def test_missing_file_is_a_fresh_idle_journal(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "ota" / "journal.json")
    assert journal.state.step is Step.idle and journal.recovered_from is None and journal.interrupted() is None
    assert not journal.path.exists()  # nothing written until something changes
    journal.advance("checking")
    assert _on_disk(journal).step is Step.checking


def test_a_full_update_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "journal.json"
    clock = Clock()
    journal = Journal.open(path, clock=clock)
    journal.advance("checking")
    journal.begin(MODEL, V, "1.0")
    for step in ("downloading", "verified", "staged", "swapping", "trial"):
        journal.advance(step, detail=f"in {step}")
        again = Journal.open(path, clock=clock)
        assert again.state == journal.state
        interrupted = again.interrupted()
        assert interrupted is not None and interrupted.step.value == step and interrupted.detail == f"in {step}"
    journal.finish_committed(rollback_serial=4)
    reopened = Journal.open(path, clock=clock)
    assert reopened.interrupted() is None
    state = reopened.state
    assert state.step is Step.committed and state.highest_committed == {MODEL: V} and state.rollback_serial == {MODEL: 4}
    assert [h.step.value for h in state.history] == [
        "checking", "downloading", "downloading", "verified", "staged", "swapping", "trial", "committed"
    ]  # fmt: skip
    assert json.loads(path.read_text())["step"] == "committed"


def test_attempts_are_capped_per_version(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "journal.json", clock=Clock(), max_attempts=3)
    for n in (1, 2, 3):
        assert journal.begin(MODEL, V, "1.0").attempts[f"{MODEL}@{V}"] == n
        journal.finish_failed("connection")  # retryable: tried again
    with pytest.raises(UpdateAbandoned) as info:
        journal.begin(MODEL, V, "1.0")
    assert info.value.reason == "too_many_attempts" and "3 times" in str(info.value)
    assert _on_disk(journal).failed == {f"{MODEL}@{V}": "too_many_attempts"}
    with pytest.raises(UpdateAbandoned, match="already tried"):
        Journal.open(journal.path).begin(MODEL, V, "1.0")
    assert journal.begin(MODEL, "2.1", "1.0").step is Step.downloading  # another version is unaffected
    journal.finish_failed("superseded")
    journal.clear_failed(MODEL, V)
    assert journal.begin(MODEL, V, "1.0").attempts[f"{MODEL}@{V}"] == 1


def test_a_version_that_failed_is_not_retried(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "journal.json", clock=Clock())
    journal.begin(MODEL, V, "1.0")
    journal.advance("verified")
    journal.advance("staged")
    journal.finish_failed("selftest_failed", "recall 0.2 < 0.5")
    assert journal.failure_of(MODEL, V) == "selftest_failed"
    with pytest.raises(PolicyError) as info:
        journal.begin(MODEL, V, "1.0")
    assert info.value.reason == "previously_failed" and "selftest_failed" in str(info.value)


def test_resume_counts_an_attempt_and_keeps_the_step(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "journal.json", clock=Clock())
    journal.begin(MODEL, V, "1.0")
    journal.advance("verified")
    restarted = Journal.open(journal.path, clock=Clock())
    state = restarted.begin(MODEL, V, "1.0")
    assert state.step is Step.verified and state.attempts[f"{MODEL}@{V}"] == 2 and "resumed" in state.detail
    with pytest.raises(IllegalTransition, match="still in step verified"):
        restarted.begin(MODEL, "3.0", "1.0")


def test_an_update_interrupted_on_trial_cannot_be_resumed(tmp_path: Path) -> None:
    journal = _journal_at(tmp_path, "trial")
    with pytest.raises(IllegalTransition, match="roll back"):
        journal.begin(MODEL, V, "1.0")
    with pytest.raises(IllegalTransition, match="finish_rolled_back"):
        journal.abandon("interrupted")
    assert journal.finish_rolled_back("interrupted").step is Step.rolled_back
    assert journal.state.failed == {}  # a power cut is not the version's fault: it may be tried again


@pytest.mark.parametrize(("step", "ends_in"), [("checking", "idle"), ("downloading", "failed"), ("staged", "failed"),
                                               ("committed", "committed")])  # fmt: skip
def test_abandon_an_update_that_never_served(tmp_path: Path, step: str, ends_in: str) -> None:
    journal = _journal_at(tmp_path, step)
    state = journal.abandon(f"interrupted_at_{step}")
    assert state.step.value == ends_in and state.failed == {}
    if step == "downloading":
        assert journal.begin(MODEL, V, "1.0").step is Step.downloading  # the next check starts it again


def test_state_loop_is_persisted(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "journal.json", clock=Clock(), max_transitions=5)
    journal.begin(MODEL, V, "1.0")
    with pytest.raises(UpdateAbandoned) as info:
        for _ in range(10):
            journal.advance("downloading")  # a download resumed over and over (a restart loop)
    assert info.value.reason == "state_loop"
    on_disk = _on_disk(journal)
    assert on_disk.step is Step.failed and on_disk.reason == "state_loop" and on_disk.failed == {f"{MODEL}@{V}": "state_loop"}


def test_rollback_serials_only_go_up(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "journal.json", clock=Clock())
    journal.note_rollback_serial(MODEL, 2)
    with pytest.raises(PolicyError) as info:
        journal.note_rollback_serial(MODEL, 2)
    assert info.value.reason == "rollback_replayed"
    assert _on_disk(journal).rollback_serial == {MODEL: 2}
    journal.note_committed(MODEL, "1.5")
    journal.note_committed(MODEL, "1.2")
    assert _on_disk(journal).highest_committed == {MODEL: "1.5"}


CORRUPT = {
    "empty": b"",
    "truncated": b'{"step": "downloading", "model": "sha',
    "binary": b"\xff\xfe\x00\x13garbage",
    "not an object": b"[1, 2, 3]",
    "unknown step": b'{"step": "exploded"}',
    "update without target": b'{"step": "trial"}',
    "wrong type": b'{"step": "idle", "attempts": {"a@1": "many"}}',
}


@pytest.mark.parametrize("content", CORRUPT.values(), ids=CORRUPT.keys())
def test_corrupt_journal_is_quarantined_not_fatal(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "journal.json"
    path.write_bytes(content)
    journal = Journal.open(path, clock=lambda: 1_800_000_000.5)
    assert journal.state.step is Step.idle and journal.interrupted() is None
    assert journal.recovered_from == tmp_path / "journal.json.corrupt-1800000000"
    assert journal.recovered_from.read_bytes() == content  # the evidence is kept
    assert not path.exists() and journal.recovery_detail
    journal.advance("checking")
    assert _on_disk(journal).step is Step.checking


def test_quarantine_does_not_overwrite_earlier_evidence(tmp_path: Path) -> None:
    path = tmp_path / "journal.json"
    names = []
    for content in (b"one", b"two"):
        path.write_bytes(content)
        recovered = Journal.open(path, clock=lambda: 1_800_000_000.0).recovered_from
        assert recovered is not None
        names.append(recovered.name)
    assert names == ["journal.json.corrupt-1800000000", "journal.json.corrupt-1800000000-1"]
    assert (tmp_path / names[0]).read_bytes() == b"one"


def test_read_only_journal_raises_store_error_and_keeps_state(tmp_path: Path) -> None:
    from tests.ota._store_helpers import remount_readonly, small_tmpfs

    with small_tmpfs(tmp_path / "small", "1m") as small:
        journal = Journal.open(small / "journal.json", clock=Clock())
        journal.advance("checking")
        remount_readonly(small)
        with pytest.raises(StoreError) as info:
            journal.advance("idle")
        assert info.value.reason == "journal_unwritable"
        msg = str(info.value)
        assert str(journal.path) in msg and "read-only" in msg and "state_dir" in msg
        assert journal.state.step is Step.checking  # memory agrees with the disk


def test_full_disk_journal_raises_store_error(tmp_path: Path) -> None:
    from tests.ota._store_helpers import fill, small_tmpfs

    with small_tmpfs(tmp_path / "small", "1m") as small:
        journal = Journal.open(small / "journal.json", clock=Clock())
        journal.advance("checking")
        fill(small)
        with pytest.raises(StoreError) as info:
            for _ in range(200):  # the first writes may still fit in a partly used block
                journal.advance("idle")
                journal.advance("checking")
        assert "full" in str(info.value) and str(journal.path) in str(info.value)
        assert _on_disk(journal) == journal.state
