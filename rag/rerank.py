"""The reranker seam: an optional stage that reorders the top passages before answering.

``Reranker.scores(question, passages) -> one score per passage`` (higher is better). The
assistant hands it the first ``SearchSettings.rerank_depth`` passages of the fused ranking and
keeps the rest in retrieval order after them. A cross-encoder, or a vector database's own
reranking, plugs in here without touching retrieval or the answerers.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

from .records import Passage


class Reranker(Protocol):
    def scores(self, question: str, passages: Sequence[Passage]) -> Sequence[float]:
        """One score per passage, in the order given."""


def rerank(reranker: Reranker, question: str, passages: list[Passage],
           depth: int) -> list[Passage]:
    """The first ``depth`` passages reordered by ``reranker`` (scores replaced by its own), then
    the rest unchanged. Equal scores keep retrieval order."""
    head, tail = passages[:depth], passages[depth:]
    if not head:
        return passages
    scores = list(reranker.scores(question, head))
    if len(scores) != len(head):
        raise ValueError(f"reranker gave {len(scores)} scores for {len(head)} passages")
    order = sorted(range(len(head)), key=lambda i: -scores[i])
    return [replace(head[i], score=float(scores[i])) for i in order] + tail
