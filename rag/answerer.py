"""The answerer seam: whatever turns retrieved passages into a cited answer or an abstention.

``Answerer.answer(question, passages, context) -> Draft``. The extractive answerer
(``rag/extractive.py``) quotes sentences chosen by similarity rules; the reader
(``rag/reader/``) quotes the sentences a trained judge picks. A generative answerer would plug in
the same way: ``Draft.text`` is shown as it is, its ``[n]`` markers linked to ``citations``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .config import SearchSettings
from .index import Index
from .answer_types import counted_noun
from .records import Citation, Passage, Sentence


@dataclass(frozen=True)
class AnswerContext:
    """What an answerer may use besides the question and the passages."""

    index: Index
    query: str  # the text searched (the question, with the previous one for a follow-up)
    query_vector: np.ndarray
    settings: SearchSettings
    english: bool
    #: Embeds statements like the index's sentences (e5 "passage:" vectors): the generative
    #: answerer compares each claim it must check with the sentences of its cited passage.
    embed_passages: Callable[[list[str]], np.ndarray] | None = None


@dataclass(frozen=True)
class Draft:
    """An answer before the assistant adds timing and passages.

    ``support`` is the score compared with ``threshold`` to decide abstention (the reader's
    probability, or the extractive score); ``reason`` says why it abstained, in the question's
    language, and is empty when it answers.
    """

    text: str
    citations: list[Citation] = field(default_factory=list)
    abstained: bool = False
    support: float = 0.0
    threshold: float = 0.0
    reason: str = ""
    #: Who wrote the text shown: "llm", or "reader"/"extractive" (also when the generative
    #: answerer fell back on them); empty = the assistant's configured answerer.
    answerer: str = ""
    #: The generative answerer's check of each claim it wrote (rag/llm/verify.py), kept or not.
    verified: list[dict] = field(default_factory=list)
    #: Why the generative answer was not shown (the server failed, no claim was supported), in
    #: the question's language; empty otherwise.
    note: str = ""


class Answerer(Protocol):
    def answer(self, question: str, passages: list[Passage], context: AnswerContext) -> Draft:
        """Answer ``question`` from ``passages`` (best first), or abstain with a reason."""


def cite(index: Index, sentence: Sentence, n: int, score: float) -> Citation:
    """The citation of one sentence: its file, exact lines (within its page, for a file with
    pages) and verbatim text."""
    start_line, end_line = index.sentence_lines(sentence)
    chunk = index.chunk(sentence.chunk_id)
    page, start_line, end_line = index.on_page(chunk.source, sentence.start, start_line, end_line)
    return Citation(n=n, source=chunk.source, start_line=start_line, end_line=end_line,
                    text=index.sentence_text(sentence), score=score, page=page)


def quoted_answer(citations: list[Citation]) -> str:
    """The answer text of an extractive answer: each quoted sentence followed by its marker."""
    return " ".join(f"{c.text} [{c.n}]" for c in citations)


def abstention(english: bool, reason: str, support: float, threshold: float) -> Draft:
    """The draft given instead of an answer: that the documents do not answer, and why."""
    return Draft(abstention_message(english, reason), [], True, support, threshold, reason)


def abstention_message(english: bool, reason: str = "") -> str:
    """The answer given instead of one: that the documents do not answer, and why."""
    if english:
        parts = ("The documents do not answer this question.", reason,
                 "Here are the closest passages.")
    else:
        parts = ("Les documents ne répondent pas à cette question.", reason,
                 "Voici les passages les plus proches.")
    return " ".join(p for p in parts if p)


#: What each kind of question needs, said to the user when no close sentence holds it.
_KIND_NEEDS = {
    "number": ("un nombre", "a number"),
    "money": ("une somme", "a sum of money"),
    "date": ("une date", "a date"),
    "when": ("une date ou un moment", "a date or a time"),
    "name": ("un nom que la question ne donne pas déjà", "a name the question does not give"),
    "speech": ("des propos rapportés", "reported words"),
}




def no_kind_reason(kind: str, question: str, english: bool) -> str:
    if not kind:
        return "No passage was found." if english else "Aucun passage n'a été trouvé."
    french_need, english_need = _KIND_NEEDS[kind]
    if english:
        return f"None of the closest passages holds {english_need}."
    counted = counted_noun(question)
    if kind == "number" and counted:
        french_need = f"un nombre de {counted}"
    return f"Aucun des passages les plus proches ne contient {french_need}."


def decimals(english: bool, *values: float) -> list[str]:
    """Scores as a reason shows them: "0.83" in English, "0,83" in French."""
    return [f"{v:.2f}" if english else f"{v:.2f}".replace(".", ",") for v in values]


def too_far_reason(support: float, threshold: float, english: bool) -> str:
    score, needed = decimals(english, support, threshold)
    if english:
        return f"The closest passage is too far from the question (score {score}, {needed} needed)."
    return (f"Le passage le plus proche est trop éloigné de la question (score {score}, "
            f"{needed} requis).")


def missing_names_reason(missing: list[str]) -> str:
    quoted = ", ".join(f"« {name} »" for name in missing)
    return f"Le passage le plus proche ne mentionne pas {quoted}."
