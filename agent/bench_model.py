"""``edge-agent bench-model MODEL``: raw invoke fps, pipeline fps and their ratio for any model file, in one run.

The same paired-round machinery as ``edge-agent bench`` (agent/bench.py), on a model a user
brings instead of the demo variants; it loads through the one loader every path uses, so a
dynamic-axis or bare model benchmarks exactly as it would run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

from agent.bare_manifest import parse_input_size
from agent.cli_conventions import add_json_options


def bench_model(
    path: Path,
    threads: int | None = None,
    frames: int = 300,
    rounds: int = 3,
    min_seconds: float = 1.0,
    input_size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """One bench row for ``path`` (see :func:`agent.bench.bench_detector`)."""
    from agent.backends.base import BackendOptions, default_threads
    from agent.bench import bench_detector
    from agent.detector import load_detector

    threads = threads or default_threads()
    detector = load_detector(path, BackendOptions(threads=threads), input_size=input_size)
    try:
        row = bench_detector(detector, detector.path.name, detector.backend.type_key, threads, frames, rounds, min_seconds)
    finally:
        detector.close()
    row["input_shape"] = list(detector.backend.input.shape)
    return row


def run_bench_model(args: argparse.Namespace) -> int:
    """``edge-agent bench-model``: the table, or with --json the row as JSON on stdout; --output FILE writes it."""
    from agent.cli_conventions import run_with_json_output

    return run_with_json_output(args, lambda path: _bench_and_print(args, path))


def _bench_and_print(args: argparse.Namespace, json_path: Path | None) -> int:
    from rich.console import Console
    from rich.table import Table

    from agent.bench import COLUMNS, TARGET_RATIO

    try:
        size = parse_input_size(args.input_size)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    console = Console() if sys.stdout.isatty() else Console(width=160)
    with console.status(f"benchmarking {args.model}"):
        row = bench_model(Path(args.model), args.threads, args.frames, args.rounds, args.min_seconds, size)
    table = Table(
        title=f"edge-agent bench-model · {platform.machine()} · {row['threads']} thread(s) · {row['rounds']} paired rounds "
        f"· target pipeline/raw >= {TARGET_RATIO}"
    )
    for key, header in COLUMNS:
        table.add_column(header, justify="left" if key in ("backend", "model") else "right")
    low, high = row["pipeline_vs_raw_range"]
    cells = {**row, "pipeline_vs_raw": f"{row['pipeline_vs_raw']} ({low}-{high})"}
    table.add_row(*(str(cells[key]) for key, _ in COLUMNS))
    console.print(table)
    if json_path is not None:
        json_path.write_text(json.dumps({"machine": platform.machine(), "rows": [row]}, indent=2))
        console.print(f"wrote {json_path}")
    return 0


def register(sub: Any) -> None:
    """Add ``bench-model`` to the ``edge-agent`` sub-commands."""
    bench = sub.add_parser("bench-model", help="raw vs pipeline fps of any model file, in one run")
    bench.add_argument("model", help="model file (.tflite/.onnx) or a directory holding one")
    bench.add_argument("--input-size", metavar="WxH", help="size for dynamic input axes (like config model.input_size)")
    bench.add_argument("--frames", type=int, default=300, help="frames per measurement (at least)")
    bench.add_argument("--min-seconds", type=float, default=1.0, help="and at least this long per measurement")
    bench.add_argument("--rounds", type=int, default=3, help="paired raw/pipeline rounds; medians are reported")
    bench.add_argument("--threads", type=int, help="inference threads (default: cores - 1)")
    add_json_options(bench, "the row")
    bench.set_defaults(func=run_bench_model)
