"""The index folder: chunk and sentence vectors, BM25 and a JSON manifest.

Layout of an index folder::

    CURRENT                   name of the complete build in use (replaced atomically)
    <build>/manifest.json     format version, model, settings, every file's hash and chunk ids
    <build>/chunks.jsonl      one chunk per line, in file and reading order
    <build>/sentences.jsonl   one sentence per line: id, chunk id, file offsets
    <build>/chunks.faiss      chunk vectors (+ chunks.ids.json), see rag/vector_store.py
    <build>/sentences.faiss   sentence vectors (+ sentences.ids.json): answers pick sentences
    <build>/bm25/             bm25s arrays (.npy without pickle), vocabulary, ids, stop words

Everything is keyed by chunk id and sentence id, never by row: the vector stores, BM25 and the
records agree on ids, and :class:`Index` answers every lookup the other modules need.

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
from collections.abc import Callable, Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from .chunking import split_document
from .config import IndexSettings
from .corpus import load_corpus
from .embedder import Embedder
from .errors import IndexStoreError
from .lexical import LexicalIndex, stop_words
from .records import Chunk, Document, Sentence
from .sentences import sentence_spans
from .vector_store import FaissVectorStore, VectorStore

log = logging.getLogger(__name__)

#: Bump when the folder layout or a file format changes; older indexes then ask for --rebuild.
FORMAT_VERSION = 2


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
    """A loaded, read-only index, with every lookup by id the retriever and answerers need."""

    folder: Path
    manifest: dict
    chunks: list[Chunk]  # in file and reading order
    sentences: list[Sentence]  # in chunk and reading order
    chunk_vectors: VectorStore
    sentence_vectors: VectorStore
    lexical: LexicalIndex

    def __post_init__(self) -> None:
        self._chunk_at = {c.id: i for i, c in enumerate(self.chunks)}
        self._sentence_by_id = {s.id: s for s in self.sentences}
        self._sentences_of: dict[str, list[Sentence]] = {}
        for sentence in self.sentences:
            self._sentences_of.setdefault(sentence.chunk_id, []).append(sentence)

    def chunk(self, chunk_id: str) -> Chunk:
        return self.chunks[self._chunk_at[chunk_id]]

    def position(self, chunk_id: str) -> int:
        """The chunk's place in reading order over the whole index (breaks ranking ties)."""
        return self._chunk_at[chunk_id]

    def sentence(self, sentence_id: str) -> Sentence:
        return self._sentence_by_id[sentence_id]

    def sentences_of(self, chunk_ids: Sequence[str]) -> list[Sentence]:
        """The sentences of ``chunk_ids``, chunk by chunk, in reading order."""
        return [s for cid in chunk_ids for s in self._sentences_of.get(cid, [])]

    def sentence_text(self, sentence: Sentence) -> str:
        return _sentence_text(sentence, self.chunk(sentence.chunk_id))

    def sentence_lines(self, sentence: Sentence) -> tuple[int, int]:
        """First and last line (1-based) of ``sentence`` in its file."""
        chunk = self.chunk(sentence.chunk_id)
        offset = sentence.start - chunk.start
        start_line = chunk.start_line + chunk.text.count("\n", 0, offset)
        return start_line, start_line + chunk.text.count("\n", offset, sentence.end - chunk.start)

    def neighbours(self, chunk_id: str, around: int = 1) -> list[Chunk]:
        """The chunk with up to ``around`` chunks before and after it from the same file."""
        at = self._chunk_at[chunk_id]
        source = self.chunks[at].source
        return [self.chunks[i] for i in range(max(0, at - around), at + around + 1)
                if i < len(self.chunks) and self.chunks[i].source == source]

    @cached_property
    def _source_texts(self) -> dict[str, str]:
        texts: dict[str, list[str]] = {}
        for chunk in self.chunks:
            texts.setdefault(chunk.source, []).append(chunk.text)
        return {source: "\n".join(parts) for source, parts in texts.items()}

    def source_text(self, source: str) -> str:
        """The indexed (kept) text of one file: its chunks joined."""
        return self._source_texts.get(source, "")


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
        chunks = [Chunk(**row) for row in _read_jsonl(folder / "chunks.jsonl")]
        sentences = [Sentence(**row) for row in _read_jsonl(folder / "sentences.jsonl")]
        chunk_vectors = FaissVectorStore.load(folder, "chunks")
        sentence_vectors = FaissVectorStore.load(folder, "sentences")
        lexical = LexicalIndex.load(folder / "bm25")
    except Exception as exc:  # any damage to the files means the same thing to the user
        raise IndexStoreError(
            f"index at {index_dir} is unreadable ({exc.__class__.__name__}); "
            "run `rag index --rebuild`") from None
    chunk_ids = [c.id for c in chunks]
    if (chunk_vectors.ids != chunk_ids or lexical.ids != chunk_ids
            or sentence_vectors.ids != [s.id for s in sentences]):
        raise IndexStoreError(f"index at {index_dir} is inconsistent; run `rag index --rebuild`")
    return Index(Path(index_dir), manifest, chunks, sentences, chunk_vectors, sentence_vectors,
                 lexical)


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ---------------------------------------------------------------------------------------------
# Building


def _rebuild_reason(manifest: dict, settings: IndexSettings) -> str:
    """Why the old index cannot be reused at all ("" when it can)."""
    old = manifest.get("settings", {})
    if old.get("model") != settings.model:
        return f"model changed ({old.get('model')} -> {settings.model})"
    changed = [k for k, v in settings.to_json().items() if old.get(k) != v]
    return f"settings changed ({', '.join(changed)})" if changed else ""


def sentences_of(chunks: list[Chunk]) -> list[Sentence]:
    """Every sentence of ``chunks``, in file offsets, with ids ``<chunk id>:<k>``."""
    return [Sentence(f"{chunk.id}:{k}", chunk.id, chunk.start + s, chunk.start + e)
            for chunk in chunks for k, (s, e) in enumerate(sentence_spans(chunk.text))]


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
    chunks: list[Chunk] = []
    files: dict[str, dict] = {}
    fresh: list[Chunk] = []
    for doc in docs:
        if old is not None and doc.source in reuse:
            doc_chunks = [old.chunk(cid) for cid in old.manifest["files"][doc.source]["chunks"]]
        else:
            doc_chunks = split_document(doc, settings.chunk_size, settings.chunk_overlap)
            fresh.extend(doc_chunks)
        chunks.extend(doc_chunks)
        files[doc.source] = {"hash": doc.content_hash, "chunks": [c.id for c in doc_chunks]}
    fresh_ids = {c.id for c in fresh}
    sentences = sentences_of(chunks)
    fresh_sentences = [s for s in sentences if s.chunk_id in fresh_ids]

    chunk_texts = [c.text for c in fresh]
    new_chunk_vectors = embedder.encode_passages(chunk_texts, show_progress=progress)
    by_id = {c.id: c for c in fresh}
    sentence_texts = [_sentence_text(s, by_id[s.chunk_id]) for s in fresh_sentences]
    new_sentence_vectors = embedder.encode_passages(sentence_texts, show_progress=progress)

    chunk_store = _assemble(embedder.dim, [c.id for c in chunks],
                            dict(zip((c.id for c in fresh), new_chunk_vectors)),
                            old.chunk_vectors if old else None)
    sentence_store = _assemble(embedder.dim, [s.id for s in sentences],
                               dict(zip((s.id for s in fresh_sentences), new_sentence_vectors)),
                               old.sentence_vectors if old else None)
    lexical = LexicalIndex.build([c.id for c in chunks], [c.text for c in chunks],
                                 stop_words(settings.question_stop_words))
    manifest = {
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": {"name": embedder.name, "weights_hash": embedder.weights_hash,
                  "dim": embedder.dim},
        "settings": settings.to_json(),
        "counts": {"files": len(docs), "chunks": len(chunks), "sentences": len(sentences)},
        "files": files,
    }
    write_build(Path(index_dir), manifest, chunks, sentences, chunk_store, sentence_store, lexical)
    return BuildReport(len(docs), len(chunks), len(fresh), len(chunks) - len(fresh), 0, 0.0)


def _sentence_text(sentence: Sentence, chunk: Chunk) -> str:
    return chunk.text[sentence.start - chunk.start:sentence.end - chunk.start]


def _assemble(dim: int, ids: list[str], new: dict[str, np.ndarray],
              old: VectorStore | None) -> FaissVectorStore:
    """A store holding ``ids`` in order: fresh vectors from ``new``, the rest from ``old``."""
    vectors = np.zeros((len(ids), dim), dtype=np.float32)
    reused = [i for i, id_ in enumerate(ids) if id_ not in new]
    if reused:
        vectors[reused] = old.get([ids[i] for i in reused])
    for i, id_ in enumerate(ids):
        if id_ in new:
            vectors[i] = new[id_]
    store = FaissVectorStore(dim)
    store.add(ids, vectors)
    return store


def write_build(index_dir: Path, manifest: dict, chunks: list[Chunk], sentences: list[Sentence],
                chunk_vectors: VectorStore, sentence_vectors: VectorStore,
                lexical: LexicalIndex) -> Path:
    """Write a complete build beside the current one, then make it current atomically."""
    index_dir.mkdir(parents=True, exist_ok=True)
    name = f"build-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    folder = index_dir / name
    folder.mkdir()
    _write_jsonl(folder / "chunks.jsonl", chunks)
    _write_jsonl(folder / "sentences.jsonl", sentences)
    chunk_vectors.save(folder, "chunks")
    sentence_vectors.save(folder, "sentences")
    (folder / "bm25").mkdir()
    lexical.save(folder / "bm25")
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


def _write_jsonl(path: Path, records: Sequence) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(asdict(record), ensure_ascii=False) + "\n")


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
