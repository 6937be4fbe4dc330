"""Build the bundled demo detector: synthetic scenes -> small CNN trained on the CPU -> 4 exports -> mAP gate.

    python scripts/build_demo_model.py [--out models/demo] [--epochs N] [--train-images N] [--quick]

Workstation only (needs ``pip install -e '.[demo-build]'``, best in its own virtualenv: it brings torch
and litert-torch). Nothing is downloaded at run time: the data comes from ``agent.sources.scenes``.

Steps: render 640x480 scenes and letterbox them to 192x192 like the agent; train ``DemoDetector``
(``_demo_train.py``); convert it with the project's own converters, the tools users run: float and
int8 TFLite with ``convert_to_tflite`` (the ``_demo_train:export_architecture`` factory plus the trained
state dict; uint8 input, int8 output, detection head float), float ONNX with torch.onnx (the converters
read ONNX but do not write it) and QDQ int8 ONNX with ``quantize_onnx``; evaluate every file with
LiteRT / ONNX Runtime on held-out scenes (``_demo_eval.py``); and, only if every variant reaches
mAP@0.5 >= 0.8, replace the artifacts under ``--out``:

    <out>/{tflite-fp32,tflite-int8,onnx-fp32,onnx-int8}/model.{tflite,onnx} + model.json
    <out>/eval.json                     per-variant mAP, size, latency (of the build host, not a Pi)
    <out>/selftest/scene_NN.jpg + labels.json   held-out frames with COCO ground truth

Why 192x192: 192 keeps the smallest scene objects (~11 px after letterboxing) above a stride-8 cell
and costs ~56% of 256's compute on the Pi while mAP@0.5 stays ~0.97. The manifest embedded in each
model has no sha256 (a file cannot hold its own hash); the sidecar ``model.json`` has the hash of the
final file. Evaluation runs on the converters' output; each final file gets the converter's manifest
re-embedded with the build's provenance (training, evaluation) and is checked to give bit-identical
outputs, so the numbers hold for it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from _demo_data import SceneSet
    from _demo_eval import EvalResult, OnnxRunner, TFLiteRunner
    from _demo_train import DemoDetector
    from rich.console import Console

    from agent.manifest import ModelManifest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # LiteRT's C++ info logs would bury the progress bars
REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `agent` without an install (a plain checkout)
    sys.path.insert(0, str(REPO_ROOT))

INPUT_SIZE = 192
SEED = 20251124
TRAIN_THREADS = 2  # the committed artifacts were trained with 2 threads; results depend on it slightly
BATCH_SIZE, LEARNING_RATE = 32, 2e-3
EVAL_IMAGES, EVAL_SEED = 500, SEED + 1000  # a different seed: held out from training
CALIBRATION_IMAGES = 200
SELFTEST_IMAGES, SELFTEST_BUDGET = 16, 280_000  # bytes; the self-test set ships with the agent
GATE_MAP50 = 0.8
SCORE_THRESHOLD, IOU_THRESHOLD, MAX_DETECTIONS = 0.45, 0.45, 50
MODEL_NAME, MODEL_VERSION = "demo-shapes", "1.0.0"
FACTORY = "_demo_train:export_architecture"  # the module:callable convert_to_tflite loads (+ the trained weights)
ONNX_OPSET = 18  # the torch.onnx (dynamo) exporter's native opset; >= 17 as the agent requires
ONNX_INPUT, ONNX_OUTPUT = "images", "output0"
MAX_IR_VERSION = 9
VARIANTS = ("tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8")
REQUIRED = {  # import name -> distribution, all from the demo-build extra (or the base install)
    "torch": "torch", "litert_torch": "litert-torch", "ai_edge_quantizer": "ai-edge-quantizer",
    "ai_edge_litert": "ai-edge-litert", "onnx": "onnx", "onnxscript": "onnxscript",
    "onnxruntime": "onnxruntime", "faster_coco_eval": "faster-coco-eval", "cv2": "opencv-python-headless",
    "pydantic": "pydantic", "rich": "rich",
}


@dataclass(frozen=True, slots=True)
class BuildConfig:
    out: Path
    epochs: int
    train_images: int
    eval_images: int
    calibration_images: int
    gate: bool


def parse_args(argv: list[str] | None = None) -> BuildConfig:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=None, help="output folder (default models/demo; a temp dir with --quick)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 14; 1 with --quick)")
    p.add_argument("--train-images", type=int, default=None, help="training scenes (default 6000; 256 with --quick)")
    p.add_argument("--quick", action="store_true", help="smoke test: tiny training, small eval, no mAP gate")
    a = p.parse_args(argv)
    if a.quick:
        out = a.out or Path(tempfile.mkdtemp(prefix="demo-model-quick-"))
        return BuildConfig(out, a.epochs or 1, a.train_images or 256, 64, 32, gate=False)
    return BuildConfig(a.out or REPO_ROOT / "models" / "demo", a.epochs or 14, a.train_images or 6000,
                       EVAL_IMAGES, CALIBRATION_IMAGES, gate=True)


def check_toolchain() -> None:
    """Exit with the install command when a build dependency is missing (they are imported lazily)."""
    missing = [dist for mod, dist in REQUIRED.items() if importlib.util.find_spec(mod) is None]
    if missing:
        sys.exit(f"error: missing build dependencies: {', '.join(missing)}.\n"
                 "Install the demo-build extra (ideally in its own virtualenv):  pip install -e '.[demo-build]'")
    torch_version = importlib.metadata.version("torch")
    if not torch_version.startswith("2.13.0"):
        print(f"warning: torch {torch_version} is not the pinned 2.13.0; the result will differ from the committed one")


def tool_versions() -> dict[str, str]:
    names = ["torch", "litert-torch", "litert-converter", "ai-edge-quantizer", "ai-edge-litert", "onnx",
             "onnxscript", "onnxruntime", "faster-coco-eval", "numpy", "opencv-python-headless"]
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    check_toolchain()
    t_start = time.perf_counter()
    import torch
    from _demo_data import generate_scenes
    from _demo_train import fused_for_export, train_detector
    from rich.console import Console

    from agent.sources.scenes import CLASSES

    console = Console()
    torch.set_num_threads(TRAIN_THREADS)
    console.rule(f"[bold]demo detector build[/] -> {cfg.out}")
    train = generate_scenes(cfg.train_images, SEED, INPUT_SIZE, "rendering training scenes")
    held_out = generate_scenes(cfg.eval_images, EVAL_SEED, INPUT_SIZE, "rendering held-out scenes",
                               keep_frames=SELFTEST_IMAGES)
    t_data = time.perf_counter() - t_start
    result = train_detector(train, INPUT_SIZE, len(CLASSES), cfg.epochs, BATCH_SIZE, LEARNING_RATE, SEED)
    console.print(f"trained {cfg.epochs} epochs on {len(train)} scenes in {result.seconds:.0f} s, "
                  f"final loss {result.final_loss:.4f}")
    model = fused_for_export(result.model)
    # calibration: evenly spread training scenes (the training distribution, no held-out leakage)
    calibration = train.images[:: max(1, len(train) // cfg.calibration_images)][: cfg.calibration_images]

    staging = Path(tempfile.mkdtemp(prefix="demo-model-build-"))
    raw, converted = export_all(model, calibration, staging, console)
    selftest = _write_selftest(held_out, staging)
    evals, selftests = evaluate_all(raw, held_out, selftest)
    training = {"seed": SEED, "train_images": len(train), "epochs": cfg.epochs, "batch_size": BATCH_SIZE,
                "learning_rate": LEARNING_RATE, "threads": TRAIN_THREADS, "final_train_loss": round(result.final_loss, 5),
                "epoch_losses": [round(v, 4) for v in result.epoch_losses], "train_seconds": round(result.seconds, 1)}
    finals = finalize_all(raw, converted, evals, training, cfg, staging)
    verify_final(raw, finals, held_out)
    passed = all(e.map50 >= GATE_MAP50 for e in evals.values())
    timings = {"data_seconds": round(t_data, 1), "train_seconds": round(result.seconds, 1),
               "total_seconds": round(time.perf_counter() - t_start, 1)}
    write_eval_json(staging, finals, evals, selftests, cfg, passed, timings)
    print_table(console, finals, evals, selftests)
    if cfg.gate and not passed:
        console.print(f"[bold red]gate failed[/]: every variant needs mAP@0.5 >= {GATE_MAP50}. "
                      f"Nothing under {cfg.out} was changed; the rejected build is in {staging}")
        return 1
    publish(staging, cfg.out)
    console.print(f"[bold green]done[/] in {timings['total_seconds']:.0f} s -> {cfg.out}"
                  + ("" if cfg.gate else " (quick run: mAP gate skipped)"))
    return 0


# ---- steps ---------------------------------------------------------------------------------------

def export_all(model: DemoDetector, calibration: np.ndarray, staging: Path,
               console: Console) -> tuple[dict[str, Path], dict[str, ModelManifest]]:
    """The four model files, made by the converters users run, and the manifest each conversion wrote.

    TFLite: the trained weights go through ``convert_to_tflite`` as a ``module:callable`` factory plus a
    state dict (``convert-to-tflite _demo_train:export_architecture --weights W``). ONNX int8:
    ``quantize_onnx`` on the float ONNX. The float ONNX itself comes from torch.onnx here, because the
    converters read ONNX but do not write it (and the test suite reads the trained weights back from it).
    """
    import torch

    from agent.manifest import Thresholds, YoloV8Decoder
    from agent.sources.scenes import CLASSES
    from converters import ConvertOptions, OnnxQuantOptions, convert_to_tflite, quantize_onnx

    work = staging / ".work"
    work.mkdir()
    cal_dir = _write_calibration(calibration, work / "calibration")
    weights = work / "demo_detector_fused.pt"
    torch.save(model.state_dict(), weights)
    common = {"labels": CLASSES, "decoder": YoloV8Decoder(boxes_normalized=True), "version": MODEL_VERSION,
              "thresholds": Thresholds(score=SCORE_THRESHOLD, iou=IOU_THRESHOLD, max_detections=MAX_DETECTIONS)}
    manifests: dict[str, ModelManifest] = {}
    for variant, mode, io_type in (("tflite-fp32", "fp32", "float32"), ("tflite-int8", "int8", "uint8")):
        with console.status(f"convert-to-tflite {FACTORY} --quantize {mode} --io-type {io_type}"):
            result = convert_to_tflite(ConvertOptions(
                model=FACTORY, weights=weights, out=work / variant, quantize=mode, io_type=io_type, nhwc=True,
                calibration=cal_dir, calibration_limit=len(calibration), name=f"{MODEL_NAME}-{variant}", **common))
        shutil.rmtree(result.workdir, ignore_errors=True)
        manifests[variant] = result.manifest
    with console.status("exporting float32 ONNX (torch.onnx)"):
        onnx_fp32 = export_onnx_fp32(model, work / "onnx-fp32" / "model.onnx", calibration[:8])
        manifests["onnx-fp32"] = _onnx_fp32_manifest(onnx_fp32, common)
    with console.status("quantize-onnx --calibration (QDQ int8, MinMax, per-channel, float head)"):
        q = quantize_onnx(OnnxQuantOptions(model=onnx_fp32, out=work / "onnx-int8", calibration=cal_dir,
                                           calibration_limit=len(calibration), method="minmax", per_channel=True,
                                           name=f"{MODEL_NAME}-onnx-int8", version=MODEL_VERSION))
        manifests["onnx-int8"] = q.manifest
    raw = {v: work / v / f"model.{v.split('-')[0]}" for v in VARIANTS}
    console.print("converted: " + ", ".join(f"{v} {p.stat().st_size / 1024:.0f} KiB" for v, p in raw.items()))
    return raw, manifests


def _write_calibration(calibration: np.ndarray, folder: Path) -> Path:
    """Letterboxed RGB training scenes as lossless PNGs (the converters read a folder, as users pass one).

    They are already at the input size, so the converters' letterbox (the agent's preprocessing) is a no-op.
    """
    import cv2

    folder.mkdir(parents=True)
    for i, rgb in enumerate(calibration):
        cv2.imwrite(str(folder / f"cal_{i:04d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return folder


def export_onnx_fp32(model: DemoDetector, path: Path, check_images: np.ndarray) -> Path:
    """Static-shape NCHW float ONNX: input ``images`` [1,3,S,S], output ``output0`` [1,4+C,N]; checked against torch."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch

    from converters.progress import quiet

    path.parent.mkdir(parents=True)
    size = model.input_size
    with quiet():
        torch.onnx.export(model, (torch.rand(1, 3, size, size),), str(path), input_names=[ONNX_INPUT],
                          output_names=[ONNX_OUTPUT], opset_version=ONNX_OPSET, dynamo=True, external_data=False)
    proto = onnx.load(str(path))
    if proto.ir_version > MAX_IR_VERSION:  # the agent allows onnxruntime >= 1.17, which loads at most IR 9
        proto.ir_version = MAX_IR_VERSION
        onnx.save(proto, str(path))
    onnx.checker.check_model(proto)
    got = ([i.name for i in proto.graph.input], [o.name for o in proto.graph.output])
    if got != ([ONNX_INPUT], [ONNX_OUTPUT]):
        raise RuntimeError(f"ONNX export named its tensors {got}, expected ([{ONNX_INPUT}], [{ONNX_OUTPUT}])")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for img in check_images:
        x = img.transpose(2, 0, 1)[None].astype(np.float32) / 255.0
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        worst = max(worst, float(np.abs(sess.run(None, {ONNX_INPUT: x})[0] - expected).max()))
    if worst > 1e-4:
        raise RuntimeError(f"{path.name}: outputs differ from torch by up to {worst:.3g}; wrong graph or weights")
    return path


def _onnx_fp32_manifest(path: Path, common: dict[str, object]) -> ModelManifest:
    """The float ONNX's manifest, written next to it so ``quantize_onnx`` reads labels, decoder and thresholds."""
    from agent.manifest import InputSpec, Layout, ModelManifest, Normalization, TensorDType
    from converters import manifest_io
    from converters.toolchain import tool_versions as converter_tools

    manifest = ModelManifest(
        name=f"{MODEL_NAME}-onnx-fp32", file=path.name,
        input=InputSpec(width=INPUT_SIZE, height=INPUT_SIZE, layout=Layout.NCHW, dtype=TensorDType.float32,
                        normalization=Normalization(mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0))),
        quantization={"mode": "fp32"},
        provenance={"tool": "torch.onnx.export (dynamo)", "converter_path": "torch.onnx", "tools": converter_tools()},
        **common)  # type: ignore[arg-type]
    return manifest_io.finalize(path, manifest)


def _write_selftest(held_out: SceneSet, staging: Path) -> SceneSet:
    from _demo_eval import write_selftest

    return write_selftest(held_out, staging / "selftest", SELFTEST_IMAGES, SELFTEST_BUDGET)


def _runner(variant: str, path: Path) -> TFLiteRunner | OnnxRunner:
    from _demo_eval import OnnxRunner, TFLiteRunner

    return TFLiteRunner(path, threads=2) if variant.startswith("tflite") else OnnxRunner(path, threads=2)


def evaluate_all(raw: dict[str, Path], held_out: SceneSet,
                 selftest: SceneSet) -> tuple[dict[str, EvalResult], dict[str, EvalResult]]:
    from _demo_eval import evaluate

    evals: dict[str, EvalResult] = {}
    selftests: dict[str, EvalResult] = {}
    for variant, path in raw.items():
        runner = _runner(variant, path)
        evals[variant] = evaluate(runner, held_out, SCORE_THRESHOLD, IOU_THRESHOLD, f"evaluating {variant}")
        selftests[variant] = evaluate(runner, selftest, SCORE_THRESHOLD, IOU_THRESHOLD, f"self-test {variant}")
    return evals, selftests


def build_manifest(variant: str, converted: ModelManifest, evals: dict[str, EvalResult],
                   training: dict[str, object], cfg: BuildConfig) -> ModelManifest:
    """The converter's manifest plus the build's provenance: architecture, data, training and the evaluation."""
    from agent.sources.scenes import CLASSES

    is_tflite = variant.startswith("tflite")
    reference = evals[VARIANTS[0 if is_tflite else 2]]
    build = {
        "script": "scripts/build_demo_model.py",
        "variant": variant,
        "build_tools": tool_versions(),
        "architecture": "DemoDetector (scripts/_demo_train.py): ReLU CNN, stride 8 + 16 fused to one stride-8 "
                        f"level, in-graph decode, output [1, 4+{len(CLASSES)}, {(INPUT_SIZE // 8) ** 2}]",
        "data": "agent.sources.scenes.random_scene at 640x480, letterboxed to the input",
        "training": training,
        "eval": {"images": cfg.eval_images, "seed": EVAL_SEED, "mAP50": round(evals[variant].map50, 4),
                 "mAP50_95": round(evals[variant].map50_95, 4), "runtime": "ai-edge-litert" if is_tflite else "onnxruntime",
                 "fp32_reference": {"mAP50": round(reference.map50, 4), "mAP50_95": round(reference.map50_95, 4)}},
    }
    return converted.model_copy(update={"sha256": None, "provenance": {**converted.provenance, **build}})


def finalize_all(raw: dict[str, Path], converted: dict[str, ModelManifest], evals: dict[str, EvalResult],
                 training: dict[str, object], cfg: BuildConfig, staging: Path) -> dict[str, Path]:
    """Copy each model into its folder and re-embed its manifest with the build's provenance (sidecar: final hash)."""
    from converters import manifest_io

    finals = {}
    for variant, path in raw.items():
        folder = staging / variant
        folder.mkdir()
        final = folder / path.name
        shutil.copyfile(path, final)
        _strip_embedded(final)
        manifest_io.finalize(final, build_manifest(variant, converted[variant], evals, training, cfg))
        finals[variant] = final
    return finals


def _strip_embedded(path: Path) -> None:
    """Drop the converter's appended manifest zip from a .tflite (ONNX metadata_props are replaced in place)."""
    import zipfile

    if path.suffix != ".tflite":
        return
    with zipfile.ZipFile(path) as zf:
        start = min(info.header_offset for info in zf.infolist())
    data = path.read_bytes()
    if data[start:start + 4] != b"PK\x03\x04":
        raise RuntimeError(f"{path}: cannot locate the embedded manifest zip")
    path.write_bytes(data[:start])


def verify_final(raw: dict[str, Path], finals: dict[str, Path], held_out: SceneSet) -> None:
    """Each final file loads in its runtime, gives the raw file's exact outputs, and carries a valid manifest."""
    import numpy as np

    from agent.manifest import find_manifest, read_embedded_manifest, sha256_file

    for variant, path in raw.items():
        final = finals[variant]
        before, after = _runner(variant, path), _runner(variant, final)
        for img in held_out.images[:8]:
            if not np.array_equal(before(img)[0], after(img)[0]):
                raise RuntimeError(f"{final}: embedding the manifest changed the model's outputs")
        sidecar, _ = find_manifest(final)
        embedded = read_embedded_manifest(final)
        if sidecar is None or embedded is None or sidecar.sha256 != sha256_file(final):
            raise RuntimeError(f"{final}: sidecar or embedded manifest missing, or the sidecar hash is stale")
        if embedded.model_copy(update={"sha256": sidecar.sha256}) != sidecar:
            raise RuntimeError(f"{final}: embedded manifest differs from the sidecar")


def write_eval_json(staging: Path, finals: dict[str, Path], evals: dict[str, EvalResult],
                    selftests: dict[str, EvalResult], cfg: BuildConfig, passed: bool, timings: dict[str, float]) -> None:
    variants = {}
    for variant, final in finals.items():
        tensor_in, tensor_out = _runner(variant, final).describe()
        variants[variant] = {
            "file": f"{variant}/{final.name}", "size_bytes": final.stat().st_size, **evals[variant].as_dict(),
            "input": tensor_in.as_dict(), "output": tensor_out.as_dict(),
            "selftest": selftests[variant].as_dict(),
        }
    report = {
        "eval_images": cfg.eval_images, "eval_seed": EVAL_SEED, "frame": [640, 480], "input_size": INPUT_SIZE,
        "map_score_threshold": 0.01, "operating_score_threshold": SCORE_THRESHOLD, "nms_iou": IOU_THRESHOLD,
        "gate": {"metric": "mAP50", "min": GATE_MAP50, "applied": cfg.gate, "passed": passed},
        "latency_note": "mean invoke ms with 2 threads on the build host (not a Raspberry Pi); pre/post excluded",
        "host": {"machine": platform.machine(), "processor": _cpu_name(), "cores": os.cpu_count()},
        "timings": timings, "variants": variants,
    }
    (staging / "eval.json").write_text(json.dumps(report, indent=2) + "\n")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def print_table(console: Console, finals: dict[str, Path], evals: dict[str, EvalResult],
                selftests: dict[str, EvalResult]) -> None:
    from rich.table import Table

    table = Table(title=f"held-out scenes, LiteRT / ONNX Runtime (P/R at score {SCORE_THRESHOLD}, IoU 0.5)")
    for col in ("variant", "mAP50", "mAP50-95", "P/R", "selftest mAP50", "KiB", "ms"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for variant, e in evals.items():
        size = finals[variant].stat().st_size
        colour = "green" if e.map50 >= GATE_MAP50 else "red"
        table.add_row(variant, f"[{colour}]{e.map50:.3f}[/]", f"{e.map50_95:.3f}", f"{e.precision:.2f}/{e.recall:.2f}",
                      f"{selftests[variant].map50:.3f}", f"{size / 1024:.0f}", f"{e.mean_invoke_ms:.2f}")
    console.print(table)


def publish(staging: Path, out: Path) -> None:
    """Replace only what this script owns under ``out``; other files there are left alone."""
    out.mkdir(parents=True, exist_ok=True)
    for name in (*VARIANTS, "selftest", "eval.json"):
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        shutil.move(str(staging / name), str(target))
    shutil.rmtree(staging)


if __name__ == "__main__":
    sys.exit(main())
