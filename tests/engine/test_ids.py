"""Montage ids in the engine's output: derived from the key as the stores derive them."""

from __future__ import annotations

import hashlib
import uuid

import polars as pl

from montage_vec.engine.ids import montage_ids
from tests.engine.builders import U1, U2, checkin, compute


def _expected(user_id: str, kind: str, interest: str) -> str:
    # PostgreSQL: md5(user_id || '/' || kind || '/' || interest)::uuid
    return str(uuid.UUID(hashlib.md5(f"{user_id}/{kind}/{interest}".encode()).hexdigest()))


def test_ids_are_the_md5_of_the_key_as_a_uuid() -> None:
    ids = montage_ids(pl.Series([U1, U2]), pl.Series(["general", "interest"]), pl.Series(["", "café"]))
    assert ids.to_list() == [_expected(U1, "general", ""), _expected(U2, "interest", "café")]


def test_montages_and_their_items_carry_the_same_id() -> None:
    rows = [checkin(n, user=user, tags=["coffee", "tea"]) for n in range(1, 5) for user in (U1, U2)]
    result = compute(rows)
    for montage in result.montages.iter_rows(named=True):
        assert montage["montage_id"] == _expected(montage["user_id"], montage["kind"], montage["interest"])
    joined = result.items.join(result.montages, on="montage_id", how="left", suffix="_m")
    assert joined.filter(
        (pl.col("user_id") != pl.col("user_id_m"))
        | (pl.col("kind") != pl.col("kind_m"))
        | (pl.col("interest") != pl.col("interest_m"))
    ).is_empty()
    assert joined["item_count"].null_count() == 0
