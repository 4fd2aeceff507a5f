"""Find and read corpus files, reduce HTML to text, and mark boilerplate lines.

Nothing here writes to the corpus folder. Each file becomes a ``Document`` whose ``text`` is what
the source view shows, and whose ``kept`` spans are the parts worth indexing. PDF, Word and
OpenDocument files are dispatched by suffix, before any decoding, to rag/formats, which gives
their text one paragraph per line and where each page starts; their running headers, footers and
page numbers are left out of ``kept``, and ``kept`` spans never straddle two pages.

The boilerplate rule (documented in the README) keeps passages free of web-page debris such as
navigation words, "Plus d'articles", a captcha line or a title printed twice, without a list of
such strings:

1. a line that repeats, word for word, an earlier line of the same file is dropped;
2. a line with fewer than ``min_words`` words that does not end like a sentence (. ! ? … » ")
   is dropped;
3. a short line (fewer than ``2 * min_words`` words) whose nearest non-blank neighbours above and
   below were both dropped is dropped too: it sits inside a block of debris (a "video of the day"
   teaser between two menu words, say).

A corpus folder is whatever the user has: one unreadable file, a name that is not valid UTF-8 or a
binary file saved as ``.txt`` is skipped with a warning that names it and says what to do, and the
rest is read. Every step is linear in the size of a file (line numbers come from a running count,
never from counting again from the start), so a file of 50 MB is read as fast, per megabyte, as
one of 1 MB.
"""
from __future__ import annotations

import hashlib
import html
import logging
import os
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from . import formats
from .config import CORPUS_SUFFIXES
from .errors import CorpusError
from .records import Document

log = logging.getLogger(__name__)

SENTENCE_END = (".", "!", "?", "…", "»", '"', "”", ":", ";")
#: Encoding tried when a file is not valid UTF-8: what French text saved on Windows usually is.
FALLBACK_ENCODING = "cp1252"
#: Characters judged to tell text from binary data: the start and the end of a file, this many
#: characters each. Enough for a verdict, and a 50 MB file is not scanned twice.
TEXT_SAMPLE_CHARS = 32_768
#: Text holds practically no control characters (a stray form feed or escape sequence at most);
#: random bytes decode to about 13% of them (or of replacement characters). Above this share of
#: the sample, a file is binary data whatever its name says.
MAX_UNPRINTABLE_SHARE = 0.02
#: French, English or German text in Windows-1252 is mostly ASCII (accents are a few percent of
#: the letters); bytes that only decode as a soup of accented letters and symbols are binary data,
#: or text in another code page that would be indexed as gibberish.
MAX_FALLBACK_NON_ASCII_SHARE = 0.3
#: Bytes read at a time when hashing a file, so that hashing a large file needs little memory.
HASH_BLOCK = 1 << 20

_UNPRINTABLE = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\ufffd\ue000-\uf8ff]")


@dataclass(frozen=True)
class SourceFile:
    """A corpus file found on disk and the sha256 of its bytes (nothing parsed yet)."""

    source: str  # path relative to the corpus root, with forward slashes
    path: Path
    hash: str


def display_name(name: str) -> str:
    """A file name fit for a one-line message: as is when it is printable text, else its bytes'
    repr (``b'bad\\xffname.txt'``): an undecodable or control-laden name cannot garble the line."""
    if not valid_utf8(name):
        return repr(os.fsencode(name))
    return name if name.isprintable() else repr(name)


def valid_utf8(text: str) -> bool:
    """False when ``text`` holds lone surrogates: bytes that were not UTF-8 in a file name or on
    the command line (Python carries them that way), which no UTF-8 file or JSON can hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def find_files(root: Path) -> list[Path]:
    """All corpus files under ``root``, recursively, in a stable (sorted) order.

    Hidden files and folders are skipped, and so are symlinks that lead outside ``root``, so that a
    link never pulls an unrelated file into the index or the source view. A name that is not valid
    UTF-8, a link that leads nowhere and a folder that cannot be listed are reported with a warning
    each (the index records names as UTF-8, and the user should know what is left out); a link to
    a missing file is returned, so that reading it reports it.
    """
    root = Path(root)
    if not root.is_dir():
        if root.exists():
            raise CorpusError(f"corpus {root} is a file, not a folder (give the folder that holds "
                              "your documents with --corpus)")
        raise CorpusError(f"corpus folder not found: {root} (give an existing folder with --corpus)")
    resolved_root = root.resolve()
    found: list[Path] = []

    def unreadable_folder(error: OSError) -> None:
        name = display_name(os.path.relpath(error.filename, root)) if error.filename else root
        log.warning("skipping folder %s: cannot list it (%s); check its permissions", name,
                    error.strerror or error.__class__.__name__)

    for folder, dirs, files in os.walk(root, onerror=unreadable_folder):
        rel_folder = os.path.relpath(folder, root)
        kept_dirs = []
        for name in sorted(dirs):
            if _is_hidden(name):
                continue
            if not valid_utf8(name):
                shown = display_name(os.path.normpath(os.path.join(rel_folder, name)))
                log.warning("skipping folder %s: its name is not valid UTF-8; rename it to index "
                            "its files", shown)
                continue
            kept_dirs.append(name)
        dirs[:] = kept_dirs
        for name in files:
            if _is_hidden(name) or Path(name).suffix.lower() not in CORPUS_SUFFIXES:
                continue
            path = Path(folder) / name
            if (found_path := _corpus_file(path, root, resolved_root)) is not None:
                found.append(found_path)
    return sorted(found)


def _corpus_file(path: Path, root: Path, resolved_root: Path) -> Path | None:
    """``path`` when it is a file to read (or a dangling link, whose reading reports it)."""
    rel = path.relative_to(root).as_posix()
    if not valid_utf8(rel):
        log.warning("skipping %s: its name is not valid UTF-8; rename it to index it",
                    display_name(rel))
        return None
    try:
        dangling = path.is_symlink() and not path.exists()
        if not dangling and not path.is_file():
            return None  # a folder, a pipe or a device named like a document
        if not path.resolve().is_relative_to(resolved_root):
            log.warning("skipping %s: it links outside the corpus folder", display_name(rel))
            return None
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        log.warning("skipping %s: cannot follow it (%s); fix or remove it", display_name(rel),
                    getattr(exc, "strerror", None) or exc.__class__.__name__)
        return None
    return path


def scan_corpus(root: Path) -> list[SourceFile]:
    """Every corpus file under ``root`` with the hash of its bytes; nothing is decoded or parsed.

    This is all an unchanged corpus costs. A file that cannot be read is left out with a warning.
    Raises CorpusError when the folder is missing or holds no file of a corpus kind.
    """
    root = Path(root)
    scanned = []
    for path in find_files(root):
        source = path.relative_to(root).as_posix()
        try:
            scanned.append(SourceFile(source, path, file_hash(path)))
        except OSError as exc:
            warn_unreadable(source, exc)
    if not scanned:
        raise no_documents(root)
    return scanned


def no_documents(root: Path) -> CorpusError:
    """The error for a corpus folder that holds no usable document."""
    return CorpusError(f"no readable .txt, .md, .html, .pdf, .docx, .odt or .epub file in {root} "
                       "(add documents or point --corpus elsewhere)")


def file_hash(path: Path) -> str:
    """sha256 of a file's bytes, read block by block (the same digest as :func:`content_hash`)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def warn_unreadable(source: str, exc: OSError) -> None:
    log.warning("skipping %s: cannot read it (%s); check that it exists and that you may read it",
                display_name(source), exc.strerror or exc.__class__.__name__)


def _sample(text: str) -> str:
    if len(text) <= 2 * TEXT_SAMPLE_CHARS:
        return text
    return text[:TEXT_SAMPLE_CHARS] + text[-TEXT_SAMPLE_CHARS:]


def looks_binary(text: str, fallback: bool = False) -> bool:
    """Whether decoded ``text`` is binary data rather than prose, judged on a sample.

    ``fallback``: the text was decoded as Windows-1252, which accepts any byte; it must then also
    read mostly as ASCII.
    """
    sample = _sample(text)
    if not sample:
        return False
    if len(_UNPRINTABLE.findall(sample)) > MAX_UNPRINTABLE_SHARE * len(sample):
        return True
    if fallback:
        visible = [c for c in sample if not c.isspace()]
        non_ascii = sum(1 for c in visible if ord(c) > 127)
        return bool(visible) and non_ascii > MAX_FALLBACK_NON_ASCII_SHARE * len(visible)
    return False


def decode_text(data: bytes) -> tuple[str | None, str]:
    """Bytes to (text, note): UTF-8 (BOM allowed), else Windows-1252, the note then saying so
    (a warning to give); (None, why) for binary data."""
    if b"\x00" in data[:8192]:
        return None, "it looks like a binary file, not text"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode(FALLBACK_ENCODING, errors="replace")
        if looks_binary(text, fallback=True):
            return None, ("it is neither UTF-8 nor Windows-1252 text (binary data?); convert it "
                          "to UTF-8 to index it")
        return text, f"not valid UTF-8; decoded as {FALLBACK_ENCODING}"
    if looks_binary(text):
        return None, "it looks like a binary file, not text"
    return text, ""


class _TextExtractor(HTMLParser):
    """Collects visible text; block elements become line breaks, scripts and styles vanish."""

    BLOCKS = {"p", "div", "br", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "tr",
              "table", "section", "article", "header", "footer", "blockquote", "pre", "title",
              "nav", "aside", "main", "figcaption", "dd", "dt"}
    HIDDEN = {"script", "style", "noscript", "template", "svg", "head"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden_depth = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in self.HIDDEN and tag != "head":
            self.hidden_depth += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN and tag != "head":
            self.hidden_depth = max(0, self.hidden_depth - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden_depth:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """Visible text of an HTML page, one block per line, blank line between paragraphs."""
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    raw = html.unescape("".join(parser.parts))
    lines = [re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in raw.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def _line_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every line, without its line break."""
    spans, start = [], 0
    for line in text.splitlines(keepends=True):
        stripped = line.rstrip("\r\n")
        spans.append((start, start + len(stripped)))
        start += len(line)
    return spans


def is_sentence_like(line: str, min_words: int) -> bool:
    """A line worth indexing on its own: long enough, or ending like a sentence."""
    stripped = line.strip()
    return len(stripped.split()) >= min_words or stripped.endswith(SENTENCE_END)


def boilerplate_lines(text: str, min_words: int) -> list[bool]:
    """For each line of ``text``: True when the boilerplate rule drops it (blank lines: False)."""
    lines = [text[s:e] for s, e in _line_spans(text)]
    if min_words <= 0:
        return [False] * len(lines)
    seen: set[str] = set()
    dropped = [False] * len(lines)
    for i, line in enumerate(lines):
        key = " ".join(line.split())
        if not key:
            continue
        if key in seen or not is_sentence_like(key, min_words):
            dropped[i] = True
        seen.add(key)
    non_blank = [i for i, line in enumerate(lines) if line.strip()]
    for pos, i in enumerate(non_blank):
        if dropped[i] or len(lines[i].split()) >= 2 * min_words:
            continue
        above = non_blank[pos - 1] if pos > 0 else None
        below = non_blank[pos + 1] if pos + 1 < len(non_blank) else None
        if above is not None and below is not None and dropped[above] and dropped[below]:
            dropped[i] = True
    return dropped


def kept_spans(text: str, min_words: int) -> tuple[tuple[int, int], ...]:
    """Character spans of the runs of kept lines; a dropped line ends a run."""
    spans: list[tuple[int, int]] = []
    current: list[int] | None = None
    for (start, end), drop in zip(_line_spans(text), boilerplate_lines(text, min_words)):
        blank = not text[start:end].strip()
        if drop:
            current = None
        elif blank:
            continue
        elif current is None:
            current = [start, end]
            spans.append(current)  # type: ignore[arg-type]
        else:
            current[1] = end
    return tuple((s, e) for s, e in spans)


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_html(source: str) -> bool:
    return source.lower().endswith((".html", ".htm"))


def parse_document(source: str, data: bytes, min_words: int,
                   progress: bool = False) -> tuple[Document | None, str]:
    """A file's bytes as a Document, or (None, why it holds no usable text).

    PDF, Word and OpenDocument files go to their reader (rag/formats) by suffix, before any
    decoding: they are binary by nature. Warnings that do not skip the file (an encoding
    fallback) are logged here. ``progress`` shows a progress bar over a long PDF's pages.
    """
    if formats.is_document_format(source):
        return _parse_formatted(source, data, min_words, progress)
    text, note = decode_text(data)
    if text is None:
        return None, note
    if note:
        log.warning("%s is %s", display_name(source), note)
    if is_html(source):
        text = html_to_text(text)
    if not text.strip():
        return None, "the file is empty"
    return Document(source=source, text=text, content_hash=content_hash(data),
                    kept=kept_spans(text, min_words)), ""


def _parse_formatted(source: str, data: bytes, min_words: int,
                     progress: bool) -> tuple[Document | None, str]:
    """A PDF, DOCX or ODT file as a Document: its extracted text, pages, and kept spans that
    leave out its running headers and footers and never straddle two pages."""
    if not data:
        return None, "the file is empty"
    try:
        extracted = formats.extract(source, data, progress)
    except formats.FormatError as exc:
        return None, str(exc)
    except RecursionError:
        return None, "it is nested too deeply to be read; save it again"
    text = extracted.text
    if not text.strip():
        return None, "it holds no text"
    if extracted.note:
        log.warning("%s: %s", display_name(source), extracted.note)
    kept = formats.cut_spans(kept_spans(text, min_words), text, extracted.pages,
                             extracted.furniture)
    return Document(source=source, text=text, content_hash=content_hash(data), kept=kept,
                    pages=extracted.pages), ""


def read_document(root: Path, path: Path, min_words: int) -> Document | None:
    """One file as a Document, or None (with a warning) when it holds no usable text.

    Raises OSError when the file cannot be read: callers decide whether that skips the file (the
    indexer) or answers "not found" (the source view).
    """
    source = path.relative_to(root).as_posix()
    doc, why = parse_document(source, path.read_bytes(), min_words)
    if doc is None:
        log.warning("skipping %s: %s", display_name(source), why)
    return doc


def load_corpus(root: Path, min_words: int) -> list[Document]:
    """Every usable document under ``root``; raises CorpusError when there is none.

    A file that cannot be read is skipped with a warning: one bad file never stops the rest.
    """
    docs = []
    for path in find_files(root):
        try:
            doc = read_document(root, path, min_words)
        except OSError as exc:
            warn_unreadable(path.relative_to(root).as_posix(), exc)
            continue
        if doc is not None:
            docs.append(doc)
    if not docs:
        raise no_documents(root)
    return docs


def line_number(text: str, offset: int) -> int:
    """1-based line number of the character at ``offset`` (counts from the start: for one
    lookup; :class:`LineCounter` numbers many offsets of one text in linear time)."""
    return text.count("\n", 0, offset) + 1


class LineCounter:
    """1-based line numbers of many offsets of one text, each counted from the previous one.

    Chunks come in reading order, so the newlines between consecutive offsets are counted once
    each and numbering a whole file costs one pass over it, whatever its size; an offset before
    the previous one (chunk overlap) counts back over the gap.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self._offset = 0
        self._line = 1

    def line(self, offset: int) -> int:
        if offset >= self._offset:
            self._line += self.text.count("\n", self._offset, offset)
        else:
            self._line -= self.text.count("\n", offset, self._offset)
        self._offset = offset
        return self._line
