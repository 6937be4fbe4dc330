"""The SQLite outbox on its own: durability across reopen, bounds, the drop policy and its counters."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.sinks.mqtt.outbox import Kind, NewMessage, OutboxStore, OutboxWriteError

BODY = '"kind":"detection","result":{"x":"' + "y" * 200 + '"}'


def _store(path: Path, **kw) -> OutboxStore:
    args = {"max_rows": 1000, "max_bytes": 10_000_000}
    args.update(kw)
    return OutboxStore(path, "dev1", **args)


def _msgs(kind: Kind, n: int) -> list[NewMessage]:
    return [NewMessage(kind, f"edge/dev1/{kind.name.lower()}", f'"kind":"{kind.name.lower()}","n":{i}') for i in range(n)]


def test_rows_survive_reopen_and_ids_never_repeat(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    store = _store(path)
    rows = store.append(_msgs(Kind.DETECTION, 5))
    assert [r.id for r in rows] == [1, 2, 3, 4, 5]
    envelope = json.loads(rows[0].payload)
    assert envelope["msg_id"] == f"dev1/{store.outbox_id}/1" and envelope["seq"] == 1 and envelope["device_id"] == "dev1"
    store.delete([1, 2, 3, 4, 5])  # all acknowledged: the table is empty
    store.close()

    again = _store(path)
    assert again.rows == 0 and again.outbox_id == store.outbox_id
    more = again.append(_msgs(Kind.EVENT, 2))
    assert [r.id for r in more] == [6, 7], "AUTOINCREMENT: a seq is never reused, even after every row was deleted"
    again.close()
    third = _store(path)
    assert third.rows == 2 and [r.id for r in third.fetch_after(0, 10)] == [6, 7]


def test_telemetry_goes_first_then_oldest_detections_then_events(tmp_path: Path) -> None:
    store = _store(tmp_path / "o.sqlite", max_rows=100)
    store.append(_msgs(Kind.EVENT, 10))
    store.append(_msgs(Kind.TELEMETRY, 20))
    store.append(_msgs(Kind.DETECTION, 70))
    assert store.rows == 100 and store.counters.dropped["telemetry"] == 0
    store.append(_msgs(Kind.DETECTION, 15))  # 15 over: telemetry pays
    assert store.kind_rows() == {"telemetry": 5, "detection": 85, "event": 10}
    assert store.counters.dropped["telemetry"] == 15
    first_detection = min(r.id for r in store.fetch_after(0, 1000) if r.kind is Kind.DETECTION)
    store.append(_msgs(Kind.DETECTION, 10))  # 5 more telemetry, then the 5 oldest detections
    assert store.kind_rows() == {"telemetry": 0, "detection": 90, "event": 10}
    assert store.counters.dropped == {**store.counters.dropped, "telemetry": 20, "detection": 5, "event": 0}
    remaining = [r.id for r in store.fetch_after(0, 1000) if r.kind is Kind.DETECTION]
    assert min(remaining) == first_detection + 5, "the oldest detections went, the newer stayed"
    store.append(_msgs(Kind.EVENT, 95))  # only now do events go (oldest first), after every detection
    assert store.kind_rows()["detection"] == 0 and store.rows == 100
    assert store.counters.dropped["detection"] == 95


def test_byte_bound(tmp_path: Path) -> None:
    store = _store(tmp_path / "o.sqlite", max_rows=10_000, max_bytes=64 * 1024)
    msgs = [NewMessage(Kind.DETECTION, "t", BODY) for _ in range(2000)]
    store.append(msgs)
    assert store.bytes <= 64 * 1024
    assert store.counters.dropped["detection"] == 2000 - store.rows
    on_disk = store.db.execute("SELECT coalesce(sum(length(payload)), 0), count(*) FROM outbox").fetchone()
    assert on_disk == (store.bytes, store.rows), "in-memory accounting matches the table"


def test_age_bound(tmp_path: Path) -> None:
    now = [1000.0]
    store = _store(tmp_path / "o.sqlite", max_age_s=60, clock=lambda: now[0])
    store.append(_msgs(Kind.DETECTION, 3))
    now[0] += 30
    store.append(_msgs(Kind.TELEMETRY, 2))
    now[0] += 31  # the first three are now 61 s old
    assert store.expire() == 3
    assert store.counters.dropped["expired"] == 3 and store.rows == 2


def test_disk_full_is_a_write_error_not_a_crash(tmp_path: Path) -> None:
    store = _store(tmp_path / "o.sqlite")
    store.append(_msgs(Kind.DETECTION, 1))
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages}")  # the file may not grow: SQLITE_FULL
    with pytest.raises(OutboxWriteError) as err:
        store.append([NewMessage(Kind.DETECTION, "t", BODY) for _ in range(200)])
    assert "full" in str(err.value) and len(err.value.rows) == 200
    assert store.counters.write_failures == 1 and store.rows == 1, "the failed batch left nothing behind"
    store.db.execute("PRAGMA max_page_count = 1073741823")
    assert [r.id for r in store.append(_msgs(Kind.DETECTION, 1))] == [202], "ids of the failed batch are not reused"


def test_a_corrupt_file_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    store = _store(path)
    assert store.recovered_corrupt is not None and store.recovered_corrupt.exists()
    assert store.append(_msgs(Kind.EVENT, 1))[0].id == 1


def test_wal_mode(tmp_path: Path) -> None:
    store = _store(tmp_path / "o.sqlite")
    assert store.db.journal_mode == "wal"
    reader = sqlite3.connect(tmp_path / "o.sqlite")  # readers do not block the writer (WAL)
    store.append(_msgs(Kind.EVENT, 3))
    assert reader.execute("SELECT count(*) FROM outbox").fetchone()[0] == 3


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(list(Kind)), st.integers(1, 40)), min_size=1, max_size=25))
def test_drop_policy_invariants(tmp_path: Path, batches: list[tuple[Kind, int]]) -> None:
    path = tmp_path / f"p{abs(hash(tuple(batches)))}.sqlite"
    store = _store(path, max_rows=50)
    inserted = dict.fromkeys(Kind, 0)
    for kind, n in batches:
        before = {k: store.kind_rows()[k.name.lower()] for k in Kind}
        store.append(_msgs(kind, n))
        inserted[kind] += n
        after = store.kind_rows()
        assert store.rows <= 50
        # a detection is only dropped when no telemetry is left; an event only when no telemetry or detection is
        if after["detection"] < before[Kind.DETECTION] + (n if kind is Kind.DETECTION else 0):
            assert after["telemetry"] == 0
        if after["event"] < before[Kind.EVENT] + (n if kind is Kind.EVENT else 0):
            assert after["telemetry"] == 0 and after["detection"] == 0
    dropped = store.counters.dropped
    for kind in Kind:
        name = kind.name.lower()
        assert inserted[kind] - dropped[name] == store.kind_rows()[name], "every drop is counted"
    ids = [r.id for r in store.fetch_after(0, 100)]
    assert ids == sorted(ids)
    store.close()
    path.unlink()
