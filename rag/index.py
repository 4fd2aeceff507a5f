"""The index folder: FAISS vectors, BM25, sentence vectors and a JSON manifest.

Layout of an index folder::

    CURRENT                  name of the complete build in use (replaced atomically)
    <build>/manifest.json    format version, model, settings, every file's hash and chunk ids
    <build>/chunks.jsonl     one chunk per line, row order = FAISS row = BM25 row
    <build>/dense.faiss      exact inner-product index over normalized chunk vectors
    <build>/bm25/            bm25s arrays (.npy without pickle) and vocabulary (.json)
    <build>/sentences.npy    int64 rows (chunk row, start, end) of every sentence, file offsets
    <build>/sentence_vectors.npy  one normalized vector per sentence (answers pick sentences)

Every build is written into a fresh folder and only then made current by replacing ``CURRENT``,
so a build killed at any moment leaves the previous index in use; leftovers are removed by the next
successful build. Nothing here is a pickle.

Updates are incremental: a file whose content hash is unchanged keeps its chunks and vectors; only
added or changed files are embedded. A change of model or of the settings in the manifest makes a
full rebuild.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

from .chunking import split_document
from .config import IndexSettings
from .corpus import load_corpus
from .embedder import Embedder
from .lexical import LexicalIndex
from .records import Chunk, Document
from .sentences import sentence_spans

log = logging.getLogger(__name__)

#: Bump when the folder layout or a file format changes; older indexes then ask for --rebuild.
FORMAT_VERSION = 1


class IndexStoreError(Exception):
    """The index folder cannot be used as it is; the message says what to do."""


@dataclass
class BuildReport:
    """Summary of one ``update_index`` run (printed by ``rag index``)."""

    files: int
    chunks: int
    embedded: int
    reused: int
    removed: int
    seconds: float
    full_rebuild: bool = False
    reason: str = ""

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("full_rebuild", "reason")}


@dataclass
class Index:
    """A loaded, read-only index."""

    folder: Path
    manifest: dict
    chunks: list[Chunk]
    dense: faiss.Index
    lexical: LexicalIndex
    sentences: np.ndarray  # (n, 3) int64: chunk row, start, end (file offsets)
    sentence_vectors: np.ndarray  # (n, dim) float32

    @cached_property
    def chunk_vectors(self) -> np.ndarray:
        """All chunk vectors as one array, read from FAISS once (sentence scoring and
        incremental updates need them by row)."""
        if not self.dense.ntotal:
            return np.zeros((0, self.dense.d), dtype=np.float32)
        return self.dense.reconstruct_n(0, self.dense.ntotal)

    @cached_property
    def _source_texts(self) -> dict[str, str]:
        texts: dict[str, list[str]] = {}
        for chunk in self.chunks:
            texts.setdefault(chunk.source, []).append(chunk.text)
        return {source: "\n".join(parts) for source, parts in texts.items()}

    def source_text(self, source: str) -> str:
        """The indexed (kept) text of one file: its chunks joined."""
        return self._source_texts.get(source, "")

    def sentence_text(self, row: int) -> str:
        chunk_row, start, end = (int(x) for x in self.sentences[row])
        chunk = self.chunks[chunk_row]
        return chunk.text[start - chunk.start:end - chunk.start]


# ---------------------------------------------------------------------------------------------
# Reading


def current_build(index_dir: Path) -> Path | None:
    """The folder of the build in use, or None when ``index_dir`` holds no index yet."""
    pointer = Path(index_dir) / "CURRENT"
    if not pointer.exists():
        return None
    name = pointer.read_text(encoding="utf-8").strip()
    folder = Path(index_dir) / name
    if not name or "/" in name or not folder.is_dir():
        raise IndexStoreError(
            f"index at {index_dir} is unreadable (CURRENT names no build); run `rag index --rebuild`")
    return folder


def read_manifest(folder: Path) -> dict:
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IndexStoreError(
            f"index at {folder.parent} is unreadable ({exc.__class__.__name__}); "
            "run `rag index --rebuild`") from None
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise IndexStoreError(
            f"index at {folder.parent} has format version {version}, this program reads version "
            f"{FORMAT_VERSION}; run `rag index --rebuild`")
    return manifest


def load_index(index_dir: Path) -> Index | None:
    """The index in ``index_dir``, or None when there is none yet."""
    # faiss ships its own OpenBLAS, whose threads keep spinning after a search and then fight
    # torch's threads for the CPU: on two cores the next query embedding took 110 ms instead of
    # 20. One question at a time gains nothing from BLAS threads.
    threadpool_limits(1, user_api="blas")
    folder = current_build(index_dir)
    if folder is None:
        return None
    manifest = read_manifest(folder)
    try:
        with open(folder / "chunks.jsonl", encoding="utf-8") as f:
            chunks = [Chunk(**json.loads(line)) for line in f]
        dense = faiss.read_index(str(folder / "dense.faiss"))
        lexical = LexicalIndex.load(folder / "bm25", len(chunks))
        sentences = np.load(folder / "sentences.npy", allow_pickle=False)
        sentence_vectors = np.load(folder / "sentence_vectors.npy", allow_pickle=False)
    except Exception as exc:  # any damage to the files means the same thing to the user
        raise IndexStoreError(
            f"index at {index_dir} is unreadable ({exc.__class__.__name__}); "
            "run `rag index --rebuild`") from None
    if dense.ntotal != len(chunks) or len(sentences) != len(sentence_vectors):
        raise IndexStoreError(f"index at {index_dir} is inconsistent; run `rag index --rebuild`")
    return Index(Path(index_dir), manifest, chunks, dense, lexical, sentences, sentence_vectors)


# ---------------------------------------------------------------------------------------------
# Building


def _rebuild_reason(manifest: dict, settings: IndexSettings) -> str:
    """Why the old index cannot be reused at all ("" when it can)."""
    old = manifest.get("settings", {})
    if old.get("model") != settings.model:
        return f"model changed ({old.get('model')} -> {settings.model})"
    changed = [k for k, v in settings.to_json().items() if old.get(k) != v]
    return f"settings changed ({', '.join(changed)})" if changed else ""


def _sentences_of(chunks: list[Chunk], first_row: int) -> list[tuple[int, int, int]]:
    """(chunk row, start, end) of every sentence of ``chunks``, in file offsets."""
    rows = []
    for i, chunk in enumerate(chunks):
        for s, e in sentence_spans(chunk.text):
            rows.append((first_row + i, chunk.start + s, chunk.start + e))
    return rows


def update_index(corpus: Path, index_dir: Path, settings: IndexSettings,
                 load_model: Callable[[], Embedder], rebuild: bool = False,
                 progress: bool = False) -> BuildReport:
    """Bring the index of ``corpus`` up to date, embedding only what changed.

    ``load_model`` is called only when something must be embedded, so an unchanged corpus is
    checked in well under a second.
    """
    started = time.perf_counter()
    docs = load_corpus(Path(corpus), settings.min_words)
    old: Index | None = None
    reason = "requested with --rebuild" if rebuild else ""
    if not rebuild:
        old = load_index(index_dir)
        if old is not None:
            reason = _rebuild_reason(old.manifest, settings)
            if reason:
                old = None
    old_files: dict = old.manifest["files"] if old else {}
    unchanged = [d for d in docs if old_files.get(d.source, {}).get("hash") == d.content_hash]
    removed = len(set(old_files) - {d.source for d in docs})
    if old is not None and len(unchanged) == len(docs) and not removed:
        return BuildReport(len(docs), len(old.chunks), 0, len(old.chunks), 0,
                           time.perf_counter() - started)

    embedder = load_model()
    if old is not None and old.manifest["model"].get("weights_hash") != embedder.weights_hash:
        reason, old, old_files, unchanged = "model weights changed", None, {}, []
    report = _write_build(docs, old, {d.source for d in unchanged}, index_dir, settings,
                          embedder, progress)
    report.removed = removed
    report.seconds = time.perf_counter() - started
    report.full_rebuild = old is None and bool(reason)
    report.reason = reason
    return report


def _write_build(docs: list[Document], old: Index | None, reuse: set[str], index_dir: Path,
                 settings: IndexSettings, embedder: Embedder, progress: bool) -> BuildReport:
    """Assemble chunks and vectors (reused or new) and write them as a new current build."""
    old_rows: dict[str, list[int]] = {}
    old_sentence_rows: dict[int, list[int]] = {}
    old_vectors = old.chunk_vectors if old is not None else None
    if old is not None:
        for row, chunk in enumerate(old.chunks):
            old_rows.setdefault(chunk.source, []).append(row)
        for srow, chunk_row in enumerate(old.sentences[:, 0]):
            old_sentence_rows.setdefault(int(chunk_row), []).append(srow)

    chunks: list[Chunk] = []
    vector_parts: list[np.ndarray] = []
    sentence_rows: list[tuple[int, int, int]] = []
    sentence_vector_parts: list[np.ndarray] = []
    to_embed: list[tuple[int, int]] = []  # (first new row, count) of chunks to embed
    new_sentence_slots: list[tuple[int, int]] = []
    files: dict[str, dict] = {}
    reused = 0
    for doc in docs:
        first = len(chunks)
        if old is not None and doc.source in reuse:
            rows = old_rows.get(doc.source, [])
            doc_chunks = [old.chunks[r] for r in rows]
            vector_parts.append(old_vectors[rows] if rows else np.zeros((0, embedder.dim), np.float32))
            for new_row, r in enumerate(rows, start=first):
                for srow in old_sentence_rows.get(r, []):
                    _, s, e = old.sentences[srow]
                    sentence_rows.append((new_row, int(s), int(e)))
                    sentence_vector_parts.append(old.sentence_vectors[srow:srow + 1])
            reused += len(doc_chunks)
        else:
            doc_chunks = split_document(doc, settings.chunk_size, settings.chunk_overlap)
            to_embed.append((first, len(doc_chunks)))
            vector_parts.append(np.zeros((len(doc_chunks), embedder.dim), np.float32))
            new = _sentences_of(doc_chunks, first)
            new_sentence_slots.append((len(sentence_rows), len(new)))
            sentence_rows.extend(new)
            sentence_vector_parts.append(np.zeros((len(new), embedder.dim), np.float32))
        chunks.extend(doc_chunks)
        files[doc.source] = {"hash": doc.content_hash, "chunks": [c.id for c in doc_chunks]}

    vectors = np.concatenate(vector_parts) if vector_parts else np.zeros((0, embedder.dim), np.float32)
    sentence_vectors = (np.concatenate(sentence_vector_parts) if sentence_vector_parts
                        else np.zeros((0, embedder.dim), np.float32))
    sentences = np.asarray(sentence_rows, dtype=np.int64).reshape(-1, 3)

    new_rows = [r for first, n in to_embed for r in range(first, first + n)]
    new_sentences = [r for first, n in new_sentence_slots for r in range(first, first + n)]
    if new_rows:
        vectors[new_rows] = embedder.encode_passages([chunks[r].text for r in new_rows],
                                                     show_progress=progress)
    if new_sentences:
        texts = []
        for r in new_sentences:
            chunk_row, s, e = sentences[r]
            chunk = chunks[int(chunk_row)]
            texts.append(chunk.text[s - chunk.start:e - chunk.start])
        sentence_vectors[new_sentences] = embedder.encode_passages(texts, show_progress=progress)

    manifest = {
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": {"name": embedder.name, "weights_hash": embedder.weights_hash,
                  "dim": embedder.dim},
        "settings": settings.to_json(),
        "counts": {"files": len(docs), "chunks": len(chunks), "sentences": len(sentences)},
        "files": files,
    }
    write_build(Path(index_dir), manifest, chunks, vectors, sentences, sentence_vectors)
    return BuildReport(len(docs), len(chunks), len(new_rows), reused, 0, 0.0)


def write_build(index_dir: Path, manifest: dict, chunks: list[Chunk], vectors: np.ndarray,
                sentences: np.ndarray, sentence_vectors: np.ndarray) -> Path:
    """Write a complete build beside the current one, then make it current atomically."""
    index_dir.mkdir(parents=True, exist_ok=True)
    name = f"build-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    folder = index_dir / name
    folder.mkdir()
    with open(folder / "chunks.jsonl", "w", encoding="utf-8") as f:
        for chunk in chunks:
            f.write(json.dumps(asdict(chunk), ensure_ascii=False) + "\n")
    dense = faiss.IndexFlatIP(int(manifest["model"]["dim"]))
    if len(vectors):
        dense.add(np.ascontiguousarray(vectors, dtype=np.float32))
    faiss.write_index(dense, str(folder / "dense.faiss"))
    LexicalIndex.build([c.text for c in chunks]).save(folder / "bm25")
    np.save(folder / "sentences.npy", sentences, allow_pickle=False)
    np.save(folder / "sentence_vectors.npy", sentence_vectors.astype(np.float32), allow_pickle=False)
    (folder / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=1),
                                          encoding="utf-8")
    _fsync_tree(folder)
    pointer_tmp = index_dir / f"CURRENT.tmp-{os.getpid()}"
    pointer_tmp.write_text(name + "\n", encoding="utf-8")
    _fsync_file(pointer_tmp)
    os.replace(pointer_tmp, index_dir / "CURRENT")
    _fsync_file(index_dir)
    _remove_stale(index_dir, keep=name)
    return folder


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            _fsync_file(path)
    _fsync_file(folder)


def _remove_stale(index_dir: Path, keep: str) -> None:
    """Remove older builds and pointer leftovers (from this or a killed earlier run)."""
    for path in index_dir.iterdir():
        if path.name.startswith("build-") and path.name != keep:
            shutil.rmtree(path, ignore_errors=True)
        elif path.name.startswith("CURRENT.tmp-"):
            path.unlink(missing_ok=True)
