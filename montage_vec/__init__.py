"""montage-vec: set-based, vectorized generation of check-in montages.

The public surface for notebooks and embedding: the pure engine, the settings, the stores
and one-shot runs. Names load on first use, so that the command line starts without
importing Polars, DuckDB and the drivers it may not need.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from montage_vec.config import Settings, load_settings
    from montage_vec.engine import MontageParams, MontageSet, compute_montages
    from montage_vec.errors import MontageVecError
    from montage_vec.job.plan import RunOptions
    from montage_vec.job.runner import run_job
    from montage_vec.job.summary import RunSummary
    from montage_vec.stores import Store, open_store

_EXPORTS = {
    "MontageParams": "montage_vec.engine",
    "MontageSet": "montage_vec.engine",
    "MontageVecError": "montage_vec.errors",
    "RunOptions": "montage_vec.job.plan",
    "RunSummary": "montage_vec.job.summary",
    "Settings": "montage_vec.config",
    "Store": "montage_vec.stores",
    "compute_montages": "montage_vec.engine",
    "load_settings": "montage_vec.config",
    "open_store": "montage_vec.stores",
    "run_job": "montage_vec.job.runner",
}
__all__ = [
    "MontageParams",
    "MontageSet",
    "MontageVecError",
    "RunOptions",
    "RunSummary",
    "Settings",
    "Store",
    "compute_montages",
    "load_settings",
    "open_store",
    "run_job",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'montage_vec' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
