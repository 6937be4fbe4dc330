"""The agent as a real process against a real broker that dies: will, 30 s outages, restart in an outage."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from .conftest import AgentProcess, Broker, Subscriber, agent_config, dedupe, results_from_jsonl, wait_until

OUTAGE_S = 30.0
MIN_FPS = 15.0


def _outbox_rows(state: Path) -> int:
    with sqlite3.connect(state / "mqtt-outbox.sqlite") as db:
        return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])


def _status(state: Path) -> dict:
    try:
        return json.loads((state / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def test_kill_9_makes_subscribers_see_offline(tmp_path: Path, agents: list, subscribers: list) -> None:
    b = Broker(tmp_path / "broker").start()
    try:
        sub = Subscriber(b.port, ("edge/k9/availability",))
        subscribers.append(sub)
        agent = AgentProcess(agent_config(tmp_path, b.port, "k9"), tmp_path / "agent.log")
        agents.append(agent)
        assert wait_until(lambda: [m.payload for m in sub.of("availability")][-1:] == [b"online"], 60), (
            tmp_path / "agent.log"
        ).read_text()
        agent.kill()  # SIGKILL: no clean DISCONNECT, so the broker publishes the will
        assert wait_until(lambda: [m.payload for m in sub.of("availability")][-1:] == [b"offline"], 10)
        late = Subscriber(b.port, ("edge/k9/availability",))  # the will is retained: a newcomer learns it too
        subscribers.append(late)
        assert wait_until(lambda: [m.payload for m in late.of("availability")] == [b"offline"], 5)
    finally:
        b.stop()


def _check_stream(tmp_path: Path, sub: Subscriber, outage: tuple[float, float]) -> None:
    produced = results_from_jsonl(tmp_path / "results.jsonl")  # every result the pipeline made (jsonl sink)
    got = dedupe(sub.of("detections"))
    key = [(r["frame_id"], r["capture_time"]) for r in produced]
    assert [(d["result"]["frame_id"], d["result"]["capture_time"]) for d in got] == key, (
        f"{len(got)} delivered vs {len(produced)} produced"
    )
    seqs = [d["seq"] for d in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "in order, exactly once after de-duplication"
    during = [r for r in produced if outage[0] <= r["capture_time"] <= outage[1]]
    assert len(during) / (outage[1] - outage[0]) >= MIN_FPS, f"only {len(during)} frames during the outage"
    assert _outbox_rows(tmp_path / "state") == 0, "the outbox drained"


@pytest.mark.slow
def test_30s_broker_outage_loses_nothing(tmp_path: Path, agents: list, subscribers: list) -> None:
    b = Broker(tmp_path / "broker", persistence=True).start()
    try:
        sub = Subscriber(b.port, ("edge/o30/detections",), persistent=True)
        subscribers.append(sub)
        agent = AgentProcess(agent_config(tmp_path, b.port, "o30", fps=20, jsonl=True), tmp_path / "agent.log")
        agents.append(agent)
        assert wait_until(lambda: len(sub.of("detections")) >= 20, 60), (tmp_path / "agent.log").read_text()
        b.stop()
        down = time.time()
        time.sleep(OUTAGE_S)
        assert agent.alive(), "the agent kept running"
        status = _status(tmp_path / "state")
        assert status["mqtt"]["connected"] is False and status["telemetry"]["fps"]["inference"] >= MIN_FPS
        assert status["telemetry"]["transport"]["outbox_rows"] >= MIN_FPS * (OUTAGE_S - 5)
        b.start()
        up = time.time()
        assert wait_until(
            lambda: _status(tmp_path / "state").get("telemetry", {}).get("transport", {}).get("outbox_rows") == 0, 30
        )
        assert agent.terminate() == 0
        _check_stream(tmp_path, sub, (down + 1, up - 1))
    finally:
        b.stop()


@pytest.mark.slow
def test_agent_restart_during_an_outage_loses_nothing(tmp_path: Path, agents: list, subscribers: list) -> None:
    b = Broker(tmp_path / "broker", persistence=True).start()
    try:
        sub = Subscriber(b.port, ("edge/rs/detections",), persistent=True)
        subscribers.append(sub)
        config = agent_config(tmp_path, b.port, "rs", fps=20, jsonl=True)
        first = AgentProcess(config, tmp_path / "agent1.log")
        agents.append(first)
        assert wait_until(lambda: len(sub.of("detections")) >= 20, 60), (tmp_path / "agent1.log").read_text()
        b.stop()
        down = time.time()
        time.sleep(OUTAGE_S / 3)
        assert first.terminate() == 0  # a clean restart (systemctl restart) in the middle of the outage
        left = _outbox_rows(tmp_path / "state")
        assert left >= MIN_FPS * (OUTAGE_S / 3 - 2), "unacknowledged messages stay in the outbox"
        second = AgentProcess(config, tmp_path / "agent2.log")
        agents.append(second)
        time.sleep(OUTAGE_S * 2 / 3)
        b.start()
        up = time.time()
        assert wait_until(
            lambda: _status(tmp_path / "state").get("telemetry", {}).get("transport", {}).get("outbox_rows") == 0, 30
        )
        assert second.terminate() == 0
        produced = results_from_jsonl(tmp_path / "results.jsonl")
        assert len([r for r in produced if r["capture_time"] > down + OUTAGE_S / 3 + 1]) > 0, "the second run produced too"
        _check_stream(tmp_path, sub, (down + OUTAGE_S / 3 + 6, up - 1))
    finally:
        b.stop()
