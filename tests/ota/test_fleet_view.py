"""FleetView, the pure core of edge-fleet: one message at a time, no broker."""

from __future__ import annotations

import logging

import pytest
from rich.console import Console

from agent.ota.fleet import FleetView
from agent.ota.fleet_cli import rollout_table, status_table

from ._fleet_helpers import event_payload, status_payload, telemetry_payload

T = 1_800_000_000.0  # a fixed wall clock: the view never reads the real one


@pytest.fixture
def view() -> FleetView:
    return FleetView("edge")


def test_status_gives_model_update_and_last_seen(view: FleetView) -> None:
    update = {"state": "downloading", "since": T - 5, "model": "ssd", "version": "1.1.0", "progress": 0.25}
    assert view.ingest("edge/cam-1/status", status_payload("cam-1", T, update=update), T + 2, retained=True)
    row = view.devices["cam-1"]
    assert (row.model, row.version, row.agent_state) == ("ssd", "1.0.0", "running")
    assert (row.update_state, row.update_model, row.update_version, row.update_progress) == ("downloading", "ssd", "1.1.0", 0.25)
    assert row.last_seen == T  # started_at + uptime_s: when the device published it, not when we received it
    assert row.age_s(T + 2) == 2
    assert row.online is None


def test_status_with_no_model_and_stopped(view: FleetView) -> None:
    view.ingest("edge/cam-1/status", status_payload("cam-1", T, model=None, state="stopped"), T)
    row = view.devices["cam-1"]
    assert (row.model, row.version, row.agent_state, row.update_state) == (None, None, "stopped", "idle")


def test_availability_retained_and_live(view: FleetView) -> None:
    view.ingest("edge/cam-1/availability", b"online", T, retained=True)
    assert view.devices["cam-1"].online is True
    assert view.devices["cam-1"].last_seen is None  # a retained availability may be days old
    view.ingest("edge/cam-1/availability", b"offline", T + 9)
    assert view.devices["cam-1"].online is False
    assert view.devices["cam-1"].last_seen == T + 9


def test_telemetry_fps_p95_temperature(view: FleetView) -> None:
    view.ingest("edge/cam-1/telemetry", telemetry_payload("cam-1", T, window_s=10, model=("ssd", "1.1.0")), T)
    row = view.devices["cam-1"]
    assert (row.fps, row.p95_ms, row.latency_stage, row.temperature_c) == (14.5, 80.0, "capture_to_result", 52.3)
    assert (row.telemetry_interval_s, row.last_seen) == (10, T)
    assert (row.model, row.version) == ("ssd", "1.1.0")


@pytest.mark.parametrize("capture_stage", [True, False])
def test_p95_falls_back_to_invoke(view: FleetView, capture_stage: bool) -> None:
    payload = telemetry_payload("cam-1", T, capture_p95=None, capture_stage=capture_stage, temperature_c=None)
    view.ingest("edge/cam-1/telemetry", payload, T)
    row = view.devices["cam-1"]
    assert (row.p95_ms, row.latency_stage, row.temperature_c) == (40.0, "invoke", None)


def test_older_telemetry_does_not_overwrite_newer(view: FleetView) -> None:
    view.ingest("edge/cam-1/telemetry", telemetry_payload("cam-1", T, fps=20.0), T)
    view.ingest("edge/cam-1/telemetry", telemetry_payload("cam-1", T - 30, fps=3.0), T + 1)  # an outbox replay
    assert view.devices["cam-1"].fps == 20.0
    assert view.devices["cam-1"].last_seen == T


def test_update_event_then_model_changed(view: FleetView) -> None:
    view.ingest("edge/cam-1/status", status_payload("cam-1", T - 100), T, retained=True)
    data = {"phase": "rolled_back", "model": "ssd", "version": "1.1.0", "from_version": "1.0.0", "reason": "trial_failed"}
    view.ingest("edge/cam-1/events", event_payload("cam-1", T - 10, "update", data), T)
    view.ingest("edge/cam-1/events", event_payload("cam-1", T - 9, "model_changed", {"name": "ssd", "version": "1.0.0"}), T)
    row = view.devices["cam-1"]
    assert (row.update_state, row.update_version, row.update_reason) == ("rolled_back", "1.1.0", "trial_failed")
    assert (row.model, row.version, row.last_seen) == ("ssd", "1.0.0", T - 9)


def test_an_older_status_does_not_undo_a_newer_update_event(view: FleetView) -> None:
    view.ingest("edge/cam-1/events", event_payload("cam-1", T, "update", {"phase": "trial", "version": "1.1.0"}), T)
    old = status_payload("cam-1", T - 50, update={"state": "downloading", "since": T - 60, "version": "1.1.0"})
    view.ingest("edge/cam-1/status", old, T + 1, retained=True)
    assert view.devices["cam-1"].update_state == "trial"


def test_other_events_only_refresh_last_seen(view: FleetView) -> None:
    assert view.ingest("edge/cam-1/events", event_payload("cam-1", T, "camera_lost", {"source": "cam0"}), T)
    row = view.devices["cam-1"]
    assert (row.last_seen, row.update_state, row.model) == (T, None, None)


@pytest.mark.parametrize(
    "topic",
    ["edge/fleet/updates", "edge/fleet/status", "other/cam-1/status", "edge/cam-1/detections", "edge/cam-1/cmd/x", "edge/status"],
)
def test_topics_that_are_not_a_device_report_are_ignored(view: FleetView, topic: str) -> None:
    assert not view.ingest(topic, status_payload("cam-1", T), T)
    assert view.devices == {}
    assert not view.malformed


def test_multi_level_root_and_subscriptions() -> None:
    view = FleetView("site/a/edge")
    assert view.subscriptions() == [f"site/a/edge/+/{s}" for s in ("status", "availability", "telemetry", "events")]
    assert view.ingest("site/a/edge/cam-9/availability", b"online", T)
    assert list(view.devices) == ["cam-9"]


def test_cleared_retained_message_is_not_malformed(view: FleetView) -> None:
    assert not view.ingest("edge/cam-1/status", b"", T, retained=True)
    assert not view.malformed and not view.devices


@pytest.mark.parametrize(
    ("suffix", "payload"),
    [
        ("status", b"not json"),
        ("status", b"[1, 2]"),
        ("status", b'{"device_id": "cam-1", "model": "ssd"}'),
        ("status", b'{"device_id": "cam-1", "update": 3}'),
        ("telemetry", b'{"kind": "telemetry"}'),
        ("telemetry", b'{"telemetry": [1]}'),
        ("events", b'{"kind": "event", "data": {}}'),
        ("events", b'{"event": "update", "data": "downloading"}'),
        ("availability", b"maybe"),
        ("availability", b"\xff\xfe"),
        ("status", b"[" * 100_000),
    ],
)
def test_malformed_payloads_are_counted_and_skipped(
    view: FleetView, suffix: str, payload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    view.ingest("edge/cam-1/telemetry", telemetry_payload("cam-1", T), T)  # a good row that must survive
    topic = f"edge/cam-1/{suffix}"
    with caplog.at_level(logging.DEBUG, logger="agent.ota.fleet_cli"):
        assert view.ingest(topic, payload, T + 1) is False
    assert view.malformed == {suffix: 1}
    assert any(topic in r.getMessage() for r in caplog.records)
    row = view.devices["cam-1"]
    assert (row.fps, row.last_seen, row.online) == (14.5, T, None)


def test_malformed_for_an_unknown_device_makes_no_row(view: FleetView) -> None:
    view.ingest("edge/ghost/status", b"{oops", T)
    assert view.devices == {}


def test_stale_after_three_telemetry_intervals_or_60s(view: FleetView) -> None:
    view.ingest("edge/fast/telemetry", telemetry_payload("fast", T, window_s=5), T)
    view.ingest("edge/quiet/status", status_payload("quiet", T), T)
    view.ingest("edge/gone/status", status_payload("gone", T - 3600), T)
    view.ingest("edge/gone/availability", b"offline", T, retained=True)
    fast, quiet, gone = view.devices["fast"], view.devices["quiet"], view.devices["gone"]
    assert not fast.stale(T + 15) and fast.stale(T + 15.5)
    assert not quiet.stale(T + 60) and quiet.stale(T + 61)
    assert not gone.stale(T)  # offline says more than stale
    assert fast.as_dict(T + 20)["stale"] is True


def test_rollout_buckets_and_reasons(view: FleetView) -> None:
    def dev(name: str, model: tuple[str, str] | None, update: dict | None = None, online: bool = True) -> None:
        view.ingest(f"edge/{name}/status", status_payload(name, T, model=model, update=update), T, retained=True)
        view.ingest(f"edge/{name}/availability", b"online" if online else b"offline", T, retained=True)

    dev("a-committed", ("ssd", "1.1"), {"state": "committed", "since": T, "model": "ssd", "version": "1.1.0"})
    dev("b-committed-idle", ("ssd", "1.1.0"), {"state": "idle", "since": T})
    dev("c-trial", ("ssd", "1.1.0"), {"state": "trial", "since": T, "model": "ssd", "version": "1.1.0"})
    dev("d-rolled", ("ssd", "1.0.0"), {"state": "rolled_back", "since": T, "version": "1.1.0", "reason": "trial_failed"})
    dev("e-failed", ("ssd", "1.0.0"), {"state": "failed", "since": T, "version": "1.1.0", "reason": "hash_mismatch"})
    dev("f-failed", ("ssd", "1.0.0"), {"state": "failed", "since": T, "version": "1.1.0", "reason": "hash_mismatch"})
    dev("g-downloading", ("ssd", "1.0.0"), {"state": "downloading", "since": T, "version": "1.1.0", "progress": 0.5})
    dev("h-old", ("ssd", "1.0.0"))
    dev("i-failed-other-version", ("ssd", "1.0.0"), {"state": "failed", "since": T, "version": "0.9", "reason": "x"})
    dev("j-trial-of-newer", ("ssd", "1.2.0"), {"state": "trial", "since": T, "version": "1.2.0"})
    dev("k-other-model", ("yolo", "1.1.0"), {"state": "failed", "since": T, "model": "yolo", "version": "1.1.0"})
    dev("l-offline", ("ssd", "1.1.0"), online=False)
    # still reports 1.1.0 while on trial of 1.2.0 (status lagging the swap): not a committed 1.1.0
    dev("m-trial-lagging", ("ssd", "1.1.0"), {"state": "trial", "since": T, "model": "ssd", "version": "1.2.0"})
    summary = view.rollout("ssd", "1.1")
    d = summary.as_dict()
    assert d["counts"] == {
        "committed": 2,
        "trial": 1,
        "failed": 3,
        "updating": 1,
        "other_version": 4,
        "other_model": 1,
        "offline": 1,
    }
    assert d["total"] == 13
    assert d["devices"]["committed"] == ["a-committed", "b-committed-idle"]
    assert d["devices"]["failed"] == ["d-rolled", "e-failed", "f-failed"]
    assert d["reasons"] == {"hash_mismatch": 2, "trial_failed": 1}
    assert d["other_versions"] == {"1.0.0": 2, "1.1.0": 1, "1.2.0": 1}


def test_status_table_dims_offline_and_marks_stale(view: FleetView) -> None:
    view.ingest("edge/b-off/status", status_payload("b-off", T), T)
    view.ingest("edge/b-off/availability", b"offline", T)
    view.ingest("edge/a-on/telemetry", telemetry_payload("a-on", T - 200, window_s=30), T)
    failed = {"state": "failed", "since": T, "version": "1.1.0", "reason": "hash_mismatch"}
    view.ingest("edge/c-fail/status", status_payload("c-fail", T, update=failed), T)
    table = status_table(view.rows(), T)
    assert [r.style for r in table.rows] == [None, "dim", None]
    console = Console(record=True, width=200)
    console.print(table)
    text = console.export_text()
    lines = {line.split()[1]: line for line in text.splitlines() if line.startswith("│")}
    assert "(stale)" in lines["a-on"] and "14.5" in lines["a-on"] and "80.0" in lines["a-on"]
    assert "(stale)" not in lines["b-off"] and "offline" in lines["b-off"]
    assert "failed 1.1.0 (hash_mismatch)" in lines["c-fail"]
    console.print(rollout_table(view.rollout("ssd", "1.1.0")))  # renders without error
