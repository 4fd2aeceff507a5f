"""Split documents into chunks that know exactly where they come from.

``langchain-text-splitters`` decides where to cut (paragraphs first, then sentence ends, then
words); this module then locates every piece in the file text, so that for every chunk
``document.text[chunk.start:chunk.end] == chunk.text`` and its line numbers are exact. Splitting is
done inside each run of kept lines, so a chunk never spans a boilerplate line.

The cost is linear in the size of the file: each piece is looked for from where the previous one
ended, and line numbers are a running count (``corpus.LineCounter``), not a count from the start
of the file for every chunk (which made an 8 MB file take 48 s).
"""
from __future__ import annotations

import hashlib

from langchain_text_splitters import RecursiveCharacterTextSplitter

from .corpus import LineCounter
from .records import Chunk, Document

#: Prose separators, coarsest first. Each stays attached to the end of the piece before it, so the
#: pieces concatenate back to the original text.
SEPARATORS = ["\n\n", "\n", ". ", "! ", "? ", "… ", "; ", ", ", " ", ""]


def make_splitter(chunk_size: int, chunk_overlap: int) -> RecursiveCharacterTextSplitter:
    return RecursiveCharacterTextSplitter(
        separators=SEPARATORS,
        keep_separator="end",
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        strip_whitespace=True,
    )


def chunk_id(source: str, start: int, end: int, text: str) -> str:
    """Stable id: the same text at the same place in the same file keeps its id across builds.

    ``surrogatepass``: a name carrying bytes that are not UTF-8 never reaches the index (the
    corpus reader skips it), but an id must never be the thing that fails on one.
    """
    key = f"{source}\0{start}\0{end}\0{text}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(key).hexdigest()[:16]


def split_document(doc: Document, chunk_size: int, chunk_overlap: int = 0) -> list[Chunk]:
    """The chunks of one document, in reading order."""
    splitter = make_splitter(chunk_size, chunk_overlap)
    lines = LineCounter(doc.text)
    chunks: list[Chunk] = []
    for span_start, span_end in doc.kept:
        span = doc.text[span_start:span_end]
        cursor = 0
        for piece in splitter.split_text(span):
            found = span.find(piece, cursor)
            if found < 0:  # overlap can move the piece before the cursor
                found = span.find(piece, max(0, cursor - chunk_overlap - len(piece)))
            if found < 0:
                raise AssertionError(f"chunk not found in {doc.source}: {piece[:60]!r}")
            start, end = span_start + found, span_start + found + len(piece)
            cursor = found + len(piece) - chunk_overlap if chunk_overlap else found + len(piece)
            chunks.append(Chunk(
                id=chunk_id(doc.source, start, end, piece),
                source=doc.source,
                start=start,
                end=end,
                start_line=lines.line(start),
                end_line=lines.line(end - 1),
                text=piece,
            ))
    return chunks
