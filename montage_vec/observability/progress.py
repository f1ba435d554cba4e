"""A progress bar for runs watched on a terminal, drawn by tqdm on stderr.

`ProgressBar` is a run observer: it counts the users of each finished chunk against the
run's candidates, and tqdm adds the rate and the time left. When it is on, the runner logs
no line per chunk (runtime.wiring), so the terminal shows the bar, the warnings and the
summary line. The log sink clears the bar around each line it writes (observability.logging),
so lines never land in the middle of the bar.
"""

from __future__ import annotations

from typing import NoReturn, TextIO

from tqdm import tqdm

from montage_vec.job.chunks import ChunkResult
from montage_vec.job.summary import RunSummary


class ProgressBar:
    """Users done of the run's candidates, with chunks done, failed users, users/s and ETA.

    The candidates are known only once the run has found them, after `run_started`: until
    the first chunk finishes the bar counts without a total.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._bar: tqdm[NoReturn] | None = None  # a bar without an iterable yields nothing

    def run_started(self, summary: RunSummary) -> None:
        self._bar = tqdm(
            desc=_label(summary),
            unit=" users",
            file=self._stream,
            dynamic_ncols=True,
            leave=True,
        )

    def chunk_finished(self, summary: RunSummary, result: ChunkResult) -> None:
        bar = self._bar
        if bar is None:
            return
        if bar.total is None:
            bar.total = summary.candidates
        errors = len(summary.totals.failures)
        bar.set_postfix_str(f"chunks {summary.chunks}/{summary.chunks_total}, errors {errors}", False)
        bar.update(result.users)

    def run_finished(self, summary: RunSummary) -> None:
        bar, self._bar = self._bar, None
        if bar is None:
            return  # the run ended before it started processing
        if summary.status != "completed":
            bar.set_description(f"{_label(summary)} ({summary.status})", refresh=False)
        bar.close()


def _label(summary: RunSummary) -> str:
    """The bar's prefix: the run's mode, and whether it is a dry run."""
    return f"{summary.mode} (dry run)" if summary.dry_run else summary.mode
