"""Start-up: which model file the agent loads, and settling an update the last run left half-way.

The committed version (``current``), hashed again, else the one before it, else the factory
model. An update interrupted during its swap or trial ends as an implicit rollback (the
``current`` pointer never moved), unless the commit itself had completed; one interrupted
earlier is abandoned and resumed by the next check. Each finding is queued as an ``update``
event for when the sinks run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import ModelFileError

if TYPE_CHECKING:
    from agent.ota.journal import Journal
    from agent.ota.reporting import UpdateReporter
    from agent.ota.store import ModelStore

log = logging.getLogger("agent.ota")


def startup_model(store: ModelStore, journal: Journal, reporter: UpdateReporter, factory: Path) -> Path:
    """The model file to start with: the committed one (re-hashed), else ``factory``.

    Also settles an update the previous run left half-way (an implicit rollback if it was on trial).
    """
    current = store.current()
    if journal.recovered_from is not None and current is not None:
        journal.note_committed(current.name, current.version)  # a fresh journal: re-seed the downgrade floor
    interrupted = journal.interrupted()
    if interrupted is not None:
        step, name, version = interrupted.step, interrupted.model, interrupted.version
        if step in ("swapping", "trial"):
            if step == "trial" and current is not None and current.name == name and current.version == version:
                journal.finish_committed()
                reporter.queue("committed", model=name, version=version, detail="commit completed before the restart")
            else:
                journal.finish_rolled_back("restarted_during_trial")
                reporter.queue(
                    "rolled_back",
                    model=name,
                    version=version,
                    reason="restarted_during_trial",
                    detail=f"the agent restarted while {name} {version} was on trial: running the previous model",
                )
        else:
            journal.abandon(f"interrupted_at_{step}")
            reporter.queue(
                "idle",
                model=name,
                version=version,
                reason=f"interrupted_at_{step}",
                detail=f"the agent restarted during {step} of {name} {version}; the next check resumes it",
            )
    for candidate in (current, store.previous()):
        if candidate is None:
            continue
        try:
            path = store.verify(candidate)
        except ModelFileError as exc:
            log.error("%s", exc)
            reporter.queue(
                "failed", model=candidate.name, version=candidate.version, reason="installed_model_corrupt", detail=str(exc)
            )
            continue
        if candidate is not current:
            store.set_current(candidate)
        return path
    return factory
