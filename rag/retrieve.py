"""Rank chunks for a question: dense (FAISS), BM25, or hybrid: reciprocal rank fusion of three
rankings, chunks by their vector, chunks by their best sentence's vector, and BM25.

Fusion is weighted by how much each side has to say. BM25 knows only the corpus's words: for an
English question over French text almost no question word is in its vocabulary, and the few that
are (names) would pull noise up. Its weight is therefore scaled by the share of the question's
content words found in the corpus vocabulary, so a side with nothing to say cannot drown the other.
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from .config import RETRIEVERS, SearchSettings
from .index import Index


@dataclass(frozen=True)
class Ranking:
    """Chunk rows, best first, with the score that ranked them."""

    rows: list[int]
    scores: list[float]

    def without(self, index: Index, sources: Collection[str]) -> Ranking:
        """The ranking with the passages of ``sources`` left out."""
        kept = [(r, s) for r, s in zip(self.rows, self.scores)
                if index.chunks[r].source not in sources]
        return Ranking([r for r, _ in kept], [s for _, s in kept])


def dense_ranking(index: Index, query_vector: np.ndarray, depth: int) -> Ranking:
    if index.dense.ntotal == 0:
        return Ranking([], [])
    scores, rows = index.dense.search(query_vector.reshape(1, -1).astype(np.float32),
                                      min(depth, index.dense.ntotal))
    keep = rows[0] >= 0
    return Ranking(rows[0][keep].tolist(), scores[0][keep].tolist())


def sentence_ranking(index: Index, query_vector: np.ndarray, depth: int) -> Ranking:
    """Chunks ranked by their best-matching sentence: a finer-grained dense view, which finds a
    one-sentence fact buried in a long chunk."""
    if not len(index.sentences):
        return Ranking([], [])
    cosines = index.sentence_vectors @ query_vector.astype(np.float32)
    best: dict[int, float] = {}
    for srow in np.argsort(-cosines)[:depth * 4].tolist():
        chunk_row = int(index.sentences[srow, 0])
        if chunk_row not in best:
            best[chunk_row] = float(cosines[srow])
            if len(best) == depth:
                break
    return Ranking(list(best), list(best.values()))


def bm25_ranking(index: Index, question: str, depth: int) -> Ranking:
    scores = index.lexical.scores(question)
    if not len(scores):
        return Ranking([], [])
    top = np.argsort(-scores, kind="stable")[:depth]
    top = top[scores[top] > 0]
    return Ranking(top.tolist(), scores[top].tolist())


def fuse(rankings: list[tuple[Ranking, float]], k: int) -> Ranking:
    """Weighted reciprocal rank fusion: score = sum of weight / (k + rank)."""
    fused: dict[int, float] = {}
    for ranking, weight in rankings:
        if weight <= 0:
            continue
        for rank, row in enumerate(ranking.rows, start=1):
            fused[row] = fused.get(row, 0.0) + weight / (k + rank)
    order = sorted(fused, key=lambda r: (-fused[r], r))
    return Ranking(order, [fused[r] for r in order])


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
    by_sentence = sentence_ranking(index, query_vector, settings.depth)
    lexical = bm25_ranking(index, question, settings.depth)
    bm25_weight = settings.bm25_weight * index.lexical.coverage(question)
    return fuse([(dense, settings.dense_weight), (by_sentence, settings.sentence_weight),
                 (lexical, bm25_weight)], settings.rrf_k)
