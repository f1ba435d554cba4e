"""Baseline 2: the whole job as set-based SQL inside the database, one INSERT ... SELECT per table.

Writes fresh `sql_montages` / `sql_montage_items` (the product's columns, keys and indexes)
and then compares them with what the engine stored for the same as_of. Tags are normalised
with `lower(trim(...))`, which is what a hand-written SQL job would do; unlike Python's
`str.lower()` it does not apply the Greek final-sigma rule, so a few interests can differ.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from benchmarks.cpu_stats import CpuTimes
from benchmarks.database import BenchDatabase
from montage_vec.engine import MontageParams
from montage_vec.stores.render import Timestamp

PREFIX = "sql_"

_ELIGIBLE = """
eligible AS (
    SELECT c.*, row_number() OVER (PARTITION BY c."user_id" ORDER BY c."created_at" DESC, c."id" DESC) - 1 AS "rank"
    FROM "checkins" c
    WHERE c."deleted_at" IS NULL AND c."privacy" IN ({privacy})
),
tag_rows AS (
    SELECT e."id", e."user_id", e."created_at", e."rank", lower(trim(u."raw")) AS "tag", min(u."ord") AS "ord"
    FROM eligible e CROSS JOIN LATERAL unnest(e."tags") WITH ORDINALITY AS u("raw", "ord")
    GROUP BY e."id", e."user_id", e."created_at", e."rank", lower(trim(u."raw"))
),
tags AS (SELECT * FROM tag_rows WHERE "tag" <> '' AND length("tag") <= {max_tag}),
windowed AS (
    SELECT "user_id", "tag", "created_at",
           row_number() OVER (PARTITION BY "user_id", "tag" ORDER BY "created_at" DESC) AS "nth"
    FROM tags WHERE "created_at" > {cutoff}
),
qualifying AS (
    SELECT "user_id", "tag", "created_at" + INTERVAL '{lookback_days} days' AS "valid_until"
    FROM windowed WHERE "nth" = {min_occurrence}
)"""

INSERT_MONTAGES = """
INSERT INTO "sql_montages" ("id", "user_id", "kind", "interest", "item_count", "generated_at", "cache_expires_at",
                            "valid_until", "job_id")
WITH {eligible},
general AS (SELECT "user_id", least(count(*), {max_items}) AS "item_count" FROM eligible GROUP BY "user_id"),
interest AS (
    SELECT t."user_id", t."tag", least(count(*), {max_items}) AS "item_count", q."valid_until"
    FROM tags t JOIN qualifying q ON q."user_id" = t."user_id" AND q."tag" = t."tag"
    GROUP BY t."user_id", t."tag", q."valid_until"
)
SELECT md5("user_id"::VARCHAR || '/general/')::UUID, "user_id", 'general', '', "item_count",
       {generated_at}, {expires_at}, NULL, 'sql_baseline'
FROM general
UNION ALL
SELECT md5("user_id"::VARCHAR || '/interest/' || "tag")::UUID, "user_id", 'interest', "tag", "item_count",
       {generated_at}, {expires_at}, "valid_until", 'sql_baseline'
FROM interest
"""

INSERT_ITEMS = """
INSERT INTO "sql_montage_items" ("montage_id", "position", "checkin_id", "checkin_created_at", "widget_type",
                                 "widget_metadata")
WITH {eligible},
tag_lists AS (SELECT "id", array_agg("tag" ORDER BY "ord") AS "tags" FROM tags GROUP BY "id"),
positioned AS (
    SELECT "user_id", 'general' AS "kind", '' AS "interest", "rank" AS "position", "id"
    FROM eligible WHERE "rank" < {max_items}
    UNION ALL
    SELECT t."user_id", 'interest', t."tag",
           row_number() OVER (PARTITION BY t."user_id", t."tag" ORDER BY t."rank") - 1, t."id"
    FROM tags t JOIN qualifying q ON q."user_id" = t."user_id" AND q."tag" = t."tag"
)
SELECT md5(p."user_id"::VARCHAR || '/' || p."kind" || '/' || p."interest")::UUID, p."position", e."id",
       e."created_at",
       CASE WHEN e."media_url" IS NOT NULL THEN 'media'
            WHEN e."text_content" IS NOT NULL THEN 'text'
            WHEN e."location_name" IS NOT NULL THEN 'location'
            ELSE 'activity' END,
       {metadata}
FROM positioned p
JOIN eligible e ON e."id" = p."id"
LEFT JOIN tag_lists l ON l."id" = p."id"
WHERE p."position" < {max_items}
"""

_FIELDS = """'media_url', e."media_url", 'media_type', e."media_type", 'thumbnail_url', e."thumbnail_url",
         'text', e."text_content", 'location', e."location_name", 'tags', {tags}, 'privacy', e."privacy\""""
PG_TAGS = """to_jsonb(coalesce(l."tags", '{}'::text[]))"""
DUCKDB_TAGS = """coalesce(l."tags", []::VARCHAR[])"""
METADATA = {
    "postgresql": "jsonb_strip_nulls(jsonb_build_object(" + _FIELDS.format(tags=PG_TAGS) + "))",
    # JSON merge patch (RFC 7396) drops keys whose value is null, like jsonb_strip_nulls.
    "duckdb": "json_merge_patch('{}', json_object(" + _FIELDS.format(tags=DUCKDB_TAGS) + "))",
}


@dataclass
class SqlResult:
    montages_seconds: float
    items_seconds: float
    general: int
    interest: int
    items: int
    same_montages: int
    same_items: int
    engine_general: int
    engine_interest: int
    engine_items: int
    cpu: CpuTimes  # of the two timed statements
    differing_montages: int = 0
    sigma_montages: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.montages_seconds + self.items_seconds

    @property
    def counts_match(self) -> bool:
        return (self.general, self.interest) == (self.engine_general, self.engine_interest)


def statements(backend: str, as_of: datetime, params: MontageParams) -> tuple[str, str]:
    privacy = ", ".join(f"'{p}'" for p in sorted(params.privacy_included) if "'" not in p)
    eligible = _ELIGIBLE.format(
        privacy=privacy,
        max_tag=100,
        cutoff=Timestamp(as_of - params.lookback).sql("postgresql"),
        lookback_days=params.interest_lookback_days,
        min_occurrence=params.min_interest_occurrence,
    )
    common = {"eligible": eligible.strip(), "max_items": params.max_items}
    montages = INSERT_MONTAGES.format(
        **common,
        generated_at=Timestamp(as_of).sql("postgresql"),
        expires_at=Timestamp(as_of + timedelta(hours=1)).sql("postgresql"),
    )
    return montages, INSERT_ITEMS.format(**common, metadata=METADATA[backend])


def run_sql_baseline(db: BenchDatabase, as_of: datetime, params: MontageParams) -> SqlResult:
    db.create_montage_tables(PREFIX)
    insert_montages, insert_items = statements(db.backend, as_of, params)
    cpu_before = db.cpu_times()
    started = time.perf_counter()
    db.execute(insert_montages)
    between = time.perf_counter()
    db.execute(insert_items)
    finished = time.perf_counter()
    return _compare(db, between - started, finished - between, db.cpu_times().minus(cpu_before))


_ONLY_IN = """SELECT '{side}' AS "side", x."kind", x."interest", x."user_id"::VARCHAR AS "user_id" FROM "{a}" x
WHERE NOT EXISTS (SELECT 1 FROM "{b}" y WHERE y."id" = x."id")"""


def _counts(db: BenchDatabase, prefix: str) -> tuple[int, int, int]:
    by_kind = dict(db.rows(f'SELECT "kind", count(*) FROM "{prefix}montages" GROUP BY "kind"'))  # noqa: S608
    items = int(db.scalar(f'SELECT count(*) FROM "{prefix}montage_items"'))  # noqa: S608
    return int(by_kind.get("general", 0)), int(by_kind.get("interest", 0)), items


def _compare(db: BenchDatabase, montages_seconds: float, items_seconds: float, cpu: CpuTimes) -> SqlResult:
    general, interest, items = _counts(db, PREFIX)
    engine_general, engine_interest, engine_items = _counts(db, "")
    same_montages = int(
        db.scalar(
            """SELECT count(*) FROM "sql_montages" s JOIN "montages" m
               ON m."id" = s."id" AND m."item_count" = s."item_count"
              AND m."valid_until" IS NOT DISTINCT FROM s."valid_until\""""
        )
    )
    metadata_equal = (
        'm."widget_metadata" = s."widget_metadata"'
        if db.backend == "postgresql"
        else 'm."widget_metadata"::VARCHAR = s."widget_metadata"::VARCHAR'
    )
    same_items = int(
        db.scalar(
            f"""SELECT count(*) FROM "sql_montage_items" s JOIN "montage_items" m
                ON m."montage_id" = s."montage_id" AND m."position" = s."position"
               AND m."checkin_id" = s."checkin_id" AND m."widget_type" = s."widget_type" AND {metadata_equal}"""  # noqa: S608
        )
    )
    differing, sigma = db.rows(
        f"""SELECT count(*), count(*) FILTER (WHERE "interest" LIKE '%σ%' OR "interest" LIKE '%ς%')
            FROM ({_ONLY_IN.format(a="montages", b="sql_montages", side="engine only")}
                  UNION ALL {_ONLY_IN.format(a="sql_montages", b="montages", side="SQL only")}) AS d"""  # noqa: S608
    )[0]
    examples = [
        f"{side}: {kind} {interest!r} of user {user}"
        for side, kind, interest, user in db.rows(
            f"""(SELECT * FROM ({_ONLY_IN.format(a="montages", b="sql_montages", side="engine only")}) AS e
                 ORDER BY 2, 3, 4 LIMIT 3)
               UNION ALL
               (SELECT * FROM ({_ONLY_IN.format(a="sql_montages", b="montages", side="SQL only")}) AS s
                 ORDER BY 2, 3, 4 LIMIT 3)"""  # noqa: S608 - constant table names
        )
    ]
    return SqlResult(
        montages_seconds=montages_seconds,
        items_seconds=items_seconds,
        general=general,
        interest=interest,
        items=items,
        same_montages=same_montages,
        same_items=same_items,
        engine_general=engine_general,
        engine_interest=engine_interest,
        engine_items=engine_items,
        cpu=cpu,
        differing_montages=int(differing),
        sigma_montages=int(sigma),
        examples=examples,
    )
