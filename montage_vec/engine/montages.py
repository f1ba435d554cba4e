"""compute_montages: check-ins in, montages and their items out, for any number of users.

Pure and vectorized: no I/O and no Python loop over users, check-ins or tags. The rules
it implements are numbered as in the montage contract (README, "Semantics").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import polars as pl
import pyarrow as pa

from montage_vec.config.moments import as_utc
from montage_vec.engine.conform import conform_checkins, split_rejected
from montage_vec.engine.duplicates import keep_one_row_per_id
from montage_vec.engine.ids import montage_ids
from montage_vec.engine.params import MontageParams
from montage_vec.engine.schema import GENERAL, INTEREST, ITEM_SCHEMA, MONTAGE_KEY, MONTAGE_SCHEMA
from montage_vec.engine.tags import explode_normalized_tags
from montage_vec.engine.text import strip_lower
from montage_vec.engine.widgets import widget_metadata_expr, widget_type_expr

# Rule 3: newest first, ties broken by the larger id.
ITEM_ORDER = ["user_id", "created_at", "id"]
ITEM_ORDER_DESCENDING = [False, True, True]
# Check-in columns shown in widgets (rule 6); gathered only for check-ins that become items.
DISPLAY_COLUMNS = ["privacy", "text_content", "media_url", "media_type", "thumbnail_url", "location_name"]


@dataclass(frozen=True)
class MontageSet:
    """The montages of a set of users.

    `montages` and `items` follow MONTAGE_SCHEMA and ITEM_SCHEMA; items reference their
    montage by `montage_id`, and by (user_id, kind, interest). `rejected` lists users whose check-ins could not
    be processed (user_id, error): they get no montages here and their stored ones must be
    left as they are.
    """

    montages: pl.DataFrame
    items: pl.DataFrame
    rejected: pl.DataFrame

    @property
    def general_count(self) -> int:
        return int((self.montages["kind"] == GENERAL).sum())

    @property
    def interest_count(self) -> int:
        return int((self.montages["kind"] == INTEREST).sum())


def compute_montages(
    checkins: pl.DataFrame | pa.Table, as_of: datetime, params: MontageParams | None = None
) -> MontageSet:
    """All montages (rules 1-6 and 8) of every user present in `checkins`, at `as_of`."""
    params = params or MontageParams()
    # All times are UTC: a naive as_of means UTC, as naive check-in columns do.
    as_of = as_utc(as_of)
    # Rule 8 first: a copy that loses is no part of the input, not even to reject its user.
    usable, rejected = split_rejected(keep_one_row_per_id(conform_checkins(checkins)))
    # Rule 1 compares privacy after strip().lower() (params hold the configured side so), and
    # rule 6 shows it so: a re-cased value then neither changes eligibility nor rewrites items.
    valid = usable.with_columns(privacy=strip_lower(usable["privacy"]))
    eligible = _eligible_in_item_order(valid, params)
    tag_rows = explode_normalized_tags(eligible.select("row_nr", "rank", "user_id", "created_at", "tags"))
    qualifying = _qualifying_interests(tag_rows, as_of, params)
    item_rows = pl.concat([_general_item_rows(eligible, params), _interest_item_rows(tag_rows, qualifying, params)])
    items = _attach_widgets(item_rows, eligible, valid, tag_rows)
    montages = _summarize(items, qualifying)
    return MontageSet(montages=montages, items=_with_montage_ids(items, montages), rejected=rejected)


def _eligible_in_item_order(checkins: pl.DataFrame, params: MontageParams) -> pl.DataFrame:
    """Rule 1 and rule 3: eligible check-ins sorted per user, `rank` 0 = newest.

    Only the columns that decide membership and order are sorted; `source_row` points back
    into `checkins` for the display columns, which only shown check-ins need.
    """
    included = sorted(params.privacy_included)
    eligible = (
        checkins.select("user_id", "created_at", "id", "tags", "deleted_at", "privacy")
        .with_row_index("source_row")
        .filter(pl.col("deleted_at").is_null() & pl.col("privacy").is_in(included))
        .drop("deleted_at", "privacy")
    )
    ordered = eligible.sort(ITEM_ORDER, descending=ITEM_ORDER_DESCENDING).with_row_index("row_nr")
    return ordered.with_columns(rank=pl.int_range(pl.len(), dtype=pl.Int32).over("user_id"))


def _general_item_rows(eligible: pl.DataFrame, params: MontageParams) -> pl.DataFrame:
    """Rule 4: the first MAX_ITEMS eligible check-ins of every user."""
    return eligible.filter(pl.col("rank") < params.max_items).select(
        "user_id",
        kind=pl.lit(GENERAL),
        interest=pl.lit(""),
        position=pl.col("rank"),
        row_nr="row_nr",
    )


def _qualifying_interests(tag_rows: pl.DataFrame, as_of: datetime, params: MontageParams) -> pl.DataFrame:
    """Rule 5: (user_id, interest, valid_until) of every tag used often enough in the window."""
    cutoff = as_of - params.lookback
    needed = params.min_interest_occurrence
    in_window = tag_rows.filter(pl.col("created_at") > cutoff)
    per_tag = in_window.group_by("user_id", "tag").agg(
        occurrences=pl.len(),
        # The MIN_OCCURRENCE-th newest in the window: once it leaves, the tag stops qualifying.
        kth_newest=pl.col("created_at").top_k(needed).min(),
    )
    return per_tag.filter(pl.col("occurrences") >= needed).select(
        "user_id",
        interest="tag",
        valid_until=pl.col("kth_newest") + params.lookback,
    )


def _interest_item_rows(tag_rows: pl.DataFrame, qualifying: pl.DataFrame, params: MontageParams) -> pl.DataFrame:
    """Rule 5: the first MAX_ITEMS of all the user's eligible check-ins carrying the tag."""
    tagged = tag_rows.join(qualifying.select("user_id", tag="interest"), on=["user_id", "tag"], how="semi")
    # `rank` is the user's item order, so ranking it within (user, tag) orders the montage
    # without depending on the row order joins leave behind.
    position = (pl.col("rank").rank("ordinal").over("user_id", "tag") - 1).cast(pl.Int32)
    return (
        tagged.with_columns(position=position)
        .filter(pl.col("position") < params.max_items)
        .select("user_id", kind=pl.lit(INTEREST), interest="tag", position="position", row_nr="row_nr")
    )


def _attach_widgets(
    item_rows: pl.DataFrame, eligible: pl.DataFrame, checkins: pl.DataFrame, tag_rows: pl.DataFrame
) -> pl.DataFrame:
    """Rule 6: each item's check-in id, time, widget type and metadata, computed once per check-in."""
    tag_lists = tag_rows.group_by("row_nr").agg(normalized_tags=pl.col("tag"))
    shown_keys = eligible.join(item_rows.select("row_nr").unique(), on="row_nr", how="semi")
    display = checkins.select(DISPLAY_COLUMNS).gather(shown_keys["source_row"])
    shown = (
        pl.concat([shown_keys.select("row_nr", "id", "created_at"), display], how="horizontal")
        .join(tag_lists, on="row_nr", how="left")
        .with_columns(pl.col("normalized_tags").fill_null(pl.lit([], dtype=pl.List(pl.String))))
        .select(
            "row_nr",
            checkin_id="id",
            checkin_created_at="created_at",
            widget_type=widget_type_expr(),
            widget_metadata=widget_metadata_expr(),
        )
    )
    items = item_rows.join(shown, on="row_nr", how="inner").drop("row_nr")
    return items.sort([*MONTAGE_KEY, "position"])


def _summarize(items: pl.DataFrame, qualifying: pl.DataFrame) -> pl.DataFrame:
    """One row per montage: its id, item count and, for interests, when it stops qualifying."""
    counts = items.group_by(MONTAGE_KEY).agg(item_count=pl.len())
    valid_until = qualifying.with_columns(kind=pl.lit(INTEREST))
    montages = counts.join(valid_until, on=MONTAGE_KEY, how="left").sort(MONTAGE_KEY)
    with_ids = montages.with_columns(montage_ids(montages["user_id"], montages["kind"], montages["interest"]))
    return with_ids.select([pl.col(name).cast(dtype) for name, dtype in MONTAGE_SCHEMA.items()])


def _with_montage_ids(items: pl.DataFrame, montages: pl.DataFrame) -> pl.DataFrame:
    """Items with their montage's id, in ITEM_SCHEMA.

    Both frames are sorted by MONTAGE_KEY and every montage is exactly its `item_count`
    items, so repeating each id `item_count` times lines up with the items: no join needed.
    """
    ids = montages.select(pl.col("montage_id").repeat_by("item_count").explode())["montage_id"]
    return items.with_columns(ids).select([pl.col(name).cast(dtype) for name, dtype in ITEM_SCHEMA.items()])
