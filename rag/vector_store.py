"""Vectors keyed by id: the one place that knows how vectors are stored and searched.

Chunks and sentences each have a store. Every other module speaks of chunk ids and sentence ids,
never of rows, so another implementation (a vector database server, say) replaces
:class:`FaissVectorStore` without touching retrieval or answers.

A store holds L2-normalised float32 vectors; ``search`` ranks by inner product (= cosine).

How a store searches depends on its size, so that a question costs about the same on a large
corpus as on a small one (``benchmarks/scale.py`` measures all of this; figures in
benchmarks/RESULTS.md, "Scale"):

- up to :data:`EXACT_LIMIT` vectors, ``"flat"``: exact search (``IndexFlatIP``), every vector
  compared. On disk: ``<name>.faiss`` and ``<name>.ids.json``.
- above it, ``"hnsw"``: an HNSW graph (``IndexHNSWSQ``) over 8-bit codes of the vectors, whose
  search cost grows with the logarithm of the size. Scores come from the codes (within about
  0.001 of the exact inner product); the exact float32 vectors are kept apart, in
  ``<name>.vectors.npy``, for ``get``. Searches read 0.65 KB per vector (codes and links) instead
  of the 1.8 KB of a float32 graph, and never the exact copy: what lets a million chunks and
  their five million sentences load in a few GB. (Scoring the candidates again with the exact
  vectors was tried: over a few hundred questions it read most of the exact copy into memory,
  for a gain of 0.01 of recall.) The graph finds about eight of the ten true nearest vectors of
  half a million; after fusion with BM25 and the other dense ranking, the hybrid top 10 is 0.99
  the same as with exact search (benchmarks/RESULTS.md).

The kind follows the size whenever the store is built or rebuilt (``add`` past the limit converts
it, ``remove`` rebuilds it), is recorded in the saved file itself, and is reported by
:meth:`FaissVectorStore.describe` for the index manifest. A loaded store is memory-mapped (the
files are read as searches touch them, and the pages stay shared with the system's file cache);
its first change copies the index into memory. Nothing is a pickle.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import BinaryIO, Protocol

import faiss
import numpy as np

#: Largest store searched exactly. Exact search costs about 0.1 µs per vector on one core
#: (0.6 ms per question at 10,000 vectors, 10 to 19 ms at 100,000, 160 ms at 1,000,000), while
#: the graph costs 1 to 6 ms at any of these sizes but misses some neighbours, and takes 0.3 ms
#: per vector to build on two quiet cores (0.8 on busy ones). At 100,000 vectors an exact search
#: costs about what embedding the question does, so larger stores switch. (IVF, FAISS's other
#: family, had to scan a quarter of embedding-like vectors to find 0.9 of the true top 10, so
#: its cost still grows with the corpus; 4-bit product codes scanned in full cost 13 ms at a
#: million vectors for 0.87.)
EXACT_LIMIT = 100_000
#: HNSW graph degree: 32 links per vector found 0.90 of the true top 10 at 256 candidates, where
#: 16 links found 0.75 at the same cost (100,000 embedding-like vectors, float32 graph; 8-bit
#: codes cost 0.01 to 0.02 of that).
HNSW_M = 32
#: Candidates kept while inserting a vector (FAISS's default); 16 built 2.7 times faster but
#: lost 0.12 of recall@10 at equal search cost.
HNSW_EF_CONSTRUCTION = 40
#: Candidates kept while searching (at least ``k``). Read at search time, so it applies to
#: indexes built before it changed. Measured at 300,000 chunks (1.4 million sentences), recall@10
#: of the chunk store (k = 100) / sentence store (k = 400) and ms per search: 256: 0.76 / 0.62,
#: 2.9 / 7.3 ms; 512: 0.87 / 0.68, 5.4 / 8.3 ms; 1,024: 0.92 / 0.80, 10.3 / 14.7 ms; 2,048:
#: 0.95 / 0.89, 17 / 27 ms. After fusion the hybrid top 10 differs little (0.98 of exact at
#: 256), so 512 buys the cheap part of the gain and leaves most of a question's time budget.
HNSW_EF_SEARCH = 512

FLAT = "flat"
HNSW = "hnsw"


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


def _kind(index: faiss.Index) -> str:
    """``"flat"`` or ``"hnsw"``; any other FAISS index is refused (it was not written here)."""
    if isinstance(index, faiss.IndexHNSWSQ):
        kind = HNSW
    elif isinstance(index, faiss.IndexFlat):
        kind = FLAT
    else:
        raise ValueError(f"unsupported FAISS index {type(index).__name__}")
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise ValueError("the vector index does not rank by inner product")
    return kind


def _new_index(dim: int, size: int, exact_limit: int) -> faiss.Index:
    """An empty index of the kind a store of ``size`` vectors uses (a graph is still untrained:
    its 8-bit codes learn each dimension's range from the first vectors added)."""
    if size <= exact_limit:
        return faiss.IndexFlatIP(dim)
    index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, HNSW_M,
                              faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    index.hnsw.efSearch = HNSW_EF_SEARCH
    return index


class _Rows:
    """The exact float32 vectors of a graph store, which searches never read: in the store's
    ``.npy`` file once loaded, and rows added since in an anonymous temporary file (in
    ``TMPDIR``). Both are memory-mapped, so a store holds only its codes and graph in memory,
    also while it is built (the exact copy of five million sentences is 7 GB); ``get`` reads the
    rows it needs. Each file stays open, so the rows stay the store's own even if another store
    is saved under the same name."""

    _COPY = 1 << 26  # bytes copied at a time when saving

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._row_bytes = 4 * dim
        #: (open file, offset of row 0, rows) of the loaded ``.npy`` file, if any.
        self._saved: tuple[BinaryIO, int, int] | None = None
        self._saved_map: np.ndarray | None = None
        self._added: BinaryIO | None = None  # the temporary file of the rows added since
        self._added_rows = 0
        self._added_map: np.ndarray | None = None  # remapped when rows were added

    @classmethod
    def open(cls, path: Path, dim: int) -> _Rows:
        """The rows of a saved ``.npy`` file, mapped."""
        f = open(path, "rb")
        version = np.lib.format.read_magic(f)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read(f)
        if dtype != np.float32 or fortran or len(shape) != 2 or shape[1] != dim:
            f.close()
            raise ValueError(f"{path.name} does not hold {dim}-dimension float32 vectors")
        rows = cls(dim)
        rows._saved = (f, f.tell(), shape[0])
        if shape[0]:
            rows._saved_map = np.memmap(f, dtype=np.float32, mode="r", offset=f.tell(),
                                        shape=shape)
        return rows

    def __len__(self) -> int:
        return self._saved_rows + self._added_rows

    @property
    def _saved_rows(self) -> int:
        return self._saved[2] if self._saved else 0

    def append(self, vectors: np.ndarray) -> None:
        if not len(vectors):
            return
        if self._added is None:
            self._added = tempfile.TemporaryFile()
        self._added.seek(0, os.SEEK_END)
        np.ascontiguousarray(vectors, dtype=np.float32).tofile(self._added)
        self._added.flush()
        self._added_rows += len(vectors)
        self._added_map = None

    def _added_rows_map(self) -> np.ndarray:
        if self._added_map is None:
            self._added_map = np.memmap(self._added, dtype=np.float32, mode="r",
                                        shape=(self._added_rows, self.dim))
        return self._added_map

    def take(self, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        """The rows at ``positions``, in that order (a copy)."""
        positions = np.asarray(positions, dtype=np.int64)
        out = np.empty((len(positions), self.dim), dtype=np.float32)
        saved = positions < self._saved_rows
        if saved.any():
            out[saved] = self._saved_map[positions[saved]]
        if not saved.all():
            out[~saved] = self._added_rows_map()[positions[~saved] - self._saved_rows]
        return out

    def save(self, path: Path) -> None:
        """Write every row as one ``.npy`` array (no pickle), copying the files' bytes with plain
        reads and writes: going through the maps would make them count as this process's
        memory."""
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                  "fortran_order": False, "shape": (len(self), self.dim)}
        parts = [(self._saved[0], self._saved[1], self._saved_rows)] if self._saved else []
        if self._added is not None:
            parts.append((self._added, 0, self._added_rows))
        with open(path, "wb") as out:
            np.lib.format.write_array_header_1_0(out, header)
            for source, offset, rows in parts:
                end = offset + rows * self._row_bytes
                while offset < end:
                    data = os.pread(source.fileno(), min(end - offset, self._COPY), offset)
                    if not data:
                        raise OSError(f"{path.name}: the vectors' file ended early")
                    out.write(data)
                    offset += len(data)


class FaissVectorStore:
    """FAISS inner-product search with string ids: exact up to ``exact_limit`` vectors, an HNSW
    graph above (module docstring). Ids map to FAISS positions in a list kept beside the index.

    ``exact_limit`` is a parameter so that tests can cross it with a handful of vectors.
    """

    def __init__(self, dim: int, index: faiss.Index | None = None,
                 ids: Sequence[str] = (), exact_limit: int = EXACT_LIMIT,
                 vectors: _Rows | None = None) -> None:
        """``vectors`` are the exact vectors of a loaded graph ``index`` (a flat index holds its
        own)."""
        self.dim = int(dim)
        self.exact_limit = int(exact_limit)
        self._index = index if index is not None else _new_index(self.dim, 0, self.exact_limit)
        self._kind = _kind(self._index)
        self._rows = vectors if vectors is not None else _Rows(self.dim)
        #: True while the index is a read-only memory map of a saved file (see ``load``).
        self._mapped = False
        self._ids: list[str] = list(ids)
        self._position = {id_: i for i, id_ in enumerate(self._ids)}
        if self._index.ntotal != len(self._ids):
            raise ValueError(f"{self._index.ntotal} vectors but {len(self._ids)} ids")
        if self._kind == HNSW and len(self._rows) != len(self._ids):
            raise ValueError(f"{len(self._rows)} exact vectors for {len(self._ids)} ids")
        if self._index.d != self.dim:
            raise ValueError(f"the index holds {self._index.d}-dimension vectors, not {self.dim}")

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, id_: str) -> bool:
        return id_ in self._position

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    @property
    def kind(self) -> str:
        """``"flat"`` (exact) or ``"hnsw"`` (approximate)."""
        return self._kind

    def describe(self) -> dict:
        """What the index manifest records about this store: how it searches and with what
        parameters, so a result can be traced to exact or approximate search."""
        description = {"kind": self._kind, "metric": "inner_product", "dim": self.dim,
                       "vectors": len(self._ids), "exact_limit": self.exact_limit}
        if self._kind == HNSW:
            hnsw = self._index.hnsw
            description.update(m=int(hnsw.nb_neighbors(1)),
                               ef_construction=int(hnsw.efConstruction),
                               ef_search=HNSW_EF_SEARCH, codes="sq8")
        return description

    def _matrix(self) -> np.ndarray:
        """A read-only view of every vector of a flat store (no copy)."""
        if not self._ids:
            return np.zeros((0, self.dim), dtype=np.float32)
        flat = faiss.rev_swig_ptr(self._index.get_xb(), len(self._ids) * self.dim)
        view = np.asarray(flat).reshape(len(self._ids), self.dim)
        view.flags.writeable = False
        return view

    def _rows_at(self, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        if self._kind == HNSW:
            return self._rows.take(positions)
        return self._matrix()[np.asarray(positions, dtype=np.int64)]

    def _own(self) -> None:
        """Copy a memory-mapped index into memory before changing it: a map is read-only. (The
        exact vectors need no copy: new ones go to a new block.)"""
        if self._mapped:
            self._index = faiss.deserialize_index(faiss.serialize_index(self._index))
            self._mapped = False

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        repeated = [i for i in ids if i in self._position]
        if repeated or len(set(ids)) != len(ids):
            raise ValueError(f"ids already stored: {repeated[:3] or 'repeated in the batch'}")
        if len(vectors):
            self._own()
            if self._kind == FLAT and len(self._ids) + len(vectors) > self.exact_limit:
                self._to_graph(vectors)
            else:
                self._index.add(vectors)
                if self._kind == HNSW:
                    self._rows.append(vectors)
        for id_ in ids:
            self._position[id_] = len(self._ids)
            self._ids.append(id_)

    def _to_graph(self, new: np.ndarray) -> None:
        """Move a flat store grown past the limit, and ``new``, into a graph: its codes learn
        each dimension's range from all of them."""
        vectors = np.concatenate([self._matrix(), new]) if self._ids else new
        index = _new_index(self.dim, len(vectors), self.exact_limit)
        index.train(vectors)
        index.add(vectors)
        self._index, self._kind, self._rows = index, HNSW, _Rows(self.dim)
        self._rows.append(vectors)

    def remove(self, ids: Collection[str]) -> None:
        """Forget ``ids`` by rebuilding from the rest: FAISS graphs cannot drop a vector, and the
        rebuilt store takes the kind its new size calls for. On a graph store this costs a full
        build; appending with ``add`` does not."""
        gone = {i for i in ids if i in self._position}
        if not gone:
            return
        keep = [i for i in self._ids if i not in gone]
        vectors = self.get(keep)
        self._index, self._kind = _new_index(self.dim, 0, self.exact_limit), FLAT
        self._rows, self._mapped = _Rows(self.dim), False
        self._ids, self._position = [], {}
        self.add(keep, vectors)

    def search(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        k = min(int(k), len(self._ids))
        if k <= 0:
            return []
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, self.dim)
        if self._kind == FLAT:
            scores, positions = self._index.search(query, k)
            return [(self._ids[p], float(s)) for p, s in zip(positions[0], scores[0]) if p >= 0]
        # Per call, not on the shared index: threads answering other questions are unaffected.
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(HNSW_EF_SEARCH, k)
        scores, positions = self._index.search(query, k, params=params)
        return [(self._ids[p], float(s)) for p, s in zip(positions[0], scores[0]) if p >= 0]

    def get(self, ids: Sequence[str]) -> np.ndarray:
        if not len(ids):
            return np.zeros((0, self.dim), dtype=np.float32)
        try:
            positions = [self._position[i] for i in ids]
        except KeyError as exc:
            raise KeyError(f"no vector stored for id {exc.args[0]!r}") from None
        return self._rows_at(positions)

    def save(self, folder: Path, name: str) -> None:
        """Write the store's files. Each is written beside its final name and then renamed, so a
        store loaded (memory-mapped) from the same files keeps reading the old ones."""
        folder = Path(folder)
        if self._kind == HNSW:
            _replace(folder / f"{name}.vectors.npy", self._rows.save)
        _replace(folder / f"{name}.faiss", lambda p: faiss.write_index(self._index, str(p)))
        _replace(folder / f"{name}.ids.json",
                 lambda p: p.write_text(json.dumps(self._ids), encoding="utf-8"))

    @classmethod
    def load(cls, folder: Path, name: str, exact_limit: int = EXACT_LIMIT) -> FaissVectorStore:
        """The saved store, of the kind it was saved as, memory-mapped: vectors and codes are
        read from the files as searches touch them, so memory holds what questions visit and the
        pages stay shared with the system's file cache."""
        folder = Path(folder)
        index = faiss.read_index(str(folder / f"{name}.faiss"), faiss.IO_FLAG_MMAP_IFC)
        ids = json.loads((folder / f"{name}.ids.json").read_text(encoding="utf-8"))
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError(f"{name}.ids.json is not a list of ids")
        vectors = None
        if _kind(index) == HNSW:
            vectors = _Rows.open(folder / f"{name}.vectors.npy", index.d)
        store = cls(index.d, index, ids, exact_limit, vectors)
        store._mapped = True
        return store


def _replace(path: Path, write) -> None:
    """``write(temporary path)``, then rename it to ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)
