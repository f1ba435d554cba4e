"""Synthetic check-ins in batches: the same rows as `generate_checkins`, whatever the batching
and order, each batch bounded, and in user_id order on request (demo loads them so)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from montage_vec.datagen import SyntheticSpec, generate_checkins, iter_checkin_batches

SPEC = SyntheticSpec(users=1234, seed=7)


def sorted_rows(table: pa.Table) -> pa.Table:
    return table.sort_by("id")


def test_by_index_is_generate_checkins_cut_into_batches() -> None:
    batches = list(iter_checkin_batches(SPEC, users_per_batch=500))

    assert [len(set(batch["user_id"].to_pylist())) for batch in batches] == [500, 500, 234]
    assert pa.concat_tables(batches).equals(generate_checkins(SPEC))


@pytest.mark.parametrize("users_per_batch", [1, 97, 5000])
def test_by_user_id_has_the_same_rows_users_in_id_order(users_per_batch: int) -> None:
    batches = list(iter_checkin_batches(SPEC, users_per_batch=users_per_batch, by_user_id=True))
    loaded = pa.concat_tables(batches)

    assert sorted_rows(loaded).equals(sorted_rows(generate_checkins(SPEC)))
    user_ids = loaded["user_id"].to_pylist()
    assert user_ids == sorted(user_ids), "users come in user_id order, each user's rows together"
    assert all(len(set(batch["user_id"].to_pylist())) <= users_per_batch for batch in batches)


def test_no_users_no_batches() -> None:
    assert list(iter_checkin_batches(SyntheticSpec(users=0), by_user_id=True)) == []
    with pytest.raises(ValueError, match="users_per_batch"):
        next(iter_checkin_batches(SPEC, users_per_batch=0))
