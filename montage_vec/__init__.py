"""montage-vec: set-based, vectorized generation of check-in montages.

The public surface for notebooks and embedding: the pure engine, the settings, the stores
and one-shot runs.
"""

from montage_vec.config import Settings, load_settings
from montage_vec.engine import MontageParams, MontageSet, compute_montages
from montage_vec.errors import MontageVecError
from montage_vec.job.plan import RunOptions
from montage_vec.job.runner import run_job
from montage_vec.job.summary import RunSummary
from montage_vec.stores import open_store

__all__ = [
    "MontageParams",
    "MontageSet",
    "MontageVecError",
    "RunOptions",
    "RunSummary",
    "Settings",
    "compute_montages",
    "load_settings",
    "open_store",
    "run_job",
]
