"""The spool of a full run's scan (job/spool.py): for every chunk, and every part of one a split
chunk asks for, exactly the rows the chunk's own query returns, however many flushes it took.

A chunk is `chunked(users, batch_size)`'s list, as the runner makes it; the plan holds users
without check-ins (montages or the retry list made them candidates) and leaves out users of
the source (another shard's, or new since planning), whose rows the spool drops.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal

from montage_vec.config import load_settings
from montage_vec.errors import ScratchSpaceError
from montage_vec.job import spool as spool_module
from montage_vec.job.plan import chunked
from montage_vec.job.spool import CheckinSpool, ChunkIndex, scratch_directory
from montage_vec.stores import SqlSession, open_store
from tests.support.data import AS_OF, SyntheticDatabase, checkin, checkin_frame, load_checkins, load_frame, new_id

BATCH_SIZE = 7
TINY_BUFFER = 16 * 1024  # a few hundred rows: every frame of the scan flushes


@pytest.fixture
def session(database_url: str) -> Iterator[SqlSession]:
    with open_store(load_settings(database_url=database_url).database()) as store, store.session() as opened:
        yield opened


def _spool(session: SqlSession, directory: Path, chunks: list[pl.Series], batch_rows: int = 100) -> CheckinSpool:
    spool = CheckinSpool(directory, chunks, TINY_BUFFER)
    for frame in session.stream_checkins(batch_rows):
        spool.add(frame)
    spool.finish()
    return spool


def _parts(chunk: pl.Series) -> Iterator[pl.Series]:
    """Every run of consecutive users of a chunk: the chunk itself, the halves and single users a
    split asks for, and all the others."""
    for start in range(len(chunk)):
        for end in range(start + 1, len(chunk) + 1):
            yield chunk.slice(start, end - start)


def test_every_chunk_and_part_of_one_reads_what_its_query_returns(
    database_url: str, session: SqlSession, tmp_path: Path
) -> None:
    database = SyntheticDatabase(database_url, users=40)
    load_frame(database_url, database.frame())
    odd = new_id()  # odd tags, a deleted and a private check-in
    load_checkins(
        database_url,
        [
            checkin(odd, database.as_of, tags=[" Coffee ", "coffee", ""]),
            checkin(odd, database.as_of, deleted_at=database.as_of),
            checkin(odd, database.as_of, privacy="private"),
        ],
    )
    outsider = database.user_ids()[5]  # in the source, not in the plan
    without_checkins = [new_id() for _ in range(3)]
    planned = sorted({*database.user_ids(), odd, *without_checkins} - {outsider})
    chunks = list(chunked(pl.Series("user_id", planned), BATCH_SIZE))

    spool = _spool(session, tmp_path, chunks)

    assert spool.flushes > 1
    assert spool.rows == database.frame().height + 3 - database.frame()["user_id"].eq(outsider).sum()
    for chunk in chunks:
        for part in _parts(chunk):
            expected = session.extract_checkins(part).sort("id")
            assert_frame_equal(spool.extract_checkins(part).sort("id"), expected)
    for user in without_checkins:
        assert spool.extract_checkins(pl.Series("user_id", [user])).is_empty()
    with pytest.raises(ValueError, match="not in the run's plan"):
        spool.extract_checkins(pl.Series("user_id", [outsider]))


def test_a_source_without_rows_spools_nothing_and_reads_the_engines_columns(
    database_url: str, session: SqlSession, tmp_path: Path
) -> None:
    session.migrate()
    users = pl.Series("user_id", sorted(new_id() for _ in range(3)))

    spool = _spool(session, tmp_path, list(chunked(users, 2)))

    assert (spool.rows, spool.flushes) == (0, 0)
    assert_frame_equal(spool.extract_checkins(users), session.extract_checkins(users))


def test_a_spool_is_not_read_before_its_scan_completed(tmp_path: Path) -> None:
    user = new_id()
    spool = CheckinSpool(tmp_path, [pl.Series("user_id", [user])], TINY_BUFFER)
    spool.add(checkin_frame([checkin(user, AS_OF)]))
    with pytest.raises(RuntimeError, match="before its scan completed"):
        spool.extract_checkins(pl.Series("user_id", [user]))


def test_the_index_finds_each_planned_users_chunk_and_no_other() -> None:
    users = pl.Series("user_id", sorted(new_id() for _ in range(50)))
    chunks = list(chunked(users, 6))
    index = ChunkIndex(chunks)

    found = index.chunks_of(pl.concat([users.reverse(), pl.Series([new_id(), new_id()])]))

    assert found[:50].tolist() == [number // 6 for number in reversed(range(50))]
    assert found[50:].tolist() == [spool_module.NO_CHUNK] * 2


def test_a_full_scratch_disk_ends_the_run_naming_the_folder_and_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(*_args: object, **_kwargs: object) -> pa.ipc.RecordBatchFileWriter:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool_module.pa.ipc, "new_file", no_space)
    user = new_id()
    spool = CheckinSpool(tmp_path, [pl.Series("user_id", [user])], TINY_BUFFER)
    spool.add(checkin_frame([checkin(user, AS_OF)]))

    with pytest.raises(ScratchSpaceError) as raised:
        spool.finish()
    message = str(raised.value)
    assert "No space left on device" in message
    assert str(tmp_path) in message
    assert "MONTAGE_SCRATCH_DIR" in message


def test_the_scratch_folder_is_removed_however_the_block_ends(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), scratch_directory(str(tmp_path)) as directory:
        (directory / "flush-00000.arrow").write_bytes(b"rows")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_an_unusable_scratch_folder_is_named_with_the_setting(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")

    with pytest.raises(ScratchSpaceError) as raised, scratch_directory(str(not_a_folder / "scratch")):
        pass
    assert f"cannot create a folder in {not_a_folder / 'scratch'}" in str(raised.value)
    assert "MONTAGE_SCRATCH_DIR" in str(raised.value)
