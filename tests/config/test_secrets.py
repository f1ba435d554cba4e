"""redact(): URL passwords, libpq password= settings and registered secrets never survive it,
whatever characters a password holds and however short it is; and DATABASE_URL passwords
that were never percent-encoded reach libpq encoded.

Registered secrets are process-wide: every test here starts from an empty registry, and
still uses values of its own.
"""

from __future__ import annotations

import json
import uuid
from urllib.parse import quote, quote_plus, unquote

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from montage_vec.config import Settings, load_settings, redact, register_secret, secrets


@pytest.fixture(autouse=True)
def no_job_settings_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture(autouse=True)
def own_secret_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secrets, "_registry", secrets._Registry())


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


# -- URL passwords that were never percent-encoded ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://u:Zq9/xK7+Lm2pW4==@host/db", "postgresql://u:***@host/db"),
        ("failed: postgresql://u:S3cr3t!P@ss/w:rd%41 x@127.0.0.1:5432/postgres: timeout",
         "failed: postgresql://u:***@127.0.0.1:5432/postgres: timeout"),
        ("postgresql://u:h4sh#t4g?x=1@@db/x?sslmode=require", "postgresql://u:***@db/x?sslmode=require"),
        ("postgresql://u:c0:l0n:s@db/x", "postgresql://u:***@db/x"),
        ("postgresql://u:pässwörd€@db/x", "postgresql://u:***@db/x"),
        ("postgresql://u:密码密码@db/x", "postgresql://u:***@db/x"),
        ("postgresql://me@corp:pw@db/x", "postgresql://me@corp:***@db/x"),  # the user ends at the first ":"
        ("postgresql://u:Q@db/x", "postgresql://u:***@db/x"),  # by position: any length
        ("postgresql://u::@db/x", "postgresql://u:***@db/x"),
        ('could not parse "postgresql://u:a b@db/x": bad', 'could not parse "postgresql://u:***@db/x": bad'),
        ("one\npostgresql://u:pw@db/x\nmail me@example.org", "one\npostgresql://u:***@db/x\nmail me@example.org"),
        ("password=Q host=db", "password=*** host=db"),
        ("host=db password='it\\'s me' user=app", "host=db password=*** user=app"),
    ],
)  # fmt: skip
def test_masks_an_unencoded_url_password_whole(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_json_log_line_keeps_its_other_fields() -> None:
    # The search for the URL's last "@" ends with its JSON string, and password= values stop at the quote.
    line = json.dumps({"database": 'postgresql://u:p"w@db/x', "error": "bad password=abc", "user": "me@example.org"})
    assert json.loads(redact(line)) == {
        "database": "postgresql://u:***@db/x",
        "error": "bad password=***",
        "user": "me@example.org",
    }


def test_registered_secret_is_masked_whole_before_the_url_rule_guesses() -> None:
    password = unique("sp ace@a/b") + " tail"
    register_secret(password)
    assert redact(f"postgresql://u:{password}@db/x and {password}") == "postgresql://u:***@db/x and ***"


def test_registered_secret_is_masked_in_json_escaped_form() -> None:
    password = unique('q"u0\\te') + "€"
    register_secret(password)
    for ascii_only in (False, True):
        line = json.dumps({"error": f"near {password} here"}, ensure_ascii=ascii_only)
        assert json.loads(redact(line)) == {"error": "near *** here"}


# -- short secrets: masked as whole tokens only ----------------------------------------------------------


@pytest.mark.parametrize("secret", ["Q", "~z", "%7", "x@/"])
def test_short_secret_is_masked_where_it_stands_alone(secret: str) -> None:
    register_secret(secret)
    for text in (f"{secret}", f"value {secret}.", f"({secret})", f'"{secret}"', f"={secret}&", f"{secret}\n"):
        assert secret not in redact(text), text


@pytest.mark.parametrize(
    ("secret", "text"),
    [
        ("Q", "Quick aQ Q1 Q_ QQ"),
        ("~z", "a~z ~zz ~z9"),
        ("%7", "%7B %7f a%7"),
        ("x@/", "ax@/ x@/y"),
    ],
)
def test_short_secret_inside_a_word_is_left_alone(secret: str, text: str) -> None:
    register_secret(secret)
    assert redact(text) == text


@pytest.mark.parametrize("secret", [":", " ", "/@", "***"])
def test_short_secret_of_punctuation_only_is_masked_by_position_only(secret: str) -> None:
    register_secret(secret)
    assert redact("a : b / c /@ d *** e") == "a : b / c /@ d *** e"
    assert redact(f"postgresql://u:{secret}@db/x") == "postgresql://u:***@db/x"
    assert redact(f"password='{secret}' host=db") == "password=*** host=db"


def test_long_secret_is_masked_inside_words_too() -> None:
    secret = unique("Zq9x")
    register_secret(secret)
    assert redact(f"a{secret}b") == "a***b"


def test_masks_never_grow_on_a_second_pass() -> None:
    register_secret("Q")
    register_secret("s3cr*t")
    register_secret("x***")  # matches "x" followed by a mask just written
    text = "Q xs3cr*t postgresql://u:Q@db/x password=Q"
    assert redact(text) == "*** *** postgresql://u:***@db/x password=***"
    assert redact(redact(text)) == redact(text)


PIECES = ["postgresql://", "u:", "Q", "~z", "*", ":", "@", "/", " ", '"', "\\", "\n", "password=", "s3cr*t", "pw"]


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=24).map("".join))
def test_redact_is_idempotent_on_any_text(text: str) -> None:
    for secret in ("Q", "~z", "s3cr*t", "pw:x", ":"):
        register_secret(secret)
    once = redact(text)
    assert redact(once) == once


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


# -- DATABASE_URL: what libpq gets, and what gets registered ------------------------------------------


@pytest.mark.parametrize(
    ("password", "in_url"),
    [
        ("Zq9/xK7+Lm2pW4==", "Zq9%2FxK7%2BLm2pW4%3D%3D"),
        ("S3cr3t!P@ss/w:rd%41 x", "S3cr3t%21P%40ss%2Fw%3Ard%41%20x"),  # "%41" is an escape: libpq reads "A"
        ("h4sh#t4g?x=1@@", "h4sh%23t4g%3Fx%3D1%40%40"),
        ("50%off", "50%25off"),  # not an escape: a literal "%"
        ("pa[ss]", "pa%5Bss%5D"),
        ("pässwörd€", "p%C3%A4ssw%C3%B6rd%E2%82%AC"),
        ("Q", "Q"),
    ],
)
def test_unencoded_url_password_reaches_libpq_encoded(
    monkeypatch: pytest.MonkeyPatch, password: str, in_url: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://me@corp:{password}@db.internal:6432/app?sslmode=require")
    target = Settings().database()  # resolving the target registers the password, in every form
    assert target.location == f"postgresql://me%40corp:{in_url}@db.internal:6432/app?sslmode=require"
    assert target.display == "postgresql://me%40corp:***@db.internal:6432/app?sslmode=require"
    for form in {password, in_url, unquote(in_url)}:
        assert redact(f"[{form}]") == "[***]"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:s3cr3t@db/x",
        "postgresql://app:p%40ss%2Fw0rd@db:5432/x?sslmode=require",
        "postgres://app:two+words@db/x",
        "postgresql://db.internal/x?application_name=me@host",  # an "@" in a query value
        "postgresql://app:pw@db/x?application_name=me@host",
        "postgresql://app@h1:5432,h2:5433/x?target_session_attrs=read-write",
        "postgresql://%2Fvar%2Frun%2Fpostgresql/x",
        "postgresql:///x",
    ],
)
def test_well_formed_url_is_passed_on_untouched(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    assert load_settings().database().location == url


def test_read_replica_reuses_the_encoded_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:Zq9/x@K7@db.internal:6432/app?sslmode=require")
    monkeypatch.setenv("DB_READ_HOST", "replica.internal")
    target = load_settings().database()
    assert target.read_location == "postgresql://app:Zq9%2Fx%40K7@replica.internal:6432/app?sslmode=require"
    assert redact(target.read_location) == "postgresql://app:***@replica.internal:6432/app?sslmode=require"


@pytest.mark.parametrize("password", ["Q", "%7", "~z"])
def test_short_db_password_is_registered(monkeypatch: pytest.MonkeyPatch, password: str) -> None:
    monkeypatch.setenv("DB_HOST", "db.internal")
    monkeypatch.setenv("DB_PASSWORD", password)
    target = load_settings().database()
    assert f":{quote(password, safe='')}@db.internal" in target.location
    assert redact(f"libpq said: '{password}'") == "libpq said: '***'"
    assert password not in target.display
