"""Keep secrets out of logs, errors and exception text.

Everything that may echo user-provided connection strings (driver errors, URLs in log
lines) passes through `redact`, which masks passwords inside URLs and in libpq
`password=` settings, plus every secret value registered from the configuration.
"""

from __future__ import annotations

import re
import threading

MASK = "***"
_URL_PASSWORD = re.compile(r"(?P<prefix>[a-z][a-z0-9+.-]*://[^:/?#@\s]*:)(?P<password>[^@\s/]*)(?=@)", re.I)
_KEYWORD_PASSWORD = re.compile(r"(?P<prefix>\bpassword\s*=\s*)(?P<password>'[^']*'|[^\s&]+)", re.I)
_QUERY_PASSWORD = re.compile(r"(?P<prefix>[?&]password=)(?P<password>[^&\s]+)", re.I)

_known_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Mask this exact value wherever it shows up from now on (values under 4 chars are too generic)."""
    if value and len(value) >= 4:
        with _lock:
            _known_secrets.add(value)


def redact(text: str) -> str:
    """`text` with every password or registered secret replaced by ***."""
    masked = _URL_PASSWORD.sub(lambda m: m.group("prefix") + MASK, text)
    masked = _KEYWORD_PASSWORD.sub(lambda m: m.group("prefix") + MASK, masked)
    masked = _QUERY_PASSWORD.sub(lambda m: m.group("prefix") + MASK, masked)
    with _lock:
        secrets = sorted(_known_secrets, key=len, reverse=True)
    for secret in secrets:
        masked = masked.replace(secret, MASK)
    return masked
