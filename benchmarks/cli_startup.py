"""How long the command line takes to start: `montage-vec --help` and `--version`, as processes.

    .venv/bin/python -m benchmarks.cli_startup [--repeat 20] [--script .venv/bin/montage-vec]

Each command runs `--repeat` times in a fresh process, after one unmeasured warm-up run
(the first start pays for reading the files into the page cache). Wall-clock time from spawn
to exit, as a shell user waits for it. The floor is `python -c pass` with the same interpreter:
what no change to montage-vec can remove. Prints a Markdown table for benchmarks/results.md.
The target (issue 12): `--help` under 0.3 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.machine import describe_machine

DEFAULT_SCRIPT = Path(sys.executable).parent / "montage-vec"
TARGET_SECONDS = 0.3


@dataclass(frozen=True)
class Timing:
    command: str
    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def minimum(self) -> float:
        return min(self.seconds)

    @property
    def maximum(self) -> float:
        return max(self.seconds)


def time_command(argv: Sequence[str], repeat: int) -> list[float]:
    """Seconds from spawn to exit of `argv`, `repeat` times, after one unmeasured warm-up run."""
    seconds = []
    for attempt in range(repeat + 1):
        started = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=60)
        if attempt:
            seconds.append(time.perf_counter() - started)
    return seconds


def measure(script: Path, repeat: int) -> list[Timing]:
    commands = {
        "python -c pass (floor)": [sys.executable, "-c", "pass"],
        f"{script.name} --help": [str(script), "--help"],
        f"{script.name} --version": [str(script), "--version"],
    }
    return [Timing(name, time_command(argv, repeat)) for name, argv in commands.items()]


def report(timings: list[Timing], repeat: int) -> str:
    machine = describe_machine()
    lines = [
        f"CLI start-up, {repeat} runs each ({machine.cpus} CPUs, {machine.cpu_model}, Python {machine.python}, "
        f"{machine.date}):",
        "",
        "| command | median | min | max |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{t.command}` | {t.median:.3f} s | {t.minimum:.3f} s | {t.maximum:.3f} s |" for t in timings]
    helped = next(t for t in timings if t.command.endswith("--help"))
    verdict = "meets" if helped.median < TARGET_SECONDS else "misses"
    lines += ["", f"`--help` {verdict} the {TARGET_SECONDS} s target (median {helped.median:.3f} s)."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cli_startup", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="measured runs per command (default: 20)")
    parser.add_argument("--script", type=Path, default=DEFAULT_SCRIPT, help="the console script to start")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    print(report(measure(args.script, args.repeat), args.repeat))


if __name__ == "__main__":
    main()
