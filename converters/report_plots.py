"""The pictures of a ``--validate`` report (PNG) and the HTML page that shows them beside report.md/report.json.

Per-class PR curves, a confusion matrix at the manifest's score threshold, the source-vs-converted score
scatter of matched detections, and the invoke-latency histogram. Pure functions of the report data and the
two runs; matplotlib (the ``convert`` extra) draws them.
"""

from __future__ import annotations

import html
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

MATCH_IOU = 0.5  # a detection "is" a ground-truth box / the other model's box from this overlap on
SCATTER_MIN_SCORE = 0.05


def _iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _xyxy(bbox: list[float]) -> list[float]:
    return [bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]]


def confusion_matrix(gt: dict[str, Any], detections: list[dict[str, Any]], num_classes: int, score: float) -> np.ndarray:
    """``[C+1, C+1]`` counts: rows the true class (last row: background = a false positive), columns the
    predicted class (last column: missed). Greedy by score, IoU >= MATCH_IOU, any class."""
    matrix = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    truths: dict[int, list[tuple[int, list[float]]]] = defaultdict(list)
    for ann in gt["annotations"]:
        truths[int(ann["image_id"])].append((int(ann["category_id"]) - 1, _xyxy(ann["bbox"])))
    found: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for det in detections:
        if det["score"] >= score:
            found[int(det["image_id"])].append(det)
    for image in gt["images"]:
        image_id = int(image["id"])
        used: set[int] = set()
        for det in sorted(found[image_id], key=lambda d: -d["score"]):
            box = _xyxy(det["bbox"])
            best, best_iou = -1, MATCH_IOU
            for j, (_, truth) in enumerate(truths[image_id]):
                overlap = _iou(box, truth)
                if j not in used and overlap >= best_iou:
                    best, best_iou = j, overlap
            predicted = int(det["category_id"]) - 1
            if best < 0:
                matrix[num_classes, predicted] += 1
            else:
                used.add(best)
                matrix[truths[image_id][best][0], predicted] += 1
        for j, (cls, _) in enumerate(truths[image_id]):
            if j not in used:
                matrix[cls, num_classes] += 1
    return matrix


def score_pairs(source: list[dict[str, Any]], converted: list[dict[str, Any]]) -> np.ndarray:
    """``[N, 2]`` (source score, converted score) of detections both models made (same image and class, IoU >= 0.5)."""
    by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for det in converted:
        if det["score"] >= SCATTER_MIN_SCORE:
            by_image[int(det["image_id"])].append(det)
    pairs = []
    used: set[int] = set()
    for det in sorted((d for d in source if d["score"] >= SCATTER_MIN_SCORE), key=lambda d: -d["score"]):
        box = _xyxy(det["bbox"])
        best, best_iou = None, MATCH_IOU
        for other in by_image[int(det["image_id"])]:
            overlap = _iou(box, _xyxy(other["bbox"]))
            if id(other) not in used and other["category_id"] == det["category_id"] and overlap >= best_iou:
                best, best_iou = other, overlap
        if best is not None:
            used.add(id(best))
            pairs.append((det["score"], best["score"]))
    return np.asarray(pairs, np.float64).reshape(-1, 2)


def draw(
    data: dict[str, Any],
    runs: dict[str, Any],
    curves: dict[str, Any],
    gt: dict[str, Any] | None,
    labels: tuple[str, ...],
    op_score: float,
    out: Path,
) -> list[str]:
    """Write the PNGs into ``out``; return their file names (none without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed: report without plots (pip install 'edge-agent[convert]')")
        return []
    written: list[str] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        written.append(name)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, color in (("source", "#888"), ("converted", "#2a7")):
        ax.hist(
            runs[name].invoke_ms, bins=30, alpha=0.6, color=color, label=f"{name} (p50 {data[name]['latency_p50_ms']:.2f} ms)"
        )
    ax.set_xlabel("invoke time per image (ms, this host, 1 thread)")
    ax.set_ylabel("images")
    ax.set_title("latency")
    ax.legend()
    save(fig, "latency.png")

    if curves and all(c is not None for c in curves.values()):
        recall = np.linspace(0, 1, 101)
        classes = curves["converted"].shape[2]
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for k in range(classes):
            for name, style in (("source", "--"), ("converted", "-")):
                p = curves[name][0, :, k, 0, -1]  # IoU 0.5, all areas, most detections
                if (p >= 0).any():
                    label = labels[k] if k < len(labels) else f"class{k}"
                    ax.plot(
                        recall,
                        np.where(p < 0, np.nan, p),
                        style,
                        color=f"C{k % 10}",
                        label=f"{label} ({name})" if classes <= 8 or name == "converted" else None,
                    )
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title("PR curves @ IoU 0.5 (dashed: source, solid: converted)")
        ax.legend(fontsize=7, ncol=2)
        save(fig, "pr_curves.png")

    if gt is not None:
        matrix = confusion_matrix(gt, runs["converted"].detections, len(labels), op_score)
        names = [*labels, "background"]
        fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(names), 1.0 + 0.6 * len(names)))
        ax.imshow(matrix, cmap="Blues")
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(names)), [*labels, "missed"], rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted (converted model)")
        ax.set_ylabel("true")
        ax.set_title(f"confusion matrix at score >= {op_score}")
        save(fig, "confusion_matrix.png")

    pairs = score_pairs(runs["source"].detections, runs["converted"].detections)
    if len(pairs):
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        ax.scatter(pairs[:, 0], pairs[:, 1], s=4, alpha=0.5)
        ax.plot([0, 1], [0, 1], color="#c33", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("source score")
        ax.set_ylabel("converted score")
        ax.set_title(f"matched detections ({len(pairs)}), scores >= {SCATTER_MIN_SCORE}")
        save(fig, "score_scatter.png")
    return written


def html_page(data: dict[str, Any], markdown: str, plots: list[str]) -> str:
    """A self-contained page: the report's numbers as a pre-formatted block and the plots (relative links)."""
    title = f"Conversion report: {html.escape(Path(data['model']).name)} ({html.escape(str(data['quantization']))})"
    images = "\n".join(
        f'<figure><img src="{html.escape(p)}" alt="{html.escape(p)}"><figcaption>{html.escape(p)}</figcaption></figure>'
        for p in plots
    )
    return (
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{title}</title><style>'
        "body{font-family:sans-serif;margin:2em;max-width:70em}pre{background:#f4f4f4;padding:1em;overflow:auto}"
        "figure{display:inline-block;margin:0 1em 1em 0}</style></head><body>\n"
        f"<h1>{title}</h1>\n<pre>{html.escape(markdown)}</pre>\n{images}\n</body></html>\n"
    )
