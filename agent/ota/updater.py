"""The device's model updater: find a signed new version, fetch it, prove it, swap it in, commit or roll back.

One thread, one update at a time. Every step is written to the journal before it is taken, so
an agent killed at any point restarts into a known state:

    idle -> checking -> downloading -> verified -> staged -> swapping -> trial -> committed
                                 \\-> failed (old model never left)      \\-> rolled_back

- Trust: python-tuf's ngclient verifies the registry's metadata (signatures, thresholds,
  versions, expiry, snapshot consistency, length limits) from the root installed with the agent.
  The target list is read from the targets metadata ngclient just verified and persisted; the
  artifact's length and sha256 come from there and are checked after the download, and the
  installed file is hashed again before every load.
- Policy (ours, on top of TUF): versions only go up, unless a signed rollback instruction names
  a lower one; staged rollout by hash(device id, model) mod 100; channels; minimum agent version;
  a version that failed is not retried; attempts per version are capped.
- Swap: the candidate is loaded beside the serving model, validated and self-tested on bundled
  frames, its execution contexts created, then handed to the pipeline, which switches between two
  frames. During the trial the old model stays loaded and armed as the pipeline's fallback: a
  frame that fails on the new model switches back at once.
- Commit is the ``current`` pointer switch (store.py). A crash during the trial therefore restarts
  on the old model; the journal tells the restarted agent that this was an implicit rollback.

Around this module: startup.py (which model to load, settling an interrupted update), fetch.py
(URL, download, whole-file check), trial.py (the trial and the way back), reporting.py (state
and events).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.errors import AgentError, ModelError
from agent.ota.errors import OtaError, PolicyError, RegistryError, SelfTestError, TrialError
from agent.ota.policy import Offer, choose
from agent.ota.reporting import UpdateReporter
from agent.ota.trial import Stopped, revert, run_trial
from agent.ota.versions import compare_versions
from agent.ota.watch import ResultWatch, model_key
from agent.telemetry import UpdateState

if TYPE_CHECKING:
    from agent.config import UpdateConfig
    from agent.detector import Detector
    from agent.ota.journal import Journal
    from agent.ota.store import Installed
    from agent.pipeline import Pipeline

log = logging.getLogger("agent.ota")

FAULT_ENV = "EDGE_AGENT_OTA_FAULT"
"""Fault injection for crash-safety tests: ``kill@<step>`` makes the agent SIGKILL itself right after
the journal records <step> (downloading: after the first chunk is on disk). Never set in production."""

OpenModel = Callable[[Path], "Detector"]
CLOCK_RETRY_S = 60.0
SELFTEST_PACE_S = 0.02  # between self-test frames (see selftest.run_selftest)


def _fault(point: str) -> None:
    if os.environ.get(FAULT_ENV) == f"kill@{point}":
        log.warning("fault injection: SIGKILL at %s", point)
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)


# ---- the updater -----------------------------------------------------------------------------------
class ModelUpdater:
    """Owns the OTA state dir (state_dir/ota) and the update thread of one agent."""

    def __init__(
        self,
        cfg: UpdateConfig,
        *,
        state_dir: Path,
        device_id: str,
        open_model: OpenModel,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from agent.ota.journal import Journal
        from agent.ota.store import ModelStore

        self.cfg = cfg
        self.device_id = device_id
        self.open_model = open_model
        self.clock = clock
        self.root = Path(state_dir) / "ota"
        self.root.mkdir(parents=True, exist_ok=True)
        self.store = ModelStore(self.root)
        self.journal: Journal = Journal.open(self.root / "journal.json", max_attempts=cfg.max_attempts)
        self.watch = ResultWatch()
        self.pipeline: Pipeline | None = None
        self.model_name: str | None = cfg.model
        self.reporter = UpdateReporter(clock)
        self._trigger = threading.Event()
        self._stop = threading.Event()
        self._due: float | None = None
        self._thread: threading.Thread | None = None
        self._busy = threading.Lock()
        self._frames: list[Any] | None = None
        self._consistent = False  # the registry serves targets under consistent-snapshot names
        self.last_outcome: dict[str, Any] | None = None
        if self.journal.recovered_from is not None:
            self.reporter.queue("journal_recovered", moved_to=str(self.journal.recovered_from))

    @property
    def state(self) -> UpdateState:
        return self.reporter.state

    # ---- start-up: which model to load ---------------------------------------------------------------
    def startup_model(self, factory: Path) -> Path:
        """The model file to start with: the committed one (re-hashed), else ``factory``.

        Also settles an update the previous run left half-way (see :mod:`agent.ota.startup`).
        """
        from agent.ota.startup import startup_model

        return startup_model(self.store, self.journal, self.reporter, factory)

    # ---- wiring -------------------------------------------------------------------------------------
    def attach(self, pipeline: Pipeline) -> None:
        """Hook into a pipeline (before it runs): watch results, report through its sinks, listen for notifications."""
        self.pipeline = pipeline
        pipeline.frame_hooks.append(self.watch)
        if self.model_name is None:
            self.model_name = pipeline.detector.ref.name
        self.reporter.sinks = [s for s in pipeline.sinks if hasattr(s, "set_update_state")]
        self.reporter.emit_event = pipeline.emit_event
        for sink in self.reporter.sinks:
            sink.set_update_checker(self.request_check)
            if self.cfg.fleet_topic:
                sink.subscribe(self.cfg.fleet_topic, self.on_fleet_message)
        self.reporter.publish()

    def start(self) -> None:
        self.reporter.flush()
        if self.cfg.check_on_start:
            self._trigger.set()
        self._thread = threading.Thread(target=self._loop, name="ota-updater", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._trigger.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # ---- triggers -----------------------------------------------------------------------------------
    def request_check(self) -> dict[str, Any]:
        """The ``check_update`` command: queue a check now; the outcome is reported on status/events."""
        busy = self._busy.locked()
        self._due = None
        self._trigger.set()
        return {"queued": not busy, "state": self.state.state, "detail": "an update is in progress" if busy else "check queued"}

    def on_fleet_message(self, topic: str, payload: bytes) -> None:
        """A (retained) fleet notification: check soon, after a random delay so a fleet does not stampede."""
        try:
            note = json.loads(payload or b"{}")
        except ValueError:
            log.warning("ignoring a malformed fleet notification on %s (%d bytes of non-JSON)", topic, len(payload))
            return
        if not isinstance(note, dict) or (self.model_name and note.get("model") not in (None, self.model_name)):
            return
        running = self.pipeline.detector.ref.version if self.pipeline is not None else None
        version = note.get("version")
        with contextlib.suppress(ValueError, TypeError):
            if running is not None and isinstance(version, str) and compare_versions(version, running) <= 0:
                return
        delay = random.uniform(0, self.cfg.notify_jitter_s)
        log.info("fleet notification on %s (%s %s): checking in %.1f s", topic, note.get("model"), version, delay)
        self._due = time.monotonic() + delay
        self._trigger.set()

    def _loop(self) -> None:
        # let the pipeline warm up first: the old model's latency is the yardstick for the new one
        deadline = time.monotonic() + 30.0
        while not self._stop.is_set() and len(self.watch.snapshot()) < 20 and time.monotonic() < deadline:
            self._stop.wait(0.1)
        while not self._stop.is_set():
            interval = self.cfg.check_interval_s * random.uniform(0.9, 1.1)
            fired = self._trigger.wait(interval)
            self._trigger.clear()
            if self._stop.is_set():
                return
            due = self._due
            if fired and due is not None and due > time.monotonic() and self._stop.wait(due - time.monotonic()):
                return
            self._due = None
            outcome = self.check_and_apply()
            if outcome.get("reason") in ("clock_implausible", "registry_unreachable"):
                # no network time yet, or no network: try again in a minute, not at the next scheduled check
                self._due = time.monotonic() + CLOCK_RETRY_S
                self._trigger.set()

    # ---- one check -----------------------------------------------------------------------------------
    def check_and_apply(self) -> dict[str, Any]:
        """Check the registry and install what it offers; every outcome is reported, nothing raises."""
        with self._busy:
            try:
                outcome = self._check_and_apply()
            except OtaError as exc:
                log.error("update: %s", exc)
                outcome = {"state": "failed", "reason": exc.reason, "detail": str(exc)}
                self.reporter.report("failed", reason=exc.reason, detail=str(exc), model=self.model_name)
            except Exception as exc:
                log.exception("update: unexpected failure")
                outcome = {"state": "failed", "reason": "internal_error", "detail": f"{type(exc).__name__}: {exc}"}
                self.reporter.report("failed", reason="internal_error", detail=outcome["detail"], model=self.model_name)
            self.last_outcome = outcome
            return outcome

    def _check_and_apply(self) -> dict[str, Any]:
        from agent.ota.errors import ClockError
        from agent.ota.resources import clock_plausible

        assert self.pipeline is not None, "attach() first"
        ok, why = clock_plausible(self.clock())
        if not ok:
            raise ClockError(why)
        self.reporter.report("checking", model=self.model_name, event=False)
        offer, detail, reason = self._find_offer()
        if offer is None:
            self.reporter.report("idle", detail=detail, reason=reason, model=self.model_name, event=reason is not None)
            return {"state": "idle", "detail": detail, "reason": reason}
        return self._apply(offer)

    def _find_offer(self) -> tuple[Offer | None, str, str | None]:
        from agent.ota.trust import consistent_snapshot, open_updater, refresh, signed_entries

        tuf_dir = self.root / "tuf"
        tuf = open_updater(self.cfg, tuf_dir)
        refresh(tuf, self.cfg.url)
        entries = signed_entries(tuf_dir)
        assert self.pipeline is not None and self.model_name is not None
        running = self.pipeline.detector.ref.version
        j = self.journal.state
        picked, rollback, detail, reason = choose(
            entries,
            model=self.model_name,
            device_id=self.device_id,
            channel=self.cfg.channel,
            running_version=running,
            floor_version=j.highest_committed.get(self.model_name),
            failed={k for k in j.failed if k.startswith(f"{self.model_name}@")},
            rollback_serial_applied=j.rollback_serial.get(self.model_name, 0),
        )
        if picked is None:
            return None, detail, reason
        path, target = picked
        info = tuf.get_targetinfo(path)
        if info is None:  # cannot happen: it is in the verified targets; guard anyway
            raise RegistryError(
                f"registry {self.cfg.url}: target {path} vanished between listing and lookup", "metadata_rejected"
            )
        self._consistent = consistent_snapshot(tuf_dir)
        return Offer(target, path, info, rollback), detail, None

    # ---- install -------------------------------------------------------------------------------------
    def _apply(self, offer: Offer) -> dict[str, Any]:
        from agent.ota.fetch import verify
        from agent.ota.resources import check_disk, check_ram

        assert self.pipeline is not None
        pipeline = self.pipeline
        t = offer.target
        old = pipeline.detector
        running = old.ref.version
        if compare_versions(t.version, running) <= 0 and offer.rollback is None:
            raise PolicyError(
                f"{t.model} {t.version} is not newer than the running {running}: downgrade refused", "downgrade_refused"
            )
        self.journal.begin(t.model, t.version, running)
        fields: dict[str, Any] = {"model": t.model, "version": t.version, "from_version": running}
        try:
            installed = self._installed_copy(offer)
            if installed is None:
                info = offer.info
                filename = offer.path.rsplit("/", 1)[-1]
                part = self.store.staging_part(t.model, t.version, filename)
                have = part.stat().st_size if part.exists() else 0
                check_disk(part.parent, max(0, info.length - have), self.cfg.disk_margin_mb * 2**20)
                check_ram(info.length, self.cfg.ram_factor)
                self.journal.advance("downloading")
                self.reporter.report("downloading", progress=have / info.length if info.length else 1.0, **fields)
                self._download(offer, part)
                self.reporter.report("verifying", **fields)
                verify(offer, part)
                self.journal.advance("verified")
                _fault("verified")
                # the signed manifest, bound to the signed name, version and hash
                manifest = dict(t.manifest, name=t.model, version=t.version, file=filename, sha256=offer.info.hashes["sha256"])
                installed = self.store.install(t.model, t.version, part, filename, manifest, offer.info.hashes["sha256"])
            else:
                self.journal.advance("downloading")
                self.journal.advance("verified")
            self.journal.advance("staged")
            self.reporter.report("staged", **fields)
            _fault("staged")
            candidate, report = self._prove(installed, old)
        except OtaError as exc:
            detail = str(exc)
            try:
                self.journal.finish_failed(exc.reason, detail)
            except OtaError as jexc:  # e.g. the disk is still full: report the cause anyway
                log.error("%s", jexc)
                detail += f" (the update journal could not record this: {jexc})"
            self.reporter.report("failed", reason=exc.reason, detail=detail, **fields)
            return {"state": "failed", "reason": exc.reason, "detail": detail}
        return self._swap_and_trial(offer, installed, old, candidate, report, fields)

    def _installed_copy(self, offer: Offer) -> Installed | None:
        """An already installed, intact copy of the offered version (a rollback to ``previous``)."""
        for inst in self.store.versions(offer.target.model):
            if inst.version == offer.target.version and inst.sha256 == offer.info.hashes.get("sha256"):
                with contextlib.suppress(AgentError):
                    self.store.verify(inst)
                    return inst
        return None

    def _download(self, offer: Offer, part: Path) -> None:
        from agent.ota.fetch import download, target_url

        assert self.cfg.url is not None
        t = offer.target

        def progress(fraction: float, final: bool) -> None:
            self.reporter.report("downloading", model=t.model, version=t.version, progress=fraction, event=final)

        url = target_url(self.cfg.url, offer, self._consistent)
        download(offer, part, url, self.cfg, self._stop, progress=progress, first_chunk=lambda: _fault("downloading"))

    def _selftest_frames(self) -> list[Any]:
        from agent.ota.selftest import bundled_selftest_dir, load_frames

        if self._frames is None:
            self._frames = load_frames(self.cfg.selftest_dir or bundled_selftest_dir())
        return self._frames

    def _prove(self, installed: Installed, old: Detector) -> tuple[Detector, dict[str, Any]]:
        """Load the candidate beside the serving model; validate and self-test it; ready its contexts."""
        from agent.ota.selftest import run_selftest, validate_candidate

        path = self.store.verify(installed)  # the file is hashed again before every load
        try:
            candidate = self.open_model(path)
        except ModelError as exc:
            raise SelfTestError(f"{installed.name} {installed.version}: cannot load {path}: {exc}", "load_failed") from None
        try:
            checks = validate_candidate(candidate, old)
            t0 = time.monotonic()
            old_key = model_key(old)
            report = run_selftest(
                candidate,
                self._selftest_frames(),
                # the serving model's inference time during the same seconds: both compete for the same cores
                reference_latency_ms=lambda: self.watch.invoke_p50(old_key, since=t0) or self.watch.invoke_p50(old_key),
                latency_factor=self.cfg.latency_factor,
                latency_slack_ms=self.cfg.latency_slack_ms,
                min_recall=self.cfg.selftest_min_recall,
                pace_s=SELFTEST_PACE_S,
            )
            candidate.contexts(2)  # the pipeline's second context, created now: the swap allocates nothing
        except BaseException:
            candidate.close()
            raise
        summary = _jsonable(report)
        if isinstance(summary, dict):
            summary["validation"] = checks
        return candidate, summary if isinstance(summary, dict) else {"report": summary}

    # ---- swap, trial, commit -------------------------------------------------------------------------
    def _swap_and_trial(
        self,
        offer: Offer,
        installed: Installed,
        old: Detector,
        candidate: Detector,
        selftest: dict[str, Any],
        fields: dict[str, Any],
    ) -> dict[str, Any]:
        assert self.pipeline is not None
        pipeline, cfg = self.pipeline, self.cfg
        old_key, new_key = model_key(old), model_key(candidate)
        self.journal.advance("swapping")
        _fault("swapping")
        t_swap = time.monotonic()
        pipeline.arm_fallback(old)
        pipeline.swap_detector(candidate)
        try:
            first = self.watch.wait_for(new_key, t_swap, cfg.trial_timeout_s, self._stop)
            if first is None and (self._stop.is_set() or pipeline.stopping):
                raise Stopped("the agent is stopping during the swap")
            if first is None:
                raise TrialError(
                    f"{candidate.ref.name} {candidate.ref.version} produced no result within {cfg.trial_timeout_s:g} s",
                    "no_frames",
                )
            gap_ms, interval_ms = self.watch.swap_gap(old_key, new_key, t_swap)
            self.journal.advance("trial")
            self.reporter.report("trial", detail=f"swap gap {gap_ms or 0:.1f} ms", **fields)
            _fault("trial")
            trial = run_trial(pipeline, self.watch, cfg, self._stop, old_key=old_key, new_key=new_key, since=first.t)
        except (TrialError, Stopped) as exc:
            reason = exc.reason if isinstance(exc, TrialError) else "stopped_during_trial"
            revert(pipeline, self.watch, old, candidate)
            self.journal.finish_rolled_back(reason)
            detail = str(exc) or reason
            self.reporter.report("rolled_back", reason=reason, detail=detail, **fields)
            return {"state": "rolled_back", "reason": reason, "detail": detail}
        self.store.commit(installed)
        self.journal.finish_committed(rollback_serial=offer.rollback.serial if offer.rollback else None)
        pipeline.arm_fallback(None)
        _fault("committed")
        old.close()
        with contextlib.suppress(OSError, AgentError):
            removed = self.store.collect(self.cfg.keep_versions)
            if removed:
                log.info("removed old model versions: %s", ", ".join(str(p) for p in removed))
        data = {
            **fields,
            "swap_gap_ms": None if gap_ms is None else round(gap_ms, 2),
            "frame_interval_ms": None if interval_ms is None else round(interval_ms, 2),
            "selftest": selftest,
            "trial": trial,
            "rollback_serial": offer.rollback.serial if offer.rollback else None,
        }
        self.reporter.report("committed", detail=f"{fields['from_version']} -> {fields['version']}", extra=data, **fields)
        return {"state": "committed", **data}


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        return json.loads(json.dumps(asdict(obj), default=str))
    return obj
