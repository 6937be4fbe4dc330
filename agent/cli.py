"""``edge-agent``: run, check, config schema, models inspect, detect, bench."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from agent.bench_compare import register as register_bench_compare
from agent.bench_model import register as register_bench_model
from agent.cli_conventions import add_json_options, add_version_everywhere, run_with_json_output
from agent.errors import AgentError, BackendUnavailableError, ConfigError, ModelError, SourceError
from agent.http.bench import register as register_http
from agent.mqtt_cli import register as register_mqtt
from agent.ota.bench import register as register_ota
from agent.status_file import register as register_status

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2  # systemd: RestartPreventExitStatus=2, a bad config must not restart-loop
EXIT_MODEL = 3
EXIT_SOURCE = 4

log = logging.getLogger("agent")


def _setup_logging(level: str = "INFO", fmt: str = "auto") -> None:
    from agent.journal_log import stderr_handler  # <N> priority prefixes under systemd's journal

    logging.basicConfig(level=level, handlers=[stderr_handler(fmt)], force=True)


def _config_path(arg: str | None) -> Path | None:
    if arg:
        return Path(arg)
    env = os.environ.get("EDGE_AGENT_CONFIG")
    if env:
        return Path(env)
    conf_dir = os.environ.get("CONFIGURATION_DIRECTORY")  # set by systemd's ConfigurationDirectory=
    if conf_dir and (Path(conf_dir) / "config.yaml").is_file():
        return Path(conf_dir) / "config.yaml"
    return None


def _load(arg: str | None, demo_console: bool = False) -> Any:
    from agent.config import build_config, load_config

    path = _config_path(arg)
    if path is None and demo_console:
        return build_config({"sinks": [{"type": "console" if sys.stdout.isatty() else "jsonl"}]}, "defaults")
    return load_config(path)


def _configured_model_path(cfg: Any) -> Path:
    from agent.demo import demo_model_path

    return Path(cfg.model.path) if cfg.model.path is not None else demo_model_path(cfg.model.variant)


def _open_detector(cfg: Any, path: Path | None = None) -> Any:
    from agent.backends import BackendOptions
    from agent.detector import load_detector
    from agent.manifest import Thresholds

    m = cfg.model
    path = path if path is not None else _configured_model_path(cfg)
    options = BackendOptions(threads=m.threads, delegate=m.delegate, delegate_options=m.delegate_options)
    detector = load_detector(
        path,
        options,
        None if m.backend == "auto" else m.backend,
        verify_sha256=m.verify_sha256,
        input_size=m.input_size_wh(),
    )
    base = detector.manifest.thresholds
    if any(v is not None for v in (m.score_threshold, m.iou_threshold, m.max_detections)):
        detector.set_thresholds(
            Thresholds(
                score=base.score if m.score_threshold is None else m.score_threshold,
                iou=base.iou if m.iou_threshold is None else m.iou_threshold,
                max_detections=base.max_detections if m.max_detections is None else m.max_detections,
            )
        )
    return detector


def cmd_run(args: argparse.Namespace) -> int:
    from agent.notify import attach_notifier
    from agent.pipeline import Pipeline
    from agent.sinks import build_sink
    from agent.sinks.base import AgentContext
    from agent.sources import build_source

    cfg = _load(args.config, demo_console=True)
    _setup_logging(cfg.log.level, cfg.log.format)
    updater = None
    if cfg.update.enabled:
        from agent.ota.updater import ModelUpdater

        updater = ModelUpdater(
            cfg.update, state_dir=cfg.state_dir, device_id=cfg.device_id, open_model=lambda p: _open_detector(cfg, p)
        )
        model_path = updater.startup_model(_configured_model_path(cfg))  # the committed OTA model, else the configured one
        try:
            detector = _open_detector(cfg, model_path)
        except ModelError as exc:
            if model_path == _configured_model_path(cfg):
                raise
            log.error("installed model %s does not load (%s); starting the configured model", model_path, exc)
            detector = _open_detector(cfg)
    else:
        detector = _open_detector(cfg)
    source = build_source(cfg.source)
    if cfg.source.type != "synthetic":
        _say_if_demo(detector)
    sinks = [build_sink(s) for s in cfg.sinks]
    context = AgentContext.from_config(cfg, _config_path(args.config))  # device id, state dir, config file
    for sink in sinks:
        sink.bind(context)
    overlap = {"auto": None, "on": True, "off": False}[cfg.pipeline.overlap]
    pipeline = Pipeline(
        detector,
        source,
        sinks,
        max_frames=args.frames,
        duration_s=args.duration,
        frame_timeout_s=cfg.pipeline.frame_timeout_s,
        overlap=overlap,
    )
    notifier = attach_notifier(pipeline)  # systemd Type=notify: READY after the first frame, WATCHDOG from the loop
    if updater is not None:
        updater.attach(pipeline)  # signed model updates (agent/ota): swaps models into this pipeline

    def _stop(signum: int, _frame: Any) -> None:
        log.info("received %s: finishing the current frame", signal.Signals(signum).name)
        notifier.stopping()
        pipeline.request_stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info(
        "running %s %s (%s, %s) on source %s (%s)",
        detector.ref.name,
        detector.ref.version,
        detector.backend.type_key,
        detector.manifest_origin,
        cfg.source.id,
        cfg.source.type,
    )
    from agent.http.server import start_api

    api = start_api(cfg.http, pipeline, context)  # local HTTP API when http.enabled (agent/http)
    if updater is not None:
        updater.start()
    try:
        stats = pipeline.run()
    finally:
        if updater is not None:
            updater.stop()
        if api is not None:
            api.stop()
    notifier.stopping()
    pipeline.detector.close()
    snap = stats.snapshot()
    log.info("stopped after %d frames (%d dropped at the source)", snap["frames"], snap["frames_dropped"])
    return EXIT_OK


def _say_if_demo(detector: Any) -> None:
    """Once, before the first result: the demo model on real images reports confident nonsense."""
    from agent.demo import demo_notice, is_demo_model

    if is_demo_model(Path(detector.backend.model_path)):  # the file that loaded (OTA may have fallen back to it)
        log.warning(demo_notice(list(detector.manifest.labels)))


def cmd_check(args: argparse.Namespace) -> int:
    from agent.sinks import build_sink
    from agent.sources import build_source

    cfg = _load(args.config)
    build_source(cfg.source)
    for sink in cfg.sinks:  # constructing reads what run reads first (secrets, TLS files); nothing connects
        build_sink(sink)
    if cfg.http.enabled:
        from agent.http.server import read_token

        read_token(cfg.http.token_file)
    detector = _open_detector(cfg)
    if cfg.model.delegate and detector.backend.type_key == "litert":
        _check_delegate(cfg.model.delegate)
    if cfg.update.enabled:
        _check_trusted_root(cfg.update.trusted_root)
    print(f"{args.config or 'defaults'}: OK (model {detector.ref.name} {detector.ref.version}, source {cfg.source.type})")
    detector.close()
    return EXIT_OK


def _check_delegate(library: str) -> None:
    """`run` falls back to the CPU when the delegate does not load (a Coral unplugged); `check` says it is wrong."""
    from agent.backends.delegates import delegate_problem

    problem = delegate_problem(library)
    if problem is not None:
        raise ConfigError(
            f"model.delegate: {library!r} {problem}; install the delegate (e.g. libedgetpu.so.1 for a Coral) "
            "or remove model.delegate to run on the CPU",
            [("model.delegate", problem)],
        )


def _check_trusted_root(path: Path) -> None:
    from tuf.api.metadata import Metadata, Root

    try:
        root = Metadata[Root].from_bytes(Path(path).read_bytes())
        root.signed.verify_delegate("root", root.signed_bytes, root.signatures)
    except OSError as exc:
        raise ConfigError(
            f"update.trusted_root: cannot read {path}: {exc.strerror}; "
            "install the registry's repository/metadata/1.root.json there",
            [("update.trusted_root", str(exc.strerror))],
        ) from None
    except Exception as exc:  # noqa: BLE001 - tuf raises several types for bad metadata
        raise ConfigError(
            f"update.trusted_root: {path} is not signed TUF root metadata ({type(exc).__name__}: {exc}); "
            "copy the registry's repository/metadata/1.root.json",
            [("update.trusted_root", "not root metadata")],
        ) from None


def cmd_config_schema(args: argparse.Namespace) -> int:
    from agent.config import config_json_schema

    print(json.dumps(config_json_schema(), indent=2))
    return EXIT_OK


def cmd_config_docs(args: argparse.Namespace) -> int:
    from agent.config_docs import config_reference

    print(config_reference(), end="")
    return EXIT_OK


def cmd_models_inspect(args: argparse.Namespace) -> int:
    from agent.bare_manifest import parse_input_size
    from agent.models_cli import inspect_model

    try:
        size = parse_input_size(args.input_size)
    except ValueError as exc:
        raise ConfigError(f"--input-size: {exc}", [("--input-size", str(exc))]) from None
    return inspect_model(Path(args.file), as_json=args.json, input_size=size)


def cmd_detect(args: argparse.Namespace) -> int:
    from agent.detect_cli import detect_images

    cfg = _load(args.config)
    if args.model:
        cfg.model.path = Path(args.model)
    detector = _open_detector(cfg)
    _say_if_demo(detector)
    try:
        return detect_images(detector, [Path(p) for p in args.images], Path(args.save_annotated) if args.save_annotated else None)
    finally:
        detector.close()


def cmd_bench(args: argparse.Namespace) -> int:
    from agent.bench import run_benchmark

    return run_with_json_output(
        args,
        lambda path: run_benchmark(
            json_path=path, frames=args.frames, threads=args.threads, rounds=args.rounds, min_seconds=args.min_seconds
        ),
    )


def build_parser() -> argparse.ArgumentParser:
    from agent import __version__

    parser = argparse.ArgumentParser(prog="edge-agent", description="Camera inference agent for the edge.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the pipeline (no config: the demo)")
    run.add_argument("-c", "--config", help="YAML config file")
    run.add_argument("--duration", type=float, help="stop after S seconds")
    run.add_argument("--frames", type=int, help="stop after N frames")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check", help="validate a config file and load its model")
    check.add_argument("-c", "--config", required=True, help="YAML config file")
    check.set_defaults(func=cmd_check)

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    config_sub.add_parser("schema", help="print the config JSON Schema").set_defaults(func=cmd_config_schema)
    config_sub.add_parser("docs", help="print the config reference (Markdown)").set_defaults(func=cmd_config_docs)

    models = sub.add_parser("models", help="model tools")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    inspect = models_sub.add_parser("inspect", help="show a model's tensors, manifest and decoder")
    inspect.add_argument("file", help="model file (.tflite/.onnx) or a folder holding one")
    inspect.add_argument("--json", action="store_true", help="print the description as JSON on stdout")
    inspect.add_argument("--input-size", metavar="WxH", help="size for dynamic input axes (like config model.input_size)")
    inspect.set_defaults(func=cmd_models_inspect)

    detect = sub.add_parser("detect", help="one-shot detection on image files (JSON lines out)")
    detect.add_argument("images", nargs="+", help="JPEG/PNG files to run the model on")
    detect.add_argument("-c", "--config", help="YAML config file (model settings)")
    detect.add_argument("--model", help="model file or directory (default: from config, or the demo model)")
    detect.add_argument("--save-annotated", metavar="DIR", help="write images with boxes drawn here")
    detect.set_defaults(func=cmd_detect)

    bench = sub.add_parser("bench", help="benchmark backends x demo models")
    add_json_options(bench, "the rows")
    bench.add_argument("--frames", type=int, default=300, help="frames per measurement (at least)")
    bench.add_argument("--min-seconds", type=float, default=1.0, help="and at least this long per measurement")
    bench.add_argument("--rounds", type=int, default=5, help="paired raw/pipeline/naive rounds; medians are reported")
    bench.add_argument("--threads", type=int, help="inference threads (default: cores - 1)")
    bench.set_defaults(func=cmd_bench)
    register_status(sub)  # status (agent/status_file.py)
    register_mqtt(sub)  # tail, bench-mqtt, mqtt schema|sign (agent/mqtt_cli.py)
    register_bench_model(sub)  # bench-model MODEL (agent/bench_model.py)
    register_bench_compare(sub)  # bench-compare (agent/bench_compare.py)
    register_http(sub)  # bench-http (agent/http/bench.py)
    register_ota(sub)  # bench-ota (agent/ota/bench.py)
    add_version_everywhere(parser, f"edge-agent {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    from agent.journal_log import error_text  # fatal lines at priority "err" under systemd's journal

    args = build_parser().parse_args(argv)
    _setup_logging()
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(error_text(f"config error: {exc}"), file=sys.stderr)
        return EXIT_CONFIG
    except ModelError as exc:
        print(error_text(f"model error: {exc}"), file=sys.stderr)
        return EXIT_MODEL
    except SourceError as exc:
        print(error_text(f"source error: {exc}"), file=sys.stderr)
        return EXIT_SOURCE
    except BackendUnavailableError as exc:  # a restart cannot install a runtime: stop like a bad config
        print(error_text(f"config error: {exc}"), file=sys.stderr)
        return EXIT_CONFIG
    except AgentError as exc:
        print(error_text(f"error: {exc}"), file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
