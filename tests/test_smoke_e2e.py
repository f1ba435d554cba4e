from __future__ import annotations

from tests.support.data import AS_OF, checkin, days, expected_montages, load_checkins, new_id, stored_montages


def test_full_run_matches_recompute(database_url: str, run_cli) -> None:
    user = new_id()
    rows = [checkin(user, AS_OF - days(i), tags=["Coffee"]) for i in range(5)]
    load_checkins(database_url, rows)
    result = run_cli("once", "--as-of", AS_OF.isoformat(), env={"DATABASE_URL": database_url})
    assert result.exit_code == 0, result.stderr
    assert result.log("Batch job completed")["interest_montages"] == 1
    assert stored_montages(database_url) == expected_montages(rows, AS_OF)
