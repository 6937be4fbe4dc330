"""The broker options the workstation tools share (edge-fleet, edge-registry --notify): parsing and errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from agent.sinks.mqtt.cli_args import BrokerOptionError, add_broker_options, broker_config, parse_broker


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_broker_options(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:1883", ("127.0.0.1", 1883)),
        ("broker.lan", ("broker.lan", None)),
        ("[::1]:8883", ("::1", 8883)),
        ("[::1]", ("::1", None)),
        ("::1", ("::1", None)),
    ],
)
def test_parse_broker(text: str, expected: tuple[str, int | None]) -> None:
    assert parse_broker(text) == expected


@pytest.mark.parametrize("text", ["host:", "host:0", "host:70000", "host:abc", ":1883"])
def test_parse_broker_rejects(text: str) -> None:
    with pytest.raises(BrokerOptionError, match="--broker"):
        parse_broker(text)


def test_defaults_plain_1883() -> None:
    cfg = broker_config(parse())
    assert (cfg.host, cfg.effective_port, cfg.tls.enabled, cfg.username) == ("127.0.0.1", 1883, False, None)


def test_tls_options_imply_tls_and_port_8883(tmp_path: Path) -> None:
    ca, crt, key = (tmp_path / n for n in ("ca.pem", "client.pem", "client.key"))
    for f in (ca, crt, key):
        f.write_text("-")  # only existence is checked here; test_tls loads real ones
    cfg = broker_config(parse("--broker", "mq.lan", "--tls-ca", str(ca), "--tls-cert", str(crt), "--tls-key", str(key)))
    assert cfg.tls.enabled and cfg.effective_port == 8883 and cfg.tls.check_hostname
    assert (cfg.tls.ca_file, cfg.tls.cert_file, cfg.tls.key_file) == (ca, crt, key)
    insecure = broker_config(parse("--tls-insecure"))
    assert insecure.tls.enabled and not insecure.tls.check_hostname
    assert broker_config(parse("--tls", "--broker", "mq.lan:18883")).effective_port == 18883


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--tls-ca", "/nonexistent/ca.pem"], "--tls-ca"),
        (["--tls-cert", "/nonexistent/c.pem", "--tls-key", "/nonexistent/c.key"], "--tls-cert"),
        (["--tls-cert", "/etc/hostname"], "--tls-key"),
        (["--password-file", "/etc/hostname"], "--username"),
        (["--username", "op", "--password-file", "/nonexistent/pw"], "--password-file"),
        (["--broker", "host:99999"], "--broker"),
    ],
)
def test_bad_options_name_the_option(argv: list[str], named: str) -> None:
    with pytest.raises(BrokerOptionError, match=named):
        broker_config(parse(*argv))
