"""examples/explore.ipynb: committed without outputs, and run top to bottom against a fresh demo database.

The run is the notebook's CI: the real `montage-vec demo` (a subprocess of the installed
console script) fills a DuckDB file in tmp_path, then nbclient executes every cell on an
ipykernel of this very interpreter, with DATABASE_URL pointing at that file, as a reader
would after running `demo` beside the notebook. A cell that raises fails the test with its
traceback; the checks below make sure the cells also showed what the notebook says they show.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

from tests.support.processes import job_env, run_job

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "explore.ipynb"
KERNEL = "montage-vec-tests"
PLOTS = ("plot-interests-per-user", "plot-items-per-montage", "plot-top-interests", "plot-aging-out")


def test_the_committed_notebook_has_no_outputs_and_no_execution_counts() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    ran = [cell.id for cell in code if cell.outputs or cell.execution_count is not None]
    assert not ran, (
        f"examples/explore.ipynb keeps outputs or execution counts in cells {ran}: "
        "clear all outputs (Jupyter: Edit > Clear Outputs of All Cells) and save before committing"
    )
    assert notebook.metadata.kernelspec.name == "python3"


@pytest.fixture
def demo_database(tmp_path: Path) -> Path:
    """A fresh demo database of 300 users, built by the real CLI (only its exit code is relied on)."""
    database = tmp_path / "montage.duckdb"
    result = run_job("demo", "--users", "300", env=job_env(DATABASE_URL=f"duckdb:///{database}"), cwd=tmp_path)
    assert result.exit_code == 0, result.everything()
    return database


def this_interpreters_kernel(tmp_path: Path) -> AsyncKernelManager:
    """A kernel manager that can only start ipykernel on this interpreter (the project's .venv).

    The `python3` kernelspec is looked up along Jupyter's data paths (JUPYTER_PATH,
    ~/.local/share/jupyter, the environment's share/jupyter, /usr/share/jupyter), and one found
    there may name another interpreter, without montage_vec. ipykernel's own spec, written
    into tmp_path, names sys.executable, and the spec manager sees no other directory. The
    connection file goes to tmp_path too, not to the user's Jupyter runtime folder.
    """
    specs = tmp_path / "kernels"
    write_kernel_spec(specs / KERNEL)
    return AsyncKernelManager(
        kernel_name=KERNEL,
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(specs)]),
        connection_file=str(tmp_path / "kernel-connection.json"),
    )


def executed(tmp_path: Path, database: Path) -> dict[str, list[Any]]:
    """Every code cell's outputs by cell id, after running the notebook in tmp_path."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        km=this_interpreters_kernel(tmp_path),
        kernel_name=KERNEL,
        timeout=120,  # per cell, a hang guard: the whole notebook runs in seconds
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory
    )
    # The kernel's environment: none of the machine's job variables, the demo database, and an
    # IPython directory of its own (a developer's profile startup files must not run here).
    env = job_env(DATABASE_URL=f"duckdb:///{database}", IPYTHONDIR=str(tmp_path / "ipython"))
    client.execute(env=env)
    return {cell.id: cell.outputs for cell in notebook.cells if cell.cell_type == "code"}


def shown(outputs: list[Any]) -> str:
    """What a cell printed and displayed: text, and HTML too (a frame's text wraps long column names)."""
    texts = [output.text for output in outputs if output.output_type == "stream"]
    for output in outputs:
        texts += [output.get("data", {}).get(kind, "") for kind in ("text/plain", "text/html")]
    return "\n".join(texts)


@pytest.mark.slow
def test_the_notebook_runs_top_to_bottom_on_a_fresh_demo_database(tmp_path: Path, demo_database: Path) -> None:
    before = hashlib.sha256(demo_database.read_bytes()).hexdigest()
    outputs = executed(tmp_path, demo_database)

    stderr = [output.text for cell in outputs.values() for output in cell if output.get("name") == "stderr"]
    assert not stderr, f"cells wrote to stderr (library logs or warnings): {stderr}"
    for plot in PLOTS:
        assert any("image/png" in output.get("data", {}) for output in outputs[plot]), f"{plot} drew no figure"
    assert "read_only" in shown(outputs["open"])
    assert re.search(r"\d+ users, \d+ montages, \d+ items", shown(outputs["read"]))
    explained = shown(outputs["explain"])
    assert "occurrences_in_window" in explained and "more_needed" in explained, explained
    assert "reason" in shown(outputs["ineligible"])
    assert "'unchanged':" in shown(outputs["diff"])
    # The hand-made frame: a general montage and one interest, "Coffee" and " coffee " being one tag.
    computed = shown(outputs["compute"])
    assert "shape: (2, 6)" in computed and "coffee" in computed, computed
    ids = shown(outputs["ids"])
    assert "hand-made montages found among the stored: 0" in ids, ids
    found = re.search(r"the busiest user's: (\d+) of (\d+) recomputed montages", ids)
    assert found and found[1] == found[2], ids
    assert outputs["close"] == []
    assert hashlib.sha256(demo_database.read_bytes()).hexdigest() == before, "the notebook changed the database"
