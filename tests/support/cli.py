"""How a `montage-vec` invocation ended, in this process (the `run_cli` fixture) or in a
subprocess (`tests.support.processes`), and `run_once` for the common `once --as-of` call."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tests.support.data import AS_OF


def parse_logs(stdout: str) -> list[dict[str, Any]]:
    """The JSON log lines of `stdout` (lines that are not JSON objects are skipped)."""
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@dataclass
class CliResult:
    """How a `montage-vec` invocation ended, with its stdout parsed as JSON log lines."""

    exit_code: int
    stdout: str
    stderr: str
    logs: list[dict[str, Any]] = field(default_factory=list)

    def log(self, message: str) -> dict[str, Any]:
        """The last log line with this message."""
        matching = [entry for entry in self.logs if entry.get("message") == message]
        assert matching, f"no log line {message!r} in:\n{self.everything()}"
        return matching[-1]

    def messages(self) -> list[str]:
        return [entry.get("message", "") for entry in self.logs]

    def everything(self) -> str:
        """Exit code, stdout and stderr, for assertion messages."""
        return f"exit code {self.exit_code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


RunCli = Callable[..., CliResult]  # the run_cli fixture: run_cli(*args, env={...}) -> CliResult


# Tests of the watermark's own rules (overlap, clock skew) pin its mode: on PostgreSQL the
# job's own check-ins table has capture triggers, which would make runs use those instead.
WATERMARK_MODE = {"MONTAGE_CHANGE_CAPTURE": "watermark"}


def run_once(
    run_cli: RunCli, url: str, *args: str, as_of: datetime = AS_OF, env: dict[str, str] | None = None
) -> CliResult:
    """`montage-vec once --as-of AS_OF ARGS` against `url`, in this process; asserts it exited 0."""
    result = run_cli("once", "--as-of", as_of.isoformat(), *args, env={"DATABASE_URL": url, **(env or {})})
    assert result.exit_code == 0, result.everything()
    return result


def job_id_of(result: CliResult) -> str:
    job_id: str = result.log("Batch job completed")["job_id"]
    return job_id
