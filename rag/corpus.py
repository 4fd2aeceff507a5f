"""Find and read corpus files, reduce HTML to text, and mark boilerplate lines.

Nothing here writes to the corpus folder. Each file becomes a ``Document`` whose ``text`` is what
the source view shows, and whose ``kept`` spans are the parts worth indexing.

The boilerplate rule (documented in the README) keeps passages free of web-page debris such as
navigation words, "Plus d'articles", a captcha line or a title printed twice, without a list of
such strings:

1. a line that repeats, word for word, an earlier line of the same file is dropped;
2. a line with fewer than ``min_words`` words that does not end like a sentence (. ! ? … » ")
   is dropped;
3. a short line (fewer than ``2 * min_words`` words) whose nearest non-blank neighbours above and
   below were both dropped is dropped too: it sits inside a block of debris (a "video of the day"
   teaser between two menu words, say).
"""
from __future__ import annotations

import hashlib
import html
import logging
import re
from html.parser import HTMLParser
from pathlib import Path

from .config import CORPUS_SUFFIXES
from .errors import CorpusError
from .records import Document

log = logging.getLogger(__name__)

SENTENCE_END = (".", "!", "?", "…", "»", '"', "”", ":", ";")
#: Encoding tried when a file is not valid UTF-8; every byte decodes, so nothing is lost.
FALLBACK_ENCODING = "cp1252"




def find_files(root: Path) -> list[Path]:
    """All corpus files under ``root``, recursively, in a stable (sorted) order.

    Hidden files and folders are skipped, and so are symlinks that lead outside ``root``, so that a
    link never pulls an unrelated file into the index or the source view.
    """
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"corpus folder not found: {root} (give an existing folder with --corpus)")
    resolved_root = root.resolve()
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() not in CORPUS_SUFFIXES or not path.is_file():
            continue
        if not path.resolve().is_relative_to(resolved_root):
            log.warning("skipping %s: it links outside the corpus folder", rel)
            continue
        found.append(path)
    return found


def decode(data: bytes, name: str) -> str | None:
    """Bytes to text: UTF-8 (BOM allowed), else cp1252 with a warning; None for binary files."""
    if b"\x00" in data[:8192]:
        log.warning("skipping %s: looks like a binary file", name)
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        log.warning("%s is not valid UTF-8; decoded as %s", name, FALLBACK_ENCODING)
        return data.decode(FALLBACK_ENCODING, errors="replace")


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


def read_document(root: Path, path: Path, min_words: int) -> Document | None:
    """One file as a Document, or None (with a warning) when it holds no usable text."""
    source = path.relative_to(root).as_posix()
    data = path.read_bytes()
    text = decode(data, source)
    if text is None:
        return None
    if path.suffix.lower() in (".html", ".htm"):
        text = html_to_text(text)
    if not text.strip():
        log.warning("skipping %s: the file is empty", source)
        return None
    return Document(source=source, text=text, content_hash=content_hash(data),
                    kept=kept_spans(text, min_words))


def load_corpus(root: Path, min_words: int) -> list[Document]:
    """Every usable document under ``root``; raises CorpusError when there is none."""
    docs = [doc for path in find_files(root) if (doc := read_document(root, path, min_words))]
    if not docs:
        raise CorpusError(
            f"no readable .txt, .md or .html file in {root} (add documents or point --corpus elsewhere)")
    return docs


def line_number(text: str, offset: int) -> int:
    """1-based line number of the character at ``offset``."""
    return text.count("\n", 0, offset) + 1
