"""The broker ACL the README documents: only the fleet operator may command a device; devices stay in their lane."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from .conftest import REPO, Broker, RunningPipeline, Subscriber, make_sink, wait_until

START, END = "<!-- mqtt-acl:start -->", "<!-- mqtt-acl:end -->"

pytestmark = pytest.mark.skipif(not shutil.which("mosquitto_passwd"), reason="needs mosquitto_passwd (mosquitto package)")


def readme_acl() -> str:
    text = (REPO / "README.md").read_text()
    block = text[text.index(START) + len(START) : text.index(END)]
    return block.split("```", 2)[1].removeprefix("text\n")


def _client(port: int, user: str, password: str) -> paho.Client:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"acl-{user}", protocol=paho.MQTTv5)
    c.username_pw_set(user, password)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def test_documented_acl(tmp_path: Path, subscribers: list) -> None:
    acl = tmp_path / "acl"
    acl.write_text(readme_acl())
    passwd = tmp_path / "passwd"
    for i, (user, pw) in enumerate((("dev1", "p-dev1"), ("dev2", "p-dev2"), ("fleet-operator", "p-op"))):
        args = ["mosquitto_passwd", "-b", *(["-c"] if i == 0 else []), str(passwd), user, pw]
        subprocess.run(args, check=True, capture_output=True)
    b = Broker(tmp_path / "broker", listener_extra=f"allow_anonymous false\npassword_file {passwd}\nacl_file {acl}").start()
    try:
        watch = Subscriber(b.port, ("edge/#",), username="fleet-operator", password="p-op")
        subscribers.append(watch)
        pw_file = tmp_path / "dev1.pw"
        pw_file.write_text("p-dev1\n")
        sink = make_sink(
            tmp_path / "state", b.port, "dev1", username="dev1", password_file=str(pw_file), telemetry_interval_s=0.5
        )
        run = RunningPipeline([sink], fps=20)
        try:
            # the device may publish everything it publishes
            for suffix in ("detections", "status", "availability", "counts", "telemetry"):
                assert wait_until(lambda s=suffix: bool(watch.of(s)), 10), suffix
            assert sink.forwarder is not None and sink.forwarder.rejected == 0

            intruder = _client(b.port, "dev2", "p-dev2")  # another device, valid credentials, wrong tree
            intruder.publish(
                "edge/dev1/cmd/set_threshold", json.dumps({"id": "evil", "args": {"score": 1.0}}), qos=1
            ).wait_for_publish(5)
            operator = _client(b.port, "fleet-operator", "p-op")
            operator.publish(
                "edge/dev1/cmd/set_threshold", json.dumps({"id": "ok", "args": {"score": 0.6}}), qos=1
            ).wait_for_publish(5)
            assert wait_until(lambda: bool(watch.of("cmd/set_threshold/result")), 10)
            answered = [m.json()["id"] for m in watch.of("cmd/set_threshold/result")]
            assert answered == ["ok"], "the intruder's command never reached the device"
            assert run.detector.decoder.thresholds.score == 0.6
            assert not [m for m in watch.messages if m.topic == "edge/dev1/cmd/set_threshold" and b"evil" in m.payload]
            for c in (intruder, operator):
                c.disconnect()
                c.loop_stop()
        finally:
            run.stop()
    finally:
        b.stop()
