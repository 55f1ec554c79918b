"""Fixtures of the fleet tests: the fault suite's tiny model (a real ONNX file)."""

from tests.faults.conftest import tiny_model  # noqa: F401 (fixture)
