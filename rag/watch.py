"""Keep a running assistant's index in step with its corpus folder.

``CorpusWatcher(assistant).start()`` watches the corpus folder (and the index folder's ``CURRENT``
pointer, which another ``rag index`` may replace) with ``watchfiles`` in a background thread.
Changes are debounced: an editor's save or a copied folder is many file events, and they make one
update. Each update is ``Assistant.refresh``: ``update_index`` embeds only added or changed files,
then the new index is swapped in whole, so questions already running finish on the old one.

A failed update (an unreadable file, a corpus emptied for a moment) logs one line and leaves the
previous index answering; the next change tries again.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import watchfiles

from .assistant import Assistant
from .index import BuildReport

log = logging.getLogger(__name__)

#: Milliseconds without a new event before a batch of changes is handled: long enough to take an
#: editor's write-rename-delete dance or a ``cp -r`` as one change, short enough that a dropped
#: file is answerable within a couple of seconds.
QUIET_MS = 400
#: Milliseconds after which a batch is handled even if events keep coming (a long copy).
MAX_WAIT_MS = 3000


class ChangeFilter(watchfiles.DefaultFilter):
    """Corpus changes (hidden files and editors' temporary files left out, as the indexer skips
    them) and a new ``CURRENT`` in the index folder; nothing else the index folder holds."""

    def __init__(self, corpus: Path, index_dir: Path) -> None:
        super().__init__()
        self.corpus = corpus.resolve()
        self.index_dir = index_dir.resolve()

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        where = Path(path)
        if where.is_relative_to(self.index_dir):
            return where.parent == self.index_dir and where.name == "CURRENT"
        if not where.is_relative_to(self.corpus):
            return False
        if any(part.startswith(".") for part in where.relative_to(self.corpus).parts):
            return False
        return super().__call__(change, path)


def describe(report: BuildReport) -> str:
    """One line for the chat's terminal about an update that took effect."""
    return (f"index updated: {report.files} files, {report.chunks} chunks "
            f"({report.embedded} embedded, {report.removed} files removed) "
            f"in {report.seconds:.1f} s")


class CorpusWatcher:
    """A daemon thread that refreshes ``assistant`` whenever its corpus folder changes."""

    def __init__(self, assistant: Assistant,
                 on_update: Callable[[BuildReport], None] | None = None) -> None:
        """``on_update`` is called (in the watcher's thread) after each update that swapped a
        new index in; the chat prints a line with it."""
        self.assistant = assistant
        self.on_update = on_update
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Set once the file watcher is running: a change made after it is seen.
        self.ready = threading.Event()

    def start(self) -> CorpusWatcher:
        self._thread = threading.Thread(target=self._run, name="corpus-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        # Resolved, so that event paths and the filter's folders are spelt alike.
        corpus, index_dir = self.assistant.corpus.resolve(), self.assistant.index_dir.resolve()
        paths = [p for p in (corpus, index_dir) if p.is_dir()]
        changes = watchfiles.watch(*paths, watch_filter=ChangeFilter(corpus, index_dir),
                                   debounce=MAX_WAIT_MS, step=QUIET_MS, stop_event=self._stop,
                                   rust_timeout=500, yield_on_timeout=True,
                                   raise_interrupt=False)
        try:
            for batch in changes:
                if not self.ready.is_set():
                    # The first batch (empty, on timeout) says the watcher is up; a change made
                    # between the assistant's start and now was not seen: catch up once.
                    self.update()
                    self.ready.set()
                elif batch:
                    self.update()
        except Exception as exc:  # the watcher itself failed (the folder vanished, say)
            log.warning("corpus watching stopped (%s: %s); restart `rag chat` to see changes",
                        exc.__class__.__name__, exc)

    def update(self) -> BuildReport | None:
        """One refresh; a failure is one log line and the previous index stays in use."""
        try:
            report = self.assistant.refresh()
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            log.warning("index not updated, still answering from the previous one: %s", reason)
            return None
        if report is not None and self.on_update is not None:
            self.on_update(report)
        return report
