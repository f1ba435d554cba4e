"""The process's exit codes, as `montage-vec --help` lists them.

The codes themselves live with what causes them: each error class in `montage_vec.errors`
carries its `exit_code`, a stopped run carries 124 (`job.control`) or 128 + the signal
(`observability.signals`), and click's usage errors exit 2. This module only names them for
the epilog (tests/cli check that every error class's code is listed here).
"""

from __future__ import annotations

EXIT_UNEXPECTED = 1  # a bug or an error without a code of its own: the message says what happened
EXIT_INTERRUPTED = 130  # 128 + SIGINT: Ctrl-C before a run started (click.Abort)

# "\b" keeps click from re-wrapping the table into one paragraph.
EPILOG = """\b
Exit codes:
  0    success
  1    the run failed (the watermark did not move); health: a check failed
  2    invalid configuration or usage: a variable, a flag, contradictory flags
  3    schema not migrated or no database file (run `migrate`), tables not
       as expected, or the check-in source missing or lacking columns
  75   another run holds the lock (EX_TEMPFAIL: try again later)
  77   the database refused access: a missing privilege, a refused login,
       a read-only database (EX_NOPERM)
  124  stopped by BATCH_PROCESSING_TIMEOUT
  130  stopped by SIGINT (Ctrl-C)
  143  stopped by SIGTERM
"""
