"""The index folder: chunk and sentence vectors, BM25 and a JSON manifest.

Layout of an index folder::

    CURRENT                   name of the complete build in use (replaced atomically)
    LOCK                      held by the one build at work on this index (rag/lock.py)
    <build>/manifest.json     format version, model, settings, every file's hash and chunk ids
    <build>/chunks.jsonl      one chunk per line, in file and reading order
    <build>/sentences.jsonl   one sentence per line: id, chunk id, file offsets
    <build>/chunks.faiss      chunk vectors (+ chunks.ids.json), see rag/vector_store.py
    <build>/sentences.faiss   sentence vectors (+ sentences.ids.json): answers pick sentences
    <build>/bm25/             bm25s arrays (.npy without pickle), vocabulary, ids, stop words

With ``--store postgres://...`` a build keeps only ``chunks.ids.json`` and ``sentences.ids.json``;
the vectors are in tables on the servers its manifest names (rag/stores.py, rag/pg_store.py).

Everything is keyed by chunk id and sentence id, never by row: the vector stores, BM25 and the
records agree on ids, and :class:`Index` answers every lookup the other modules need.

Every build is written into a fresh folder and only then made current by replacing ``CURRENT``,
so a build killed at any moment leaves the previous index in use. One build at a time works on an
index (the ``LOCK``); it removes leftovers of killed builds when it starts and older builds once
its own is current. Readers never wait for it: a build never changes a folder ``CURRENT`` names.
Nothing here is a pickle.

Updates are incremental: a file whose content hash is unchanged keeps its chunks and vectors; only
added or changed files are read, chunked and embedded. Finding that nothing changed reads only
``CURRENT`` and ``manifest.json`` and hashes the corpus files' bytes: no vector, no BM25 array,
no HTML is loaded, so it stays well under a second for 100,000 chunks. A change of model or of
the settings in the manifest makes a full rebuild, and so does a damaged index (``CURRENT`` or
the manifest unreadable, a data file missing or of the wrong size), with a warning.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from bisect import bisect_right
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from .chunking import split_document
from .config import SETTINGS_ADDED_LATER, IndexSettings
from .corpus import (SourceFile, content_hash, display_name, no_documents, parse_document,
                     scan_corpus, warn_unreadable)
from .embedder import Embedder
from .errors import IndexDamagedError, IndexStoreError, RagError
from .lexical import LexicalIndex, stop_words
from .lock import IndexLock
from .records import Chunk, Document, Sentence
from .sentence_vectors import OnDemandSentenceVectors
from .sentences import sentence_spans
from . import stores
from .stores import StoreLocation
from .vector_store import FaissVectorStore, VectorStore

log = logging.getLogger(__name__)

#: Bump when the folder layout or a file format changes; older indexes then ask for --rebuild
#: (an index of another version is not damaged: a newer program may still read it).
FORMAT_VERSION = 2
POINTER = "CURRENT"
#: What ``CURRENT`` may name: a build folder this module wrote, nothing outside the index folder.
_BUILD_NAME = re.compile(r"build-[0-9A-Za-z-]+")


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
    #: The previous index was damaged and was replaced; the warning saying so was logged.
    repaired: bool = False

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items()
                if k not in ("full_rebuild", "reason", "repaired")}


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
    #: The name of the build folder it was read from: a running chat compares it with ``CURRENT``
    #: to know whether another index is now in use.
    build: str = ""

    def __post_init__(self) -> None:
        self._chunk_at = {c.id: i for i, c in enumerate(self.chunks)}
        # Sentences come chunk by chunk in the chunks' order, so one offset per chunk finds a
        # chunk's sentences and a sentence by its id (<chunk id>:<k>), without a dictionary of
        # every sentence (millions of entries in a large index).
        self._first_sentence = _first_sentences(self.chunks, self.sentences)

    def chunk(self, chunk_id: str) -> Chunk:
        return self.chunks[self._chunk_at[chunk_id]]

    def position(self, chunk_id: str) -> int:
        """The chunk's place in reading order over the whole index (breaks ranking ties)."""
        return self._chunk_at[chunk_id]

    def sentence(self, sentence_id: str) -> Sentence:
        chunk_id, _, k = sentence_id.rpartition(":")
        at = self._chunk_at.get(chunk_id)
        if at is None or not k.isdigit():
            raise KeyError(sentence_id)
        i = int(self._first_sentence[at]) + int(k)
        if i >= self._first_sentence[at + 1] or self.sentences[i].id != sentence_id:
            raise KeyError(sentence_id)
        return self.sentences[i]

    def sentences_of(self, chunk_ids: Sequence[str]) -> list[Sentence]:
        """The sentences of ``chunk_ids``, chunk by chunk, in reading order."""
        out: list[Sentence] = []
        for cid in chunk_ids:
            at = self._chunk_at.get(cid)
            if at is not None:
                out.extend(self.sentences[self._first_sentence[at]:self._first_sentence[at + 1]])
        return out

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
    def _pages(self) -> dict[str, tuple[list[int], list[int]]]:
        return {source: ([p[0] for p in entry["pages"]], [p[1] for p in entry["pages"]])
                for source, entry in self.manifest["files"].items() if entry.get("pages")}

    def on_page(self, source: str, offset: int, start_line: int,
                end_line: int) -> tuple[int | None, int, int]:
        """(page, first line, last line) of a span of ``source`` that starts at ``offset`` and
        covers file lines ``start_line``..``end_line``: for a file with pages, the page holding
        ``offset`` and the lines counted within that page (as its source view numbers them);
        (None, start_line, end_line) for a file without pages."""
        pages = self._pages.get(source)
        if pages is None:
            return None, start_line, end_line
        offsets, lines = pages
        page = max(1, bisect_right(offsets, offset))
        first = lines[page - 1]
        return page, start_line - first + 1, end_line - first + 1

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


def check_index_dir(index_dir: Path) -> None:
    """An index path that exists must be a folder: said at once, before any file is read."""
    if index_dir.exists() and not index_dir.is_dir():
        raise IndexStoreError(f"index path {index_dir} is a file, not a folder; give a folder "
                              "with --index (or leave --index out)")


def _pointer_name(index_dir: Path) -> str | None:
    """The build ``CURRENT`` names; None when there is no index yet (no ``CURRENT``)."""
    try:
        raw = (index_dir / POINTER).read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise IndexDamagedError(index_dir, "CURRENT is a folder") from None
    except OSError as exc:
        why = exc.strerror or exc.__class__.__name__
        raise IndexDamagedError(index_dir, f"CURRENT cannot be read: {why}") from None
    name = raw.decode("ascii", errors="replace").strip()
    if not _BUILD_NAME.fullmatch(name):
        raise IndexDamagedError(index_dir, "CURRENT holds no build name")
    if not (index_dir / name).is_dir():
        raise IndexDamagedError(index_dir, f"CURRENT names {name}, which is missing")
    return name


def _pointer_or_none(index_dir: Path) -> str | None:
    """The build ``CURRENT`` names, or None when there is none or it is damaged."""
    try:
        return _pointer_name(index_dir)
    except IndexStoreError:
        return None


def current_build(index_dir: Path) -> Path | None:
    """The folder of the build in use, or None when ``index_dir`` holds no index yet."""
    name = _pointer_name(Path(index_dir))
    return None if name is None else Path(index_dir) / name


def read_manifest(folder: Path) -> dict:
    """The manifest of a build folder, checked for every key the program reads."""
    index_dir = folder.parent
    try:
        manifest = json.loads((folder / "manifest.json").read_bytes())
    except (OSError, ValueError, RecursionError) as exc:
        raise IndexDamagedError(
            index_dir, f"manifest.json is unreadable: {exc.__class__.__name__}") from None
    if not isinstance(manifest, dict):
        raise IndexDamagedError(index_dir, "manifest.json holds no manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise IndexDamagedError(index_dir, "manifest.json has no format version")
    if version != FORMAT_VERSION:
        raise IndexStoreError(
            f"index at {index_dir} has format version {version}, this program reads version "
            f"{FORMAT_VERSION}; run `rag index --rebuild`")
    problem = _manifest_problem(manifest)
    if problem:
        raise IndexDamagedError(index_dir, problem)
    return manifest


def _is_str_dict(value: object, values: type | tuple[type, ...]) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, values) for k, v in value.items())


def _manifest_problem(manifest: dict) -> str:
    """What a manifest lacks of what the program reads ("" when nothing)."""
    model, counts = manifest.get("model"), manifest.get("counts")
    if not isinstance(model, dict) or not all(isinstance(model.get(k), str)
                                              for k in ("name", "weights_hash")):
        return "manifest.json names no model"
    settings, created = manifest.get("settings"), manifest.get("created")
    if not isinstance(settings, dict) or not isinstance(created, str):
        return "manifest.json records no settings"
    if not isinstance(counts, dict) or not all(
            isinstance(counts.get(k), int) for k in ("files", "chunks", "sentences")):
        return "manifest.json has no counts"
    files = manifest.get("files")
    if not _is_str_dict(files, dict) or not all(
            isinstance(e.get("hash"), str) and isinstance(e.get("chunks"), list)
            and all(isinstance(c, str) for c in e["chunks"]) for e in files.values()):
        return "manifest.json lists no files"
    if not all(_valid_pages(e.get("pages", [[0, 1]])) for e in files.values()):
        return "manifest.json has a bad list of pages"
    skipped = manifest.get("skipped", {})
    if not _is_str_dict(skipped, dict) or not all(
            isinstance(e.get("hash"), str) and isinstance(e.get("reason"), str)
            for e in skipped.values()):
        return "manifest.json has a bad list of skipped files"
    sizes = manifest.get("sizes", {})
    if not _is_str_dict(sizes, int) or any(
            Path(rel).is_absolute() or ".." in Path(rel).parts for rel in sizes):
        return "manifest.json has a bad list of file sizes"
    return ""


def _valid_pages(pages: object) -> bool:
    """A file's "pages": [[offset, first line], ...], both ascending from [0, 1]."""
    if not isinstance(pages, list) or not pages or pages[0] != [0, 1]:
        return False
    previous = (0, 1)
    for entry in pages:
        if (not isinstance(entry, list) or len(entry) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in entry)
                or entry[0] < previous[0] or entry[1] < previous[1]):
            return False
        previous = (entry[0], entry[1])
    return True


def page_starts(doc: Document) -> list[list[int]]:
    """[offset, first line] of each page of ``doc`` (empty for a file without pages): what the
    manifest records, so that a citation finds its page, and its line within the page, from its
    offset and file line alone, without reading the file again."""
    out, line, at = [], 1, 0
    for start in doc.pages:
        line += doc.text.count("\n", at, start)
        at = start
        out.append([start, line])
    return out


def _damage(folder: Path, manifest: dict) -> str:
    """A data file of the build that is missing or not the size it was written with ("" when
    none): found with one ``stat`` per file, so the unchanged check stays cheap. Builds written
    before sizes were recorded are not checked here; loading them checks them."""
    for rel, size in manifest.get("sizes", {}).items():
        try:
            actual = (folder / rel).stat().st_size
        except OSError:
            return f"{rel} is missing"
        if actual != size:
            return f"{rel} has {actual} bytes instead of {size}"
    return ""


@dataclass
class _State:
    """The build in use and its checked manifest; nothing else of it is read."""

    folder: Path
    manifest: dict


def _read_state(index_dir: Path) -> _State | None:
    """The current build's manifest, or None without an index.

    Raises IndexDamagedError for a damaged index, IndexStoreError for another format version.
    """
    name = _pointer_name(index_dir)
    if name is None:
        return None
    folder = index_dir / name
    return _State(folder, _checked_manifest(index_dir, folder))


def _checked_manifest(index_dir: Path, folder: Path) -> dict:
    """The build's manifest, with its data files found where and as large as it says."""
    manifest = read_manifest(folder)
    damage = _damage(folder, manifest)
    if damage:
        raise IndexDamagedError(index_dir, damage)
    return manifest


#: Times ``load_index`` follows ``CURRENT`` when a build replaced the build it was reading.
_LOAD_ATTEMPTS = 3


def load_index(index_dir: Path, store: StoreLocation | None = None) -> Index | None:
    """The index in ``index_dir``, or None when there is none yet.

    Never waits for a build. If a build switches ``CURRENT`` and removes the build being read
    meanwhile, the new one is read instead. ``store`` gives the URLs (and passwords) of the
    servers of an index whose vectors are in PostgreSQL; without it, the manifest's are used.
    """
    # faiss ships its own OpenBLAS, whose threads keep spinning after a search and then fight
    # torch's threads for the CPU: on two cores the next query embedding took 110 ms instead of
    # 20. One question at a time gains nothing from BLAS threads.
    threadpool_limits(1, user_api="blas")
    index_dir = Path(index_dir)
    check_index_dir(index_dir)
    name = _pointer_name(index_dir)
    for attempt in range(_LOAD_ATTEMPTS):
        if name is None:
            return None
        try:
            return _load_build(index_dir, index_dir / name, store=store)
        except IndexStoreError:
            now = _pointer_or_none(index_dir)
            if now == name or now is None or attempt == _LOAD_ATTEMPTS - 1:
                raise
            name = now
    return None


def _load_build(index_dir: Path, folder: Path, manifest: dict | None = None,
                store: StoreLocation | None = None) -> Index:
    """Every file of one build, checked against its manifest (``manifest`` when the caller has
    already read and checked it) and against each other. A vector store server that does not
    answer is its own error (RagError), not damage: the index is not rebuilt for it."""
    if manifest is None:
        manifest = _checked_manifest(index_dir, folder)
    try:
        chunk_vectors = stores.open_store(folder, "chunks", manifest, store)
        sentence_vectors = stores.open_store(folder, "sentences", manifest, store)
        lexical = LexicalIndex.load(folder / "bm25")
        chunks = _load_chunks(folder / "chunks.jsonl", chunk_vectors.ids)
        on_demand = _without_sentence_vectors(manifest)
        sentences = _load_sentences(folder / "sentences.jsonl", chunks,
                                    None if on_demand else sentence_vectors.ids)
        if on_demand:
            if len(sentence_vectors.ids):
                raise _Disagree
            sentence_vectors = OnDemandSentenceVectors(
                manifest["model"].get("dim", chunk_vectors.dim), manifest["settings"]["model"],
                manifest["settings"].get("precision", IndexSettings.precision))
        index = Index(index_dir, manifest, chunks, sentences, chunk_vectors, sentence_vectors,
                      lexical, folder.name)
        if on_demand:
            sentence_vectors.attach(index)
    except _Disagree:
        raise IndexDamagedError(index_dir, "its files disagree with each other") from None
    except RagError:
        raise
    except Exception as exc:  # any damage to the files means the same thing to the user
        raise IndexDamagedError(index_dir, f"{exc.__class__.__name__} reading its files") from None
    listed = {cid for entry in manifest["files"].values() for cid in entry["chunks"]}
    if (lexical.ids != chunk_vectors.ids or listed != index._chunk_at.keys()
            or manifest["counts"]["chunks"] != len(chunks)):
        raise IndexDamagedError(index_dir, "its files disagree with each other")
    return index


class _Disagree(Exception):
    """Two files of one build describe different chunks or sentences."""


def _read_jsonl(path: Path) -> Iterator[dict]:
    """The rows of a JSON-lines file, one at a time (a million rows as dicts at once would
    cost gigabytes)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _load_chunks(path: Path, store_ids: list[str]) -> list[Chunk]:
    """The chunk records, in the chunk store's order, sharing its id strings and one string per
    file name."""
    sources: dict[str, str] = {}
    chunks = []
    for at, row in enumerate(_read_jsonl(path)):
        if at >= len(store_ids) or row["id"] != store_ids[at]:
            raise _Disagree
        row["id"] = store_ids[at]
        row["source"] = sources.setdefault(row["source"], row["source"])
        chunks.append(Chunk(**row))
    if len(chunks) != len(store_ids):
        raise _Disagree
    return chunks


def _load_sentences(path: Path, chunks: list[Chunk],
                    store_ids: list[str] | None) -> list[Sentence]:
    """The sentence records, in the sentence store's order, sharing its id strings and their
    chunk's id string (``store_ids`` None: an index without sentence vectors)."""
    sentences = []
    chunk_at = 0
    for at, row in enumerate(_read_jsonl(path)):
        while chunk_at < len(chunks) and row["chunk_id"] != chunks[chunk_at].id:
            chunk_at += 1  # sentences follow their chunks' order
        if store_ids is None:
            if chunk_at == len(chunks):
                raise _Disagree
            sentences.append(Sentence(row["id"], chunks[chunk_at].id, row["start"], row["end"]))
            continue
        if at >= len(store_ids) or row["id"] != store_ids[at] or chunk_at == len(chunks):
            raise _Disagree
        sentences.append(Sentence(store_ids[at], chunks[chunk_at].id, row["start"], row["end"]))
    if store_ids is not None and len(sentences) != len(store_ids):
        raise _Disagree
    return sentences


def _without_sentence_vectors(manifest: dict) -> bool:
    """The index was built with ``IndexSettings.sentence_vectors`` off."""
    return manifest["settings"].get("sentence_vectors", True) is False


def _first_sentences(chunks: list[Chunk], sentences: list[Sentence]) -> np.ndarray:
    """``first[i]:first[i + 1]`` are the positions of chunk i's sentences (sentences in chunk
    order, as builds write them; ``_Disagree`` otherwise)."""
    first = np.zeros(len(chunks) + 1, dtype=np.int64)
    at = 0
    for i, chunk in enumerate(chunks):
        first[i] = at
        while at < len(sentences) and sentences[at].chunk_id == chunk.id:
            at += 1
    first[len(chunks)] = at
    if at != len(sentences):
        raise _Disagree
    return first


# ---------------------------------------------------------------------------------------------
# Building


def _rebuild_reason(manifest: dict, settings: IndexSettings) -> str:
    """Why the old index cannot be reused at all ("" when it can)."""
    old = manifest.get("settings", {})
    if old.get("model") != settings.model:
        return f"model changed ({old.get('model')} -> {settings.model})"
    changed = [k for k, v in settings.to_json().items()
               if old.get(k, SETTINGS_ADDED_LATER.get(k)) != v]
    return f"settings changed ({', '.join(changed)})" if changed else ""


def sentences_of(chunks: list[Chunk]) -> list[Sentence]:
    """Every sentence of ``chunks``, in file offsets, with ids ``<chunk id>:<k>``."""
    return [Sentence(f"{chunk.id}:{k}", chunk.id, chunk.start + s, chunk.start + e)
            for chunk in chunks for k, (s, e) in enumerate(sentence_spans(chunk.text))]


@dataclass
class _Plan:
    """What a build does with each corpus file, decided from hashes and the manifest alone."""

    reuse: set[str]  # indexed files whose bytes are unchanged: their chunks and vectors stay
    read: list[SourceFile]  # added or changed files (every file for a full build)
    skipped: dict[str, dict]  # unchanged files known to hold no text: {"hash", "reason"}
    removed: int  # indexed files no longer in the corpus

    @property
    def unchanged(self) -> bool:
        return not self.read and not self.removed


def _plan(files: list[SourceFile], manifest: dict | None) -> _Plan:
    if manifest is None:
        return _Plan(set(), list(files), {}, 0)
    indexed, skipped = manifest["files"], manifest.get("skipped", {})
    plan = _Plan(set(), [], {}, 0)
    for file in files:
        if indexed.get(file.source, {}).get("hash") == file.hash:
            plan.reuse.add(file.source)
        elif skipped.get(file.source, {}).get("hash") == file.hash:
            plan.skipped[file.source] = skipped[file.source]
        else:
            plan.read.append(file)
    present = {file.source for file in files}
    plan.removed = sum(1 for source in indexed if source not in present)
    return plan


@dataclass
class _Read:
    """A file read for a build: its chunks, or why it holds none; the hash of the bytes read."""

    chunks: list[Chunk] | None
    hash: str = ""
    reason: str = ""
    #: [offset, first line] of each page, for a file with pages (the manifest's "pages").
    pages: list[list[int]] | None = None


class _Reader:
    """Reads and chunks files once each per build, whatever the plan asks for them again.

    Files are chunked as soon as they are read, so only their chunks stay in memory, and the
    hash kept is the one of the very bytes chunked.
    """

    def __init__(self, settings: IndexSettings, progress: bool = False) -> None:
        self.settings = settings
        self.progress = progress
        self.done: dict[str, _Read] = {}

    def read(self, files: Sequence[SourceFile]) -> None:
        for file in files:
            if file.source not in self.done:
                self.done[file.source] = self._read_one(file)

    def _read_one(self, file: SourceFile) -> _Read:
        try:
            data = file.path.read_bytes()
        except OSError as exc:
            warn_unreadable(file.source, exc)
            return _Read(None)  # not recorded: it is tried again next time
        doc, why = parse_document(file.source, data, self.settings.min_words, self.progress)
        if doc is None:
            log.warning("skipping %s: %s", display_name(file.source), why)
            return _Read(None, content_hash(data), why)
        return _Read(split_document(doc, self.settings.chunk_size, self.settings.chunk_overlap),
                     doc.content_hash, pages=page_starts(doc) or None)

    def documents(self) -> int:
        return sum(1 for r in self.done.values() if r.chunks is not None)


def update_index(corpus: Path, index_dir: Path, settings: IndexSettings,
                 load_model: Callable[[], Embedder], rebuild: bool = False,
                 progress: bool = False, store: StoreLocation | None = None) -> BuildReport:
    """Bring the index of ``corpus`` up to date, embedding only what changed.

    An unchanged corpus costs a hash of each file and a read of the manifest; ``load_model`` is
    called only when something must be embedded. Anything else happens under the index's lock
    (another build of the same index is waited for, then the index is read again), and a damaged
    index is rebuilt from scratch with a warning.

    ``store`` says where the vectors go (rag/stores.py); None keeps the index's own place (its
    folder for a new index). Vectors that move are copied, not embedded again. A store server
    that does not answer is said before anything is read or embedded.
    """
    started = time.perf_counter()
    corpus, index_dir = Path(corpus), Path(index_dir)
    check_index_dir(index_dir)
    files = scan_corpus(corpus)
    manifest = None if rebuild else _reusable_manifest(index_dir, settings)
    ahead = _plan(files, manifest)
    if (manifest is not None and ahead.unchanged
            and not (store is not None and stores.moved(manifest, store))):
        _warn_skipped(ahead.skipped)
        _tidy(index_dir)
        return _up_to_date(manifest, time.perf_counter() - started)
    current = manifest if manifest is not None else _current_manifest(index_dir)
    stores.check_reachable(stores.location_of(current, store))
    reader = _Reader(settings, progress)
    # Read what changed before taking the lock: a corpus with no usable text fails here, before
    # anything is created, and the wait for another build is not spent idle.
    _read_planned(reader, ahead, corpus)
    with IndexLock(index_dir):
        report = _build_locked(corpus, files, index_dir, settings, load_model, rebuild, progress,
                               reader, store)
    report.seconds = time.perf_counter() - started
    return report


def _current_manifest(index_dir: Path) -> dict | None:
    """The manifest of the build in use, whatever its settings; None without a readable one."""
    try:
        state = _read_state(index_dir)
    except IndexStoreError:
        return None
    return state.manifest if state is not None else None


def _read_planned(reader: _Reader, plan: _Plan, corpus: Path) -> None:
    """Read and chunk the files ``plan`` needs (each once per build); CorpusError when the index
    would hold no document."""
    reader.read(plan.read)
    if not plan.reuse and not reader.documents():
        raise no_documents(corpus)


def _up_to_date(manifest: dict, seconds: float = 0.0) -> BuildReport:
    """The report of a run that found the index up to date."""
    chunks = manifest["counts"]["chunks"]
    return BuildReport(len(manifest["files"]), chunks, 0, chunks, 0, seconds)


def _reusable_manifest(index_dir: Path, settings: IndexSettings) -> dict | None:
    """The current manifest when its index can be updated in place: None without an index, with
    other settings, or when it is damaged (the build, under the lock, says which)."""
    try:
        state = _read_state(index_dir)
    except IndexDamagedError:
        return None
    if state is None or _rebuild_reason(state.manifest, settings):
        return None
    return state.manifest


def _warn_skipped(skipped: dict[str, dict]) -> None:
    for source, entry in skipped.items():
        log.warning("skipping %s: %s", display_name(source), entry["reason"])


def _build_locked(corpus: Path, files: list[SourceFile], index_dir: Path, settings: IndexSettings,
                  load_model: Callable[[], Embedder], rebuild: bool, progress: bool,
                  reader: _Reader, store: StoreLocation | None = None) -> BuildReport:
    """The build proper, with the index's lock held: reads the index again (another build may
    just have updated it), then reuses, embeds and writes."""
    _remove_leftovers(index_dir, keep=_pointer_or_none(index_dir))
    current, damage = None, None  # the build in use, read once
    try:
        current = _read_state(index_dir)
    except IndexDamagedError as exc:
        damage = exc
    except IndexStoreError:  # another format version: only a rebuild goes on
        if not rebuild:
            raise
    previous = current.manifest if current is not None else None
    location = stores.location_of(previous, store)
    stores.drop_stale(index_dir, previous, store)  # failed builds' and the replaced build's tables
    reason, repaired, state = ("requested with --rebuild" if rebuild else ""), False, None
    if not rebuild:
        state = current
        if damage is not None:
            reason, repaired = _warn_damaged(damage), True
        if state is not None:
            reason = _rebuild_reason(state.manifest, settings)
            if reason:
                state = None
    plan = _plan(files, state.manifest if state else None)
    if (state is not None and plan.unchanged  # another build did it while this one waited
            and not stores.moved(state.manifest, location)):
        _warn_skipped(plan.skipped)
        return _up_to_date(state.manifest)
    removed = plan.removed
    old: Index | None = None
    if state is not None and plan.reuse:
        try:
            old = _load_build(index_dir, state.folder, state.manifest, store=store)
        except IndexDamagedError as exc:
            reason, repaired, plan = _warn_damaged(exc), True, _plan(files, None)
    _warn_skipped(plan.skipped)
    _read_planned(reader, plan, corpus)

    embedder = load_model()
    if old is not None and old.manifest["model"]["weights_hash"] != embedder.weights_hash:
        reason, old, plan = "model weights changed", None, _plan(files, None)
        reader.read(plan.read)
    report = _write_build(files, plan, reader, old, index_dir, settings, embedder, progress,
                          location=location)
    stores.drop_replaced(previous, location, store)
    report.removed = removed if not reason else 0
    report.full_rebuild = old is None and bool(reason)
    report.reason, report.repaired = reason, repaired
    return report


def _warn_damaged(exc: IndexDamagedError) -> str:
    log.warning("index at %s is damaged (%s); rebuilding it from scratch", exc.index_dir,
                exc.problem)
    return f"the index was damaged ({exc.problem})"


def _write_build(files: list[SourceFile], plan: _Plan, reader: _Reader, old: Index | None,
                 index_dir: Path, settings: IndexSettings, embedder: Embedder,
                 progress: bool, location: StoreLocation = StoreLocation()) -> BuildReport:
    """Assemble chunks and vectors (reused or new) and write them as a new current build, its
    vectors where ``location`` says."""
    chunks: list[Chunk] = []
    indexed: dict[str, dict] = {}
    skipped = dict(plan.skipped)
    fresh: list[Chunk] = []
    for file in files:
        if old is not None and file.source in plan.reuse:
            file_chunks = [old.chunk(cid) for cid in old.manifest["files"][file.source]["chunks"]]
            digest, pages = file.hash, old.manifest["files"][file.source].get("pages")
        elif file.source in skipped:
            continue
        else:
            read = reader.done.get(file.source)
            if read is None or read.chunks is None:
                if read is not None and read.reason:
                    skipped[file.source] = {"hash": read.hash, "reason": read.reason}
                continue
            file_chunks, digest, pages = read.chunks, read.hash, read.pages
            fresh.extend(file_chunks)
        chunks.extend(file_chunks)
        indexed[file.source] = {"hash": digest, "chunks": [c.id for c in file_chunks]}
        if pages:
            indexed[file.source]["pages"] = pages
    fresh_ids = {c.id for c in fresh}
    sentences = sentences_of(chunks)
    fresh_sentences = [s for s in sentences if s.chunk_id in fresh_ids]

    if not settings.sentence_vectors:  # computed per question (rag/sentence_vectors.py)
        fresh_sentences = []
    by_id = {c.id: c for c in fresh}
    sentence_texts = [_sentence_text(s, by_id[s.chunk_id]) for s in fresh_sentences]
    new_chunk_vectors, new_sentence_vectors = embed_once(
        embedder, [c.text for c in fresh], sentence_texts, progress)

    chunk_store = _assemble(embedder.dim, [c.id for c in chunks],
                            dict(zip((c.id for c in fresh), new_chunk_vectors)),
                            old.chunk_vectors if old else None,
                            stores.new_store(location, embedder.dim, index_dir, "chunks"))
    sentence_store = _assemble(embedder.dim,
                               [s.id for s in sentences] if settings.sentence_vectors else [],
                               dict(zip((s.id for s in fresh_sentences), new_sentence_vectors)),
                               old.sentence_vectors if old else None,
                               stores.new_store(location, embedder.dim, index_dir, "sentences"))
    lexical = LexicalIndex.build([c.id for c in chunks], [c.text for c in chunks],
                                 stop_words(settings.question_stop_words))
    manifest = {
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": {"name": embedder.name, "weights_hash": embedder.weights_hash,
                  "dim": embedder.dim},
        "settings": settings.to_json(),
        "vector_stores": {"chunks": chunk_store.describe(), "sentences": sentence_store.describe()},
        "counts": {"files": len(indexed), "chunks": len(chunks), "sentences": len(sentences)},
        "files": indexed,
        "skipped": skipped,
    }
    write_build(Path(index_dir), manifest, chunks, sentences, chunk_store, sentence_store, lexical)
    return BuildReport(len(indexed), len(chunks), len(fresh), len(chunks) - len(fresh), 0, 0.0)


def embed_once(embedder: Embedder, chunk_texts: list[str], sentence_texts: list[str],
               progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Vectors for chunks and sentences in one pass, each distinct text embedded once.

    A one-sentence chunk (a short paragraph, a heading-like line) is the same text as its
    sentence, and repeated lines recur across files; one call also gives one progress bar whose
    rate and time left cover the whole build.
    """
    distinct = list(dict.fromkeys(chunk_texts + sentence_texts))
    vectors = embedder.encode_passages(distinct, show_progress=progress)
    row = {text: i for i, text in enumerate(distinct)}
    return (vectors[[row[t] for t in chunk_texts]].reshape(len(chunk_texts), embedder.dim),
            vectors[[row[t] for t in sentence_texts]].reshape(len(sentence_texts), embedder.dim))


def _sentence_text(sentence: Sentence, chunk: Chunk) -> str:
    return chunk.text[sentence.start - chunk.start:sentence.end - chunk.start]


def _assemble(dim: int, ids: list[str], new: dict[str, np.ndarray],
              old: VectorStore | None, store: VectorStore | None = None) -> VectorStore:
    """``store`` (a new FAISS store by default) filled with ``ids`` in order: fresh vectors from
    ``new``, the rest from ``old`` (which may be a store of another kind)."""
    vectors = np.zeros((len(ids), dim), dtype=np.float32)
    reused = [i for i, id_ in enumerate(ids) if id_ not in new]
    if reused:
        vectors[reused] = old.get([ids[i] for i in reused])
    for i, id_ in enumerate(ids):
        if id_ in new:
            vectors[i] = new[id_]
    store = store if store is not None else FaissVectorStore(dim)
    store.add(ids, vectors)
    return store


def write_build(index_dir: Path, manifest: dict, chunks: list[Chunk], sentences: list[Sentence],
                chunk_vectors: VectorStore, sentence_vectors: VectorStore,
                lexical: LexicalIndex) -> Path:
    """Write a complete build beside the current one, then make it current atomically.

    Call with the index's lock held. The manifest, written last, records the size of every other
    file, so that a later check finds a truncated or overwritten file without reading it.
    """
    name = f"build-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    folder = index_dir / name
    try:
        index_dir.mkdir(parents=True, exist_ok=True)
        folder.mkdir()
        _write_files(folder, manifest, chunks, sentences, chunk_vectors, sentence_vectors, lexical)
        _switch_current(index_dir, name)
    except (RagError, OSError) as exc:  # RagError: a vector store server that stopped answering
        if _pointer_or_none(index_dir) != name:
            shutil.rmtree(folder, ignore_errors=True)
        if isinstance(exc, RagError):
            raise
        raise IndexStoreError(
            f"cannot write the index at {index_dir} ({exc.strerror or exc.__class__.__name__}); "
            "check free space and permissions, the previous index is still in use") from None
    _remove_leftovers(index_dir, keep=name)
    return folder


def _write_files(folder: Path, manifest: dict, chunks: list[Chunk], sentences: list[Sentence],
                 chunk_vectors: VectorStore, sentence_vectors: VectorStore,
                 lexical: LexicalIndex) -> None:
    _write_jsonl(folder / "chunks.jsonl", chunks)
    _write_jsonl(folder / "sentences.jsonl", sentences)
    chunk_vectors.save(folder, "chunks")
    sentence_vectors.save(folder, "sentences")
    (folder / "bm25").mkdir()
    lexical.save(folder / "bm25")
    sizes = {path.relative_to(folder).as_posix(): path.stat().st_size
             for path in sorted(folder.rglob("*")) if path.is_file()}
    (folder / "manifest.json").write_text(
        json.dumps({**manifest, "sizes": sizes}, ensure_ascii=False, indent=1), encoding="utf-8")
    _fsync_tree(folder)


def _switch_current(index_dir: Path, name: str) -> None:
    """Point ``CURRENT`` at ``name`` in one rename (a folder in its way, from a damaged index,
    is removed first: the index it held was unusable anyway)."""
    pointer = index_dir / POINTER
    pointer_tmp = index_dir / f"{POINTER}.tmp-{os.getpid()}"
    pointer_tmp.write_text(name + "\n", encoding="utf-8")
    _fsync_file(pointer_tmp)
    if pointer.is_dir() and not pointer.is_symlink():
        shutil.rmtree(pointer)
    os.replace(pointer_tmp, pointer)
    _fsync_file(index_dir)


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


def _is_leftover(name: str, keep: str | None) -> bool:
    return (name.startswith("build-") and name != keep) or name.startswith(f"{POINTER}.tmp-")


def _remove_leftovers(index_dir: Path, keep: str | None) -> None:
    """Remove builds other than ``keep`` and pointer leftovers, from this run or a killed earlier
    one. Only with the index's lock held: another build's folder is never in the way then."""
    try:
        entries = list(index_dir.iterdir())
    except OSError:
        return
    for path in entries:
        if not _is_leftover(path.name, keep):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                path.unlink()
            except OSError:
                pass


def _tidy(index_dir: Path) -> None:
    """Remove leftovers of killed builds when no build is running; never waits (an unchanged
    corpus stays a sub-second check) and never fails (a read-only index is still usable)."""
    keep = _pointer_or_none(index_dir)
    try:
        if not any(_is_leftover(p.name, keep) for p in index_dir.iterdir()):
            return
        with IndexLock(index_dir, wait=False) as lock:
            if lock.acquired:
                _remove_leftovers(index_dir, keep=_pointer_or_none(index_dir))
    except (OSError, IndexStoreError):
        pass
