"""MONTAGE_SHARD: which slice of the users one process owns, e.g. `2/8`; `0/1` is everyone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        """ValueError unless `text` is INDEX/COUNT with 0 <= INDEX < COUNT."""
        index_text, separator, count_text = text.strip().partition("/")
        if not (separator and index_text.isdigit() and count_text.isdigit()):
            raise ValueError(f"must be INDEX/COUNT, e.g. 0/4, got {text!r}")
        shard = cls(int(index_text), int(count_text))
        if shard.count < 1 or not 0 <= shard.index < shard.count:
            raise ValueError(f"must be INDEX/COUNT with 0 <= INDEX < COUNT, got {text!r}")
        return shard

    @property
    def key(self) -> str:
        """The shard as text: its run lock's and watermark's name."""
        return f"{self.index}/{self.count}"

    def owns(self, user_ids: pl.Series) -> pl.Series:
        """The users of this shard: uuid v4 ends in random hex digits, so they spread evenly."""
        if self.count == 1:
            return user_ids
        bucket = user_ids.str.slice(-8).str.to_integer(base=16, strict=False).fill_null(0) % self.count
        return user_ids.filter(bucket == self.index)
