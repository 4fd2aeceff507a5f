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
  around it, also weighted by rarity (BM25's idf), for the sentences before and after it too;
  shared word pairs; how many words the sentence adds to the question's;
* answer type: which kind of thing is asked (``rag/answer_types.py``), whether the sentence holds
  it, whether it holds any figure, a quotation; the question's names missing around it;
* shape: the sentence's length, its place in its passage, whether the question is English;
* the rarest question word absent from the text around the sentence (a near-miss signal);
* optionally (``products``), the element-wise product of the question and sentence vectors
  (``dim`` values), which lets a classifier learn which directions of agreement matter. Measured
  in eval/RESULTS.md: with 9,000 training questions it overfits, so the shipped reader does
  without.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ..answer_types import expected_type, fold, has_expected_type, names_in
from ..index import Index
from ..language import is_english
from ..lexical import tokenize
from ..records import Passage, Sentence

#: Changes when a feature's meaning changes without its name (the answer-type rules, say): the
#: training cache is keyed by it, so candidates are rebuilt, and the card records it.
FEATURES_VERSION = 2
KINDS = ("", "number", "money", "date", "when", "name", "speech")
_DIGIT = re.compile(r"\d")
_QUOTE = re.compile(r"[«»“”\"]")

SCALAR_NAMES = (
    "cos_sentence", "cos_sentence_gap", "cos_sentence_rank", "cos_chunk", "cos_chunk_gap",
    "cos_previous", "cos_next", "passage_rank", "passage_score_ratio", "bm25_ratio",
    "overlap_sentence", "overlap_chunk", "overlap_context", "question_terms",
    "idf_overlap_sentence", "idf_overlap_gap", "idf_overlap_context", "idf_overlap_previous",
    "idf_overlap_next", "bigram_overlap", "new_terms", "best_in_chunk",
    *(f"asks_{k or 'other'}" for k in KINDS), "typed", "has_digit", "has_quote",
    "names_missing", "question_names", "log_chars", "position_in_chunk", "first_in_chunk",
    "english", "missing_idf_max",
)
@dataclass(frozen=True)
class Candidates:
    """The candidate sentences of one question and their feature rows (same order)."""

    sentences: list[Sentence]
    features: np.ndarray  # (n, len(SCALAR_NAMES) + dim) float32


def _share(terms: set[str], found: set[str]) -> float:
    return len(terms & found) / len(terms) if terms else 0.0


def _bigrams(tokens: list[str]) -> set[tuple[str, str]]:
    return set(zip(tokens, tokens[1:]))


def same_language(english: bool, passages: list[Passage], depth: int) -> bool:
    """Whether the question is in the language of most of the top passages. The reader learned
    from same-language pairs only (PIAF French, SQuAD English): across languages its word
    features say nothing and its cosines run lower."""
    top = passages[:depth]
    return not top or (sum(is_english(p.text) for p in top) * 2 > len(top)) == english


def candidates(index: Index, question: str, query_vector: np.ndarray, passages: list[Passage],
               english: bool, depth: int, products: bool = False) -> Candidates:
    """The sentences of the first ``depth`` passages with their features (and the question x
    sentence vector products when ``products``)."""
    top = passages[:depth]
    chunk_ids = list(dict.fromkeys(p.chunk_id for p in top))
    sentences = index.sentences_of(chunk_ids)
    dim = index.sentence_vectors.dim if products else 0
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

    question_tokens = tokenize(question)
    terms = set(question_tokens)
    term_idf = dict(zip(terms, index.lexical.idf(list(terms))))
    total_idf = sum(term_idf.values()) or 1.0
    question_bigrams = _bigrams(question_tokens)
    texts = [index.sentence_text(s) for s in sentences]
    tokens_of = [tokenize(t) for t in texts]
    idf_overlap = np.array([sum(term_idf[t] for t in terms & set(toks)) / total_idf
                            for toks in tokens_of], dtype=np.float32)
    best_idf = float(idf_overlap.max())
    kind = expected_type(question)
    question_names = [n for n in names_in(question) if len(n[-1]) > 2]
    order = np.argsort(-cos_s, kind="stable")
    cos_rank = np.empty(len(sentences), dtype=np.float32)
    cos_rank[order] = np.arange(len(sentences), dtype=np.float32)
    best_cos, best_chunk = float(cos_s.max()), max(chunk_cos.values())
    by_chunk: dict[str, list[int]] = {}
    for i, s in enumerate(sentences):
        by_chunk.setdefault(s.chunk_id, []).append(i)

    per_chunk: dict[str, tuple[set[str], set[str], str]] = {}  # chunk words, around words, folded
    rows = []
    for i, sentence in enumerate(sentences):
        cid = sentence.chunk_id
        if cid not in per_chunk:
            around = "\n".join(c.text for c in index.neighbours(cid))
            per_chunk[cid] = (set(tokenize(index.chunk(cid).text)), set(tokenize(around)),
                              fold(around))
        chunk_tokens, around_tokens, folded = per_chunk[cid]
        siblings = by_chunk[cid]
        at = siblings.index(i)
        before = siblings[at - 1] if at > 0 else None
        after = siblings[at + 1] if at + 1 < len(siblings) else None
        previous = float(cos_s[before]) if before is not None else 0.0
        following = float(cos_s[after]) if after is not None else 0.0
        text, tokens = texts[i], tokens_of[i]
        sentence_bigrams = _bigrams(tokens)
        absent = [term_idf[t] for t in terms - around_tokens]
        missing_idf = max(absent, default=0.0) / 10
        missing = sum(fold(n[-1]) not in folded for n in question_names)
        rows.append([
            float(cos_s[i]), float(cos_s[i]) - best_cos, cos_rank[i] / len(sentences),
            chunk_cos[cid], chunk_cos[cid] - best_chunk, previous, following,
            passage_rank[cid] / max(1, depth), passage_score[cid], bm25_of[cid] / best_bm25,
            _share(terms, set(tokens)), _share(terms, chunk_tokens), _share(terms, around_tokens),
            min(len(terms), 10) / 10,
            float(idf_overlap[i]), float(idf_overlap[i]) - best_idf,
            sum(term_idf[t] for t in terms & around_tokens) / total_idf,
            float(idf_overlap[before]) if before is not None else 0.0,
            float(idf_overlap[after]) if after is not None else 0.0,
            (len(question_bigrams & sentence_bigrams) / len(question_bigrams)
             if question_bigrams else 0.0),
            math.log1p(len(set(tokens) - terms)) / 4,
            float(all(cos_s[j] <= cos_s[i] for j in siblings)),
            *(float(kind == k) for k in KINDS), float(has_expected_type(kind, text, question)),
            float(bool(_DIGIT.search(text))), float(bool(_QUOTE.search(text))),
            min(missing, 3) / 3, min(len(question_names), 3) / 3,
            math.log1p(len(text)) / 6, at / max(1, len(siblings) - 1), float(at == 0),
            float(english), missing_idf,
        ])
    scalars = np.asarray(rows, dtype=np.float32)
    if not products:
        return Candidates(sentences, scalars)
    product = sentence_vectors * qv[None, :] * math.sqrt(dim)  # unit-scale entries
    return Candidates(sentences, np.hstack([scalars, product]).astype(np.float32))
