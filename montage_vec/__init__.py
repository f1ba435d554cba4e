"""montage-vec: set-based, vectorized generation of check-in montages.

The public surface for notebooks and embedding: `connect(url)` gives a `Database` with
`compute`, `read`, `checkins`, `explain` and `run`; the pure engine (`compute_montages`),
the settings and the stores are here too. Names load on first use, so that the command
line starts without importing Polars, DuckDB and the drivers it may not need.

The library logs nothing until its caller asks: `loguru.logger.enable("montage_vec")`
(the command line does).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from loguru import logger

logger.disable("montage_vec")

if TYPE_CHECKING:
    from montage_vec.config import Settings, load_settings
    from montage_vec.db import Database, connect
    from montage_vec.engine import MontageParams, MontageSet, compute_montages
    from montage_vec.engine.diff import MontageDiff
    from montage_vec.engine.explain import Explanation
    from montage_vec.errors import ConfigError, InputDataError, MontageVecError
    from montage_vec.job.plan import RunOptions
    from montage_vec.job.runner import run_job
    from montage_vec.job.summary import RunSummary
    from montage_vec.stores import Store, open_store

_EXPORTS = {
    "Database": "montage_vec.db",
    "Explanation": "montage_vec.engine.explain",
    "MontageDiff": "montage_vec.engine.diff",
    "MontageParams": "montage_vec.engine",
    "MontageSet": "montage_vec.engine",
    "ConfigError": "montage_vec.errors",
    "InputDataError": "montage_vec.errors",
    "MontageVecError": "montage_vec.errors",
    "RunOptions": "montage_vec.job.plan",
    "RunSummary": "montage_vec.job.summary",
    "Settings": "montage_vec.config",
    "Store": "montage_vec.stores",
    "compute_montages": "montage_vec.engine",
    "connect": "montage_vec.db",
    "load_settings": "montage_vec.config",
    "open_store": "montage_vec.stores",
    "run_job": "montage_vec.job.runner",
}
__all__ = [
    "ConfigError",
    "Database",
    "Explanation",
    "InputDataError",
    "MontageDiff",
    "MontageParams",
    "MontageSet",
    "MontageVecError",
    "RunOptions",
    "RunSummary",
    "Settings",
    "Store",
    "compute_montages",
    "connect",
    "load_settings",
    "open_store",
    "run_job",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'montage_vec' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
