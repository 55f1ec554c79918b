"""Result sinks: where batch reports go (JSON lines, MQTT, ...)."""
