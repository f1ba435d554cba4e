"""PostgreSQL clusters of the tests' own, on a free loopback port, from the installed server binaries.

The test session runs one (tests.support.session_cluster) unless MONTAGE_TEST_PG_URL names a
server; a test that restarts or crashes PostgreSQL starts another of its own, so that the
session's server never restarts under other tests. Each is `initdb` into a fresh directory,
trust authentication for a `root` superuser, and `pg_ctl` to start, restart and stop it. A
replica (`temporary_replica`) is a `pg_basebackup` of a started cluster, streaming from it.
PostgreSQL refuses to run as the operating system's root, so under root the commands run as
the `postgres` system user (which the Debian packages create), in a directory it owns.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Literal

from tests.support.processes import MissingProgram, free_port

SERVER_USER = "postgres"
START_TIMEOUT = 60  # seconds, a hang guard for pg_ctl's own wait
INSTALL_SERVER = "apt-get install -y postgresql"
INSTALL_CLIENT = "apt-get install -y postgresql-client"


def _version_key(initdb: Path) -> tuple[int, ...]:
    """/usr/lib/postgresql/15/bin/initdb -> (15,); a name that is not a version sorts first."""
    try:
        return tuple(int(part) for part in initdb.parent.parent.name.split("."))
    except ValueError:
        return (-1,)


def server_bin_directory() -> Path | None:
    """Where initdb and pg_ctl live: next to `initdb` on PATH (symlinks resolved), else the newest
    /usr/lib/postgresql/<version>/bin (Debian keeps the server binaries off PATH)."""
    on_path = shutil.which("initdb")
    if on_path and (directory := Path(on_path).resolve().parent).joinpath("pg_ctl").is_file():
        return directory
    candidates = [
        path for path in Path("/usr/lib/postgresql").glob("*/bin/initdb") if path.with_name("pg_ctl").is_file()
    ]
    return max(candidates, key=_version_key).parent if candidates else None


def client_program(name: str) -> Path:
    """A PostgreSQL client program (`psql`): the server's own version next to initdb, else on PATH."""
    directory = server_bin_directory()
    if directory is not None and (directory / name).is_file():
        return directory / name
    on_path = shutil.which(name)
    if on_path is None:
        raise MissingProgram(f"the PostgreSQL client program {name} not found: {INSTALL_CLIENT}")
    return Path(on_path)


class TemporaryCluster:
    """One throwaway cluster; `url` connects to its `postgres` database as `root`.

    `settings` are server parameters (`max_connections`) on top of the ones every test cluster has."""

    def __init__(self, settings: Mapping[str, str] | None = None) -> None:
        bin_directory = server_bin_directory()
        if bin_directory is None:
            raise MissingProgram(f"PostgreSQL server binaries (initdb, pg_ctl) not found: {INSTALL_SERVER}")
        self._bin = bin_directory
        self._settings = {"listen_addresses": "127.0.0.1", "fsync": "off", **(settings or {})}
        self._root = Path(tempfile.mkdtemp(prefix="montage-cluster-"))
        self.data = self._root / "data"
        self.port = free_port()
        self._as_server_user = os.geteuid() == 0
        if self._as_server_user:
            shutil.chown(self._root, SERVER_USER, SERVER_USER)

    @property
    def url(self) -> str:
        return self.url_of("postgres")

    def url_of(self, database: str) -> str:
        return f"postgresql://root@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-U", "root", "--auth=trust", "--no-sync", "-E", "UTF8")
        options = " ".join([f"-p {self.port}", f"-k {self._root}", *(f"-c {k}={v}" for k, v in self._settings.items())])
        self._pg_ctl("start", "-o", options, "-l", str(self.log_file))

    def replicate(self, primary: TemporaryCluster) -> None:
        """Make this cluster, not started yet, a physical streaming replica of the started `primary`.

        A base backup over the replication protocol (initdb's trust lines allow it from
        127.0.0.1), with the WAL it needs streamed and `primary_conninfo` plus standby.signal
        written (-R); `start` then starts a hot standby that replays the primary's WAL.
        """
        self._run(
            "pg_basebackup",
            *("-h", "127.0.0.1", "-p", str(primary.port), "-U", "root", "-D", str(self.data)),
            *("-R", "-X", "stream", "--checkpoint=fast", "--no-sync"),
        )

    def stop(self, mode: Literal["smart", "fast", "immediate"] = "immediate") -> None:
        """Stop the server: `fast` ends sessions cleanly, `immediate` is a crash, recovered on start."""
        self._pg_ctl("stop", "-m", mode)

    def remove(self) -> None:
        shutil.rmtree(self._root, ignore_errors=True)

    @property
    def log_file(self) -> Path:
        return self._root / "server.log"

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's log, for a message saying why it did not start."""
        with suppress(OSError):
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def _pg_ctl(self, action: str, *args: str) -> None:
        self._run("pg_ctl", action, "-D", str(self.data), "-w", "-t", str(START_TIMEOUT), *args)

    def _run(self, program: str, *args: str) -> None:
        command = [str(self._bin / program), *args]
        if self._as_server_user:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=START_TIMEOUT * 2)


@contextmanager
def temporary_cluster(settings: Mapping[str, str] | None = None) -> Iterator[TemporaryCluster]:
    """A started cluster, stopped and removed afterwards however the test ends."""
    cluster = TemporaryCluster(settings)
    try:
        cluster.start()
        yield cluster
    finally:
        _discard(cluster)


@contextmanager
def temporary_replica(primary: TemporaryCluster) -> Iterator[TemporaryCluster]:
    """A started hot standby streaming from `primary` (see `replicate`), on a port of its own;
    stopped and removed afterwards however the test ends."""
    replica = TemporaryCluster()
    try:
        replica.replicate(primary)
        replica.start()
        yield replica
    finally:
        _discard(replica)


def _discard(cluster: TemporaryCluster) -> None:
    with suppress(subprocess.CalledProcessError):  # already stopped, or never started
        cluster.stop()
    cluster.remove()
