"""Which database the job talks to, resolved from DATABASE_URL or the DB_* variables."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote, urlencode, urlsplit

from montage_vec.config.relation import DEFAULT_SOURCE, RelationName
from montage_vec.config.secrets import redact, register_secret
from montage_vec.errors import ConfigError

if TYPE_CHECKING:
    from montage_vec.config.settings import Settings

DEFAULT_DUCKDB_PATH = Path("montage.duckdb")
POSTGRES_SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True)
class DatabaseTarget:
    """`kind` picks the store; `location` is a file path (DuckDB) or a libpq URI (PostgreSQL).

    `schema` holds the job's own tables (None: the connection's current schema); `source`
    is the relation check-ins are read from; `session_options` are the operator's PGOPTIONS.
    """

    kind: Literal["duckdb", "postgresql"]
    location: str = field(repr=False)
    read_location: str | None = field(default=None, repr=False)
    duckdb_memory_limit: str | None = None
    schema: str | None = None
    source: RelationName = field(default_factory=lambda: RelationName(DEFAULT_SOURCE))
    session_options: str | None = field(default=None, repr=False)

    @property
    def display(self) -> str:
        """Safe to log: passwords masked."""
        return redact(self.location)


def resolve_database(settings: Settings) -> DatabaseTarget:
    target = _resolve_location(settings)
    source = settings.source()
    if target.kind == "duckdb":
        _refuse_catalog_names(Path(target.location).stem, settings.montage_schema, source.schema)
    return replace(target, schema=settings.montage_schema, source=source, session_options=settings.pgoptions)


def _refuse_catalog_names(catalog: str, *schemas: str | None) -> None:
    """DuckDB names a file's catalog after the file, and reads `"x"."t"` as catalog or schema x."""
    for schema in schemas:
        if schema is not None and schema == catalog:
            raise ConfigError(
                f"schema {schema!r} has the name DuckDB gives the database file {catalog}.duckdb, so names in it "
                "would be ambiguous: choose another MONTAGE_SCHEMA (or MONTAGE_SOURCE schema)"
            )


def _resolve_location(settings: Settings) -> DatabaseTarget:
    if settings.database_url is not None:
        return _from_url(settings.database_url.get_secret_value(), settings)
    if settings.db_host:
        return DatabaseTarget("postgresql", _postgres_uri(settings, settings.db_host), _read_replica_uri(settings))
    return DatabaseTarget("duckdb", str(DEFAULT_DUCKDB_PATH), duckdb_memory_limit=settings.duckdb_memory_limit)


def _from_url(url: str, settings: Settings) -> DatabaseTarget:
    scheme = urlsplit(url).scheme.lower()
    if scheme == "duckdb":
        # SQLAlchemy's convention: duckdb:///relative.duckdb and duckdb:////absolute/path.duckdb
        path = url[len("duckdb:///") :] if url.lower().startswith("duckdb:///") else ""
        if not path:
            raise ConfigError("DATABASE_URL: a duckdb URL needs a file, e.g. duckdb:///montage.duckdb")
        return DatabaseTarget("duckdb", path, duckdb_memory_limit=settings.duckdb_memory_limit)
    if scheme in POSTGRES_SCHEMES:
        return DatabaseTarget("postgresql", url, _read_replica_uri(settings, primary_url=url))
    shown = scheme or redact(url)
    raise ConfigError(f"DATABASE_URL: unsupported scheme {shown!r} (use duckdb:/// or postgresql://)")


def _postgres_uri(settings: Settings, host: str) -> str:
    password = settings.db_password.get_secret_value() if settings.db_password else None
    credentials = quote(settings.db_user, safe="")
    if password:
        encoded = quote(password, safe="")
        register_secret(password)
        register_secret(encoded)
        credentials += ":" + encoded
    query = urlencode(
        {
            "sslmode": settings.db_sslmode,
            "connect_timeout": max(1, int(settings.db_connect_timeout.total_seconds())),
            "application_name": "montage-vec",
        }
    )
    host_port = host if ":" in host else f"{host}:{settings.db_port}"  # DB_READ_HOST may carry its own port
    return f"postgresql://{credentials}@{host_port}/{quote(settings.db_name, safe='')}?{query}"


def _read_replica_uri(settings: Settings, primary_url: str | None = None) -> str | None:
    if not settings.db_read_host:
        return None
    if primary_url is None:
        return _postgres_uri(settings, settings.db_read_host)
    # Same credentials, database and options as the primary; only the host (and port) change.
    parts = urlsplit(primary_url)
    credentials, _, _ = parts.netloc.rpartition("@")
    host = settings.db_read_host
    if parts.port and ":" not in host:
        host = f"{host}:{parts.port}"
    return parts._replace(netloc=f"{credentials}@{host}" if credentials else host).geturl()
