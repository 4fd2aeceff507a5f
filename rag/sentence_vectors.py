"""Sentence vectors computed when a question needs them, for an index built without them
(``IndexSettings.sentence_vectors = False``).

Why: sentence vectors cost about five times the chunk embeddings at index time (a million
chunks hold 4.8 million sentences) and as much memory again, yet a question reads the vectors of
only the few dozen sentences of its best passages. Such an index keeps its sentence records
(citations point at sentences) but no sentence vectors; this store stands in for the sentence
vector store of :class:`rag.index.Index`: ``get`` embeds the sentences asked for (each once,
kept in a bounded cache) with the index's own model, and ``search`` over every sentence is not
offered (``searchable`` is False): the retriever then ranks by best sentence only the chunks its
other rankings put first (rag/retrieve.py). Measured cost and loss: README "Sentence vectors".
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .index import Index

#: Sentence vectors kept between questions (1,500 per MB at 384 dimensions): a chat's recent
#: passages, and every candidate of an evaluation over a corpus the size of PIAF's.
CACHE_SIZE = 200_000


class OnDemandSentenceVectors:
    """The sentence "store" of an index without sentence vectors (see the module doc)."""

    #: ``rag/retrieve.py`` asks: no search over every sentence.
    searchable = False

    def __init__(self, dim: int, model: str, precision: str) -> None:
        self.dim = int(dim)
        self.model, self.precision = model, precision
        #: Returns what embeds passages (``encode_passages``): the Assistant lends its own model
        #: (:func:`lend_model`); None = the index's model through ``load_embedder`` (one per
        #: process).
        self.load_model: Callable[[], object] | None = None
        self.index: Index | None = None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def attach(self, index: Index) -> None:
        self.index = index

    @property
    def ids(self) -> list[str]:
        return []

    def __len__(self) -> int:
        return 0

    def describe(self) -> dict:
        return {"kind": "on-demand", "vectors": 0}

    def _encode(self) -> Callable[[list[str]], np.ndarray]:
        if self.load_model is not None:
            return self.load_model().encode_passages
        from .embedder import load_embedder
        return load_embedder(self.model, self.precision).encode_passages

    def get(self, ids: Sequence[str]) -> np.ndarray:
        """float32 ``(len(ids), dim)``: cached vectors, the others embedded now (one call)."""
        ids = list(ids)
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        with self._lock:
            missing = [i for i in dict.fromkeys(ids) if i not in self._cache]
        if missing:
            index = self.index
            texts = [index.sentence_text(index.sentence(i)) for i in missing]
            vectors = self._encode()(texts)
            with self._lock:
                for i, vector in zip(missing, vectors):
                    self._cache[i] = np.asarray(vector, dtype=np.float32)
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
        with self._lock:
            for row, i in enumerate(ids):
                vector = self._cache.get(i)
                if vector is None:  # pushed out meanwhile by another thread's question
                    vector = self._cache[i] = self._encode()(
                        [self.index.sentence_text(self.index.sentence(i))])[0]
                else:
                    self._cache.move_to_end(i)
                out[row] = vector
        return out

    def search(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        raise NotImplementedError("this index holds no sentence vectors to search; see "
                                  "rag/retrieve.py sentence_ranking")


def lend_model(index: Index, load_model: Callable[[], object]) -> Index:
    """Let an index without sentence vectors embed its sentences with ``load_model()`` (the
    caller's model, loaded once); any other index is returned untouched."""
    if isinstance(index.sentence_vectors, OnDemandSentenceVectors):
        index.sentence_vectors.load_model = load_model
    return index
