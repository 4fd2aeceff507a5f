"""Word (.docx), OpenDocument (.odt) and EPUB text, read from the zip archive with the standard
library.

Both are zip archives of XML. Reading the one XML part that holds the text with ``zipfile`` and
``xml.etree`` needs no dependency and lets the size limits act before anything is inflated: a
zip bomb named ``.docx`` (a few hundred kilobytes that would inflate to gigabytes) is refused
from the sizes its archive declares (and ``zipfile`` never inflates past a declared size).

What is read: paragraphs and headings in order, one per line; a table as one line per row, cells
separated by " | "; tabs as spaces; line breaks inside a paragraph as new lines. Page breaks the
file records (an explicit break, Word's last rendered page breaks, LibreOffice's soft page
breaks, a paragraph that starts a new page) make pages; a file that records none has no
pages and is cited by line, like a text file. Running headers and footers live in other parts of
the archive and are not read. Deleted text of tracked changes, field codes, comments and notes
are left out.

An EPUB is a zip of XHTML chapters: they are read in the order of its spine, each reduced to text
as an HTML file is (rag/corpus.py); an EPUB has no pages (a reader lays them out), so it is cited
by line.
"""
from __future__ import annotations

import io
import re
import zipfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator

from .common import Extracted, FormatError, assemble, clean

#: Largest XML part read (declared uncompressed size). A long book's document.xml is a few MB.
MAX_PART_BYTES = 64_000_000
#: Largest declared inflated size of the whole archive: more is refused as a likely zip bomb.
MAX_ARCHIVE_BYTES = 512_000_000
#: Largest ratio of a part's inflated to its compressed size, for parts above 1 MB inflated. XML
#: compresses 5 to 20 times; a zip bomb, thousands of times.
MAX_RATIO = 200
RATIO_FLOOR = 1_000_000

PAGE = object()  # a page break in a stream of text pieces
BREAK = object()  # a line break inside a paragraph


def read_part(data: bytes, name: str, kind: str) -> bytes:
    """One part of a zip archive, after checking the sizes it declares; FormatError otherwise."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        raise FormatError(f"it is damaged or not a {kind} file (not a complete zip archive); "
                          "save it again") from None
    total = sum(info.file_size for info in infos)
    if total > MAX_ARCHIVE_BYTES:
        raise FormatError(f"it would inflate to {total / 1e6:,.0f} MB (more than "
                          f"{MAX_ARCHIVE_BYTES / 1e6:,.0f} MB): refused as a possible zip bomb")
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise FormatError(f"it is not a {kind} file (it has no {name})") from None
    ratio = info.file_size / max(1, info.compress_size)
    if info.file_size > MAX_PART_BYTES or (info.file_size > RATIO_FLOOR and ratio > MAX_RATIO):
        raise FormatError(f"its {name} would inflate to {info.file_size / 1e6:,.0f} MB from "
                          f"{info.compress_size / 1e6:,.1f} MB: refused as a possible zip bomb")
    try:
        with archive.open(info) as part:
            return part.read(MAX_PART_BYTES + 1)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError,
            RuntimeError) as exc:
        raise FormatError(f"it is damaged ({exc.__class__.__name__} in {name}); save it "
                          "again") from None


def parse_xml(xml: bytes, name: str) -> ET.Element:
    """An XML part as a tree; document parts never declare entities, so one that does is refused
    (no entity expansion bomb)."""
    if b"<!ENTITY" in xml or b"<!DOCTYPE" in xml[:4096]:
        raise FormatError(f"its {name} declares XML entities, which documents never do; refused")
    try:
        return ET.fromstring(xml)
    except ET.ParseError as exc:
        raise FormatError(f"it is damaged ({name} is not well-formed XML: {exc}); save it "
                          "again") from None


def paged_text(pieces: Iterator[object]) -> Extracted:
    """Text pieces, BREAK (new line) and PAGE markers, one paragraph ended by a None, as pages
    of lines. A page break before any text of a page starts no page (a break right after
    another, or at the very top)."""
    pages: list[list[str]] = [[]]
    current: list[str] = []
    breaks = 0

    def end_line() -> None:
        line = clean("".join(current))
        if line:
            pages[-1].append(line)
        current.clear()

    for piece in pieces:
        if piece is None or piece is BREAK:
            end_line()
        elif piece is PAGE:
            end_line()
            if pages[-1]:
                pages.append([])
                breaks += 1
        else:
            current.append(piece)  # type: ignore[arg-type]
    end_line()
    if pages[-1] == [] and len(pages) > 1:
        pages.pop()
    if not any(pages):
        raise FormatError("it holds no text")
    return assemble(pages, paged=breaks > 0)


# ------------------------------------------------------------------------------------------------
# Word

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def read_docx(data: bytes) -> Extracted:
    root = parse_xml(read_part(data, "word/document.xml", "Word (.docx)"), "word/document.xml")
    body = root.find(f"{W}body")
    if body is None:
        raise FormatError("it is not a Word document (word/document.xml has no body)")
    return paged_text(_docx_blocks(body))


def _docx_blocks(parent: ET.Element) -> Iterator[object]:
    for child in parent:
        if child.tag == f"{W}p":
            before = child.find(f"{W}pPr/{W}pageBreakBefore")
            if before is not None and before.get(f"{W}val", "true") not in ("false", "0", "off"):
                yield PAGE
            yield from _docx_runs(child)
            yield None
        elif child.tag == f"{W}tbl":
            for row in child.iter(f"{W}tr"):
                cells = [" ".join(filter(None, (clean("".join(p for p in _docx_runs(para)
                                                              if isinstance(p, str)))
                                                for para in cell.iter(f"{W}p"))))
                         for cell in row.findall(f"{W}tc")]
                yield " | ".join(cells)
                yield None
        elif child.tag == f"{W}sdt":  # a content control: its content is running text
            content = child.find(f"{W}sdtContent")
            if content is not None:
                yield from _docx_blocks(content)
        elif child.tag == f"{W}customXml":
            yield from _docx_blocks(child)


def _docx_runs(paragraph: ET.Element) -> Iterator[object]:
    for node in paragraph.iter():
        tag = node.tag
        if tag == f"{W}t":
            yield node.text or ""
        elif tag == f"{W}tab":
            yield " "
        elif tag == f"{W}br":
            yield PAGE if node.get(f"{W}type") == "page" else BREAK
        elif tag == f"{W}cr":
            yield BREAK
        elif tag == f"{W}lastRenderedPageBreak":
            yield PAGE
        elif tag == f"{W}noBreakHyphen":
            yield "-"


# ------------------------------------------------------------------------------------------------
# OpenDocument

TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"
TABLE = "{urn:oasis:names:tc:opendocument:xmlns:table:1.0}"
OFFICE = "{urn:oasis:names:tc:opendocument:xmlns:office:1.0}"
STYLE = "{urn:oasis:names:tc:opendocument:xmlns:style:1.0}"
FO = "{urn:oasis:names:tc:opendocument:xmlns:xsl-fo-compatible:1.0}"
#: Elements whose text is not part of the running text.
_ODT_SKIP = {f"{TEXT}note", f"{OFFICE}annotation", f"{TEXT}tracked-changes",
             f"{TEXT}sequence-decls", f"{TEXT}variable-decls", f"{OFFICE}forms"}


def read_odt(data: bytes) -> Extracted:
    root = parse_xml(read_part(data, "content.xml", "OpenDocument text (.odt)"), "content.xml")
    text = root.find(f"{OFFICE}body/{OFFICE}text")
    if text is None:
        raise FormatError("it is not an OpenDocument text (content.xml has no text body)")
    return paged_text(_odt_blocks(text, _page_styles(root)))


def _page_styles(root: ET.Element) -> tuple[set[str], set[str]]:
    """Names of the automatic paragraph styles that start (or end) a page."""
    before, after = set(), set()
    styles = root.find(f"{OFFICE}automatic-styles")
    for style in (styles if styles is not None else []):
        props = style.find(f"{STYLE}paragraph-properties")
        name = style.get(f"{STYLE}name")
        if props is None or name is None:
            continue
        if props.get(f"{FO}break-before") == "page":
            before.add(name)
        if props.get(f"{FO}break-after") == "page":
            after.add(name)
    return before, after


def _odt_blocks(parent: ET.Element, breaks: tuple[set[str], set[str]]) -> Iterator[object]:
    for child in parent:
        tag = child.tag
        if tag in (f"{TEXT}p", f"{TEXT}h"):
            style = child.get(f"{TEXT}style-name")
            if style in breaks[0]:
                yield PAGE
            yield from _odt_inline(child)
            yield None
            if style in breaks[1]:
                yield PAGE
        elif tag == f"{TEXT}soft-page-break":
            yield PAGE
        elif tag == f"{TABLE}table":
            for row in child.iter(f"{TABLE}table-row"):
                cells = [" ".join(filter(None, (clean("".join(p for p in _odt_inline(para)
                                                              if isinstance(p, str)))
                                                for para in cell.iter() if para.tag in
                                                (f"{TEXT}p", f"{TEXT}h"))))
                         for cell in row.findall(f"{TABLE}table-cell")]
                if any(cells):
                    yield " | ".join(cells)
                    yield None
        elif tag not in _ODT_SKIP:
            yield from _odt_blocks(child, breaks)  # lists, list items, sections, indexes


def _odt_inline(node: ET.Element) -> Iterator[object]:
    if node.text:
        yield node.text
    for child in node:
        tag = child.tag
        if tag == f"{TEXT}s":
            yield " " * int(child.get(f"{TEXT}c", "1") or 1)
        elif tag == f"{TEXT}tab":
            yield " "
        elif tag == f"{TEXT}line-break":
            yield BREAK
        elif tag == f"{TEXT}soft-page-break":
            yield PAGE
        elif tag not in _ODT_SKIP:
            yield from _odt_inline(child)
        if child.tail:
            yield child.tail


# ------------------------------------------------------------------------------------------------
# EPUB

CONTAINER = "{urn:oasis:names:tc:opendocument:xmlns:container}"
OPF = "{http://www.idpf.org/2007/opf}"
#: Chapters read at most: an EPUB's spine lists a few dozen.
MAX_CHAPTERS = 2000
_HEAD = re.compile(r"<head\b.*?</head\s*>", re.IGNORECASE | re.DOTALL)


def read_epub(data: bytes) -> Extracted:
    from posixpath import dirname, join, normpath

    from ..corpus import html_to_text
    container = parse_xml(read_part(data, "META-INF/container.xml", "EPUB"),
                          "META-INF/container.xml")
    rootfile = container.find(f".//{CONTAINER}rootfile")
    package_path = rootfile.get("full-path") if rootfile is not None else None
    if not package_path:
        raise FormatError("it is not an EPUB (its container names no package file)")
    package = parse_xml(read_part(data, package_path, "EPUB"), package_path)
    base = dirname(package_path)
    hrefs = {item.get("id"): item.get("href") for item in package.iter(f"{OPF}item")
             if item.get("media-type") in ("application/xhtml+xml", "text/html")}
    spine = [ref.get("idref") for ref in package.iter(f"{OPF}itemref")][:MAX_CHAPTERS]
    lines: list[str] = []
    for idref in spine:
        href = hrefs.get(idref)
        if not href:
            continue
        name = normpath(join(base, href.split("#")[0]))
        markup = read_part(data, name, "EPUB").decode("utf-8", errors="replace")
        markup = _HEAD.sub("", markup)  # a chapter's <title> repeats the book's or its heading
        lines.extend(line for line in (clean(raw) for raw in
                                       html_to_text(markup).split("\n")) if line)
    if not lines:
        raise FormatError("it holds no text")
    return assemble([lines], paged=False)
