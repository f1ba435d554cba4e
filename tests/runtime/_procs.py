"""Real processes, ports and servers for the runtime and observability tests.

- `JobProcess`: `montage-vec ARGS` as a subprocess whose stdout (JSON log lines) and stderr
  are read by background threads, so a test can wait for a given log line, send it signals
  and always kill it afterwards.
- `run_job`: `montage-vec ARGS` to completion with a bounded timeout.
- `job_env`: the caller's environment without any of the job's variables, plus the given ones.
- PostgreSQL databases (optionally copied from a template), free ports, a stub HTTP service
  answering `/healthz`, and a real Pushgateway.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import adbc_driver_postgresql.dbapi as pg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from montage_vec.config.settings import Settings
from tests.conftest import PG_ADMIN_URL
from tests.helpers import CliResult

MONTAGE_VEC = str(Path(sys.executable).parent / "montage-vec")
PUSHGATEWAY_BINARY = "/usr/bin/prometheus-pushgateway"

# Every variable the job reads (pydantic-settings matches them case-insensitively).
JOB_VARIABLES = frozenset(name.upper() for name in Settings.model_fields)


def job_env(**variables: str) -> dict[str, str]:
    """This process's environment minus every job variable, plus `variables`."""
    env = {name: value for name, value in os.environ.items() if name.upper() not in JOB_VARIABLES}
    env.update(variables)
    return env


def parse_logs(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


# -- processes -------------------------------------------------------------------------------------


@dataclass
class Finished(CliResult):
    """A finished subprocess; adds views that help when a test fails."""

    def messages(self) -> list[str]:
        return [entry.get("message", "") for entry in self.logs]

    def everything(self) -> str:
        return f"exit code {self.exit_code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def run_job(*args: str, env: dict[str, str], cwd: Path | str | None = None, timeout: float = 60.0) -> Finished:
    """`montage-vec ARGS` to completion (killed if it outlives `timeout`)."""
    completed = subprocess.run(
        [MONTAGE_VEC, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    return Finished(completed.returncode, completed.stdout, completed.stderr, parse_logs(completed.stdout))


class JobProcess:
    """A running `montage-vec ARGS`; use as a context manager so that it is always killed."""

    def __init__(self, *args: str, env: dict[str, str], cwd: Path | str | None = None) -> None:
        self.args = args
        self._changed = threading.Condition()
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._open_streams = 2
        self.process = subprocess.Popen(
            [MONTAGE_VEC, *args],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,  # a Ctrl-C at the terminal must not reach it
        )
        for stream, sink in ((self.process.stdout, self._stdout), (self.process.stderr, self._stderr)):
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True).start()

    def _pump(self, stream: Any, sink: list[str]) -> None:
        for line in stream:
            with self._changed:
                sink.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._open_streams -= 1
            self._changed.notify_all()

    def __enter__(self) -> JobProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)

    def send_signal(self, signum: signal.Signals) -> float:
        """Send `signum` to the process; returns the monotonic time it was sent."""
        os.kill(self.pid, signum)
        return time.monotonic()

    def wait(self, timeout: float) -> int:
        """The exit code; fails the test (process killed) if it is still running after `timeout`."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            message = f"montage-vec {' '.join(self.args)} still running after {timeout}s\n{self.output()}"
            raise AssertionError(message) from None
        with self._changed:  # let the readers drain what is left in the pipes
            self._changed.wait_for(lambda: self._open_streams == 0, timeout=5)
        return code

    def logs(self) -> list[dict[str, Any]]:
        with self._changed:
            return parse_logs("\n".join(self._stdout))

    def finished(self) -> Finished:
        with self._changed:
            stdout = "\n".join(self._stdout)
            return Finished(self.process.returncode, stdout, "\n".join(self._stderr), parse_logs(stdout))

    def output(self) -> str:
        with self._changed:
            return "--- stdout\n" + "\n".join(self._stdout) + "\n--- stderr\n" + "\n".join(self._stderr)

    def wait_for_log(
        self, message: str, timeout: float, after: int = 0, where: Callable[[dict[str, Any]], bool] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """The first log line with `message` (and matching `where`) at index >= `after`, and its index."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                logs = parse_logs("\n".join(self._stdout))
                for index in range(after, len(logs)):
                    entry = logs[index]
                    if entry.get("message") == message and (where is None or where(entry)):
                        return index, entry
                if self._open_streams == 0 and self.process.poll() is not None:
                    exited = f"process exited ({self.process.returncode}) before {message!r}\n"
                    raise AssertionError(exited + self.output())
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no log line {message!r} within {timeout}s\n" + self.output())
                self._changed.wait(min(remaining, 0.5))


# -- network ---------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_answers(url: str, timeout: float = 15.0, process: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{process.args} exited with {process.returncode} before answering {url}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError as exc:
            last_error = exc
        time.sleep(0.05)
    raise AssertionError(f"{url} did not answer within {timeout}s: {last_error}")


@contextlib.contextmanager
def pushgateway() -> Iterator[str]:
    """A real Pushgateway on a free 127.0.0.1 port; yields its base URL, killed afterwards."""
    port = free_port()
    process = subprocess.Popen(
        [PUSHGATEWAY_BINARY, f"--web.listen-address=127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_answers(f"{url}/-/ready", process=process)
        yield url
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


@dataclass
class StubService:
    """A real HTTP server on 127.0.0.1 answering GET /healthz with `status`; records request headers."""

    status: int = 200
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    url: str = ""


@contextlib.contextmanager
def stub_service(status: int = 200) -> Iterator[StubService]:
    stub = StubService(status=status)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            stub.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            code = stub.status if self.path == "/healthz" else 404
            body = json.dumps({"status": "ok" if code == 200 else "bad"}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# -- Prometheus text ---------------------------------------------------------------------------------


def samples(text: str, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """Every sample called `name` (e.g. `..._total`) whose labels include `labels`."""
    found = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                found.append((dict(sample.labels), float(sample.value)))
    return found


def single_value(text: str, name: str, **labels: str) -> float:
    matching = samples(text, name, **labels)
    assert len(matching) == 1, f"expected one {name}{labels}, found {matching}"
    return matching[0][1]


# -- PostgreSQL --------------------------------------------------------------------------------------


def admin_execute(sql: str) -> None:
    with pg.connect(PG_ADMIN_URL, autocommit=True) as connection, connection.cursor() as cursor:
        cursor.execute(sql)


def database_url(name: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


@contextlib.contextmanager
def postgres_database(template: str | None = None, prefix: str = "montage_rt") -> Iterator[str]:
    """A new database (a copy of `template` if given), dropped afterwards; yields its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin_execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield database_url(name)
    finally:
        admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def execute(url: str, sql: str) -> None:
    with pg.connect(url, autocommit=True) as connection, connection.cursor() as cursor:
        cursor.execute(sql)
