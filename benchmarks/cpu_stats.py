"""Where a run's CPU went: the client (the job process, or the benchmark itself for a baseline), the
database server's processes, and the whole machine. The report's "CPU" table, so that a reader can tell
whether a run was bound by the cores it shares with the server or by waiting.

On a machine whose cores the job and the server share, `client + server` CPU seconds over the cores is a
lower bound on the wall time however well the two overlap: a run can only go faster by doing less work.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from benchmarks.io_stats import markdown_table

# The server's processes are counted where they run on this machine (a local PostgreSQL, or the
# job process itself for DuckDB, which has no server).
LOCAL_HOSTS = ("", "localhost", "127.0.0.1", "::1")
SERVER_COMMAND = "postgres"
# Labels of the baselines' CPU in DatabaseIo.cpu, beside the engine runs' labels.
SQL_BASELINE_CPU = "baseline_sql"
FLOOR_CPU = "baseline_floor"


@dataclass(frozen=True)
class CpuTimes:
    """Cumulative seconds; a run's are the difference of two snapshots (`minus`)."""

    wall: float
    client: float  # this process and its waited-for children (an engine run is waited for before the snapshot)
    server: float | None  # every `postgres` process on this machine; None where the server is elsewhere
    busy: float  # the machine's non-idle CPU time, all processes
    capacity: float  # the machine's CPU time, idle included (wall x cores)

    def minus(self, before: CpuTimes) -> CpuTimes:
        server = self.server - before.server if self.server is not None and before.server is not None else None
        return CpuTimes(
            self.wall - before.wall,
            self.client - before.client,
            server,
            self.busy - before.busy,
            self.capacity - before.capacity,
        )


def is_local(database_url: str) -> bool:
    return (urlsplit(database_url).hostname or "") in LOCAL_HOSTS


def cpu_times(local_server: bool) -> CpuTimes:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    busy, capacity = _machine_seconds()
    return CpuTimes(time.monotonic(), client, _server_seconds() if local_server else None, busy, capacity)


def _machine_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds since boot, from the first line of /proc/stat (0, 0 where unreadable)."""
    try:
        ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    hertz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / hertz, sum(ticks) / hertz


def _server_seconds() -> float:
    """User + system CPU of the server: every `postgres` process's own, plus that of its exited children.

    A backend that ends between two snapshots leaves its time in the postmaster's cutime/cstime when the
    postmaster reaps it, so the sessions of a run that has finished still count.
    """
    hertz = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != SERVER_COMMAND:
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        total += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime (14-17 of proc(5))
    return total / hertz


def render_cpu(runs: list[tuple[str, CpuTimes]], cores: int) -> list[str]:
    """The report's "CPU" table: per run, where its CPU seconds went and the wall time they imply."""
    if not runs:
        return []
    rows = []
    for name, cpu in runs:
        work = cpu.client + (cpu.server or 0.0)
        server = f"{cpu.server:.1f} s" if cpu.server is not None else "-"
        busy = f"{cpu.busy / cpu.capacity:.0%}" if cpu.capacity else "-"
        rows.append([name, f"{cpu.wall:.2f} s", f"{cpu.client:.1f} s", server, f"{work / max(1, cores):.2f} s", busy])
    header = ["run", "wall", "client CPU", "server CPU", "CPU / cores (least wall)", "machine busy"]
    return [
        "## CPU",
        "",
        "Where each run's CPU went. *Client* is the job process (user + system time, from `wait4`), or, for a "
        "baseline, the benchmark process that reads and writes; *server* is every `postgres` process on this "
        "machine, exited backends included (the postmaster's `cutime`/`cstime`), so another database's work in "
        "the same window counts too; `-` where the server is not on this machine or there is none (DuckDB runs "
        "inside the job). The job and a local server share the cores, so *CPU / cores* is the wall time the run "
        "would take if the two overlapped perfectly: a run near it can only go faster by doing less work. "
        "*Machine busy* is the share of all cores in use during the run, other processes included.",
        "",
        *markdown_table(header, rows),
        "",
    ]
