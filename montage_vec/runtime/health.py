"""`montage-vec health`: is this deployment able to run? Never starts a batch run.

Checks, in order: configuration, database connectivity (a real query), schema migrated,
and, when their URLs are set, that the check-in and user services answer `GET /healthz`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx

from montage_vec.config import Settings, load_settings, redact
from montage_vec.errors import MontageVecError
from montage_vec.services.http import API_KEY_HEADER
from montage_vec.stores import open_store

HEALTH_PATH = "/healthz"


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str = ""
    warning: bool = False  # reported, but the deployment can run


def run_health_checks(settings_loader: Callable[[], Settings] = load_settings) -> list[CheckResult]:
    """Every check's outcome; later checks are skipped when configuration itself is broken."""
    try:
        settings = settings_loader()
    except MontageVecError as exc:
        return [CheckResult("configuration", False, str(exc))]
    results = [CheckResult("configuration", True)]
    results.extend(_database_checks(settings))
    for name, url, key in (
        ("check-in service", settings.checkin_service_url, settings.checkin_service_api_key),
        ("user service", settings.user_service_url, settings.user_service_api_key),
    ):
        if url:
            results.append(_service_check(name, url, key.get_secret_value() if key else None))
    return results


def _database_checks(settings: Settings) -> list[CheckResult]:
    target = settings.database()
    try:
        # Read-only: a check neither creates a missing DuckDB file nor locks one against a run.
        with open_store(target, read_only=True, create=False) as store, store.session() as session:
            session.ping()
            try:
                session.ensure_migrated()
            except MontageVecError as exc:
                return [CheckResult("database", True), CheckResult("schema migrated", False, str(exc))]
            warnings = [CheckResult("check-in source", True, text, warning=True) for text in session.schema_warnings()]
    except MontageVecError as exc:
        return [CheckResult("database", False, f"{target.display}: {exc}")]
    return [CheckResult("database", True), CheckResult("schema migrated", True), *warnings]


def _service_check(name: str, url: str, api_key: str | None) -> CheckResult:
    headers = {API_KEY_HEADER: api_key} if api_key else {}
    try:
        response = httpx.get(url.rstrip("/") + HEALTH_PATH, headers=headers, timeout=5.0)
    except httpx.HTTPError as exc:
        return CheckResult(name, False, redact(f"{url}: {type(exc).__name__}: {exc}"))
    if not response.is_success:
        return CheckResult(name, False, redact(f"{url}{HEALTH_PATH} answered HTTP {response.status_code}"))
    return CheckResult(name, True)
