"""Every message on ``<prefix>/cmd/#`` gets exactly one answer: empty names, nested names, unknown names, bad payloads.

Through a real broker, with the agent speaking MQTT 5 and 3.1.1 (3.1.1 has no ``no_local``: the agent
hears its own answers on ``cmd/#`` and must not answer them).
"""

from __future__ import annotations

import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .conftest import Broker, RunningPipeline, Subscriber, make_sink, wait_until

# (command name as it appears after cmd/, payload, expected error code)
CASES = [
    ("", b"{}", "unknown_command"),
    ("", b"", "unknown_command"),
    ("set_threshold/extra", b'{"args": {"score": 0.5}}', "unknown_command"),
    ("a/b/c", b"{}", "unknown_command"),
    ("reboot", b"{}", "unknown_command"),
    ("set_threshold", b"{not json", "malformed_json"),
    ("set_threshold", b"\xff\xfe", "malformed_json"),
    ("result", b"{}", "unknown_command"),
]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_every_message_on_cmd_is_answered_once(broker: Broker, tmp_path: Path, subscribers: list, protocol: str) -> None:
    watch = Subscriber(broker.port, ("edge/topics/cmd/#", "replies/topics"))
    subscribers.append(watch)
    sink = make_sink(tmp_path / "state", broker.port, "topics", telemetry_interval_s=0, protocol=protocol)
    run = RunningPipeline([sink], fps=10)
    sender = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"topics-sender-{protocol}", protocol=paho.MQTTv5)
    try:
        assert wait_until(lambda: sink.conn is not None and sink.conn.connected, 10)
        sender.connect("127.0.0.1", broker.port)
        sender.loop_start()
        for i, (name, payload, _) in enumerate(CASES):
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = "replies/topics"
            props.CorrelationData = str(i).encode()
            sender.publish(f"edge/topics/cmd/{name}", payload, qos=1, properties=props).wait_for_publish(5)

        def answers() -> list:  # on cmd/<name>/result (requests carry no device_id)
            return [m for m in watch.messages if m.topic.startswith("edge/") and m.payload.startswith(b'{"device_id"')]

        assert wait_until(lambda: len(answers()) >= len(CASES), 15), answers()
        time.sleep(1.0)  # an answer that is itself answered (a loop) would show up by now
        assert sorted(m.topic for m in answers()) == sorted(f"edge/topics/cmd/{name}/result" for name, _, _ in CASES)
        by_topic = {(m.topic, m.json()["error"]["code"]) for m in answers()}
        assert by_topic == {(f"edge/topics/cmd/{name}/result", code) for name, _, code in CASES}
        if protocol == "5":  # the MQTT 5 response topic gets each answer once too, with its correlation data
            replies = {int(m.props.CorrelationData): m.json() for m in watch.of("replies/topics")}
            assert len(watch.of("replies/topics")) == len(CASES), "exactly one answer per request"
            for i, (name, _, code) in enumerate(CASES):
                assert replies[i]["command"] == name and replies[i]["error"]["code"] == code, (name, replies[i])
        empty = next(m for m in answers() if m.topic == "edge/topics/cmd//result").json()["error"]["message"]
        assert "known:" in empty and "set_threshold" in empty, "the answer says which commands exist"
        assert run.thread.is_alive()
    finally:
        sender.disconnect()
        sender.loop_stop()
        run.stop()
