"""redact(): URL passwords, libpq password= settings and registered secrets never survive it.

Registered secrets are process-wide, so every test here uses values of its own.
"""

from __future__ import annotations

import json
import uuid
from urllib.parse import quote, quote_plus

import pytest

from montage_vec.config import Settings, load_settings, redact, register_secret


@pytest.fixture(autouse=True)
def no_job_settings_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://app:s3cr3t@db:5432/x", "postgresql://app:***@db:5432/x"),
        ("postgres://app:s3cr3t@db/x?sslmode=require", "postgres://app:***@db/x?sslmode=require"),
        ("failed: postgresql://app:p%40ss%2F@db/x (timeout)", "failed: postgresql://app:***@db/x (timeout)"),
        ("redis://:onlypass@cache:6379/0", "redis://:***@cache:6379/0"),
        ("a=postgresql://u:one@h1/x b=postgresql://v:two@h2/y", "a=postgresql://u:***@h1/x b=postgresql://v:***@h2/y"),
        ("host=db password=s3cr3t user=app", "host=db password=*** user=app"),
        ("host=db PASSWORD = s3cr3t", "host=db PASSWORD = ***"),
        ("host=db password='with spaces' user=app", "host=db password=*** user=app"),
        ("postgresql://app@db/x", "postgresql://app@db/x"),  # no password, nothing to mask
        ("http://checkins.internal/api", "http://checkins.internal/api"),
        ("a plain message", "a plain message"),
    ],
)  # fmt: skip
def test_masks_passwords_in_urls_and_settings(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_masks_a_password_query_parameter() -> None:
    # The rest of the query may be masked along with it (the keyword rule takes the whole token).
    masked = redact("postgresql://db/x?user=app&password=s3cr3t&sslmode=require")
    assert "s3cr3t" not in masked
    assert masked.startswith("postgresql://db/x?user=app&password=***")


def test_is_idempotent() -> None:
    text = "postgresql://app:s3cr3t@db/x password=abc"
    assert redact(redact(text)) == redact(text)


def test_registered_secret_is_masked_anywhere() -> None:
    secret = unique("api-key")
    register_secret(secret)
    assert redact(f"header X-API-Key: {secret}; again{secret}!") == "header X-API-Key: ***; again***!"


def test_longer_secret_is_masked_before_its_prefix() -> None:
    short = unique("tok")
    long = short + "-extended"
    register_secret(short)
    register_secret(long)
    assert redact(f"[{long}] [{short}]") == "[***] [***]"


@pytest.mark.parametrize("value", ["", "abc", None])
def test_too_short_values_are_not_registered(value: str | None) -> None:
    register_secret(value)
    assert redact("abc and abcd") == "abc and abcd"


def test_load_settings_registers_the_service_keys_and_db_password(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        name: unique(name.lower()) for name in ("DB_PASSWORD", "USER_SERVICE_API_KEY", "CHECKIN_SERVICE_API_KEY")
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    load_settings()
    text = " ".join(secrets.values())
    assert redact(text) == "*** *** ***"


def test_db_password_is_masked_in_plain_and_percent_encoded_form(monkeypatch: pytest.MonkeyPatch) -> None:
    password = unique("p@ss w/rd%&")
    monkeypatch.setenv("DB_HOST", "db.internal")
    monkeypatch.setenv("DB_PASSWORD", password)
    target = load_settings().database()
    assert quote(password, safe="") in target.location
    for form in (password, quote(password, safe="")):
        assert redact(f"error near {form} here") == "error near *** here"
    assert password not in target.display
    assert quote(password, safe="") not in target.display


def test_database_url_password_is_masked_in_its_encoded_form(monkeypatch: pytest.MonkeyPatch) -> None:
    password = unique("p@ss/w0rd!")
    encoded = quote(password, safe="")
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{encoded}@db.internal/x")
    load_settings()
    assert redact(f"libpq said {encoded}") == "libpq said ***"


def test_database_url_password_is_masked_in_its_decoded_form(monkeypatch: pytest.MonkeyPatch) -> None:
    password = unique("p@ss/w0rd!")
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{quote(password, safe='')}@db.internal/x")
    load_settings()
    assert redact(f"libpq said {password}") == "libpq said ***"


def test_plus_encoded_form_of_url_password_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    password = unique("two words")
    encoded = quote_plus(password)
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{encoded}@db.internal/x")
    load_settings()
    assert redact(f"libpq said {encoded}") == "libpq said ***"


def test_effective_configuration_masks_every_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "DB_PASSWORD": unique("dbpw"),
        "USER_SERVICE_API_KEY": unique("ukey"),
        "CHECKIN_SERVICE_API_KEY": unique("ckey"),
    }
    url_password = unique("urlpw")
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{url_password}@db.internal/x")
    settings = load_settings()
    shown = settings.effective()
    for name in (*secrets, "DATABASE_URL"):
        assert shown[name.lower()] == "***"
    text = json.dumps(shown, default=str) + repr(settings) + str(settings)
    for value in (*secrets.values(), url_password):
        assert value not in text
    assert shown["montage_batch_size"] == 2500  # the rest is shown as is


def test_database_target_repr_and_display_hide_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    password = unique("targetpw")
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{password}@db.internal/x")
    target = load_settings().database()
    assert password not in repr(target)
    assert target.display == "postgresql://app:***@db.internal/x"
