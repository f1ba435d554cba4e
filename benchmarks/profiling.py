"""Optional `--profile`: one more full run under py-spy, summarised by stage.

py-spy samples every thread of the job (`--idle`, so time spent waiting on the database
counts too) and writes collapsed stacks (`--format raw`). Each sample is assigned to the
stage whose function is on its stack; within a stage, the deepest montage_vec frame and the
leaf frame tell where the time goes. Usable on its own: `python -m benchmarks.profiling FILE`.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

RATE = 100  # samples per second and thread
# (stage, marker on the stack), first match wins.
STAGE_MARKERS = (
    ("extract", "extract_checkins ("),
    ("compute", "compute_montages ("),
    ("write", "write_chunk ("),
    ("write", "record_failures ("),
    ("candidate selection", "find_candidates ("),
    ("main thread waiting for chunks", "_process_all ("),
    ("idle worker thread", "concurrent/futures/thread.py"),
    ("timeout timer thread (idle)", "Timer.run ("),
    ("start-up (imports)", "_find_and_load ("),
)
_LINE = re.compile(r":\d+\)$")


@dataclass
class StageProfile:
    samples: int = 0
    deepest_own: Counter[str] = field(default_factory=Counter)
    leaves: Counter[str] = field(default_factory=Counter)


def py_spy_wrapper(output: Path) -> list[str]:
    """The command prefix that records a raw py-spy profile; SystemExit if py-spy is missing."""
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found is None:
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    options = ["--format", "raw", "--idle", "--rate", str(RATE), "--subprocesses", "-o", str(output)]
    return [found, "record", *options, "--"]


def _frame(frame: str) -> str:
    return _LINE.sub(")", frame.strip())


def summarize(path: Path) -> dict[str, StageProfile]:
    stages: dict[str, StageProfile] = defaultdict(StageProfile)
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")[1:]  # the first "frame" names the process
        stage = next((name for name, marker in STAGE_MARKERS if marker in stack), "other")
        profile = stages[stage]
        profile.samples += count
        own = [f for f in frames if "montage_vec/" in f or f.startswith(("compute_", "process_chunk"))]
        if own:
            profile.deepest_own[_frame(own[-1])] += count
        if frames:
            profile.leaves[_frame(frames[-1])] += count
    return dict(stages)


def render(stages: dict[str, StageProfile], source: Path, top: int = 5) -> list[str]:
    total = sum(profile.samples for profile in stages.values()) or 1
    lines = [
        "## Profile (py-spy)",
        "",
        f"One extra full run under `py-spy record --idle --rate {RATE}` (raw stacks: `{source}`). Seconds are",
        "thread-seconds (every thread is sampled, waiting included), so they add up to more than the wall time.",
        "",
        "| stage | thread-seconds | share | where (deepest montage_vec frame) | leaf frame |",
        "|---|---|---|---|---|",
    ]
    for stage, profile in sorted(stages.items(), key=lambda item: -item[1].samples):
        where = "<br>".join(f"{name} {n / profile.samples:.0%}" for name, n in profile.deepest_own.most_common(top))
        leaves = "<br>".join(f"{name} {n / profile.samples:.0%}" for name, n in profile.leaves.most_common(top))
        seconds = profile.samples / RATE
        share = profile.samples / total
        lines.append(f"| {stage} | {seconds:,.1f} | {share:.0%} | {where or '-'} | {leaves or '-'} |")
    return [*lines, ""]


if __name__ == "__main__":
    raw = Path(sys.argv[1])
    print("\n".join(render(summarize(raw), raw, top=int(sys.argv[2]) if len(sys.argv) > 2 else 5)))
