"""Fixtures of the fleet tests: the fault suite's tiny model (a real ONNX file) and a real
Mosquitto on a free loopback port."""

from tests.faults.conftest import broker, tiny_model  # noqa: F401 (fixtures)
