"""The real agent on a full state disk (a small tmpfs), connected to a real Mosquitto, restarted while full.

Checks what a subscriber relies on: every ``msg_id`` names exactly one message (identical bytes on
every delivery), drops and unpersisted messages are counted by reason in telemetry, the agent never
logs a traceback, and once space returns rows are stored again (the broker is stopped, the outbox
fills, the broker comes back and the backlog arrives).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import AgentProcess, Broker, Subscriber, agent_config, wait_until
from .fullfs import SmallDisk, small_disk


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    yield from small_disk(tmp_path, "16m")


def _telemetry(sub: Subscriber) -> list[dict]:
    return [m.json()["telemetry"] for m in sub.of("telemetry")]


def test_full_disk_restart_and_recovery(tmp_path: Path, disk: SmallDisk, broker: Broker, subscribers: list) -> None:
    sub = Subscriber(broker.port, ("edge/full/#",))
    subscribers.append(sub)
    config = agent_config(tmp_path, broker.port, "full", fps=20)
    doc = config.read_text().replace(str(tmp_path / "state"), str(disk.path / "state"))
    config.write_text(doc)
    log1, log2 = tmp_path / "agent1.log", tmp_path / "agent2.log"

    first = AgentProcess(config, log1)
    try:
        assert wait_until(lambda: len(sub.of("detections")) >= 20, 60), log1.read_text()[-3000:]
        disk.fill()  # the SD card is full while connected and caught up
        assert wait_until(lambda: any(t["transport"]["published_unpersisted"] > 0 for t in _telemetry(sub)), 30), (
            log1.read_text()[-3000:]
        )
        time.sleep(2)
    finally:
        assert first.terminate() == 0, log1.read_text()[-3000:]

    disk.fill()  # the clean stop truncated the WAL: take that space too
    second = AgentProcess(config, log2)  # restart on the full disk
    try:
        # the ballast pays for a new seq reservation, so detections keep flowing, without durability
        seen = len(sub.of("detections"))
        assert wait_until(lambda: len(sub.of("detections")) > seen + 20, 60), log2.read_text()[-3000:]
        assert "released the 256 KiB ballast" in log2.read_text()
        assert wait_until(lambda: _telemetry(sub) and _telemetry(sub)[-1]["transport"]["published_unpersisted"] > 0, 30)
        disk.free()  # space returns
        assert wait_until(lambda: "outbox writes work again" in log2.read_text(), 30), log2.read_text()[-3000:]
        after = _telemetry(sub)[-1]["transport"]
        assert after["outbox_write_failures"] > 0, after

        broker.stop()  # rows are stored again: with the broker away they wait in the outbox file
        outbox = disk.path / "state" / "mqtt-outbox.sqlite"

        def stored() -> int:
            with sqlite3.connect(f"file:{outbox}?mode=ro", uri=True) as db:
                return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])

        assert wait_until(lambda: stored() >= 40, 30), stored()
        waiting = stored()
        broker.start()
        assert wait_until(lambda: stored() < waiting / 2, 60), "the backlog drains after the broker returns"
    finally:
        assert second.terminate() == 0, log2.read_text()[-3000:]

    # every msg_id names exactly one message; a seq belongs to one msg_id
    by_id: dict[str, set[bytes]] = {}
    by_seq: dict[tuple[str, int], set[str]] = {}
    for m in sub.messages:
        if m.topic.split("/")[-1] not in ("detections", "events", "telemetry"):
            continue
        doc = json.loads(m.payload)
        by_id.setdefault(doc["msg_id"], set()).add(m.payload)
        outbox_id = doc["msg_id"].split("/")[1]
        by_seq.setdefault((outbox_id, doc["seq"]), set()).add(doc["msg_id"])
    reused = {k: len(v) for k, v in by_id.items() if len(v) > 1}
    assert not reused, f"{len(reused)} msg_id(s) named more than one message: {list(reused)[:5]}"
    assert all(len(v) == 1 for v in by_seq.values())
    assert len(by_id) > 100

    counted = [t["transport"] for t in _telemetry(sub)]
    assert max(t["published_unpersisted"] for t in counted) > 0, "published without durability, counted"
    assert set(counted[-1]["dropped"]) >= {"write_error", "telemetry", "detection", "event", "handoff"}, "drops by reason"
    for log in (log1, log2):
        text = log.read_text()
        assert "Traceback" not in text, text[-4000:]
    assert "published without durability" in log1.read_text()
