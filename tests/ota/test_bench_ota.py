"""``edge-agent bench-ota``: the pure fold of the agents' messages, and one small real run (3 agent processes)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from agent.cli import main
from agent.ota.bench_watch import WARMUP_RESULTS, OtaWatch, summarize
from tests.mqtt.conftest import Broker, Subscriber
from tests.ota._fleet_helpers import event_payload, status_payload, telemetry_payload

MODEL = "demo-shapes-tflite-int8"


def _committed(gap: float, interval: float = 100.0) -> dict[str, object]:
    return {"phase": "committed", "model": MODEL, "version": "1.1.0", "swap_gap_ms": gap, "frame_interval_ms": interval}


def test_watch_ready_only_after_this_runs_status_and_warmup_frames() -> None:
    t0 = 1_000_000.0
    watch = OtaWatch(["bench-ota-0", "bench-ota-1"], launched_at=t0)
    idle = {"state": "idle", "since": t0 + 1}
    # a previous run's retained status (started before the launch) does not count, even once telemetry is fresh
    watch.ingest("edge/bench-ota-0/status", status_payload("bench-ota-0", t0 - 50, update=idle), t0 + 1, retained=True)
    watch.ingest("edge/bench-ota-0/availability", b"online", t0 + 1, retained=True)
    watch.ingest("edge/bench-ota-0/telemetry", telemetry_payload("bench-ota-0", t0 + 5), t0 + 5)
    assert watch.ready() == []
    fresh = t0 + 125  # status_payload: started 120 s before this
    watch.ingest("edge/bench-ota-0/status", status_payload("bench-ota-0", fresh, update=idle), fresh)
    assert watch.ready() == ["bench-ota-0"]
    # running and online, but no telemetry yet: its updater may still be warming up
    watch.ingest("edge/bench-ota-1/status", status_payload("bench-ota-1", fresh, update=idle), fresh)
    watch.ingest("edge/bench-ota-1/availability", b"online", fresh)
    assert watch.ready() == ["bench-ota-0"]
    assert watch.processed["bench-ota-1"] < WARMUP_RESULTS
    # and an agent whose updater is busy (not idle) is not ready to be timed
    watch.ingest("edge/bench-ota-1/telemetry", telemetry_payload("bench-ota-1", fresh), fresh)
    assert sorted(watch.ready()) == ["bench-ota-0", "bench-ota-1"]
    busy = {"state": "checking", "since": fresh}
    watch.ingest("edge/bench-ota-1/status", status_payload("bench-ota-1", fresh + 1, update=busy), fresh + 1)
    assert watch.ready() == ["bench-ota-0"]
    # messages of other devices are not ours
    watch.ingest("edge/someone/status", status_payload("someone", t0 + 2), t0 + 2)
    assert "someone" not in watch.view.devices


def test_watch_outcomes_and_summary() -> None:
    t0 = 2_000_000.0
    ids = ["bench-ota-0", "bench-ota-1", "bench-ota-2"]
    watch = OtaWatch(ids, launched_at=t0)
    # an update event from before the publish (e.g. a start-up report) is ignored
    watch.ingest("edge/bench-ota-0/events", event_payload("bench-ota-0", t0 + 1, "update", _committed(50)), t0 + 1)
    assert watch.pending() == ids
    watch.published_at = t0 + 10
    for i, (phase_at, gap) in enumerate([(12.5, 100.0), (13.0, 150.0), (14.0, 110.0)]):
        d = ids[i]
        trial = {"phase": "trial", "model": MODEL, "version": "1.1.0"}
        watch.ingest(f"edge/{d}/events", event_payload(d, t0 + phase_at - 1, "update", trial), t0 + phase_at)
        watch.ingest(f"edge/{d}/events", event_payload(d, t0 + phase_at, "update", _committed(gap)), t0 + phase_at)
    assert watch.pending() == []
    a = watch.agents["bench-ota-1"]
    assert (a.outcome, a.commit_s, a.phases["trial"], a.gap_ratio) == ("committed", 3.0, 2.0, 1.5)
    s = summarize(list(watch.agents.values()))
    assert s["passed"] and s["committed"] == 3 and s["failed"] == 0
    assert s["commit_s"] == {"first": 2.5, "p50": 3.0, "p95": 4.0, "last": 4.0}
    assert s["gap_ratio"] == {"p50": 1.1, "max": 1.5}


def test_summary_fails_on_a_long_gap_a_rollback_or_an_unmeasured_gap() -> None:
    t0 = 3_000_000.0
    watch = OtaWatch(["a", "b"], launched_at=t0)
    watch.published_at = t0
    watch.ingest("edge/a/events", event_payload("a", t0 + 1, "update", _committed(250)), t0 + 1)
    watch.ingest("edge/b/events", event_payload("b", t0 + 1, "update", _committed(90)), t0 + 1)
    s = summarize(list(watch.agents.values()))
    assert not s["passed"] and s["gap_ratio"]["max"] == 2.5

    watch = OtaWatch(["a", "b"], launched_at=t0)
    watch.published_at = t0
    rolled_back = {"phase": "rolled_back", "model": MODEL, "version": "1.1.0", "reason": "too_slow"}
    watch.ingest("edge/a/events", event_payload("a", t0 + 1, "update", rolled_back), t0 + 1)
    watch.ingest("edge/b/events", event_payload("b", t0 + 1, "update", _committed(90)), t0 + 1)
    s = summarize(list(watch.agents.values()))
    assert (s["passed"], s["committed"], s["failed"]) == (False, 1, 1)
    assert watch.agents["a"].reason == "too_slow"

    watch = OtaWatch(["a"], launched_at=t0)
    watch.published_at = t0
    no_gap = {"phase": "committed", "model": MODEL, "version": "1.1.0"}
    watch.ingest("edge/a/events", event_payload("a", t0 + 1, "update", no_gap), t0 + 1)
    s = summarize(list(watch.agents.values()))
    assert (s["passed"], s["committed"], s["gap_unmeasured"]) == (False, 1, 1)


@pytest.mark.slow
def test_bench_ota_three_real_agents_commit_with_a_short_gap(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker").start()
    try:
        out = tmp_path / "bench.json"
        argv = ["bench-ota", "--agents", "3", "--fps", "10", "--trial-frames", "10", "--trial-s", "1"]
        rc = main([*argv, "--broker", f"127.0.0.1:{broker.port}", "--timeout", "120", "--output", str(out)])
        r = json.loads(out.read_text())
        assert rc == 0, json.dumps(r, indent=2)
        assert (r["agents"], r["committed"], r["failed"], r["no_answer"]) == (3, 3, 0, 0)
        for agent in r["per_agent"]:
            assert agent["outcome"] == "committed"
            assert isinstance(agent["gap_ratio"], float) and 0 < agent["gap_ratio"] <= 2, agent
            assert 0 < agent["commit_s"] < 120
        assert isinstance(r["gap_ratio"]["max"], float) and r["gap_ratio"]["max"] <= 2
        assert r["fleet_view"]["committed"] == 3  # edge-fleet's reading agrees
        assert r["agents_exit_codes"] == {"0": 3}  # stopped by SIGTERM, cleanly
        # cleaned up: the temp dir, and no retained message of the bench left on the broker
        assert not Path(r["settings"]["workdir"]).exists()
        sub = Subscriber(broker.port, ("edge/#",))
        time.sleep(1.0)
        left = [m.topic for m in sub.messages if m.retain]
        sub.close()
        assert left == []
    finally:
        broker.stop()
