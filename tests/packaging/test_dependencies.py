"""Every third-party module the package imports is a declared runtime dependency.

The image installs only `dependencies` (not the dev extras), so an import that works in a
developer's environment by accident would crash the deployed job at start-up.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_top_level_modules() -> set[str]:
    modules: set[str] = set()
    for path in (ROOT / "montage_vec").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"montage_vec", "__future__"}


def _declared_distributions() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {_canonical(re.split(r"[<>=!~; \[]", spec, maxsplit=1)[0]) for spec in project["dependencies"]}


def test_every_imported_module_comes_from_a_declared_dependency() -> None:
    providers = packages_distributions()
    declared = _declared_distributions()
    undeclared = {
        module: providers.get(module, ["?"])
        for module in _imported_top_level_modules()
        if not {_canonical(dist) for dist in providers.get(module, [])} & declared
    }
    assert undeclared == {}


def test_the_check_sees_real_imports() -> None:
    assert {"polars", "pyarrow", "duckdb", "numpy", "httpx"} <= _imported_top_level_modules()
