"""Real `montage-vec` processes, for what only a process shows: signals, exit on a daemon's
stop, locks held by another process, the installed console scripts.

Everything else runs in the test's own process through the `run_cli` fixture, which is
seconds faster per call: a child pays for importing polars, pyarrow, numpy and the job.
Children are started through the installed console script (no `python -m`, no wrapper),
which imports no more than the CLI itself.

- `JobProcess`: `montage-vec ARGS` whose stdout (JSON log lines) and stderr are read by
  background threads, so that a test can wait for a given log line, send signals, and
  always kill it afterwards.
- `run_job`: `montage-vec ARGS` to completion, killed if it outlives its timeout.
- `job_env`: this process's environment without any of the job's variables, plus the given ones.
- `free_port`, and `wait_until` for a condition with a hang guard.
- `MissingProgram`: what support code raises when a program the tests run (initdb, psql, the
  Pushgateway) is not installed, its message the line that installs it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from montage_vec.config.settings import Settings
from tests.support.cli import CliResult, parse_logs

SCRIPTS = Path(sys.executable).parent  # the virtual environment's console scripts

# Every variable the job reads (pydantic-settings matches them case-insensitively).
JOB_VARIABLES = frozenset(name.upper() for name in Settings.model_fields)


def job_env(**variables: str) -> dict[str, str]:
    """This process's environment minus every job variable, plus `variables`."""
    env = {name: value for name, value in os.environ.items() if name.upper() not in JOB_VARIABLES}
    env.update(variables)
    return env


def run_job(
    *args: str,
    env: dict[str, str],
    cwd: Path | str | None = None,
    timeout: float = 60.0,
    script: str = "montage-vec",
) -> CliResult:
    """`montage-vec ARGS` (or another console script) to completion; killed if it outlives `timeout`."""
    completed = subprocess.run(
        [str(SCRIPTS / script), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    return CliResult(completed.returncode, completed.stdout, completed.stderr, parse_logs(completed.stdout))


class JobProcess:
    """A running `montage-vec ARGS`; use as a context manager so that it is always killed."""

    def __init__(self, *args: str, env: dict[str, str], cwd: Path | str | None = None) -> None:
        self.args = args
        self._changed = threading.Condition()
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._open_streams = 2
        self.process = subprocess.Popen(
            [str(SCRIPTS / "montage-vec"), *args],
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

    def running(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL (if still running) and reap."""
        if self.process.poll() is None:
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)

    def send_signal(self, signum: signal.Signals) -> None:
        os.kill(self.pid, signum)

    def wait(self, timeout: float) -> int:
        """The exit code; fails the test (process killed) if it is still running after `timeout`."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            message = f"montage-vec {' '.join(self.args)} still running after {timeout}s\n{self.output()}"
            raise AssertionError(message) from None
        with self._changed:  # let the readers drain what is left in the pipes
            self._changed.wait_for(lambda: self._open_streams == 0, timeout=10)
        return code

    def logs(self) -> list[dict[str, Any]]:
        with self._changed:
            return parse_logs("\n".join(self._stdout))

    def finished(self) -> CliResult:
        """The outcome so far (call after `wait`)."""
        with self._changed:
            stdout = "\n".join(self._stdout)
            return CliResult(self.process.returncode, stdout, "\n".join(self._stderr), parse_logs(stdout))

    def output(self) -> str:
        with self._changed:
            return "--- stdout\n" + "\n".join(self._stdout) + "\n--- stderr\n" + "\n".join(self._stderr)

    def wait_for_log(
        self, message: str, timeout: float, after: int = 0, where: Callable[[dict[str, Any]], bool] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """The first log line with `message` (and matching `where`) at index >= `after`, and its index.

        `timeout` is a hang guard only: the line is expected much sooner."""
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


class MissingProgram(RuntimeError):
    """A program the tests need is not installed; the message says how to install it."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll `condition` until it returns something truthy, and return that.

    `timeout` is a hang guard, never a measurement: when it runs out, the test fails saying `what`
    never happened."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = condition()
        if outcome:
            return outcome
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: still not the case after {timeout}s")
        time.sleep(interval)
