"""The update journal's rules, as pure functions over an immutable :class:`JournalState`.

Which step may follow which (``allowed``), how an update starts (``start``: attempt caps, never
retrying a version that failed on its own merits) and how it moves (``transition``: the cap on
transitions per update, history, giving up). No file I/O here: :mod:`agent.ota.journal` persists
the state these functions return, before the step it describes is taken.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.ota.errors import OtaError, PolicyError
from agent.ota.versions import compare_versions

JOURNAL_SCHEMA = 1
MAX_ATTEMPTS = 3
MAX_TRANSITIONS = 32
HISTORY_LENGTH = 50


class Step(StrEnum):
    idle = "idle"
    checking = "checking"
    downloading = "downloading"
    verified = "verified"  # the artifact's length and sha256 match the signed metadata
    staged = "staged"  # installed under versions/, not serving
    swapping = "swapping"  # the candidate is being loaded / swapped in; it may be serving
    trial = "trial"  # the candidate serves; not committed: a restart must roll back
    committed = "committed"
    rolled_back = "rolled_back"
    failed = "failed"


S = Step
# Where a journal rests between updates; every other step is an update in progress.
REST_STEPS = frozenset({S.idle, S.committed, S.rolled_back, S.failed})
# The candidate may be serving: leaving these steps any way but committed means rolling back.
ACTIVE_STEPS = frozenset({S.swapping, S.trial})

# The whole state machine. Rest steps lead to a new cycle (checking) or straight to a download
# (``Journal.begin``); failures before the swap end in ``failed`` (the old model never stopped
# serving); once the candidate may serve, the only ways out are committed and rolled_back.
TRANSITIONS: dict[Step, frozenset[Step]] = {
    S.idle: frozenset({S.checking, S.downloading}),
    S.checking: frozenset({S.idle, S.downloading, S.failed}),
    S.downloading: frozenset({S.downloading, S.verified, S.failed}),  # downloading -> downloading: a resume
    S.verified: frozenset({S.staged, S.failed}),
    S.staged: frozenset({S.swapping, S.failed}),
    S.swapping: frozenset({S.trial, S.rolled_back, S.failed}),  # failed: the candidate never served
    S.trial: frozenset({S.committed, S.rolled_back}),
    S.committed: frozenset({S.idle, S.checking, S.downloading}),
    S.rolled_back: frozenset({S.idle, S.checking, S.downloading}),
    S.failed: frozenset({S.idle, S.checking, S.downloading}),
}

# Failures that say nothing about the version itself: it may be tried again (within MAX_ATTEMPTS).
RETRYABLE_REASONS = frozenset(
    {
        "connection",
        "download_failed",
        "cancelled",
        "disk_full",
        "low_memory",
        "insufficient_resources",
        "clock_implausible",
        "superseded",
        "interrupted",
        "journal_unwritable",
        "store_error",
        "too_slow",  # a CPU spike during the self-test or trial says little about the model; attempts stay capped
        "stopped_during_trial",  # systemctl stop/restart during the trial
        "registry_unreachable",
    }
)


class IllegalTransition(OtaError):
    """The updater asked for a step the state machine does not allow from where it stands (a bug)."""

    reason = "illegal_transition"


class UpdateAbandoned(OtaError):
    """The journal gave up on this update (``too_many_attempts`` or ``state_loop``); ``state`` is what was persisted."""

    def __init__(self, message: str, reason: str, state: JournalState | None) -> None:
        super().__init__(message, reason)
        self.state = state


class HistoryEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    step: Step
    model: str | None = None
    version: str | None = None
    time: float
    reason: str = ""


class JournalState(BaseModel):
    """Everything ``journal.json`` holds. Immutable: every change is a new state."""

    model_config = ConfigDict(frozen=True, extra="ignore")  # extra: a newer agent may have added fields

    schema_version: int = JOURNAL_SCHEMA
    step: Step = Step.idle
    model: str | None = None
    version: str | None = None
    from_version: str | None = None
    reason: str = ""
    detail: str = ""
    started_at: float | None = None
    updated_at: float = 0.0
    transitions: int = Field(0, ge=0, description="Transitions in the current update (reset when a new cycle starts).")
    attempts: dict[str, int] = Field(default_factory=dict, description='"name@version" -> updates begun.')
    failed: dict[str, str] = Field(default_factory=dict, description='"name@version" -> reason; never retried automatically.')
    highest_committed: dict[str, str] = Field(default_factory=dict, description="model -> version: the anti-downgrade floor.")
    rollback_serial: dict[str, int] = Field(default_factory=dict, description="model -> last applied rollback serial.")
    history: tuple[HistoryEntry, ...] = ()

    @model_validator(mode="after")
    def _update_has_a_target(self) -> JournalState:
        if self.step not in REST_STEPS and self.step is not Step.checking and not (self.model and self.version):
            raise ValueError(f"step {self.step.value!r} needs model and version")
        return self

    @property
    def key(self) -> str | None:
        """``"name@version"`` of the update in hand, or None."""
        return update_key(self.model, self.version) if self.model and self.version else None


def update_key(model: str, version: str) -> str:
    return f"{model}@{version}"


# ---- the pure core -----------------------------------------------------------------------


def allowed(from_step: Step | str, to_step: Step | str) -> bool:
    """Whether the state machine lets an update go from ``from_step`` to ``to_step``."""
    return Step(to_step) in TRANSITIONS[Step(from_step)]


def _with_history(state: JournalState, **changes: object) -> JournalState:
    new = state.model_copy(update=changes)
    entry = HistoryEntry(step=new.step, model=new.model, version=new.version, time=new.updated_at, reason=new.reason)
    return new.model_copy(update={"history": (*state.history, entry)[-HISTORY_LENGTH:]})


def _give_up(state: JournalState, reason: str, detail: str, now: float) -> JournalState:
    """``state`` moved to failed (only ever called before the candidate could serve) with ``reason`` recorded."""
    failed = dict(state.failed)
    if state.key:
        failed[state.key] = reason
    return _with_history(
        state, step=Step.failed, reason=reason, detail=detail, updated_at=now, transitions=state.transitions + 1, failed=failed
    )


def transition(
    state: JournalState,
    to: Step | str,
    *,
    now: float,
    reason: str = "",
    detail: str = "",
    retry: bool | None = None,
    max_transitions: int = MAX_TRANSITIONS,
) -> JournalState:
    """The state after moving to ``to``, with its bookkeeping (floor, attempts, failed versions).

    Raises IllegalTransition for a move the table forbids, and UpdateAbandoned(``state_loop``) when
    the update has made ``max_transitions`` moves: before the swap its ``state`` is the update forced
    to failed (persist it); once the candidate may serve, only rolled_back is still accepted.
    ``retry`` (failed / rolled_back): may this version be tried again? Default: ``reason`` in RETRYABLE_REASONS.
    """
    to = Step(to)
    if not allowed(state.step, to):
        raise IllegalTransition(
            f"update journal: {state.step.value} -> {to.value} is not an allowed transition "
            f"(from {state.step.value}: {', '.join(sorted(s.value for s in TRANSITIONS[state.step]))})"
        )
    if to is Step.downloading and state.step is not Step.downloading:
        raise IllegalTransition("update journal: an update starts with begin(model, version, from_version), not advance")
    if state.step in REST_STEPS:  # a new cycle: forget the last update's target
        return _with_history(
            state, step=to, model=None, version=None, from_version=None, started_at=None,
            reason=reason, detail=detail, updated_at=now, transitions=1,
        )  # fmt: skip
    count = state.transitions + 1
    if count > max_transitions and to not in (Step.failed, Step.rolled_back):
        what = f"{state.model} {state.version}" if state.key else "the update check"
        if state.step in ACTIVE_STEPS:
            raise UpdateAbandoned(
                f"update journal: {what} made {state.transitions} transitions without finishing (a restart loop?); "
                f"roll back to {state.from_version or 'the previous model'} and finish_rolled_back('state_loop')",
                "state_loop",
                None,
            )
        forced = _give_up(state, "state_loop", f"{state.transitions} transitions, last step {state.step.value}", now)
        raise UpdateAbandoned(
            f"update journal: {what} made {state.transitions} transitions without finishing (a restart loop?); "
            "it is marked failed and will not be retried automatically",
            "state_loop",
            forced,
        )
    changes: dict[str, object] = {"step": to, "reason": reason, "detail": detail, "updated_at": now, "transitions": count}
    key = state.key
    if to is Step.committed and key and state.model and state.version:
        floor = dict(state.highest_committed)
        old = floor.get(state.model)
        if old is None or compare_versions(state.version, old) > 0:
            floor[state.model] = state.version
        changes["highest_committed"] = floor
        changes["attempts"] = {k: v for k, v in state.attempts.items() if k != key}
        changes["failed"] = {k: v for k, v in state.failed.items() if k != key}
    elif to in (Step.failed, Step.rolled_back) and key:
        keep_trying = (reason in RETRYABLE_REASONS) if retry is None else retry
        if not keep_trying:
            changes["failed"] = {**state.failed, key: reason or to.value}
    return _with_history(state, **changes)


def start(
    state: JournalState,
    model: str,
    version: str,
    from_version: str | None,
    *,
    now: float,
    max_attempts: int = MAX_ATTEMPTS,
    max_transitions: int = MAX_TRANSITIONS,
) -> JournalState:
    """The state after beginning (or, for the update interrupted before its swap, resuming) ``model`` ``version``.

    Raises PolicyError(``previously_failed``) for a version that failed for good, IllegalTransition
    while another update (or this one past its swap) is in hand, and UpdateAbandoned(``too_many_attempts``)
    once ``max_attempts`` updates of this version were begun; its ``state`` records that (persist it).
    """
    key = update_key(model, version)
    resuming = state.step not in REST_STEPS and state.step is not Step.checking
    if resuming and state.key != key:
        raise IllegalTransition(
            f"update journal: {state.model} {state.version} is still in step {state.step.value}; "
            f"finish it (finish_failed('superseded') or a rollback) before starting {model} {version}"
        )
    if resuming and state.step in ACTIVE_STEPS:
        raise IllegalTransition(
            f"update journal: {model} {version} was interrupted in step {state.step.value} (it may have been serving); "
            "roll back and finish_rolled_back('interrupted') instead of resuming it"
        )
    done = state.attempts.get(key, 0)
    prior = state.failed.get(key)
    if prior == "too_many_attempts" or (prior is None and done >= max_attempts):
        forced: JournalState | None = None
        if prior is None:
            detail = f"{done} attempts (limit {max_attempts})"
            if resuming:
                forced = _give_up(state, "too_many_attempts", detail, now)
            else:
                forced = state.model_copy(update={"failed": {**state.failed, key: "too_many_attempts"}, "updated_at": now})
        raise UpdateAbandoned(
            f"update journal: {model} {version} was already tried {done} times (limit {max_attempts}); "
            "it will not be retried automatically (Journal.clear_failed allows it again)",
            "too_many_attempts",
            forced,
        )
    if prior is not None:
        raise PolicyError(
            f"{model} {version} failed before ({prior}) and is not retried automatically; "
            "publish a newer version, or clear it with Journal.clear_failed to retry",
            reason="previously_failed",
        )
    attempts = {**state.attempts, key: done + 1}
    if resuming:
        count = state.transitions + 1
        if count > max_transitions:
            looped = state.model_copy(update={"attempts": attempts})
            forced = _give_up(looped, "state_loop", f"{state.transitions} transitions", now)
            raise UpdateAbandoned(
                f"update journal: {model} {version} made {state.transitions} transitions without finishing; marked failed",
                "state_loop",
                forced,
            )
        return _with_history(
            state, attempts=attempts, transitions=count, updated_at=now, reason="", detail=f"resumed in {state.step.value}"
        )
    if not allowed(state.step, Step.downloading):
        raise IllegalTransition(f"update journal: cannot begin an update from step {state.step.value}")
    count = state.transitions + 1 if state.step is Step.checking else 1
    return _with_history(
        state, step=Step.downloading, model=model, version=version, from_version=from_version, reason="", detail="",
        started_at=now, updated_at=now, transitions=count, attempts=attempts,
    )  # fmt: skip


# ---- the I/O shell -----------------------------------------------------------------------
