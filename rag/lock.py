"""One writer per index: an advisory lock on the ``LOCK`` file of the index folder.

Two builds of one index at the same time used to destroy each other's work: one build's clean-up
deleted the folder the other was writing, which then made that incomplete folder current. Every
build now holds this lock from before it reads the index until after it has switched ``CURRENT``
and removed the leftovers, so builds of one index run one after the other, and a build that had
to wait reads the index again and embeds only what the first one left to do.

Readers never take it: a build never changes a folder that ``CURRENT`` names, so loading the
index in use is always safe, and a question never waits for a build.

``fcntl.flock`` locks belong to the open file: the kernel releases them when the process ends,
however it ends (``kill -9`` included), so a crashed build never leaves the index locked, and the
lock file itself is never deleted (deleting it would let two processes lock two different files).
"""
from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path
from types import TracebackType

from .config import LOCK_TIMEOUT_ENV, LOCK_TIMEOUT_SECONDS
from .errors import IndexBusyError, IndexStoreError, UserError

log = logging.getLogger(__name__)

LOCK_NAME = "LOCK"
#: How often a waiting build tries the lock again: often enough that it starts within a blink of
#: the other build's end, rarely enough to cost nothing.
POLL_SECONDS = 0.05


def lock_timeout() -> float:
    """Seconds to wait for another build: ``RAG_LOCK_TIMEOUT`` when set, else the default."""
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not raw:
        return LOCK_TIMEOUT_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses nan
        raise UserError(f"{LOCK_TIMEOUT_ENV}={raw!r} is not a number of seconds; "
                        f"set it to 0 or more, or unset it (default {LOCK_TIMEOUT_SECONDS:g})")
    return value


class IndexLock:
    """The writer lock of one index folder (created if needed); use as a context manager.

    ``wait=False`` takes the lock only if it is free (``acquired`` says whether it was): for
    chores, such as removing leftovers, that can be left to the next build.
    """

    def __init__(self, index_dir: Path, timeout: float | None = None, wait: bool = True) -> None:
        self.index_dir = Path(index_dir)
        self.timeout = lock_timeout() if timeout is None else timeout
        self.wait = wait
        self.acquired = False
        self._fd: int | None = None

    def __enter__(self) -> IndexLock:
        self._fd = _open_lock_file(self.index_dir)
        try:
            self.acquired = _try_lock(self._fd) or (self.wait and self._wait())
        except BaseException:
            self._close()
            raise
        if not self.acquired:
            self._close()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._close()

    def _wait(self) -> bool:
        """Poll until the lock is free; IndexBusyError after ``timeout`` seconds."""
        log.warning("waiting for another build of the index at %s to finish (up to %g s)",
                    self.index_dir, self.timeout)
        deadline = time.monotonic() + self.timeout
        while not _try_lock(self._fd):
            if time.monotonic() >= deadline:
                raise IndexBusyError(
                    f"another build of the index at {self.index_dir} is still running after "
                    f"{self.timeout:g} s; try again when it has finished (or set "
                    f"{LOCK_TIMEOUT_ENV} to wait longer)")
            time.sleep(POLL_SECONDS)
        return True

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file releases its lock
            self._fd = None
        self.acquired = False


def _open_lock_file(index_dir: Path) -> int:
    try:
        index_dir.mkdir(parents=True, exist_ok=True)
        return os.open(index_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise IndexStoreError(
            f"cannot create the index at {index_dir} ({exc.strerror or exc.__class__.__name__}); "
            "give a folder you may write with --index") from None


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
