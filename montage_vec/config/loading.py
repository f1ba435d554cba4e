"""Loading settings: from the environment and overrides, one flag alone, or BATCH_MODE alone.

Each turns pydantic's validation errors into a ConfigError (or a ValueError for a flag)
naming what was wrong, and registers the secrets it loaded so that no log line shows them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from montage_vec.config.secrets import redact, register_secret
from montage_vec.config.settings import Settings
from montage_vec.errors import ConfigError


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment plus CLI overrides; ConfigError naming the variable if invalid."""
    explicit = {key: value for key, value in overrides.items() if value is not None}
    try:
        settings = Settings(**explicit)
        settings.database()  # resolves the URL now so that a bad scheme fails before any work
    except ValidationError as exc:
        raise ConfigError(redact(_describe(exc))) from None
    for secret in (settings.db_password, settings.checkin_service_api_key, settings.user_service_api_key):
        if secret is not None:
            register_secret(secret.get_secret_value())
    # DATABASE_URL's password, in every form, was registered while database() resolved it.
    return settings


def check_flag(name: str, value: Any) -> Any:
    """One setting given as a command-line flag, validated on its own, as the settings would hold it.

    The environment and every other setting are left out, so that a bad flag is reported as the
    flag's own problem (the CLI names the flag, not the variable); ValueError says what is wrong.
    """
    unvalidated = Settings.model_construct()  # the defaults, without reading the environment
    try:
        checked = Settings.__pydantic_validator__.validate_assignment(unvalidated, name, value)
    except ValidationError as exc:
        raise ValueError("; ".join(_message(error) for error in exc.errors())) from None
    return getattr(checked, name)


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        if not error["loc"]:
            problems.append(_message(error))
            continue
        problems.append(f"{str(error['loc'][0]).upper()}: {_message(error)}")
    return "invalid configuration: " + "; ".join(problems)


def _message(error: Mapping[str, Any]) -> str:
    """One of pydantic's error details as text (a Mapping: pydantic_core is no declared dependency)."""
    return str(error["msg"]).removeprefix("Value error, ")


class _ModeOnly(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    batch_mode: Literal["once", "scheduler", "health"] = "once"


def requested_batch_mode() -> str:
    """BATCH_MODE alone, so that `health` can be chosen even when other settings are broken."""
    try:
        return _ModeOnly().batch_mode
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
