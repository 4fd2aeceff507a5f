"""What the reader sees of each candidate sentence: features that are free at question time.

Candidates are the sentences of the top passages. Everything below reuses what the index already
holds (one e5 vector per sentence and per chunk, BM25) plus cheap text checks, so judging
40 candidates costs a few milliseconds, not a model pass per sentence.

Per candidate, in this order (``FEATURE_NAMES``):

* model similarity: cosine of the question with the sentence, with its chunk, with the sentences
  just before and after it; each also relative to the best candidate, and the sentence's rank;
* retrieval: the rank of its passage, the passage's fused score relative to the best, its BM25
  score relative to the best candidate passage;
* words: the share of the question's content words found in the sentence, in its passage and
  around it; how many content words the question has;
* answer type: which kind of thing is asked (``rag/answer_types.py``), whether the sentence holds
  it, whether it holds any figure, a quotation; the question's names missing around it;
* shape: the sentence's length, its place in its passage, whether the question is English;
* then the element-wise product of the question and sentence vectors (``dim`` values): it lets
  the classifier learn which directions of agreement matter, which a single cosine cannot.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ..answer_types import expected_type, fold, has_expected_type, names_in
from ..index import Index
from ..lexical import tokenize
from ..records import Passage, Sentence

KINDS = ("", "number", "money", "date", "when", "name", "speech")
_DIGIT = re.compile(r"\d")
_QUOTE = re.compile(r"[«»“”\"]")

SCALAR_NAMES = (
    "cos_sentence", "cos_sentence_gap", "cos_sentence_rank", "cos_chunk", "cos_chunk_gap",
    "cos_previous", "cos_next", "passage_rank", "passage_score_ratio", "bm25_ratio",
    "overlap_sentence", "overlap_chunk", "overlap_context", "question_terms",
    *(f"asks_{k or 'other'}" for k in KINDS), "typed", "has_digit", "has_quote",
    "names_missing", "question_names", "log_chars", "position_in_chunk", "first_in_chunk",
    "english",
)


@dataclass(frozen=True)
class Candidates:
    """The candidate sentences of one question and their feature rows (same order)."""

    sentences: list[Sentence]
    features: np.ndarray  # (n, len(SCALAR_NAMES) + dim) float32


def _overlap(terms: set[str], text: str) -> float:
    return len(terms & set(tokenize(text))) / len(terms) if terms else 0.0


def candidates(index: Index, question: str, query_vector: np.ndarray, passages: list[Passage],
               english: bool, depth: int) -> Candidates:
    """The sentences of the first ``depth`` passages with their features."""
    top = passages[:depth]
    chunk_ids = list(dict.fromkeys(p.chunk_id for p in top))
    sentences = index.sentences_of(chunk_ids)
    dim = index.sentence_vectors.dim
    if not sentences:
        return Candidates([], np.zeros((0, len(SCALAR_NAMES) + dim), np.float32))
    qv = np.asarray(query_vector, dtype=np.float32)
    sentence_vectors = index.sentence_vectors.get([s.id for s in sentences])
    cos_s = sentence_vectors @ qv
    chunk_cos = dict(zip(chunk_ids, (index.chunk_vectors.get(chunk_ids) @ qv).tolist()))
    passage_rank = {cid: r for r, cid in reversed(list(enumerate(p.chunk_id for p in top)))}
    best_score = max(abs(p.score) for p in top) or 1.0
    passage_score = {p.chunk_id: p.score / best_score for p in reversed(top)}
    bm25 = index.lexical.scores(question)
    bm25_of = {cid: float(bm25[index.position(cid)]) if len(bm25) else 0.0 for cid in chunk_ids}
    best_bm25 = max(bm25_of.values()) or 1.0

    terms = set(tokenize(question))
    kind = expected_type(question)
    question_names = [n for n in names_in(question) if len(n[-1]) > 2]
    order = np.argsort(-cos_s, kind="stable")
    cos_rank = np.empty(len(sentences), dtype=np.float32)
    cos_rank[order] = np.arange(len(sentences), dtype=np.float32)
    best_cos, best_chunk = float(cos_s.max()), max(chunk_cos.values())
    by_chunk: dict[str, list[int]] = {}
    for i, s in enumerate(sentences):
        by_chunk.setdefault(s.chunk_id, []).append(i)

    context_cache: dict[str, tuple[str, str]] = {}
    rows = []
    for i, sentence in enumerate(sentences):
        cid = sentence.chunk_id
        if cid not in context_cache:
            around = "\n".join(c.text for c in index.neighbours(cid))
            context_cache[cid] = (index.chunk(cid).text, around)
        chunk_text, around = context_cache[cid]
        siblings = by_chunk[cid]
        at = siblings.index(i)
        previous = float(cos_s[siblings[at - 1]]) if at > 0 else 0.0
        following = float(cos_s[siblings[at + 1]]) if at + 1 < len(siblings) else 0.0
        text = index.sentence_text(sentence)
        folded = fold(around)
        missing = sum(fold(n[-1]) not in folded for n in question_names)
        rows.append([
            float(cos_s[i]), float(cos_s[i]) - best_cos, cos_rank[i] / len(sentences),
            chunk_cos[cid], chunk_cos[cid] - best_chunk, previous, following,
            passage_rank[cid] / max(1, depth), passage_score[cid], bm25_of[cid] / best_bm25,
            _overlap(terms, text), _overlap(terms, chunk_text), _overlap(terms, around),
            min(len(terms), 10) / 10,
            *(float(kind == k) for k in KINDS), float(has_expected_type(kind, text, question)),
            float(bool(_DIGIT.search(text))), float(bool(_QUOTE.search(text))),
            min(missing, 3) / 3, min(len(question_names), 3) / 3,
            math.log1p(len(text)) / 6, at / max(1, len(siblings) - 1), float(at == 0),
            float(english),
        ])
    scalars = np.asarray(rows, dtype=np.float32)
    products = sentence_vectors * qv[None, :] * math.sqrt(dim)  # unit-scale entries
    return Candidates(sentences, np.hstack([scalars, products]).astype(np.float32))
