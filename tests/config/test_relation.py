"""MONTAGE_SOURCE and MONTAGE_SCHEMA as names: `RelationName.parse`, `parse_schema` and `str`
(plain, schema-qualified, double-quoted parts holding dots, quotes, spaces or non-ASCII text),
the malformed names they refuse, and Settings refusing them with a ConfigError naming the
variable (through `load_settings`, from the environment and from overrides)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from montage_vec.config import load_settings
from montage_vec.config.relation import DEFAULT_SOURCE, RelationName, parse_schema
from montage_vec.errors import ConfigError

PG_URL = "postgresql://root@127.0.0.1:5432/app"  # never connected to: load_settings only resolves it

# -- parsing ----------------------------------------------------------------------------------

PARSED = [
    ("checkins", RelationName("checkins")),
    ("app.checkins", RelationName("checkins", "app")),
    ("  app.checkins\n", RelationName("checkins", "app")),
    ("app_1.checkins_v2", RelationName("checkins_v2", "app_1")),
    # Unquoted parts keep their case: the job quotes every name it sends.
    ("App.CheckIns", RelationName("CheckIns", "App")),
    ('"My App"."Check-ins"', RelationName("Check-ins", "My App")),
    ('"app"."checkins"', RelationName("checkins", "app")),
    ('app."checkins for montages"', RelationName("checkins for montages", "app")),
    ('"a.b".c', RelationName("c", "a.b")),
    ('"a.b"."c.d"', RelationName("c.d", "a.b")),
    ('"say ""hi"""', RelationName('say "hi"')),
    ('"""".""""', RelationName('"', '"')),
    ('"café"."Ünïcode 表"', RelationName("Ünïcode 表", "café")),
    ("café.表", RelationName("表", "café")),
    ('" padded "', RelationName(" padded ")),
    ('"1st"', RelationName("1st")),
]


@pytest.mark.parametrize(("text", "expected"), PARSED, ids=[text for text, _ in PARSED])
def test_parse(text: str, expected: RelationName) -> None:
    assert RelationName.parse(text) == expected


DISPLAYED = [
    (RelationName("checkins"), "checkins"),
    (RelationName("checkins", "app"), "app.checkins"),
    (RelationName("checkins_v2", "app_1"), "app_1.checkins_v2"),
    (RelationName("Check-ins", "My App"), '"My App"."Check-ins"'),
    (RelationName("CheckIns", "App"), '"App"."CheckIns"'),  # upper case would fold if unquoted
    (RelationName("c.d", "a.b"), '"a.b"."c.d"'),
    (RelationName('say "hi"'), '"say ""hi"""'),
    (RelationName("Ünïcode 表", "café"), '"café"."Ünïcode 表"'),
    (RelationName("1st"), '"1st"'),  # a plain identifier cannot start with a digit
    (RelationName(" padded "), '" padded "'),
    (RelationName("_"), '"_"'),
]


@pytest.mark.parametrize(("relation", "text"), DISPLAYED, ids=[text for _, text in DISPLAYED])
def test_str_quotes_only_what_needs_it_and_parses_back(relation: RelationName, text: str) -> None:
    assert str(relation) == text
    assert RelationName.parse(text) == relation


@pytest.mark.parametrize(("text", "_expected"), PARSED, ids=[text for text, _ in PARSED])
def test_str_of_a_parsed_name_parses_to_the_same_name(text: str, _expected: RelationName) -> None:
    parsed = RelationName.parse(text)
    assert RelationName.parse(str(parsed)) == parsed
    assert str(RelationName.parse(str(parsed))) == str(parsed)


PARTS = st.text(min_size=1, max_size=12).filter(lambda part: "\x00" not in part)


@given(name=PARTS, schema=st.none() | PARTS)
def test_any_name_round_trips_through_str(name: str, schema: str | None) -> None:
    relation = RelationName(name, schema)
    assert RelationName.parse(str(relation)) == relation


MALFORMED = [
    "",
    "   ",
    ".",
    "app.",
    ".checkins",
    "app..checkins",
    "a.b.c",  # three parts: database-qualified names are not supported
    '"a"."b"."c"',
    '""',  # an empty quoted part
    'app.""',
    '"unterminated',
    'app."checkins',
    '"a""',  # the doubled quote is a quote; the part never ends
    '"a"b',  # text after a closing quote
    'a"b',  # a quote inside an unquoted part
    "app .checkins",  # blanks around an unquoted part
    "app. checkins",
    "a\x00b",
    '"a\x00b"',
]


@pytest.mark.parametrize("text", MALFORMED, ids=[repr(text) for text in MALFORMED])
def test_malformed_names_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"relation name|NAME or SCHEMA\.NAME|unterminated quote"):
        RelationName.parse(text)


def test_unterminated_quote_is_named_as_such() -> None:
    with pytest.raises(ValueError, match="unterminated quote"):
        RelationName.parse('app."check-ins')


def test_three_parts_say_what_is_expected() -> None:
    with pytest.raises(ValueError, match=r"NAME or SCHEMA\.NAME"):
        RelationName.parse("db.app.checkins")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("montage", "montage"), ("  montage ", "montage"), ('"My Schema"', "My Schema"), ('"a.b"', "a.b"),
     ('"q""uote"', 'q"uote'), ("Montage", "Montage"), ('"schéma"', "schéma")],
)  # fmt: skip
def test_parse_schema(text: str, expected: str) -> None:
    assert parse_schema(text) == expected


@pytest.mark.parametrize("text", ["", "a.b", '"a"."b"', '"open', '""', ".", " a .b"])
def test_parse_schema_refuses_anything_but_one_name(text: str) -> None:
    with pytest.raises(ValueError):  # the message varies with what is wrong
        parse_schema(text)


# -- Settings -----------------------------------------------------------------------------------


def test_defaults_read_checkins_in_the_current_schema() -> None:
    settings = load_settings(database_url=PG_URL)
    assert settings.montage_source == DEFAULT_SOURCE
    assert settings.source() == RelationName("checkins")
    assert settings.montage_schema is None
    target = settings.database()
    assert (target.source, target.schema, target.session_options) == (RelationName("checkins"), None, None)


def test_source_and_schema_from_the_environment_reach_the_database_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONTAGE_SOURCE", '"My App"."Check-ins"')
    monkeypatch.setenv("MONTAGE_SCHEMA", '"Montage Job"')
    monkeypatch.setenv("PGOPTIONS", "-c search_path=app,public")
    settings = load_settings(database_url=PG_URL)
    assert settings.source() == RelationName("Check-ins", "My App")
    assert settings.montage_source == '"My App"."Check-ins"'
    assert settings.montage_schema == "Montage Job"
    target = settings.database()
    assert target.source == RelationName("Check-ins", "My App")
    assert target.schema == "Montage Job"
    assert target.session_options == "-c search_path=app,public"


def test_source_is_stored_in_canonical_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONTAGE_SOURCE", ' "app"."checkins_for_montages" ')
    settings = load_settings(database_url=PG_URL)
    assert settings.montage_source == "app.checkins_for_montages"
    assert settings.source() == RelationName("checkins_for_montages", "app")


@pytest.mark.parametrize("blank", ["", "   "])
def test_blank_schema_means_the_current_schema(monkeypatch: pytest.MonkeyPatch, blank: str) -> None:
    monkeypatch.setenv("MONTAGE_SCHEMA", blank)
    settings = load_settings(database_url=PG_URL)
    assert settings.montage_schema is None
    assert settings.database().schema is None


BAD_NAMES = [
    *(("MONTAGE_SOURCE", text) for text in ["", "a.b.c", '"open', "app..checkins", 'a"b', "app. checkins"]),
    *(("MONTAGE_SCHEMA", text) for text in ["a.b", '"open', '"a"."b"', "a. b"]),
]


@pytest.mark.parametrize(("variable", "text"), BAD_NAMES)
def test_bad_name_in_the_environment_is_a_config_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str
) -> None:
    monkeypatch.setenv(variable, text)
    with pytest.raises(ConfigError) as failure:
        load_settings(database_url=PG_URL)
    assert variable in str(failure.value)
    assert failure.value.exit_code == 2


def test_bad_names_given_as_overrides_are_config_errors_too() -> None:
    with pytest.raises(ConfigError, match="MONTAGE_SOURCE"):
        load_settings(database_url=PG_URL, montage_source="x.y.z")
    with pytest.raises(ConfigError, match="MONTAGE_SCHEMA"):
        load_settings(database_url=PG_URL, montage_schema="x.y")


def test_both_bad_names_are_reported_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONTAGE_SOURCE", "a.b.c")
    monkeypatch.setenv("MONTAGE_SCHEMA", '"open')
    with pytest.raises(ConfigError) as failure:
        load_settings(database_url=PG_URL)
    assert "MONTAGE_SOURCE" in str(failure.value)
    assert "MONTAGE_SCHEMA" in str(failure.value)
