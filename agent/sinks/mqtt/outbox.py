"""The durable outbox: every detection, event and telemetry message, committed before it is sent.

A SQLite file (sqlite-utils, WAL) owned by ONE thread, the forwarder; nothing else writes it.
A row is inserted (and committed) before the message is handed to the MQTT client and deleted
only when the broker's PUBACK arrives, so a message survives a broker outage, a crash and a
restart, and is delivered at least once. Each row's ``id`` is the message's ``seq``, and
``<device_id>/<outbox_id>/<seq>`` is unique for the life of the file (``outbox_id`` is random per
file, so a deleted file cannot repeat ids either), also for messages that could not be stored
(a full disk) and went out without durability: seqs are handed out only from a range reserved
durably ahead of use (``meta.seq_reserved``, committed with the rows), so a restart never hands
a seq out twice. A clean close records the last seq used, so only an unclean stop leaves a gap.
On a disk that is full already at start, a small ballast file (``ballast.py``) is released so the
reservation can still be committed.

Disk full: the WAL is bounded (``wal_autocheckpoint``, ``journal_size_limit``) and truncated when
a write fails, the failed transaction is rolled back and tried once more, and failed deletes of
acknowledged rows are retried later; nothing raises out of the store except
:class:`OutboxWriteError` from ``append``. Writes resume by themselves when space returns.

Bounds (rows, payload bytes, age) hold during an outage: when full, telemetry goes first, then
the oldest detections, events last; every dropped row is counted by reason.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.sinks.mqtt.ballast import Ballast
from agent.sinks.mqtt.payloads import envelope_json

if TYPE_CHECKING:
    from sqlite_utils import Database

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
RESERVE_AHEAD = 100_000  # seqs reserved per durable step: ~55 min of 30 msg/s on a full disk before none are left
WAL_AUTOCHECKPOINT_PAGES = 256  # 1 MiB of 4 KiB pages (SQLite's default, 1000, lets the WAL take 4 MiB of a small card)
WAL_SIZE_LIMIT_BYTES = 1 << 20  # the WAL is truncated back to this after a checkpoint
_CORRUPT = ("SQLITE_NOTADB", "SQLITE_CORRUPT")


class Kind(IntEnum):
    """Message kinds, in drop order: the lowest value goes first when the outbox is full."""

    TELEMETRY = 0
    DETECTION = 1
    EVENT = 2


KIND_NAMES = {Kind.TELEMETRY: "telemetry", Kind.DETECTION: "detection", Kind.EVENT: "event"}
DROP_REASONS = ("telemetry", "detection", "event", "expired", "handoff", "write_error", "rejected")


@dataclass(slots=True)
class NewMessage:
    """A message on its way into the outbox; ``body`` is the JSON members that follow the envelope's."""

    kind: Kind
    topic: str
    body: str
    capture_ns: int | None = None  # CLOCK_MONOTONIC of the frame (detections), for capture-to-ack latency


@dataclass(slots=True)
class OutboxRow:
    id: int
    kind: Kind
    topic: str
    payload: bytes
    created: float
    capture_ns: int | None


@dataclass
class OutboxCounters:
    inserted: int = 0
    deleted_acked: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    write_failures: int = 0  # failed transactions (each may hold many messages)
    last_write_error: str | None = None


class OutboxWriteError(Exception):
    """Rows could not be committed (disk full, I/O error).

    ``rows`` were numbered from the durable reservation (their seqs are never handed out again, so
    they may be published without durability); ``unnumbered`` messages had no reserved seq left.
    """

    def __init__(self, cause: sqlite3.Error, rows: list[OutboxRow], unnumbered: int = 0) -> None:
        super().__init__(str(cause))
        self.rows = rows
        self.unnumbered = unnumbered


class OutboxStore:
    """Storage and drop policy; no threads, no network (the forwarder drives it)."""

    def __init__(
        self,
        path: Path,
        device_id: str,
        *,
        max_rows: int,
        max_bytes: int,
        max_age_s: float = 0.0,
        synchronous: str = "NORMAL",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.device_id = device_id
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.clock = clock
        self.counters = OutboxCounters()
        self.recovered_corrupt: Path | None = None
        self._ballast = Ballast(Path(f"{path}.ballast"))  # freed on a full disk so a seq reservation can be committed
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = self._open(path, synchronous)
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorname", "SQLITE_CORRUPT") in _CORRUPT:
                self.db = self._set_aside_and_open(exc, synchronous)
            elif self._ballast.spend():  # a full disk: SQLite could not even make its -shm file
                self.db = self._open(path, synchronous)
            else:
                raise  # an I/O error is never a reason to set the messages aside
        self.outbox_id = self._meta("outbox_id") or self._set_meta("outbox_id", secrets.token_hex(4))
        self._forget_stale_clock()
        seq = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        self._next_seq = max(seq[0] if seq else 0, int(self._meta("seq_reserved") or 0)) + 1
        self._reserved = self._next_seq - 1  # the highest seq reserved durably; none may be handed out beyond it
        self._pending_deletes: list[int] = []  # acknowledged rows whose delete failed (disk full): retried
        self.durable = True  # False from a failed write until the next commit succeeds
        self.rows = 0
        self.bytes = 0
        self._kind_rows = dict.fromkeys(Kind, 0)
        for kind, n, size in self.db.execute(
            "SELECT kind, count(*), coalesce(sum(length(payload)), 0) FROM outbox GROUP BY kind"
        ):
            self._kind_rows[Kind(kind)] = n
            self.rows += n
            self.bytes += size
        # reserve now, so messages can still be numbered if the disk fills before the first commit;
        # on a disk that is full already, the ballast's space is what makes the reservation possible
        if self._try_reserve(self._next_seq):
            self._ballast.keep()
        elif self._ballast.spend():
            self._try_reserve(self._next_seq)  # the ballast is made again once rows can be stored

    def _set_aside_and_open(self, exc: sqlite3.Error, synchronous: str) -> Database:
        """Not a database / malformed: keep it for inspection, start afresh."""
        path = self.path
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        log.error("outbox %s is unreadable (%s); moved to %s and starting empty", path, exc, aside)
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{path}{suffix}")
            if src.exists():
                src.replace(Path(f"{aside}{suffix}"))
        self.recovered_corrupt = aside
        return self._open(path, synchronous)

    @staticmethod
    def _open(path: Path, synchronous: str) -> Database:
        from sqlite_utils import Database

        # created here, used only by the forwarder thread from then on: one writer, handed over once
        db = Database(sqlite3.connect(str(path), check_same_thread=False))
        db.execute("PRAGMA busy_timeout = 5000")
        if db.journal_mode != "wal":
            db.enable_wal()
        db.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
        db.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}")
        db.execute(f"PRAGMA synchronous = {'FULL' if synchronous == 'FULL' else 'NORMAL'}")
        with db.atomic():
            db.execute(
                "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, kind INTEGER NOT NULL, "
                "topic TEXT NOT NULL, payload BLOB NOT NULL, created REAL NOT NULL, capture_ns INTEGER)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS outbox_kind ON outbox (kind, id)")
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", [SCHEMA_VERSION])
        return db

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> str:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [key, value])
        return value

    def _forget_stale_clock(self) -> None:
        """Monotonic capture stamps mean nothing after a reboot: drop them when the boot id changed."""
        try:
            boot = _BOOT_ID.read_text().strip()
        except OSError:
            return
        if self._meta("boot_id") != boot:
            try:
                with self.db.atomic():
                    self.db.execute("UPDATE outbox SET capture_ns = NULL WHERE capture_ns IS NOT NULL")
                    self._set_meta("boot_id", boot)
            except sqlite3.Error as exc:  # a full disk at boot: stale stamps only skew capture-to-ack latency
                self._rollback()
                log.warning("outbox: cannot clear capture stamps of a previous boot (%s)", exc)

    def _try_reserve(self, upto: int) -> bool:
        """Commit a reservation covering ``upto`` on its own (a few pages); False when the disk refuses."""
        try:
            with self.db.atomic():
                reserved = self._reserve_sql(upto)
        except sqlite3.Error as exc:
            self._rollback()
            log.warning("outbox: cannot reserve message ids (%s)", exc)
            return False
        self._reserved = reserved or self._reserved  # only once committed
        return True

    def _reserve_sql(self, upto: int) -> int | None:
        """Inside a transaction: extend the durable seq reservation when ``upto`` comes near its end."""
        if upto + RESERVE_AHEAD // 2 <= self._reserved:
            return None
        new = upto + RESERVE_AHEAD
        self.db.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('seq_reserved', ?)", [str(new)])
        return new

    def _rollback(self) -> None:
        """After a failed COMMIT the transaction may still be open: end it, or every later write joins it."""
        if self.db.conn.in_transaction:
            try:
                self.db.conn.execute("ROLLBACK")
            except sqlite3.Error as exc:
                log.warning("outbox: rollback failed: %s", exc)

    def make_room(self) -> None:
        """Give the WAL's disk space back (checkpoint and truncate it): what a full disk needs first."""
        self._rollback()
        try:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.debug("outbox: checkpoint failed: %s", exc)

    # ---- writing ------------------------------------------------------------------
    def number(self, messages: Sequence[NewMessage], *, reserved_only: bool = False) -> list[OutboxRow]:
        """Give messages their seq and envelope, without storing them (``append`` stores them).

        ``reserved_only``: number only as many as the durable reservation still covers (for messages
        that will not be stored: their seq must never come round again).
        """
        if reserved_only:
            messages = messages[: max(self._reserved - self._next_seq + 1, 0)]
        now = self.clock()
        rows = []
        for m in messages:
            seq = self._next_seq
            self._next_seq += 1
            msg_id = f"{self.device_id}/{self.outbox_id}/{seq}"
            payload = envelope_json(msg_id, seq, self.device_id, now, m.body).encode()
            rows.append(OutboxRow(seq, m.kind, m.topic, payload, now, m.capture_ns))
        return rows

    def append(self, messages: Sequence[NewMessage]) -> list[OutboxRow]:
        """Number, wrap and commit ``messages`` in one transaction, then enforce the bounds.

        Raises :class:`OutboxWriteError` (carrying the built rows) when the commit fails.
        """
        rows = self.number(messages)
        if not rows:
            return rows
        try:
            reserved = self._commit(rows)
        except sqlite3.Error:
            self.make_room()  # a full disk: the WAL's own space may be all the transaction needs
            try:
                reserved = self._commit(rows)
            except sqlite3.Error as exc:
                self._rollback()
                if rows[-1].id > self._reserved and self._ballast.spend():
                    self._try_reserve(rows[-1].id)  # the ballast holds the reservation, not the rows
                self.durable = False
                self.counters.write_failures += 1
                self.counters.last_write_error = str(exc)
                usable = [r for r in rows if r.id <= self._reserved]
                self._next_seq = min(self._next_seq, self._reserved + 1)  # unreserved seqs were never used: hand out again
                raise OutboxWriteError(exc, usable, len(rows) - len(usable)) from exc
        if reserved is not None:
            self._reserved = reserved
        if not self.durable:
            self._ballast.keep()  # space is back: hold some again for the next full disk
        self.durable = True
        self.counters.inserted += len(rows)
        for r in rows:
            self._kind_rows[r.kind] += 1
            self.rows += 1
            self.bytes += len(r.payload)
        self.enforce_bounds()
        return rows

    def _commit(self, rows: list[OutboxRow]) -> int | None:
        with self.db.atomic():
            self.db.conn.executemany(
                "INSERT INTO outbox (id, kind, topic, payload, created, capture_ns) VALUES (?, ?, ?, ?, ?, ?)",
                [(r.id, int(r.kind), r.topic, r.payload, r.created, r.capture_ns) for r in rows],
            )
            return self._reserve_sql(rows[-1].id)

    def _delete_returning(self, where: str, args: Iterable[Any]) -> list[tuple[int, int, int]]:
        """Delete and account; raises sqlite3.Error (rolled back, counters untouched) when the disk is full."""
        try:
            return self._delete_returning_once(where, args)
        except sqlite3.Error:
            self.make_room()
            return self._delete_returning_once(where, args)

    def _delete_returning_once(self, where: str, args: Iterable[Any]) -> list[tuple[int, int, int]]:
        with self.db.atomic():
            gone = self.db.conn.execute(
                f"DELETE FROM outbox WHERE {where} RETURNING id, kind, length(payload)", list(args)
            ).fetchall()
        for _, kind, size in gone:
            self._kind_rows[Kind(kind)] -= 1
            self.rows -= 1
            self.bytes -= size
        return gone

    def delete(self, ids: Sequence[int]) -> int:
        """Delete acknowledged rows (ids that are already gone are ignored); a failed delete is kept and retried."""
        ids = [*self._pending_deletes, *ids]
        self._pending_deletes = []
        deleted = 0
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            try:
                deleted += len(self._delete_returning(f"id IN ({','.join('?' * len(chunk))})", chunk))
            except sqlite3.Error as exc:  # sent and acknowledged already: at worst re-sent after a restart (same msg_id)
                self._write_failed(exc)
                self._pending_deletes = list(ids[start:])
                break
        self.counters.deleted_acked += deleted
        return deleted

    def retry_pending(self) -> None:
        """Retry deletes that failed (housekeeping)."""
        if self._pending_deletes:
            self.delete([])

    def _write_failed(self, exc: sqlite3.Error) -> None:
        self._rollback()
        self.durable = False
        self.counters.write_failures += 1
        self.counters.last_write_error = str(exc)

    def enforce_bounds(self) -> None:
        """Drop rows until within max_rows and max_bytes: telemetry first, then oldest detections, events last."""
        try:
            self._enforce_bounds()
        except sqlite3.Error as exc:  # the disk is full: the bound holds again after the next successful write
            self._write_failed(exc)

    def _enforce_bounds(self) -> None:
        for kind in Kind:
            while (self.rows > self.max_rows or self.bytes > self.max_bytes) and self._kind_rows[kind] > 0:
                over_rows = self.rows - self.max_rows
                # bytes over: guess rows to drop from the average size, at least one
                avg = max(self.bytes // max(self.rows, 1), 1)
                over_bytes = -(-(self.bytes - self.max_bytes) // avg) if self.bytes > self.max_bytes else 0
                n = max(over_rows, over_bytes, 1)
                gone = self._delete_returning(
                    "id IN (SELECT id FROM outbox WHERE kind = ? ORDER BY id LIMIT ?)", [int(kind), min(n, 5000)]
                )
                self.counters.dropped[KIND_NAMES[kind]] += len(gone)
                if gone:
                    log.warning("outbox full: dropped %d oldest %s message(s)", len(gone), KIND_NAMES[kind])

    def expire(self) -> int:
        """Drop rows older than ``max_age_s`` (counted as expired)."""
        if self.max_age_s <= 0 or self.rows == 0:
            return 0
        try:
            gone = self._delete_returning("created < ?", [self.clock() - self.max_age_s])
        except sqlite3.Error as exc:
            self._write_failed(exc)
            return 0
        self.counters.dropped["expired"] += len(gone)
        if gone:
            log.warning("outbox: dropped %d message(s) older than %.0f s", len(gone), self.max_age_s)
        return len(gone)

    # ---- reading ------------------------------------------------------------------
    def fetch_after(self, cursor: int, limit: int) -> list[OutboxRow]:
        """The next ``limit`` rows with id > ``cursor``, oldest first."""
        cur = self.db.conn.execute(
            "SELECT id, kind, topic, payload, created, capture_ns FROM outbox WHERE id > ? ORDER BY id LIMIT ?", [cursor, limit]
        )
        return [OutboxRow(i, Kind(k), t, bytes(p), c, n) for i, k, t, p, c, n in cur.fetchall()]

    def has_after(self, cursor: int) -> bool:
        return self.db.conn.execute("SELECT 1 FROM outbox WHERE id > ? LIMIT 1", [cursor]).fetchone() is not None

    def oldest_created(self) -> float | None:
        row = self.db.conn.execute("SELECT created FROM outbox ORDER BY id LIMIT 1").fetchone()
        return row[0] if row else None

    @property
    def last_id(self) -> int:
        """The newest id handed out (stored or not): rows up to it exist or were dropped."""
        return self._next_seq - 1

    def kind_rows(self) -> dict[str, int]:
        return {KIND_NAMES[k]: n for k, n in self._kind_rows.items()}

    def close(self) -> None:
        self._rollback()
        try:  # a clean stop gives back the unused reservation: the next run continues without a gap
            with self.db.atomic():
                self._set_meta("seq_reserved", str(self._next_seq - 1))
        except sqlite3.Error as exc:
            self._rollback()
            log.warning("outbox: cannot record the last seq at close (%s); the next run skips the reserved ones", exc)
        try:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.warning("outbox checkpoint at close failed: %s", exc)
        self.db.close()
