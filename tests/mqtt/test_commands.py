"""Remote commands: each command, each way of getting it wrong, HMAC, a 10,000-payload fuzz, the wire path."""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as paho
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.backends.base import BackendOptions
from agent.demo import demo_model_path
from agent.detector import load_detector
from agent.pipeline import Pipeline
from agent.sinks.base import AgentContext
from agent.sinks.mqtt.commands import COMMAND_ARGS, CommandHandler, HmacVerifier, ReplyTo, sign_request
from agent.sinks.mqtt.config import CommandsConfig
from agent.sinks.mqtt.controls import AgentControls
from agent.sinks.mqtt.payloads import CommandResult
from agent.sources.synthetic import SyntheticConfig, SyntheticSource

from .conftest import Broker, RunningPipeline, Subscriber, make_sink, wait_until


class Harness:
    """A CommandHandler over real AgentControls on an idle pipeline; replies are collected."""

    def __init__(self, tmp: Path, config_path: Path | None = None, key: bytes | None = None, clock: Any = time.time) -> None:
        self.detector = load_detector(demo_model_path("tflite-int8"), BackendOptions(threads=1))
        self.pipeline = Pipeline(self.detector, SyntheticSource(SyntheticConfig()), [])
        config = None
        if config_path is not None:
            from agent.config import load_config

            config = load_config(config_path)
        self.policy = "with_detections"
        self.replies: list[tuple[str, CommandResult, ReplyTo | None]] = []
        self.controls = AgentControls(
            self.pipeline,
            AgentContext("dev1", tmp / "state", config_path, config),
            CommandsConfig(snapshot_timeout_s=0.001),
            run_later=lambda fn: (fn(), True)[1],
            publish_jpeg=lambda jpeg: True,
            apply_live_config=lambda cfg: {"publish": cfg.publish} if cfg and cfg.publish != self.policy else {},
            get_policy=lambda: self.policy,
            set_policy=lambda p: setattr(self, "policy", p),
            on_config_reloaded=lambda h: None,
        )
        verifier = HmacVerifier(key, 300, clock) if key else None
        self.handler = CommandHandler("dev1", self.controls, lambda n, r, t: self.replies.append((n, r, t)), verifier)

    def send(self, name: str, payload: Any) -> CommandResult:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        before = len(self.replies)
        result = self.handler.handle(name, raw)
        assert result is not None and len(self.replies) == before + 1
        return result


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    h.detector.close()


def test_set_threshold(harness: Harness) -> None:
    r = harness.send("set_threshold", {"id": "a1", "args": {"score": 0.7, "max_detections": 5}})
    assert r.ok and r.id == "a1" and r.result is not None and r.result["thresholds"]["score"] == 0.7
    assert harness.detector.decoder.thresholds.score == 0.7 and harness.detector.decoder.thresholds.max_detections == 5
    assert harness.detector.decoder.thresholds.iou == r.result["previous"]["iou"], "unnamed fields keep their value"


@pytest.mark.parametrize(
    ("name", "payload", "code", "field"),
    [
        ("set_threshold", {"args": {"score": "0.5"}}, "invalid_args", "args.score"),
        ("set_threshold", {"args": {"score": 1.5}}, "invalid_args", "args.score"),
        ("set_threshold", {"args": {"score": True}}, "invalid_args", "args.score"),
        ("set_threshold", {"args": {}}, "invalid_args", "args"),
        ("set_threshold", {"args": {"scor": 0.5}}, "invalid_args", "args.scor"),
        ("set_publish_policy", {"args": {"policy": "sometimes"}}, "invalid_args", "args.policy"),
        ("snapshot", {"args": {"quality": 500}}, "invalid_args", "args.quality"),
        ("set_threshold", {"id": 7, "args": {"score": 0.5}}, "invalid_request", "id"),
        ("set_threshold", {"args": [0.5]}, "invalid_request", "args"),
        ("set_threshold", {"argz": {}}, "invalid_request", "argz"),
        ("set_threshold", b"{not json", "malformed_json", None),
        ("set_threshold", b"\xff\xfe", "malformed_json", None),
        ("set_threshold", b"[1, 2]", "invalid_request", None),
        ("reboot", {}, "unknown_command", None),
        ("check_update", {}, "not_available", None),
        ("reload_config", {}, "failed", None),
    ],
)
def test_bad_commands_get_an_error_result(harness: Harness, name: str, payload: Any, code: str, field: str | None) -> None:
    before = harness.detector.decoder.thresholds
    r = harness.send(name, payload)
    assert not r.ok and r.error is not None and r.error.code == code, r
    assert r.error.field == field
    assert r.command == name and r.device_id == "dev1"
    assert harness.detector.decoder.thresholds == before


def test_empty_payload_means_no_args(harness: Harness) -> None:
    assert harness.send("check_update", b"").error.code == "not_available"  # type: ignore[union-attr]
    assert harness.send("set_publish_policy", b"").error.code == "invalid_args"  # type: ignore[union-attr]


def test_set_publish_policy(harness: Harness) -> None:
    r = harness.send("set_publish_policy", {"args": {"policy": "on_change"}})
    assert r.ok and r.result == {"policy": "on_change", "previous": "with_detections"} and harness.policy == "on_change"


def test_reload_config_applies_live_settings_and_lists_the_rest(tmp_path: Path) -> None:
    doc = {"device_id": "dev1", "model": {"threads": 1}, "sinks": [{"type": "mqtt", "publish": "with_detections"}]}
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(doc))
    h = Harness(tmp_path, config_path=path)
    try:
        doc["model"]["score_threshold"] = 0.8  # type: ignore[index]
        doc["sinks"][0]["publish"] = "every_frame"  # type: ignore[index]
        doc["source"] = {"type": "synthetic", "fps": 5}
        path.write_text(yaml.safe_dump(doc))
        r = h.send("reload_config", {})
        assert r.ok and r.result is not None
        assert r.result["applied"]["thresholds"]["score"] == 0.8 and r.result["applied"]["publish"] == "every_frame"
        assert r.result["restart_required"] == ["source"]
        assert h.detector.decoder.thresholds.score == 0.8
        path.write_text("model:\n  threads: -3\n")
        bad = h.send("reload_config", {})
        assert not bad.ok and bad.error is not None and bad.error.field == "model.threads" and "threads" in bad.error.message
        assert h.detector.decoder.thresholds.score == 0.8, "a bad file changes nothing"
    finally:
        h.detector.close()


def test_hmac(tmp_path: Path) -> None:
    key = b"s3cret-shared-key"
    now = [1_800_000_000.0]
    h = Harness(tmp_path, key=key, clock=lambda: now[0])
    try:
        good = sign_request(key, "set_threshold", {"id": "r1", "ts": int(now[0]), "args": {"score": 0.6}})
        assert h.send("set_threshold", good).ok
        assert h.send("set_threshold", good).error.code == "replayed"  # type: ignore[union-attr]
        unsigned = {"id": "r2", "ts": int(now[0]), "args": {"score": 0.6}}
        assert h.send("set_threshold", unsigned).error.field == "hmac"  # type: ignore[union-attr]
        tampered = {
            **sign_request(key, "set_threshold", {"id": "r3", "ts": int(now[0]), "args": {"score": 0.6}}),
            "args": {"score": 0.1},
        }
        assert h.send("set_threshold", tampered).error.code == "unauthorized"  # type: ignore[union-attr]
        other_command = sign_request(key, "set_threshold", {"id": "r4", "ts": int(now[0]), "args": {}})
        assert h.send("check_update", other_command).error.code == "unauthorized"  # type: ignore[union-attr]
        old = sign_request(key, "set_threshold", {"id": "r5", "ts": int(now[0]) - 3600, "args": {"score": 0.6}})
        assert h.send("set_threshold", old).error.field == "ts"  # type: ignore[union-attr]
        wrong_key = sign_request(b"other", "set_threshold", {"id": "r6", "ts": int(now[0]), "args": {"score": 0.6}})
        assert h.send("set_threshold", wrong_key).error.code == "unauthorized"  # type: ignore[union-attr]
        assert h.detector.decoder.thresholds.score == 0.6
    finally:
        h.detector.close()


# ---- fuzz ------------------------------------------------------------------------------------
scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
json_values = scalars | st.lists(scalars, max_size=3) | st.dictionaries(st.text(max_size=6), scalars, max_size=3)
arg_keys = ["score", "iou", "max_detections", "policy", "publish", "save", "annotate", "quality"]
near_args = st.dictionaries(
    st.sampled_from(arg_keys) | st.text(max_size=8),
    json_values | st.floats(0, 1) | st.integers(0, 200) | st.sampled_from(["every_frame", "on_change", "with_detections"]),
    max_size=4,
)
requests = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(max_size=20) | json_values,
        "args": near_args | json_values,
        "ts": st.integers() | json_values,
        "hmac": st.text(max_size=70) | json_values,
        "junk": json_values,
    },
)
payloads = st.one_of(
    requests.map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=120),
    st.text(max_size=60).map(str.encode),
    st.just(b""),
)
names = st.sampled_from([*COMMAND_ARGS, "cmd", "result", ""]) | st.text(
    st.characters(exclude_characters="/+#\x00"), min_size=1, max_size=16
)


@pytest.fixture(scope="module")
def fuzz_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    h = Harness(tmp_path_factory.mktemp("fuzz"))
    yield h
    h.detector.close()


FUZZ_COUNT = {"n": 0}


@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(name=names, payload=payloads)
def test_fuzz_every_command_is_answered_and_nothing_crashes(fuzz_harness: Harness, name: str, payload: bytes) -> None:
    h = fuzz_harness
    before = len(h.replies)
    result = h.handler.handle(name, payload)
    if result is None:  # a snapshot waiting for a frame: the idle pipeline never delivers one, the timeout answers
        h.controls.expire_snapshots(now=math.inf)
    assert len(h.replies) == before + 1, "exactly one answer per command"
    replied = h.replies[-1][1]
    assert replied.command == name.encode("utf-8", "backslashreplace").decode() and json.loads(replied.model_dump_json())
    if name not in COMMAND_ARGS:
        assert not replied.ok
    t = h.detector.decoder.thresholds
    assert 0 <= t.score <= 1 and 0 <= t.iou <= 1 and t.max_detections >= 1
    FUZZ_COUNT["n"] += 1


def test_fuzz_ran_ten_thousand_payloads() -> None:
    assert FUZZ_COUNT["n"] >= 10_000, "run together with the fuzz test"


# ---- the wire ---------------------------------------------------------------------------------
def _wire_payloads(n: int, seed: int = 7) -> list[tuple[str, bytes]]:
    rnd = random.Random(seed)
    good = [
        ("set_threshold", {"args": {"score": 0.5}}),
        ("set_publish_policy", {"args": {"policy": "every_frame"}}),
        ("check_update", {}),
        ("snapshot", {"args": {"publish": True}}),
    ]
    out = []
    for i in range(n):
        kind = i % 6
        if kind == 0:
            name, doc = rnd.choice(good)
            out.append((name, json.dumps({"id": f"w{i}", **doc}).encode()))
        elif kind == 1:
            out.append((rnd.choice(list(COMMAND_ARGS)), bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 40)))))
        elif kind == 2:
            out.append(("set_threshold", json.dumps({"args": {"score": rnd.choice(["x", None, [], 2, -1, {}])}}).encode()))
        elif kind == 3:
            out.append((f"nope{i}", b"{}"))
        elif kind == 4:
            out.append(("set_publish_policy", b'{"args": {"policy": 3}}'))
        else:
            out.append(("reload_config", b'{"args": {"now": true}}'))
    return out


def test_commands_over_the_broker_are_all_answered(broker: Broker, tmp_path: Path, subscribers: list) -> None:
    results = Subscriber(broker.port, ("edge/wire/cmd/+/result", "replies/wire", "edge/wire/snapshot"))
    subscribers.append(results)
    sink = make_sink(tmp_path / "state", broker.port, "wire", telemetry_interval_s=0)
    run = RunningPipeline([sink], fps=30)
    sender = paho.Client(CallbackAPIVersion.VERSION2, client_id="wire-sender", protocol=paho.MQTTv5)
    try:
        assert wait_until(lambda: sink.conn is not None and sink.conn.connected, 10)
        sender.connect("127.0.0.1", broker.port)
        sender.loop_start()
        sent = _wire_payloads(300)
        for i, (name, payload) in enumerate(sent):
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = "replies/wire"
            props.CorrelationData = str(i).encode()
            sender.publish(f"edge/wire/cmd/{name}", payload, qos=1, properties=props).wait_for_publish(5)
        assert wait_until(lambda: len(results.of("wire")) >= len(sent), 30), len(results.of("wire"))
        replies = results.of("wire")
        correlations = sorted(int(m.props.CorrelationData) for m in replies)
        assert correlations == list(range(len(sent))), "each request answered exactly once on its response topic"
        on_result_topics = [m for m in results.messages if m.topic.endswith("/result")]
        assert len(on_result_topics) == len(sent)
        by_corr = {int(m.props.CorrelationData): m.json() for m in replies}
        for i, (name, _) in enumerate(sent):
            answer = by_corr[i]
            assert answer["command"] == name
            if name == "snapshot" and i % 6 == 0 and not answer["ok"]:  # at most 4 wait for a frame; a burst gets "busy"
                assert answer["error"]["code"] == "busy", answer
                continue
            assert answer["ok"] == (i % 6 == 0 and name != "check_update"), answer
        assert run.thread.is_alive(), "the agent carried on"
    finally:
        sender.disconnect()
        sender.loop_stop()
        run.stop()


def test_snapshot_and_threshold_over_the_broker(broker: Broker, tmp_path: Path, subscribers: list) -> None:
    sub = Subscriber(broker.port, ("edge/snap/#",))
    subscribers.append(sub)
    sink = make_sink(tmp_path / "state", broker.port, "snap", telemetry_interval_s=0)
    run = RunningPipeline([sink], fps=30)
    sender = paho.Client(CallbackAPIVersion.VERSION2, client_id="snap-sender", protocol=paho.MQTTv311)  # 3.1.1 works too
    try:
        assert wait_until(lambda: sink.conn is not None and sink.conn.connected, 10)
        sender.connect("127.0.0.1", broker.port)
        sender.loop_start()
        sender.publish("edge/snap/cmd/snapshot", json.dumps({"id": "s1", "args": {"save": True, "quality": 70}}), qos=1)
        jpegs = lambda: [m for m in sub.messages if m.topic == "edge/snap/snapshot"]  # noqa: E731
        assert wait_until(lambda: sub.of("cmd/snapshot/result") and jpegs(), 10)
        result = sub.of("cmd/snapshot/result")[0].json()
        assert result["ok"] and result["id"] == "s1", result
        image = cv2.imdecode(np.frombuffer(jpegs()[0].payload, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (480, 640, 3) and result["result"]["bytes"] == len(jpegs()[0].payload)
        assert Path(result["result"]["path"]).is_file()

        sender.publish("edge/snap/cmd/set_threshold", json.dumps({"args": {"score": 0.99}}), qos=1)
        assert wait_until(lambda: sub.of("cmd/set_threshold/result"), 10)
        assert sub.of("cmd/set_threshold/result")[0].json()["ok"]
        mark = threading.Event()
        time.sleep(0.3)
        start = len(sub.of("detections"))
        assert wait_until(lambda: len(sub.of("detections")) > start + 10, 10)
        later = [m.json() for m in sub.of("detections")[start + 2 :]]
        assert all(d["score"] >= 0.99 for m in later for d in m["result"]["detections"])
        assert not mark.is_set()
    finally:
        sender.disconnect()
        sender.loop_stop()
        run.stop()
