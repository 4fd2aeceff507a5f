"""Rank chunks for a question: dense (FAISS), BM25, or hybrid: reciprocal rank fusion of three
rankings, chunks by their vector, chunks by their best sentence's vector, and BM25.

Fusion is weighted by how much each side has to say. BM25 knows only the corpus's words: for an
English question over French text almost no question word is in its vocabulary, and the few that
are (names) would pull noise up. Its weight is therefore scaled by the share of the question's
content words found in the corpus vocabulary, so a side with nothing to say cannot drown the other.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np

from .config import RETRIEVERS, SearchSettings
from .index import Index


@dataclass(frozen=True)
class Ranking:
    """Chunk ids, best first, with the score that ranked them."""

    ids: list[str]
    scores: list[float]

    @classmethod
    def of(cls, pairs: list[tuple[str, float]]) -> Ranking:
        return cls([i for i, _ in pairs], [s for _, s in pairs])

    def without(self, index: Index, sources: Collection[str]) -> Ranking:
        """The ranking with the passages of ``sources`` left out."""
        return Ranking.of([(i, s) for i, s in zip(self.ids, self.scores)
                           if index.chunk(i).source not in sources])


def dense_ranking(index: Index, query_vector: np.ndarray, depth: int) -> Ranking:
    return Ranking.of(index.chunk_vectors.search(query_vector, depth))


def sentence_ranking(index: Index, query_vector: np.ndarray, depth: int,
                     candidates: Sequence[str] = ()) -> Ranking:
    """Chunks ranked by their best-matching sentence: a finer-grained dense view, which finds a
    one-sentence fact buried in a long chunk.

    An index without sentence vectors (``IndexSettings.sentence_vectors`` off) cannot search
    every sentence: it ranks only ``candidates`` (the first chunks of the other rankings), whose
    sentences are embedded now (rag/sentence_vectors.py)."""
    if not getattr(index.sentence_vectors, "searchable", True):
        sentences = index.sentences_of(list(dict.fromkeys(candidates)))
        if not sentences:
            return Ranking([], [])
        scores = index.sentence_vectors.get([s.id for s in sentences]) @ query_vector.reshape(-1)
        found: dict[str, float] = {}
        for sentence, score in zip(sentences, scores.tolist()):
            found[sentence.chunk_id] = max(found.get(sentence.chunk_id, -2.0), score)
        order = sorted(found, key=lambda c: (-found[c], index.position(c)))[:depth]
        return Ranking(order, [found[c] for c in order])
    best: dict[str, float] = {}
    for sentence_id, score in index.sentence_vectors.search(query_vector, depth * 4):
        chunk_id = index.sentence(sentence_id).chunk_id
        if chunk_id not in best:
            best[chunk_id] = score
            if len(best) == depth:
                break
    return Ranking(list(best), list(best.values()))


def bm25_ranking(index: Index, question: str, depth: int) -> Ranking:
    return Ranking.of(index.lexical.top(question, depth))


def fuse(rankings: list[tuple[Ranking, float]], k: int,
         position: Callable[[str], int] = lambda chunk_id: 0) -> Ranking:
    """Weighted reciprocal rank fusion: score = sum of weight / (k + rank); equal scores keep
    ``position`` order (the chunk's place in the index), so results never depend on dict order."""
    fused: dict[str, float] = {}
    for ranking, weight in rankings:
        if weight <= 0:
            continue
        for rank, chunk_id in enumerate(ranking.ids, start=1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + weight / (k + rank)
    order = sorted(fused, key=lambda i: (-fused[i], position(i)))
    return Ranking(order, [fused[i] for i in order])


def rank(index: Index, question: str, query_vector: np.ndarray | None, mode: str,
         settings: SearchSettings) -> Ranking:
    """The ranking of ``mode`` ("dense", "bm25" or "hybrid"), at most ``settings.depth`` long."""
    if mode not in RETRIEVERS:
        raise ValueError(f"unknown retriever {mode!r}; choose one of {', '.join(RETRIEVERS)}")
    if mode == "bm25":
        return bm25_ranking(index, question, settings.depth)
    dense = dense_ranking(index, query_vector, settings.depth)
    if mode == "dense":
        return dense
    lexical = bm25_ranking(index, question, settings.depth)
    by_sentence = sentence_ranking(
        index, query_vector, settings.depth,
        dense.ids[:settings.on_demand_candidates] + lexical.ids[:settings.on_demand_candidates])
    bm25_weight = settings.bm25_weight * index.lexical.coverage(question)
    return fuse([(dense, settings.dense_weight), (by_sentence, settings.sentence_weight),
                 (lexical, bm25_weight)], settings.rrf_k, index.position)
