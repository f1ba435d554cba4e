"""`montage-vec --help` lists every exit code the process can end with, and each with its meaning."""

from __future__ import annotations

import inspect
import re
import signal

import pytest

import montage_vec.errors
from montage_vec.cli.exit_codes import EPILOG, EXIT_INTERRUPTED, EXIT_UNEXPECTED
from montage_vec.job.control import EXIT_TIMEOUT
from tests.support.cli import RunCli


def listed_codes(text: str) -> dict[int, str]:
    """{code: meaning} of the epilog's table (a code's meaning may continue on indented lines)."""
    return {int(code): meaning for code, meaning in re.findall(r"^\s*(\d+)\s{2,}(\S.*)$", text, re.MULTILINE)}


ERROR_CLASSES = [
    error
    for _, error in inspect.getmembers(montage_vec.errors, inspect.isclass)
    if issubclass(error, montage_vec.errors.MontageVecError)
]


@pytest.mark.parametrize("error", ERROR_CLASSES, ids=lambda error: error.__name__)
def test_every_error_class_exit_code_is_listed(error: type[montage_vec.errors.MontageVecError]) -> None:
    assert error.exit_code in listed_codes(EPILOG), f"{error.__name__}.exit_code {error.exit_code} is not in the epilog"


def test_the_codes_that_no_error_class_carries_are_listed() -> None:
    listed = listed_codes(EPILOG)
    stopped = [EXIT_TIMEOUT, 128 + signal.SIGINT, 128 + signal.SIGTERM]  # RunInterrupted's, per run
    for code in (0, EXIT_UNEXPECTED, 2, EXIT_INTERRUPTED, *stopped):  # 2: click's usage errors
        assert code in listed, code
    assert "BATCH_PROCESSING_TIMEOUT" in listed[EXIT_TIMEOUT]
    assert "SIGINT" in listed[128 + signal.SIGINT] and "SIGTERM" in listed[128 + signal.SIGTERM]


def test_help_ends_with_the_exit_codes(run_cli: RunCli) -> None:
    result = run_cli("--help")

    assert result.exit_code == 0, result.everything()
    usage, codes = result.stdout.split("Exit codes:")
    assert "Commands:" in usage
    assert listed_codes(codes) == listed_codes(EPILOG)
    assert sorted(listed_codes(codes)) == [0, 1, 2, 3, 75, 77, 124, 130, 143]
