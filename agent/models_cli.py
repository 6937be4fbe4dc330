"""``edge-agent models inspect``: what a model file is, what it says about itself, how it will run.

The tensors (as the file declares them, symbolic dims included) and the model's own metadata are
shown even when the model cannot be loaded for inference; then what is missing and which config
key or manifest field supplies it. Each manifest field says where it came from.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agent.backends import backend_for
from agent.backends.base import BackendOptions, DeclaredTensor
from agent.decoders.base import TensorInfo
from agent.detector import load_detector, resolve_model_file
from agent.errors import DecoderError, ModelError
from agent.manifest import find_manifest, sha256_file
from agent.model_metadata import ModelMetadata, read_model_metadata

EXIT_MODEL = 3  # the exit code `edge-agent` uses for every model error


def _declared(t: DeclaredTensor) -> dict[str, Any]:
    out: dict[str, Any] = {"name": t.name, "shape": list(t.dims), "dtype": t.dtype}
    if t.scale and t.dtype in ("int8", "uint8"):
        out["quantization"] = {"scale": t.scale, "zero_point": t.zero_point}
    return out


def _tensor(t: TensorInfo) -> dict[str, Any]:
    out: dict[str, Any] = {"name": t.name, "shape": list(t.shape), "dtype": str(t.dtype)}
    if t.quantized:
        out["quantization"] = {"scale": t.scale, "zero_point": t.zero_point}
    return out


def _metadata(meta: ModelMetadata) -> dict[str, Any]:
    data = {k: v for k, v in asdict(meta).items() if v not in (None, {}, ())}
    if meta.labels is not None:
        data["labels"] = {"count": len(meta.labels), "first": list(meta.labels[:10])}
    return data


def _missing(exc: ModelError, inputs: list[DeclaredTensor], size_known: bool) -> list[dict[str, str]]:
    """What the loader lacks, and where a user supplies it."""
    missing = []
    if any(t.dynamic for t in inputs) and not size_known and "dynamic size" in str(exc):
        missing.append(
            {
                "what": "input size (the input's spatial axes are dynamic)",
                "supply": "config model.input_size ([width, height] or one number), or input.width/input.height in a "
                "model.json manifest beside the model (or --input-size here)",
            }
        )
    if isinstance(exc, DecoderError):
        missing.append(
            {
                "what": "how to decode the outputs (and their labels)",
                "supply": "decoder.type and labels in a model.json manifest beside the model",
            }
        )
    return missing


def describe_model(path: Path, input_size: tuple[int, int] | None = None) -> dict[str, Any]:
    """Tensors, metadata, manifest (with each field's source) and file facts, as plain data.

    ``loadable`` is False (with ``error`` and ``missing``) when the model cannot run as given.
    Raises ModelFileError only for a file whose tensors cannot be read at all.
    """
    model_file = resolve_model_file(path)
    cls = backend_for(model_file)
    info: dict[str, Any] = {
        "file": str(model_file),
        "size_bytes": model_file.stat().st_size,
        "sha256": sha256_file(model_file),
        "backend": cls.type_key,
    }
    inputs, outputs = cls.declared_tensors(model_file)
    info["inputs"] = [_declared(t) for t in inputs]
    info["outputs"] = [_declared(t) for t in outputs]
    try:
        metadata = read_model_metadata(model_file)
        info["metadata"] = _metadata(metadata)
    except ModelError as exc:
        metadata = ModelMetadata()
        info["metadata"] = {"error": str(exc)}
    try:
        manifest, origin = find_manifest(model_file)
    except ModelError as exc:
        manifest, origin = None, None
        info["manifest_error"] = str(exc)
    try:
        detector = load_detector(model_file, BackendOptions(threads=1), input_size=input_size)
    except ModelError as exc:
        size_known = input_size is not None or manifest is not None or metadata.input_size is not None
        info.update(loadable=False, error=str(exc), missing=_missing(exc, inputs, size_known))
        if manifest is not None:
            info["manifest_origin"] = origin
            info["manifest"] = json.loads(manifest.model_dump_json(exclude_none=True))
        return info
    try:
        info.update(
            loadable=True,
            runs_as={"inputs": [_tensor(detector.backend.input)], "outputs": [_tensor(t) for t in detector.backend.outputs]},
            manifest_origin=detector.manifest_origin,
            manifest=json.loads(detector.manifest.model_dump_json(exclude_none=True)),
            sources=detector.sources,
        )
    finally:
        detector.close()
    return info


def _shape(shape: list[Any]) -> str:
    return "[" + ", ".join(str(d) if d != -1 else "?" for d in shape) + "]"


def inspect_model(path: Path, as_json: bool = False, input_size: tuple[int, int] | None = None) -> int:
    """Print what :func:`describe_model` finds; exit code 3 when the model cannot be loaded for inference."""
    info = describe_model(path, input_size)
    code = 0 if info["loadable"] else EXIT_MODEL
    if as_json:
        print(json.dumps(info, indent=2))
        return code
    console = Console()
    console.print(
        f"[b]{info['file']}[/b]  {info['size_bytes'] / 1024:.0f} KiB  sha256 {info['sha256'][:16]}…  ({info['backend']})"
    )
    table = Table("", "name", "shape (as declared)", "dtype", "quantization")
    for kind, tensors in (("input", info["inputs"]), ("output", info["outputs"])):
        for t in tensors:
            q = t.get("quantization")
            table.add_row(
                kind,
                escape(t["name"]),
                escape(_shape(t["shape"])),
                t["dtype"],
                f"scale {q['scale']:.6g}, zp {q['zero_point']}" if q else "",
            )
    console.print(table)
    meta = info["metadata"]
    if meta:
        console.print("model metadata:", markup=False)
        for key, value in meta.items():
            if key not in ("sources", "extra"):
                source = meta.get("sources", {}).get(key)
                console.print(f"  {key}: {value}" + (f"  (from {source})" if source else ""), markup=False)
        for key, value in meta.get("extra", {}).items():
            console.print(f"  {key}: {str(value)[:120]}", markup=False)
    else:
        console.print("model metadata: none found", markup=False)
    if not info["loadable"]:
        console.print(f"[red]cannot load for inference:[/red] {escape(info['error'])}", highlight=False)
        for item in info["missing"]:
            console.print(f"  missing: {item['what']}\n    supply it with: {item['supply']}", markup=False)
        return code
    m, sources = info["manifest"], info["sources"]
    runs = info["runs_as"]
    console.print(
        f"runs as: input {_shape(runs['inputs'][0]['shape'])}, outputs {[o['shape'] for o in runs['outputs']]}", markup=False
    )
    console.print(f"manifest: {info['manifest_origin']}", markup=False)
    inp = m["input"]
    console.print(
        f"  {m['name']} {m['version']} · task {m.get('task', 'detect')} · decoder {m['decoder']['type']} · "
        f"{len(m['labels'])} labels ({', '.join(m['labels'][:6])}{'…' if len(m['labels']) > 6 else ''})",
        markup=False,
    )
    norm = inp.get("normalization", {})
    console.print(
        f"  input {inp['width']}x{inp['height']} {inp.get('layout', 'NHWC')} {inp.get('dtype', 'float32')} "
        f"{inp.get('color', 'RGB')} resize {inp.get('resize', 'letterbox')} pad {inp.get('pad_value', 114)} "
        f"mean {norm.get('mean')} std {norm.get('std')}",
        markup=False,
    )
    if sources:
        console.print("field sources:")
        for key, value in sources.items():
            console.print(f"  {key}: {value}", markup=False)
    return code
