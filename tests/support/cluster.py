"""A PostgreSQL cluster of a test's own, on a free loopback port: for tests that restart servers.

The shared server (tests.support.database) must never restart under other tests, so a test
that restarts or crashes PostgreSQL starts its own: `initdb` into a fresh directory, trust
authentication for a `root` superuser, and `pg_ctl` to start, restart and stop it. PostgreSQL
refuses to run as the operating system's root, so under root the commands run as the
`postgres` system user (which the Debian packages create), in a directory it owns.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Literal

from tests.support.processes import free_port

SERVER_USER = "postgres"
START_TIMEOUT = 60  # seconds, a hang guard for pg_ctl's own wait


def server_bin_directory() -> Path | None:
    """Where initdb and pg_ctl live: on PATH, else the newest /usr/lib/postgresql/<version>/bin."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return candidates[-1].parent if candidates else None


class TemporaryCluster:
    """One throwaway cluster; `url` connects to its `postgres` database as `root`."""

    def __init__(self) -> None:
        bin_directory = server_bin_directory()
        if bin_directory is None:
            raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        self._bin = bin_directory
        self._root = Path(tempfile.mkdtemp(prefix="montage-cluster-"))
        self.data = self._root / "data"
        self.port = free_port()
        self._as_server_user = os.geteuid() == 0
        if self._as_server_user:
            shutil.chown(self._root, SERVER_USER, SERVER_USER)

    @property
    def url(self) -> str:
        return f"postgresql://root@127.0.0.1:{self.port}/postgres"

    def url_of(self, database: str) -> str:
        return f"postgresql://root@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-U", "root", "--auth=trust", "--no-sync", "-E", "UTF8")
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self._root} -c fsync=off"
        self._pg_ctl("start", "-o", options, "-l", str(self._root / "server.log"))

    def stop(self, mode: Literal["smart", "fast", "immediate"] = "immediate") -> None:
        """Stop the server: `fast` ends sessions cleanly, `immediate` is a crash, recovered on start."""
        self._pg_ctl("stop", "-m", mode)

    def remove(self) -> None:
        shutil.rmtree(self._root, ignore_errors=True)

    def _pg_ctl(self, action: str, *args: str) -> None:
        self._run("pg_ctl", action, "-D", str(self.data), "-w", "-t", str(START_TIMEOUT), *args)

    def _run(self, program: str, *args: str) -> None:
        command = [str(self._bin / program), *args]
        if self._as_server_user:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=START_TIMEOUT * 2)


@contextmanager
def temporary_cluster() -> Iterator[TemporaryCluster]:
    """A started cluster, stopped and removed afterwards however the test ends."""
    cluster = TemporaryCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        with suppress(subprocess.CalledProcessError):  # already stopped
            cluster.stop()
        cluster.remove()
