"""agent/ota/store.py: versioned model directories and the current/previous pointers, on real files."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from agent.errors import ModelFileError
from agent.ota.errors import StoreError
from agent.ota.store import Installed, ModelStore

NAME = "shapes"
FILE = "model.tflite"


def _manifest(version: str) -> dict[str, Any]:
    return {"name": NAME, "version": version, "file": FILE}


def _install(store: ModelStore, version: str, payload: bytes | None = None, name: str = NAME) -> Installed:
    data = payload if payload is not None else f"weights of {name} {version}".encode() * 100
    part = store.staging_part(name, version, FILE)
    part.write_bytes(data)
    return store.install(name, version, part, FILE, _manifest(version), hashlib.sha256(data).hexdigest())


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    clock = iter(range(1_800_000_000, 1_900_000_000))
    return ModelStore(tmp_path / "ota", clock=lambda: float(next(clock)))


def test_install_lays_out_the_version_dir_and_drops_the_part(store: ModelStore) -> None:
    part = store.staging_part(NAME, "1.0", FILE)
    assert part == store.root / "staging" / NAME / "1.0" / f"{FILE}.part" and part.parent.is_dir()
    inst = _install(store, "1.0")
    assert inst.path == store.root / "versions" / NAME / "1.0" / FILE and inst.path.is_absolute()
    assert inst.committed_at is None
    manifest = json.loads(inst.manifest_path.read_text())
    assert manifest["sha256"] == inst.sha256 == hashlib.sha256(inst.path.read_bytes()).hexdigest()
    assert manifest["version"] == "1.0"
    assert not part.exists() and not (store.root / "staging").exists()  # emptied staging dirs removed
    assert store.current() is None and store.previous() is None  # installing does not activate


def test_install_is_idempotent_for_the_same_bytes(store: ModelStore) -> None:
    first = _install(store, "1.0")
    mtime = first.path.stat().st_mtime_ns
    again = _install(store, "1.0")
    assert again == first
    assert first.path.stat().st_mtime_ns == mtime  # the installed file was not rewritten
    assert [i.version for i in store.versions(NAME)] == ["1.0"]


def test_install_replaces_a_damaged_copy(store: ModelStore) -> None:
    inst = _install(store, "1.0")
    inst.path.write_bytes(b"damaged")
    again = _install(store, "1.0")
    assert store.verify(again) == inst.path


def test_install_refuses_a_part_that_does_not_match(store: ModelStore) -> None:
    part = store.staging_part(NAME, "2.0", FILE)
    part.write_bytes(b"tampered")
    with pytest.raises(StoreError) as info:
        store.install(NAME, "2.0", part, FILE, _manifest("2.0"), "0" * 64)
    assert info.value.reason == "hash_mismatch" and str(part) in str(info.value)
    assert not part.exists()
    assert not (store.root / "versions" / NAME / "2.0" / FILE).exists()


@pytest.mark.parametrize(
    ("name", "version", "filename"),
    [("../etc", "1.0", FILE), (NAME, "1.0/..", FILE), (NAME, "abc", FILE), (NAME, "1.0", "../x"), (NAME, "1.0", "model.json")],
)
def test_path_components_are_checked(store: ModelStore, name: str, version: str, filename: str) -> None:
    with pytest.raises(StoreError) as info:
        store.staging_part(name, version, filename)
    assert info.value.reason == "bad_name"


def test_commit_moves_current_to_previous(store: ModelStore) -> None:
    v1, v2, v3 = (_install(store, v) for v in ("1.0", "2.0", "3.0"))
    c1 = store.commit(v1)
    assert c1.committed_at is not None
    assert store.current() == c1 and store.previous() is None
    store.commit(v2)
    assert (store.current() or v1).version == "2.0" and (store.previous() or v1).version == "1.0"
    store.commit(v3)
    assert [p.version for p in (store.current(), store.previous()) if p] == ["3.0", "2.0"]
    store.commit(v3)  # committing the current version again keeps previous
    assert (store.previous() or v1).version == "2.0"
    doc = json.loads((store.root / "current.json").read_text())
    assert doc["path"] == f"versions/{NAME}/3.0/{FILE}"  # relative to the store, as the spec says
    assert set(doc) == {"name", "version", "path", "sha256", "committed_at"}


def test_set_current_is_an_explicit_rollback(store: ModelStore) -> None:
    v1, v2 = _install(store, "1.0"), _install(store, "2.0")
    store.commit(v1)
    store.commit(v2)
    store.set_current(v1)
    assert (store.current() or v2).version == "1.0"
    assert (store.previous() or v2).version == "1.0"  # previous untouched: it already names 1.0


def test_crash_between_the_two_pointer_writes_leaves_a_valid_current(store: ModelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    v1, v2 = _install(store, "1.0"), _install(store, "2.0")
    store.commit(v1)
    real_replace = os.replace
    calls: list[str] = []

    def replace_then_crash(src: str, dst: str) -> None:
        calls.append(Path(dst).name)
        if len(calls) == 2:
            raise OSError(5, "power cut")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_crash)
    with pytest.raises(StoreError, match="power cut"):
        store.commit(v2)
    monkeypatch.setattr(os, "replace", real_replace)
    assert calls == ["previous.json", "current.json"]
    current = store.current()
    assert current is not None and current.version == "1.0"  # the commit did not happen; the old model is valid
    assert store.verify(current) == v1.path
    assert sorted(p.name for p in store.root.iterdir()) == ["current.json", "previous.json", "versions"]  # no temp left


def test_corrupt_or_dangling_pointers_read_as_missing(store: ModelStore, caplog: pytest.LogCaptureFixture) -> None:
    v1 = _install(store, "1.0")
    store.commit(v1)
    (store.root / "current.json").write_text('{"name": "shapes", "vers')
    (store.root / "previous.json").write_text(
        json.dumps({"name": NAME, "version": "0.9", "path": "versions/shapes/0.9/model.tflite", "sha256": "a" * 64,
                    "committed_at": 1.0})
    )  # fmt: skip
    with caplog.at_level(logging.ERROR, logger="agent.ota.store"):
        assert store.current() is None
        assert store.previous() is None
    text = caplog.text
    assert "current.json is unusable" in text and "does not exist" in text


def test_pointer_outside_the_store_is_refused(store: ModelStore, tmp_path: Path) -> None:
    outside = tmp_path / "evil.tflite"
    outside.write_bytes(b"x")
    store.root.mkdir(parents=True, exist_ok=True)
    (store.root / "current.json").write_text(
        json.dumps({"name": NAME, "version": "1.0", "path": "../evil.tflite", "sha256": "a" * 64, "committed_at": 1.0})
    )
    assert store.current() is None


def test_verify_detects_a_flipped_byte(store: ModelStore) -> None:
    inst = _install(store, "1.0")
    assert store.verify(inst) == inst.path
    data = bytearray(inst.path.read_bytes())
    data[len(data) // 2] ^= 0x01
    inst.path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError) as info:
        store.verify(inst)
    msg = str(info.value)
    assert str(inst.path) in msg and inst.sha256 in msg and hashlib.sha256(bytes(data)).hexdigest() in msg


def test_verify_of_a_missing_file(store: ModelStore) -> None:
    inst = _install(store, "1.0")
    inst.path.unlink()
    with pytest.raises(ModelFileError, match="cannot be read"):
        store.verify(inst)


def test_versions_lists_complete_installs_in_version_order(store: ModelStore) -> None:
    for v in ("1.10", "1.9", "2"):
        _install(store, v)
    half = store.root / "versions" / NAME / "3.0"
    half.mkdir(parents=True)
    (half / "model.json").write_text("{}")  # crash between model.json and the model rename
    assert [i.version for i in store.versions(NAME)] == ["1.9", "1.10", "2"]
    assert store.versions("other") == []


def test_collect_keeps_newest_current_previous_and_in_progress(store: ModelStore) -> None:
    installed = {v: _install(store, v) for v in ("1.0", "2.0", "3.0", "4.0", "5.0")}
    store.commit(installed["1.0"])
    store.commit(installed["2.0"])  # current 2.0, previous 1.0: older than the newest, still kept
    _install(store, "1.0", name="other")
    for v in ("6.0", "7.0"):
        store.staging_part(NAME, v, FILE).write_bytes(b"partial")
    deleted = store.collect(keep=1, in_progress=(NAME, "7.0"))
    base = store.root / "versions" / NAME
    assert sorted(deleted) == sorted([base / "3.0", base / "4.0", store.root / "staging" / NAME / "6.0"])
    assert [i.version for i in store.versions(NAME)] == ["1.0", "2.0", "5.0"]
    assert [i.version for i in store.versions("other")] == ["1.0"]
    assert (store.root / "staging" / NAME / "7.0" / f"{FILE}.part").exists()
    assert sorted(store.collect(keep=0)) == sorted(
        [base / "5.0", store.root / "versions" / "other" / "1.0", store.root / "staging" / NAME / "7.0"]
    )
    assert not (store.root / "staging").exists()
    assert store.verify(store.current() or installed["5.0"]) == installed["2.0"].path
    with pytest.raises(ValueError):
        store.collect(keep=-1)


def test_collect_protects_an_installed_candidate_on_trial(store: ModelStore) -> None:
    store.commit(_install(store, "1.0"))
    _install(store, "2.0")  # staged, on trial: not a pointer yet
    assert store.collect(keep=0, in_progress=(NAME, "2.0")) == []
    assert [i.version for i in store.versions(NAME)] == ["1.0", "2.0"]


def test_unwritable_store_names_the_pointer(tmp_path: Path) -> None:
    from tests.ota._store_helpers import remount_readonly, small_tmpfs

    with small_tmpfs(tmp_path / "small", "1m") as small:
        store = ModelStore(small / "ota")
        inst = _install(store, "1.0")
        remount_readonly(small)
        with pytest.raises(StoreError) as info:
            store.commit(inst)
        assert "current.json" in str(info.value) and "read-only" in str(info.value).lower()
