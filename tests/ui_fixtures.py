"""Fixtures for the UI tests: a corpus with traps, two assistants over it, a server for each.

``fake_ui_assistant`` / ``fake_ui_server`` use the fake embedder (tests/fake_embedder.py): the
server, the API, the source view and the escaping do not depend on the model, so most UI tests run
on them in seconds. ``ui_assistant`` / ``ui_server`` load the real model, for the ``slow`` tests
of what the real model answers.

Imported by tests/test_ui_http.py and tests/test_ui_browser.py (tests/conftest.py belongs to the
library's tests). pytest registers an imported fixture once per importing module, so the costly
objects are cached here, at module level, to be built once per session whichever test asks first.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, SEEDS  # noqa: F401  (ROOT is re-exported; conftest sets the offline env)
from fake_embedder import FAKE_SEARCH, FAKE_SETTINGS, FakeEmbedder

#: Sentences long enough to be indexed, carrying markup that must be shown, never run.
MARKUP_TEXT = """\
Note de test sur le balisage qui doit rester du texte dans les documents du corpus.

Le pirate informatique a glissé <script>alert("x")</script> dans un commentaire du site de la mairie.

Le mot <b>gras</b> figure en toutes lettres dans le rapport du conseil municipal de la ville.
"""
#: An HTML document: the source view shows the text the indexer extracted, not the markup.
HTML_PAGE = """<!doctype html><html><head><title>Horaires</title>
<script>alert("html")</script></head><body><h1>Horaires de la médiathèque</h1>
<p>La médiathèque du quartier ouvre ses portes le samedi matin à neuf heures précises.</p>
</body></html>
"""
#: A document in a subfolder whose name needs URL quoting.
ODD_NAME = "sous dossier/note été #1.md"
MARKUP_QUESTION = "Qu'a glissé le pirate informatique dans un commentaire du site de la mairie ?"

#: Questions with a fact that only their own answer holds (the real model, on the seeds).
KNOWN = {
    "Quel pourcentage du PIB Trump exige-t-il ?": "5 %",
    "Combien de soldats nord-coréens ont été envoyés dans la région de Koursk ?": "10 000",
    "Which Finnish leader said Europe must support Ukraine as long as necessary?": "Orpo",
    "Où Mark Rutte a-t-il rencontré Donald Trump ?": "Palm Beach",
}

#: The same, for the fake embedder (the UI corpus's own files, and one fact of the seeds).
FAKE_KNOWN = {
    "Quand la médiathèque du quartier ouvre-t-elle ses portes ?": "samedi matin",
    "Quand la fanfare municipale répète-t-elle ?": "jeudi soir",
    "Combien de soldats nord-coréens ont été envoyés dans la région de Koursk ?": "10 000",
    MARKUP_QUESTION: "<script>",
}

_cache: dict[str, object] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class UICorpus:
    root: Path  # the corpus folder: the seeds, markup.txt and traps
    index: Path  # its index folder
    outside: Path  # a secret file outside the corpus, reachable only through a symlink


def stop_process(process: subprocess.Popen) -> None:
    """Ask a server process to stop, and kill it if it has not within 15 s."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_corpus(base: Path) -> UICorpus:
    """Seeds + markup.txt, plus files the source view must refuse to show."""
    root = base / "corpus"
    shutil.copytree(SEEDS, root)
    (root / "markup.txt").write_text(MARKUP_TEXT, encoding="utf-8")
    (root / "horaires.html").write_text(HTML_PAGE, encoding="utf-8")
    (root / ODD_NAME).parent.mkdir()
    (root / ODD_NAME).write_text("La fanfare municipale répète chaque jeudi soir dans le gymnase "
                                 "du collège.\n", encoding="utf-8")
    (root / "notes.json").write_text('{"secret": "not a document"}', encoding="utf-8")
    (root / ".hidden.txt").write_text("Ce fichier caché ne doit jamais être servi par le site.\n",
                                      encoding="utf-8")
    outside_dir = base / "outside"
    outside_dir.mkdir()
    outside = outside_dir / "secret.txt"
    outside.write_text("Ce secret hors du corpus ne doit jamais être servi par le site.\n",
                       encoding="utf-8")
    (root / "link_out.txt").symlink_to(outside)
    (root / "linked_dir").symlink_to(outside_dir, target_is_directory=True)
    return UICorpus(root, base / "index", outside)


@pytest.fixture(scope="session")
def ui_corpus(tmp_path_factory) -> UICorpus:
    with _lock:
        if "corpus" not in _cache:
            _cache["corpus"] = make_corpus(tmp_path_factory.mktemp("ui"))
        return _cache["corpus"]  # type: ignore[return-value]


@pytest.fixture(scope="session")
def ui_assistant(ui_corpus):
    """The real assistant over the UI corpus, model loaded, built once per session."""
    from rag.assistant import Assistant
    with _lock:
        if "assistant" not in _cache:
            assistant = Assistant(ui_corpus.root, ui_corpus.index)
            assistant.embedder  # load now, not inside the first timed request
            _cache["assistant"] = assistant
        return _cache["assistant"]


@pytest.fixture(scope="session")
def fake_ui_assistant(ui_corpus):
    """An assistant over the UI corpus with the fake embedder (its own index folder)."""
    from rag.assistant import Assistant
    with _lock:
        if "fake_assistant" not in _cache:
            _cache["fake_assistant"] = Assistant(
                ui_corpus.root, ui_corpus.index.with_name("fake-index"),
                index_settings=FAKE_SETTINGS, search=FAKE_SEARCH, embedder=FakeEmbedder())
        return _cache["fake_assistant"]


def serve_in_thread(assistant) -> tuple[str, Callable[[], None]]:
    """The app from ``build_app`` served by uvicorn in a thread: its base URL and a stop function."""
    import uvicorn

    from ui.app import build_app
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(assistant), host="127.0.0.1", port=port,
                                           log_level="warning", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, name="ui-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)

    return f"http://127.0.0.1:{port}", stop


@pytest.fixture(scope="session")
def ui_server(ui_assistant) -> Iterator[str]:
    """The real assistant's server; yields its base URL."""
    url, stop = serve_in_thread(ui_assistant)
    yield url
    stop()


@pytest.fixture(scope="session")
def fake_ui_server(fake_ui_assistant) -> Iterator[str]:
    """The fake assistant's server; yields its base URL."""
    url, stop = serve_in_thread(fake_ui_assistant)
    yield url
    stop()
