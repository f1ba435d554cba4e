"""`montage-vec once`: every line of a run carries its job id, the configuration line included; on
a terminal a progress bar replaces the line per chunk. (Flags: tests/cli/test_options.py; files it
must not create: test_no_surprising_writes.py.)"""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.cli import RunCli, parse_logs
from tests.support.data import AS_OF, checkin, days, load_checkins, new_id
from tests.support.database import query
from tests.support.processes import SCRIPTS, job_env


def test_every_line_of_a_debug_run_carries_the_runs_job_id(duckdb_url: str, run_cli: RunCli) -> None:
    load_checkins(duckdb_url, [checkin(new_id(), AS_OF - days(i + 1), tags=["tea"]) for i in range(3)])
    env = {"DATABASE_URL": duckdb_url, "DEBUG": "true"}

    result = run_cli("once", "--as-of", AS_OF.isoformat(), env=env)

    assert result.exit_code == 0, result.everything()
    assert result.messages()[0] == "effective configuration", result.messages()
    without = [entry["message"] for entry in result.logs if "job_id" not in entry]
    assert not without, f"lines without job_id: {without}"
    [job_id] = {entry["job_id"] for entry in result.logs}
    assert query(duckdb_url, "SELECT job_id FROM montage_job_runs")["job_id"].to_list() == [job_id]


def test_a_run_that_cannot_start_names_its_job_id_too(tmp_path: Path, run_cli: RunCli) -> None:
    result = run_cli("once", env={"DATABASE_URL": f"duckdb:///{tmp_path}/missing.duckdb", "DEBUG": "true"})

    assert result.exit_code == 3, result.everything()
    configuration, failed = result.log("effective configuration"), result.log("Batch job failed")
    assert configuration["job_id"] == failed["job_id"]


def test_disabled_batch_processing_runs_nothing(duckdb_url: str, run_cli: RunCli) -> None:
    load_checkins(duckdb_url, [checkin(new_id(), AS_OF - days(1))])
    env = {"DATABASE_URL": duckdb_url, "ENABLE_BATCH_PROCESSING": "false", "DEBUG": "true"}

    result = run_cli("once", env=env)

    assert result.exit_code == 0, result.everything()
    assert result.messages()[-1].startswith("batch processing is disabled"), result.messages()
    assert all("job_id" not in entry for entry in result.logs), "no run, no job id"
    assert query(duckdb_url, "SELECT count(*) AS n FROM montage_job_runs")["n"][0] == 0


@contextmanager
def terminal(rows: int = 24, columns: int = 100) -> Iterator[tuple[int, list[bytes]]]:
    """A pseudo-terminal of that size: its end for a child, and what was drawn on it (filled on exit)."""
    master, child_end = pty.openpty()
    fcntl.ioctl(child_end, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    drawn: list[bytes] = []

    def pump() -> None:  # read as it comes, so that a full buffer never blocks the child
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: no writer is left
                return
            if not chunk:
                return
            drawn.append(chunk)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        yield child_end, drawn
    finally:
        os.close(child_end)
        reader.join(timeout=10)
        os.close(master)


def test_on_a_terminal_a_progress_bar_replaces_the_chunk_lines(duckdb_url: str, tmp_path: Path) -> None:
    """stderr on a terminal (a pseudo-terminal here), stdout a pipe, as with `montage-vec once | tee log`."""
    load_checkins(duckdb_url, [checkin(new_id(), AS_OF - days(1)) for _ in range(3)])
    command = [str(SCRIPTS / "montage-vec"), "once", "--as-of", AS_OF.isoformat(), "--batch-size", "1"]
    with terminal() as (stderr, drawing):
        completed = subprocess.run(
            command, env=job_env(DATABASE_URL=duckdb_url), cwd=tmp_path, stdout=subprocess.PIPE, stderr=stderr,
            stdin=subprocess.DEVNULL, text=True, timeout=120, check=False,
        )  # fmt: skip
    drawn = b"".join(drawing).decode(errors="replace")

    assert completed.returncode == 0, completed.stdout + drawn
    messages = [entry["message"] for entry in parse_logs(completed.stdout)]
    assert "chunk committed" not in messages and messages[-1] == "Batch job completed", messages
    assert "3/3" in drawn and "chunks 3/3" in drawn, drawn


def test_without_a_terminal_each_chunk_has_its_line(duckdb_url: str, run_cli: RunCli) -> None:
    load_checkins(duckdb_url, [checkin(new_id(), AS_OF - days(1)) for _ in range(3)])

    result = run_cli("once", "--as-of", AS_OF.isoformat(), "--batch-size", "1", env={"DATABASE_URL": duckdb_url})

    assert result.exit_code == 0, result.everything()
    assert result.messages().count("chunk committed") == 3, result.messages()
