"""The outbox writer thread: hand-off from the pipeline, commit, publish in order, delete on PUBACK.

The pipeline thread only appends to a bounded deque (``submit``: no lock held across I/O,
never blocks; when the deque is full the message is dropped and counted). This thread:

1. drains the deque, serializes, and commits the batch to the outbox in one transaction;
2. turns PUBACKs (queued by paho's thread) into deletes;
3. hands the next rows after its cursor to paho, at most ``window`` unacknowledged at a time,
   oldest first; while a backlog replays (after a reconnect or a restart) at most
   ``replay_rate_per_s``, live traffic unthrottled once caught up.

Order across a reconnect: paho re-sends what it already holds *after* our on_connect, so new
rows wait until those are acknowledged (or 10 s pass, then the cursor rewinds and the rows are
re-sent from the outbox). Subscribers de-duplicate redeliveries on ``msg_id``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from agent.sinks.mqtt.outbox import DROP_REASONS, Kind, NewMessage, OutboxRow, OutboxStore, OutboxWriteError
from agent.sinks.mqtt.payloads import CountsMessage, detection_body, event_body, telemetry_body
from agent.stats import LatencyHistogram, RateMeter

log = logging.getLogger(__name__)

MQTT_ERR_QUEUE_SIZE = 15  # paho.mqtt.enums.MQTTErrorCode.MQTT_ERR_QUEUE_SIZE
STALE_INFLIGHT_S = 10.0
HOUSEKEEPING_S = 1.0
BATCH = 512
STORE_PER_CYCLE = 4 * BATCH
DIRECT = -1  # handoff kind for messages that bypass the outbox (label counts)


class Publisher(Protocol):
    connected: bool

    def publish(
        self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False, properties: Any = None
    ) -> tuple[int, int]: ...


@dataclass(slots=True)
class _InFlight:
    row_id: int | None  # None: published without being stored (outbox write failed)
    kind: Kind
    capture_ns: int | None


class TokenBucket:
    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate * 0.5)
        self.tokens = self.capacity
        self.at = time.monotonic()

    def take(self, want: int) -> int:
        if self.rate <= 0:
            return want
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        got = min(want, int(self.tokens))
        self.tokens -= got
        return got

    def wait_s(self) -> float:
        return 0.0 if self.rate <= 0 else max(0.0, (1 - self.tokens) / self.rate)


class OutboxForwarder:
    """Owns the outbox store and its thread; see the module docstring."""

    def __init__(
        self,
        store_factory: Callable[[], OutboxStore],
        publisher: Publisher,
        topics: Any,
        *,
        handoff_limit: int,
        window: int,
        replay_rate_per_s: float,
    ) -> None:
        self._store_factory = store_factory
        self.store: OutboxStore | None = None
        self._pub = publisher
        self._topics = topics
        self._handoff: deque[tuple[int, Any]] = deque()
        self._handoff_limit = handoff_limit
        self._acks: deque[tuple[int, bool]] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._window = window
        self._bucket = TokenBucket(replay_rate_per_s)
        self._inflight: dict[int, _InFlight] = {}
        self._cursor = 0
        self._conn_gen = 0  # bumped by on_connect (paho thread)
        self._seen_gen = 0
        self._gate_until: float | None = None
        self._replay_until = 0  # rows up to this id were in the outbox at (re)connect: the backlog, rate-limited
        self._replay_started = 0.0
        self._last_housekeeping = 0.0
        self._latest_counts: CountsMessage | None = None
        self._counts_sent_gen = -1
        self._write_error_logged = -1e9
        self._since_log = {"published without durability": 0, "dropped (write_error)": 0}
        self._error_logged_at = -1e9
        self.handoff_drops = 0
        self.published = 0
        self.acked = 0
        self.acked_detections = 0
        self.rejected = 0
        self.unpersisted = 0
        self.loop_errors = 0
        self.capture_to_ack = LatencyHistogram()
        self.publish_rate = RateMeter()
        self.oldest_created: float | None = None  # refreshed by housekeeping, read by telemetry
        self.idle = threading.Event()  # set when everything submitted is stored and nothing waits for an ack

    # ---- any thread -------------------------------------------------------------------
    def submit(self, kind: int, item: Any) -> bool:
        """Queue a message for the writer (pipeline thread). False when the hand-off is full (counted)."""
        if len(self._handoff) >= self._handoff_limit:
            self.handoff_drops += 1
            return False
        self._handoff.append((kind, item))
        self._wake.set()
        return True

    def ack(self, mid: int, ok: bool) -> None:
        """A PUBACK (paho thread)."""
        self._acks.append((mid, ok))
        self._wake.set()

    def connected(self) -> None:
        """The connection came (back) up (paho thread)."""
        self._conn_gen += 1
        self._wake.set()

    def start(self) -> None:
        self.store = self._store_factory()  # opened here so a bad path fails the agent's start, not a thread
        self._cursor = 0
        self._thread = threading.Thread(target=self._run, name="mqtt-outbox", daemon=True)
        self._thread.start()

    def flush(self, timeout_s: float) -> bool:
        """Wait (at most ``timeout_s``) until everything submitted is committed, sent and acknowledged."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.idle.clear()
            self._wake.set()
            if self.idle.wait(min(0.05, max(deadline - time.monotonic(), 0))):
                return True
        return False

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.store is not None:
            self.store.close()

    # ---- the writer thread -------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait(self._next_timeout())
            self._wake.clear()
            try:
                self._cycle()
            except Exception as exc:  # noqa: BLE001 - logged (rate-limited, with traceback) + counted; forwarding goes on
                self.loop_errors += 1
                self._log_error(f"forwarder cycle failed: {exc!r}", exc_info=True)
                time.sleep(0.1)
            if self._handoff:
                self._wake.set()  # more waiting: go round again at once
            elif self._stop.is_set():
                return

    def _log_error(self, message: str, exc_info: bool = False) -> None:
        now = time.monotonic()
        if now - self._error_logged_at > 30:  # at most one line per 30 s; every occurrence is counted
            self._error_logged_at = now
            log.error("mqtt outbox: %s (%d loop error(s) so far)", message, self.loop_errors, exc_info=exc_info)

    def _next_timeout(self) -> float:
        if self.backlog_replaying and self._bucket.rate > 0 and self._pub.connected:
            return min(0.25, max(self._bucket.wait_s(), 0.002))
        return 0.25

    def _cycle(self) -> None:
        store = self.store
        assert store is not None
        budget = STORE_PER_CYCLE  # bounded, so a flood of new messages cannot starve sending and acks
        while self._handoff and budget > 0:
            budget -= self._store_batch(store)
        self._apply_acks(store)
        now = time.monotonic()
        if now - self._last_housekeeping >= HOUSEKEEPING_S:
            self._last_housekeeping = now
            store.retry_pending()
            store.expire()
            self.oldest_created = store.oldest_created()
        self._send(store)
        if not self._handoff and not self._inflight and not store.has_after(self._cursor):
            self.idle.set()  # everything committed, sent and acknowledged

    def _store_batch(self, store: OutboxStore) -> int:
        batch: list[NewMessage] = []
        taken = 0
        while self._handoff and taken < BATCH:
            kind, item = self._handoff.popleft()
            taken += 1
            if kind == DIRECT:
                self._publish_counts(item)
                continue
            try:
                batch.append(self._serialize(Kind(kind), item))
            except (ValueError, TypeError) as exc:  # e.g. an event whose data cannot be JSON: count it, keep the rest
                store.counters.dropped["write_error"] += 1
                self._log_error(f"cannot serialize a {Kind(kind).name.lower()} message: {exc}")
        if batch:
            was_durable = store.durable
            try:
                store.append(batch)
            except OutboxWriteError as exc:
                self._write_failed(exc)
            else:
                if not was_durable:
                    self._durable_again()
        return taken

    def _serialize(self, kind: Kind, item: Any) -> NewMessage:
        t = self._topics
        if kind is Kind.DETECTION:
            return NewMessage(kind, t.detections, detection_body(item), item.capture_monotonic_ns)
        if kind is Kind.EVENT:
            return NewMessage(kind, t.events, event_body(*item))
        return NewMessage(kind, t.telemetry, telemetry_body(item))

    def _write_failed(self, exc: OutboxWriteError) -> None:
        # Disk full or I/O error: keep inferring. Publish without durability when we can (their seqs
        # come from the durable reservation, so they are never reused) and only when nothing older
        # waits, to keep order; else drop. Either way it is counted, and the log line says which.
        store = self.store
        assert store is not None
        sent = 0
        if (
            self._pub.connected
            and not self.backlog_replaying
            and not store.has_after(self._cursor)
            and len(self._inflight) + len(exc.rows) <= self._window
        ):
            for row in exc.rows:
                if not self._publish_row(row, persisted=False):
                    break
                sent += 1
        self.unpersisted += sent
        self._since_log["published without durability"] += sent
        self._since_log["dropped (write_error)"] += len(exc.rows) - sent + exc.unnumbered
        store.counters.dropped["write_error"] += len(exc.rows) - sent + exc.unnumbered
        now = time.monotonic()
        if now - self._write_error_logged > 30:
            self._write_error_logged = now
            if self._pub.connected:  # tell the fleet too: an error event, published without durability
                body = event_body(
                    "error", {"what": "outbox_write_failed", "error": str(exc), "failures": store.counters.write_failures}
                )
                for row in store.number([NewMessage(Kind.EVENT, self._topics.events, body)], reserved_only=True):
                    self._publish_row(row, persisted=False)
            outcome = ", ".join(f"{n} {what}" for what, n in self._since_log.items() if n) or "nothing lost"
            log.error(
                "outbox write failed (%s): since the last report %s; %d write failure(s) so far",
                exc,
                outcome,
                store.counters.write_failures,
            )
            self._since_log = dict.fromkeys(self._since_log, 0)

    def _durable_again(self) -> None:
        outcome = ", ".join(f"{n} {what}" for what, n in self._since_log.items() if n) or "nothing lost"
        log.warning("outbox writes work again, messages are stored before they are sent (since the last report: %s)", outcome)
        self._since_log = dict.fromkeys(self._since_log, 0)

    def _apply_acks(self, store: OutboxStore) -> None:
        if not self._acks:
            return
        done: list[int] = []
        now_ns = time.monotonic_ns()
        while self._acks:
            mid, ok = self._acks.popleft()
            entry = self._inflight.pop(mid, None)
            if entry is None:
                continue  # status, results, counts... or forgotten after a stale reconnect
            if not ok:
                self.rejected += 1
                store.counters.dropped["rejected"] += 1
                log.error("broker refused outbox message %s (check the ACL for this device's topics); dropped", entry.row_id)
            else:
                self.acked += 1
                if entry.kind is Kind.DETECTION:
                    self.acked_detections += 1
                    if entry.capture_ns is not None:
                        self.capture_to_ack.record((now_ns - entry.capture_ns) / 1e6)
            if entry.row_id is not None:
                done.append(entry.row_id)
        if done:
            store.delete(done)

    def _send(self, store: OutboxStore) -> None:
        if not self._pub.connected:
            return
        if self._conn_gen != self._seen_gen:  # (re)connected: paho re-sends what it holds first
            self._seen_gen = self._conn_gen
            self._gate_until = time.monotonic() + STALE_INFLIGHT_S
            self._replay_until, self._replay_started = store.last_id, time.monotonic()  # today's backlog
            if self._latest_counts is not None and self._counts_sent_gen != self._conn_gen:
                self._publish_counts(self._latest_counts)
        if self._gate_until is not None:
            if self._inflight and time.monotonic() < self._gate_until:
                return
            if self._inflight:  # paho did not re-send them: rewind and send them again from the outbox
                stored = [e.row_id for e in self._inflight.values() if e.row_id is not None]
                if stored:
                    self._cursor = min(self._cursor, min(stored) - 1)
                log.warning("%d message(s) unacknowledged after reconnect; re-sending from the outbox", len(self._inflight))
                self._inflight.clear()
            self._gate_until = None
        window = min(self._window, getattr(self._pub, "receive_maximum", self._window))  # MQTT 5: the broker's limit
        while True:
            room = window - len(self._inflight)
            if room <= 0:
                return
            replaying = self.backlog_replaying
            if replaying:  # only the backlog is throttled; what arrived since follows at full speed
                room = self._bucket.take(min(room, self._replay_until - self._cursor))
                if room <= 0:
                    return
            rows = store.fetch_after(self._cursor, room)
            for row in rows:
                if not self._publish_row(row, persisted=True):
                    return
            if replaying and (not rows or not self.backlog_replaying):
                log.info("outbox backlog replayed in %.1f s", time.monotonic() - self._replay_started)
                self._replay_until = min(self._replay_until, self._cursor)
            if len(rows) < room:
                return

    def _publish_row(self, row: OutboxRow, persisted: bool) -> bool:
        rc, mid = self._pub.publish(row.topic, row.payload, qos=1)
        if rc == MQTT_ERR_QUEUE_SIZE:
            return False  # paho's queue is full: try again on the next cycle
        # rc 0 (sent) or NO_CONN (paho keeps QoS 1 queued and sends it on reconnect): handed over
        self._inflight[mid] = _InFlight(row.id if persisted else None, row.kind, row.capture_ns)
        if persisted:
            self._cursor = row.id
        self.published += 1
        self.publish_rate.tick()
        return True

    def submit_counts(self, counts: CountsMessage) -> None:
        self.submit(DIRECT, counts)

    def _publish_counts(self, counts: CountsMessage) -> None:
        self._latest_counts = counts
        if self._pub.connected:
            self._counts_sent_gen = self._conn_gen
            self._pub.publish(self._topics.counts, counts.model_dump_json(), qos=0, retain=True)

    # ---- reporting --------------------------------------------------------------------
    def dropped(self) -> dict[str, int]:
        counts = dict.fromkeys(DROP_REASONS, 0)
        if self.store is not None:
            counts.update(self.store.counters.dropped)
        counts["handoff"] = self.handoff_drops
        return counts

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def backlog_replaying(self) -> bool:
        """Sending what was in the outbox at the last (re)connect, at ``replay_rate_per_s``."""
        return self._cursor < self._replay_until
