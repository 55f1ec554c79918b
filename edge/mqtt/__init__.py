"""The MQTT sink (``[sinks.mqtt]``): store-and-forward outbox, JSON topics or Sparkplug B.

Import the pieces from their modules: ``edge.mqtt.config.MqttConfig`` (the section),
``edge.mqtt.sink.MqttSink`` (the ``Sink``), ``edge.mqtt.connection`` (one broker
connection: feeding the outbox, acknowledgements, clean stop), ``edge.mqtt.outbox.Outbox``,
``edge.mqtt.payloads`` (status, health and command payloads; the ``psd`` payload is
:mod:`edge.sinks.psd_payload`, shared with the JSON-lines sink), ``edge.mqtt.jsonmode``
and ``edge.mqtt.sparkplug`` (the two topic modes).
"""
