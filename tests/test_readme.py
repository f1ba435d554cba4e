"""The README's Python snippet runs as written, against a database like the one `demo` leaves."""

from __future__ import annotations

import re
from pathlib import Path

import montage_vec
from tests.support.data import SyntheticDatabase, load_frame

README = Path(__file__).parent.parent / "README.md"
SECTION = "## From Python and notebooks"


def _python_snippet() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index(SECTION) :]
    match = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert match is not None, f"no python snippet under {SECTION!r}"
    return match.group(1)


def test_the_library_snippet_runs(tmp_path: Path) -> None:
    database = SyntheticDatabase(f"duckdb:///{tmp_path}/montage.duckdb", users=30)  # the snippet's relative path
    load_frame(database.url, database.frame())
    with montage_vec.connect(database.url) as db:
        assert db.run(as_of=database.as_of).status == "completed"
    exec(compile(_python_snippet(), str(README), "exec"), {})  # our own README, run as a reader would
