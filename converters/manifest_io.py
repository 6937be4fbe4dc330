"""Write the agent's manifest (agent.ModelManifest, the one schema) as model.json and inside the model."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from agent import ModelManifest
from agent.decoders import build_decoder
from agent.decoders.base import TensorInfo
from agent.errors import DecoderError, ModelError
from agent.manifest import EMBEDDED_ONNX_KEY, EMBEDDED_TFLITE_MEMBER, DecoderSpec, Thresholds, sha256_file
from agent.model_metadata import ModelMetadata, read_model_metadata
from converters.errors import OptionError

PIXELS_0_1 = ((0.0, 0.0, 0.0), (255.0, 255.0, 255.0))  # x = pixel / 255


def read_labels(path: Path) -> tuple[str, ...]:
    """Labels from a text file (one per line), a JSON list, a JSON {id: name} map, or COCO json categories."""
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OptionError(
            f"--labels {path}: cannot read it ({exc}); pass a text file with one label per line, a JSON list, or a COCO json"
        ) from None
    if data is not None:
        if isinstance(data, dict) and "categories" in data:
            cats = sorted(data["categories"], key=lambda c: c["id"])
            return tuple(c["name"] for c in cats)
        if isinstance(data, dict):
            return tuple(str(data[k]) for k in sorted(data, key=lambda k: int(k)))
        return tuple(str(x) for x in data)
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def provenance(source: str, kind: str, path_name: str, versions: dict[str, str], extra: dict[str, object]) -> dict[str, object]:
    src = Path(source)
    info: dict[str, object] = {
        "tool": "convert-to-tflite",
        "source": src.name if src.exists() else source,
        "source_kind": kind,
        "converter_path": path_name,
        "tools": versions,
        "created": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
    }
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


def publish(staged: Path, manifest: ModelManifest, out: Path) -> tuple[Path, ModelManifest]:
    """Finalize ``staged`` (in a work folder), then move it and its ``model.json`` into ``out``.

    Each file lands under a hidden temp name in ``out`` and is renamed into place, so a failure at any
    earlier step leaves no half-written model (or a manifest describing a model that is not there).
    """
    final = finalize(staged, manifest)
    _move((staged, staged.parent / "model.json"), out)  # the model first: a model.json never names a missing file
    return out / staged.name, final


def move_outputs(staging: Path, out: Path) -> Path:
    """Move every file of a finished ``staging`` folder into ``out`` (models first, ``model.json`` last)."""
    files = sorted((p for p in staging.iterdir() if p.is_file()), key=lambda p: p.name == "model.json")
    _move(files, out)
    return out


def _move(files: Sequence[Path], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for src in files:
        partial = out / f".{src.name}.partial"  # same folder as the target, so the rename is atomic
        try:
            shutil.copyfile(src, partial)
            os.replace(partial, out / src.name)
        finally:
            partial.unlink(missing_ok=True)


def onnx_input_is_dynamic(model: Path) -> bool:
    """True for an ONNX file whose image input has a symbolic height or width (e.g. Ultralytics ``dynamic=True``)."""
    if model.suffix.lower() != ".onnx" or not model.is_file():
        return False
    try:
        import onnx

        proto = onnx.load(str(model), load_external_data=False)
    except Exception:  # noqa: BLE001 - no onnx, or a corrupt file: loading the source reports either clearly
        return False
    dims = list(proto.graph.input[0].type.tensor_type.shape.dim) if proto.graph.input else []
    return any(not d.HasField("dim_value") or d.dim_value <= 0 for d in dims[1:])


def source_metadata(path: Path) -> ModelMetadata:
    """What the source model says about itself (labels, input size, normalization, task); empty when nothing.

    agent.model_metadata is the one reader (the agent uses it at load time too). Ultralytics files state no
    normalization: their convention (pixels / 255, which is also our default) is filled in and attributed.
    """
    if not path.is_file():
        return ModelMetadata()
    try:
        meta = read_model_metadata(path)
    except ModelError:
        return ModelMetadata()  # unreadable: loading the source reports it with the converter's wording
    if meta.family == "ultralytics" and meta.normalization is None:
        sources = {**meta.sources, "normalization": "Ultralytics convention (pixels / 255)"}
        meta = dataclasses.replace(meta, normalization=PIXELS_0_1, sources=sources)
    return meta


def check_task(meta: ModelMetadata, tool: str) -> None:
    """A source whose metadata names a task the agent cannot decode (segment, pose, obb) fails before any work."""
    if meta.task is not None and meta.task not in ("detect", "classify"):
        where = meta.sources.get("task", "the model's metadata")
        raise OptionError(
            f"the source model is a {meta.task!r} model ({where}); {tool} converts detect and classify models, "
            "the ones the agent can decode. Export the detect variant of the model."
        )


def check_labels(
    decoder: DecoderSpec,
    outputs: Sequence[tuple[TensorInfo, np.ndarray]],
    labels: Sequence[str],
    labels_from: str,
    input_size: tuple[int, int],
    model: str,
) -> None:
    """Bind the agent's own decoder to the outputs with ``len(labels)`` classes: a count mismatch is an OptionError."""
    try:
        build_decoder(decoder, [t for t, _ in outputs], input_size, len(labels), Thresholds())
    except DecoderError as exc:
        raise OptionError(
            f"{len(labels)} labels ({labels_from}) do not match the class count of {model}: {exc}\n"
            "Fix: pass --labels FILE listing exactly the model's classes, in class-id order."
        ) from None
