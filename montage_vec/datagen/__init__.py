"""Synthetic check-in data for the demo and the benchmarks."""

from montage_vec.datagen.batches import iter_checkin_batches
from montage_vec.datagen.synthetic import (
    CHECKIN_ARROW_SCHEMA,
    DEFAULT_AS_OF,
    MAX_CHECKINS_PER_USER,
    TAGS,
    SyntheticSpec,
    generate_checkins,
    generate_users,
    user_id_for,
)

__all__ = [
    "CHECKIN_ARROW_SCHEMA",
    "DEFAULT_AS_OF",
    "MAX_CHECKINS_PER_USER",
    "TAGS",
    "SyntheticSpec",
    "generate_checkins",
    "generate_users",
    "iter_checkin_batches",
    "user_id_for",
]
