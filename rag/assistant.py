"""The one entry point the CLI, the chat UI and the evaluation use.

``Assistant(corpus, index_dir).ask(question, history)`` updates the index when the corpus changed
(at start, and again at each ``refresh``), loads the model once, and answers with cited sentences
or abstains.

The loaded ``Index`` is never changed in place: ``refresh`` builds and loads a new one and swaps it
in with one assignment, and every question reads ``self.index`` once and uses only that snapshot,
so a question that started before a swap finishes on the index it started with.

A question goes: retrieval (``rank``) -> passages -> optional ``Reranker`` -> ``Answerer`` -> Answer.
The answerer and the reranker are parameters, so another way of reading the passages plugs in
without changing this file, the CLI, the UI or the evaluation.
"""
from __future__ import annotations

import logging
import threading
import time
import unicodedata
from collections.abc import Collection, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from .answerer import AnswerContext, Answerer
from .config import ANSWERERS, DEFAULT_CORPUS, IndexSettings, SearchSettings, default_index_dir
from .corpus import valid_utf8
from .embedder import Embedder, load_embedder
from .sentence_vectors import lend_model
from .errors import IndexStoreError, QuestionError
from .extractive import ExtractiveAnswerer
from .index import BuildReport, Index, current_build, load_index, update_index
from .language import is_english, is_follow_up
from .records import Answer, Passage
from .rerank import Reranker, rerank
from .retrieve import rank
from .stores import StoreLocation

log = logging.getLogger(__name__)


#: Letters that print as nothing (Hangul fillers, the blank Braille pattern): a question of them
#: alone is blank, like one of zero-width characters.
BLANK_LETTERS = frozenset({"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800"})


def previous_questions(history: Sequence) -> list[str]:
    """The user's earlier questions from a history given as strings, (user, bot) pairs or
    Gradio-style ``{"role", "content"}`` messages."""
    questions = []
    for turn in history:
        if isinstance(turn, str):
            questions.append(turn)
        elif isinstance(turn, dict):
            if turn.get("role") == "user" and isinstance(turn.get("content"), str):
                questions.append(turn["content"])
        elif isinstance(turn, (list, tuple)) and turn and isinstance(turn[0], str):
            questions.append(turn[0])
    return [q for q in questions if q.strip()]


def retrieval_query(question: str, history: Sequence) -> str:
    """The text used to search: the question, preceded by the previous question when it is a
    follow-up ("Et en 2016 ?"); a self-contained question is searched on its own."""
    earlier = previous_questions(history)
    if earlier and is_follow_up(question):
        return f"{earlier[-1]} {question}"
    return question


def make_answerer(search: SearchSettings) -> Answerer:
    """The answerer ``search.answerer`` names, with its rules."""
    if search.answerer == "extractive":
        return ExtractiveAnswerer()
    if search.answerer == "reader":
        from .reader.answerer import ReaderAnswerer, ReaderRules
        return ReaderAnswerer(rules=ReaderRules(answer_type=search.reader_type_rule,
                                                names=search.reader_names_rule))
    if search.answerer == "llm":  # checks its server now: unreachable = an error at startup
        from .llm.answerer import LlmAnswerer
        return LlmAnswerer(search.llm, fallback=make_answerer(replace(search, answerer="reader")))
    raise ValueError(f"unknown answerer {search.answerer!r}; choose one of {', '.join(ANSWERERS)}")


class Assistant:
    """Answers questions about one corpus folder."""

    def __init__(self, corpus: Path | str = DEFAULT_CORPUS, index_dir: Path | str | None = None,
                 index_settings: IndexSettings = IndexSettings(),
                 search: SearchSettings = SearchSettings(), update: bool = True,
                 progress: bool = False, embedder: Embedder | None = None,
                 answerer: Answerer | None = None, reranker: Reranker | None = None,
                 store: StoreLocation | None = None) -> None:
        """``embedder`` replaces the model named by ``index_settings.model`` (tests use a small
        deterministic one); ``answerer`` defaults to the one ``search.answerer`` names (the
        reader); ``reranker`` is off unless given; ``store`` says where the vectors are (None:
        where the index says, rag/stores.py)."""
        self.corpus = Path(corpus)
        self.index_dir = Path(index_dir) if index_dir else default_index_dir(self.corpus)
        self.index_settings = index_settings
        self.search = search
        self.reranker = reranker
        self._embedder: Embedder | None = embedder
        self._lock = threading.Lock()
        self.store = store
        self.report: BuildReport | None = None
        if update:
            self.report = update_index(self.corpus, self.index_dir, index_settings,
                                       self._model, progress=progress, store=store)
        index = load_index(self.index_dir, store)
        if index is None:
            raise IndexStoreError(f"no index at {self.index_dir}; run `rag index` first")
        lend_model(index, self._model)  # an index without sentence vectors embeds per question
        self.index: Index = index
        # After the index: a corpus or index problem is reported before a reader problem.
        self.answerer: Answerer = answerer or make_answerer(search)
        self._refresh_lock = threading.Lock()

    def _model(self) -> Embedder:
        """The embedding model, loaded on first need and never twice."""
        with self._lock:
            if self._embedder is None:
                self._embedder = load_embedder(self.index_settings.model,
                                                self.index_settings.precision)
            return self._embedder

    @property
    def embedder(self) -> Embedder:
        return self._model()

    def status(self, index: Index | None = None) -> dict:
        """What the index (``index``, or the current one) holds, for the UI's status line.

        ``folder`` is the corpus folder's name alone: what a page may show without telling
        visitors where the documents sit on the server (``corpus`` is the path as given)."""
        manifest = (self.index if index is None else index).manifest
        return {"files": manifest["counts"]["files"], "chunks": manifest["counts"]["chunks"],
                "model": manifest["model"]["name"], "built": manifest["created"],
                "corpus": str(self.corpus), "folder": self.corpus.resolve().name}

    def refresh(self) -> BuildReport | None:
        """Bring the index up to date with the corpus folder and swap the new one in.

        Returns the build report when another index is now in use (built here, or by another
        process writing the same index folder), None when nothing changed. Raises what
        ``update_index`` or ``load_index`` raise, and then leaves the current index in use: a
        failed update must not take answering down. Questions in flight keep their snapshot.
        """
        with self._refresh_lock:  # one refresh at a time; questions never wait for it
            report = update_index(self.corpus, self.index_dir, self.index_settings, self._model,
                                  store=self.store)
            current = current_build(self.index_dir)
            if current is not None and current.name == self.index.build:
                return None  # ``CURRENT`` still names the build in use
            index = load_index(self.index_dir, self.store)
            if index is None:
                raise IndexStoreError(f"no index at {self.index_dir} any more")
            lend_model(index, self._model)
            self.index, self.report = index, report  # the swap
            return report

    def clean_question(self, question: str) -> str:
        """The question as the model should read it, or QuestionError saying why it cannot be.

        Refused: anything but text (the Python API takes any object), text holding bytes that were
        not UTF-8 (a shell passes them on as lone surrogates, which no tokenizer or JSON output
        can carry), and a question left blank once control characters (tabs, line breaks, escape
        codes) become spaces and invisible ones (zero-width spaces and joiners, byte order marks,
        direction marks) are removed. White space is collapsed, and a long question is cut to what
        the model reads.
        """
        if not isinstance(question, str):
            raise QuestionError(f"the question must be text, not {type(question).__name__}")
        if not valid_utf8(question):
            raise QuestionError("the question holds bytes that are not valid UTF-8; retype it "
                                "(or set the terminal to UTF-8)")
        visible = []
        for char in question:
            category = unicodedata.category(char)
            if category == "Cc":
                visible.append(" ")
            elif category not in ("Cf", "Co") and char not in BLANK_LETTERS:
                visible.append(char)
        question = " ".join("".join(visible).split())
        if not question:
            raise QuestionError("the question is empty; type a question")
        limit = self.search.max_question_chars
        if len(question) > limit:
            log.warning("question cut from %d to %d characters (the model reads no more)",
                        len(question), limit)
            question = question[:limit]
        return question

    def retrieve(self, question: str, history: Sequence = (), retriever: str | None = None,
                 exclude_sources: Collection[str] = (),
                 query_vector: np.ndarray | None = None,
                 index: Index | None = None) -> tuple[AnswerContext, list[Passage]]:
        """The passages for a cleaned ``question`` (reranked when a reranker is set) and what an
        answerer needs besides them. ``query_vector`` skips embedding (training embeds many
        questions in one batch). ``index`` is the snapshot to search (default: the current
        index, read once here); the context carries it, so the answerer reads the same one."""
        index = self.index if index is None else index
        settings = replace(self.search, retriever=retriever) if retriever else self.search
        query = retrieval_query(question, history)
        if query_vector is None:  # the answerers always need it, whatever the retriever
            query_vector = self.embedder.encode_queries([query])[0]
        ranking = rank(index, query, query_vector, settings.retriever, settings)
        if exclude_sources:
            hidden = {exclude_sources} if isinstance(exclude_sources, str) else set(exclude_sources)
            ranking = ranking.without(index, hidden)
        shown = max(settings.top_k, settings.rerank_depth if self.reranker else 0)
        passages = [self._passage(index, chunk_id, score)
                    for chunk_id, score in zip(ranking.ids[:shown], ranking.scores)]
        if self.reranker is not None:
            passages = rerank(self.reranker, query, passages, settings.rerank_depth)
        context = AnswerContext(index, query, query_vector, settings, is_english(question),
                                embed_passages=lambda texts: self.embedder.encode_passages(texts))
        return context, passages[:settings.top_k]

    def ask(self, question: str, history: Sequence = (), retriever: str | None = None,
            exclude_sources: Collection[str] = (), index: Index | None = None) -> Answer:
        """Answer ``question``, using ``history`` (earlier turns) only to understand follow-ups.

        ``exclude_sources`` (file paths relative to the corpus) are left out of the search: the
        evaluation hides the files that answer a question to check the assistant then abstains.
        ``index`` is the snapshot to answer from (default: the current index, read once here);
        the chat passes the one it also uses to link the citations to their file versions.
        """
        answer = None
        for answer in self.ask_stream(question, history, retriever, exclude_sources, index):
            pass
        return answer

    def ask_stream(self, question: str, history: Sequence = (), retriever: str | None = None,
                   exclude_sources: Collection[str] = (),
                   index: Index | None = None) -> Iterator[str | Answer]:
        """``ask``, for a chat that shows a generated answer as it is written: yields the text so
        far (str, unverified) while an answerer that streams (``stream(question, passages,
        context)``, the ``llm`` one) writes, then the checked ``Answer`` last. Other answerers
        yield the Answer alone."""
        started = time.perf_counter()
        index = self.index if index is None else index  # one snapshot, whatever refresh does
        question = self.clean_question(question)
        context, passages = self.retrieve(question, history, retriever, exclude_sources,
                                          index=index)
        stream = getattr(self.answerer, "stream", None)
        if stream is None:
            draft = self.answerer.answer(question, passages, context)
        else:
            for draft in stream(question, passages, context):
                if isinstance(draft, str):
                    yield draft
        elapsed_ms = (time.perf_counter() - started) * 1000
        yield Answer(question, draft.text, draft.abstained, draft.citations, passages,
                     elapsed_ms, draft.support, draft.reason, draft.threshold,
                     draft.answerer or self.search.answerer, draft.verified, draft.note)

    @staticmethod
    def _passage(index: Index, chunk_id: str, score: float) -> Passage:
        chunk = index.chunk(chunk_id)
        page, start_line, end_line = index.on_page(chunk.source, chunk.start, chunk.start_line,
                                                   chunk.end_line)
        return Passage(chunk.id, chunk.source, start_line, end_line, chunk.text, score, page)
