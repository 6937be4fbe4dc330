"""edge-registry rotate: root renewal, online and root key rotation, as a device installed with 1.root.json sees them
(real HTTP server, python-tuf's ngclient), and a rotation cut short by a crash."""

from __future__ import annotations

import datetime
import json
import stat
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.exceptions import RepositoryError
from tuf.api.metadata import Root

from agent.ota.httpserver import start_server
from agent.ota.registry_cli import main
from agent.ota.repository import Registry
from agent.ota.tuf_repository import ROTATION_MARKER, RegistryInputError
from tests.ota._registry_helpers import MODEL_NAME, device, make_model


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    assert main(["init", str(tmp_path / "registry"), "--root-keys", "2", "--threshold", "2"]) == 0
    return Registry(tmp_path / "registry")


def publish(reg: Registry, tmp_path: Path, version: str) -> None:
    model, manifest = make_model(tmp_path / "build" / version, version)
    reg.publish(model, manifest)


def root_of(reg: Registry) -> Root:
    return reg.load_role("root").signed


def test_rotating_online_and_root_keys_devices_follow_the_chain(reg: Registry, tmp_path: Path) -> None:
    publish(reg, tmp_path, "1.0.0")
    old_targets_key = (reg.dir / "keys" / "targets.pem").read_bytes()
    old_root = root_of(reg)
    with start_server(reg.repository_dir) as server:
        # a device installed with 1.root.json, up to date before the rotation (its cache holds what the old keys signed)
        device(reg.dir, server.url, tmp_path / "stale-device").refresh()

        argv = ["--registry", str(reg.dir), "rotate", "--online", "--root-keys", "3", "--threshold", "2"]
        assert main(argv) == 0
        new_root = root_of(reg)
        assert new_root.version == 2 and new_root.roles["root"].threshold == 2
        assert not set(new_root.roles["root"].keyids) & set(old_root.roles["root"].keyids)
        for role in ("targets", "snapshot", "timestamp"):
            assert not set(new_root.roles[role].keyids) & set(old_root.roles[role].keyids), role
        assert (reg.dir / "keys" / "targets.pem").read_bytes() != old_targets_key
        assert len(list((reg.dir / "root-keys").glob("*.pem"))) == 3
        assert len(list((reg.dir / "root-keys" / "retired").glob("*.pem"))) == 2
        assert stat.S_IMODE((reg.dir / "keys" / "targets.pem").stat().st_mode) == 0o600
        assert not (reg.dir / ROTATION_MARKER).exists()
        settings = json.loads((reg.dir / "registry.json").read_text())
        assert (settings["root_keys"], settings["root_threshold"]) == (3, 2)

        reg = Registry(reg.dir)  # a fresh open loads the new keys (the CLI above was another process' worth)
        publish(reg, tmp_path, "1.1.0")  # signed with the new targets key
        for name in ("fresh-device", "stale-device"):  # each check is a new ngclient session, as on the device
            client = device(reg.dir, server.url, tmp_path / name)
            client.refresh()  # walks 1.root -> 2.root, then accepts what the new keys signed
            assert client.get_targetinfo(f"models/{MODEL_NAME}/1.1.0/model.tflite") is not None, name

        # the retired targets key (say it leaked) signs nothing a device accepts any more
        targets = reg.load_role("targets")
        targets.signed.version += 1
        targets.signatures.clear()
        targets.sign(_signer(old_targets_key))
        (reg.metadata_dir / f"{targets.signed.version}.targets.json").write_bytes(targets.to_bytes())
        snapshot = reg.load_role("snapshot")  # snapshot and timestamp properly signed: only targets is forged
        snapshot.signed.meta["targets.json"].version = targets.signed.version
        snapshot.signed.version += 1
        reg.sign_and_write(snapshot, "snapshot")
        timestamp = reg.load_role("timestamp")
        timestamp.signed.version += 1
        timestamp.signed.snapshot_meta.version = snapshot.signed.version
        reg.sign_and_write(timestamp, "timestamp")
        with pytest.raises(RepositoryError, match="targets"):
            device(reg.dir, server.url, tmp_path / "third-device").refresh()

        # a root signed only by the retired root keys is refused too
        forged = reg.load_role("root")
        forged.signed.version += 1
        forged.signatures.clear()
        for path in sorted((reg.dir / "root-keys" / "retired").glob("*.pem")):
            forged.sign(_signer(path.read_bytes()), append=True)
        (reg.metadata_dir / f"{forged.signed.version}.root.json").write_bytes(forged.to_bytes())
        with pytest.raises(RepositoryError, match="root"):
            device(reg.dir, server.url, tmp_path / "fourth-device").refresh()


def test_renewing_root_keeps_the_keys_and_moves_expiry(reg: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = root_of(reg)
    assert main(["--registry", str(reg.dir), "rotate"]) == 0
    assert "renewed expiry, same keys" in capsys.readouterr().out
    after = root_of(reg)
    assert after.version == before.version + 1 and after.keys == before.keys
    assert after.expires >= before.expires
    assert after.expires > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=360)
    with start_server(reg.repository_dir) as server:
        client = device(reg.dir, server.url, tmp_path / "device")
        client.refresh()
        assert json.loads((tmp_path / "device" / "metadata" / "root.json").read_bytes())["signed"]["version"] == 2


def test_rotate_refusals(reg: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--registry", str(reg.dir), "rotate"]
    assert main([*base, "--threshold", "2"]) == 2
    assert "--threshold needs --root-keys" in capsys.readouterr().err
    assert main([*base, "--root-keys", "1", "--threshold", "2"]) == 2
    assert "threshold 2 does not fit 1" in capsys.readouterr().err
    with pytest.raises(RegistryInputError, match="online roles"):
        reg.rotate(["root"])
    offline = tmp_path / "offline-root-keys"  # the root keys were moved offline, as the README says to
    (reg.dir / "root-keys").rename(offline)
    assert main(base) == 1
    assert "root keys" in capsys.readouterr().err
    assert root_of(Registry(reg.dir)).version == 1


def test_a_rotation_cut_short_is_finished_on_open(reg: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash after the new root is written but before the keys are moved and the roles re-signed: the next
    open of the registry moves the keys into place and re-signs what the new root no longer accepts."""
    publish(reg, tmp_path, "1.0.0")

    def crash(self: Path, target: Path) -> None:
        raise SystemExit("killed")  # the first rename after 2.root.json is written

    monkeypatch.setattr(Path, "rename", crash)
    with pytest.raises(SystemExit):
        reg.rotate(["targets", "timestamp"])
    monkeypatch.undo()
    assert (reg.metadata_dir / "2.root.json").is_file() and (reg.dir / ROTATION_MARKER).exists()
    assert list((reg.dir / "keys").glob("*.pem.next"))

    reopened = Registry(reg.dir)
    assert not (reg.dir / ROTATION_MARKER).exists() and not list((reg.dir / "keys").glob("*.next"))
    publish(reopened, tmp_path, "1.1.0")
    with start_server(reg.repository_dir) as server:
        client = device(reg.dir, server.url, tmp_path / "device")
        client.refresh()
        assert client.get_targetinfo(f"models/{MODEL_NAME}/1.1.0/model.tflite") is not None


def test_a_rotation_that_never_wrote_its_root_is_discarded(
    reg: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agent.ota.rotation as rotation

    real_write = rotation.atomic_write_bytes

    def crash_on_root(path: Path, data: bytes) -> None:
        if path.name.endswith(".root.json"):
            raise SystemExit("killed")
        real_write(path, data)

    monkeypatch.setattr(rotation, "atomic_write_bytes", crash_on_root)
    keys_before = (reg.dir / "keys" / "targets.pem").read_bytes()
    with pytest.raises(SystemExit):
        reg.rotate(["targets"])
    monkeypatch.undo()
    reopened = Registry(reg.dir)
    assert not list((reg.dir / "keys").glob("*.next")) and not (reg.dir / ROTATION_MARKER).exists()
    assert (reg.dir / "keys" / "targets.pem").read_bytes() == keys_before
    assert root_of(reopened).version == 1
    publish(reopened, tmp_path, "1.0.0")  # still signs with the keys its root lists


def _signer(pem: bytes) -> CryptoSigner:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    return CryptoSigner(load_pem_private_key(pem, None))

