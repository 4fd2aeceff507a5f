"""How the index scales: build, disk, memory, load and question cost at 10,000 to 1,000,000 chunks.

For each size, a synthetic index is built and written with the program's own classes
(``FaissVectorStore``, ``LexicalIndex``, ``rag.index.write_build``), then loaded with
``rag.index.load_index`` and questioned with ``rag.retrieve``'s functions: dense chunks, sentences
(chunks by their best sentence), BM25, and the hybrid fusion of the three.

- Text is real: sentences of PIAF and SQuAD 2.0 (read from ``../shared/bench``, never copied)
  recombined into chunks of at most 800 characters, 20 chunks per file, so BM25 sees a real
  vocabulary and real word frequencies. The questions' text is PIAF's questions.
- Vectors are precomputed random unit vectors, not embeddings: embedding a million chunks takes
  days on two cores (the time is extrapolated and printed). They are drawn from a distribution
  fitted to multilingual-e5-small vectors of 2,705 PIAF/SQuAD sentences and 800 PIAF questions
  (see :class:`EmbeddingLike`), because approximate search behaves very differently on uniform
  random vectors (no neighbourhood structure: HNSW's recall@10 was 0.14 on them against 0.83
  on e5-like ones, same settings, 100,000 vectors).
- Recall@10 of each store, and of the hybrid ranking, is measured against exact search (computed
  by brute force while the vectors are generated) on held-out query vectors.
- Each size is built in one child process and questioned in another, so each peak resident
  memory (``ru_maxrss``) is that step's own.

    python benchmarks/scale.py [--sizes 10000,100000,1000000] [--queries 200] [--work DIR] [--keep]
                               [--stand-in-above N] [--reuse]

The graphs of 1,000,000 chunks (5.8 million vectors) take half an hour to an hour to build on two
cores. ``--stand-in-above 100000`` gives larger sizes 8-dimension stand-in vectors in exact stores
instead: their text side (records, BM25, loading, fusion) is measured for real and their vector
side is modelled from the largest size built with real stores (marked * in the tables).
``--reuse`` takes a size's index and results from an earlier run in the same ``--work`` folder
(without its ``query.json``, the index is questioned again).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.vector_store import EXACT_LIMIT  # noqa: E402

BENCH = ROOT.parent / "shared" / "bench"
DIM = 384
CHUNK_CHARS = 800
CHUNKS_PER_FILE = 20
BATCH = 50_000
#: Measured encoder rate on 800-character chunks, two cores (README "Measured").
CHUNKS_PER_SECOND = 22.0
#: A sentence embeds 2.1 times faster than an 800-character chunk: 16.7 against 8.0 texts/s on
#: 600 PIAF/SQuAD chunks and their 2,705 sentences, measured in one run on a loaded machine.
SENTENCE_SPEEDUP = 2.1
TARGET_QUERY_MS = 50.0
TARGET_MEMORY_GB = 8.0
MACHINE_MEMORY_GB = 24.0
SEED = 13


# --------------------------------------------------------------------------------- vectors


class EmbeddingLike:
    """Random unit vectors shaped like multilingual-e5-small's.

    Fitted on e5 vectors of 2,705 PIAF/SQuAD sentences and 800 PIAF questions: passages share a
    mean direction of norm 0.88 with a total variance of 0.226 around it, spread over the other
    383 directions with variances falling as rank^-0.8; questions have a mean of norm 0.89 at
    cosine 0.96 from the passages' one, variance 0.209 falling as rank^-0.6, half along the
    passages' principal directions and half along unrelated ones. Question-passage cosines come
    out at 0.756 +/- 0.026 (real: 0.755 +/- 0.030), and HNSW/IVF recall on such vectors was within
    0.09 of recall on the real ones at equal settings, lower in four settings of six.

    Each stream (chunks, sentences, questions) has its own seed, so a child process can redraw
    the questions without the corpus.
    """

    def __init__(self, seed: int = SEED) -> None:
        rng = np.random.default_rng([seed, 0])
        basis, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
        other, _ = np.linalg.qr(np.concatenate([basis[:, :1],
                                                rng.standard_normal((DIM, DIM - 1))], axis=1))
        ranks = np.arange(1, DIM, dtype=np.float64)
        passage_var = ranks ** -0.8 * (0.226 / np.sum(ranks ** -0.8))
        question_var = ranks ** -0.6 * (0.209 / np.sum(ranks ** -0.6))
        self._passage = (basis[:, 1:] * np.sqrt(passage_var)).T.astype(np.float32)
        self._question_a = (basis[:, 1:] * np.sqrt(question_var / 2)).T.astype(np.float32)
        self._question_b = (other[:, 1:] * np.sqrt(question_var / 2)).T.astype(np.float32)
        self._passage_mean = (0.88 * basis[:, 0]).astype(np.float32)
        self._question_mean = (0.89 * (0.964 * basis[:, 0] + 0.266 * other[:, 1])).astype(
            np.float32)
        self._seed = seed

    dim = DIM

    def stream(self, name: str) -> np.random.Generator:
        return np.random.default_rng([self._seed, {"chunks": 1, "sentences": 2,
                                                   "questions": 3}[name]])

    def passages(self, rng: np.random.Generator, n: int) -> np.ndarray:
        out = rng.standard_normal((n, DIM - 1), dtype=np.float32) @ self._passage
        return _unit(out + self._passage_mean)

    def questions(self, n: int) -> np.ndarray:
        rng = self.stream("questions")
        out = (rng.standard_normal((n, DIM - 1), dtype=np.float32) @ self._question_a
               + rng.standard_normal((n, DIM - 1), dtype=np.float32) @ self._question_b)
        return _unit(out + self._question_mean)


def exact_limit() -> int:
    """The store's exact limit, or the one ``--exact-limit`` set (to try the graphs quickly)."""
    return int(os.environ.get("RAG_SCALE_EXACT_LIMIT", EXACT_LIMIT))


class StandIn(EmbeddingLike):
    """8-dimension stand-in vectors in exact stores, for sizes whose graphs would take too long
    to build here: the text side (records, BM25, fusion) is measured for real, the vector side
    is left out of the timings and modelled from the largest size built with real stores."""

    dim = 8

    def passages(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return _unit(rng.standard_normal((n, self.dim), dtype=np.float32))

    def questions(self, n: int) -> np.ndarray:
        return _unit(self.stream("questions").standard_normal((n, self.dim), dtype=np.float32))


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


class TopK:
    """Exact top-k inner products of a few queries over vectors seen batch by batch: the
    ground truth the approximate stores are compared with, without keeping every vector."""

    def __init__(self, queries: np.ndarray, k: int) -> None:
        self.queries, self.k = queries, k
        self.scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
        self.rows = np.zeros((len(queries), 0), dtype=np.int64)

    def update(self, batch: np.ndarray, first_row: int) -> None:
        scores = np.concatenate([self.scores, self.queries @ batch.T], axis=1)
        rows = np.concatenate([self.rows, np.broadcast_to(
            np.arange(first_row, first_row + len(batch)), (len(self.queries), len(batch)))],
            axis=1)
        k = min(self.k, scores.shape[1])
        keep = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, keep, axis=1), axis=1, kind="stable")
        keep = np.take_along_axis(keep, order, axis=1)
        self.scores = np.take_along_axis(scores, keep, axis=1)
        self.rows = np.take_along_axis(rows, keep, axis=1)


# ------------------------------------------------------------------------------------ text


def real_sentences() -> list[str]:
    """Every sentence of the PIAF and SQuAD 2.0 articles (about 10,000), as the program splits
    them; sentences longer than a chunk are left out."""
    from rag.sentences import sentence_spans

    sentences = []
    for corpus in ("piaf", "squad2"):
        for path in sorted((BENCH / corpus / "corpus").glob("*.txt")):
            for paragraph in path.read_text(encoding="utf-8").split("\n\n"):
                paragraph = " ".join(paragraph.split())
                sentences += [paragraph[s:e] for s, e in sentence_spans(paragraph)]
    return [s for s in sentences if 0 < len(s) < CHUNK_CHARS]


def real_questions(n: int) -> list[str]:
    """``n`` distinct PIAF questions (BM25 needs real question words)."""
    lines = (BENCH / "piaf" / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    questions = list(dict.fromkeys(json.loads(line)["question"] for line in lines if line))
    random.Random(SEED).shuffle(questions)
    return [questions[i % len(questions)] + ("" if i < len(questions) else f" ({i})")
            for i in range(n)]


def synthetic_records(n_chunks: int) -> tuple[list, list]:
    """``n_chunks`` chunks of real sentences drawn at random and packed up to 800 characters, and
    their sentences, as the index records them (file offsets, lines, ids)."""
    from rag.chunking import chunk_id
    from rag.records import Chunk, Sentence

    pool = real_sentences()
    rng = random.Random(SEED)
    chunks: list[Chunk] = []
    sentences: list[Sentence] = []
    offset = 0
    for i in range(n_chunks):
        if i % CHUNKS_PER_FILE == 0:
            offset = 0
        source = f"synthetic/article-{i // CHUNKS_PER_FILE:06d}.txt"
        parts: list[str] = []
        length = -1
        while True:
            candidate = pool[rng.randrange(len(pool))]
            if parts and length + 1 + len(candidate) > CHUNK_CHARS:
                break
            parts.append(candidate)
            length += 1 + len(candidate)
        text = " ".join(parts)
        line = 2 * (i % CHUNKS_PER_FILE) + 1
        cid = chunk_id(source, offset, offset + len(text), text)
        chunks.append(Chunk(cid, source, offset, offset + len(text), line, line, text))
        start = offset
        for k, part in enumerate(parts):
            sentences.append(Sentence(f"{cid}:{k}", cid, start, start + len(part)))
            start += len(part) + 1
        offset += len(text) + 2  # paragraphs are separated by a blank line
    return chunks, sentences


# ----------------------------------------------------------------------------------- build


def build(size: int, folder: Path, n_queries: int, stand_in: bool) -> dict:
    """Build and write the index of ``size`` chunks; the exact top-k of the held-out questions
    goes beside it for the recall measurements. ``stand_in``: see :class:`StandIn`."""
    import faiss

    from rag.config import IndexSettings, SearchSettings
    from rag.index import FORMAT_VERSION, write_build
    from rag.lexical import LexicalIndex
    from rag.vector_store import FaissVectorStore

    depth = SearchSettings().depth
    timings: dict[str, float] = {}
    started = time.perf_counter()
    chunks, sentences = synthetic_records(size)
    timings["text"] = time.perf_counter() - started

    gen = StandIn() if stand_in else EmbeddingLike()
    limit = sys.maxsize if stand_in else exact_limit()
    queries = gen.questions(n_queries)
    exact: dict[str, TopK] = {}
    stores: dict[str, FaissVectorStore] = {}
    for name, ids, k in (("chunks", [c.id for c in chunks], depth),
                         ("sentences", [s.id for s in sentences], 4 * depth)):
        store, truth, rng = FaissVectorStore(gen.dim, exact_limit=limit), TopK(queries, k), \
            gen.stream(name)
        generate = add = 0.0
        for first in range(0, len(ids), BATCH):
            t0 = time.perf_counter()
            vectors = gen.passages(rng, min(BATCH, len(ids) - first))
            if not stand_in:
                truth.update(vectors, first)
            t1 = time.perf_counter()
            store.add(ids[first:first + BATCH], vectors)
            t2 = time.perf_counter()
            generate, add = generate + t1 - t0, add + t2 - t1
        timings[f"{name} store"] = add
        timings[f"{name} vectors (generated)"] = generate
        stores[name], exact[name] = store, truth

    t0 = time.perf_counter()
    lexical = LexicalIndex.build([c.id for c in chunks], [c.text for c in chunks])
    timings["bm25"] = time.perf_counter() - t0

    manifest = {
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": {"name": "stand-in" if stand_in else "synthetic", "weights_hash": "synthetic",
                  "dim": gen.dim},
        "settings": IndexSettings().to_json(),
        "counts": {"files": (size + CHUNKS_PER_FILE - 1) // CHUNKS_PER_FILE,
                   "chunks": len(chunks), "sentences": len(sentences)},
        "vector_stores": {name: store.describe() for name, store in stores.items()},
        "files": _files(chunks),
    }
    t0 = time.perf_counter()
    write_build(folder / "index", manifest, chunks, sentences, stores["chunks"],
                stores["sentences"], lexical)
    timings["write"] = time.perf_counter() - t0
    written = next((folder / "index").glob("build-*"))
    store_bytes = {name: sum(p.stat().st_size for p in written.glob(f"{name}.*")
                             if p.suffix in (".faiss", ".npy"))
                   for name in stores}
    resident_bytes = {name: (written / f"{name}.faiss").stat().st_size for name in stores}
    np.savez(folder / "exact.npz", **{f"{name}_{part}": getattr(truth, part)
                                      for name, truth in exact.items()
                                      for part in ("scores", "rows")})
    return {"size": size, "sentences": len(sentences), "timings": timings, "stand_in": stand_in,
            "stores": manifest["vector_stores"], "store_bytes": store_bytes,
            "resident_bytes": resident_bytes, "omp_threads": faiss.omp_get_max_threads()}


def _files(chunks: list) -> dict[str, dict]:
    """The manifest's per-file entries: a (made-up) content hash and the file's chunk ids."""
    files: dict[str, dict] = {}
    for chunk in chunks:
        files.setdefault(chunk.source, {"hash": chunk.source, "chunks": []})["chunks"].append(
            chunk.id)
    return files


# ----------------------------------------------------------------------------------- query


class Precomputed:
    """A store whose ``search`` answers the current question with the exact results computed at
    build time: lets ``rag.retrieve.rank`` fuse exact rankings with the same code."""

    def __init__(self, ids: list[str], scores: np.ndarray, rows: np.ndarray) -> None:
        self._ids, self._scores, self._rows = ids, scores, rows
        self.current = 0

    def search(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        rows, scores = self._rows[self.current][:k], self._scores[self.current][:k]
        return [(self._ids[r], float(s)) for r, s in zip(rows, scores)]


class ExactView:
    """The loaded index with its vector stores replaced by exact results."""

    def __init__(self, index, chunks: Precomputed, sentences: Precomputed) -> None:
        self._index, self.chunk_vectors, self.sentence_vectors = index, chunks, sentences

    def __getattr__(self, name: str):
        return getattr(self._index, name)


def query(size: int, folder: Path, n_queries: int) -> dict:
    """Load the index of ``size`` chunks, time each retriever per question, and measure recall
    against exact search."""
    import faiss

    from rag.config import SearchSettings
    from rag.index import load_index
    from rag.retrieve import bm25_ranking, dense_ranking, rank, sentence_ranking

    faiss.omp_set_num_threads(1)  # one question at a time, as the assistant runs it
    settings = SearchSettings()
    t0 = time.perf_counter()
    index = load_index(folder / "index")
    load_seconds = time.perf_counter() - t0
    loaded_mb = _rss_mb()

    questions = real_questions(n_queries)
    stand_in = index.manifest["model"]["name"] == "stand-in"
    vectors = (StandIn() if stand_in else EmbeddingLike()).questions(n_queries)
    retrievers = {
        "dense chunks": lambda q, v: dense_ranking(index, v, settings.depth),
        "sentences": lambda q, v: sentence_ranking(index, v, settings.depth),
        "bm25": lambda q, v: bm25_ranking(index, q, settings.depth),
        "hybrid": lambda q, v: rank(index, q, v, "hybrid", settings),
    }
    for name, run in retrievers.items():  # warm up: first touches of mapped pages, caches
        run(questions[0], vectors[0])
    latency: dict[str, list[float]] = {name: [] for name in retrievers}
    results: dict[str, list] = {name: [] for name in retrievers}
    for name, run in retrievers.items():  # one retriever at a time over distinct questions, so
        for q, v in zip(questions, vectors):  # BM25's one-question memo never helps the next
            t = time.perf_counter()
            results[name].append(run(q, v))
            latency[name].append((time.perf_counter() - t) * 1000)

    recall = None
    if not stand_in:
        recall = _recalls(index, questions, vectors, results, np.load(folder / "exact.npz"),
                          settings)
    return {"size": size, "load_seconds": load_seconds, "rss_after_load_mb": loaded_mb,
            "latency_ms": {name: _percentiles(values) for name, values in latency.items()},
            "recall@10": recall, "rss_end": _rss_parts(),
            "stores": {"chunks": index.chunk_vectors.describe(),
                       "sentences": index.sentence_vectors.describe()}}


def _recalls(index, questions: list[str], vectors: np.ndarray, results: dict, exact,
             settings) -> dict[str, float]:
    """Recall@10 of each approximate ranking against its exact counterpart."""
    from rag.retrieve import rank

    chunk_ids, sentence_ids = index.chunk_vectors.ids, index.sentence_vectors.ids
    store_hits = {"chunks": [], "sentences": []}
    for i in range(len(questions)):
        for name, ids, k in (("chunks", chunk_ids, settings.depth),
                             ("sentences", sentence_ids, 4 * settings.depth)):
            store = index.chunk_vectors if name == "chunks" else index.sentence_vectors
            found = [i_ for i_, _ in store.search(vectors[i], k)[:10]]
            truth = {ids[r] for r in exact[f"{name}_rows"][i][:10]}
            store_hits[name].append(len(truth.intersection(found)) / 10)
    exact_chunks = Precomputed(chunk_ids, exact["chunks_scores"], exact["chunks_rows"])
    exact_sentences = Precomputed(sentence_ids, exact["sentences_scores"],
                                  exact["sentences_rows"])
    view = ExactView(index, exact_chunks, exact_sentences)
    hybrid = []
    for i, (q, v) in enumerate(zip(questions, vectors)):
        exact_chunks.current = exact_sentences.current = i
        truth = set(rank(view, q, v, "hybrid", settings).ids[:10])
        hybrid.append(len(truth.intersection(results["hybrid"][i].ids[:10])) / max(1, len(truth)))
    return {"chunk store": statistics.mean(store_hits["chunks"]),
            "sentence store": statistics.mean(store_hits["sentences"]),
            "hybrid": statistics.mean(hybrid)}


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": ordered[len(ordered) // 2],
            "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]}


def _rss_parts() -> dict[str, float]:
    """Current resident memory in MB: anonymous (the process's own) and file-backed (pages of
    memory-mapped files that searches touched, which the system can drop and re-read)."""
    parts = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            parts[key] = int(value.split()[0]) / 1024
    return parts


def _rss_mb() -> float:
    return _rss_parts().get("VmRSS", 0.0)


# ---------------------------------------------------------------------------------- parent


def run_child(step: str, size: int, folder: Path, n_queries: int, stand_in: bool) -> dict:
    """Run one step in a fresh process and return its result with its peak memory."""
    out = folder / f"{step}.json"
    command = [sys.executable, __file__, "--child", step, "--size", str(size),
               "--work", str(folder), "--queries", str(n_queries)] + (
                   ["--stand-in-above", "0"] if stand_in else [])
    started = time.perf_counter()
    subprocess.run(command, check=True)
    result = json.loads(out.read_text(encoding="utf-8"))
    result["wall_seconds"] = time.perf_counter() - started
    return result


def child_main(step: str, size: int, folder: Path, n_queries: int, stand_in: bool) -> None:
    load_before = os.getloadavg()[0]
    result = (build(size, folder, n_queries, stand_in) if step == "build"
              else query(size, folder, n_queries))
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["load_average"] = [load_before, os.getloadavg()[0]]
    (folder / f"{step}.json").write_text(json.dumps(result), encoding="utf-8")


def disk_mb(folder: Path) -> dict[str, float]:
    """Megabytes on disk of the index folder: vectors (FAISS files and exact copies), BM25,
    records (the rest)."""
    sizes = {"vectors": 0.0, "bm25": 0.0, "records": 0.0}
    for path in folder.rglob("*"):
        if path.is_file():
            part = ("bm25" if "bm25" in path.parts
                    else "vectors" if path.suffix in (".faiss", ".npy") else "records")
            sizes[part] += path.stat().st_size / 1e6
    return sizes


def embedding_hours(chunks: int, sentences: int) -> float:
    return (chunks + sentences / SENTENCE_SPEEDUP) / CHUNKS_PER_SECOND / 3600


@dataclass
class VectorModel:
    """The vector side of a stand-in size, from the largest size built with real stores: graph
    build time, memory and disk per vector, and search time growing with the logarithm of the
    store's size (as HNSW's does)."""

    build_ms: float  # per vector inserted in a graph
    resident: float  # bytes per graph vector that searches read (codes + links)
    disk: float  # bytes per graph vector on disk (plus the exact float32 copy)
    search_ms: float  # the sentence retriever's p50 over a graph of ``reference`` vectors
    reference: int

    @classmethod
    def of(cls, rows: list[tuple[dict, dict, dict]]) -> VectorModel | None:
        for b, q, _ in reversed(rows):
            store = b["stores"]["sentences"]
            if not b["stand_in"] and store["kind"] == "hnsw":
                n = store["vectors"]
                return cls(b["timings"]["sentences store"] * 1000 / n,
                           b["resident_bytes"]["sentences"] / n, b["store_bytes"]["sentences"] / n,
                           q["latency_ms"]["sentences"]["p50"], n)
        return None

    def graph(self, n: int) -> bool:
        return n > exact_limit()

    def build_seconds(self, n: int) -> float:
        return self.build_ms * n / 1000 if self.graph(n) else 0.0

    def resident_gb(self, n: int) -> float:
        return (self.resident if self.graph(n) else 4 * DIM) * n / 1e9

    def disk_gb(self, n: int) -> float:
        return (self.disk if self.graph(n) else 4 * DIM) * n / 1e9

    def build_gb(self, n: int) -> float:
        """Memory a store takes while it is built: a graph's codes and links (its exact vectors
        go to a temporary file), or a flat store's vectors."""
        return self.resident_gb(n)

    def search_ms_at(self, n: int) -> float:
        return self.search_ms * np.log(n) / np.log(self.reference)


def _modelled(b: dict, q: dict, model: VectorModel) -> dict:
    """A stand-in size's figures with its vector side modelled (see :class:`VectorModel`)."""
    n_chunks, n_sentences = b["size"], b["sentences"]
    dense = model.search_ms_at(n_chunks)
    sentences = model.search_ms_at(n_sentences)
    measured = q["latency_ms"]
    hybrid = (measured["hybrid"]["p50"] - measured["dense chunks"]["p50"]
              - measured["sentences"]["p50"] + dense + sentences)
    stand_in_gb = sum(b["store_bytes"].values()) / 1e9  # the 8-d stores, all in memory
    return {"chunk store s": model.build_seconds(n_chunks),
            "sentence store s": model.build_seconds(n_sentences),
            "vectors disk GB": model.disk_gb(n_chunks) + model.disk_gb(n_sentences),
            "memory GB": q["peak_mb"] / 1e3 - stand_in_gb + model.resident_gb(n_chunks)
            + model.resident_gb(n_sentences),
            "build GB": b["peak_mb"] / 1e3 - stand_in_gb + model.build_gb(n_chunks)
            + model.build_gb(n_sentences),
            "dense ms": dense, "sentences ms": sentences, "hybrid ms": hybrid}


def report(rows: list[tuple[dict, dict, dict]], n_queries: int) -> None:
    """Print every table: build, disk and memory, question cost, recall, limits. Figures of a
    stand-in size's vector side are modelled and marked with *."""
    model = VectorModel.of(rows)
    modelled = {b["size"]: _modelled(b, q, model) for b, q, _ in rows
                if b["stand_in"] and model is not None}

    print("\nBuild (seconds; embedding excluded, then included as extrapolated)")
    print("| chunks | sentences | text | chunk store | sentence store | BM25 | write | total "
          "| embedding (extrapolated) | total with embedding |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for b, _, _ in rows:
        t, m = b["timings"], modelled.get(b["size"])
        stores = ((m["chunk store s"], m["sentence store s"]) if m
                  else (t["chunks store"], t["sentences store"]))
        total = t["text"] + t["bm25"] + t["write"] + sum(stores)
        mark = "*" if m else ""
        emb = embedding_hours(b["size"], b["sentences"])
        print(f"| {b['size']:,} | {b['sentences']:,} | {t['text']:.1f} | {stores[0]:.0f}{mark} "
              f"| {stores[1]:.0f}{mark} | {t['bm25']:.1f} | {t['write']:.1f} | {total:.0f}{mark} "
              f"| {emb:.1f} h | {emb + total / 3600:.1f} h |")

    print("\nStores, disk and memory (memory: peak resident, ru_maxrss of each step's process)")
    print("| chunks | chunk store | sentence store | disk: vectors / BM25 / records "
          "| build peak | load | after load + questions | of it, mapped files |")
    print("|---:|---|---|---:|---:|---:|---:|---:|")
    for b, q, d in rows:
        m = modelled.get(b["size"])
        stores = q.get("stores", b["stores"])  # as loaded and searched
        kinds = ((_kind_of(b["size"]), _kind_of(b["sentences"])) if m else
                 (_kind(stores["chunks"]), _kind(stores["sentences"])))
        vectors = f"{m['vectors disk GB']:.2f}*" if m else f"{d['vectors'] / 1e3:.2f}"
        build_gb = f"{m['build GB']:.1f}*" if m else f"{b['peak_mb'] / 1e3:.2f}"
        memory = f"{m['memory GB']:.1f}*" if m else f"{q['peak_mb'] / 1e3:.2f}"
        mapped = "–" if m else f"{q['rss_end'].get('RssFile', 0) / 1e3:.2f}"
        print(f"| {b['size']:,} | {kinds[0]} | {kinds[1]} | {vectors} / {d['bm25'] / 1e3:.2f} / "
              f"{d['records'] / 1e3:.2f} GB | {build_gb} GB | {q['load_seconds']:.1f} s "
              f"| {memory} GB | {mapped} GB |")

    print(f"\nQuestion cost (ms, p50 / p95 over {n_queries} questions, one thread; embedding the "
          "question excluded, about 15 ms)")
    names = list(rows[0][1]["latency_ms"])
    print("| chunks | " + " | ".join(names) + " |")
    print("|---:|" + "---:|" * len(names))
    for b, q, _ in rows:
        m = modelled.get(b["size"])
        cells = []
        for name in names:
            lat = q["latency_ms"][name]
            key = {"dense chunks": "dense ms", "sentences": "sentences ms",
                   "hybrid": "hybrid ms"}.get(name)
            cells.append(f"{m[key]:.1f}*" if m and key else f"{lat['p50']:.1f} / {lat['p95']:.1f}")
        print(f"| {b['size']:,} | " + " | ".join(cells) + " |")

    print("\nRecall@10 against exact search (held-out questions; 1.000 where a store is exact)")
    print("| chunks | chunk store | sentence store | hybrid ranking |")
    print("|---:|---:|---:|---:|")
    for b, q, _ in rows:
        r = q["recall@10"]
        cells = ([f"{r['chunk store']:.3f}", f"{r['sentence store']:.3f}", f"{r['hybrid']:.3f}"]
                 if r else ["not measured (stand-in vectors)"] * 3)
        print(f"| {b['size']:,} | " + " | ".join(cells) + " |")
    if modelled:
        print(f"\n* modelled from the {model.reference:,}-vector graph store measured above: "
              f"{model.build_ms:.2f} ms per vector to build, {model.resident:.0f} bytes per "
              f"vector read by searches (codes and links), {model.disk:.0f} on disk with the "
              f"exact copy, search time x log(n)/log({model.reference:,}); the rest of those "
              "rows (text, BM25, records, fusion) is measured.")
    limits(rows, modelled)


def _kind(description: dict) -> str:
    if description["kind"] == "hnsw":
        return (f"hnsw M{description['m']} efC{description['ef_construction']} "
                f"ef{description['ef_search']} {description['codes']}")
    return "flat (exact)"


def _kind_of(n: int) -> str:
    return "hnsw*" if n > exact_limit() else "flat (exact)*"


def limits(rows: list[tuple[dict, dict, dict]], modelled: dict[int, dict]) -> None:
    """The targets at the largest size, and where each part stops fitting the 2-core, 24 GB
    machine: along the line through the two largest sizes (so the interpreter's fixed memory is
    not multiplied), said so."""
    b, q, _ = rows[-1]
    size, m = b["size"], modelled.get(b["size"])
    how = "text side measured, vector side modelled (*)" if m else "measured"
    print(f"\nTargets at {size:,} chunks ({how})")
    hybrid = m["hybrid ms"] if m else q["latency_ms"]["hybrid"]["p50"]
    memory = m["memory GB"] if m else q["peak_mb"] / 1e3
    build_gb = m["build GB"] if m else b["peak_mb"] / 1e3
    print(f"- hybrid question p50 {hybrid:.0f} ms (BM25 alone "
          f"{q['latency_ms']['bm25']['p50']:.0f} ms), target {TARGET_QUERY_MS:.0f} ms: "
          f"{'met' if hybrid <= TARGET_QUERY_MS else 'missed'}")
    print(f"- peak memory after load and questions {memory:.1f} GB, target "
          f"{TARGET_MEMORY_GB:.0f} GB: {'met' if memory <= TARGET_MEMORY_GB else 'missed'}; "
          f"building it {build_gb:.1f} GB")
    if len(rows) < 2:
        return
    (b0, q0, _), (b1, q1, _) = rows[-2], rows[-1]
    m0, m1 = modelled.get(b0["size"]), modelled.get(b1["size"])
    for label, v0, v1 in (
            ("the loaded index", m0["memory GB"] if m0 else q0["peak_mb"] / 1e3, memory),
            ("its build", m0["build GB"] if m0 else b0["peak_mb"] / 1e3, build_gb)):
        slope = (v1 - v0) / (b1["size"] - b0["size"])
        if slope > 0:
            at = b1["size"] + (MACHINE_MEMORY_GB - v1) / slope
            print(f"- {label} outgrows {MACHINE_MEMORY_GB:.0f} GB at about {at / 1e6:.1f} million "
                  f"chunks (extrapolated along the line through {b0['size']:,} and "
                  f"{b1['size']:,})")
    t = b["timings"]
    stores = (m["chunk store s"] + m["sentence store s"] if m
              else t["chunks store"] + t["sentences store"])
    print(f"- building the vector stores takes {stores / 60:.0f} min{'*' if m else ''} at "
          f"{size:,} chunks, against {embedding_hours(size, b['sentences']):.0f} h of embedding "
          "(extrapolated); BM25 takes "
          f"{t['bm25'] / 60:.1f} min (measured)")


def _loads(result: dict) -> str:
    """The machine's load average when a step started and when it ended (the machine is shared:
    its other jobs slow the graph builds down by up to two times)."""
    return " -> ".join(f"{v:.1f}" for v in result["load_average"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000",
                        help="chunk counts, comma-separated")
    parser.add_argument("--queries", type=int, default=200, help="held-out questions per size")
    parser.add_argument("--work", type=Path, default=None,
                        help="where indexes are built (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the built indexes")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse the index (and results) a previous run left in --work for a "
                             "size; delete its query.json to question it again")
    parser.add_argument("--stand-in-above", type=int, default=None, metavar="N",
                        help="sizes above N get 8-d stand-in vectors in exact stores: their text "
                             "side is measured, their vector side modelled (see StandIn)")
    parser.add_argument("--exact-limit", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=("build", "query"), help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.exact_limit is not None:  # children inherit the environment
        os.environ["RAG_SCALE_EXACT_LIMIT"] = str(args.exact_limit)
    if args.child:
        child_main(args.child, args.size, args.work, args.queries,
                   args.stand_in_above is not None and args.size > args.stand_in_above)
        return
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    work = args.work or Path(tempfile.mkdtemp(prefix="rag-scale-"))
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GB; "
          f"vectors: random e5-like unit vectors (384-d), text: PIAF + SQuAD 2.0 sentences; "
          f"embedding extrapolated at {CHUNKS_PER_SECOND:.0f} chunks/s and sentences "
          f"{SENTENCE_SPEEDUP}x faster", flush=True)
    rows = []
    try:
        for size in sizes:
            folder = work / str(size)
            folder.mkdir(parents=True, exist_ok=True)
            stand_in = args.stand_in_above is not None and size > args.stand_in_above
            built_file, queried_file = folder / "build.json", folder / "query.json"
            if args.reuse and built_file.exists():
                built = json.loads(built_file.read_text(encoding="utf-8"))
                again = not queried_file.exists()
                queried = (run_child("query", size, folder, args.queries, stand_in) if again
                           else json.loads(queried_file.read_text(encoding="utf-8")))
                rows.append((built, queried, disk_mb(folder / "index")))
                print(f"{size:,} chunks: index of an earlier run reused (load average "
                      f"{_loads(built)} while it was built)"
                      + (", questioned again" if again else ", results reused"), flush=True)
                continue
            built = run_child("build", size, folder, args.queries, stand_in)
            queried = run_child("query", size, folder, args.queries, stand_in)
            rows.append((built, queried, disk_mb(folder / "index")))
            print(f"{size:,} chunks: built in {built['wall_seconds']:.0f} s "
                  f"(load average {_loads(built)}), questioned in "
                  f"{queried['wall_seconds']:.0f} s", flush=True)
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    if rows:
        report(rows, args.queries)


if __name__ == "__main__":
    main()
