"""The ``mqtt`` sink: durable store-and-forward to an MQTT broker, telemetry, commands, HA discovery.

Layout (one responsibility per module):

- ``config.py``     the sink's settings (``type: mqtt`` in ``sinks:``)
- ``topics.py``     the topic tree
- ``payloads.py``   every payload as a pydantic model; JSON Schema export
- ``client.py``     the paho-mqtt 2.x connection (MQTT 5/3.1.1, TLS, will, back-off)
- ``outbox.py``     the SQLite outbox: storage, bounds, drop policy
- ``forwarder.py``  the outbox's writer thread: commit, publish in order, delete on PUBACK, replay
- ``commands.py``   command validation, HMAC, dispatch (no I/O)
- ``controls.py``   what commands do to the running agent
- ``discovery.py``  Home Assistant device discovery
- ``reporting.py``  retained status, periodic telemetry, the status file (the ticker thread)
- ``sink.py``       the Sink that wires them together
- ``tail.py``, ``bench.py``  the ``tail`` and ``bench-mqtt`` commands (registered by ``agent/mqtt_cli.py``)

paho-mqtt and sqlite-utils are imported when the sink starts, not when the registry loads it.
"""

from agent.sinks.mqtt.config import MqttSinkConfig
from agent.sinks.mqtt.sink import MqttSink

__all__ = ["MqttSink", "MqttSinkConfig"]
