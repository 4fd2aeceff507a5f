"""The reader answerer: quote the sentence the trained judge ranks first, or abstain.

Every sentence of the top passages gets a probability of answering the question
(``rag/reader/model.py`` over ``rag/reader/features.py``). The answer leads with the most probable
sentence; another joins only when the judge gives it ``extra_threshold`` or more and it comes from
the same file (facts from different articles are never merged). The best probability is the
abstention signal, compared with one threshold chosen on validation data.

A question in another language than its passages (English over the French seeds) goes to the
extractive answerer: the reader learned from same-language pairs only and has nothing to say
there (measured in eval/RESULTS.md). Two hand rules can be switched on top of it
(``ReaderRules``); the ablation there measures what each earns.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..answer_types import expected_type, names_missing
from ..answerer import (AnswerContext, Draft, abstention, cite, decimals, missing_names_reason,
                        no_kind_reason, quoted_answer)
from ..records import Passage, Sentence
from ..extractive import ExtractiveAnswerer
from .features import SCALAR_NAMES, candidates, same_language
from .model import ReaderModel, load_reader

_TYPED = SCALAR_NAMES.index("typed")


@dataclass(frozen=True)
class ReaderRules:
    """Hand rules applied after the judge."""

    #: Only sentences holding the asked kind (a number for "combien", a date for "quand"...) may
    #: answer.
    answer_type: bool = False
    #: A French question's names must appear around the chosen sentence.
    names: bool = False


def low_confidence_reason(support: float, threshold: float, english: bool) -> str:
    score, needed = decimals(english, support, threshold)
    if english:
        return (f"No sentence of the closest passages answers it (confidence {score}, "
                f"{needed} needed).")
    return (f"Aucune phrase des passages les plus proches n'y répond (confiance {score}, "
            f"{needed} requis).")


class ReaderAnswerer:
    """Answers with the trained reader (see the module doc)."""

    def __init__(self, model: ReaderModel | None = None, rules: ReaderRules = ReaderRules()) -> None:
        self.model = model or load_reader()
        self.rules = rules
        self.across_languages = ExtractiveAnswerer()

    @property
    def threshold(self) -> float:
        """The probability below which it abstains."""
        return self.model.threshold

    def judge(self, question: str, passages: list[Passage],
              context: AnswerContext) -> tuple[list[Sentence], np.ndarray, np.ndarray]:
        """Candidate sentences, their probabilities of answering and their features, best
        first."""
        found = candidates(context.index, question, context.query_vector, passages,
                           context.english, context.settings.candidate_passages,
                           products=self.model.uses_products)
        if not found.sentences:
            return [], np.zeros(0, np.float32), found.features
        probabilities = self.model.probabilities(found.features)
        order = np.argsort(-probabilities, kind="stable")
        return [found.sentences[i] for i in order], probabilities[order], found.features[order]

    def answer(self, question: str, passages: list[Passage], context: AnswerContext) -> Draft:
        index, english = context.index, context.english
        if not same_language(english, passages, context.settings.candidate_passages):
            return self.across_languages.answer(question, passages, context)
        threshold = self.model.threshold
        sentences, probabilities, features = self.judge(context.query, passages, context)
        if self.rules.answer_type and len(sentences):
            typed = features[:, _TYPED] > 0.5
            if not typed.any():
                kind = expected_type(context.query)
                return abstention(english, no_kind_reason(kind, context.query, english),
                                  float(probabilities[0]), threshold)
            sentences = [s for s, t in zip(sentences, typed) if t]
            probabilities = probabilities[typed]
        if not sentences:
            return abstention(english, no_kind_reason("", context.query, english), 0.0, threshold)
        support = float(probabilities[0])
        if support < threshold:
            return abstention(english, low_confidence_reason(support, threshold, english),
                              support, threshold)
        best = sentences[0]
        if self.rules.names and not english:
            around = "\n".join(c.text for c in index.neighbours(best.chunk_id))
            missing = names_missing(context.query, around)
            if missing:
                return abstention(english, missing_names_reason(missing), support, threshold)
        source = index.chunk(best.chunk_id).source
        chosen = [(best, support)]
        extra = max(threshold, self.model.extra_threshold)
        for sentence, p in zip(sentences[1:], probabilities[1:].tolist()):
            if len(chosen) >= context.settings.max_sentences or p < extra:
                break
            if index.chunk(sentence.chunk_id).source == source:
                chosen.append((sentence, p))
        citations = [cite(index, s, n, p) for n, (s, p) in enumerate(chosen, start=1)]
        return Draft(quoted_answer(citations), citations, False, support, threshold)
