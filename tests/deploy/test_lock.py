"""uv.lock: it matches pyproject.toml, and the first install (uv itself) is pinned to it.

The image (deploy/build-venv), `.ci/run` and the README all install with `uv sync --locked`,
which refuses a lock that no longer matches pyproject.toml; uv itself comes from
deploy/uv-bootstrap.txt, installed with pip's --require-hashes before any lock can be read.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = ROOT / "deploy" / "uv-bootstrap.txt"


def locked_package(name: str) -> dict[str, Any]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    [package] = [package for package in lock["package"] if package["name"] == name]
    return package  # type: ignore[no-any-return]


def test_lock_matches_pyproject() -> None:
    uv = Path(sys.executable).parent / "uv"
    checked = subprocess.run(
        [str(uv), "lock", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert checked.returncode == 0, f"uv.lock is stale: run `uv lock`\n{checked.stderr}"


def test_uv_bootstrap_pins_the_locked_uv_with_all_its_hashes() -> None:
    uv = locked_package("uv")
    locked_hashes = {wheel["hash"] for wheel in uv["wheels"]} | {uv["sdist"]["hash"]}
    text = BOOTSTRAP.read_text()

    assert re.findall(r"^uv==(\S+)", text, flags=re.MULTILINE) == [uv["version"]]
    assert set(re.findall(r"--hash=(sha256:[0-9a-f]{64})", text)) == locked_hashes


def test_build_backend_is_pinned_exactly() -> None:
    """uv.lock does not lock build dependencies, so pyproject.toml pins the backend itself."""
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    assert all(re.fullmatch(r"[\w-]+==[\w.]+", requirement) for requirement in requires), requires


def test_every_install_goes_through_the_lock() -> None:
    """The Dockerfile's build script, .ci/run and the README's install line all sync from uv.lock."""
    for path in ("deploy/build-venv", ".ci/run", "README.md"):
        text = (ROOT / path).read_text()
        assert "uv sync --locked" in text, path
        assert not re.search(r"pip install (?!.*--require-hashes)", text), f"{path}: an unlocked pip install"
