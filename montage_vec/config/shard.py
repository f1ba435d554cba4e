"""Which slice of the users one process owns, e.g. `2/8`; `0/1` is everyone.

The shard comes from MONTAGE_SHARD, or, in the pods of a Kubernetes Indexed Job, from
JOB_COMPLETION_INDEX (which Kubernetes sets) and MONTAGE_SHARD_COUNT (README, "Sharding").
"""

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


def effective_shard(montage_shard: str | None, shard_count: int | None, completion_index: int | None) -> Shard:
    """The process's shard from MONTAGE_SHARD (None: not set), MONTAGE_SHARD_COUNT and JOB_COMPLETION_INDEX.

    ValueError, naming the variables, when they do not make exactly one shard. Kubernetes sets
    JOB_COMPLETION_INDEX in every Indexed Job, so without MONTAGE_SHARD_COUNT it means nothing.
    Both ways of naming the shard at once are refused, even where they agree: a pod template
    gives every pod the same MONTAGE_SHARD, which can agree with one pod's index at most, and
    an error on every pod names the variable to drop, where "agree or fail" would not.
    """
    if shard_count is None:
        return Shard.parse(montage_shard or "0/1")
    if montage_shard is not None:
        raise ValueError(
            f"MONTAGE_SHARD ({montage_shard}) and MONTAGE_SHARD_COUNT ({shard_count}) are both set: set "
            "MONTAGE_SHARD alone, or MONTAGE_SHARD_COUNT alone in an Indexed Job (the index is JOB_COMPLETION_INDEX)"
        )
    if completion_index is None:
        raise ValueError(
            f"MONTAGE_SHARD_COUNT ({shard_count}) needs JOB_COMPLETION_INDEX, which Kubernetes sets in the pods "
            "of an Indexed Job (completionMode: Indexed); elsewhere set MONTAGE_SHARD=INDEX/COUNT instead"
        )
    if completion_index >= shard_count:
        raise ValueError(
            f"JOB_COMPLETION_INDEX ({completion_index}) must be below MONTAGE_SHARD_COUNT ({shard_count}): "
            "the Job's completions must equal MONTAGE_SHARD_COUNT"
        )
    return Shard(completion_index, shard_count)
