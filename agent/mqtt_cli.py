"""CLI commands of the MQTT transport: ``tail``, ``bench-mqtt``, ``mqtt schema``, ``mqtt sign``.

``agent/cli.py`` calls :func:`register`. This module stays import-light (argparse only); the
work lives in ``agent/sinks/mqtt/`` and is imported when a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.cli_conventions import add_json_options

if TYPE_CHECKING:
    from agent.sinks.mqtt.config import MqttSinkConfig


def _agent_and_mqtt(config_arg: str | None) -> tuple[Any, MqttSinkConfig]:
    """The agent config (file, env, defaults) and its first ``mqtt`` sink (defaults when there is none)."""
    from agent.cli import _config_path
    from agent.config import load_config
    from agent.sinks.mqtt.config import MqttSinkConfig

    cfg = load_config(_config_path(config_arg))
    mqtt = next((s for s in cfg.sinks if isinstance(s, MqttSinkConfig)), None) or MqttSinkConfig()
    return cfg, mqtt


def _with_overrides(mqtt: MqttSinkConfig, args: argparse.Namespace) -> MqttSinkConfig:
    update: dict[str, Any] = {}
    if args.host:
        update["host"] = args.host
    if args.port:
        update["port"] = args.port
    return mqtt.model_copy(update=update) if update else mqtt


def cmd_tail(args: argparse.Namespace) -> int:
    from agent.sinks.mqtt.tail import tail
    from agent.sinks.mqtt.topics import Topics

    cfg, mqtt = _agent_and_mqtt(args.config)
    mqtt = _with_overrides(mqtt, args)
    if args.all:
        prefix = "edge/+"
    else:
        prefix = args.prefix or Topics.for_device(args.device or cfg.device_id, None if args.device else mqtt.topic_prefix).prefix
    return tail(mqtt, prefix, count=args.count, duration_s=args.duration, as_json=args.json)


def cmd_schema(args: argparse.Namespace) -> int:
    from agent.sinks.mqtt.payloads import payload_schemas

    schemas = payload_schemas()
    if args.topic:
        if args.topic not in schemas:
            print(f"unknown topic {args.topic!r}; choose one of {', '.join(schemas)}", file=sys.stderr)
            return 2
        schemas = schemas[args.topic]
    print(json.dumps(schemas, indent=2))
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    from agent.sinks.mqtt.commands import sign_request

    key = Path(args.key_file).read_bytes().strip()
    request: dict[str, Any] = {
        "id": args.id or f"{int(time.time() * 1000)}",
        "ts": int(time.time()),
        "args": json.loads(args.args),
    }
    print(json.dumps(sign_request(key, args.command, request)))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from agent.cli_conventions import run_with_json_output
    from agent.sinks.mqtt.bench import run_mqtt_benchmark

    return run_with_json_output(
        args,
        lambda path: run_mqtt_benchmark(
            seconds=args.seconds, backlog=args.backlog, host=args.host, port=args.port, json_path=path
        ),
    )


def register(sub: Any) -> None:
    """Add the MQTT commands to ``edge-agent``'s subcommands."""
    tail = sub.add_parser("tail", help="subscribe to a device's MQTT topics and pretty-print them")
    tail.add_argument("-c", "--config", help="YAML config file (broker settings and device id from its mqtt sink)")
    tail.add_argument("--device", help="device id (default: the config's device_id)")
    tail.add_argument("--prefix", help="topic prefix (default: edge/<device>)")
    tail.add_argument("--all", action="store_true", help="every device under edge/+")
    tail.add_argument("--host", help="broker host (overrides the config)")
    tail.add_argument("--port", type=int, help="broker port (overrides the config)")
    tail.add_argument("--count", type=int, help="exit after N messages")
    tail.add_argument("--duration", type=float, help="exit after S seconds")
    tail.add_argument("--json", action="store_true", help="one JSON line per message")
    tail.set_defaults(func=cmd_tail)

    bench = sub.add_parser("bench-mqtt", help="benchmark the MQTT outbox: msgs/s, replay rate, capture-to-received latency")
    bench.add_argument("--seconds", type=float, default=10.0, help="length of each timed phase")
    bench.add_argument("--backlog", type=int, default=5000, help="messages queued during the simulated outage")
    bench.add_argument("--host", help="use this broker instead of starting a private mosquitto (skips the outage phase)")
    bench.add_argument("--port", type=int, default=1883, help="port of --host")
    add_json_options(bench, "the results")
    bench.set_defaults(func=cmd_bench)

    mqtt = sub.add_parser("mqtt", help="MQTT payload tools")
    mqtt_sub = mqtt.add_subparsers(dest="mqtt_command", required=True)
    schema = mqtt_sub.add_parser("schema", help="print the JSON Schema of every MQTT payload")
    schema.add_argument("--topic", help="only this topic suffix (detections, telemetry, status, ...)")
    schema.set_defaults(func=cmd_schema)
    sign = mqtt_sub.add_parser("sign", help="print a signed command payload (commands.hmac_key_file)")
    sign.add_argument("command", help="command name, e.g. set_threshold")
    sign.add_argument("--args", default="{}", help="the command's args as JSON")
    sign.add_argument("--key-file", required=True, help="the shared HMAC key file")
    sign.add_argument("--id", help="request id (default: milliseconds since the epoch)")
    sign.set_defaults(func=cmd_sign)
