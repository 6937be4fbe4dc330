"""edge-registry end to end: a registry made by the CLI, served over real HTTP, read by python-tuf's ngclient."""

from __future__ import annotations

import hashlib
import json
import stat
import time
from pathlib import Path

import pytest
from tuf.api.exceptions import ExpiredMetadataError, RepositoryError
from tuf.api.metadata import Metadata

from agent.ota.errors import PolicyError
from agent.ota.httpserver import start_server
from agent.ota.registry_cli import main
from agent.ota.repository import Registry
from agent.ota.targets import ModelTarget, RollbackInstruction, read_custom
from agent.ota.tuf_repository import RegistryInputError
from tests.ota._registry_helpers import MODEL_NAME, device, make_model

DAY = 86400


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    assert main(["init", str(tmp_path / "registry")]) == 0
    return Registry(tmp_path / "registry")


def publish(reg: Registry, tmp_path: Path, version: str, **kw: object) -> ModelTarget:
    model, manifest = make_model(tmp_path / "build" / version, version)
    return reg.publish(model, manifest, **kw)  # type: ignore[arg-type]


def test_device_verifies_and_downloads_a_model_published_with_the_cli(reg: Registry, tmp_path: Path) -> None:
    model, manifest = make_model(tmp_path / "build", "1.2.0")
    argv = ["--registry", str(reg.dir), "publish", str(model), "--manifest", str(manifest), "--channel", "canary"]
    assert main([*argv, "--rollout", "12.5", "--min-agent-version", "0.3"]) == 0
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    # consistent snapshot: the file is stored under its hash-prefixed name, exactly where ngclient will look
    assert (reg.targets_dir / "models" / MODEL_NAME / "1.2.0" / f"{sha}.model.tflite").read_bytes() == model.read_bytes()

    with start_server(reg.repository_dir) as server:
        client = device(reg.dir, server.url, tmp_path / "device")
        client.refresh()
        info = client.get_targetinfo(f"models/{MODEL_NAME}/1.2.0/model.tflite")
        assert info is not None and info.hashes == {"sha256": sha} and info.length == model.stat().st_size
        entry = read_custom(info.custom)
        assert isinstance(entry, ModelTarget)
        assert (entry.channel, entry.rollout, entry.min_agent_version, entry.withdrawn) == ("canary", 12.5, "0.3", False)
        # the signed manifest round-trips exactly, floats included (canonical JSON has none: see targets.to_custom)
        expected = json.loads(manifest.read_text())
        assert entry.manifest == expected
        assert entry.manifest["input"]["normalization"]["std"] == [255.0, 255.0, 255.0]
        downloaded = Path(client.download_target(info))
    assert downloaded.read_bytes() == model.read_bytes()


def test_publish_fills_in_the_hash_and_aligns_the_manifest_with_what_was_published(reg: Registry, tmp_path: Path) -> None:
    model, manifest = make_model(tmp_path / "build", "1.0.0", with_sha=False)
    target = reg.publish(model, manifest, name="renamed", version="2.0")
    assert target.manifest["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert (target.manifest["name"], target.manifest["version"], target.manifest["file"]) == ("renamed", "2.0", "model.tflite")
    assert target.published_at == pytest.approx(time.time(), abs=60)
    assert [(t.model, t.version) for t in reg.models()] == [("renamed", "2.0")]


def test_publish_refuses_versions_that_do_not_increase(reg: Registry, tmp_path: Path) -> None:
    publish(reg, tmp_path, "1.2.0")
    for lower_or_equal in ("1.2", "1.1.9", "0.9"):
        with pytest.raises(PolicyError) as err:
            publish(reg, tmp_path, lower_or_equal)
        assert lower_or_equal in str(err.value) and "1.2.0" in str(err.value)
        assert err.value.reason == "version_not_increasing"
    model, manifest = make_model(tmp_path / "cli", "1.0")
    assert main(["--registry", str(reg.dir), "publish", str(model), "--manifest", str(manifest)]) == 2
    publish(reg, tmp_path, "1.10")  # numeric, not lexical: 1.10 > 1.2.0
    assert [t.version for t in reg.models(MODEL_NAME)] == ["1.2.0", "1.10"]


def test_publish_refuses_a_manifest_whose_hash_is_not_the_files(
    reg: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, manifest = make_model(tmp_path / "build", "1.0.0")
    model.write_bytes(b"a different model")
    with pytest.raises(RegistryInputError) as err:
        reg.publish(model, manifest)
    assert str(model) in str(err.value) and str(manifest) in str(err.value) and err.value.reason == "hash_mismatch"
    assert not any(p.is_file() for p in reg.targets_dir.rglob("*")), "a refused publish leaves no file behind"
    assert reg.load_role("targets").signed.version == 1, "and signs nothing"
    assert main(["--registry", str(reg.dir), "publish", str(model), "--manifest", str(manifest)]) == 2
    assert str(model) in capsys.readouterr().err


def test_publish_rejects_bad_input_with_exit_code_2(reg: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, manifest = make_model(tmp_path / "build", "1.0.0")
    base = ["--registry", str(reg.dir), "publish"]
    assert main([*base, str(tmp_path / "missing.tflite"), "--manifest", str(manifest)]) == 2
    assert "missing.tflite" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": "x"')
    assert main([*base, str(model), "--manifest", str(broken)]) == 2
    assert "broken.json" in capsys.readouterr().err
    assert main([*base, str(model), "--manifest", str(manifest), "--model-version", "v2"]) == 2
    assert "'v2'" in capsys.readouterr().err
    assert main([*base, str(model), "--manifest", str(manifest), "--rollout", "150"]) == 2
    assert main([*base, str(model), "--manifest", str(manifest), "--channel", "beta"]) == 2
    assert main([*base, str(model), "--manifest", str(manifest), "--name", "../etc"]) == 2
    assert reg.models() == []


def test_promote_changes_what_devices_see(reg: Registry, tmp_path: Path) -> None:
    publish(reg, tmp_path, "1.0.0", channel="canary", rollout=5)
    with start_server(reg.repository_dir) as server:
        client = device(reg.dir, server.url, tmp_path / "device")
        client.refresh()
        before = read_custom(client.get_targetinfo(f"models/{MODEL_NAME}/1.0.0/model.tflite").custom)  # type: ignore[union-attr]
        assert main(["--registry", str(reg.dir), "promote", MODEL_NAME, "1.0", "--channel", "stable", "--rollout", "50"]) == 0
        client = device(reg.dir, server.url, tmp_path / "device")  # same cache: an update, not a first fetch
        client.refresh()
        after = read_custom(client.get_targetinfo(f"models/{MODEL_NAME}/1.0.0/model.tflite").custom)  # type: ignore[union-attr]
    assert isinstance(before, ModelTarget) and isinstance(after, ModelTarget)
    assert (before.channel, before.rollout) == ("canary", 5)
    assert (after.channel, after.rollout) == ("stable", 50)
    assert after.published_at == before.published_at and after.manifest == before.manifest
    assert main(["--registry", str(reg.dir), "promote", MODEL_NAME, "9.0", "--rollout", "10"]) == 2
    assert main(["--registry", str(reg.dir), "promote", MODEL_NAME, "1.0.0"]) == 2  # nothing to change


def test_rollback_signs_an_instruction_and_withdraws_newer_versions(reg: Registry, tmp_path: Path) -> None:
    for v in ("1.0", "1.1", "1.2"):
        publish(reg, tmp_path, v)
    assert main(["--registry", str(reg.dir), "rollback", MODEL_NAME, "--to", "1.0", "--reason", "false positives"]) == 0
    assert {t.version: t.withdrawn for t in reg.models()} == {"1.0": False, "1.1": True, "1.2": True}

    with start_server(reg.repository_dir) as server:
        client = device(reg.dir, server.url, tmp_path / "device")
        client.refresh()
        info = client.get_targetinfo(f"rollback/{MODEL_NAME}.json")
        assert info is not None
        signed = read_custom(info.custom)
        content = Path(client.download_target(info)).read_bytes()
    assert isinstance(signed, RollbackInstruction)
    assert (signed.to_version, signed.serial, signed.reason) == ("1.0", 1, "false positives")
    assert RollbackInstruction.model_validate_json(content) == signed  # the file says what the signature says

    # nothing newer than 1.0 is live now; a later rollback needs a newer live version and bumps the serial
    with pytest.raises(PolicyError, match=r"not lower than the highest live version 1\.0"):
        reg.rollback(MODEL_NAME, "1.0")
    with pytest.raises(PolicyError, match="withdrawn"):
        reg.rollback(MODEL_NAME, "1.1")
    with pytest.raises(RegistryInputError, match=r"no published version 0\.5 \(published: 1\.0, 1\.1, 1\.2\)"):
        reg.rollback(MODEL_NAME, "0.5")
    with pytest.raises(PolicyError):  # withdrawn versions still count: versions never repeat
        publish(reg, tmp_path, "1.2")
    publish(reg, tmp_path, "1.3")
    second = reg.rollback(MODEL_NAME, "1.0.0")
    assert second.serial == 2 and second.to_version == "1.0"
    assert [t.version for t in reg.models() if t.withdrawn] == ["1.1", "1.2", "1.3"]
    # every instruction file stays on disk (hash-prefixed), the metadata names the latest
    assert len(list((reg.targets_dir / "rollback").iterdir())) == 2
    assert main(["--registry", str(reg.dir), "rollback", MODEL_NAME, "--to", "1.1"]) == 2


def test_a_timestamp_signed_30_days_ago_is_rejected_as_expired(reg: Registry, tmp_path: Path) -> None:
    publish(reg, tmp_path, "1.0")
    Registry(reg.dir, clock=lambda: time.time() - 30 * DAY).refresh_timestamp()
    with start_server(reg.repository_dir) as server:
        with pytest.raises(ExpiredMetadataError):
            device(reg.dir, server.url, tmp_path / "device").refresh()
        reg.refresh_timestamp()  # what cron does: fresh again
        device(reg.dir, server.url, tmp_path / "device").refresh()
    assert reg.status()["roles"]["timestamp"]["expired"] is False


def test_metadata_edited_without_the_keys_is_rejected(reg: Registry, tmp_path: Path) -> None:
    publish(reg, tmp_path, "1.0", rollout=10)
    md = reg.load_role("targets")
    path = reg.metadata_path("targets", md.signed.version)
    path.write_text(path.read_text().replace("rollout\\\":10.0", "rollout\\\":100.0"))
    assert "100.0" in path.read_text(), "the tampering must actually change the signed bytes"
    with start_server(reg.repository_dir) as server, pytest.raises(RepositoryError):
        device(reg.dir, server.url, tmp_path / "device").refresh()


def test_refresh_timestamp_resigns_snapshot_and_targets_close_to_expiry(reg: Registry, tmp_path: Path) -> None:
    past = Registry(reg.dir, clock=lambda: time.time() - 6 * DAY)  # snapshot (7 days) then has 1 day left
    past.refresh_timestamp(snapshot=True)
    versions = {role: reg.load_role(role).signed.version for role in ("targets", "snapshot", "timestamp")}
    assert reg.refresh_timestamp() == {"snapshot": versions["snapshot"] + 1, "timestamp": versions["timestamp"] + 1}
    assert reg.refresh_timestamp(expires_in_days=3) == {"timestamp": versions["timestamp"] + 2}
    expires = reg.load_role("timestamp").signed.expires.timestamp()
    assert expires == pytest.approx(time.time() + 3 * DAY, abs=60)
    near_targets_expiry = Registry(reg.dir, clock=lambda: time.time() + 89 * DAY)  # targets (90 days) has 1 day left
    assert set(near_targets_expiry.refresh_timestamp()) == {"targets", "snapshot", "timestamp"}
    assert main(["--registry", str(reg.dir), "refresh-timestamp", "--snapshot"]) == 0


def test_versioned_metadata_is_kept_and_the_layout_matches_the_spec(reg: Registry, tmp_path: Path) -> None:
    publish(reg, tmp_path, "1.0")
    publish(reg, tmp_path, "1.1")
    names = sorted(p.name for p in reg.metadata_dir.iterdir())
    assert names == ["1.root.json", *(f"{n}.{r}.json" for n in (1, 2, 3) for r in ("snapshot", "targets")), "timestamp.json"]
    for role in ("targets", "snapshot", "timestamp"):
        key = reg.dir / "keys" / f"{role}.pem"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((reg.dir / "root-keys" / "root-1.pem").stat().st_mode) == 0o600
    root = Metadata.from_file(str(reg.trusted_root_path))
    assert root.signed.consistent_snapshot is True
    assert {k.keytype for k in root.signed.keys.values()} == {"ed25519"}
    assert "PRIVATE" not in "".join(p.read_text(errors="ignore") for p in reg.repository_dir.rglob("*.json"))


def test_init_options_refusals_and_opening_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "r"
    assert main(["init", str(d), "--root-keys", "3", "--threshold", "2", "--expires-timestamp", "2", "--expires-root", "30"]) == 0
    root = Registry(d).load_role("root").signed
    assert root.roles["root"].threshold == 2 and len(root.roles["root"].keyids) == 3
    assert len(list((d / "root-keys").glob("*.pem"))) == 3
    ts = Registry(d).load_role("timestamp").signed.expires.timestamp()
    assert ts == pytest.approx(time.time() + 2 * DAY, abs=60)
    capsys.readouterr()

    assert main(["init", str(d)]) == 2
    assert "already holds a registry" in capsys.readouterr().err
    assert main(["init", str(tmp_path / "x"), "--root-keys", "1", "--threshold", "2"]) == 2
    assert main(["--registry", str(tmp_path / "nowhere"), "status"]) == 2
    assert f"{tmp_path / 'nowhere'} is not a model registry" in capsys.readouterr().err
    (d / "keys" / "snapshot.pem").unlink()
    assert main(["--registry", str(d), "status"]) == 1
    assert "snapshot.pem" in capsys.readouterr().err
    assert main([]) == 2


def test_status_json_and_table(
    reg: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(reg, tmp_path, "1.0", channel="canary", rollout=20)
    publish(reg, tmp_path, "2.0")
    reg.rollback(MODEL_NAME, "1.0", reason="regression")
    capsys.readouterr()
    monkeypatch.setenv("EDGE_REGISTRY_DIR", str(reg.dir))  # the env var stands in for --registry
    assert main(["status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert [(v["version"], v["channel"], v["rollout"], v["withdrawn"]) for v in status["models"][MODEL_NAME]] == [
        ("1.0", "canary", 20, False),
        ("2.0", "stable", 100, True),
    ]
    assert status["rollbacks"][MODEL_NAME]["serial"] == 1
    assert status["roles"]["targets"]["version"] == 4 and status["roles"]["root"]["expired"] is False
    assert status["roles"]["timestamp"]["expiring_soon"] is True  # a 1-day timestamp always is: that is why cron
    assert main(["status"]) == 0
    table = capsys.readouterr().out
    assert "withdrawn" in table and "regression" in table and "timestamp" in table
