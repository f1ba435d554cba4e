"""Shards: parsing MONTAGE_SHARD, the Indexed Job's JOB_COMPLETION_INDEX/MONTAGE_SHARD_COUNT, the
rules between them (exit 2 naming the variables), and how uuids split between shards."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import polars as pl
import pytest

from montage_vec.config import Settings, load_settings
from montage_vec.config.shard import Shard, effective_shard
from montage_vec.errors import ConfigError
from tests.support.cli import RunCli
from tests.support.data import AS_OF, checkin, days, load_checkins

EXIT_CONFIG = 2


@pytest.fixture(autouse=True)
def no_job_settings_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


def users(how_many: int, seed: int = 7) -> pl.Series:
    """Deterministic uuid v4 texts (their last hex digits are what shards split on)."""
    generator = random.Random(seed)
    return pl.Series("user_id", [str(uuid.UUID(int=generator.getrandbits(128), version=4)) for _ in range(how_many)])


# -- effective_shard ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("montage_shard", "count", "index", "expected"),
    [
        (None, None, None, Shard(0, 1)),
        ("3/8", None, None, Shard(3, 8)),
        (None, 4, 2, Shard(2, 4)),
        (None, 4, 0, Shard(0, 4)),
        (None, 1, 0, Shard(0, 1)),
        # Kubernetes sets JOB_COMPLETION_INDEX in every Indexed Job: alone, it means nothing.
        (None, None, 3, Shard(0, 1)),
        ("1/2", None, 5, Shard(1, 2)),
    ],
)
def test_effective_shard(montage_shard: str | None, count: int | None, index: int | None, expected: Shard) -> None:
    assert effective_shard(montage_shard, count, index) == expected


@pytest.mark.parametrize(
    ("montage_shard", "count", "index", "named"),
    [
        (None, 4, None, ("MONTAGE_SHARD_COUNT", "JOB_COMPLETION_INDEX")),
        (None, 4, 4, ("MONTAGE_SHARD_COUNT", "JOB_COMPLETION_INDEX")),
        (None, 4, 9, ("MONTAGE_SHARD_COUNT", "JOB_COMPLETION_INDEX")),
        # Both ways at once, even agreeing: one of them is left over from an old template.
        ("1/4", 4, 1, ("MONTAGE_SHARD", "MONTAGE_SHARD_COUNT")),
        ("0/1", 4, 1, ("MONTAGE_SHARD", "MONTAGE_SHARD_COUNT")),
    ],
)
def test_contradictions_name_the_variables(
    montage_shard: str | None, count: int, index: int | None, named: tuple[str, ...]
) -> None:
    with pytest.raises(ValueError) as failure:
        effective_shard(montage_shard, count, index)
    for variable in named:
        assert variable in str(failure.value)


# -- through the settings ------------------------------------------------------------------------


def test_indexed_job_variables_make_the_shard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONTAGE_SHARD_COUNT", "4")
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "2")
    settings = load_settings()
    assert settings.shard() == Shard(2, 4)
    # The field every reader uses (the run, the metrics' grouping key, the DEBUG configuration line).
    assert settings.montage_shard == "2/4"
    assert settings.effective()["montage_shard"] == "2/4"
    assert (settings.effective()["montage_shard_count"], settings.effective()["job_completion_index"]) == (4, 2)


def test_an_explicit_montage_shard_of_0_1_still_counts_as_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONTAGE_SHARD", "0/1")
    monkeypatch.setenv("MONTAGE_SHARD_COUNT", "2")
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    with pytest.raises(ConfigError) as failure:
        load_settings()
    assert "MONTAGE_SHARD " in str(failure.value) and "MONTAGE_SHARD_COUNT" in str(failure.value)
    assert failure.value.exit_code == EXIT_CONFIG


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"MONTAGE_SHARD_COUNT": "0", "JOB_COMPLETION_INDEX": "0"}, "MONTAGE_SHARD_COUNT"),
        ({"MONTAGE_SHARD_COUNT": "four", "JOB_COMPLETION_INDEX": "0"}, "MONTAGE_SHARD_COUNT"),
        ({"MONTAGE_SHARD_COUNT": "4", "JOB_COMPLETION_INDEX": "-1"}, "JOB_COMPLETION_INDEX"),
        ({"MONTAGE_SHARD_COUNT": "4"}, "JOB_COMPLETION_INDEX"),
        ({"MONTAGE_SHARD_COUNT": "4", "JOB_COMPLETION_INDEX": "4"}, "JOB_COMPLETION_INDEX"),
    ],
)
def test_invalid_indexed_job_settings_are_config_errors(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], named: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as failure:
        load_settings()
    assert named in str(failure.value)
    assert failure.value.exit_code == EXIT_CONFIG


def test_cli_exits_2_naming_both_variables_before_touching_data(run_cli: RunCli, tmp_path: Path) -> None:
    database = tmp_path / "never.duckdb"
    env = {"MONTAGE_SHARD_COUNT": "4", "JOB_COMPLETION_INDEX": "4", "DATABASE_URL": f"duckdb:///{database}"}
    result = run_cli("once", env=env)
    assert result.exit_code == EXIT_CONFIG, result.everything()
    assert "MONTAGE_SHARD_COUNT" in result.stderr and "JOB_COMPLETION_INDEX" in result.stderr
    assert not database.exists()


def test_a_run_works_as_the_indexed_jobs_shard(run_cli: RunCli, duckdb_url: str) -> None:
    everyone = users(40)
    load_checkins(duckdb_url, [checkin(user, AS_OF - days(1)) for user in everyone])
    env = {"MONTAGE_SHARD_COUNT": "4", "JOB_COMPLETION_INDEX": "3", "DATABASE_URL": duckdb_url, "DEBUG": "true"}
    result = run_cli("once", "--as-of", AS_OF.isoformat(), env=env)
    assert result.exit_code == 0, result.everything()
    assert result.log("effective configuration")["configuration"]["montage_shard"] == "3/4"
    assert result.log("Batch job started")["shard"] == "3/4"
    assert result.log("Batch job completed")["processed"] == len(Shard(3, 4).owns(everyone))


# -- how users split -------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
def test_every_user_is_in_exactly_one_shard(count: int) -> None:
    everyone = users(2000)
    parts = [set(Shard(index, count).owns(everyone).to_list()) for index in range(count)]
    assert sum(len(part) for part in parts) == len(everyone)
    assert set().union(*parts) == set(everyone)
    # uuid v4 ends in random digits: no shard is starved (a loose bound, 2000 users).
    assert min(len(part) for part in parts) > len(everyone) / count / 2


def test_a_shard_of_n_is_the_union_of_its_shards_of_2n() -> None:
    """i/2 owns exactly i/4 and (i+2)/4: the last hex digits modulo 4 decide modulo 2 too."""
    everyone = users(1000)
    for index in range(2):
        halves = set(Shard(index, 4).owns(everyone).to_list()) | set(Shard(index + 2, 4).owns(everyone).to_list())
        assert set(Shard(index, 2).owns(everyone).to_list()) == halves
