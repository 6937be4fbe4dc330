"""Write the agent's manifest (agent.ModelManifest, the one schema) as model.json and inside the model."""

from __future__ import annotations

import datetime as dt
import json
import zipfile
from pathlib import Path

from agent import ModelManifest
from agent.manifest import EMBEDDED_ONNX_KEY, EMBEDDED_TFLITE_MEMBER, sha256_file


def read_labels(path: Path) -> tuple[str, ...]:
    """Labels from a text file (one per line), a JSON list, a JSON {id: name} map, or COCO json categories."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        data = json.loads(text)
        if isinstance(data, dict) and "categories" in data:
            cats = sorted(data["categories"], key=lambda c: c["id"])
            return tuple(c["name"] for c in cats)
        if isinstance(data, dict):
            return tuple(str(data[k]) for k in sorted(data, key=lambda k: int(k)))
        return tuple(str(x) for x in data)
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def provenance(source: str, kind: str, path_name: str, versions: dict[str, str], extra: dict[str, object]) -> dict[str, object]:
    src = Path(source)
    info: dict[str, object] = {"tool": "convert-to-tflite", "source": src.name if src.exists() else source,
                               "source_kind": kind, "converter_path": path_name, "tools": versions,
                               "created": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()}
    if src.is_file():
        info["source_sha256"] = sha256_file(src)
    return {**info, **extra}


def embed(model_path: Path, manifest: ModelManifest) -> None:
    """Embed the manifest (without sha256: a file cannot hold its own hash) in the model file."""
    text = manifest.model_copy(update={"sha256": None}).to_json()
    if model_path.suffix == ".tflite":
        # an appended zip (Ultralytics' convention): the interpreter ignores bytes after the flatbuffer
        with zipfile.ZipFile(model_path, "a", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(EMBEDDED_TFLITE_MEMBER, text)
        return
    import onnx

    proto = onnx.load(str(model_path))
    for prop in list(proto.metadata_props):
        if prop.key == EMBEDDED_ONNX_KEY:
            proto.metadata_props.remove(prop)
    entry = proto.metadata_props.add()
    entry.key, entry.value = EMBEDDED_ONNX_KEY, text
    onnx.save(proto, str(model_path))


def finalize(model_path: Path, manifest: ModelManifest) -> ModelManifest:
    """Embed, then write the sidecar ``model.json`` with the final file's sha256. Returns the sidecar manifest."""
    embed(model_path, manifest)
    final = manifest.model_copy(update={"file": model_path.name, "sha256": sha256_file(model_path)})
    (model_path.parent / "model.json").write_text(final.to_json() + "\n", encoding="utf-8")
    return final
