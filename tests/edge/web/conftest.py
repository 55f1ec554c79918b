"""Fixtures of the page tests: the tiny model and a run directory (tests/faults)."""

from tests.faults.conftest import tiny_model, workdir  # noqa: F401 (fixtures)
