"""The agent's configuration: one YAML file, validated by pydantic, overridable from the environment.

Precedence, highest first: environment (``EDGE_AGENT_<FIELD>``, nested with ``__``, e.g.
``EDGE_AGENT_MODEL__THREADS=2``), the YAML file, built-in defaults. With no file at all the
defaults run the demo: the bundled demo model on the synthetic source with a console view.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from agent.backends.base import default_threads
from agent.config_errors import env_overrides, format_settings_error, format_validation_error, show_value
from agent.errors import ConfigError
from agent.sinks import sink_config_union
from agent.sources import source_config_union

ENV_PREFIX = "EDGE_AGENT_"

SourceConfig = source_config_union()
SinkConfig = sink_config_union()


def _default_device_id() -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname()) or "edge-device"


def _default_state_dir() -> Path:
    # systemd's StateDirectory= sets STATE_DIRECTORY; elsewhere keep state beside the user
    return Path(os.environ.get("STATE_DIRECTORY", "~/.local/state/edge-agent")).expanduser()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Section):
    path: Path | None = Field(
        None, description="Model file (.tflite/.onnx) or a directory holding one. Empty: the bundled demo model."
    )
    variant: Literal["tflite-int8", "tflite-fp32", "onnx-int8", "onnx-fp32"] = Field(
        "tflite-int8", description="Which bundled demo variant runs when path is empty."
    )
    backend: Literal["auto", "litert", "onnxruntime"] = Field("auto", description="Runtime; auto picks by file suffix.")
    input_size: tuple[int, int] | int | None = Field(
        None,
        description="Input size [width, height] (or one number for square) for a model with dynamic input axes; "
        "overrides the manifest and the model's own metadata (Ultralytics imgsz). Must match a model with a fixed size.",
    )
    threads: int = Field(default_factory=default_threads, ge=1, le=64, description="Inference threads (default: cores - 1).")
    delegate: str | None = Field(None, description="TFLite delegate library (e.g. libedgetpu.so.1); falls back to CPU.")
    delegate_options: dict[str, str] = Field(default_factory=dict, description="Options for the delegate.")
    score_threshold: float | None = Field(None, ge=0.0, le=1.0, description="Overrides the manifest's score threshold.")
    iou_threshold: float | None = Field(None, ge=0.0, le=1.0, description="Overrides the manifest's NMS IoU threshold.")
    max_detections: int | None = Field(None, gt=0, description="Overrides the manifest's max detections per frame.")
    verify_sha256: bool = Field(True, description="Refuse a model whose sha256 differs from its manifest.")

    @field_validator("input_size")
    @classmethod
    def _positive_size(cls, v: tuple[int, int] | int | None) -> tuple[int, int] | int | None:
        sizes = [v] if isinstance(v, int) else list(v or ())
        if any(s < 1 or s > 8192 for s in sizes):
            raise ValueError(f"sizes must be 1..8192 pixels (got {v!r}); give [width, height] or one number for square")
        return v

    def input_size_wh(self) -> tuple[int, int] | None:
        """``input_size`` as (width, height)."""
        v = self.input_size
        return None if v is None else (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class PipelineConfig(_Section):
    overlap: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Preprocess/decode the neighbouring frames while the model runs (two execution contexts). "
        "auto: on when the machine has more than one core and no delegate is used.",
    )
    frame_timeout_s: float = Field(0.5, gt=0, le=60, description="How long one wait for a frame may block the loop.")


class LogConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    format: Literal["auto", "plain", "journal"] = Field(
        "auto", description="auto: no timestamps under systemd's journal (it adds its own), timestamps otherwise."
    )


class HttpConfig(_Section):
    """The local HTTP API (agent/http): health, metrics, status, on-demand detection."""

    enabled: bool = Field(False, description="Serve the HTTP API from the agent process.")
    host: str = Field(
        "127.0.0.1", description="Bind address: 127.0.0.1 for this machine only, 0.0.0.0 (or a LAN address) for the network."
    )
    port: int = Field(8080, ge=1, le=65535, description="TCP port.")
    token_file: Path | None = Field(
        None,
        description="File whose first line is the bearer token every endpoint but /healthz and /readyz requires. "
        "Required when enabled.",
    )
    public_docs: bool = Field(
        True, description="Serve /docs and /openapi.json without the token (they hold no device data); false: token needed."
    )
    max_upload_bytes: int = Field(8 * 2**20, ge=1024, le=256 * 2**20, description="Largest request body POST /v1/detect accepts.")
    max_pixels: int = Field(
        16_000_000, ge=1, le=400_000_000, description="Largest image (width x height) /v1/detect decodes; checked in the header."
    )
    max_side: int = Field(8192, ge=16, le=65535, description="Largest width or height /v1/detect decodes.")
    max_decode_s: float = Field(
        2.0, gt=0, le=60, description="Longest a PNG's pixel data may take to inflate before it is refused (decompression bombs)."
    )
    max_pending_detects: int = Field(
        4, ge=1, le=64, description="Detect requests running or waiting at once; more get 503 (protects the camera pipeline)."
    )
    ready_max_frame_age_s: float = Field(5.0, gt=0, description="/readyz fails when the last processed frame is older than this.")
    snapshot_timeout_s: float = Field(2.0, gt=0, le=60, description="How long /v1/snapshot waits for the next frame.")
    jpeg_quality: int = Field(85, ge=10, le=100, description="JPEG quality of /v1/snapshot and annotated /v1/detect images.")

    @model_validator(mode="after")
    def _token_when_enabled(self) -> HttpConfig:
        if self.enabled and self.token_file is None:
            raise ValueError("token_file is required when enabled (a file holding the bearer token)")
        return self


class UpdateConfig(_Section):
    """Signed model updates from a fleet registry (agent/ota; README "Model updates")."""

    enabled: bool = Field(False, description="Check the registry for new model versions and install them.")
    url: str | None = Field(
        None,
        pattern=r"^https?://[^\s]+$",
        description="Registry base URL (serves metadata/ and targets/). Required when enabled.",
    )
    trusted_root: Path | None = Field(
        None, description="The registry's initial root metadata (1.root.json), installed with the agent. Required when enabled."
    )
    channel: Literal["stable", "canary"] = Field("stable", description="stable takes stable versions; canary takes both.")
    model: str | None = Field(None, description="Model name to follow. Empty: the running model's manifest name.")
    check_interval_s: float = Field(3600.0, ge=10, description="Seconds between scheduled checks (10% jitter).")
    check_on_start: bool = Field(True, description="Check once right after start.")
    fleet_topic: str | None = Field(
        "edge/fleet/updates", description="Retained MQTT topic edge-registry publish --notify writes; a message triggers a check."
    )
    notify_jitter_s: float = Field(
        5.0, ge=0, le=3600, description="Random delay before a notified check (spreads a fleet's downloads)."
    )
    keep_versions: int = Field(3, ge=2, le=50, description="Installed versions kept on disk (current and previous always).")
    max_attempts: int = Field(3, ge=1, le=20, description="Attempts per version before it is given up.")
    trial_frames: int = Field(100, ge=1, description="Frames the new model must process without error before commit.")
    trial_s: float = Field(30.0, ge=0, description="And seconds it must run before commit.")
    trial_timeout_s: float = Field(600.0, gt=0, description="A trial that has not seen trial_frames frames by then fails.")
    latency_factor: float = Field(1.5, ge=1.0, description="New model's p50 inference may be this many times the old one's ...")
    latency_slack_ms: float = Field(5.0, ge=0, description="... plus this many milliseconds (self-test and trial).")
    selftest_dir: Path | None = Field(
        None, description="Frames (and COCO labels.json) the candidate is tested on before the swap. Empty: the bundled ones."
    )
    selftest_min_recall: float = Field(0.5, ge=0, le=1, description="Recall the candidate needs on labelled self-test frames.")
    disk_margin_mb: int = Field(20, ge=0, description="Free disk to leave beyond the download.")
    ram_factor: float = Field(
        2.0, ge=1.0, description="Free RAM needed, as a multiple of the model file size (two models loaded)."
    )
    download_timeout_s: float = Field(30.0, gt=0, description="Socket timeout of registry requests.")
    download_retries: int = Field(5, ge=0, le=100, description="Resumed retries of an interrupted download.")

    @model_validator(mode="after")
    def _registry_when_enabled(self) -> UpdateConfig:
        if self.enabled and (self.url is None or self.trusted_root is None):
            raise ValueError("url and trusted_root are required when enabled (the registry and its 1.root.json)")
        return self


class AgentConfig(BaseSettings):
    """Top-level configuration. Every field has a default; an empty file is valid."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")

    device_id: str = Field(
        default_factory=_default_device_id,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="This device's id (MQTT client id, topics). Default: the hostname.",
    )
    state_dir: Path = Field(default_factory=_default_state_dir, description="Writable state (outbox, models, journal).")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Which model runs, and how.")
    source: SourceConfig = Field(  # type: ignore[valid-type]
        default_factory=lambda: {"type": "synthetic"}, description="Where frames come from; `type` selects the plugin."
    )
    sinks: list[SinkConfig] = Field(  # type: ignore[valid-type]
        default_factory=lambda: [{"type": "jsonl"}], description="Where results go, in order."
    )
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig, description="Inference loop behaviour.")
    log: LogConfig = Field(default_factory=LogConfig, description="Logging.")
    http: HttpConfig = Field(default_factory=HttpConfig, description="Local HTTP API (off by default).")
    update: UpdateConfig = Field(default_factory=UpdateConfig, description="Signed model updates (off by default).")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # environment over the YAML file (passed as init kwargs) over defaults
        return (env_settings, init_settings)


def _format_errors(exc: ValidationError, origin: str) -> ConfigError:
    # YAML paths as written (source.fps, sinks[0].port) and the EDGE_AGENT_ variable behind an overridden value
    overrides = env_overrides(os.environ, ENV_PREFIX, list(AgentConfig.model_fields))
    return format_validation_error(exc, origin, AgentConfig, overrides)


def _settings_error(exc: SettingsError) -> ConfigError:
    return format_settings_error(exc, ENV_PREFIX, os.environ)


# a config is a few hundred values: far more is a hostile or broken file (e.g. YAML aliases expanding exponentially)
MAX_CONFIG_NODES = 100_000


def _count_nodes(data: Any, budget: int) -> int:
    """Values in ``data`` counting every alias use, stopping once past ``budget`` (iterative: no recursion limit)."""
    stack, seen = [data], 0
    while stack and seen <= budget:
        node = stack.pop()
        seen += 1
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return seen


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: byte {exc.start} is not UTF-8 ({exc.object[exc.start : exc.start + 1]!r}); save the file as UTF-8",
            [("(file)", "not UTF-8")],
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory; give the config file inside it", [("(file)", "a directory")]) from None
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist", [("(file)", "not found")]) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}", [("(file)", str(exc.strerror))]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: YAML syntax error{where}: {problem}", [(f"(yaml{where})", str(problem))]) from None
    except RecursionError:
        raise ConfigError(
            f"{path}: YAML nested too deeply to be a config file (hundreds of levels; a config has a few); check the brackets",
            [("(yaml)", "nested too deeply")],
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of settings, not {type(data).__name__}", [("(root)", "not a mapping")]
        )
    bad_keys = [k for k in data if not isinstance(k, str)]
    if bad_keys:
        raise ConfigError(
            f"{path}: top-level key {show_value(bad_keys[0])} is not a setting name; keys are names like model, source, sinks",
            [(show_value(bad_keys[0]), "not a setting name")],
        )
    if _count_nodes(data, MAX_CONFIG_NODES) > MAX_CONFIG_NODES:
        raise ConfigError(
            f"{path}: more than {MAX_CONFIG_NODES} values (counting YAML aliases); a config is a few hundred",
            [("(file)", "too many values")],
        )
    return data


def load_config(path: Path | None = None) -> AgentConfig:
    """Load and validate; raise :class:`ConfigError` listing every problem with its field path."""
    data = read_yaml(path) if path is not None else {}
    return build_config(data, str(path) if path is not None else "configuration")


def build_config(data: dict[str, Any], origin: str) -> AgentConfig:
    """Validate ``data`` under the environment's overrides; :class:`ConfigError` names ``origin`` or the variable."""
    try:
        return AgentConfig(**data)
    except ValidationError as exc:
        raise _format_errors(exc, origin) from None
    except SettingsError as exc:
        raise _settings_error(exc) from None


def config_json_schema() -> dict[str, Any]:
    return AgentConfig.model_json_schema(mode="validation")
