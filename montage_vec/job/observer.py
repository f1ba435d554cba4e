"""Hooks for what happens around a run: metrics, cache invalidation, anything that watches.

Observers must not break a run: the runner logs and swallows their exceptions, because a
metrics push or an HTTP call failing must never lose montage data that already committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from loguru import logger

from montage_vec.config.secrets import redact
from montage_vec.job.chunks import ChunkResult
from montage_vec.job.summary import RunSummary


class RunObserver(Protocol):
    def run_started(self, summary: RunSummary) -> None: ...

    def chunk_finished(self, summary: RunSummary, result: ChunkResult) -> None: ...

    def run_finished(self, summary: RunSummary) -> None: ...


class Observers:
    """Fans each hook out to every observer, isolating their failures."""

    def __init__(self, observers: Sequence[RunObserver] = ()) -> None:
        self._observers = list(observers)

    def run_started(self, summary: RunSummary) -> None:
        for observer in self._observers:
            self._call(observer.run_started, summary, summary)

    def chunk_finished(self, summary: RunSummary, result: ChunkResult) -> None:
        for observer in self._observers:
            self._call(observer.chunk_finished, summary, summary, result)

    def run_finished(self, summary: RunSummary) -> None:
        for observer in self._observers:
            self._call(observer.run_finished, summary, summary)

    @staticmethod
    def _call(hook: object, summary: RunSummary, *args: object) -> None:
        try:
            hook(*args)  # type: ignore[operator]
        except Exception as exc:
            logger.bind(job_id=summary.job_id).error(
                "run observer failed; the run goes on",
                observer=getattr(hook, "__qualname__", str(hook)),
                error=redact(str(exc)),
            )
