"""The outbox on a full disk (a real tmpfs filled to the last byte): ids never repeat, nothing raises, writes resume."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.sinks.mqtt.outbox import WAL_SIZE_LIMIT_BYTES, Kind, NewMessage, OutboxStore, OutboxWriteError

from .fullfs import SmallDisk, small_disk

BODY = '"kind":"detection","result":{"x":"' + "y" * 400 + '"}'


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    yield from small_disk(tmp_path, "4m")


def _batch(n: int = 20) -> list[NewMessage]:
    return [NewMessage(Kind.DETECTION, "edge/dev1/detections", BODY) for _ in range(n)]


def _seqs(rows: list) -> list[int]:
    return [json.loads(r.payload)["seq"] for r in rows]


def test_full_disk_then_restart_then_space_returns(disk: SmallDisk) -> None:
    path = disk.path / "outbox.sqlite"
    handed_out: list[int] = []  # every seq that left the store (stored, or numbered for publishing without durability)
    store = OutboxStore(path, "dev1", max_rows=100_000, max_bytes=100_000_000)
    for _ in range(50):
        handed_out += _seqs(store.append(_batch()))
    wal = Path(f"{path}-wal")
    assert wal.stat().st_size <= WAL_SIZE_LIMIT_BYTES + 64 * 1024, "the WAL is bounded"

    disk.fill()
    failures = 0
    for _ in range(30):
        try:
            handed_out += _seqs(store.append(_batch()))
        except OutboxWriteError as exc:
            failures += 1
            assert exc.unnumbered == 0 and len(exc.rows) == 20, "the reservation covers them"
            handed_out += _seqs(exc.rows)
    assert failures > 0 and not store.durable
    assert store.delete(handed_out[:100]) >= 0  # acknowledged while full: no exception, retried later
    store.enforce_bounds()
    store.expire()
    store.close()  # cannot record the last seq: the next run skips the whole reservation

    ballast = Path(f"{path}.ballast")
    assert ballast.is_file(), "made at the first open, while there was room"
    again = OutboxStore(path, "dev1", max_rows=100_000, max_bytes=100_000_000)  # restart on the still-full disk
    # (whether the reservation needed the ballast depends on what SQLite left allocated; the agent test sees it spent)
    for _ in range(5):
        try:
            handed_out += _seqs(again.append(_batch()))
        except OutboxWriteError as exc:
            assert exc.unnumbered == 0 and len(exc.rows) == 20, "numbered from a reservation made at this open"
            handed_out += _seqs(exc.rows)
    assert len(handed_out) == len(set(handed_out)), "no seq was handed out twice, across the restart"

    disk.free()
    rows = again.append(_batch())  # space is back: stored again, with no intervention
    handed_out += _seqs(rows)
    assert again.durable and again.db.execute("SELECT count(*) FROM outbox WHERE id = ?", [rows[0].id]).fetchone()[0] == 1
    assert ballast.is_file(), "held again for the next full disk"
    again.retry_pending()
    assert len(handed_out) == len(set(handed_out))
    again.close()

    third = OutboxStore(path, "dev1", max_rows=100_000, max_bytes=100_000_000)  # a clean close: no gap this time
    assert _seqs(third.append(_batch(1))) == [max(handed_out) + 1]
    third.close()


def test_acknowledged_deletes_that_fail_are_retried(disk: SmallDisk) -> None:
    store = OutboxStore(disk.path / "o.sqlite", "dev1", max_rows=100_000, max_bytes=100_000_000)
    rows = []
    for _ in range(40):
        rows += store.append(_batch())
    disk.fill()
    before = store.rows
    store.delete([r.id for r in rows])  # may fail for want of WAL space: kept, not raised
    disk.free()
    store.retry_pending()
    assert store.rows == 0 and before == len(rows)
    on_disk = store.db.execute("SELECT count(*) FROM outbox").fetchone()[0]
    assert on_disk == 0, "the in-memory accounting matches the table"
    store.close()


def test_an_outbox_that_cannot_be_opened_is_not_set_aside_as_corrupt(tmp_path: Path) -> None:
    """Only a file that is not a database (or is malformed) is moved aside; an open that fails otherwise is an error."""
    import sqlite3

    from agent.errors import AgentError
    from agent.sinks.base import AgentContext
    from agent.sinks.mqtt import MqttSink, MqttSinkConfig

    path = tmp_path / "outbox.sqlite"
    path.mkdir()  # SQLITE_CANTOPEN, like an I/O error: nothing about the file's content
    with pytest.raises(sqlite3.OperationalError):
        OutboxStore(path, "dev1", max_rows=10, max_bytes=10_000)
    assert path.is_dir() and not list(tmp_path.glob("*.corrupt-*")), "nothing was moved aside"
    sink = MqttSink(MqttSinkConfig(port=1, outbox={"path": str(path)}))
    sink.bind(AgentContext("dev1", tmp_path / "state", None))
    with pytest.raises(AgentError, match="cannot open the MQTT outbox"):
        sink.start(None)  # type: ignore[arg-type]


def test_the_reservation_made_at_open_covers_a_disk_that_fills_at_once(disk: SmallDisk) -> None:
    path = disk.path / "o.sqlite"
    OutboxStore(path, "dev1", max_rows=100, max_bytes=100_000).close()
    store = OutboxStore(path, "dev1", max_rows=100, max_bytes=100_000)  # reserves at open, before any message
    disk.fill()
    with pytest.raises(OutboxWriteError) as err:
        for _ in range(50):
            store.append(_batch())
    assert err.value.unnumbered == 0 and len(err.value.rows) == 20, "numbered from the reservation made at open"
    store.close()


def test_the_ballast_pays_for_a_reservation_on_a_disk_full_at_start(disk: SmallDisk) -> None:
    path = disk.path / "o.sqlite"
    first = OutboxStore(path, "dev1", max_rows=100, max_bytes=100_000)
    first.append(_batch())
    first.close()  # a clean close: the WAL is gone, nothing of SQLite's is left allocated
    ballast = Path(f"{path}.ballast")
    assert ballast.stat().st_size == 256 * 1024
    disk.fill()
    store = OutboxStore(path, "dev1", max_rows=100, max_bytes=100_000)
    assert not ballast.exists(), "released at open: SQLite's -shm file and the reservation needed its space"
    disk.fill()  # whatever the ballast left over is taken too
    with pytest.raises(OutboxWriteError) as err:
        for _ in range(100):
            store.append(_batch())
    assert err.value.unnumbered == 0 and err.value.rows[0].id == 21, "numbered, right after the last stored seq"
    store.close()
