"""The sink interface every result destination implements.

The pipeline hands each closed batch (:class:`edge.service.pipeline.batch.BatchReport`,
a typed result) to every configured sink; the sink turns it into its own format (the
JSON ``psd`` payload: :func:`edge.sinks.psd_payload.psd_payload`). A sink must not lose
a report it accepted: it either delivers it, persists it for later delivery (the MQTT
outbox), or raises so that the pipeline can log and count the failure. A sink whose
configuration says ``required = true`` must have accepted a batch before the batch's
frames are acknowledged to the source; the pipeline calls ``publish`` again for that
sink alone (with back-off) until it succeeds, so ``publish`` must leave no half-written
report behind when it raises. ``publish`` should not block for long: a call that does
not return within ``[health] stall_s`` counts as a stuck stage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from edge.service.pipeline.batch import BatchReport


@runtime_checkable
class Publishable(Protocol):
    """What the delivery of a report reads of it (the report is a ``BatchReport``)."""

    batch_id: int


@runtime_checkable
class Sink(Protocol):
    name: str

    def open(self) -> None:
        """Connect / open files. Called once before the first report."""
        ...

    def publish(self, report: BatchReport) -> None:
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
