"""explain_user: why one user's montages are what they are.

For every check-in: whether it is eligible and, when not, why (rule 8, the NOT NULL
promises, rule 1); its normalised tags and the tags dropped with the reason (rule 2). For
every tag: how often it occurs in the window and whether it qualifies (rule 5), and when
it does not, how many more check-ins it needs. The montages themselves come from
`compute_montages`, so an explanation never disagrees with what a run stores.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import polars as pl
import pyarrow as pa

from montage_vec.config.moments import as_utc
from montage_vec.engine.conform import conform_checkins
from montage_vec.engine.diff import MontageDiff, diff_montages
from montage_vec.engine.duplicates import keep_one_row_per_id
from montage_vec.engine.montages import MontageSet, compute_montages
from montage_vec.engine.params import MontageParams
from montage_vec.engine.tags import MAX_TAG_CHARS
from montage_vec.engine.text import strip_lower

DROPPED_TAG = pl.Struct({"tag": pl.String, "reason": pl.String})


@dataclass(frozen=True)
class Explanation:
    """One user's montages, and the reasons behind them.

    `checkins`: id, created_at, eligible, reason, in_window, tags, normalized_tags,
    dropped_tags (tag, reason). `tags`: tag, occurrences_in_window, eligible_occurrences,
    ineligible_occurrences, window_start, qualifies, kth_newest_in_window, valid_until,
    more_needed. `montages`: what a run would store. `diff`: against the stored montages,
    when they were given. `rejected`: why the user cannot be processed at all, if so.
    """

    user_id: str
    as_of: datetime
    window_start: datetime
    params: MontageParams
    rejected: str | None
    checkins: pl.DataFrame
    tags: pl.DataFrame
    montages: MontageSet
    diff: MontageDiff | None = None


def explain_user(
    checkins: pl.DataFrame | pa.Table,
    user_id: str,
    as_of: datetime,
    params: MontageParams | None = None,
    stored: MontageSet | None = None,
) -> Explanation:
    """Explain `user_id`'s montages at `as_of` from `checkins` (which may hold other users too)."""
    params = params or MontageParams()
    as_of = as_utc(as_of)
    window_start = as_of - params.lookback
    conformed = conform_checkins(checkins).with_row_index("row")
    winners = keep_one_row_per_id(conformed)["row"]
    own = conformed.filter(pl.col("user_id") == user_id).with_columns(winner=pl.col("row").is_in(winners.implode()))
    rows = _judged(own, params, window_start)
    computed = _only_user(compute_montages(checkins, as_of, params), user_id)
    rejected = computed.rejected["error"].first() if not computed.rejected.is_empty() else None
    return Explanation(
        user_id=user_id,
        as_of=as_of,
        window_start=window_start,
        params=params,
        rejected=rejected if isinstance(rejected, str) else None,
        checkins=rows,
        tags=_tag_table(rows, params, window_start),
        montages=computed,
        diff=diff_montages(computed, stored) if stored is not None else None,
    )


def _judged(own: pl.DataFrame, params: MontageParams, window_start: datetime) -> pl.DataFrame:
    """One row per check-in row of the user: eligibility and its reason, tags kept and dropped."""
    privacy = strip_lower(own["privacy"])
    included = sorted(params.privacy_included)
    reason = (
        pl.when(~pl.col("winner"))
        .then(pl.lit("duplicate: another row with this id wins (rule 8)"))
        .when(pl.col("id").is_null())
        .then(pl.lit("no id"))
        .when(pl.col("created_at").is_null())
        .then(pl.lit("no created_at"))
        .when(pl.col("deleted_at").is_not_null())
        .then(pl.lit("deleted"))
        .when(pl.col("privacy").is_null())
        .then(pl.lit("no privacy"))
        .when(~pl.col("privacy").is_in(included))
        .then(pl.format("privacy '{}' is not one of {}", pl.col("privacy"), pl.lit(", ".join(included))))
    )
    judged = own.with_columns(privacy=privacy).with_columns(
        eligible=reason.is_null(), reason=reason, in_window=pl.col("created_at") > window_start
    )
    return (
        judged.join(_tag_verdicts(own), on="row", how="left")
        # Item order (rule 3), a copy's winner before its losers.
        .sort(["created_at", "id", "winner"], descending=True, nulls_last=True)
        .select(
            "id",
            "created_at",
            "eligible",
            "reason",
            pl.col("in_window").fill_null(False),
            "tags",
            pl.col("normalized_tags").fill_null(pl.lit([], pl.List(pl.String))),
            pl.col("dropped_tags").fill_null(pl.lit([], pl.List(DROPPED_TAG))),
            "winner",
        )
    )


def _tag_verdicts(own: pl.DataFrame) -> pl.DataFrame:
    """Per check-in row: its normalised tags in first-occurrence order, and each dropped tag with why."""
    raw = own.select("row", "tags").explode("tags", empty_as_null=False, keep_nulls=False)
    normalized = raw.with_columns(normalized=strip_lower(raw["tags"]))
    chars = pl.col("normalized").str.len_chars()
    usable = pl.col("normalized").is_not_null() & (chars > 0) & (chars <= MAX_TAG_CHARS)
    first = pl.col("normalized").is_first_distinct().over("row", "usable")
    reason = (
        pl.when(pl.col("tags").is_null())
        .then(pl.lit("null"))
        .when(chars == 0)
        .then(pl.lit("empty"))
        .when(chars > MAX_TAG_CHARS)
        .then(pl.lit(f"longer than {MAX_TAG_CHARS} characters"))
        .when(~first)
        .then(pl.format("duplicate of '{}'", pl.col("normalized")))
    )
    verdicts = normalized.with_columns(usable=usable).with_columns(reason=reason)
    return verdicts.group_by("row", maintain_order=True).agg(
        normalized_tags=pl.col("normalized").filter(pl.col("reason").is_null()),
        dropped_tags=pl.struct(tag="tags", reason="reason").filter(pl.col("reason").is_not_null()),
    )


def _tag_table(rows: pl.DataFrame, params: MontageParams, window_start: datetime) -> pl.DataFrame:
    """Rule 5 per tag of the user's usable check-ins; ineligible ones are counted apart."""
    needed = params.min_interest_occurrence
    usable = rows.filter(pl.col("winner") & pl.col("id").is_not_null() & pl.col("created_at").is_not_null())
    tagged = (
        usable.select("created_at", "eligible", "in_window", tag="normalized_tags").explode("tag").drop_nulls("tag")
    )
    counted = pl.col("eligible") & pl.col("in_window")
    per_tag = tagged.group_by("tag").agg(
        occurrences_in_window=counted.sum().cast(pl.Int32),
        eligible_occurrences=pl.col("eligible").sum().cast(pl.Int32),
        ineligible_occurrences=(~pl.col("eligible")).sum().cast(pl.Int32),
        kth_newest=pl.col("created_at").filter(counted).top_k(needed).min(),
    )
    qualifies = pl.col("occurrences_in_window") >= needed
    return per_tag.select(
        "tag",
        "occurrences_in_window",
        "eligible_occurrences",
        "ineligible_occurrences",
        window_start=pl.lit(window_start, dtype=pl.Datetime("us", "UTC")),
        qualifies=qualifies,
        kth_newest_in_window=pl.when(qualifies).then("kth_newest"),
        valid_until=pl.when(qualifies).then(pl.col("kth_newest") + params.lookback),
        more_needed=pl.max_horizontal(pl.lit(needed) - pl.col("occurrences_in_window"), pl.lit(0)).cast(pl.Int32),
    ).sort(["qualifies", "occurrences_in_window", "tag"], descending=[True, True, False])


def _only_user(montage_set: MontageSet, user_id: str) -> MontageSet:
    mine = pl.col("user_id") == user_id
    return MontageSet(
        montages=montage_set.montages.filter(mine),
        items=montage_set.items.filter(mine),
        rejected=montage_set.rejected.filter(mine),
    )
