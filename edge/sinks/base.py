"""The sink interface every result destination implements.

The pipeline hands each closed batch to every configured sink. A sink must not lose a
report it accepted: it either delivers it, persists it for later delivery (the MQTT
outbox), or raises so that the pipeline can log and count the failure.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Publishable(Protocol):
    """What a sink receives: a batch report (``edge.batch.BatchReport`` in the runtime)."""

    batch_id: int

    def to_payload(self) -> dict[str, Any]:
        """Plain-JSON dict of the batch (the ``.../psd`` MQTT payload)."""
        ...


@runtime_checkable
class Sink(Protocol):
    name: str

    def open(self) -> None:
        """Connect / open files. Called once before the first report."""
        ...

    def publish(self, report: Publishable) -> None:
        """Deliver or durably queue one closed batch report."""
        ...

    def publish_health(self, health: dict[str, Any]) -> None:
        """Periodic health snapshot (frames/s, queue depths, last error, ...)."""
        ...

    def health(self) -> dict[str, Any]:
        """The sink's own state for the health payload (connected, outbox depth, ...)."""
        ...

    def close(self) -> None:
        """Flush and close; called once on shutdown."""
        ...
