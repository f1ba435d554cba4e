"""The job's memory model, and how many check-ins a chunk may hold within MONTAGE_MEMORY_BUDGET.

A run's peak memory is a base (the interpreter, Polars, PyArrow, the driver) plus what each
chunk in flight holds at once: its check-ins as Arrow and Polars frames, the tag rows, the
montages and items, and the staged copies of those. All of it grows with the chunk's
check-ins, so

    peak RSS ~ BASE_BYTES + BYTES_PER_CHECKIN x check-ins per chunk x chunks in flight

Both numbers come from the benchmark's batch-size sweep (benchmarks/results.md, 100,000
users, 20 check-ins each, PostgreSQL, with the image's allocator setting, which keeps freed
memory for a second): 296 MiB at 50,000 check-ins per chunk and 411 MiB at 100,000 with one
chunk in flight, 372 and 559 MiB with two. Longer texts and more tags per check-in cost more;
the model is a warning threshold, not a guarantee.

An out-of-memory kill records nothing itself (the next run marks it `abandoned`), so the
chunk that is about to exceed the budget says so in the log first, with its size.
"""

from __future__ import annotations

BASE_BYTES = 180 * 2**20
BYTES_PER_CHECKIN = 2000


def chunk_checkin_budget(memory_budget: int, chunks_in_flight: int) -> int:
    """The most check-ins one chunk may hold for the run to stay within `memory_budget` bytes."""
    return max(0, memory_budget - BASE_BYTES) // (BYTES_PER_CHECKIN * max(1, chunks_in_flight))


# A full run's scan (job/spool.py) holds, besides the base, the frame it is routing (16,384
# rows, about 4 MB, and a copy or two while it is routed) and the rows it buffers before it
# writes them out, which the allocator keeps about twice over. Measured on 100,000 users:
# 327 MiB peak with 26 MiB buffered, 431 MiB with 52 MiB (and 65,536-row frames), and what
# the scan leaves allocated adds to the chunks' peak. A larger buffer only cuts the pieces
# each chunk is read back from (one per flush); a thirty-second of the budget above the base
# keeps the scan near the chunks' own peak.
SPOOL_BUDGET_SHARE = 32
MIN_SPOOL_BUFFER_BYTES = 8 * 2**20


def spool_buffer_budget(memory_budget: int) -> int:
    """The bytes of routed check-ins a full run's scan buffers before it writes them to the spool."""
    return max(MIN_SPOOL_BUFFER_BYTES, (memory_budget - BASE_BYTES) // SPOOL_BUDGET_SHARE)
