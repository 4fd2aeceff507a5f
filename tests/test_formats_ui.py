"""A PDF citation in the chat server, over HTTP: its link opens the cited page of the source view
with the page number and the cited lines lit, and the original file downloads.

A real server (uvicorn in a thread, the app from ``ui.app.build_app``, as tests/test_ui_http.py
starts it) over a folder of seed PDFs made by reportlab, with the fake embedder: the links, the
page view and the download do not depend on the model.
"""
from __future__ import annotations

import html
import re
from collections.abc import Iterator

import httpx
import pytest
from fake_embedder import FAKE_SEARCH, FAKE_SETTINGS, FakeEmbedder
from format_files import HEADER, make_docx, make_pdf, seed_paragraphs
from gradio_client import Client
from ui_fixtures import serve_in_thread

from rag.assistant import Assistant

pytestmark = [pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]

SEED = "004_8d320c1e2e7514cc.txt"
PDF = "revue de presse.pdf"  # a name that needs quoting in a URL
QUESTION = ("Quel Premier ministre albanais a prédit que le retour du républicain pourrait être "
            "bon pour l’Europe ?")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[str, Assistant]]:
    root = tmp_path_factory.mktemp("formats-ui") / "corpus"
    root.mkdir()
    make_pdf(root / PDF, seed_paragraphs(SEED))
    make_docx(root / "note.docx", seed_paragraphs("000_024703823b32d0c5.txt")[:4])
    assistant = Assistant(root, root.parent / "index", FAKE_SETTINGS, FAKE_SEARCH,
                          embedder=FakeEmbedder())
    url, stop = serve_in_thread(assistant)
    try:
        yield url, assistant
    finally:
        stop()


def highlighted(page: str) -> dict[int, str]:
    found = re.findall(r'<div class="line hl" id="L(\d+)">.*?<span class="tx">(.*?)</span>', page)
    return {int(n): html.unescape(text) for n, text in found}


def test_a_pdf_citation_opens_its_page_with_the_lines_lit(server):
    base, assistant = server
    result = Client(base, verbose=False).predict(QUESTION, api_name="/ask")
    citation = result["citations"][0]
    assert citation["source"] == PDF and "Edi Rama" in citation["text"]
    assert (citation["page"], citation["start_line"], citation["end_line"]) == (2, 7, 7)
    version = assistant.index.manifest["files"][PDF]["hash"][:12]
    assert citation["url"] == (f"/source/revue%20de%20presse.pdf?v={version}&page=2&lines=7-7#L7")
    page = httpx.get(base + citation["url"])
    assert page.status_code == 200
    assert "<p>page 2 sur 2 · ligne 7 · " in page.text
    lit = highlighted(page.text)
    assert set(lit) == {7} and citation["text"] in lit[7]
    # The page shows page 2 only, numbered from 1: its header first.
    first = re.search(r'<div class="line[^"]*" id="L1">.*?<span class="tx">(.*?)</span>', page.text)
    assert html.unescape(first.group(1)) == HEADER
    assert "Edi Rama" not in httpx.get(base + citation["url"].replace("page=2", "page=1")).text
    # Links to the previous page and to the original file.
    assert f'href="/source/revue%20de%20presse.pdf?v={version}&amp;page=1"' in page.text
    assert f'href="/original/revue%20de%20presse.pdf?v={version}"' in page.text


def test_the_original_pdf_downloads(server):
    base, assistant = server
    version = assistant.index.manifest["files"][PDF]["hash"][:12]
    response = httpx.get(f"{base}/original/revue%20de%20presse.pdf?v={version}")
    assert response.status_code == 200
    assert response.content == (assistant.corpus / PDF).read_bytes()
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["x-content-type-options"] == "nosniff"


def test_only_indexed_documents_download(server):
    base, _ = server
    for path in ("/original/absent.pdf", "/original/../pyproject.toml",
                 "/original/%2e%2e/corpus/revue%20de%20presse.pdf"):
        response = httpx.get(base + path)
        assert response.status_code == 404 and b"%PDF" not in response.content


def test_a_page_past_the_end_says_so(server):
    base, _ = server
    page = httpx.get(f"{base}/source/revue%20de%20presse.pdf?page=9&lines=3-4")
    assert page.status_code == 200
    assert "n’a que 2 pages" in page.text and not highlighted(page.text)


def test_a_word_document_without_pages_opens_whole_with_its_download(server):
    base, assistant = server
    version = assistant.index.manifest["files"]["note.docx"]["hash"][:12]
    page = httpx.get(f"{base}/source/note.docx?v={version}&lines=2-2#L2")
    assert page.status_code == 200 and " sur " not in page.text.split("<main>")[0]
    assert set(highlighted(page.text)) == {2}
    assert f'href="/original/note.docx?v={version}"' in page.text
    download = httpx.get(f"{base}/original/note.docx?v={version}")
    assert download.content[:2] == b"PK"


def test_a_pdf_too_large_to_read_shows_its_cited_lines_from_the_index(server, monkeypatch):
    """Above the size limit the PDF is not parsed per request: the page shows the cited lines as
    the index holds them, numbered within their page as the citation counts them."""
    import ui.source_view
    base, assistant = server
    monkeypatch.setattr(ui.source_view, "MAX_DOCUMENT_BYTES", 1000)
    result = assistant.ask(QUESTION).to_json()
    citation = result["citations"][0]
    version = assistant.index.manifest["files"][PDF]["hash"][:12]
    page = httpx.get(f"{base}/source/revue%20de%20presse.pdf?v={version}&page=2&lines=7-7")
    assert "page 2, ligne 7 · trop grand pour être affiché" in page.text
    assert "(limite 0,001 Mo)" in page.text  # the documents' own limit, patched to 1000 bytes
    lit = highlighted(page.text)
    assert set(lit) == {7} and citation["text"] in lit[7]


def test_a_changed_pdf_link_says_so(server, tmp_path):
    """A link to an older version of the PDF (another hash) lights nothing and leads to the
    current version; its download link too."""
    base, _ = server
    page = httpx.get(f"{base}/source/revue%20de%20presse.pdf?v=000000000000&page=2&lines=7-7")
    assert "a été modifié" in page.text and not highlighted(page.text)
    download = httpx.get(f"{base}/original/revue%20de%20presse.pdf?v=000000000000")
    assert "a été modifié" in download.text and download.headers["content-type"].startswith(
        "text/html")


def test_a_pdf_dropped_into_a_watched_corpus_is_answered_by_page(tmp_path):
    """The live corpus treats a PDF like a text file: dropped while the chat runs, it is indexed
    and answered with its page; replaced, its old link says it changed."""
    import time

    from conftest import write_tiny_corpus

    from rag.watch import CorpusWatcher
    corpus = tmp_path / "corpus"
    write_tiny_corpus(corpus)
    assistant = Assistant(corpus, tmp_path / "index", FAKE_SETTINGS, FAKE_SEARCH,
                          embedder=FakeEmbedder())
    watcher = CorpusWatcher(assistant).start()
    assert watcher.ready.wait(20)
    base, stop = serve_in_thread(assistant)
    try:
        client = Client(base, verbose=False)
        made = tmp_path / "made.pdf"
        make_pdf(made, seed_paragraphs(SEED))
        (corpus / PDF).write_bytes(made.read_bytes())  # written in place, as a copy would
        deadline = time.monotonic() + 20
        while True:
            result = client.predict(QUESTION, api_name="/ask")
            cited = [c for c in result["citations"] if c["source"] == PDF]
            if cited or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert cited and (cited[0]["page"], cited[0]["start_line"]) == (2, 7), result
        old_link = cited[0]["url"]
        assert set(highlighted(httpx.get(base + old_link).text)) == {7}
        make_pdf(made, seed_paragraphs(SEED)[3:])  # another version: other lines on page 2
        (corpus / PDF).write_bytes(made.read_bytes())
        deadline = time.monotonic() + 20
        while "a été modifié" not in (page := httpx.get(base + old_link).text):
            assert time.monotonic() < deadline, "the changed PDF was not noticed"
            time.sleep(0.2)
        assert not highlighted(page)
    finally:
        stop()
        watcher.stop()


def test_the_chat_shows_the_page_of_a_pdf_citation(server):
    """The answer's [n] marker and the sources panel name the page and its lines."""
    from ui.render import answer_html, sources_html, with_urls
    _, assistant = server
    answer = with_urls(assistant.ask(QUESTION).to_json(),
                       {s: e["hash"] for s, e in assistant.index.manifest["files"].items()})
    marker = re.search(r'<a class="cite" href="([^"]+)" title="([^"]+)">\[1\]</a>',
                       answer_html(answer))
    assert marker and html.unescape(marker.group(2)) == f"{PDF}, page 2, ligne 7"
    assert "page=2&amp;lines=7-7#L7" in marker.group(1)
    panel = sources_html(answer)
    assert '<span class="source-lines">page 2, ligne 7</span>' in panel
    assert "<mark>" in panel and "Edi Rama" in panel.split("<mark>")[1]
