"""The device's topic tree, in one place (README "MQTT" lists the same table).

    <prefix>/detections          detection messages (QoS 1, via the outbox)
    <prefix>/events              camera lost/back, model changes, errors (QoS 1, via the outbox)
    <prefix>/telemetry           periodic telemetry (QoS 1, via the outbox; dropped first when full)
    <prefix>/status              retained agent status
    <prefix>/availability        retained ``online`` / ``offline`` (the will)
    <prefix>/counts              retained per-label counts of the latest frame (Home Assistant state)
    <prefix>/snapshot            JPEG bytes answered to the ``snapshot`` command
    <prefix>/cmd/<name>          commands in (every message under cmd/, except .../result, is answered)
    <prefix>/cmd/<name>/result   command results out

The default prefix is ``edge/<device_id>``.
"""

from __future__ import annotations

from dataclasses import dataclass

AVAILABLE = "online"
NOT_AVAILABLE = "offline"


@dataclass(frozen=True)
class Topics:
    prefix: str

    @classmethod
    def for_device(cls, device_id: str, prefix: str | None = None) -> Topics:
        return cls(prefix or f"edge/{device_id}")

    @property
    def detections(self) -> str:
        return f"{self.prefix}/detections"

    @property
    def events(self) -> str:
        return f"{self.prefix}/events"

    @property
    def telemetry(self) -> str:
        return f"{self.prefix}/telemetry"

    @property
    def status(self) -> str:
        return f"{self.prefix}/status"

    @property
    def availability(self) -> str:
        return f"{self.prefix}/availability"

    @property
    def counts(self) -> str:
        return f"{self.prefix}/counts"

    @property
    def snapshot(self) -> str:
        return f"{self.prefix}/snapshot"

    @property
    def commands(self) -> str:
        """The subscription filter for every command: all of ``cmd/#``, so even a malformed name gets its answer."""
        return f"{self.prefix}/cmd/#"

    def command(self, name: str) -> str:
        return f"{self.prefix}/cmd/{name}"

    def command_result(self, name: str) -> str:
        return f"{self.prefix}/cmd/{name}/result"

    def command_name(self, topic: str) -> str | None:
        """The command name of a ``<prefix>/cmd/<name>`` topic (maybe empty or nested), else None.

        ``cmd/<anything>/result`` is where answers go, so it is not a command (answering it would loop).
        """
        head = f"{self.prefix}/cmd/"
        if not topic.startswith(head):
            return None
        name = topic[len(head) :]
        return None if name.endswith("/result") else name

    @property
    def everything(self) -> str:
        return f"{self.prefix}/#"
