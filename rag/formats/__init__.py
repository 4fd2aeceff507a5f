"""Readers for documents that are not plain text: PDF, Word (.docx), OpenDocument (.odt), EPUB.

One interface, :func:`extract`: the file's bytes in, an :class:`Extracted` out, or a
:class:`FormatError` whose message says why the file cannot be indexed (it is then skipped with a
warning, like a binary ``.txt``). The extracted text is what the source view shows and what every
offset and line number refers to; it holds one paragraph (or table row) per line, so that a
sentence is never cut by the visual line breaks of a page (a line break ends a sentence, see
rag/sentences.py). ``pages`` gives the offset where each page starts, so a citation's offset maps
back to its page by bisection, and its lines are counted within that page.

The readers are chosen by file suffix before any decoding: these files are binary by nature and
must not meet the text reader's binary-data check.
"""
from __future__ import annotations

from collections.abc import Callable

from .common import Extracted, FormatError, cut_spans

__all__ = ["Extracted", "FormatError", "READERS", "cut_spans", "extract", "is_document_format"]


def _pdf(data: bytes, progress: bool) -> Extracted:
    from .pdf import read_pdf
    return read_pdf(data, progress)


def _docx(data: bytes, progress: bool) -> Extracted:
    from .office import read_docx
    return read_docx(data)


def _odt(data: bytes, progress: bool) -> Extracted:
    from .office import read_odt
    return read_odt(data)


def _epub(data: bytes, progress: bool) -> Extracted:
    from .office import read_epub
    return read_epub(data)


#: Suffix -> reader. Imported lazily: a corpus of text files never loads pdfminer.
READERS: dict[str, Callable[[bytes, bool], Extracted]] = {
    ".pdf": _pdf,
    ".docx": _docx,
    ".odt": _odt,
    ".epub": _epub,
}


def suffix(source: str) -> str:
    dot = source.rfind(".")
    return source[dot:].lower() if dot >= 0 else ""


def is_document_format(source: str) -> bool:
    """Whether ``source`` is read by one of these readers rather than decoded as text."""
    return suffix(source) in READERS


def extract(source: str, data: bytes, progress: bool = False) -> Extracted:
    """The text of a PDF, DOCX or ODT file; FormatError (with the reason to show) when the file
    cannot be read. ``progress`` shows a progress bar over the pages of a long PDF."""
    return READERS[suffix(source)](data, progress)
