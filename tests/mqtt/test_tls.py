"""TLS (certificates made by the test with openssl) with password auth, and an optional client certificate."""

from __future__ import annotations

import json
import logging
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.config import AgentConfig
from agent.errors import ConfigError
from agent.sinks.mqtt import MqttSink, MqttSinkConfig

from .conftest import Broker, RunningPipeline, Subscriber, free_port, make_sink, wait_until

PASSWORD = "pw-Zx81-never-logged"

pytestmark = pytest.mark.skipif(
    not (shutil.which("openssl") and shutil.which("mosquitto_passwd")), reason="needs the openssl and mosquitto_passwd tools"
)


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _cert(d: Path, name: str, cn: str, ca: Path, ca_key: Path, san: str | None = None) -> tuple[Path, Path]:
    key, csr, crt = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.crt"
    _openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        f"/CN={cn}",
    )
    ext = d / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-out",
        str(crt),
        "-days",
        "2",
        "-extfile",
        str(ext),
    )
    return crt, key


@dataclass
class TlsBroker:
    broker: Broker
    tls_port: int
    mtls_port: int
    ca: Path
    client_crt: Path
    client_key: Path
    password_file: Path


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    d = tmp_path_factory.mktemp("tls")
    ca, ca_key = d / "ca.crt", d / "ca.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(ca_key), "-out", str(ca), "-days", "2", "-subj", "/CN=edge-agent test CA",
    )  # fmt: skip
    server_crt, server_key = _cert(d, "server", "localhost", ca, ca_key, san="DNS:localhost,IP:127.0.0.1")
    client_crt, client_key = _cert(d, "client", "dev-tls", ca, ca_key)
    passwd = d / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "dev-tls", PASSWORD], check=True, capture_output=True)
    secret = d / "password.txt"
    secret.write_text(PASSWORD + "\n")
    tls_port, mtls_port = free_port(), free_port()
    files = f"cafile {ca}\ncertfile {server_crt}\nkeyfile {server_key}\n"
    more = f"listener {tls_port} 127.0.0.1\n{files}listener {mtls_port} 127.0.0.1\n{files}require_certificate true\n"
    broker = Broker(d / "broker", listener_extra=f"allow_anonymous false\npassword_file {passwd}", more=more).start()
    assert wait_until(lambda: _port_open(tls_port) and _port_open(mtls_port), 5)
    yield TlsBroker(broker, tls_port, mtls_port, ca, client_crt, client_key, secret)
    broker.stop()


def _port_open(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _tls_sub(tb: TlsBroker, topic: str) -> Subscriber:
    ctx = ssl.create_default_context(cafile=str(tb.ca))
    return Subscriber(tb.tls_port, (topic,), tls=ctx, username="dev-tls", password=PASSWORD)


def test_tls_with_password(tls_broker: TlsBroker, tmp_path: Path, subscribers: list, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sub = _tls_sub(tls_broker, "edge/tls1/#")
    subscribers.append(sub)
    sink = make_sink(
        tmp_path / "state",
        tls_broker.tls_port,
        "tls1",
        host="localhost",
        tls={"enabled": True, "ca_file": str(tls_broker.ca)},
        username="dev-tls",
        password_file=str(tls_broker.password_file),
        status_file_interval_s=0.2,
    )
    run = RunningPipeline([sink], fps=30)
    try:
        assert wait_until(lambda: len(sub.of("detections")) >= 10, 15)
        assert sink.conn is not None and sink.conn.broker.startswith("mqtts://localhost:")
        assert wait_until(lambda: (tmp_path / "state" / "status.json").exists(), 5)
    finally:
        run.stop()
    assert [m.payload for m in sub.of("availability")][-1] == b"offline"
    everything = caplog.text + (tmp_path / "state" / "status.json").read_text() + repr(sink.config) + repr(sink.conn)
    assert PASSWORD not in everything, "the password must never be logged or reported"


def test_client_certificate(tls_broker: TlsBroker, tmp_path: Path, subscribers: list, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_MQTT_PASSWORD", PASSWORD)
    sub = _tls_sub(tls_broker, "edge/mtls/detections")
    subscribers.append(sub)
    tls = {
        "enabled": True,
        "ca_file": str(tls_broker.ca),
        "cert_file": str(tls_broker.client_crt),
        "key_file": str(tls_broker.client_key),
    }
    sink = make_sink(
        tmp_path / "state", tls_broker.mtls_port, "mtls", tls=tls, username="dev-tls", password_env="TEST_MQTT_PASSWORD"
    )
    run = RunningPipeline([sink], fps=30)
    try:
        assert wait_until(lambda: len(sub.of("detections")) >= 5, 15)
    finally:
        run.stop()


def test_wrong_password_is_reported_and_the_agent_carries_on(tls_broker: TlsBroker, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not-the-password\n")
    sink = make_sink(
        tmp_path / "state",
        tls_broker.tls_port,
        "tlsbad",
        tls={"enabled": True, "ca_file": str(tls_broker.ca)},
        username="dev-tls",
        password_file=str(wrong),
        status_file_interval_s=0.2,
    )
    run = RunningPipeline([sink], fps=30)
    try:
        assert wait_until(
            lambda: sink.conn is not None and sink.conn.last_error is not None and "refused" in sink.conn.last_error, 10
        )
        frames = run.pipeline.stats.frames
        assert wait_until(lambda: run.pipeline.stats.frames > frames + 10, 5), "inference continues"
        assert wait_until(lambda: json.loads((tmp_path / "state" / "status.json").read_text())["mqtt"]["last_error"], 5)
        status = json.loads((tmp_path / "state" / "status.json").read_text())
        assert not status["mqtt"]["connected"] and "refused" in status["mqtt"]["last_error"]
    finally:
        run.stop()


def test_bad_tls_and_credential_config_name_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def errors(sink: dict) -> str:
        with pytest.raises(ValidationError) as exc:
            AgentConfig(sinks=[{"type": "mqtt", **sink}])
        return str(exc.value)

    assert "sinks.0.mqtt.tls.ca_file" in errors({"tls": {"enabled": True, "ca_file": str(tmp_path / "missing.crt")}})
    assert "cert_file and key_file go together" in errors({"tls": {"cert_file": __file__}})
    assert "sinks.0.mqtt.port" in errors({"port": 0})
    assert "sinks.0.mqtt.topic_prefix" in errors({"topic_prefix": "edge/+/x"})
    assert "needs a username" in errors({"password_env": "X"})
    assert "not both" in errors({"username": "u", "password_env": "X", "password_file": __file__})
    assert "sinks.0.mqtt.password_file" in errors({"username": "u", "password_file": str(tmp_path / "nope")})
    monkeypatch.delenv("NOPE_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match=r"sinks\[\]\.password_env: environment variable NOPE_PASSWORD is not set"):
        MqttSink(MqttSinkConfig(username="u", password_env="NOPE_PASSWORD"))
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"sinks\[\]\.tls\.ca_file"):
        MqttSink(MqttSinkConfig(tls={"enabled": True, "ca_file": str(garbage)}))


def _tool_tls_args(tb: TlsBroker) -> list[str]:
    return ["--broker", f"localhost:{tb.tls_port}", "--tls-ca", str(tb.ca), "--username", "dev-tls",
            "--password-file", str(tb.password_file)]  # fmt: skip


def test_registry_notify_and_fleet_status_over_tls(
    tls_broker: TlsBroker, tmp_path: Path, subscribers: list, capsys: pytest.CaptureFixture[str]
) -> None:
    """The workstation tools reach a TLS + password broker with the same options: the fleet notification
    arrives retained, and edge-fleet reads a device's retained status through it."""
    from agent.ota.fleet_cli import main as fleet_main
    from agent.ota.registry_cli import main as registry_main
    from tests.ota._registry_helpers import MODEL_NAME, make_model

    reg = tmp_path / "registry"
    assert registry_main(["init", str(reg)]) == 0
    model, manifest = make_model(tmp_path / "build", "2.0.0")
    publish = ["--registry", str(reg), "publish", str(model), "--manifest", str(manifest)]
    assert registry_main([*publish, "--notify", "--fleet-topic", "edge/fleet/tls", *_tool_tls_args(tls_broker)]) == 0
    assert f"mqtts://localhost:{tls_broker.tls_port}" in capsys.readouterr().out
    sub = _tls_sub(tls_broker, "edge/fleet/tls")  # subscribed after the fact: only a retained message arrives
    subscribers.append(sub)
    assert wait_until(lambda: len(sub.messages) >= 1, 10)
    note = json.loads(sub.messages[0].payload)
    assert (note["model"], note["version"]) == (MODEL_NAME, "2.0.0") and sub.messages[0].retain

    sink = make_sink(tmp_path / "state", tls_broker.tls_port, "tls-fleet", host="localhost",
                     tls={"enabled": True, "ca_file": str(tls_broker.ca)}, username="dev-tls",
                     password_file=str(tls_broker.password_file))  # fmt: skip
    run = RunningPipeline([sink], fps=15)
    try:

        def listed() -> bool:
            assert fleet_main(["status", "--once", "--json", "--wait", "0.5", *_tool_tls_args(tls_broker)]) == 0
            return any(row["device_id"] == "tls-fleet" for row in json.loads(capsys.readouterr().out))

        assert wait_until(listed, 15)
    finally:
        run.stop()


def test_tools_refuse_a_broker_whose_certificate_they_cannot_verify(
    tls_broker: TlsBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the test CA the system CAs do not vouch for the broker: both tools fail (exit 1) and say where."""
    from agent.ota.fleet_cli import main as fleet_main
    from agent.ota.registry_cli import main as registry_main
    from tests.ota._registry_helpers import make_model

    untrusted = ["--broker", f"localhost:{tls_broker.tls_port}", "--tls", "--username", "dev-tls",
                 "--password-file", str(tls_broker.password_file)]  # fmt: skip
    assert fleet_main(["status", "--once", "--wait", "0.2", *untrusted]) == 1
    assert f"localhost:{tls_broker.tls_port}" in capsys.readouterr().err
    reg = tmp_path / "registry"
    assert registry_main(["init", str(reg)]) == 0
    model, manifest = make_model(tmp_path / "build", "2.0.1")
    publish = ["--registry", str(reg), "publish", str(model), "--manifest", str(manifest), "--notify", *untrusted]
    assert registry_main(publish) == 1
    err = capsys.readouterr().err
    assert "not notified" in err and f"mqtts://localhost:{tls_broker.tls_port}" in err
    assert PASSWORD not in err
