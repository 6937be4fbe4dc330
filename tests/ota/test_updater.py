"""The updater against a real registry over real HTTP, with the pipeline running (synthetic camera).

Each attack must be refused, reported with its reason, and leave the old model serving.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata

from agent.ota.httpserver import RangeRequestHandler, start_server
from agent.ota.policy import choose
from agent.ota.repository import Registry
from agent.ota.targets import ModelTarget, RollbackInstruction
from agent.ota.versions import in_rollout, rollout_bucket
from tests.ota.conftest import DEMO_NAME, demo_files

pytestmark = pytest.mark.slow


def publish(registry: Registry, version: str, variant: str = "tflite-int8", **kw: Any) -> ModelTarget:
    model, manifest = demo_files(variant)
    return registry.publish(model, manifest, name=DEMO_NAME, version=version, **kw)


def target_file(registry: Registry, version: str) -> Path:
    files = list((registry.dir / "repository" / "targets" / "models" / DEMO_NAME / version).iterdir())
    assert len(files) == 1
    return files[0]


def assert_refused(rig: Any, outcome: dict[str, Any], reason: str) -> None:
    assert outcome["state"] == "failed", outcome
    assert outcome["reason"] == reason, outcome
    assert rig.recorder.states[-1].state == "failed" and rig.recorder.states[-1].reason == reason
    failed = [d for k, d in rig.recorder.events if k == "update" and d["phase"] == "failed"]
    assert failed and failed[-1]["reason"] == reason
    rig.wait_results(10)  # still serving
    assert rig.serving == "1.0.0"
    assert rig.updater.store.current() is None


# ---- happy path ------------------------------------------------------------------------------------
def test_update_swaps_live_within_two_frame_intervals_and_survives_restart(make_rig, registry):
    rig = make_rig(fps=30)
    assert rig.check()["state"] == "idle"  # nothing published yet
    publish(registry, "1.1.0")
    t0 = time.monotonic()
    outcome = rig.check()
    assert outcome["state"] == "committed", outcome
    assert rig.serving == "1.1.0"
    assert rig.recorder.phases()[-5:] == ["downloading", "verifying", "staged", "trial", "committed"]
    # the longest gap between results while the swap happened: at most two frame intervals
    assert outcome["swap_gap_ms"] is not None and outcome["frame_interval_ms"] is not None
    assert outcome["swap_gap_ms"] <= 2 * outcome["frame_interval_ms"], outcome
    assert rig.recorder.max_gap_ms(t0) <= 2 * 1000 / 30 + 40  # whole update, seen from the sink (CI slack)
    assert rig.recorder.versions_served()[-2:] == ["1.0.0", "1.1.0"]
    assert outcome["selftest"]["frames"] > 0 and outcome["trial"]["frames"] >= 15
    current = rig.updater.store.current()
    assert current is not None and current.version == "1.1.0"
    rig.close()

    again = make_rig(state_dir=rig.state_dir)  # a restarted agent starts on the committed model
    assert again.serving == "1.1.0"
    assert again.check()["state"] == "idle"


def test_check_update_command_and_fleet_notification_trigger_a_check(make_rig, registry):
    rig = make_rig()
    publish(registry, "1.1.0")
    rig.updater.start()
    rig.updater.on_fleet_message("edge/fleet/updates", json.dumps({"model": DEMO_NAME, "version": "1.1.0"}).encode())
    deadline = time.monotonic() + 30
    while rig.serving != "1.1.0":
        assert time.monotonic() < deadline, rig.recorder.phases()
        time.sleep(0.05)
    # a notification for another model, or an older version, is ignored; the command answers at once
    rig.updater.on_fleet_message("edge/fleet/updates", b'{"model": "other", "version": "9"}')
    rig.updater.on_fleet_message("edge/fleet/updates", b"not json")
    assert rig.updater._due is None
    answer = rig.recorder.checker()
    assert answer["queued"] in (True, False) and "state" in answer


# ---- attacks: refused, reported, the old model keeps serving -----------------------------------------
def test_tampered_artifact_is_refused(make_rig, registry):
    rig = make_rig()
    publish(registry, "1.1.0")
    f = target_file(registry, "1.1.0")
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    assert_refused(rig, rig.check(), "hash_mismatch")
    assert not list((rig.updater.root / "staging").rglob("*.part"))  # nothing half-verified kept


def test_wrong_length_artifact_is_refused(make_rig, registry):
    rig = make_rig()
    publish(registry, "1.1.0")
    f = target_file(registry, "1.1.0")
    f.write_bytes(f.read_bytes()[:-1000])
    assert_refused(rig, rig.check(), "length_mismatch")


def test_oversized_artifact_is_cut_at_the_signed_length(make_rig, registry):
    rig = make_rig()
    publish(registry, "1.1.0")
    f = target_file(registry, "1.1.0")
    f.write_bytes(f.read_bytes() + b"\0" * 5_000_000)
    assert_refused(rig, rig.check(), "oversized")


def test_oversized_metadata_is_refused(make_rig, registry):
    rig = make_rig()
    publish(registry, "1.1.0")
    ts = registry.dir / "repository" / "metadata" / "timestamp.json"
    ts.write_bytes(ts.read_bytes() + b" " * 20_000)  # beyond ngclient's 16 KiB timestamp limit
    assert_refused(rig, rig.check(), "oversized")


def test_targets_signed_by_an_unknown_key_are_refused(make_rig, registry):
    rig = make_rig()
    publish(registry, "1.1.0")
    md = registry.load_role("targets")
    for info in md.signed.targets.values():
        entry = json.loads(info.custom["edge"])
        entry["rollout"] = 100.0  # what an attacker would change
        info.custom["edge"] = json.dumps(entry)
    version = registry.bump_and_sign(["targets"], targets=md)["targets"]
    forged = Metadata.from_file(str(registry.metadata_path("targets", version)))
    forged.signatures.clear()
    forged.sign(CryptoSigner.generate_ed25519())  # an attacker's key: not in root
    forged.to_file(str(registry.metadata_path("targets", version)))
    assert_refused(rig, rig.check(), "bad_signature")


def test_replayed_old_timestamp_is_refused(make_rig, registry):
    rig = make_rig()
    ts = registry.dir / "repository" / "metadata" / "timestamp.json"
    old = ts.read_bytes()
    assert rig.check()["state"] == "idle"  # the device has now seen the current timestamp
    publish(registry, "1.1.0")
    rig.check()  # and the newer one
    publish(registry, "1.2.0")
    ts.write_bytes(old)  # a mirror replays the first, validly signed timestamp
    assert_refused_rollback = rig.check()
    assert assert_refused_rollback["state"] == "failed" and assert_refused_rollback["reason"] == "metadata_rollback"
    assert rig.serving == "1.1.0"


def test_expired_timestamp_is_refused(make_rig, registry):
    rig = make_rig()
    publish(registry, "1.1.0")
    past = Registry(registry.dir, clock=lambda: time.time() - 30 * 86400)  # the registry's clock, 30 days back
    past.refresh_timestamp()
    assert_refused(rig, rig.check(), "metadata_expired")


@pytest.mark.parametrize("role", ["targets", "snapshot"])
def test_mix_and_match_metadata_is_refused(make_rig, registry, role):
    rig = make_rig()
    publish(registry, "1.1.0")
    publish(registry, "1.2.0")
    md = registry.metadata_dir
    newest = max(int(p.name.split(".")[0]) for p in md.glob(f"*.{role}.json"))
    # serve an older, validly signed file under the name the newer timestamp/snapshot points at
    shutil.copy(md / f"{newest - 1}.{role}.json", md / f"{newest}.{role}.json")
    outcome = rig.check()
    assert outcome["state"] == "failed" and outcome["reason"] in ("metadata_rollback", "metadata_mismatch"), outcome
    assert role in outcome["detail"]
    assert rig.serving == "1.0.0"


def test_implausible_clock_does_not_refresh(make_rig, registry, tmp_path):
    rig = make_rig()
    rig.updater.clock = lambda: 86400.0 * 365  # 1971: a Pi that booted without network time
    publish(registry, "1.1.0")
    outcome = rig.check()
    assert outcome["reason"] == "clock_implausible" and "systemd-time-wait-sync" in outcome["detail"]
    assert not (rig.updater.root / "tuf" / "timestamp.json").exists()
    assert rig.serving == "1.0.0"


# ---- policy ---------------------------------------------------------------------------------------
def test_downgrade_needs_a_signed_rollback_instruction(make_rig, registry):
    rig = make_rig()
    publish(registry, "1.1.0")
    publish(registry, "1.2.0")
    assert rig.check()["state"] == "committed" and rig.serving == "1.2.0"
    # the registry now lists only older versions (properly signed): no instruction -> refused
    original = registry.load_role("targets")
    md = registry.load_role("targets")
    removed = [p for p in md.signed.targets if "/1.2.0/" in p]
    for p in removed:
        del md.signed.targets[p]
    registry.bump_and_sign(["targets", "snapshot", "timestamp"], targets=md)
    outcome = rig.check()
    assert outcome["state"] == "idle" and outcome["reason"] == "downgrade_refused", outcome
    assert rig.serving == "1.2.0"
    # a signed rollback instruction allows it
    registry.bump_and_sign(["targets"], targets=original)
    registry.rollback(DEMO_NAME, "1.1.0", reason="bad field reports")
    outcome = rig.check()
    assert outcome["state"] == "committed" and rig.serving == "1.1.0", outcome
    assert outcome["rollback_serial"] == 1
    assert rig.check()["state"] == "idle"  # applied once: not again, and 1.2.0 stays withdrawn


def test_rollout_bucketing_and_promotion(make_rig, registry):
    rig = make_rig(device_id="dev-rollout")
    bucket = rollout_bucket("dev-rollout", DEMO_NAME)
    publish(registry, "1.1.0", rollout=bucket)  # bucket < rollout is false: not this device yet
    outcome = rig.check()
    assert outcome["state"] == "idle" and outcome["reason"] == "not_in_rollout", outcome
    registry.promote(DEMO_NAME, "1.1.0", rollout=bucket + 1)
    assert rig.check()["state"] == "committed"


def test_canary_versions_reach_only_canary_devices(make_rig, registry):
    stable = make_rig(device_id="dev-stable")
    publish(registry, "1.1.0", channel="canary")
    assert stable.check()["state"] == "idle"
    stable.close()
    canary = make_rig(device_id="dev-canary", update={"channel": "canary"}, state_dir=stable.tmp / "canary-state")
    assert canary.check()["state"] == "committed"


def test_rollout_buckets_are_uniform_and_stable():
    ids = [f"pi-{i:04d}" for i in range(2000)]
    taken = sum(in_rollout(d, "m", 30) for d in ids)
    assert 520 <= taken <= 680  # 30% of 2000, +-4 sigma
    assert all(in_rollout(d, "m", 30) <= in_rollout(d, "m", 60) for d in ids)  # raising the rollout never drops a device
    assert rollout_bucket("pi-0001", "m") == rollout_bucket("pi-0001", "m")
    assert sum(rollout_bucket(d, "a") == rollout_bucket(d, "b") for d in ids) < 100  # models are bucketed independently


def _target(version: str, **kw: Any) -> tuple[str, ModelTarget]:
    t = ModelTarget(model="m", version=version, manifest={}, **kw)
    return f"models/m/{version}/model.tflite", t


def test_choose_policy_rules():
    base = dict(
        model="m",
        device_id="d",
        channel="stable",
        running_version="1.0",
        floor_version=None,
        failed=set(),
        rollback_serial_applied=0,
    )
    pick, _, _, _ = choose([_target("1.1"), _target("1.2"), _target("1.3", channel="canary")], **base)
    assert pick is not None and pick[1].version == "1.2"
    pick, _, _, _ = choose([_target("1.2", withdrawn=True), _target("1.1")], **base)
    assert pick is not None and pick[1].version == "1.1"
    pick, _, detail, _ = choose([_target("1.1", min_agent_version="99")], **base)
    assert pick is None and "needs agent 99" in detail
    pick, _, _, reason = choose([_target("0.9")], **base)
    assert pick is None and reason == "downgrade_refused"
    pick, _, detail, _ = choose([_target("1.1")], **{**base, "failed": {"m@1.1"}})
    assert pick is None and "failed here before" in detail
    pick, _, _, _ = choose([_target("1.1")], **{**base, "floor_version": "1.5"})  # never below what was committed
    assert pick is None
    rb = RollbackInstruction(model="m", to_version="0.9", serial=2)
    pick, allowed, _, _ = choose([_target("0.9"), ("rollback/m.json", rb)], **base)
    assert pick is not None and pick[1].version == "0.9" and allowed is rb
    pick, _, _, _ = choose([_target("0.9"), ("rollback/m.json", rb)], **{**base, "rollback_serial_applied": 2})
    assert pick is None  # each instruction is applied once


# ---- the candidate is proven before it serves; a bad trial rolls back ---------------------------------
def _broken_onnx(tmp_path: Path) -> tuple[Path, Path]:
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    model_path, manifest_path = demo_files("onnx-fp32")
    model = onnx.load(str(model_path))
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype.kind == "f" and arr.ndim == 4:  # conv weights: the model sees nothing any more
            init.CopyFrom(numpy_helper.from_array(arr * 0, init.name))
    out = tmp_path / "broken" / "model.onnx"
    out.parent.mkdir()
    onnx.save(model, str(out))
    manifest = json.loads(manifest_path.read_text())
    manifest.pop("sha256", None)
    (out.parent / "model.json").write_text(json.dumps(manifest))
    return out, out.parent / "model.json"


def test_a_model_that_fails_its_selftest_never_serves_and_is_not_retried(make_rig, registry, tmp_path):
    rig = make_rig()
    model, manifest = _broken_onnx(tmp_path)
    registry.publish(model, manifest, name=DEMO_NAME, version="1.1.0")
    outcome = rig.check()
    assert outcome["state"] == "failed" and outcome["reason"] == "low_recall", outcome
    assert "1.1.0" not in rig.recorder.versions_served() and rig.serving == "1.0.0"
    again = rig.check()
    assert again["state"] == "idle" and "failed here before" in again["detail"]


def test_a_failed_trial_swaps_back_and_keeps_the_old_pointer(make_rig, registry):
    rig = make_rig(update={"trial_frames": 100_000, "trial_timeout_s": 1.0})
    publish(registry, "1.1.0")
    t0 = time.monotonic()
    outcome = rig.check()
    assert outcome["state"] == "rolled_back" and outcome["reason"] == "trial_timeout", outcome
    assert rig.serving == "1.0.0"
    assert rig.recorder.versions_served()[-3:] == ["1.0.0", "1.1.0", "1.0.0"]
    assert rig.recorder.max_gap_ms(t0) < 500
    assert rig.updater.store.current() is None  # never committed
    assert rig.updater.journal.state.failed.get(f"{DEMO_NAME}@1.1.0") == "trial_timeout"


def test_pipeline_falls_back_when_the_new_model_fails_on_a_frame(make_rig, registry):
    rig = make_rig(update={"trial_frames": 100_000, "trial_timeout_s": 60})
    publish(registry, "1.1.0")
    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(rig.check()))
    worker.start()
    deadline = time.monotonic() + 30
    while rig.updater.state.state != "trial":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    rig.pipeline.detector.backend.close()  # the new model's runtime goes away mid-trial: its next frame fails
    worker.join(30)
    assert result["state"] == "rolled_back" and result["reason"] == "model_error", result
    rig.wait_results(10)
    assert rig.serving == "1.0.0"


# ---- transport faults and resources --------------------------------------------------------------------
class CutOnce(RangeRequestHandler):
    """Cuts the first download of a model after 100 kB (a dropped Wi-Fi link); records Range headers."""

    cut_done = False
    ranges: list[str | None] = []  # noqa: RUF012 - shared by the server's handler instances on purpose

    def copy_body(self, source: Any, length: int) -> None:
        if "/targets/models/" in self.path:
            CutOnce.ranges.append(self.headers.get("Range"))
            if not CutOnce.cut_done:
                CutOnce.cut_done = True
                self.wfile.write(source.read(100_000))
                self.wfile.flush()
                self.connection.shutdown(2)
                return
        super().copy_body(source, length)


def test_a_cut_download_resumes_with_range(make_rig, registry):
    publish(registry, "1.1.0")
    with start_server(registry.dir / "repository", handler_class=CutOnce) as server:
        rig = make_rig(url=server.url)
        outcome = rig.check()
    assert outcome["state"] == "committed", outcome
    assert CutOnce.ranges[0] is None and CutOnce.ranges[1] == "bytes=100000-"


@pytest.fixture
def small_disk(tmp_path: Path):
    import subprocess

    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs (a disk that can fill up)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


class Slow(RangeRequestHandler):
    started = threading.Event()

    def copy_body(self, source: Any, length: int) -> None:
        if "/targets/models/" not in self.path:
            return super().copy_body(source, length)
        while chunk := source.read(32_768):
            self.wfile.write(chunk)
            Slow.started.set()
            time.sleep(0.05)
        return None


def test_disk_full_during_download_is_reported_and_recovers(make_rig, registry, small_disk):
    publish(registry, "1.1.0")  # 324 kB
    with start_server(registry.dir / "repository", handler_class=Slow) as server:
        rig = make_rig(url=server.url, state_dir=small_disk / "state", update={"disk_margin_mb": 0})
        ballast = small_disk / "ballast"

        def fill() -> None:
            Slow.started.wait(20)
            with ballast.open("wb") as f:  # something else fills the disk mid-download
                try:
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
                except OSError:
                    pass
            with ballast.open("r+b") as f:  # and then gives a little back: the agent can record what happened
                f.truncate(max(0, ballast.stat().st_size - 256 * 1024))

        filler = threading.Thread(target=fill)
        filler.start()
        outcome = rig.check()
        filler.join()
        assert outcome["state"] == "failed" and outcome["reason"] == "disk_full", outcome
        assert rig.serving == "1.0.0"
        assert not list((rig.updater.root / "staging").rglob("*.part"))  # the space is given back
        ballast.unlink()
        assert rig.check()["state"] == "committed"  # and it recovers once there is room


def test_too_little_disk_is_refused_before_downloading(make_rig, registry, small_disk):
    publish(registry, "1.1.0", variant="tflite-fp32")  # 1.1 MB
    rig = make_rig(state_dir=small_disk / "state", update={"disk_margin_mb": 2})
    outcome = rig.check()
    assert outcome["state"] == "failed" and outcome["reason"] == "disk_full", outcome
    assert "downloading" not in rig.recorder.phases()


def test_check_validates_the_trusted_root(tmp_path, registry, capsys):
    from agent.cli import main

    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"update: {{enabled: true, url: 'http://127.0.0.1:9', trusted_root: '{tmp_path / 'missing.json'}'}}\n")
    assert main(["check", "-c", str(cfg)]) == 2
    assert "update.trusted_root" in capsys.readouterr().err
    cfg.write_text(f"update: {{enabled: true, url: 'http://127.0.0.1:9', trusted_root: '{registry.trusted_root_path}'}}\n")
    assert main(["check", "-c", str(cfg)]) == 0
