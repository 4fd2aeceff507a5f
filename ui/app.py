"""The chat UI: a Gradio app mounted in a FastAPI app that also serves the source view.

``serve(assistant, host, port)`` is what ``rag chat`` calls; ``build_app(assistant)`` returns the
FastAPI app so tests can run it in-process. One ``Assistant`` (one model in memory) is built
before the server starts and shared by every visitor; Gradio's queue runs up to ``CONCURRENCY``
questions at once, each in its own worker thread, with no shared mutable state between requests
(the conversation lives in each browser session's ``gr.State``). The assistant's index may be
replaced while the chat runs (``rag.watch``): each question reads it once and answers, links its
citations and reports the status line from that one snapshot.

Routes:
- ``/``: the chat (Gradio).
- ``/source/<file>?v=<version>&lines=12-14#L12``: an indexed file with the cited lines lit
  (``ui.source_view``).
- Gradio API ``/ask``: ``question`` and optional ``history`` -> the answer JSON, each citation with
  the ``url`` of its source view; ``/status``: what the index in use holds.
- Gradio's routes that take files or input the chat never uses are closed (``ui.guard``).
"""
from __future__ import annotations

from rag.config import set_offline_environment

# No network here, and no telemetry wanted anywhere: before gradio is imported.
set_offline_environment()

import html  # noqa: E402
import ipaddress  # noqa: E402
import logging  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402

import gradio as gr  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI  # noqa: E402

from rag.assistant import Assistant  # noqa: E402
from rag.errors import QuestionError  # noqa: E402
from rag.index import Index  # noqa: E402

from .api_input import InputError, is_blank, parse_history, question_text  # noqa: E402
from .guard import ClosedRoutes  # noqa: E402
from .render import (answer_html, notice_html, question_html, sources_html,  # noqa: E402
                     status_html, with_urls)
from .source_view import source_router  # noqa: E402

log = logging.getLogger(__name__)

#: Questions handled at the same time. Embedding a question holds the model's lock and both cores;
#: a few slots let other questions' retrieval, answer choice and HTML run meanwhile instead of
#: queueing behind it (measured under load in benchmarks, not a correctness setting).
CONCURRENCY = 4
#: Every event that runs the model shares one concurrency group (the chat and the API).
MODEL_GROUP = "assistant"

TITLE = "Questions sur les documents"
SUBTITLE = ("Posez une question en français ou en anglais : la réponse cite mot pour mot les "
            "phrases des documents, et chaque [n] mène aux lignes citées.")

#: Shown in the empty chat; each is answered from the bundled seeds (the default corpus).
EXAMPLES = [
    "Quel pourcentage du PIB Trump exige-t-il ?",
    "Où Mark Rutte a-t-il rencontré Donald Trump ?",
    "Combien de soldats nord-coréens ont été envoyés dans la région de Koursk ?",
    "Who is the Secretary General of NATO?",
]

EMPTY_MESSAGE = "Question vide : tapez une question."
INVALID_MESSAGE = ("Question illisible : elle contient des caractères qui ne sont pas du texte "
                   "Unicode valide.")
ERROR_MESSAGE = ("Erreur interne : la question n'a pas pu être traitée "
                 "(détails dans le journal du serveur).")

CSS = """
.app-header { gap: 0 !important; }
#status .html-container { padding-top: 0 !important; }
.app-header h1 { margin: 0 0 .2rem; font-size: 1.6rem; }
.app-header p { margin: 0; color: var(--body-text-color-subdued); }
.status-line { font-size: .85rem; color: var(--body-text-color-subdued); margin-top: .4rem; }
a.cite { font-weight: 600; text-decoration: none; padding: 0 .1rem;
         color: var(--color-accent) !important; }
a.cite:hover { text-decoration: underline; }
.notice { color: #b45309; }
.streaming { color: var(--body-text-color-subdued); white-space: pre-wrap; }
.answer-by { font-size: .8rem; color: var(--body-text-color-subdued); margin-top: .3rem; }
.sources-panel { max-height: 640px; overflow-y: auto; }
.sources-empty, .sources-sub { color: var(--body-text-color-subdued); font-size: .9rem; }
.sources-abstained { font-weight: 600; margin-bottom: .5rem; }
.source-card { border: 1px solid var(--border-color-primary); border-radius: 8px;
               padding: .6rem .75rem; margin-bottom: .6rem;
               background: var(--background-fill-primary); }
.source-head { display: flex; flex-wrap: wrap; gap: .5rem; align-items: baseline;
               font-size: .9rem; margin-bottom: .35rem; }
.source-n { font-weight: 700; }
.source-link { font-weight: 600; word-break: break-all; }
.source-lines, .source-score { color: var(--body-text-color-subdued); }
.source-score { margin-left: auto; font-variant-numeric: tabular-nums; }
.source-text { white-space: pre-wrap; font-size: .9rem; line-height: 1.5; }
.source-text mark { background: #fde68a; color: inherit; padding: 0 .1rem; border-radius: 2px; }
"""


# --- conversation state -------------------------------------------------------------------
# A conversation is a list of turns: {"question": str, "answer": dict | None,
# "notice": str | None, "pending": bool}. The answer dict is the API JSON (with urls), so the chat
# can be re-rendered from it and the raw texts are at hand for the follow-up history.


def history_for(turns: list[dict]) -> list[dict]:
    """Earlier turns as the ``{"role", "content"}`` messages ``Assistant.ask`` reads."""
    messages = []
    for turn in turns:
        if turn["answer"] is not None:
            messages.append({"role": "user", "content": turn["question"]})
            messages.append({"role": "assistant", "content": turn["answer"]["answer"]})
    return messages


def chat_messages(turns: list[dict]) -> list[dict]:
    """What the Chatbot shows: escaped questions, answers with linked markers, notices, and the
    text a model is still writing (``streaming``), marked as not checked yet."""
    messages = []
    for turn in turns:
        if turn["question"].strip():
            messages.append({"role": "user", "content": question_html(turn["question"])})
        if turn["answer"] is not None:
            messages.append({"role": "assistant", "content": answered_html(turn["answer"])})
        elif turn["notice"]:
            messages.append({"role": "assistant", "content": notice_html(turn["notice"])})
        elif turn.get("streaming") is not None:
            messages.append({"role": "assistant", "content": streaming_html(turn["streaming"])})
    return messages


#: Shown under the text a model is writing: it is replaced by the checked answer once complete.
STREAMING_NOTE = "Le modèle rédige… (texte non vérifié : seules les phrases confirmées par leur source resteront)"
#: Shown under an answer the model wrote, once every claim left was checked against its source.
LLM_NOTE = "Rédigée par le modèle ; chaque phrase a été vérifiée dans le passage cité."


def streaming_html(text: str) -> str:
    """The model's text as it arrives: escaped, markers left as text (nothing is checked yet)."""
    return (f'<p class="streaming">{html.escape(text)}▌</p>'
            f'<p class="answer-by">{html.escape(STREAMING_NOTE)}</p>')


def answered_html(answer: dict) -> str:
    """An answer with its linked markers; for the generative answerer, who wrote it, and why the
    offline reader answered instead when it did (server down, nothing supported...)."""
    body = answer_html(answer)
    if answer.get("note"):
        return notice_html(answer["note"]) + body
    if answer.get("answerer") == "llm" and not answer["abstained"]:
        return body + f'<p class="answer-by">{html.escape(LLM_NOTE)}</p>'
    return body


def last_answer(turns: list[dict]) -> dict | None:
    """The most recent answer, whose sources the side panel shows."""
    return next((t["answer"] for t in reversed(turns) if t["answer"] is not None), None)


def refusal(question: Any, error: Exception) -> str:
    """The chat's notice for a question it will not ask: blank, not text, or refused."""
    if isinstance(error, InputError):
        return INVALID_MESSAGE
    if isinstance(question, str) and is_blank(question):
        return EMPTY_MESSAGE
    return f"Question refusée : {error}"


# --- app ----------------------------------------------------------------------------------


class Chat:
    """The event handlers, bound to the one shared assistant.

    Handlers keep no state of their own: the conversation comes in and goes out as ``turns``
    (a ``gr.State``, one per browser session), so concurrent visitors never share anything but
    the read-only index and model.
    """

    def __init__(self, assistant: Assistant) -> None:
        self.assistant = assistant
        #: Per browser session, the number of its current conversation. "Nouvelle conversation"
        #: bumps it; an answer that arrives for an earlier conversation is dropped instead of
        #: bringing the cleared conversation back.
        self._conversation: dict[str, int] = {}

    @staticmethod
    def _session(request: gr.Request | None) -> str:
        return getattr(request, "session_hash", None) or ""

    def _current(self, request: gr.Request | None) -> int:
        return self._conversation.get(self._session(request), 0)

    def new_conversation(self, request: gr.Request = None) -> tuple:
        """Empty the chat and the sources; answers still on their way are dropped."""
        self._conversation[self._session(request)] = self._current(request) + 1
        return [], [], sources_html(None)

    def answer(self, question: str, history: list) -> tuple[dict, Index]:
        """Ask and return the API JSON and the index that answered; QuestionError passes
        through, so callers can word it.

        One snapshot of the index serves the whole question: the answer, the versions its
        links carry, and the status line shown with it, even if the index is swapped meanwhile.
        """
        index = self.assistant.index
        answer = self.assistant.ask(question, history=history, index=index)
        return self.answer_json(answer, index), index

    def answer_stream(self, question: str, history: list) -> Iterator[str | tuple[dict, Index]]:
        """``answer``, with the text a model writes yielded (str) as it arrives, before the
        checked answer and its index."""
        index = self.assistant.index
        for item in self.assistant.ask_stream(question, history=history, index=index):
            yield item if isinstance(item, str) else (self.answer_json(item, index), index)

    @staticmethod
    def answer_json(answer, index: Index) -> dict:
        """The API JSON of ``answer``, its links pinned to the file versions of ``index``."""
        files = index.manifest["files"]
        versions = {item.source: files[item.source]["hash"]
                    for item in (*answer.citations, *answer.passages)}
        return with_urls(answer.to_json(), versions)

    def status_line(self, index: Index | None = None) -> str:
        """The status line's HTML for ``index`` (default: the index in use)."""
        return status_html(self.assistant.status(index))

    def status(self) -> dict:
        """What the index in use holds: files, chunks, model, build time and the corpus folder's
        name (never its path on the server)."""
        return {key: value for key, value in self.assistant.status().items() if key != "corpus"}

    def add_question(self, question: str, turns: list[dict], request: gr.Request = None) -> tuple:
        """Show the question at once (answering takes a moment) and clear the box.

        A blank question (or one that is not valid text) is refused here with a notice, without
        reaching the queue; it is not echoed, since it may not even be encodable.
        """
        turns = list(turns or [])
        try:
            self.assistant.clean_question(question_text(question))
            turns.append({"question": question, "answer": None, "notice": None, "pending": True,
                          "conversation": self._current(request)})
        except (InputError, QuestionError) as exc:
            turns.append({"question": "", "answer": None, "notice": refusal(question, exc),
                          "pending": False})
        return chat_messages(turns), turns, ""

    def answer_last(self, turns: list[dict], request: gr.Request = None) -> tuple:
        """Answer the pending question, with the earlier turns as history for follow-ups: the
        last update ``answer_streaming`` yields."""
        result = None
        for result in self.answer_streaming(turns, request):
            pass
        return result

    def answer_streaming(self, turns: list[dict], request: gr.Request = None) -> Iterator[tuple]:
        """Answer the pending question; while a model writes, yield the chat with its text so
        far (the other outputs unchanged), then the checked answer with its links and sources.

        Changes nothing when there is nothing to answer (a refused blank question) or when the
        visitor started a new conversation meanwhile: writing these turns back would undo it.
        """
        turns = list(turns or [])
        skip = (gr.skip(), gr.skip(), gr.skip(), gr.skip())
        if not turns or not turns[-1]["pending"]:
            yield skip
            return
        turn = dict(turns[-1], pending=False)
        index = None
        try:
            for item in self.answer_stream(turn["question"], history_for(turns[:-1])):
                if not isinstance(item, str):
                    turn["answer"], index = item
                elif turn.get("conversation") == self._current(request):
                    writing = dict(turn, streaming=item)
                    yield chat_messages(turns[:-1] + [writing]), gr.skip(), gr.skip(), gr.skip()
        except QuestionError as exc:
            turn["notice"] = f"Question refusée : {exc}"
        except Exception:  # one bad question must not take the chat down
            log.exception("error while answering %r", turn["question"])
            turn["notice"] = ERROR_MESSAGE
        if turn.get("conversation") != self._current(request):
            yield skip
            return
        turns[-1] = turn
        yield (chat_messages(turns), turns, sources_html(last_answer(turns)),
               self.status_line(index))

    def ask(self, question: str, history: list | str | None = None) -> dict:
        """Answer `question` with cited sentences from the corpus.

        `history` (optional): the earlier turns, as a list of {"role", "content"} messages or of
        strings (or the same as a JSON string), so that follow-up questions are understood.
        Returns the answer JSON; each citation has the `url` of its source view on this server.
        """
        try:
            return self.answer(question_text(question), parse_history(history))[0]
        except (InputError, QuestionError) as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        except Exception:
            log.exception("error while answering %r", question)
            raise gr.Error("internal error while answering; see the server log",
                           print_exception=False) from None


def example_text(evt: gr.SelectData) -> str:
    """The text of the example the visitor clicked."""
    return evt.value["text"]


def build_blocks(assistant: Assistant) -> gr.Blocks:
    """The Gradio UI and the ``/ask`` API endpoint, bound to one shared assistant."""
    chat = Chat(assistant)
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        with gr.Column(elem_classes="app-header"):
            gr.HTML(f"<h1>{TITLE}</h1><p>{SUBTITLE}</p>", js_on_load=None)
            # Filled at each page load and after each answer: the index may change while the
            # chat runs, and a page kept open must not go on showing the one it was opened with.
            status = gr.HTML(chat.status_line(), js_on_load=None, elem_id="status")
        turns = gr.State([])
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(
                    label="Conversation", elem_id="chat", height=540,
                    # Messages are our own escaped HTML: no Markdown, no LaTeX, sanitized anyway.
                    render_markdown=False, sanitize_html=True, allow_tags=False,
                    latex_delimiters=[], buttons=["copy", "copy_all"], feedback_options=None,
                    examples=[{"text": q} for q in EXAMPLES],
                    placeholder="**Exemples** — cliquez pour poser la question :",
                )
                question = gr.Textbox(placeholder="Posez une question sur les documents…",
                                      show_label=False, elem_id="question", submit_btn="Envoyer",
                                      autofocus=True, max_lines=4)
                clear = gr.Button("Nouvelle conversation", size="sm", variant="secondary")
            with gr.Column(scale=2):
                gr.Markdown("### Sources")
                sources = gr.HTML(sources_html(None), js_on_load=None, elem_id="sources",
                                  elem_classes="sources-panel")

        # Two steps: the question shows at once (not queued), then the answer (queued, shares
        # the model's concurrency group with the API).
        shown = dict(fn=chat.add_question, inputs=[question, turns],
                     outputs=[chatbot, turns, question], queue=False, api_visibility="private")
        answered = dict(fn=chat.answer_streaming, inputs=[turns],
                        outputs=[chatbot, turns, sources, status],
                        concurrency_id=MODEL_GROUP, api_visibility="private")
        question.submit(**shown).then(**answered)
        (chatbot.example_select(example_text, None, question, queue=False,
                                api_visibility="private")
         .then(**shown).then(**answered))
        for cleared in (clear.click, chatbot.clear):  # the button and the chat's bin icon
            cleared(chat.new_conversation, None, [chatbot, turns, sources], queue=False,
                    api_visibility="private")
        demo.load(chat.status_line, None, status, queue=False, api_visibility="private")
        gr.api(chat.ask, api_name="ask", concurrency_id=MODEL_GROUP)
        gr.api(chat.status, api_name="status", queue=False)
    return demo


def build_app(assistant: Assistant) -> FastAPI:
    """The whole server: ``/source/...`` first, then the Gradio app on every other path."""
    app = FastAPI(title=TITLE, docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(source_router(assistant.corpus, assistant.index_settings.min_words,
                                     lambda: assistant.index))
    demo = build_blocks(assistant).queue(default_concurrency_limit=CONCURRENCY)
    app = gr.mount_gradio_app(
        app, demo, path="/", theme=gr.themes.Soft(primary_hue="blue"), css=CSS,
        footer_links=["api", "settings"], run_history=False, ssr_mode=False, mcp_server=False,
        show_error=False, max_file_size=0, enable_monitoring=False)
    app.add_middleware(ClosedRoutes)
    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, bound before anything is printed, so a busy port fails clearly."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"rag: error: cannot listen on {host}:{port} ({exc.strerror}); "
                         f"is another chat running? pick another port with --port") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def is_local(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (a loopback address or name)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback
                                   for a in addresses)


def exposure_warning(host: str) -> str | None:
    """The one-line warning for an address other machines can reach, else None."""
    if is_local(host):
        return None
    return (f"rag: warning: listening on {host}: the chat and the indexed documents are "
            "reachable from the network, without a password; use --host 127.0.0.1 to keep "
            "them local")


def serve(assistant: Assistant, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Serve the chat until interrupted; prints the URL once the port is taken."""
    app = build_app(assistant)
    sock = bind(host, port)
    warning = exposure_warning(host)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    shown = f"[{host}]" if ":" in host else host
    print(f"Chat ready at http://{shown}:{sock.getsockname()[1]}/", flush=True)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
    uvicorn.Server(config).run(sockets=[sock])
