"""Store sessions for worker threads: one per thread, replaced after a transient failure."""

from __future__ import annotations

import threading
from types import TracebackType

from loguru import logger

from montage_vec.config.secrets import redact
from montage_vec.stores import SqlSession, Store


class ThreadSessions:
    """Hands each worker thread its own session (connections must not be shared between threads).

    Use as a context manager: every session opened through it is closed on exit.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._local = threading.local()
        self._opened: list[SqlSession] = []
        self._lock = threading.Lock()  # guards _opened, which every worker appends to

    def __enter__(self) -> ThreadSessions:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for session in opened:
            close_quietly(session)

    def current(self) -> SqlSession:
        session: SqlSession | None = getattr(self._local, "session", None)
        if session is None:
            session = self._store.session()
            self._local.session = session
            with self._lock:
                self._opened.append(session)
        return session

    def discard(self) -> None:
        """Drop this thread's session (e.g. its connection died); the next call opens a new one."""
        session: SqlSession | None = getattr(self._local, "session", None)
        self._local.session = None
        if session is not None:
            with self._lock:
                self._opened.remove(session)
            close_quietly(session)


def close_quietly(session: SqlSession) -> None:
    try:
        session.close()
    except Exception as exc:  # a dead connection may refuse to close; nothing is left to save
        logger.debug("closing a store session failed", error=redact(str(exc)))
