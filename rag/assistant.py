"""The one entry point the CLI, the chat UI and the evaluation use.

``Assistant(corpus, index_dir).ask(question, history)`` updates the index when the corpus changed
(once, at start), loads the model once, and answers with cited sentences or abstains.

A question goes: retrieval (``rank``) -> passages -> optional ``Reranker`` -> ``Answerer`` -> Answer.
The answerer and the reranker are parameters, so another way of reading the passages plugs in
without changing this file, the CLI, the UI or the evaluation.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from .answerer import AnswerContext, Answerer
from .config import ANSWERERS, DEFAULT_CORPUS, IndexSettings, SearchSettings, default_index_dir
from .embedder import Embedder, load_embedder
from .errors import IndexStoreError, QuestionError
from .extractive import ExtractiveAnswerer
from .index import BuildReport, Index, load_index, update_index
from .language import is_english, is_follow_up
from .records import Answer, Passage
from .rerank import Reranker, rerank
from .retrieve import rank

log = logging.getLogger(__name__)


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
    raise ValueError(f"unknown answerer {search.answerer!r}; choose one of {', '.join(ANSWERERS)}")


class Assistant:
    """Answers questions about one corpus folder."""

    def __init__(self, corpus: Path | str = DEFAULT_CORPUS, index_dir: Path | str | None = None,
                 index_settings: IndexSettings = IndexSettings(),
                 search: SearchSettings = SearchSettings(), update: bool = True,
                 progress: bool = False, embedder: Embedder | None = None,
                 answerer: Answerer | None = None, reranker: Reranker | None = None) -> None:
        """``embedder`` replaces the model named by ``index_settings.model`` (tests use a small
        deterministic one); ``answerer`` defaults to the one ``search.answerer`` names (the
        reader); ``reranker`` is off unless given."""
        self.corpus = Path(corpus)
        self.index_dir = Path(index_dir) if index_dir else default_index_dir(self.corpus)
        self.index_settings = index_settings
        self.search = search
        self.reranker = reranker
        self._embedder: Embedder | None = embedder
        self._lock = threading.Lock()
        self.report: BuildReport | None = None
        if update:
            self.report = update_index(self.corpus, self.index_dir, index_settings,
                                       self._model, progress=progress)
        index = load_index(self.index_dir)
        if index is None:
            raise IndexStoreError(f"no index at {self.index_dir}; run `rag index` first")
        self.index: Index = index
        # After the index: a corpus or index problem is reported before a reader problem.
        self.answerer: Answerer = answerer or make_answerer(search)

    def _model(self) -> Embedder:
        """The embedding model, loaded on first need and never twice."""
        with self._lock:
            if self._embedder is None:
                self._embedder = load_embedder(self.index_settings.model)
            return self._embedder

    @property
    def embedder(self) -> Embedder:
        return self._model()

    def status(self) -> dict:
        """What the index holds, for the UI's status line."""
        manifest = self.index.manifest
        return {"files": manifest["counts"]["files"], "chunks": manifest["counts"]["chunks"],
                "model": manifest["model"]["name"], "built": manifest["created"],
                "corpus": str(self.corpus)}

    def clean_question(self, question: str) -> str:
        """The question stripped and cut to what the model reads; blank ones are refused."""
        if not isinstance(question, str) or not question.strip():
            raise QuestionError("the question is empty; type a question")
        question = " ".join(question.split())
        limit = self.search.max_question_chars
        if len(question) > limit:
            log.warning("question cut from %d to %d characters (the model reads no more)",
                        len(question), limit)
            question = question[:limit]
        return question

    def retrieve(self, question: str, history: Sequence = (), retriever: str | None = None,
                 exclude_sources: Collection[str] = (),
                 query_vector: np.ndarray | None = None) -> tuple[AnswerContext, list[Passage]]:
        """The passages for a cleaned ``question`` (reranked when a reranker is set) and what an
        answerer needs besides them. ``query_vector`` skips embedding (training embeds many
        questions in one batch)."""
        settings = replace(self.search, retriever=retriever) if retriever else self.search
        query = retrieval_query(question, history)
        if query_vector is None:  # the answerers always need it, whatever the retriever
            query_vector = self.embedder.encode_queries([query])[0]
        ranking = rank(self.index, query, query_vector, settings.retriever, settings)
        if exclude_sources:
            hidden = {exclude_sources} if isinstance(exclude_sources, str) else set(exclude_sources)
            ranking = ranking.without(self.index, hidden)
        shown = max(settings.top_k, settings.rerank_depth if self.reranker else 0)
        passages = [self._passage(chunk_id, score)
                    for chunk_id, score in zip(ranking.ids[:shown], ranking.scores)]
        if self.reranker is not None:
            passages = rerank(self.reranker, query, passages, settings.rerank_depth)
        context = AnswerContext(self.index, query, query_vector, settings, is_english(question))
        return context, passages[:settings.top_k]

    def ask(self, question: str, history: Sequence = (), retriever: str | None = None,
            exclude_sources: Collection[str] = ()) -> Answer:
        """Answer ``question``, using ``history`` (earlier turns) only to understand follow-ups.

        ``exclude_sources`` (file paths relative to the corpus) are left out of the search: the
        evaluation hides the files that answer a question to check the assistant then abstains.
        """
        started = time.perf_counter()
        question = self.clean_question(question)
        context, passages = self.retrieve(question, history, retriever, exclude_sources)
        draft = self.answerer.answer(question, passages, context)
        elapsed_ms = (time.perf_counter() - started) * 1000
        return Answer(question, draft.text, draft.abstained, draft.citations, passages,
                      elapsed_ms, draft.support, draft.reason, draft.threshold)

    def _passage(self, chunk_id: str, score: float) -> Passage:
        chunk = self.index.chunk(chunk_id)
        return Passage(chunk.id, chunk.source, chunk.start_line, chunk.end_line, chunk.text, score)
