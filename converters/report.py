"""``--validate``: source vs converted on the same images -> report.json, report.md and PNG plots."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.detector import load_detector
from converters import evaluation as ev
from converters import report_plots
from converters.calibration import image_files
from converters.errors import AccuracyGateError


@dataclass(slots=True)
class Report:
    data: dict[str, Any]
    folder: Path

    def summary(self) -> str:
        d = self.data
        lines = [f"validation on {d['images']} images ({'COCO labels' if d['labelled'] else 'no labels: self-consistency'})"]
        for key in ("source", "converted"):
            m = d[key]
            maps = f"mAP50 {m['mAP50']:.4f}  mAP50-95 {m['mAP50_95']:.4f}  " if d["labelled"] else ""
            lines.append(f"  {key:9s} {maps}p50 {m['latency_p50_ms']:.2f} ms  {m['size_bytes'] / 1024:.0f} KiB")
        for name, m in d.get("others", {}).items():
            maps = f"mAP50 {m['mAP50']:.4f}  mAP50-95 {m['mAP50_95']:.4f}  " if d["labelled"] else ""
            lines.append(f"  {name} {maps}p50 {m['latency_p50_ms']:.2f} ms  {m['size_bytes'] / 1024:.0f} KiB")
        lines.append(
            f"  detection agreement {d['agreement']:.3f}; outputs: "
            + ", ".join(f"#{o['output']} max|d| {o['max_abs']:.3g} cos {o['cosine']:.5f}" for o in d["outputs"])
        )
        if d["labelled"]:
            lines.append(f"  mAP50-95 drop {d['map_drop_points']:+.2f} points")
        lines.append(f"  report: {self.folder / 'report.md'} (plots: {self.folder / 'report.html'})")
        return "\n".join(lines)

    def check_gate(self, max_drop: float | None) -> None:
        if max_drop is None:
            return
        if not self.data["labelled"]:
            raise AccuracyGateError("--max-map-drop needs labels (COCO json or YOLO txt) in the --validate folder")
        drop = self.data["map_drop_points"]
        if drop > max_drop:
            raise AccuracyGateError(
                f"mAP@0.5:0.95 dropped {drop:.2f} points (limit {max_drop}): "
                f"{self.data['source']['mAP50_95']:.4f} -> {self.data['converted']['mAP50_95']:.4f}"
            )


def validate_conversion(result: Any, folder: Path, out: Path, compare_with: tuple[Path, ...] = ()) -> Report:
    """Compare ``result.source`` with ``result.model_path`` on the images of ``folder``; write the report files.

    ``compare_with``: other conversions of the same model (e.g. Ultralytics' own int8 TFLite export), run through
    the agent on the same images and reported beside ours (size, mAP, invoke time).
    """
    manifest = result.manifest
    files = image_files(folder, "validation")
    gt = ev.load_ground_truth(folder, manifest.labels)
    by_name = {img["file_name"]: img["id"] for img in gt["images"]} if gt else {}
    if gt:
        files = [f for f in files if f.name in by_name]
    ids = [by_name.get(f.name, i + 1) for i, f in enumerate(files)]
    converted = load_detector(result.model_path)
    shapes = [tuple(o.shape) for o in converted.backend.outputs]
    source = ev.source_detector(result.source, manifest, shapes)
    op_score = manifest.thresholds.score
    from converters.convert import step

    with step(f"validating: source model on {len(files)} images"):
        src_run = ev.run_model(source, files, ids, op_score)
    with step(f"validating: converted model on {len(files)} images"):
        conv_run = ev.run_model(converted, files, ids, op_score)
    data: dict[str, Any] = {
        "images": len(files),
        "labelled": gt is not None,
        "model": str(result.model_path),
        "quantization": (manifest.quantization or {}).get("mode", "int8"),
        "outputs": ev.output_errors(src_run.raw, conv_run.raw),
        "agreement": ev.agreement(src_run, conv_run),
    }
    curves = {}
    source_size = _size(result.source)
    for key, run, size in (("source", src_run, source_size), ("converted", conv_run, result.model_path.stat().st_size)):
        entry: dict[str, Any] = {"latency_p50_ms": float(np.median(run.invoke_ms)), "size_bytes": size}
        if gt:
            m50, m5095, precision = ev.coco_eval(gt, run.detections)
            entry.update({"mAP50": m50, "mAP50_95": m5095})
            curves[key] = precision
        data[key] = entry
    data["others"] = {}
    for other in compare_with:
        detector = load_detector(other)
        with step(f"validating: {other.name} on {len(files)} images"):
            run = ev.run_model(detector, files, ids, op_score)
        entry = {"latency_p50_ms": float(np.median(run.invoke_ms)), "size_bytes": other.stat().st_size, "path": str(other)}
        if gt:
            entry["mAP50"], entry["mAP50_95"], _ = ev.coco_eval(gt, run.detections)
        data["others"][other.name] = entry
        detector.close()
    if gt:
        data["map_drop_points"] = 100.0 * (data["source"]["mAP50_95"] - data["converted"]["mAP50_95"])
        data["map50_drop_points"] = 100.0 * (data["source"]["mAP50"] - data["converted"]["mAP50"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(data, indent=2) + "\n")
    runs = {"source": src_run, "converted": conv_run}
    plots = report_plots.draw(data, runs, curves, gt, manifest.labels, op_score, out)
    markdown = _markdown(data, plots)
    (out / "report.md").write_text(markdown)
    (out / "report.html").write_text(report_plots.html_page(data, markdown, plots))
    return Report(data, out)


def _size(source: Any) -> int:
    path = Path(str(source.handle)) if isinstance(source.handle, str | Path) else None
    if path is not None and path.is_file():
        return path.stat().st_size
    try:
        return int(sum(p.numel() * p.element_size() for p in source.handle.parameters()))
    except (AttributeError, TypeError):
        return 0


def _markdown(data: dict[str, Any], plots: list[str]) -> str:
    rows = ["| model | mAP@0.5 | mAP@0.5:0.95 | invoke p50 (ms) | size (KiB) |", "|---|---|---|---|---|"]
    for key in ("source", "converted"):
        m = data[key]
        rows.append(
            f"| {key} | {m.get('mAP50', float('nan')):.4f} | {m.get('mAP50_95', float('nan')):.4f} | "
            f"{m['latency_p50_ms']:.2f} | {m['size_bytes'] / 1024:.0f} |"
        )
    for name, m in data.get("others", {}).items():
        rows.append(
            f"| {name} | {m.get('mAP50', float('nan')):.4f} | {m.get('mAP50_95', float('nan')):.4f} | "
            f"{m['latency_p50_ms']:.2f} | {m['size_bytes'] / 1024:.0f} |"
        )
    outs = ["| output | max abs error | cosine |", "|---|---|---|"] + [
        f"| {o['output']} | {o['max_abs']:.4g} | {o['cosine']:.6f} |" for o in data["outputs"]
    ]
    text = [
        f"# Conversion report: {Path(data['model']).name} ({data['quantization']})",
        "",
        f"{data['images']} images, {'COCO labels' if data['labelled'] else 'no labels (self-consistency only)'}.",
        "Latency is this host's, not a Pi's.",
        "",
        *rows,
        "",
        *outs,
        "",
        f"Detection agreement at the manifest's score threshold: {data['agreement']:.3f}",
        "",
    ]
    if data["labelled"]:
        text += [
            f"mAP@0.5:0.95 drop: {data['map_drop_points']:+.2f} points; mAP@0.5 drop: {data['map50_drop_points']:+.2f} points",
            "",
        ]
    text += [f"![{p}]({p})" for p in plots]
    return "\n".join(text) + "\n"
