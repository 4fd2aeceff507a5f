"""The rule-based extractive answerer: quote the sentences most similar to the question.

Sentences of the top passages are scored with what was prepared at index time (one vector per
sentence and per chunk) plus cheap signals computed now (weights in ``SearchSettings``):

* the cosine between the question and the sentence (the model's judgement);
* the cosine of the passage around it (a short sentence often needs its paragraph);
* the share of the question's content words that the sentence contains (names, dates, figures);
* a small bonus when the sentence holds the kind of thing asked for (``rag/answer_types.py``).

A second or third sentence is added only when it scores nearly as well and comes from the same
file as the first, so facts from different articles are never merged into one answer. When no
sentence holds what is asked, the best one scores below the abstention threshold, or the passage
around it never names what the question names, it abstains and says why.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .answer_types import expected_type, has_expected_type, names_missing
from .answerer import (AnswerContext, Draft, abstention, cite, missing_names_reason,
                       no_kind_reason, quoted_answer, too_far_reason)
from .config import SearchSettings
from .index import Index
from .lexical import tokenize
from .records import Passage, Sentence


@dataclass(frozen=True)
class ScoredSentence:
    sentence: Sentence
    score: float
    typed: bool  # holds the kind of thing the question asks for (see has_expected_type)


def abstain_threshold(settings: SearchSettings, english: bool) -> float:
    """The support an answer needs; lower for English questions over French text, whose
    similarities run systematically lower."""
    return settings.abstain_threshold - (settings.cross_lingual_offset if english else 0.0)


def context_text(index: Index, chunk_id: str) -> str:
    """The passage of a sentence with the passages just before and after it in the same file:
    what a reader of the citation would see."""
    return "\n".join(chunk.text for chunk in index.neighbours(chunk_id))


def score_sentences(index: Index, question: str, query_vector: np.ndarray,
                    chunk_ids: list[str], settings: SearchSettings) -> list[ScoredSentence]:
    """Every sentence of ``chunk_ids`` with its support score, best first."""
    sentences = index.sentences_of(chunk_ids)
    if not sentences:
        return []
    query_vector = query_vector.astype(np.float32)
    cosines = index.sentence_vectors.get([s.id for s in sentences]) @ query_vector
    around = index.chunk_vectors.get([s.chunk_id for s in sentences]) @ query_vector
    question_terms = set(tokenize(question))
    kind = expected_type(question)
    scored = []
    for sentence, cosine, context in zip(sentences, cosines.tolist(), around.tolist()):
        text = index.sentence_text(sentence)
        overlap = (len(question_terms & set(tokenize(text))) / len(question_terms)
                   if question_terms else 0.0)
        typed = has_expected_type(kind, text, question)
        score = ((1 - settings.context_weight) * cosine + settings.context_weight * context
                 + settings.lexical_weight * overlap
                 + (settings.type_bonus if kind and typed else 0.0))
        scored.append(ScoredSentence(sentence, score, typed))
    # Equal scores: the sentence that comes first in the corpus wins, whatever the retrieval order.
    scored.sort(key=lambda s: (-s.score, reading_order(index, s)))
    return scored


def reading_order(index: Index, scored: ScoredSentence) -> tuple[int, int]:
    return index.position(scored.sentence.chunk_id), scored.sentence.start


def select_sentences(index: Index, scored: list[ScoredSentence],
                     settings: SearchSettings) -> list[ScoredSentence]:
    """The best sentence, plus close runners-up from the same file, best first: the sentence
    read first is the one that scored best (and the one ``top_citation_contains`` judges)."""
    if not scored:
        return []
    best = scored[0]
    source = index.chunk(best.sentence.chunk_id).source
    chosen = [best]
    for candidate in scored[1:]:
        if (len(chosen) >= settings.max_sentences
                or candidate.score < best.score - settings.extra_sentence_margin):
            break
        if index.chunk(candidate.sentence.chunk_id).source == source:
            chosen.append(candidate)
    return chosen


class ExtractiveAnswerer:
    """Quote the best-scored sentences of the top passages, or abstain (see the module doc)."""

    def answer(self, question: str, passages: list[Passage], context: AnswerContext) -> Draft:
        """Abstain when no close sentence holds what is asked, when the best one scores below
        the threshold, or when a French question names something that the passage around that
        sentence (the one before and after included) never mentions: the article may name it
        elsewhere, but not where the answer is."""
        index, settings, english = context.index, context.settings, context.english
        candidates = [p.chunk_id for p in passages[:settings.candidate_passages]]
        scored = score_sentences(index, context.query, context.query_vector, candidates, settings)
        threshold = abstain_threshold(settings, english)
        typed = [s for s in scored if s.typed]
        if not typed:
            support = scored[0].score - 1.0 if scored else -1.0
            kind = expected_type(context.query) if scored else ""
            return abstention(english, no_kind_reason(kind, context.query, english), support,
                              threshold)
        support = typed[0].score
        if support < threshold:
            return abstention(english, too_far_reason(support, threshold, english), support,
                              threshold)
        missing = ([] if english else
                   names_missing(context.query, context_text(index, typed[0].sentence.chunk_id)))
        if missing:
            return abstention(english, missing_names_reason(missing), support, threshold)
        chosen = select_sentences(index, typed, settings)
        citations = [cite(index, s.sentence, n, s.score) for n, s in enumerate(chosen, start=1)]
        return Draft(quoted_answer(citations), citations, False, support, threshold)
