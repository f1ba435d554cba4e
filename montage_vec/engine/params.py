"""The parameters of the montage contract, independent of where they come from."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

DEFAULT_PRIVACY_INCLUDED = frozenset({"public", "friends"})


@dataclass(frozen=True)
class MontageParams:
    """Rules 1-5 of the montage contract, as numbers.

    `max_items` caps every montage; an interest qualifies with at least
    `min_interest_occurrence` tagged check-ins newer than `as_of - interest_lookback_days`.
    `privacy_included` is held as `strip().lower()` of what was given (rule 1), so every
    consumer (the engine, the reconciliation query) compares against normalised levels.
    """

    max_items: int = 20
    min_interest_occurrence: int = 3
    interest_lookback_days: int = 30
    privacy_included: frozenset[str] = field(default=DEFAULT_PRIVACY_INCLUDED)

    def __post_init__(self) -> None:
        normalized = frozenset(level.strip().lower() for level in self.privacy_included)
        object.__setattr__(self, "privacy_included", normalized)  # frozen: set once, here
        if self.max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {self.max_items}")
        if self.min_interest_occurrence < 1:
            raise ValueError(f"min_interest_occurrence must be >= 1, got {self.min_interest_occurrence}")
        if self.interest_lookback_days < 0:
            raise ValueError(f"interest_lookback_days must be >= 0, got {self.interest_lookback_days}")

    @property
    def lookback(self) -> timedelta:
        return timedelta(days=self.interest_lookback_days)
