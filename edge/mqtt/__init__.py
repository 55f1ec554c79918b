"""MQTT sink: versioned payloads, store-and-forward outbox, JSON topics or Sparkplug B.

Import the pieces from their modules: ``edge.mqtt.config.MqttConfig``,
``edge.mqtt.payloads`` (``PsdPayload``, ``StatusPayload``, ``HealthPayload``),
``edge.mqtt.outbox.Outbox``, ``edge.mqtt.sink.MqttSink``.
"""

from edge.mqtt.config import MqttConfig
from edge.mqtt.payloads import HealthPayload, PsdPayload, StatusPayload

__all__ = ["HealthPayload", "MqttConfig", "PsdPayload", "StatusPayload"]
