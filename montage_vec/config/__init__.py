"""Configuration: environment variables in, typed settings out (the only reader of os.environ).

The settings themselves (pydantic, pydantic-settings, croniter) load on first use of
`Settings`, `load_settings`, `check_flag` or `requested_batch_mode`: `montage-vec --help`, shell
completion and every module that only redacts text or parses a duration start without them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from montage_vec.config.database import DatabaseTarget
from montage_vec.config.durations import format_duration, parse_duration
from montage_vec.config.secrets import redact, register_secret

if TYPE_CHECKING:
    from montage_vec.config.loading import check_flag, load_settings, requested_batch_mode
    from montage_vec.config.settings import Settings

_LAZY = {
    "Settings": "montage_vec.config.settings",
    "check_flag": "montage_vec.config.loading",
    "load_settings": "montage_vec.config.loading",
    "requested_batch_mode": "montage_vec.config.loading",
}

__all__ = [
    "DatabaseTarget",
    "Settings",
    "check_flag",
    "format_duration",
    "load_settings",
    "parse_duration",
    "redact",
    "register_secret",
    "requested_batch_mode",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'montage_vec.config' has no attribute {name!r}")
    return getattr(import_module(_LAZY[name]), name)
