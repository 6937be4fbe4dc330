"""``edge-agent models inspect``: what a model file is, what it expects, how it will be decoded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agent.backends import open_backend
from agent.backends.base import BackendOptions
from agent.decoders.base import TensorInfo
from agent.detector import manifest_from_model, resolve_model_file
from agent.manifest import find_manifest, sha256_file


def _tensor(t: TensorInfo) -> dict[str, Any]:
    out: dict[str, Any] = {"name": t.name, "shape": list(t.shape), "dtype": str(t.dtype)}
    if t.quantized:
        out["quantization"] = {"scale": t.scale, "zero_point": t.zero_point}
    return out


def describe_model(path: Path) -> dict[str, Any]:
    """Tensors, manifest (found or inferred) and file facts of a model, as plain data."""
    model_file = resolve_model_file(path)
    backend = open_backend(model_file, BackendOptions(threads=1))
    try:
        manifest, origin = find_manifest(model_file)
        if manifest is None:
            manifest, origin = manifest_from_model(backend, model_file), "inferred from tensor names and shapes"
        return {
            "file": str(model_file),
            "size_bytes": model_file.stat().st_size,
            "sha256": sha256_file(model_file),
            "backend": backend.type_key,
            "inputs": [_tensor(backend.input)],
            "outputs": [_tensor(t) for t in backend.outputs],
            "manifest_origin": origin,
            "manifest": json.loads(manifest.model_dump_json(exclude_none=True)),
        }
    finally:
        backend.close()


def inspect_model(path: Path, as_json: bool = False) -> int:
    info = describe_model(path)
    if as_json:
        print(json.dumps(info, indent=2))
        return 0
    console = Console()
    m = info["manifest"]
    console.print(
        f"[b]{info['file']}[/b]  {info['size_bytes'] / 1024:.0f} KiB  sha256 {info['sha256'][:16]}…  ({info['backend']})"
    )
    table = Table("", "name", "shape", "dtype", "quantization")
    for kind, tensors in (("input", info["inputs"]), ("output", info["outputs"])):
        for t in tensors:
            q = t.get("quantization")
            table.add_row(
                kind, t["name"], str(t["shape"]), t["dtype"], f"scale {q['scale']:.6g}, zp {q['zero_point']}" if q else ""
            )
    console.print(table)
    inp = m["input"]
    console.print(f"manifest: {info['manifest_origin']}")
    console.print(
        f"  {m['name']} {m['version']} · task {m.get('task', 'detect')} · decoder {m['decoder']['type']} · "
        f"{len(m['labels'])} labels ({', '.join(m['labels'][:6])}{'…' if len(m['labels']) > 6 else ''})"
    )
    console.print(
        f"  input {inp['width']}x{inp['height']} {inp.get('layout', 'NHWC')} {inp.get('dtype', 'float32')} "
        f"{inp.get('color', 'RGB')} resize {inp.get('resize', 'letterbox')}"
    )
    return 0
