"""The one interface every way a model runs answers, as Polygraphy's runners share one base: a
local bundle (:class:`~medexport.engine.model.Model`) and a model served by ``medexport serve``
(:class:`~medexport.engine.remote.RemoteModel`). The CLI, the viewer and the pipeline ask only this."""
from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Runner(Protocol):
    study_kind: str  # "image" or "ecg": which studies it reads
    batches_locally: bool  # True: prepare + complete_many here, in one runtime pass; False: the server batches
    provenance: object  # model id, version, bundle SHA-256, backend, precision, device

    def predict(self, source, **options):
        """One study: a path or an array, with the task's options; a Result."""

    def prepare(self, source, **options):
        """Read and preprocess one study (a local runner; a served one raises)."""

    def complete_many(self, prepared: list) -> list:
        """Run prepared studies in one pass (a local runner; a served one raises)."""

    def self_test(self, threads: int = 4):
        """The bundle's golden inputs through this runner against the source model (a SelfTest)."""

    def close(self) -> None:
        """Free the runtime (or the connection)."""
