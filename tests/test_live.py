"""A live corpus under a running chat: files dropped, changed or deleted while it serves.

Each test runs a real server (uvicorn in a thread, the app of ``ui.app.build_app``) with the
corpus watcher of ``rag.watch`` over a corpus of its own, and talks to it over HTTP only: the
``/ask`` and ``/status`` APIs through ``gradio_client`` and the source view through ``httpx``.
The fake embedder stands in for the model (what is tested is the watching, the index swap and
the links, not what the model finds). Nothing waits a fixed time: each test polls for what a
visitor would see, with a deadline.
"""
from __future__ import annotations

import hashlib
import html
import logging
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ROOT, SEEDS, write_tiny_corpus
from fake_embedder import FAKE_SEARCH, FAKE_SETTINGS, FakeEmbedder
from gradio_client import Client
from ui_fixtures import free_port, serve_in_thread, stop_process

from rag.assistant import Assistant
from rag.cli import build_parser
from rag.watch import CorpusWatcher
from ui.render import version_tag
from ui.source_view import MAX_SHOWN_LINES, MAX_SOURCE_BYTES

pytestmark = [pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]

#: How long a change may take to be answered: the watcher's quiet time, an incremental update
#: and the swap take well under a second on the tiny corpus; this leaves room for a busy machine.
DEADLINE = 20.0

TOUR_QUESTION = "Quand partira le Tour de France cycliste ?"
CHEESE_QUESTION = "Qui aurait inventé la recette du camembert ?"
POOL_QUESTION = "Quand la piscine municipale rouvre-t-elle ?"
POOL_TEXT = ("La piscine municipale rouvre ses bassins le lundi 3 mars après six mois de "
             "travaux.\n")


@dataclass
class Live:
    url: str
    corpus: Path  # the folder watched: every document sits in its docs/ sub-folder
    assistant: Assistant
    client: Client

    def ask(self, question: str) -> dict:
        return self.client.predict(question, api_name="/ask")

    def status(self) -> dict:
        return self.client.predict(api_name="/status")

    def get(self, url: str) -> httpx.Response:
        return httpx.get(self.url + url, timeout=10)


def wait_for(what: str, probe: Callable[[], Any], deadline: float = DEADLINE) -> Any:
    """Poll ``probe`` until it returns something true; fail after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > end:
            pytest.fail(f"not seen within {deadline:.0f} s: {what}")
        time.sleep(0.1)


def lit_lines(page: str) -> dict[int, str]:
    """Line number -> text of the lines the source view highlights."""
    found = re.findall(r'<div class="line hl" id="L(\d+)">.*?<span class="tx">(.*?)</span>', page)
    return {int(n): text for n, text in found}


def citation_from(result: dict, source: str) -> dict:
    cited = [c for c in result["citations"] if c["source"] == source]
    assert cited, result
    return cited[0]


@pytest.fixture()
def live(tmp_path) -> Iterator[Live]:
    """A watched tiny corpus (under docs/), its fake index, a server and a client."""
    corpus = tmp_path / "corpus"
    write_tiny_corpus(corpus / "docs")
    assistant = Assistant(corpus, tmp_path / "index", index_settings=FAKE_SETTINGS,
                          search=FAKE_SEARCH, embedder=FakeEmbedder())
    watcher = CorpusWatcher(assistant).start()
    assert watcher.ready.wait(DEADLINE), "the corpus watcher did not start"
    url, stop = serve_in_thread(assistant)
    try:
        yield Live(url, corpus, assistant, Client(url, verbose=False))
    finally:
        stop()
        watcher.stop()


def test_a_dropped_file_is_answered_within_seconds(live):
    before = live.ask(POOL_QUESTION)
    assert "3 mars" not in before["answer"]
    files = live.status()["files"]

    started = time.monotonic()
    (live.corpus / "docs" / "piscine.txt").write_text(POOL_TEXT, encoding="utf-8")
    answer = wait_for("the new file answers", lambda: (
        result if "3 mars" in (result := live.ask(POOL_QUESTION))["answer"] else None))
    print(f"answered from the dropped file after {time.monotonic() - started:.1f} s")

    citation = citation_from(answer, "docs/piscine.txt")
    page = live.get(citation["url"])
    assert page.status_code == 200
    assert html.escape(citation["text"]) in " ".join(lit_lines(page.text).values())
    status = live.status()
    assert status["files"] == files + 1 and status["folder"] == "corpus"
    assert status == {k: v for k, v in live.assistant.status().items() if k != "corpus"}


def test_a_changed_files_old_link_says_it_changed(live):
    first = live.ask(TOUR_QUESTION)
    old = citation_from(first, "docs/tour.txt")
    assert "5 juillet" in old["text"] and old["start_line"] == 1

    tour = live.corpus / "docs" / "tour.txt"
    text = tour.read_text(encoding="utf-8").replace("le 5 juillet", "le 28 juin")
    tour.write_text("Programme provisoire publié par les organisateurs de la course.\n\n" + text,
                    encoding="utf-8")
    second = wait_for("the changed file answers", lambda: (
        result if "28 juin" in (result := live.ask(TOUR_QUESTION))["answer"] else None))
    new = citation_from(second, "docs/tour.txt")
    assert new["start_line"] == 3
    new_version = version_tag(live.assistant.index.manifest["files"]["docs/tour.txt"]["hash"])
    assert f"v={new_version}&" in new["url"] and new["url"] != old["url"]

    # The old link no longer lights line 1 (which now holds other text): it says the file
    # changed and links to the current version.
    page = live.get(old["url"])
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "a été modifié depuis la réponse" in page.text
    assert not lit_lines(page.text) and "5 juillet" not in page.text
    current = f'href="/source/docs/tour.txt?v={new_version}"'
    assert current in page.text
    latest = live.get(f"/source/docs/tour.txt?v={new_version}")
    assert latest.status_code == 200 and "28 juin" in latest.text
    # The new link lights the new lines.
    lit = lit_lines(live.get(new["url"]).text)
    assert set(lit) == {3} and "28 juin" in lit[3]


def test_a_deleted_files_link_says_it_left_the_index(live):
    cheese = citation_from(live.ask(CHEESE_QUESTION), "docs/fromages/camembert.md")
    assert live.get(cheese["url"]).status_code == 200

    (live.corpus / "docs" / "fromages" / "camembert.md").unlink()
    wait_for("the index drops the file", lambda: live.status()["files"] == 2)

    page = live.get(cheese["url"])
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert "« docs/fromages/camembert.md » n’est plus dans l’index" in page.text
    assert "Marie Harel" not in page.text
    assert all(c["source"] != "docs/fromages/camembert.md"
               for c in live.ask(CHEESE_QUESTION)["citations"])


def test_a_failed_update_keeps_the_previous_index(live, caplog):
    """Hiding every document (one rename) leaves a corpus with nothing to index: the update
    fails, says so in one log line, and the chat goes on answering from the index it had."""
    caplog.set_level(logging.WARNING, logger="rag.watch")
    assert "5 juillet" in live.ask(TOUR_QUESTION)["answer"]
    status = live.status()

    (live.corpus / "docs").rename(live.corpus / ".docs")
    failure = wait_for("a failed update is logged", lambda: [
        r for r in caplog.records if r.name == "rag.watch" and r.levelno == logging.WARNING])
    message = failure[0].getMessage()
    assert message.startswith("index not updated, still answering from the previous one: ")
    assert "\n" not in message and "no readable" in message
    assert live.status() == status
    assert "5 juillet" in live.ask(TOUR_QUESTION)["answer"]

    (live.corpus / ".docs").rename(live.corpus / "docs")
    (live.corpus / "docs" / "piscine.txt").write_text(POOL_TEXT, encoding="utf-8")
    wait_for("the next change is indexed", lambda: live.status()["files"] == status["files"] + 1)


def test_answers_during_updates_never_light_other_text(live):
    """Questions keep coming while the cited file is rewritten again and again, its fact moving
    between lines: each answer is consistent with one index, and its link either lights exactly
    the quoted text or says the file changed (or, caught between two writes, that it left the
    index). Each rewrite replaces the file whole, as editors save, so the question always has
    its answer in the corpus."""
    tour = live.corpus / "docs" / "tour.txt"
    draft = live.corpus / "docs" / ".tour.txt.swp"  # hidden: never indexed
    original = tour.read_text(encoding="utf-8")
    versions = [original, "Annonce officielle.\n\nMise à jour du parcours.\n\n" + original]
    stop = threading.Event()

    def visitor() -> list[tuple[dict, httpx.Response]]:
        client, seen = Client(live.url, verbose=False), []
        while not stop.is_set():
            result = client.predict(TOUR_QUESTION, api_name="/ask")
            citation = citation_from(result, "docs/tour.txt")
            seen.append((citation, live.get(citation["url"])))
        return seen

    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = [pool.submit(visitor) for _ in range(3)]
        for round_ in range(1, 5):
            draft.write_text(versions[round_ % 2], encoding="utf-8")
            draft.replace(tour)
            expected = hashlib.sha256(versions[round_ % 2].encode("utf-8")).hexdigest()
            wait_for("the rewrite is indexed", lambda: live.assistant.index.manifest["files"]
                     ["docs/tour.txt"]["hash"] == expected)
        stop.set()
        seen = [item for future in futures for item in future.result()]

    assert len(seen) >= 6
    for citation, page in seen:
        if page.status_code == 404:
            assert "n’est plus dans l’index" in page.text and not lit_lines(page.text)
            continue
        assert page.status_code == 200, citation
        if "a été modifié depuis la réponse" in page.text:
            assert not lit_lines(page.text)
            continue
        lit = lit_lines(page.text)
        assert set(lit) == set(range(citation["start_line"], citation["end_line"] + 1))
        assert html.escape(citation["text"]) in " ".join(lit.values())


def test_a_question_in_flight_finishes_on_its_index(tmp_path):
    """The snapshot a question starts with serves it to the end, even across a swap."""
    corpus = write_tiny_corpus(tmp_path / "corpus")
    assistant = Assistant(corpus, tmp_path / "index", index_settings=FAKE_SETTINGS,
                          search=FAKE_SEARCH, embedder=FakeEmbedder())
    before = assistant.index
    tour = corpus / "tour.txt"
    tour.write_text(tour.read_text(encoding="utf-8").replace("5 juillet", "28 juin"),
                    encoding="utf-8")
    report = assistant.refresh()
    assert report is not None and report.embedded >= 1 and assistant.index is not before
    assert assistant.refresh() is None  # nothing changed since: no new index

    old = assistant.ask(TOUR_QUESTION, index=before)
    new = assistant.ask(TOUR_QUESTION)
    assert "5 juillet" in old.answer and "28 juin" in new.answer
    context, _ = assistant.retrieve(TOUR_QUESTION, index=before)
    assert context.index is before
    assert assistant.status(before)["built"] == before.manifest["created"]


def test_a_large_file_shows_only_its_cited_lines(live):
    filler = "Ligne de remplissage numéro {n} du registre communal, sans rien de particulier.\n"
    lines = [filler.format(n=n) for n in range(1, 13_001)]
    lines[8_000] = "Le trésor du registre est caché sous le vieux chêne du jardin communal.\n"
    big = "".join(lines)
    assert len(big.encode("utf-8")) > MAX_SOURCE_BYTES
    (live.corpus / "docs" / "registre.txt").write_text(big, encoding="utf-8")
    result = wait_for("the large file answers", lambda: (
        r if "trésor" in (r := live.ask("Où le trésor du registre est-il caché ?"))["answer"]
        else None))

    citation = citation_from(result, "docs/registre.txt")
    assert citation["start_line"] == 8_001
    page = live.get(citation["url"])
    assert page.status_code == 200
    assert "trop grand pour être affiché en entier" in page.text
    assert lit_lines(page.text) == {8_001: html.escape(lines[8_000].rstrip("\n"))}
    assert len(page.content) < 20_000  # the cited lines, not the file
    whole = live.get("/source/docs/registre.txt?lines=1-100000")
    assert whole.status_code == 200
    assert sorted(lit_lines(whole.text)) == list(range(1, MAX_SHOWN_LINES + 1))


def test_no_watch_is_an_option():
    parser = build_parser()
    assert parser.parse_args(["chat"]).watch is True
    assert parser.parse_args(["chat", "--no-watch"]).watch is False


@pytest.mark.slow
def test_rag_chat_warns_when_exposed_and_follows_its_corpus(tmp_path):
    """The real command: a one-line warning for an address other machines can reach, the
    corpus folder's name (not its path) on the page, and a dropped file answered without a
    restart, with the update printed."""
    corpus = tmp_path / "seeds"
    shutil.copytree(SEEDS, corpus)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "rag.cli", "chat", "--corpus", str(corpus), "--index",
         str(tmp_path / "index"), "--host", "0.0.0.0", "--port", str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: list[str] = []
    err: list[str] = []

    def collect(stream, lines: list[str]) -> None:  # threads: a silent child blocks no test
        for line in stream:
            lines.append(line)

    for stream, lines in ((process.stdout, out), (process.stderr, err)):
        threading.Thread(target=collect, args=(stream, lines), daemon=True).start()
    try:
        wait_for("the chat is ready", lambda: any("Chat ready at" in line for line in out)
                 or process.poll() is not None, deadline=240)
        assert process.poll() is None, "".join(err)
        warnings = [line for line in err if line.startswith("rag: warning")]
        assert len(warnings) == 1 and warnings[0].startswith("rag: warning: listening on 0.0.0.0:")
        assert "reachable from the network" in warnings[0]

        url = f"http://127.0.0.1:{port}"
        config = httpx.get(url + "/config", timeout=10).text
        assert str(corpus) not in config and str(tmp_path) not in config
        client = Client(url, verbose=False)
        assert client.predict(api_name="/status")["folder"] == "seeds"

        (corpus / "piscine.txt").write_text(POOL_TEXT, encoding="utf-8")
        answer = wait_for("the new file answers", lambda: (
            r if "3 mars" in (r := client.predict(POOL_QUESTION, api_name="/ask"))["answer"]
            else None), deadline=60)
        assert answer["citations"][0]["source"] == "piscine.txt"
        wait_for("the update is printed", lambda: any(
            line.startswith("index updated: 6 files") for line in out))
    finally:
        stop_process(process)
