"""Settings: the only place that reads environment variables.

Field names are the environment variables, lower-cased (`MONTAGE_BATCH_SIZE` ->
`montage_batch_size`), so an operator's variable maps to exactly one field. The CLI
passes its flags as keyword overrides, which win over the environment.
"""

from __future__ import annotations

import tempfile
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BeforeValidator, ByteSize, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from montage_vec.config.database import DEFAULT_READ_MAX_LAG, DatabaseTarget, resolve_database
from montage_vec.config.durations import format_duration, parse_duration
from montage_vec.config.relation import DEFAULT_SOURCE, RelationName, parse_schema
from montage_vec.config.shard import Shard, effective_shard

if TYPE_CHECKING:  # the engine imports Polars, which `--help` and `health` never need
    from montage_vec.engine.params import MontageParams

Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


# A nightly job with the capture triggers reconciles once a week by default.
TRIGGER_MODE_RECONCILE_EVERY = 7

CsvList = Annotated[list[str], NoDecode, BeforeValidator(_split_csv)]


class Settings(BaseSettings):
    """Every knob of the job, with the old Go job's variable names and sensible defaults."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    # Runtime. BATCH_MODE matters only when no command is given, so only requested_batch_mode()
    # validates it: `BATCH_MODE=bogus montage-vec show ...` must not fail on it.
    batch_mode: str = "once"
    environment: Literal["development", "staging", "production"] = "production"
    log_level: Literal["debug", "info", "warn", "warning", "error"] = "info"
    debug: bool = False
    batch_processing_timeout: Duration = timedelta(minutes=30)
    montage_schedule: str = "0 3 * * *"
    montage_schedule_tz: str = "UTC"
    metrics_port: int = Field(default=8090, ge=0, le=65535)
    metrics_host: str = "0.0.0.0"  # all interfaces: Prometheus scrapes the pod from outside
    pushgateway_url: str | None = None

    # Feature flags.
    enable_batch_processing: bool = True
    enable_realtime_generation: bool = False
    enable_analytics: bool = True

    # External services.
    checkin_source: Literal["database", "http"] = "database"
    checkin_service_url: str | None = None
    checkin_service_api_key: SecretStr | None = None
    checkin_service_timeout: Duration = timedelta(seconds=30)
    checkin_service_page_size: int = Field(default=5000, ge=1, le=100_000)
    user_service_url: str | None = None
    user_service_api_key: SecretStr | None = None
    user_service_timeout: Duration = timedelta(seconds=10)
    user_service_retries: int = Field(default=3, ge=0, le=10)

    # Database: DATABASE_URL wins; otherwise DB_HOST selects PostgreSQL; otherwise embedded DuckDB.
    database_url: SecretStr | None = None
    db_host: str | None = None
    db_port: int = Field(default=5432, ge=1, le=65535)
    db_user: str = "postgres"
    db_password: SecretStr | None = None
    db_name: str = "postgres"
    db_sslmode: SslMode = "prefer"
    db_connect_timeout: Duration = timedelta(seconds=10)
    # How long a run keeps retrying work that failed on a lost connection (a restart).
    db_reconnect_timeout: Duration = timedelta(seconds=60)
    db_read_host: str | None = None
    # How long a chunk waits for DB_READ_HOST to replay up to the primary's position before
    # its extraction fails as a transient error (README, DB_READ_HOST).
    db_read_max_lag: Duration = DEFAULT_READ_MAX_LAG
    # A run needs its control connection plus at least one chunk worker.
    db_max_open_conns: int | None = Field(default=None, ge=2)
    # The embedded database's buffer pool lives in the job's own process, and fills up to this
    # with cached check-in blocks: a full run's peak RSS is the job's own plus the limit (100k
    # users: 490 MiB at 128MB, 451 MiB at 96MB, 412 MiB at 64MB, at the same job CPU), and
    # issue 13 wants 500 MB. Since sql/duckdb/008 nothing a run writes must stay in memory (no
    # ART index), and 64MB also carries 1M users, run after run.
    duckdb_memory_limit: str = Field(default="64MB", pattern=r"^\d+(\.\d+)?\s*(B|KB|MB|GB|KiB|MiB|GiB)$")
    # Where DuckDB spills what does not fit its memory limit; unset: `<database file>.tmp`.
    duckdb_temp_directory: str | None = None

    # Adopting an application's database (README, "Adopting an application's database").
    montage_source: str = DEFAULT_SOURCE
    montage_schema: str | None = None
    montage_change_capture: Literal["auto", "trigger", "watermark"] = "auto"
    # Unset: every run in watermark mode (hard deletes depend on it), every 7th in trigger mode
    # (where only writes that bypass triggers need it).
    montage_reconcile_every: int | None = Field(default=None, ge=1, le=1000)
    # libpq's own variable. The job sets session options itself (UTC), which would make
    # libpq ignore PGOPTIONS, so it is read here and merged into them.
    pgoptions: str | None = None

    # The montage contract.
    montage_max_items: int = Field(default=20, ge=1, le=1000)
    montage_min_interest_occurrence: int = Field(default=3, ge=1)
    montage_interest_lookback_days: int = Field(default=30, ge=0, le=3650)
    montage_privacy_included: CsvList = Field(default_factory=lambda: ["public", "friends"], min_length=1)

    # Work planning.
    montage_batch_size: int = Field(default=2500, ge=1, le=1_000_000)
    max_concurrent_generations: int = Field(default=2, ge=1, le=64)
    watermark_overlap: Duration = timedelta(minutes=10)
    # How far ahead of the clock `--as-of` may be without --allow-future.
    montage_max_clock_skew: Duration = timedelta(days=1)
    cache_ttl: Duration = timedelta(hours=1)
    user_id_filter: CsvList = Field(default_factory=list)
    chunk_retry_attempts: int = Field(default=3, ge=0, le=20)
    # A chunk whose check-ins would take the process past this logs a warning (job/memory.py).
    montage_memory_budget: ByteSize = ByteSize(2**30)
    # How a full run reads the check-ins: `chunks` queries each chunk's users; `scan` reads the
    # source once, sequentially, and spools it by chunk under MONTAGE_SCRATCH_DIR (job/spool.py).
    # `chunks` by measurement: faster at 100k, 300k and 1M users (benchmarks/scale.md).
    montage_full_run_read: Literal["scan", "chunks"] = "chunks"
    # Where a full run's scan spools the check-ins (about the source's size, lz4-compressed); unset:
    # the system's temporary folder (TMPDIR, else /tmp).
    montage_scratch_dir: str = Field(default_factory=tempfile.gettempdir)
    # The breaker: a run in which more of its users fail than this fails itself (README, Reliability).
    montage_max_failed_fraction: float = Field(default=0.01, ge=0.0, le=1.0)
    # The shard: MONTAGE_SHARD, or JOB_COMPLETION_INDEX/MONTAGE_SHARD_COUNT in an Indexed Job's
    # pods; after validation montage_shard holds the effective one (see _effective_shard).
    montage_shard: str = "0/1"
    montage_shard_count: int | None = Field(default=None, ge=1)
    # Kubernetes' own variable, hence no MONTAGE_ prefix; read only with MONTAGE_SHARD_COUNT.
    job_completion_index: int | None = Field(default=None, ge=0)

    @field_validator("user_id_filter")
    @classmethod
    def _canonical_user_ids(cls, values: list[str]) -> list[str]:
        canonical = []
        for value in values:
            try:
                canonical.append(str(uuid.UUID(value)))
            except ValueError:
                raise ValueError(f"not a uuid: {value!r}") from None
        return canonical

    @field_validator("log_level", "environment", "montage_full_run_read", mode="before")
    @classmethod
    def _lower_case(cls, value: Any) -> Any:
        """LOG_LEVEL=ERROR means error: these name a choice, whatever its case."""
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("duckdb_temp_directory")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        """DUCKDB_TEMP_DIRECTORY= (empty, as an env file writes it) means the default folder."""
        return value if value is None or value.strip() else None

    @field_validator("montage_scratch_dir")
    @classmethod
    def _blank_is_default(cls, value: str) -> str:
        """MONTAGE_SCRATCH_DIR= (empty, as an env file writes it) means the system's temporary folder."""
        return value if value.strip() else tempfile.gettempdir()

    @field_validator("montage_shard")
    @classmethod
    def _valid_shard(cls, value: str) -> str:
        return Shard.parse(value).key

    @field_validator("montage_source")
    @classmethod
    def _valid_source(cls, value: str) -> str:
        return str(RelationName.parse(value))

    @field_validator("montage_schema")
    @classmethod
    def _valid_schema(cls, value: str | None) -> str | None:
        return parse_schema(value) if value is not None and value.strip() else None

    @field_validator("checkin_service_api_key", "user_service_api_key", mode="before")
    @classmethod
    def _strip_api_key(cls, value: Any) -> Any:
        # Keys pasted into Secrets often end in a newline, which no HTTP header may carry.
        return value.strip() if isinstance(value, str) else value

    @field_validator("montage_schedule")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError(f"not a cron expression: {value!r}")
        return value

    @field_validator("montage_schedule_tz")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone: {value!r}") from None
        return value

    @model_validator(mode="after")
    def _services_configured(self) -> Settings:
        if self.checkin_source == "http" and not self.checkin_service_url:
            raise ValueError("CHECKIN_SOURCE=http needs CHECKIN_SERVICE_URL")
        return self

    @model_validator(mode="after")
    def _effective_shard(self) -> Settings:
        explicit = self.montage_shard if "montage_shard" in self.model_fields_set else None
        shard = effective_shard(explicit, self.montage_shard_count, self.job_completion_index)
        # One field for every reader (the run, the effective-configuration log, the metrics'
        # grouping key). The model is frozen, but this is still its construction.
        object.__setattr__(self, "montage_shard", shard.key)
        return self

    @field_validator(
        "watermark_overlap",
        "cache_ttl",
        "db_connect_timeout",
        "db_reconnect_timeout",
        "db_read_max_lag",
        "batch_processing_timeout",
        "montage_max_clock_skew",
    )
    @classmethod
    def _not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("must not be negative")
        return value

    def effective(self) -> dict[str, Any]:
        """Every setting, secrets masked, for DEBUG=true start-up logging."""
        shown = self.model_dump(mode="json")
        shown.update({name: "***" for name, value in self if isinstance(value, SecretStr)})
        # As they are configured (30m), not pydantic's ISO 8601 (PT30M).
        shown.update({name: format_duration(value) for name, value in self if isinstance(value, timedelta)})
        return shown

    def montage_params(self) -> MontageParams:
        from montage_vec.engine.params import MontageParams

        return MontageParams(
            max_items=self.montage_max_items,
            min_interest_occurrence=self.montage_min_interest_occurrence,
            interest_lookback_days=self.montage_interest_lookback_days,
            privacy_included=frozenset(p.strip().lower() for p in self.montage_privacy_included),
        )

    def shard(self) -> Shard:
        return Shard.parse(self.montage_shard)

    def reconcile_every(self, capture_mode: str) -> int:
        """Run the reconciliation query on every N-th incremental run of a shard."""
        if self.montage_reconcile_every is not None:
            return self.montage_reconcile_every
        return TRIGGER_MODE_RECONCILE_EVERY if capture_mode == "trigger" else 1

    def source(self) -> RelationName:
        return RelationName.parse(self.montage_source)

    def database(self) -> DatabaseTarget:
        return resolve_database(self)

    def connection_budget(self) -> int:
        """How many database connections the job may open: one per chunk in flight plus the lock's."""
        budget = self.max_concurrent_generations + 1
        if self.db_max_open_conns is not None:
            budget = min(budget, self.db_max_open_conns)
        return budget

    def chunk_workers(self) -> int:
        """Chunks in flight: bounded by concurrency and by the connections left after the lock's."""
        return max(1, min(self.max_concurrent_generations, self.connection_budget() - 1))
