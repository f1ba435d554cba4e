"""A full run's check-ins, read in one scan and spooled to local files by chunk.

Each row goes to the chunk its user is in (the run's own `chunked` lists); rows of users
outside the plan (another shard's, users who appeared after planning) are dropped. Routed
rows are buffered until they pass a size budget, then flushed: one Arrow IPC file per flush,
holding one record batch per chunk, in chunk order. A chunk's rows are then its batch in each
flush file, read by position (`get_batch`), so a read touches only its own rows.

Reading is thread-safe once the scan is complete: chunks in flight read concurrently, and a
chunk split on bad data reads its halves again (`extract_checkins` filters to the users asked).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from montage_vec.errors import ScratchSpaceError

NO_CHUNK = np.iinfo(np.uint32).max
CHUNK = "__montage_vec_chunk"  # the routing column, never written
# Fast enough that writing costs less than the scan, and it halves the scratch space needed.
COMPRESSION = "lz4"
SCRATCH_ADVICE = (
    "MONTAGE_SCRATCH_DIR must be a writable folder with room for about the size of the source's "
    "check-ins; or MONTAGE_FULL_RUN_READ=chunks reads them with one query per chunk instead"
)


@contextmanager
def scratch_directory(parent: str) -> Iterator[Path]:
    """A new folder under `parent`, deleted with everything in it when the block ends, however it ends."""
    try:
        path = Path(tempfile.mkdtemp(prefix="montage-vec-spool-", dir=parent))
    except OSError as exc:
        raise ScratchSpaceError(
            f"cannot create a folder in {parent} ({exc.strerror or exc}): {SCRATCH_ADVICE}"
        ) from None
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class ChunkIndex:
    """Which chunk each planned user is in, by the hash of its id: a sorted array searched per
    batch, where a join would hash every planned user again for every batch."""

    def __init__(self, chunks: Sequence[pl.Series]) -> None:
        users = pl.concat([chunk.cast(pl.String) for chunk in chunks]) if chunks else pl.Series([], dtype=pl.String)
        numbers = np.repeat(np.arange(len(chunks), dtype=np.uint32), [len(chunk) for chunk in chunks])
        self.seed = 0
        while True:  # two planned users on one 64-bit hash: practically never, but then another seed
            hashes = users.hash(self.seed).to_numpy()
            order = np.argsort(hashes)
            if not np.any(hashes[order][1:] == hashes[order][:-1]):
                break
            self.seed += 1
        self._hashes = hashes[order]
        self._users = users.gather(order)
        self._chunks = numbers[order]
        self.sizes = np.bincount(numbers, minlength=len(chunks))

    def chunks_of(self, user_ids: pl.Series) -> np.ndarray:
        """Each user's chunk number, NO_CHUNK for a user outside the plan (compared by id, not
        just by hash: a stranger whose id shares a planned user's hash is no planned user)."""
        found = np.full(len(user_ids), NO_CHUNK, dtype=np.uint32)
        if not len(self._hashes) or not len(user_ids):
            return found
        hashes = user_ids.hash(self.seed).to_numpy()
        order = np.argsort(hashes)  # sorted lookups walk the table in order: fewer cache misses
        at = np.minimum(np.searchsorted(self._hashes, hashes[order]), len(self._hashes) - 1)
        hit = np.flatnonzero(self._hashes[at] == hashes[order])
        same = (self._users.gather(at[hit]) == user_ids.cast(pl.String).gather(order[hit])).to_numpy()
        found[order[hit[same]]] = self._chunks[at[hit[same]]]
        return found


class CheckinSpool:
    """The chunks' check-ins on local disk; `add` every frame of the scan, `finish`, then read."""

    def __init__(self, directory: Path, chunks: Sequence[pl.Series], buffer_bytes: int) -> None:
        self._directory = directory
        self._index = ChunkIndex(chunks)
        self._chunk_count = len(chunks)
        self._buffer_bytes = buffer_bytes
        # Frames sorted by chunk, each with the offset where every chunk starts (and one past the end).
        self._pending: list[tuple[pl.DataFrame, np.ndarray]] = []
        self._pending_bytes = 0
        self._files: list[Path] = []
        self._places: list[list[tuple[int, int]]] = [[] for _ in chunks]  # (file, batch) per chunk
        self._columns: pl.DataFrame | None = None  # the source's columns, without rows
        self.rows = 0
        self.bytes_written = 0
        self.complete = False

    @property
    def flushes(self) -> int:
        return len(self._files)

    def add(self, frame: pl.DataFrame) -> None:
        """Route a frame of the scan to its chunks; flush when the buffered rows pass the budget."""
        if self._columns is None:
            self._columns = frame.clear()
        chunks = pl.Series(CHUNK, self._index.chunks_of(frame["user_id"]))
        routed = frame.with_columns(chunks).filter(pl.col(CHUNK) != NO_CHUNK).sort(CHUNK)
        if routed.is_empty():
            return
        starts = np.searchsorted(routed[CHUNK].to_numpy(), np.arange(self._chunk_count + 1))
        routed = routed.drop(CHUNK)
        self._pending.append((routed, starts))
        self._pending_bytes += int(routed.estimated_size())
        self.rows += routed.height
        if self._pending_bytes >= self._buffer_bytes:
            self._flush()

    def finish(self) -> None:
        """The scan is over: flush what is buffered; from now on chunks can read."""
        self._flush()
        self.complete = True

    def discard(self) -> None:
        """Delete what was spooled: a scan that failed half-way starts over in a new spool."""
        for path in self._files:
            path.unlink(missing_ok=True)
        self._files.clear()

    def extract_checkins(self, user_ids: pl.Series) -> pl.DataFrame:
        """The spooled check-ins of exactly these users (all of them in the run's plan)."""
        if not self.complete or self._columns is None:
            raise RuntimeError("the spool is read before its scan completed")
        chunks = self._index.chunks_of(user_ids)
        if np.any(chunks == NO_CHUNK):
            raise ValueError(f"{int(np.sum(chunks == NO_CHUNK))} users asked of the spool are not in the run's plan")
        asked = np.unique(chunks)
        frame = self._frame_of(asked)
        # Arrow's pool keeps what each worker thread decompressed; without this a 100,000-user
        # run grew 60 MiB per pass over the spool.
        pa.default_memory_pool().release_unused()
        if len(asked) == 1 and self._index.sizes[asked[0]] == len(user_ids) == user_ids.n_unique():
            return frame  # a whole chunk: the spool holds its users' rows and no one else's
        return frame.filter(pl.col("user_id").is_in(user_ids.implode()))

    def _frame_of(self, chunks: np.ndarray) -> pl.DataFrame:
        assert self._columns is not None
        batches = [batch for chunk in chunks for batch in self._read(int(chunk))]
        frame = pl.from_arrow(pa.Table.from_batches(batches, schema=self._columns.to_arrow().schema))
        assert isinstance(frame, pl.DataFrame)
        return frame

    def _read(self, chunk: int) -> Iterator[pa.RecordBatch]:
        try:
            for file, batch in self._places[chunk]:
                yield pa.ipc.open_file(str(self._files[file])).get_batch(batch)
        except OSError as exc:
            raise ScratchSpaceError(f"cannot read the spool in {self._directory}: {exc}") from None

    def _flush(self) -> None:
        """Write the buffered rows as one file: one record batch per chunk that has rows, in chunk order."""
        if not self._pending or self._columns is None:
            return
        number = len(self._files)
        path = self._directory / f"flush-{number:05d}.arrow"
        options = pa.ipc.IpcWriteOptions(compression=COMPRESSION)
        try:
            with pa.ipc.new_file(str(path), self._columns.to_arrow().schema, options=options) as writer:
                for batch, (chunk, rows) in enumerate(self._chunk_rows()):
                    writer.write_batch(rows.to_arrow().combine_chunks().to_batches()[0])
                    self._places[chunk].append((number, batch))
            self.bytes_written += path.stat().st_size
        except OSError as exc:
            raise ScratchSpaceError(
                f"cannot write the full run's spool to {self._directory} after {self.bytes_written} bytes "
                f"({exc}): {SCRATCH_ADVICE}"
            ) from None
        self._files.append(path)
        self._pending, self._pending_bytes = [], 0

    def _chunk_rows(self) -> Iterator[tuple[int, pl.DataFrame]]:
        """Each chunk's buffered rows, gathered from every buffered frame, in chunk order."""
        for chunk in range(self._chunk_count):
            pieces = [
                frame.slice(int(starts[chunk]), int(starts[chunk + 1] - starts[chunk]))
                for frame, starts in self._pending
                if starts[chunk + 1] > starts[chunk]
            ]
            if pieces:
                yield chunk, pl.concat(pieces, rechunk=True)
