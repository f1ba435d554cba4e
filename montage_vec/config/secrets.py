"""Keep secrets out of logs, errors and exception text.

Everything that may echo user-provided connection strings (driver errors, URLs in log
lines) passes through `redact`. It masks, in this order:

1. Every registered secret (the configuration's passwords and API keys), in each form it may
   be printed in: as registered (callers register the percent-encoded and decoded forms of
   URL passwords too) and JSON-escaped (log lines are JSON, where `"` and `\\` and, with
   ASCII output, non-ASCII characters are escaped). These go first so that a password
   holding URL delimiters (`/ @ : ? #`, spaces) is masked whole before the positional rules
   below, which can only guess where such a password ends.
2. By position, whatever their length or characters: the password of a `scheme://user:pw@host`
   URL, and libpq `password=` settings (keyword/value strings and URL query parameters).

URL passwords. The userinfo runs from after `scheme://` to the LAST `@` before the host (a
host never holds an `@`), so a password that was never percent-encoded, such as
`Zq9/xK7+Lm2pW4==` or `S3cr3t!P@ss/w:rd%41 x`, is masked whole; the user name ends at the
userinfo's first `:`. In free text the end of a URL is unknown, so the search for that last `@`
stops at a line break, at a double quote that is not backslash-escaped (the end of a JSON
string, or of a value the driver quotes) and at the next `://`. An `@` later on the same line
can therefore make it mask more than the password (the port and path of a URL that has none):
masking too much is the safe mistake.

Short secrets. A secret under 4 characters cannot be masked wherever it occurs: a password
"a" would eat every "a" of every message. So a short secret is masked only where it stands as a
whole token, not next to a letter, digit, `_` or `*` (the mask's own character, so masks never
grow when text is redacted twice); and one made only of punctuation or spaces (":", " ") is
never masked on its own, as nothing tells it from ordinary punctuation. Such passwords are still
masked in URL and `password=` positions, which do not look at the length. Secrets of 4 or more
characters are masked everywhere, even inside longer words.

`redact` is idempotent: when a pass masked something it repeats its passes until nothing
changes (a bounded number of times), since masking can make new text to mask in contrived
cases (a registered secret holding `*` next to a mask, a URL made of URLs). Text with nothing to
mask, nearly every log line, costs one pass: one regex for all registered secrets, and three
positional ones.
"""

from __future__ import annotations

import json
import re
import threading

MASK = "***"
SHORT_SECRET = 4  # secrets shorter than this are masked only as whole tokens

_SCHEME = r"[a-z][a-z0-9+.-]*://"
# userinfo: the user up to the first ":", the password up to the last "@" that comes before a
# line break, an unescaped double quote or another URL.
_URL_PASSWORD = re.compile(
    rf"(?P<prefix>{_SCHEME}[^:/?#\s\"]*:)(?P<password>(?:\\.|(?!://)[^\"\\\n])*)(?=@)",
    re.I,
)
_KEYWORD_PASSWORD = re.compile(
    r"(?P<prefix>\bpassword\s*=\s*)(?P<password>'(?:[^'\\]|\\.)*'|(?:\\.|[^\s&\"\\])+)", re.I
)
_QUERY_PASSWORD = re.compile(r"(?P<prefix>[?&]password=)(?P<password>(?:\\.|[^&\s\"\\])+)", re.I)
_POSITIONAL = (_URL_PASSWORD, _KEYWORD_PASSWORD, _QUERY_PASSWORD)
# Short secrets: not next to a word character or the mask's "*".
_TOKEN = r"(?<![\w*]){}(?![\w*])"
_MAX_PASSES = 8


class _Registry:
    """The registered secrets and one compiled pattern for all of them, rebuilt on change."""

    def __init__(self) -> None:
        self.secrets: set[str] = set()
        self.pattern: re.Pattern[str] | None = None
        self.lock = threading.Lock()

    def add(self, forms: set[str]) -> None:
        with self.lock:
            if forms <= self.secrets:
                return
            self.secrets |= forms
            alternatives = []
            # Longest first: at one position, the longest secret wins over its own prefixes.
            for secret in sorted(self.secrets, key=lambda value: (-len(value), value)):
                if len(secret) >= SHORT_SECRET:
                    alternatives.append(re.escape(secret))
                elif any(character.isalnum() for character in secret):
                    alternatives.append(_TOKEN.format(re.escape(secret)))
            # Assigned in one step: `redact` reads it without the lock.
            self.pattern = re.compile("|".join(alternatives)) if alternatives else None


_registry = _Registry()


def register_secret(value: str | None) -> None:
    """Mask this value, of any length, wherever it shows up from now on (see the module doc)."""
    if not value:
        return
    forms = {value, json.dumps(value, ensure_ascii=False)[1:-1], json.dumps(value)[1:-1]}
    _registry.add(forms)


def redact(text: str) -> str:
    """`text` with every password or registered secret replaced by ***."""
    masked = _one_pass(text)
    if masked == text:
        return masked  # the common case: nothing to mask, one pass
    # Masking can make new text to mask (a secret holding "*" next to a mask, a URL made of
    # URLs): repeat until nothing changes, so that redact(redact(x)) == redact(x).
    for _ in range(_MAX_PASSES):
        again = _one_pass(masked)
        if again == masked:
            break
        masked = again
    return masked


def _one_pass(text: str) -> str:
    pattern = _registry.pattern
    masked = pattern.sub(MASK, text) if pattern is not None else text
    for positional in _POSITIONAL:
        masked = positional.sub(lambda match: match.group("prefix") + MASK, masked)
    return masked
