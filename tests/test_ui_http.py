"""The chat server over HTTP: the /ask API, the source view, path safety, escaping, concurrency.

A real server (uvicorn in a thread, the app from ``ui.app.build_app``) over the UI corpus: the
seeds, markup, an HTML page, an odd file name and files it must never serve. The server, the API,
the source view and the escaping do not depend on the model, so most tests use the assistant with
the fake embedder (``fake_ui_server``); the ``slow`` ones at the end ask the real model about
facts of the seeds, through the same server code.
"""
from __future__ import annotations

import types

import html
import http.client
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import gradio as gr
import pytest
from gradio_client import Client
from ui_fixtures import (FAKE_KNOWN, KNOWN, MARKUP_QUESTION, ODD_NAME,  # noqa: F401
                         fake_ui_assistant, fake_ui_server, ui_assistant, ui_corpus, ui_server)

from ui.app import EMPTY_MESSAGE, Chat, bind, chat_messages
from ui.render import source_url, sources_html

# Gradio's queue statistics use a pandas option pandas 3 deprecates: not ours to fix.
pytestmark = [pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]

CITATION_KEYS = {"n", "source", "start_line", "end_line", "text", "score", "url"}


def raw_get(base: str, path: str) -> tuple[int, str]:
    """GET ``path`` exactly as written: no client-side normalisation of ``..`` or ``%2e``."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


def highlighted_lines(page: str) -> dict[int, str]:
    """Line number -> text of the lines the source view highlights."""
    found = re.findall(r'<div class="line hl" id="L(\d+)">.*?<span class="tx">(.*?)</span>', page)
    return {int(n): text for n, text in found}


def assert_citations_open_their_lines(base: str, result: dict) -> None:
    """Each citation's URL is its source view, with exactly the cited lines lit."""
    assert result["citations"], result
    for citation in result["citations"]:
        assert CITATION_KEYS <= set(citation)
        start, end = citation["start_line"], citation["end_line"]
        assert citation["url"] == source_url(citation["source"], start, end)
        assert citation["url"].startswith("/source/")
        assert citation["url"].endswith(f"?lines={start}-{end}#L{start}")
        page = httpx.get(base + citation["url"])
        assert page.status_code == 200
        assert f"<h1>{html.escape(citation['source'])}</h1>" in page.text
        lit = highlighted_lines(page.text)
        assert set(lit) == set(range(citation["start_line"], citation["end_line"] + 1))
        # The page shows the text escaped: compare with the escaped sentence.
        assert html.escape(citation["text"]) in " ".join(lit.values())


def ask_once(base: str, question: str) -> dict:
    """One visitor: a client of its own, for one question. (Not closed: ``Client.close`` takes a
    second, and the server's graceful stop ends the connection anyway.)"""
    return Client(base, verbose=False).predict(question, api_name="/ask")


@pytest.fixture(scope="module")
def client(fake_ui_server) -> Client:  # noqa: F811
    return Client(fake_ui_server, verbose=False)


# --------------------------------------------------------------------------- the /ask API


@pytest.mark.parametrize("question", [q for q in FAKE_KNOWN if q != MARKUP_QUESTION])
def test_api_returns_answer_json_with_source_urls(client, fake_ui_server, question):  # noqa: F811
    result = client.predict(question, api_name="/ask")
    assert {"question", "answer", "abstained", "citations", "passages", "latency_ms"} <= set(result)
    assert not result["abstained"]
    assert FAKE_KNOWN[question] in result["answer"] and "[1]" in result["answer"]
    assert_citations_open_their_lines(fake_ui_server, result)


def test_api_understands_history_given_as_json_string(client):
    first = "Quand la fanfare municipale répète-t-elle ?"
    as_list = client.predict("Et où ?", history=[{"role": "user", "content": first}],
                             api_name="/ask")
    as_json = client.predict("Et où ?", history=f'[{{"role": "user", "content": "{first}"}}]',
                             api_name="/ask")
    as_strings = client.predict("Et où ?", history=[first], api_name="/ask")
    assert as_list["answer"] == as_json["answer"] == as_strings["answer"]
    assert "gymnase" in as_list["answer"]  # the follow-up was understood through the history


def test_empty_question_is_a_clear_message(client, fake_ui_assistant):  # noqa: F811
    with pytest.raises(Exception, match="empty"):
        client.predict("   ", api_name="/ask")
    # In the chat: a notice in the conversation, not an exception.
    chat = Chat(fake_ui_assistant)
    messages, turns, box = chat.add_question("  ", [])
    assert box == ""
    assert len(messages) == 1 and messages[0]["role"] == "assistant"
    assert EMPTY_MESSAGE in messages[0]["content"]
    # Nothing is pending, so the answering step leaves the chat as it is.
    assert all(isinstance(x, type(gr.skip())) for x in chat.answer_last(turns))


def test_an_answer_for_a_cleared_conversation_is_dropped(fake_ui_assistant):  # noqa: F811
    """'Nouvelle conversation' clicked while an answer is on its way: the late answer must not
    bring the old conversation back."""
    chat = Chat(fake_ui_assistant)
    session = types.SimpleNamespace(session_hash="visitor-1")
    other = types.SimpleNamespace(session_hash="visitor-2")
    _, pending, _ = chat.add_question(next(iter(FAKE_KNOWN)), [], session)
    _, others, _ = chat.add_question(next(iter(FAKE_KNOWN)), [], other)
    assert chat.new_conversation(session)[:2] == ([], [])
    assert all(isinstance(x, type(gr.skip())) for x in chat.answer_last(pending, session))
    messages, turns, _ = chat.answer_last(others, other)  # another visitor is not affected
    assert len(messages) == 2 and turns[-1]["answer"]


def test_concurrent_questions_each_get_their_own_answer(fake_ui_server, fake_ui_assistant):  # noqa: F811
    expected = {q: fake_ui_assistant.ask(q).to_json()["answer"] for q in FAKE_KNOWN}
    questions = [q for _ in range(3) for q in FAKE_KNOWN]  # 12, interleaved

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda q: ask_once(fake_ui_server, q), questions))
    assert len(results) == len(questions)
    for question, result in zip(questions, results):
        assert result["question"] == question
        assert result["answer"] == expected[question]
        assert FAKE_KNOWN[question] in result["answer"]


# --------------------------------------------------------------------------- the source view


@pytest.mark.parametrize("path", [
    "/source/../pyproject.toml",
    "/source/../../../../etc/passwd",
    "/source/%2e%2e/%2e%2e/etc/passwd",
    "/source/%2e%2e/pyproject.toml",
    "/source//etc/passwd",
    "/source/..%2f..%2fpyproject.toml",
    "/source/%252e%252e%252fpyproject.toml",
    "/source/..%5c..%5cpyproject.toml",
    "/source/..\\..\\pyproject.toml",
    "/source/link_out.txt",
    "/source/linked_dir/secret.txt",
    "/source/notes.json",
    "/source/.hidden.txt",
    "/source/missing.txt",
    "/source/",
])
def test_source_view_refuses_anything_but_corpus_documents(fake_ui_server, path):  # noqa: F811
    status, body = raw_get(fake_ui_server, path)
    assert status == 404, (path, body[:200])
    assert "secret" not in body and "root:" not in body and "build-system" not in body


def test_source_view_serves_a_document_with_line_ids(fake_ui_server, ui_corpus):  # noqa: F811
    status, body = raw_get(fake_ui_server, "/source/002_eec1d2d7e8e00ced.txt?lines=19-19")
    assert status == 200
    lines = (ui_corpus.root / "002_eec1d2d7e8e00ced.txt").read_text(encoding="utf-8").split("\n")
    assert all(f'id="L{n}"' in body for n in range(1, len(lines)))
    assert highlighted_lines(body).keys() == {19}
    status, body = raw_get(fake_ui_server, "/source/002_eec1d2d7e8e00ced.txt?lines=nonsense")
    assert status == 200 and not highlighted_lines(body)


def test_source_view_of_html_shows_the_indexed_text(fake_ui_server):  # noqa: F811
    status, page = raw_get(fake_ui_server, "/source/horaires.html?lines=1-1")
    assert status == 200
    assert "La médiathèque du quartier ouvre ses portes" in page
    assert "&lt;p&gt;" not in page and "alert" not in page  # text, as indexed: no tags, no script


def test_source_urls_quote_odd_file_names(fake_ui_server):  # noqa: F811
    url = source_url(ODD_NAME, 1, 1)
    assert " " not in url and url.count("#") == 1
    page = httpx.get(fake_ui_server + url)
    assert page.status_code == 200
    assert f"<h1>{html.escape(ODD_NAME)}</h1>" in page.text
    assert highlighted_lines(page.text).keys() == {1}


# --------------------------------------------------------------------------- escaping, the chat


def test_markup_in_corpus_is_shown_as_text(client, fake_ui_server, fake_ui_assistant):  # noqa: F811
    status, page = raw_get(fake_ui_server, "/source/markup.txt?lines=3-3")
    assert status == 200
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&lt;b&gt;gras&lt;/b&gt;" in page
    assert "<script>alert" not in page and "<b>gras" not in page

    result = client.predict(MARKUP_QUESTION, api_name="/ask")
    cited = [c for c in result["citations"] if c["source"] == "markup.txt"]
    assert cited, result  # the API gives the text as data (JSON), unchanged
    assert '<script>alert("x")</script>' in cited[0]["text"]

    # The chat and the sources panel render it escaped.
    chat = Chat(fake_ui_assistant)
    messages, turns, _ = chat.add_question(MARKUP_QUESTION, [])
    messages, turns, panel = chat.answer_last(turns)
    rendered = messages[-1]["content"] + panel + sources_html(result)
    assert "&lt;script&gt;" in rendered and "<script>" not in rendered
    assert "<b>gras" not in rendered
    assert '<a class="cite" href="/source/markup.txt?lines=3-3#L3"' in messages[-1]["content"]


def test_chat_follow_up_uses_the_conversation(fake_ui_assistant):  # noqa: F811
    first, follow_up = "Quand la fanfare municipale répète-t-elle ?", "Et où ?"
    chat = Chat(fake_ui_assistant)
    _, turns, _ = chat.answer_last(chat.add_question(first, [])[1])
    messages, turns, _ = chat.answer_last(chat.add_question(follow_up, turns)[1])
    expected = fake_ui_assistant.ask(follow_up, history=[{"role": "user", "content": first}])
    assert turns[-1]["answer"]["answer"] == expected.answer
    assert not expected.abstained
    assert [m["role"] for m in messages] == ["user", "assistant"] * 2


def test_abstention_shows_message_and_closest_passages(fake_ui_assistant):  # noqa: F811
    chat = Chat(fake_ui_assistant)
    messages, turns, panel = chat.answer_last(
        chat.add_question("Quelle est la capitale de l'Australie ?", [])[1])
    assert turns[-1]["answer"]["abstained"]
    assert 'class="abstained"' in messages[-1]["content"]
    assert "Passages les plus proches" in panel and panel.count('class="source-card"') == 3


def test_user_question_is_escaped_in_the_chat():
    turns = [{"question": "<img src=x onerror=alert(1)> ?", "answer": None, "notice": None,
              "pending": False}]
    assert chat_messages(turns)[0]["content"] == "&lt;img src=x onerror=alert(1)&gt; ?"


def test_a_busy_port_is_a_one_line_error():
    """`rag chat` binds its port before printing the URL: a second chat on the same port says
    what to do instead of failing inside the server."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exit_:
            bind("127.0.0.1", port)
    message = str(exit_.value.code)
    assert message.startswith("rag: error:") and f"127.0.0.1:{port}" in message
    assert "--port" in message and "\n" not in message
    free = bind("127.0.0.1", 0)  # and a free port is taken and listened on
    try:
        assert free.getsockname()[1] > 0
    finally:
        free.close()


# --------------------------------------------------------------------------- the real model


@pytest.mark.slow
def test_real_model_answers_with_source_urls(ui_server):  # noqa: F811
    for question, fact in KNOWN.items():
        result = ask_once(ui_server, question)
        assert not result["abstained"] and fact in result["answer"], (question, result["answer"])
        assert_citations_open_their_lines(ui_server, result)


@pytest.mark.slow
def test_real_model_serves_concurrent_questions(ui_server, ui_assistant):  # noqa: F811
    """Twenty interleaved questions on the real model, whose tokenizer must not be shared
    between threads unguarded: each gets its own, right answer."""
    expected = {q: ui_assistant.ask(q).to_json()["answer"] for q in KNOWN}
    questions = [q for _ in range(5) for q in KNOWN]

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(lambda q: ask_once(ui_server, q), questions))
    for question, result in zip(questions, results):
        assert result["question"] == question
        assert result["answer"] == expected[question]
        assert KNOWN[question] in result["answer"], (question, result["answer"])
