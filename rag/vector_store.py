"""Vectors keyed by id: the one place that knows how vectors are stored and searched.

Chunks and sentences each have a store. Every other module speaks of chunk ids and sentence ids,
never of rows, so another implementation (an approximate FAISS index for a very large corpus, or
a vector database server) replaces :class:`FaissVectorStore` without touching retrieval or answers.

A store holds L2-normalised float32 vectors; ``search`` ranks by inner product (= cosine).
On disk: ``<name>.faiss`` (FAISS's own format, no pickle) and ``<name>.ids.json``.
"""
from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np


class VectorStore(Protocol):
    """What the index needs from a vector store."""

    dim: int

    def __len__(self) -> int: ...

    @property
    def ids(self) -> list[str]: ...

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Store ``vectors`` (n, dim) under ``ids`` (new ids only)."""

    def remove(self, ids: Collection[str]) -> None:
        """Forget ``ids`` (unknown ids are ignored)."""

    def search(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The ``k`` nearest ids to ``vector`` with their inner products, best first."""

    def get(self, ids: Sequence[str]) -> np.ndarray:
        """The vectors of ``ids``, (len(ids), dim), in that order."""

    def save(self, folder: Path, name: str) -> None: ...


class FaissVectorStore:
    """Exact inner-product search (FAISS ``IndexFlatIP``) with string ids.

    Exact search stays fast up to about 100,000 vectors on two cores (README "Choices"); ids map
    to FAISS positions in a list kept beside the index.
    """

    def __init__(self, dim: int, index: faiss.Index | None = None,
                 ids: Sequence[str] = ()) -> None:
        self.dim = int(dim)
        self._index = index if index is not None else faiss.IndexFlatIP(self.dim)
        self._ids: list[str] = list(ids)
        self._position = {id_: i for i, id_ in enumerate(self._ids)}
        if self._index.ntotal != len(self._ids):
            raise ValueError(f"{self._index.ntotal} vectors but {len(self._ids)} ids")

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, id_: str) -> bool:
        return id_ in self._position

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    def _matrix(self) -> np.ndarray:
        """A read-only view of every stored vector (no copy)."""
        if not self._ids:
            return np.zeros((0, self.dim), dtype=np.float32)
        flat = faiss.rev_swig_ptr(self._index.get_xb(), len(self._ids) * self.dim)
        view = np.asarray(flat).reshape(len(self._ids), self.dim)
        view.flags.writeable = False
        return view

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        repeated = [i for i in ids if i in self._position]
        if repeated or len(set(ids)) != len(ids):
            raise ValueError(f"ids already stored: {repeated[:3] or 'repeated in the batch'}")
        if len(vectors):
            self._index.add(vectors)
        for id_ in ids:
            self._position[id_] = len(self._ids)
            self._ids.append(id_)

    def remove(self, ids: Collection[str]) -> None:
        gone = {i for i in ids if i in self._position}
        if not gone:
            return
        keep = [i for i in self._ids if i not in gone]
        vectors = self.get(keep)
        self._index = faiss.IndexFlatIP(self.dim)
        self._ids, self._position = [], {}
        self.add(keep, vectors)

    def search(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        k = min(int(k), len(self._ids))
        if k <= 0:
            return []
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, self.dim)
        scores, positions = self._index.search(query, k)
        return [(self._ids[p], float(s)) for p, s in zip(positions[0], scores[0]) if p >= 0]

    def get(self, ids: Sequence[str]) -> np.ndarray:
        if not len(ids):
            return np.zeros((0, self.dim), dtype=np.float32)
        try:
            positions = [self._position[i] for i in ids]
        except KeyError as exc:
            raise KeyError(f"no vector stored for id {exc.args[0]!r}") from None
        return self._matrix()[positions]

    def save(self, folder: Path, name: str) -> None:
        faiss.write_index(self._index, str(Path(folder) / f"{name}.faiss"))
        (Path(folder) / f"{name}.ids.json").write_text(json.dumps(self._ids), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path, name: str) -> FaissVectorStore:
        index = faiss.read_index(str(Path(folder) / f"{name}.faiss"))
        ids = json.loads((Path(folder) / f"{name}.ids.json").read_text(encoding="utf-8"))
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError(f"{name}.ids.json is not a list of ids")
        return cls(index.d, index, ids)
