"""Awkward passwords never reach stdout or stderr, whichever command or failure prints the URL.

An adversarial run (issue 10) found that a DATABASE_URL password written without
percent-encoding (`postgresql://u:Zq9/xK7+Lm2pW4==@host/db`) was printed whole by `health`,
and that libpq, reading `Zq9` as a port, quoted it in every error. Each password of a corpus
of awkward ones (URL delimiters, `@@`, spaces, quotes, unicode, 1 to 3 characters) goes through
every command that can print the URL or a driver error (`health`, `migrate`, `once`, `show`,
all with DEBUG=true, which logs the effective configuration), configured three ways
(DATABASE_URL as an operator pastes it, DATABASE_URL percent-encoded, DB_HOST/DB_USER/DB_PASSWORD),
against a closed port, a database that does not exist and the real server. The real server
trusts every local login, so it ignores the password: that every run against it succeeds
proves the job handed libpq a URL it reads as meant.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from urllib.parse import quote, quote_plus, unquote

import pytest

from montage_vec.config import secrets
from tests.support.cli import CliResult, RunCli
from tests.support.data import AS_OF, checkin, days, load_checkins, new_id
from tests.support.database import pg_host, pg_port, postgres_database
from tests.support.processes import free_port

pytestmark = pytest.mark.postgres

# Test passwords that never occur in the job's output by themselves, so that finding one
# (or a piece of one) there can only mean a leak.
PASSWORDS = [
    "Zq9/xK7+Lm2pW4==",  # the adversarial run's: libpq read "Zq9" as the port
    "S3cr3t!P@ss/w:rd%41 x",  # "%41" is an escape in a URL (libpq reads "A"); the tail used to leak
    "h4sh#t4g#99",
    "wh0?n0w=1&x",
    "p@@s5@@w0rd",
    "c0:l0n:s",
    "Xyzzy plugh 42",
    'q"u0\\te',  # escaped in JSON log lines
    "pässwörd€",
    "密码密码",
    "Q",
    "~z",
    "%7",
    "x@/",
]
CONFIGURATIONS = ("url-as-written", "url-encoded", "db-variables")
USER = new_id()
COMMANDS = {
    "health": ("health",),
    "migrate": ("migrate",),
    "once": ("once", "--as-of", AS_OF.isoformat()),
    "show": ("show", "--user-id", USER),
}
# What may separate the pieces of a password that libpq or a URL parser split it into.
DELIMITERS = re.compile(r"[/@#?: \[\]]")


@pytest.fixture(autouse=True)
def own_secret_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets are registered process-wide; the one-character ones here must not outlive the test."""
    monkeypatch.setattr(secrets, "_registry", secrets._Registry())


@pytest.fixture(scope="module")
def real_database() -> Iterator[str]:
    """A migrated database on the real server holding USER's check-ins; yields its name."""
    with postgres_database(prefix="montage_corpus") as url:
        load_checkins(url, [checkin(USER, AS_OF - days(1), tags=["Coffee"])])
        yield url.rsplit("/", 1)[1]


def libpq_form(password: str) -> str:
    """The password as the job writes it into a URL: encoded, valid %XX escapes kept."""
    return re.sub(r"%(?![0-9A-Fa-f]{2})|[^A-Za-z0-9._~%-]", lambda m: quote(m.group(), safe=""), password)


def printed_forms(password: str) -> set[str]:
    """Every form in which the password, or what libpq makes of it, could be printed."""
    forms = {password, quote(password, safe=""), quote_plus(password), unquote(password), libpq_form(password)}
    forms |= {quote(form, safe="") for form in set(forms)}
    forms |= {json.dumps(form, ensure_ascii=ascii_only)[1:-1] for form in set(forms) for ascii_only in (False, True)}
    return forms


def as_token(text: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w*]){re.escape(text)}(?![\w*])")


def assert_hidden(password: str, result: CliResult) -> None:
    """Neither the password in any printed form nor a piece of it appears in stdout or stderr.

    Forms of 4 or more characters must not appear at all; shorter ones, and pieces, must not
    appear as a token (the job's output is full of single letters inside words).
    """
    text = result.stdout + result.stderr
    for form in printed_forms(password):
        if len(form) >= 4:
            assert form not in text, f"{form!r} leaked:\n{result.everything()}"
        else:
            assert not as_token(form).search(text), f"{form!r} leaked as a token:\n{result.everything()}"
    for piece in DELIMITERS.split(password):
        if len(piece) >= 3:
            assert not as_token(piece).search(text), f"piece {piece!r} leaked:\n{result.everything()}"


def configured(configuration: str, password: str, host: str, port: int, database: str) -> dict[str, str]:
    if configuration == "db-variables":
        return {"DB_HOST": host, "DB_PORT": str(port), "DB_USER": "root", "DB_PASSWORD": password,
                "DB_NAME": database}  # fmt: skip
    written = password if configuration == "url-as-written" else quote(password, safe="")
    return {"DATABASE_URL": f"postgresql://root:{written}@{host}:{port}/{database}"}


def run_everything(run_cli: RunCli, env: dict[str, str]) -> dict[str, CliResult]:
    return {name: run_cli(*args, env={"DEBUG": "true", **env}) for name, args in COMMANDS.items()}


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
@pytest.mark.parametrize("password", PASSWORDS)
def test_no_command_prints_the_password(run_cli: RunCli, real_database: str, password: str, configuration: str) -> None:
    closed, missing = free_port(), f"montage_no_such_{new_id()[:8]}"
    server = (pg_host(), pg_port())
    targets = [  # (host, port, database, what libpq says when that target fails)
        ("127.0.0.1", closed, real_database, f"port {closed} failed: Connection refused"),
        (*server, missing, f'database "{missing}" does not exist'),
        (*server, real_database, None),
    ]
    for host, port, database, failure in targets:
        results = run_everything(run_cli, configured(configuration, password, host, port, database))
        for name, result in results.items():
            assert_hidden(password, result)
            assert (result.exit_code == 0) == (failure is None), f"{name} on {port}/{database}:\n{result.everything()}"
            if name != "health":
                shown = result.log("effective configuration")["configuration"]
                assert "***" in (shown["database_url"], shown["db_password"])
        if failure is None:
            assert results["once"].log("Batch job completed")["status"] == "completed"
        else:
            # libpq got the port and database meant, and the URL is shown with only its password masked.
            health = results["health"].stdout
            assert f"postgresql://root:***@{host}:{port}/{database}" in health, health
            assert failure in health, health


def test_an_unencoded_password_with_slash_and_at_still_connects(run_cli: RunCli) -> None:
    """Before the fix libpq read `Zq9` as the port; now the job percent-encodes the userinfo for it."""
    user = new_id()
    with postgres_database(prefix="montage_corpus") as url:
        database = url.rsplit("/", 1)[1]
        server = f"{pg_host()}:{pg_port()}"
        env = {"DATABASE_URL": f"postgresql://root:Zq9/xK7+Lm2p@W4==@{server}/{database}"}
        migrated = run_cli("migrate", env=env)
        assert migrated.exit_code == 0, migrated.everything()
        assert migrated.log("schema migrated")["database"] == f"postgresql://root:***@{server}/{database}"
        healthy = run_cli("health", env=env)
        assert healthy.exit_code == 0, healthy.everything()
        assert "Health check passed" in healthy.stdout
        # The read replica reuses the repaired credentials (and the primary's port).
        load_checkins(url, [checkin(user, AS_OF - days(1), tags=["Coffee"])])
        once = run_cli("once", "--as-of", AS_OF.isoformat(), env={**env, "DB_READ_HOST": pg_host()})
        assert once.exit_code == 0, once.everything()
        assert once.log("Batch job completed")["processed"] == 1


def test_a_password_with_brackets_is_not_quoted(run_cli: RunCli) -> None:
    password = "p4ss[w0rd]"
    result = run_cli("health", env={"DATABASE_URL": f"postgresql://root:{password}@127.0.0.1:{free_port()}/x"})
    assert_hidden(password, result)
