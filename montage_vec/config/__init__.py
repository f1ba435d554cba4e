"""Configuration: environment variables in, typed settings out (the only reader of os.environ)."""

from montage_vec.config.database import DatabaseTarget
from montage_vec.config.durations import format_duration, parse_duration
from montage_vec.config.secrets import redact, register_secret
from montage_vec.config.settings import Settings, load_settings, requested_batch_mode

__all__ = [
    "DatabaseTarget",
    "Settings",
    "format_duration",
    "load_settings",
    "parse_duration",
    "redact",
    "register_secret",
    "requested_batch_mode",
]
