"""Shared by tests/ota/test_registry*.py: a small model file with a valid manifest, and a python-tuf device client."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tuf.ngclient import Updater

from agent.demo import demo_model_path

MODEL_NAME = "shapes"


def make_model(directory: Path, version: str, *, payload: bytes | None = None, with_sha: bool = True) -> tuple[Path, Path]:
    """A fake model file plus a real manifest (the demo's, renamed) that describes it; returns (model, manifest)."""
    directory.mkdir(parents=True, exist_ok=True)
    data = payload if payload is not None else f"model {MODEL_NAME} {version} ".encode() * 5000
    model = directory / "model.tflite"
    model.write_bytes(data)
    manifest: dict[str, Any] = json.loads((demo_model_path("tflite-int8") / "model.json").read_text())
    manifest.update(name=MODEL_NAME, version=version, file="model.tflite")
    manifest["sha256"] = hashlib.sha256(data).hexdigest() if with_sha else None
    if not with_sha:
        del manifest["sha256"]
    manifest_path = directory / "model.json"
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return model, manifest_path


def device(registry_dir: Path, url: str, work: Path) -> Updater:
    """A python-tuf client as a device runs it: trusts 1.root.json, caches metadata under ``work``."""
    (work / "metadata").mkdir(parents=True, exist_ok=True)
    (work / "downloads").mkdir(parents=True, exist_ok=True)
    root = (registry_dir / "repository" / "metadata" / "1.root.json").read_bytes()
    return Updater(
        str(work / "metadata"),
        f"{url}/metadata/",
        str(work / "downloads"),
        f"{url}/targets/",
        bootstrap=root,
    )
