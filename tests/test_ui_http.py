"""The chat server over HTTP: the /ask API, its input checks, the source view, path safety, the
closed Gradio routes, escaping, concurrency.

A real server (uvicorn in a thread, the app from ``ui.app.build_app``) over the UI corpus: the
seeds, markup, an HTML page, an odd file name and files it must never serve. The server, the API,
the source view and the escaping do not depend on the model, so most tests use the assistant with
the fake embedder (``fake_ui_server``); the ``slow`` ones at the end ask the real model about
facts of the seeds, through the same server code. What happens when the corpus changes under a
running chat is in tests/test_live.py.
"""
from __future__ import annotations

import types

import html
import http.client
import json
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

from ui.app import (EMPTY_MESSAGE, INVALID_MESSAGE, Chat, bind, chat_messages,
                    exposure_warning)
from ui.render import source_url, sources_html, status_html

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


def assert_citations_open_their_lines(base: str, result: dict, assistant) -> None:
    """Each citation's URL is its source view for the cited version of the file, with exactly
    the cited lines lit."""
    assert result["citations"], result
    files = assistant.index.manifest["files"]
    for citation in result["citations"]:
        assert CITATION_KEYS <= set(citation)
        start, end = citation["start_line"], citation["end_line"]
        version = files[citation["source"]]["hash"][:12]
        assert citation["url"] == source_url(citation["source"], start, end, version)
        assert citation["url"].startswith("/source/")
        assert citation["url"].endswith(f"?v={version}&lines={start}-{end}#L{start}")
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
def test_api_returns_answer_json_with_source_urls(client, fake_ui_server, fake_ui_assistant,  # noqa: F811
                                                  question):
    result = client.predict(question, api_name="/ask")
    assert {"question", "answer", "abstained", "citations", "passages", "latency_ms"} <= set(result)
    assert not result["abstained"]
    assert FAKE_KNOWN[question] in result["answer"] and "[1]" in result["answer"]
    assert_citations_open_their_lines(fake_ui_server, result, fake_ui_assistant)


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
    messages, turns, _, _ = chat.answer_last(others, other)  # another visitor is unaffected
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


# --------------------------------------------------------------------------- API input


def call_raw(base: str, body: str) -> tuple[str, object]:
    """POST ``body`` (raw JSON, so it may hold what no client would send) to the ``/ask``
    endpoint's REST route; return the event stream's event name and decoded data."""
    started = httpx.post(base + "/gradio_api/call/ask", content=body.encode("ascii"),
                         headers={"content-type": "application/json"}, timeout=10)
    assert started.status_code == 200, started.text
    stream = httpx.get(f"{base}/gradio_api/call/ask/{started.json()['event_id']}", timeout=30)
    event = re.search(r"^event: (\w+)$", stream.text, re.M).group(1)
    data = re.search(r"^data: (.*)$", stream.text, re.M).group(1)
    return event, json.loads(data)


@pytest.mark.parametrize("value, kind", [(12, "a number"), (None, "null"), (True, "a boolean"),
                                         (["Qui ?"], "a list"), ({"q": "Qui ?"}, "an object")])
def test_api_question_must_be_text(client, value, kind):
    with pytest.raises(Exception, match=re.escape(
            f"the question must be text (a JSON string), not {kind}")):
        client.predict(value, api_name="/ask")


@pytest.mark.parametrize("data, message", [
    ('["Quand la fanfare \\ud800 r\\u00e9p\\u00e8te-t-elle ?", null]',
     "the question is not valid Unicode text (it holds a lone surrogate, \\ud800-\\udfff); "
     "send UTF-8 text"),
    ('["Et o\\u00f9 ?", ["\\udc00 fanfare"]]',
     "history item 0 is not valid Unicode text (it holds a lone surrogate); send UTF-8 text"),
    ('["Et o\\u00f9 ?", [{"role": "user", "content": "fanfare \\udc00"}]]',
     "history item 0's content is not valid Unicode text"),
    ('["Et o\\u00f9 ?", "\\ud83d"]', "history is not valid Unicode text"),
    ('["Et o\\u00f9 ?", "' + "[" * 5000 + "]" * 5000 + '"]', "history is nested too deeply"),
    ('["Et o\\u00f9 ?", ' + "[" * 400 + "]" * 400 + "]",
     "history item 0 must be text, not a list"),
    ('["Et o\\u00f9 ?", ["Qui ?", 7]]', "history item 1 is a number"),
    ('["Et o\\u00f9 ?", 7]', "history must be a list, not a number"),
])
def test_malformed_api_input_gets_a_clear_message(fake_ui_server, data, message):  # noqa: F811
    """Valid JSON that is not valid input: each gets its own message, never "internal error"."""
    event, payload = call_raw(fake_ui_server, '{"data": ' + data + "}")
    assert event == "error"
    assert payload["error"].startswith(message), payload
    assert "internal" not in payload["error"]


def test_deeply_nested_history_through_the_client(client):
    with pytest.raises(Exception, match="history is nested too deeply"):
        client.predict("Et où ?", history="[" * 5000 + "]" * 5000, api_name="/ask")


def test_the_chat_refuses_text_it_cannot_show(fake_ui_assistant):  # noqa: F811
    """A lone surrogate typed into the chat (only a crafted request can): a notice, and nothing
    sent back that a UTF-8 encoder would choke on."""
    chat = Chat(fake_ui_assistant)
    messages, turns, box = chat.add_question("Quand la fanfare \ud800 répète-t-elle ?", [])
    assert box == "" and INVALID_MESSAGE in messages[-1]["content"]
    json.dumps([messages, turns], ensure_ascii=False).encode("utf-8")  # what Gradio sends
    assert all(isinstance(x, type(gr.skip())) for x in chat.answer_last(turns))


# --------------------------------------------------------------------------- exposure


@pytest.mark.parametrize("method, path", [
    ("POST", "/gradio_api/upload"),
    ("POST", "/gradio_api/upload/"),
    ("POST", "/gradio_api/upload?upload_id=x"),
    ("GET", "/gradio_api/upload_progress?upload_id=x"),
    ("POST", "/gradio_api/component_server"),
    ("POST", "/gradio_api/process_recording"),
    ("POST", "/gradio_api/stream/some-event"),
    ("GET", "/gradio_api/file=/etc/hostname"),
    ("GET", "/gradio_api/file/etc/hostname"),
    ("GET", "/gradio_api/proxy=http://127.0.0.1/"),
    ("GET", "/gradio_api/deep_link?deep_link=x"),
    ("POST", "/gradio_api/vibe-edit"),
    ("POST", "/login"),
    ("GET", "/monitoring"),
])
def test_unused_gradio_routes_that_take_input_are_closed(fake_ui_server, method, path):  # noqa: F811
    response = httpx.request(method, fake_ui_server + path,
                             files={"files": ("note.txt", b"hello")} if method == "POST" else None)
    assert response.status_code == 404, response.text[:200]
    assert response.text == "Not Found"


def test_the_page_the_config_and_the_api_stay_open(fake_ui_server, client):  # noqa: F811
    for path in ("/", "/config", "/gradio_api/info", "/theme.css"):
        assert httpx.get(fake_ui_server + path).status_code == 200, path
    assert client.predict(next(iter(FAKE_KNOWN)), api_name="/ask")["citations"]


def test_the_page_names_the_corpus_folder_not_its_path(fake_ui_server, client, ui_corpus,  # noqa: F811
                                                       fake_ui_assistant):
    config = httpx.get(fake_ui_server + "/config").json()
    text = json.dumps(config, ensure_ascii=False)
    assert str(ui_corpus.root) not in text and str(ui_corpus.root.parent) not in text
    shown = [c["props"]["value"] for c in config["components"]
             if c["props"].get("elem_id") == "status"]
    assert shown == [status_html(fake_ui_assistant.status())]
    assert "Index de « corpus » : " in shown[0]
    status = client.predict(api_name="/status")
    assert status["folder"] == "corpus" and "corpus" not in status
    assert status["files"] == fake_ui_assistant.index.manifest["counts"]["files"]


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.5", "::1", "localhost"])
def test_a_local_address_starts_quietly(host):
    assert exposure_warning(host) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20"])
def test_a_network_address_gets_a_one_line_warning(host):
    warning = exposure_warning(host)
    assert warning.startswith(f"rag: warning: listening on {host}: the chat and the indexed "
                              "documents are reachable from the network")
    assert "--host 127.0.0.1" in warning and "\n" not in warning


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


def test_source_view_serves_only_indexed_files(fake_ui_server, ui_corpus):  # noqa: F811
    """A corpus file added after the index was built is not served until it is indexed."""
    late = ui_corpus.root / "late.txt"
    late.write_text("Ce fichier arrivé après l'index ne doit pas être servi.\n", encoding="utf-8")
    try:
        status, body = raw_get(fake_ui_server, "/source/late.txt")
        assert status == 404 and "arrivé après" not in body and "late.txt" not in body
        assert "Ce document n’est pas dans l’index." in body
    finally:
        late.unlink()


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
    messages, turns, panel, _ = chat.answer_last(turns)
    rendered = messages[-1]["content"] + panel + sources_html(result)
    assert "&lt;script&gt;" in rendered and "<script>" not in rendered
    assert "<b>gras" not in rendered
    version = fake_ui_assistant.index.manifest["files"]["markup.txt"]["hash"][:12]
    href = html.escape(f"/source/markup.txt?v={version}&lines=3-3#L3", quote=True)
    assert f'<a class="cite" href="{href}"' in messages[-1]["content"]


def test_chat_follow_up_uses_the_conversation(fake_ui_assistant):  # noqa: F811
    first, follow_up = "Quand la fanfare municipale répète-t-elle ?", "Et où ?"
    chat = Chat(fake_ui_assistant)
    _, turns, _, _ = chat.answer_last(chat.add_question(first, [])[1])
    messages, turns, _, status = chat.answer_last(chat.add_question(follow_up, turns)[1])
    assert status == status_html(fake_ui_assistant.status())  # the line shown with the answer
    expected = fake_ui_assistant.ask(follow_up, history=[{"role": "user", "content": first}])
    assert turns[-1]["answer"]["answer"] == expected.answer
    assert not expected.abstained
    assert [m["role"] for m in messages] == ["user", "assistant"] * 2


def test_abstention_shows_message_and_closest_passages(fake_ui_assistant):  # noqa: F811
    chat = Chat(fake_ui_assistant)
    messages, turns, panel, _ = chat.answer_last(
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
def test_real_model_answers_with_source_urls(ui_server, ui_assistant):  # noqa: F811
    for question, fact in KNOWN.items():
        result = ask_once(ui_server, question)
        assert not result["abstained"] and fact in result["answer"], (question, result["answer"])
        assert_citations_open_their_lines(ui_server, result, ui_assistant)


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
