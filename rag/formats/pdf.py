"""PDF text with pdfminer.six: its layout analysis groups a page's characters into lines and its
lines into text boxes (paragraphs, table cells), with their positions; :func:`reading_order`
then orders the boxes, column by column, whatever order the file draws them in. pypdf was
measured against it (README "Formats"): several times faster, but it reads a two-column page
drawn row by row in that order, and it gives lines without paragraphs.

Each text box becomes one line of the page's text (its visual lines joined, hyphenated words
mended); single-line boxes that sit side by side on two or more rows are a table and become one
line per row, cells separated by " | ". Pages are separated in the text by nothing but their
start offsets, and their running headers, footers and page numbers are marked as furniture.

Skipped with a reason: a file that is not a PDF or is cut short (no ``%%EOF`` at its end), one
that needs a password, one that cannot be parsed, and one with no text layer at all (scanned
pages: OCR them first, e.g. with ocrmypdf, then index the result).
"""
from __future__ import annotations

import io
import logging
import re
from dataclasses import replace

from .common import (FURNITURE_DEPTH, PAGE_NUMBER, Extracted, FormatError, assemble, continues,
                     join_lines)

# pdfminer reports every oddity of a file (a colour it cannot set, a font it guesses) on its
# loggers; a file we can read is not the user's concern, one we cannot read gets our one line.
logging.getLogger("pdfminer").setLevel(logging.ERROR)

#: A PDF's header must sit in its first kilobyte, its end-of-file marker in its last two.
HEADER_WINDOW, EOF_WINDOW = 1024, 2048
#: Boxes whose tops are this close (points) sit on one table row.
ROW_TOLERANCE = 2.0
#: pdfminer's placeholder for a glyph whose font has no character map.
_CID = re.compile(r"\(cid:\d+\)")
#: Pages at least this many before a progress bar is shown (when asked for).
PROGRESS_PAGES = 20


def read_pdf(data: bytes, progress: bool = False) -> Extracted:
    """Every page's paragraphs, page starts and furniture; FormatError when the file cannot be
    indexed. ``progress``: a progress bar over the pages of a long PDF."""
    pages = _open_pages(data)
    page_lines, edges = _read_pages(pages, progress)
    if not any(page_lines):
        raise FormatError("the PDF has no text layer (scanned pages?); run OCR on it (e.g. "
                          "ocrmypdf) and index the result")
    extracted = assemble(page_lines, edges=edges)
    blank = [str(i) for i, lines in enumerate(page_lines, start=1) if not lines]
    if blank:
        listed = ", ".join(blank[:10]) + (", ..." if len(blank) > 10 else "")
        several = len(blank) > 1
        note = (f"page{'s' if several else ''} {listed} of {len(page_lines)} "
                f"{'hold' if several else 'holds'} no text (scanned or pictures only); the rest "
                "is indexed (run OCR on the file to index them too)")
        extracted = replace(extracted, note=note)
    return extracted


def read_pdf_page(data: bytes, number: int) -> tuple[list[str], int]:
    """The lines of page ``number`` (1-based) alone and the PDF's page count: exactly the lines
    :func:`read_pdf` gives that page (a page's text depends on that page only), for the source
    view, which shows one page of a long PDF without reading the others. FormatError as
    :func:`read_pdf`; IndexError for a page past the end."""
    pages = _open_pages(data)
    if not 1 <= number <= len(pages):
        raise IndexError(number)
    return _read_pages([pages[number - 1]], False)[0][0], len(pages)


def _open_pages(data: bytes) -> list:
    """The pages of a PDF, ready to be interpreted; FormatError when the file cannot be read."""
    if b"%PDF-" not in data[:HEADER_WINDOW]:
        raise FormatError("it is not a PDF (no PDF header); check the file")
    if b"%%EOF" not in data[-EOF_WINDOW:]:
        raise FormatError("the PDF is truncated (its end is missing); download or save it again")
    from pdfminer.pdfdocument import PDFDocument, PDFEncryptionError, PDFPasswordIncorrect
    from pdfminer.pdfpage import PDFPage
    from pdfminer.pdfparser import PDFParser
    try:
        document = PDFDocument(PDFParser(io.BytesIO(data)))
        pages = list(PDFPage.create_pages(document))
    except (PDFPasswordIncorrect, PDFEncryptionError):
        raise FormatError("the PDF is encrypted and needs a password; save a copy without "
                          "password protection to index it") from None
    except Exception as exc:  # pdfminer raises many kinds (PSEOF, PDFSyntaxError, KeyError...)
        raise FormatError(f"the PDF is damaged ({exc.__class__.__name__}); save it again from "
                          "the application that made it") from None
    if not pages:
        raise FormatError("the PDF has no pages")
    return pages


def _read_pages(pages: list, progress: bool) -> tuple[list[list[str]], list[set[int]]]:
    """Each page's lines, and the indexes of those at its top and bottom edges."""
    from pdfminer.converter import PDFPageAggregator
    from pdfminer.layout import LAParams
    from pdfminer.pdfinterp import PDFPageInterpreter, PDFResourceManager
    manager = PDFResourceManager(caching=True)
    # boxes_flow=None: pdfminer groups characters into lines and lines into boxes (paragraphs),
    # but does not order the boxes; reading_order does, by columns.
    device = PDFPageAggregator(manager, laparams=LAParams(all_texts=True, boxes_flow=None))
    interpreter = PDFPageInterpreter(manager, device)
    shown = pages
    if progress and len(pages) >= PROGRESS_PAGES:
        from tqdm import tqdm
        shown = tqdm(pages, desc="reading PDF pages", unit="page", leave=False)
    out: list[list[str]] = []
    edges: list[set[int]] = []
    for page in shown:
        try:
            interpreter.process_page(page)
            blocks = page_blocks(device.get_result())
        except Exception as exc:
            raise FormatError(f"the PDF is damaged (page {len(out) + 1}: "
                              f"{exc.__class__.__name__}); save it again from the application "
                              "that made it") from None
        out.append([block.text for block in blocks])
        edges.append(edge_lines(blocks))
    return out, edges


def _boxes(container) -> list:
    """The text boxes of a page, those inside figures included (unordered: see reading_order)."""
    from pdfminer.layout import LTFigure, LTTextBox
    found = []
    for item in container:
        if isinstance(item, LTTextBox):
            found.append(item)
        elif isinstance(item, LTFigure):
            found.extend(_boxes(item))
    return found


def _box_text(box) -> tuple[str, int]:
    """A box's text as one line, and how many visual lines it had."""
    lines = [_CID.sub("", line.get_text()) for line in box]
    return join_lines(lines), len(lines)


class _Block:
    """A paragraph or a table row with its place on the page (pdfminer's coordinates: points,
    origin at the bottom left)."""

    __slots__ = ("text", "x0", "x1", "y0", "y1", "row", "single")

    def __init__(self, text: str, boxes: list, row: bool = False, single: bool = False) -> None:
        self.text, self.row, self.single = text, row, single  # single: one visual line
        self.x0, self.x1 = min(b.x0 for b in boxes), max(b.x1 for b in boxes)
        self.y0, self.y1 = min(b.y0 for b in boxes), max(b.y1 for b in boxes)

    def joined(self, following: "_Block") -> "_Block":
        """This paragraph continued by ``following`` (the top of the next column): the text
        joined, the place that of the first part (where the paragraph starts)."""
        block = _Block(join_lines([self.text, following.text]), [self])
        block.row = False
        return block


def page_text_lines(layout) -> list[str]:
    """One page's paragraphs (and table rows), in reading order."""
    return [block.text for block in page_blocks(layout)]


def edge_lines(blocks: list[_Block], depth: int = FURNITURE_DEPTH) -> set[int]:
    """Indexes of the blocks highest and lowest on the page (``depth`` each): where running
    headers, footers and page numbers sit, wherever the reading order puts them (a page number
    in the bottom left corner of a two-column page comes between the columns)."""
    order = range(len(blocks))
    top = sorted(order, key=lambda i: -blocks[i].y1)[:depth]
    bottom = sorted(order, key=lambda i: blocks[i].y0)[:depth]
    return set(top) | set(bottom)


def page_blocks(layout) -> list[_Block]:
    """One page's paragraphs (and table rows) with their places, in reading order."""
    items = []
    for box in _boxes(layout):
        text, count = _box_text(box)
        if text:
            items.append((box, text, count))
    rows = _table_rows([(i, box) for i, (box, _, count) in enumerate(items) if count == 1])
    in_rows = {i for row in rows for i in row}
    blocks = [_Block(text, [box], single=count == 1)
              for i, (box, text, count) in enumerate(items) if i not in in_rows]
    for row in rows:
        cells = sorted(row, key=lambda k: items[k][0].x0)
        blocks.append(_Block(" | ".join(items[k][1] for k in cells),
                             [items[k][0] for k in cells], row=True))
    return _mend_columns(reading_order(blocks))


def reading_order(blocks: list[_Block]) -> list[_Block]:
    """Blocks top to bottom; on a page set in two columns, the left column before the right one,
    between the blocks that span both (titles, tables, a centred footer). One-line blocks above
    everything else come first wherever they sit across (a header flush right), and a page
    number below everything else comes last (in a corner, it would sit between the columns).
    Nothing else is moved: the lowest line of the left column of a last page is not a footer.

    pdfminer's own ordering of boxes was measured on a two-column page drawn row by row: it put a
    box from the top of the right column before the rest of the left one."""
    head: list[_Block] = []
    tail: list[_Block] = []
    rest = sorted(blocks, key=lambda b: (-b.y1, b.x0))
    while len(rest) > 1 and rest[0].single and rest[0].y0 >= max(b.y1 for b in rest[1:]):
        head.append(rest.pop(0))
    if len(rest) > 1:
        lowest = min(rest, key=lambda b: b.y1)
        others = [b for b in rest if b is not lowest]
        if PAGE_NUMBER.match(lowest.text) and lowest.y1 <= min(b.y0 for b in others):
            tail, rest = [lowest], others
    return head + _columns(rest) + tail


def _columns(blocks: list[_Block]) -> list[_Block]:
    """Blocks (sorted top to bottom) in column order; see :func:`reading_order`."""
    if len(blocks) < 2:
        return blocks
    left, right = min(b.x0 for b in blocks), max(b.x1 for b in blocks)
    middle = (left + right) / 2
    top_down = sorted(blocks, key=lambda b: (-b.y1, b.x0))
    if not any(b.x0 >= middle for b in blocks):
        return top_down  # one column
    out: list[_Block] = []
    region: list[_Block] = []

    def flush() -> None:
        out.extend(b for b in region if b.x1 <= middle)
        out.extend(b for b in region if b.x1 > middle)
        region.clear()

    for block in top_down:
        if block.x0 < middle < block.x1:  # spans both columns: ends a region
            flush()
            out.append(block)
        else:
            region.append(block)
    flush()
    return out


def _mend_columns(blocks: list[_Block]) -> list[_Block]:
    """Paragraphs cut by the end of a column joined back: the next block starts higher up the
    page than the previous one ends and to its right (it heads the next column), in lower case,
    and the previous one does not end a paragraph; a word cut there is mended too."""
    out: list[_Block] = []
    for block in blocks:
        last = out[-1] if out else None
        if (last is not None and not block.row and not last.row
                and block.y1 > last.y0 and block.x0 > last.x1 - 1
                and continues(last.text, block.text)):
            out[-1] = last.joined(block)
        else:
            out.append(block)
    return out


def _table_rows(single: list[tuple[int, object]]) -> list[list[int]]:
    """Rows of a table: groups of two or more one-line boxes whose tops align, when there are at
    least two such rows with as many cells (one aligned pair alone is more likely two columns'
    headings than a table)."""
    groups: list[list[tuple[int, object]]] = []
    for i, box in sorted(single, key=lambda item: -item[1].y1):
        if groups and abs(groups[-1][0][1].y1 - box.y1) <= ROW_TOLERANCE:
            groups[-1].append((i, box))
        else:
            groups.append([(i, box)])
    rows = [[i for i, _ in g] for g in groups if len(g) >= 2]
    widths = [len(r) for r in rows]
    return [r for r in rows if widths.count(len(r)) >= 2]
