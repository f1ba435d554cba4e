"""The pure engine: check-ins (Arrow or Polars) in, montages out. No I/O lives here."""

from montage_vec.engine.montages import MontageSet, compute_montages
from montage_vec.engine.params import MontageParams
from montage_vec.engine.schema import CHECKIN_SCHEMA, ITEM_SCHEMA, MONTAGE_SCHEMA, OPTIONAL_CHECKIN_SCHEMA

__all__ = [
    "CHECKIN_SCHEMA",
    "ITEM_SCHEMA",
    "MONTAGE_SCHEMA",
    "OPTIONAL_CHECKIN_SCHEMA",
    "MontageParams",
    "MontageSet",
    "compute_montages",
]
