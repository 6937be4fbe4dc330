"""Broker options shared by the workstation tools (``edge-fleet``, ``edge-registry --notify``).

The same address, credentials and TLS settings as an agent's ``mqtt`` sink, given as command-line
options and checked into a :class:`MqttSinkConfig`, so every tool connects the way the agents do
(:func:`agent.sinks.mqtt.client.tool_client`). A bad option raises :class:`BrokerOptionError`
naming the option and what to give instead; each tool turns it into its own usage error.
"""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import ValidationError

from agent.sinks.mqtt.config import MqttSinkConfig

DEFAULT_BROKER = "127.0.0.1"

# the TlsConfig field behind each option, for error messages
_TLS_OPTIONS = {"ca_file": "--tls-ca", "cert_file": "--tls-cert", "key_file": "--tls-key"}


class BrokerOptionError(ValueError):
    """A broker option is malformed or names a file that is not there."""


def add_broker_options(parser: argparse.ArgumentParser | Any) -> None:
    """``--broker``, ``--username``, ``--password-file`` and the ``--tls*`` options (a parser or argument group)."""
    parser.add_argument(
        "--broker",
        default=DEFAULT_BROKER,
        metavar="HOST[:PORT]",
        help="MQTT broker (default 127.0.0.1; port 1883, or 8883 with TLS)",
    )
    parser.add_argument("--username", help="broker user name")
    parser.add_argument("--password-file", metavar="FILE", help="file holding the broker password (first line)")
    parser.add_argument("--tls", action="store_true", help="connect over TLS (implied by the other --tls options)")
    parser.add_argument("--tls-ca", metavar="FILE", help="PEM CA bundle that signed the broker certificate (default: system CAs)")
    parser.add_argument("--tls-cert", metavar="FILE", help="PEM client certificate (with --tls-key)")
    parser.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    parser.add_argument(
        "--tls-insecure", action="store_true", help="do not check that the certificate names the host (test benches only)"
    )


def parse_broker(text: str) -> tuple[str, int | None]:
    """``HOST``, ``HOST:PORT``, ``[IPv6]`` or ``[IPv6]:PORT``; the port is None when not given."""
    host, sep, port = text.rpartition(":") if not text.endswith("]") else (text, "", "")
    if not sep or (":" in host and not host.startswith("[")):  # no port, or a bare IPv6 address
        host, sep, port = text, "", ""
    host = host.strip("[]")
    if not host or (sep and (not port.isdigit() or not 1 <= int(port) <= 65535)):
        raise BrokerOptionError(f"--broker {text!r} is not HOST or HOST:PORT with a port 1..65535 (e.g. 127.0.0.1:1883)")
    return host, int(port) if port else None


def broker_config(args: argparse.Namespace, **extra: Any) -> MqttSinkConfig:
    """The options as a sink config (``extra``: more MqttSinkConfig fields), checked."""
    host, port = parse_broker(args.broker)
    if args.password_file and not args.username:
        raise BrokerOptionError("--password-file needs --username")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise BrokerOptionError("--tls-cert and --tls-key go together: give both for a client certificate, or neither")
    tls_files = {field: getattr(args, option[2:].replace("-", "_")) for field, option in _TLS_OPTIONS.items()}
    tls: dict[str, Any] = {k: v for k, v in tls_files.items() if v}
    tls_on = args.tls or bool(tls) or args.tls_insecure
    try:
        return MqttSinkConfig(
            host=host,
            port=port,
            username=args.username,
            password_file=args.password_file,
            tls={"enabled": tls_on, "check_hostname": not args.tls_insecure, **tls},
            **extra,
        )
    except ValidationError as exc:
        raise BrokerOptionError("; ".join(_describe(err) for err in exc.errors())) from None


def _describe(err: Any) -> str:
    loc = [str(part) for part in err.get("loc", ())]
    field = loc[-1] if loc else ""
    option = _TLS_OPTIONS.get(field) if "tls" in loc else {"password_file": "--password-file", "host": "--broker"}.get(field)
    message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{option or '.'.join(loc)}: {message}"
