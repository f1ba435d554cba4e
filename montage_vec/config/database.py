"""Which database the job talks to, resolved from DATABASE_URL or the DB_* variables.

Passwords in DATABASE_URL. Operators paste generated passwords into DATABASE_URL without
percent-encoding them (`postgresql://u:Zq9/xK7+Lm2pW4==@db/app`). libpq ends the userinfo at the
first `/` or `@`, so it would read `Zq9` as a port, connect nowhere and quote pieces of the
password in its error. A URL that is already a well-formed libpq URI is passed on untouched (a
correctly encoded URL never changes meaning). Otherwise, when it holds an `@`, the userinfo is
everything from after `postgresql://` up to the LAST `@` (a host never holds an `@`), the user
name ends at its FIRST `:`, and user name and password are percent-encoded before libpq sees
them, except for valid `%XX` escapes, which are kept: libpq decodes them, so in a URL `%41` means
`A` and a literal `%` must be written `%25`. A URL counts as well-formed when its userinfo holds
only characters valid there, its hosts and numeric ports are valid, its database name holds no
`@`, its query is `key=value` pairs and it has no `#`: an `@` in a query value
(`?application_name=me@host`) does not make a URL's credentials suspect. The password is
registered as a secret in every form it may be printed in: as written, as encoded, as decoded.
DB_PASSWORD is always taken literally (encoded whole, `%` included).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote, unquote, urlencode, urlsplit

from montage_vec.config.relation import DEFAULT_SOURCE, RelationName
from montage_vec.config.secrets import redact, register_secret
from montage_vec.errors import ConfigError

if TYPE_CHECKING:
    from montage_vec.config.settings import Settings

DEFAULT_DUCKDB_PATH = Path("montage.duckdb")
# How long a chunk waits for DB_READ_HOST to replay up to the primary's position (DB_READ_MAX_LAG).
DEFAULT_READ_MAX_LAG = timedelta(seconds=30)
POSTGRES_SCHEMES = ("postgresql", "postgres")

_SCHEME = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*):", re.I)
# RFC 3986 userinfo: unreserved, sub-delims, ":" and %XX escapes.
_USERINFO = re.compile(r"(?:[A-Za-z0-9._~!$&'()*+,;=:-]|%[0-9A-Fa-f]{2})*")
# libpq's host list: host[:port][,host[:port]]...; a host may be empty, [IPv6] or an encoded socket path.
_HOST = r"(?:\[[0-9A-Za-z:.%]+\]|(?:[A-Za-z0-9._~!$&'()*+;=-]|%[0-9A-Fa-f]{2})*)(?::[0-9]+)?"
_HOSTS = re.compile(rf"{_HOST}(?:,{_HOST})*")
_PARAMETER = re.compile(r"[A-Za-z_]+=[^&]*")
_URI_PARTS = re.compile(r"(?P<authority>[^/?]*)(?P<path>/[^?]*)?(?:\?(?P<query>.*))?", re.S)
# In userinfo, keep unreserved characters and valid escapes; encode everything else.
_NOT_KEPT = re.compile(r"%(?![0-9A-Fa-f]{2})|[^A-Za-z0-9._~%-]")


@dataclass(frozen=True)
class DatabaseTarget:
    """`kind` picks the store; `location` is a file path (DuckDB) or a libpq URI (PostgreSQL).

    `schema` holds the job's own tables (None: the connection's current schema); `source`
    is the relation check-ins are read from; `session_options` are the operator's PGOPTIONS.
    `read_max_lag` bounds the wait for the read replica (`read_location`) to catch up.
    """

    kind: Literal["duckdb", "postgresql"]
    location: str = field(repr=False)
    read_location: str | None = field(default=None, repr=False)
    read_max_lag: timedelta = DEFAULT_READ_MAX_LAG
    duckdb_memory_limit: str | None = None
    duckdb_temp_directory: str | None = None  # None: DuckDB's own default, `<file>.tmp`
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
    return replace(
        target,
        schema=settings.montage_schema,
        source=source,
        session_options=settings.pgoptions,
        read_max_lag=settings.db_read_max_lag,
    )


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
    return _duckdb_target(str(DEFAULT_DUCKDB_PATH), settings)


def _duckdb_target(path: str, settings: Settings) -> DatabaseTarget:
    return DatabaseTarget(
        "duckdb",
        path,
        duckdb_memory_limit=settings.duckdb_memory_limit,
        duckdb_temp_directory=settings.duckdb_temp_directory,
    )


def _from_url(url: str, settings: Settings) -> DatabaseTarget:
    # Not urlsplit: it refuses some unencoded passwords (a "[" reads as the start of an IPv6 host).
    match = _SCHEME.match(url)
    scheme = match.group("scheme").lower() if match else ""
    if scheme == "duckdb":
        # SQLAlchemy's convention: duckdb:///relative.duckdb and duckdb:////absolute/path.duckdb
        path = url[len("duckdb:///") :] if url.lower().startswith("duckdb:///") else ""
        if not path:
            raise ConfigError("DATABASE_URL: a duckdb URL needs a file, e.g. duckdb:///montage.duckdb")
        return _duckdb_target(path, settings)
    if scheme in POSTGRES_SCHEMES:
        url = normalise_postgres_url(url)
        return DatabaseTarget("postgresql", url, _read_replica_uri(settings, primary_url=url))
    shown = scheme or redact(url)
    raise ConfigError(f"DATABASE_URL: unsupported scheme {shown!r} (use duckdb:/// or postgresql://)")


def normalise_postgres_url(url: str) -> str:
    """The URL libpq should get for a postgresql:// DATABASE_URL (module doc); registers its password."""
    scheme, _, rest = url.partition("://")
    authority = _well_formed_authority(rest)
    if authority is not None:
        userinfo, at, _ = authority.rpartition("@")
        if at:
            _register_url_password(userinfo.partition(":")[2])
        return url
    userinfo, at, after = rest.rpartition("@")
    if not at:
        return url  # no credentials to repair; libpq's own error will say what is wrong
    user, colon, password = userinfo.partition(":")
    encoded = _encode_userinfo_part(password)
    _register_url_password(password, encoded)
    return f"{scheme}://{_encode_userinfo_part(user)}{colon}{encoded}@{after}"


def _well_formed_authority(rest: str) -> str | None:
    """The authority (`user:password@hosts`) of a URL libpq already reads as meant, else None.

    `rest` is the URL after `scheme://`.
    """
    parts = _URI_PARTS.fullmatch(rest)
    if parts is None or "#" in rest:
        return None
    authority: str = parts.group("authority")
    userinfo, at, hosts = authority.rpartition("@")
    if at and not _USERINFO.fullmatch(userinfo):
        return None
    if not _HOSTS.fullmatch(hosts) or "@" in (parts.group("path") or ""):
        return None
    query = parts.group("query")
    if query and not all(_PARAMETER.fullmatch(pair) for pair in query.split("&")):
        return None
    return authority


def _encode_userinfo_part(text: str) -> str:
    return _NOT_KEPT.sub(lambda m: quote(m.group(), safe="", errors="surrogateescape"), text)


def _register_url_password(*forms: str) -> None:
    for form in forms:
        register_secret(form)
        register_secret(unquote(form))  # what libpq uses, and may print


def _postgres_uri(settings: Settings, host: str) -> str:
    password = settings.db_password.get_secret_value() if settings.db_password else None
    credentials = quote(settings.db_user, safe="")
    if password:
        encoded = quote(password, safe="", errors="surrogateescape")
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
