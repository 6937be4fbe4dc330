"""The update journal: where an update stands, persisted before every step so a restart resumes or rolls back.

Lessons taken from Mender and Greengrass: write the state *before* doing the step
(``advance`` returns only once the new state is on disk), bound the number of transitions in one
update (Mender caps at 28; a reboot loop must end), count attempts per version, never retry a
version that failed on its own merits, and treat a corrupt journal as "start fresh and keep the
evidence" (``journal.json.corrupt-<unix>``) instead of crashing at boot (Mender PR #1516,
Greengrass PR #1497: corrupt state there bricked devices).

The transition rules are pure functions (``allowed``, ``start``, ``transition``) over an immutable
``JournalState``, in :mod:`agent.ota.journal_rules`; ``Journal`` here is the thin shell that reads
and atomically writes ``journal.json``.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from agent.ota.errors import PolicyError, StoreError
from agent.ota.fsutil import atomic_write_json, disk_free, fsync_dir
from agent.ota.journal_rules import (
    ACTIVE_STEPS,
    MAX_ATTEMPTS,
    MAX_TRANSITIONS,
    REST_STEPS,
    RETRYABLE_REASONS,
    TRANSITIONS,
    HistoryEntry,
    IllegalTransition,
    JournalState,
    Step,
    UpdateAbandoned,
    allowed,
    start,
    transition,
    update_key,
)
from agent.ota.versions import compare_versions

log = logging.getLogger(__name__)

def _unwritable(path: Path, exc: OSError) -> StoreError:
    where = path.parent
    if exc.errno in (errno.EACCES, errno.EPERM):
        hint = f"make {where} writable by the user the agent runs as (systemd: StateDirectory=), or set another state_dir"
    elif exc.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = f"{disk_free(where)} bytes free"
        except OSError:
            free = "free space unknown"
        hint = f"the filesystem holding {where} is full ({free}); free some space, updates are paused until then"
    elif exc.errno == errno.EROFS:
        hint = (
            f"the filesystem holding {where} is read-only (an SD card remounted read-only after I/O errors, or a "
            "systemd ProtectSystem= rule without ReadWritePaths=); make it writable or set another state_dir"
        )
    else:
        hint = "check the filesystem (dmesg) and the directory's permissions"
    return StoreError(f"cannot write the update journal {path}: {exc.strerror or exc}; {hint}", reason="journal_unwritable")


class Journal:
    """``journal.json``: every method that changes the state writes it durably before returning."""

    def __init__(
        self,
        path: Path,
        state: JournalState,
        clock: Callable[[], float] = time.time,
        *,
        max_attempts: int = MAX_ATTEMPTS,
        max_transitions: int = MAX_TRANSITIONS,
    ) -> None:
        self.path = Path(path)
        self._state = state
        self._clock = clock
        self._lock = threading.Lock()
        self.max_attempts = max_attempts
        self.max_transitions = max_transitions
        self.recovered_from: Path | None = None  # the quarantined copy, when the journal was corrupt
        self.recovery_detail = ""  # what was wrong with it

    @classmethod
    def open(
        cls,
        path: Path | str,
        clock: Callable[[], float] = time.time,
        *,
        max_attempts: int = MAX_ATTEMPTS,
        max_transitions: int = MAX_TRANSITIONS,
    ) -> Journal:
        """Read ``path``; missing -> a fresh idle journal; corrupt -> quarantined and fresh (never raises for that)."""
        path = Path(path)
        fresh = JournalState(updated_at=clock())
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return cls(path, fresh, clock, max_attempts=max_attempts, max_transitions=max_transitions)
        except PermissionError as exc:  # not corruption: renaming it would lose a good journal
            raise StoreError(
                f"cannot read the update journal {path}: permission denied; make it readable by the agent's user",
                reason="journal_unreadable",
            ) from exc
        except OSError as exc:
            problem = f"unreadable ({exc.strerror or exc})"
        else:
            try:
                state = JournalState.model_validate_json(raw)
            except ValidationError as exc:
                first = exc.errors()[0]
                problem = f"invalid ({'.'.join(str(p) for p in first['loc']) or 'document'}: {first['msg']})"
            else:
                return cls(path, state, clock, max_attempts=max_attempts, max_transitions=max_transitions)
        journal = cls(path, fresh, clock, max_attempts=max_attempts, max_transitions=max_transitions)
        journal.recovered_from = _quarantine(path, int(clock()))
        journal.recovery_detail = problem
        log.error(
            "update journal %s is %s; kept it as %s and started a fresh journal (update history and the "
            "anti-downgrade floor are re-learned from the installed model)",
            path,
            problem,
            journal.recovered_from,
        )
        return journal

    @property
    def state(self) -> JournalState:
        return self._state

    def interrupted(self) -> JournalState | None:
        """The update a restarted agent must resume or roll back; None when the journal is at rest."""
        state = self._state
        return None if state.step in REST_STEPS else state

    def begin(self, model: str, version: str, from_version: str | None) -> JournalState:
        """Start (or resume, if it was interrupted before its swap) an update: counts an attempt, step downloading."""
        return self._apply(
            lambda s, now: start(
                s, model, version, from_version, now=now, max_attempts=self.max_attempts, max_transitions=self.max_transitions
            )
        )

    def advance(self, step: Step | str, *, reason: str = "", detail: str = "") -> JournalState:
        """Move to ``step`` (checked against the transition table) and persist it before returning."""
        return self._apply(
            lambda s, now: transition(s, step, now=now, reason=reason, detail=detail, max_transitions=self.max_transitions)
        )

    def finish_committed(self, detail: str = "", *, rollback_serial: int | None = None) -> JournalState:
        """trial -> committed: raises the anti-downgrade floor and forgets this version's attempts.

        ``rollback_serial``: the signed rollback instruction this commit carried out (recorded as applied).
        """

        def change(s: JournalState, now: float) -> JournalState:
            new = transition(s, Step.committed, now=now, detail=detail, max_transitions=self.max_transitions)
            if rollback_serial is not None and s.model:
                serials = {**new.rollback_serial, s.model: max(rollback_serial, new.rollback_serial.get(s.model, 0))}
                new = new.model_copy(update={"rollback_serial": serials})
            return new

        return self._apply(change)

    def abandon(self, reason: str, detail: str = "") -> JournalState:
        """Give up an update that never served (a restart found it half-way) so that a later check may start it again.

        checking -> idle; downloading/verified/staged -> failed with ``reason``, retryable (its attempt
        counts, its staging part stays for a resume). At rest: nothing to do. Swapping/trial: refused,
        the candidate may have served; roll back with finish_rolled_back.
        """

        def change(s: JournalState, now: float) -> JournalState:
            if s.step in REST_STEPS:
                return s
            if s.step in ACTIVE_STEPS:
                raise IllegalTransition(
                    f"update journal: {s.model} {s.version} is in step {s.step.value} (it may have served); "
                    "roll back and call finish_rolled_back instead of abandon"
                )
            to = Step.idle if s.step is Step.checking else Step.failed
            return transition(s, to, now=now, reason=reason, detail=detail, retry=True, max_transitions=self.max_transitions)

        return self._apply(change)

    def finish_failed(self, reason: str, detail: str = "", *, retry: bool | None = None) -> JournalState:
        """-> failed (the old model kept serving). The version is not retried unless ``retry`` / a retryable reason."""
        return self._apply(
            lambda s, now: transition(
                s, Step.failed, now=now, reason=reason, detail=detail, retry=retry, max_transitions=self.max_transitions
            )
        )

    def finish_rolled_back(self, reason: str, detail: str = "", *, retry: bool | None = None) -> JournalState:
        """swapping/trial -> rolled_back (the previous model serves again). Same retry rule as finish_failed."""
        return self._apply(
            lambda s, now: transition(
                s, Step.rolled_back, now=now, reason=reason, detail=detail, retry=retry, max_transitions=self.max_transitions
            )
        )

    def failure_of(self, model: str, version: str) -> str | None:
        """Why ``model`` ``version`` is not retried automatically, or None."""
        return self._state.failed.get(update_key(model, version))

    def clear_failed(self, model: str, version: str) -> JournalState:
        """An operator's "try it again": forget the version's failure and its attempts."""
        key = update_key(model, version)
        return self._apply(
            lambda s, now: s.model_copy(
                update={
                    "failed": {k: v for k, v in s.failed.items() if k != key},
                    "attempts": {k: v for k, v in s.attempts.items() if k != key},
                    "updated_at": now,
                }
            )
        )

    def note_committed(self, model: str, version: str) -> JournalState:
        """Raise the anti-downgrade floor to ``version`` (e.g. from the installed model after a fresh journal)."""

        def change(s: JournalState, now: float) -> JournalState:
            old = s.highest_committed.get(model)
            if old is not None and compare_versions(version, old) <= 0:
                return s
            return s.model_copy(update={"highest_committed": {**s.highest_committed, model: version}, "updated_at": now})

        return self._apply(change)

    def note_rollback_serial(self, model: str, serial: int) -> JournalState:
        """Record a signed rollback instruction as applied; refuses a serial not above the last one (a replay)."""

        def change(s: JournalState, now: float) -> JournalState:
            last = s.rollback_serial.get(model, 0)
            if serial <= last:
                raise PolicyError(
                    f"rollback instruction for {model} has serial {serial}, but serial {last} was already applied; "
                    "the registry must issue a new instruction with a higher serial",
                    reason="rollback_replayed",
                )
            return s.model_copy(update={"rollback_serial": {**s.rollback_serial, model: serial}, "updated_at": now})

        return self._apply(change)

    def _apply(self, change: Callable[[JournalState, float], JournalState]) -> JournalState:
        with self._lock:
            try:
                new = change(self._state, self._clock())
            except UpdateAbandoned as exc:
                if exc.state is not None:
                    self._save(exc.state)
                    self._state = exc.state
                raise
            if new is not self._state:
                self._save(new)  # on disk first: if this raises, memory keeps the old state too
                self._state = new
            return new

    def _save(self, state: JournalState) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.path, state.model_dump(mode="json"))
        except OSError as exc:
            raise _unwritable(self.path, exc) from exc


def _quarantine(path: Path, now: int) -> Path | None:
    """Rename a corrupt journal aside (``journal.json.corrupt-<unix>``); None if even that fails."""
    target = path.with_name(f"{path.name}.corrupt-{now}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{now}-{n}")
        n += 1
    try:
        os.rename(path, target)
        fsync_dir(path.parent)
    except OSError as exc:
        log.error("cannot move the corrupt update journal %s aside (%s); it will be overwritten", path, exc)
        return None
    return target


__all__ = [
    "ACTIVE_STEPS",
    "MAX_ATTEMPTS",
    "MAX_TRANSITIONS",
    "REST_STEPS",
    "RETRYABLE_REASONS",
    "TRANSITIONS",
    "HistoryEntry",
    "IllegalTransition",
    "Journal",
    "JournalState",
    "Step",
    "UpdateAbandoned",
    "allowed",
    "start",
    "transition",
    "update_key",
]
