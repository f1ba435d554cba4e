"""One row per check-in id (contract rule 8), chosen without regard to the input's row order.

A source without a primary key (a view over a union, say) can return one check-in several
times; counted as they come, it would be shown several times and count several times
toward an interest. Only the copies need sorting: ids are almost always unique, and then
this costs one hash pass over `id`.
"""

from __future__ import annotations

import polars as pl

# The copy that wins: updated last, then deleted (latest deletion first) so that a stale live
# copy never brings a deleted check-in back, then the smallest value of every other column in
# schema order, as a tie-break that makes the choice independent of row order. NULL loses
# everywhere. A copy under another user_id competes too: the check-in is the winner's.
WINNER_ORDER: tuple[tuple[str, bool], ...] = (
    ("updated_at", True),
    ("deleted_at", True),
    ("user_id", False),
    ("created_at", False),
    ("privacy", False),
    ("text_content", False),
    ("media_url", False),
    ("media_type", False),
    ("thumbnail_url", False),
    ("location_name", False),
    ("tags", False),
)


def keep_one_row_per_id(checkins: pl.DataFrame) -> pl.DataFrame:
    """The winning copy of every duplicated id, every other row as it is (rows without id included)."""
    ids = checkins["id"]
    copied = ids.is_duplicated() & ids.is_not_null()
    if not copied.any():
        return checkins
    winners = (
        checkins.filter(copied)
        .sort(
            [name for name, _ in WINNER_ORDER],
            descending=[descending for _, descending in WINNER_ORDER],
            nulls_last=True,
        )
        .unique(subset="id", keep="first", maintain_order=True)
    )
    return pl.concat([checkins.filter(~copied), winners])
