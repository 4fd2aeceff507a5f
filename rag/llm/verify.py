"""The check every generated claim goes through before it is shown.

A claim "X [n]" is kept only when a sentence of passage n (one that was sent to the model) says
it. A sentence supports a claim when

* every number of the claim (figures, years, amounts: "10 000", "5 %", "2025") is in the sentence,
* the claim's names (runs of capitalised words) appear in the passage, unless the question and
  the passage differ in language (names are spelt differently across languages); numbers and
  names the question gives are exempt (the claim restating the question asserts nothing new), and
* either most of the claim's content words (French/English stems, stop words left out) are in the
  sentence, and most of those it adds to the question's (what it asserts beyond restating the
  question) too (``LlmSettings.support_overlap``), or the e5 cosine of claim and sentence (both
  embedded as passages, like every indexed sentence) reaches ``support_cosine``.

The numbers and names tests catch the invented detail a fluent small model adds; the word shares
catch a near-copy, and the second one a claim that restates the question around a wrong answer;
the cosine lets a faithful paraphrase (or an English answer over French text) through. The citation then points to that sentence's own lines, like the reader's.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..answer_types import fold, names_in
from ..config import LlmSettings
from ..index import Index
from ..language import is_english
from ..lexical import tokenize
from ..records import Passage, Sentence
from .prompt import Claim

_NUMBER = re.compile(r"\d+(?:[ \u00a0\u202f.,]\d+)*")


def numbers(text: str) -> set[str]:
    """The numbers of a text, spelt one way: "10 000", "10,000" and "10000" are the same."""
    return {re.sub(r"\D", "", n) for n in _NUMBER.findall(text)}


@dataclass(frozen=True)
class Support:
    """How well one sentence supports one claim."""

    sentence: Sentence | None
    supported: bool
    overlap: float  # share of the claim's content words in the sentence
    cosine: float  # e5 cosine of claim and sentence
    why: str  # what failed, empty when supported

    @property
    def score(self) -> float:
        return max(self.overlap, self.cosine)


@dataclass(frozen=True)
class Checked:
    """A claim after the check: the sentence that supports it (for the citation) or why not."""

    claim: Claim
    passage: int | None  # the cited passage whose sentence supports it
    support: Support | None

    @property
    def supported(self) -> bool:
        return self.support is not None and self.support.supported


def sentence_support(claim: str, claim_vector: np.ndarray | None, sentence_text: str,
                     sentence_vector: np.ndarray | None, passage_text: str, check_names: bool,
                     settings: LlmSettings, sentence: Sentence | None = None,
                     question: str = "") -> Support:
    """The check of one claim against one sentence of its passage (see the module doc)."""
    terms = set(tokenize(claim))
    found = set(tokenize(sentence_text))
    overlap = len(terms & found) / len(terms) if terms else 0.0
    added = terms - set(tokenize(question))
    if added and overlap:  # what the claim says beyond the question must be there too
        overlap = min(overlap, len(added & found) / len(added))
    cosine = (float(claim_vector @ sentence_vector)
              if claim_vector is not None and sentence_vector is not None else 0.0)
    # Numbers and names the question itself gives are the claim restating it, not asserting.
    missing = sorted(numbers(claim) - numbers(sentence_text) - numbers(question))
    if missing:
        return Support(sentence, False, overlap, cosine, f"the sentence does not hold {missing[0]}")
    if check_names:
        folded, asked = fold(passage_text), fold(question)
        absent = [" ".join(n) for n in names_in(claim)
                  if fold(n[-1]) not in folded and fold(n[-1]) not in asked]
        if absent:
            return Support(sentence, False, overlap, cosine,
                           f"the passage does not name {absent[0]}")
    if overlap >= settings.support_overlap or cosine >= settings.support_cosine:
        return Support(sentence, True, overlap, cosine, "")
    return Support(sentence, False, overlap, cosine,
                   f"no sentence says it (words {overlap:.2f}, similarity {cosine:.2f})")


def check_claims(found: list[Claim], passages: list[Passage], index: Index,
                 claim_vectors: np.ndarray | None, question: str,
                 settings: LlmSettings) -> list[Checked]:
    """Each claim checked against the sentences of the passages it cites (numbered from 1 in the
    order they were sent); the best supporting sentence wins, the first cited passage on ties."""
    english = is_english(question)
    checked = []
    for i, claim in enumerate(found):
        vector = claim_vectors[i] if claim_vectors is not None else None
        if not claim.cited:
            checked.append(Checked(claim, None, Support(None, False, 0.0, 0.0,
                                                        "it cites no passage")))
            continue
        best: tuple[int | None, Support] | None = None
        for n in claim.cited:
            if not 1 <= n <= len(passages):
                support = Support(None, False, 0.0, 0.0,
                                  f"it cites [{n}], but only [1]-[{len(passages)}] were sent")
            else:
                support = best_sentence(claim.text, vector, passages[n - 1], index,
                                        english, settings, question)
            rank = (support.supported, support.score)
            if best is None or rank > (best[1].supported, best[1].score):
                best = (n if support.sentence is not None else None, support)
        checked.append(Checked(claim, best[0], best[1]))
    return checked


def best_sentence(claim: str, claim_vector: np.ndarray | None, passage: Passage, index: Index,
                  english: bool, settings: LlmSettings, question: str = "") -> Support:
    """The sentence of ``passage`` that best supports ``claim``."""
    sentences = index.sentences_of([passage.chunk_id])
    if not sentences:
        return Support(None, False, 0.0, 0.0, "its passage holds no sentence")
    vectors = index.sentence_vectors.get([s.id for s in sentences])
    check_names = is_english(passage.text) == english
    best = None
    for sentence, vector in zip(sentences, vectors):
        support = sentence_support(claim, claim_vector, index.sentence_text(sentence), vector,
                                   passage.text, check_names, settings, sentence, question)
        if best is None or (support.supported, support.score) > (best.supported, best.score):
            best = support
    return best
