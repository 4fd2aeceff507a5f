"""Real PDF, DOCX and ODT files made at test time by real tools, from the seeds' text.

PDFs are laid out here line by line on a reportlab canvas (reportlab's bundled Vera font, which
has the ﬁ and ﬂ ligature glyphs), so the tests know exactly which page and which paragraph of the
page every sentence lands on: :class:`PdfLayout` records it. Long words that do not fit at the
end of a line are hyphenated, as typesetters do, so the reader must join them back. DOCX files are
written by python-docx and ODT files by odfpy; bad files (truncated, encrypted, image only, a zip
bomb) are made from good ones.
"""
from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

SEEDS = Path(__file__).resolve().parent.parent / "seeds"
PAGE_W, PAGE_H = 595.0, 842.0  # A4 in points
MARGIN = 56.0
FONT_SIZE = 11.0
LEADING = 14.0
PARAGRAPH_GAP = 10.0
GUTTER = 24.0
HEADER = "Revue de presse OTAN, édition 2025"


def seed_paragraphs(name: str) -> list[str]:
    """The non-blank lines of one seed file: each line is a paragraph."""
    text = (SEEDS / name).read_text(encoding="utf-8")
    return [line.strip() for line in text.split("\n") if line.strip()]


def seed_names() -> list[str]:
    return sorted(p.name for p in SEEDS.glob("*.txt"))


def _font() -> str:
    import reportlab
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont
    if "Vera" not in pdfmetrics.getRegisteredFontNames():
        path = os.path.join(os.path.dirname(reportlab.__file__), "fonts", "Vera.ttf")
        pdfmetrics.registerFont(TTFont("Vera", path))
    return "Vera"


def wrap(text: str, width: float, hyphenate: bool = True) -> list[str]:
    """``text`` cut into lines no wider than ``width``; a long word that does not fit is cut with
    a hyphen when its first part (4 letters or more) fits."""
    from reportlab.pdfbase.pdfmetrics import stringWidth
    font = _font()
    lines, current = [], ""
    for word in text.split(" "):
        trial = f"{current} {word}" if current else word
        if stringWidth(trial, font, FONT_SIZE) <= width:
            current = trial
            continue
        if hyphenate and len(word) >= 9 and word.isalpha():
            for cut in range(len(word) - 3, 3, -1):
                head = f"{current} {word[:cut]}-" if current else f"{word[:cut]}-"
                if stringWidth(head, font, FONT_SIZE) <= width:
                    lines.append(head)
                    current = word[cut:]
                    break
            else:
                lines.append(current)
                current = word
            continue
        if current:
            lines.append(current)
        current = word
    if current:
        lines.append(current)
    return lines


@dataclass
class PdfLayout:
    """Where each paragraph went: ``places[i]`` lists (page, paragraph index on that page, both
    1-based) for paragraph i, one entry per page it spans. With a header, the paragraph index on
    a page counts the header line as 1."""

    pages: int = 0
    places: list[list[tuple[int, int]]] = field(default_factory=list)


def make_pdf(path: Path, paragraphs: list[str], *, columns: int = 1, header: str | None = HEADER,
             page_numbers: bool = True, interleave: bool = False, hyphenate: bool = True,
             title: str | None = None, header_right: bool = False,
             number_left: bool = False) -> PdfLayout:
    """Write ``paragraphs`` as a PDF with reportlab's canvas and say where each one went.

    ``columns=2`` sets the text in two columns; ``interleave`` then writes each row of the two
    columns together into the page's content (left line, right line, ...), the order some
    generators use, so only a reader that looks at positions gets the columns right.
    ``header_right`` sets the running header flush right and ``number_left`` the page number in
    the bottom left corner (as journals do), instead of the left and the centre.
    """
    from reportlab.pdfbase.pdfmetrics import stringWidth
    from reportlab.pdfgen import canvas
    font = _font()
    c = canvas.Canvas(str(path), pagesize=(PAGE_W, PAGE_H), invariant=1)
    if title:
        c.setTitle(title)
    col_w = (PAGE_W - 2 * MARGIN - (columns - 1) * GUTTER) / columns
    top, bottom = PAGE_H - MARGIN - 2 * LEADING, MARGIN + 2 * LEADING
    layout = PdfLayout(places=[[] for _ in paragraphs])
    ops: list[tuple[float, float, str]] = []
    page, col, y, on_page = 1, 0, top, (1 if header else 0)

    def finish_page() -> None:
        nonlocal ops
        c.setFont(font, FONT_SIZE)
        if header and header_right:
            c.drawRightString(PAGE_W - MARGIN, PAGE_H - MARGIN, header)
        elif header:
            c.drawString(MARGIN, PAGE_H - MARGIN, header)
        order = sorted(ops, key=lambda o: (-o[1], o[0])) if interleave else ops
        for x, yy, text in order:
            c.drawString(x, yy, text)
        if page_numbers:
            label = f"Page {page}"
            x = MARGIN if number_left else (PAGE_W - stringWidth(label, font, FONT_SIZE)) / 2
            c.drawString(x, MARGIN, label)
        c.showPage()
        ops = []

    for i, paragraph in enumerate(paragraphs):
        lines = wrap(paragraph, col_w, hyphenate)
        on_page += 1
        layout.places[i].append((page, on_page))
        for k, line in enumerate(lines):
            if y < bottom:
                col += 1
                y = top
                if col == columns:
                    finish_page()
                    page, col, on_page = page + 1, 0, (1 if header else 0) + 1
                    if k == 0:  # the whole paragraph goes to the next page
                        layout.places[i] = []
                    layout.places[i].append((page, on_page))
            ops.append((MARGIN + col * (col_w + GUTTER), y, line))
            y -= LEADING
        y -= PARAGRAPH_GAP
    finish_page()
    c.save()
    layout.pages = page
    return layout


def make_image_pdf(path: Path, pages: int = 2) -> None:
    """A 'scanned' PDF: every page one picture, no text layer."""
    from PIL import Image, ImageDraw
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas
    image = Image.new("RGB", (400, 200), "white")
    ImageDraw.Draw(image).text((20, 80), "Texte scanné, sans couche de texte", fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    c = canvas.Canvas(str(path), pagesize=(PAGE_W, PAGE_H), invariant=1)
    for _ in range(pages):
        c.drawImage(ImageReader(io.BytesIO(buffer.getvalue())), MARGIN, 400, 400, 200)
        c.showPage()
    c.save()


def encrypt_pdf(source: Path, target: Path, password: str = "secret") -> None:
    """``source`` encrypted by pypdf (AES-256) with a user password: it cannot be read without.
    An empty ``password`` makes the common "secured" PDF that opens without one (only an owner
    password restricts printing or copying)."""
    from pypdf import PdfReader, PdfWriter
    writer = PdfWriter(clone_from=PdfReader(source))
    writer.encrypt(user_password=password, owner_password="owner-" + password,
                   algorithm="AES-256")
    with open(target, "wb") as f:
        writer.write(f)


def add_image_page(source: Path, target: Path) -> None:
    """``source`` with a picture-only page (no text) appended, as a scanned annex would be."""
    from pypdf import PdfReader, PdfWriter
    scan = target.with_suffix(".scan.pdf")
    make_image_pdf(scan, pages=1)
    writer = PdfWriter(clone_from=PdfReader(source))
    writer.append(PdfReader(scan))
    with open(target, "wb") as f:
        writer.write(f)


def make_table_pdf(path: Path) -> list[list[str]]:
    """A page with a sentence and a three-column table drawn cell by cell, row by row."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle
    font = _font()
    rows = [["Pays", "Dépenses 2024", "Objectif"],
            ["Pologne", "4,1 %", "5 %"],
            ["Finlande", "2,4 %", "3 %"],
            ["Espagne", "1,3 %", "2 %"]]
    style = ParagraphStyle("body", fontName=font, fontSize=FONT_SIZE, leading=LEADING)
    table = Table(rows, colWidths=[150, 120, 100])
    table.setStyle(TableStyle([("FONTNAME", (0, 0), (-1, -1), font),
                               ("GRID", (0, 0), (-1, -1), 0.5, colors.grey)]))
    doc = SimpleDocTemplate(str(path), pagesize=A4, invariant=1)
    doc.build([Paragraph("Les dépenses de défense des alliés, en part du PIB.", style),
               Spacer(1, 12), table])
    return rows


def make_ligature_pdf(path: Path) -> None:
    """A page whose words are drawn with the ﬁ and ﬂ ligature glyphs."""
    from reportlab.pdfgen import canvas
    font = _font()
    c = canvas.Canvas(str(path), pagesize=(PAGE_W, PAGE_H), invariant=1)
    c.setFont(font, FONT_SIZE)
    c.drawString(MARGIN, 700, "Le ﬁnancement de la défense reﬂète les engagements des alliés.")
    c.showPage()
    c.save()


def make_docx(path: Path, paragraphs: list[str], page_break_after: int | None = None,
              table: list[list[str]] | None = None, heading: str | None = None) -> None:
    """A Word document written by python-docx: a heading, the paragraphs (a page break after
    paragraph ``page_break_after``), and a table."""
    import docx
    document = docx.Document()
    if heading:
        document.add_heading(heading, level=1)
    for i, paragraph in enumerate(paragraphs, start=1):
        document.add_paragraph(paragraph)
        if page_break_after == i:
            document.add_page_break()
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for k, cell in enumerate(row):
                grid.cell(r, k).text = cell
    document.save(str(path))


def make_odt(path: Path, paragraphs: list[str], page_break_after: int | None = None,
             table: list[list[str]] | None = None, heading: str | None = None) -> None:
    """An OpenDocument text written by odfpy: the same content as :func:`make_docx` (the page
    break is a paragraph style that starts a new page, as LibreOffice writes it)."""
    from odf.opendocument import OpenDocumentText
    from odf.style import ParagraphProperties, Style
    from odf.table import Table, TableCell, TableColumn, TableRow
    from odf.text import H, P
    document = OpenDocumentText()
    breaking = Style(name="BreakBefore", family="paragraph")
    breaking.addElement(ParagraphProperties(breakbefore="page"))
    document.automaticstyles.addElement(breaking)
    if heading:
        document.text.addElement(H(outlinelevel=1, text=heading))
    for i, paragraph in enumerate(paragraphs, start=1):
        after_break = page_break_after is not None and i == page_break_after + 1
        document.text.addElement(P(text=paragraph, stylename=breaking) if after_break
                                 else P(text=paragraph))
    if table:
        grid = Table(name="Tableau1")
        grid.addElement(TableColumn(numbercolumnsrepeated=len(table[0])))
        for row in table:
            tr = TableRow()
            for cell in row:
                tc = TableCell()
                tc.addElement(P(text=cell))
                tr.addElement(tc)
            grid.addElement(tr)
        document.text.addElement(grid)
    document.save(str(path))


def truncate(source: Path, target: Path, keep: float = 0.6) -> None:
    """The first ``keep`` share of ``source``'s bytes, as a download cut short leaves it."""
    data = source.read_bytes()
    target.write_bytes(data[:int(len(data) * keep)])


def make_zip_bomb(path: Path, inflated: int = 200_000_000) -> None:
    """A '.docx' whose document.xml inflates to ``inflated`` bytes of zeros from a few MB:
    written by streaming, so making it costs no memory."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        with zf.open("word/document.xml", "w", force_zip64=True) as f:
            block = b"\0" * (1 << 20)
            for _ in range(inflated // len(block)):
                f.write(block)


def make_epub(path: Path, chapters: list[list[str]], title: str = "Revue de presse") -> None:
    """An EPUB 3 written as the specification lays it out (the ``mimetype`` entry first and
    stored, a container, a package with its manifest and spine, one XHTML file per chapter)."""
    from html import escape
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip",
                    compress_type=zipfile.ZIP_STORED)
        zf.writestr("META-INF/container.xml", (
            '<?xml version="1.0"?><container version="1.0" '
            'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
            '<rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
            "</rootfiles></container>"))
        items = "".join(f'<item id="c{i}" href="text/ch{i}.xhtml" '
                        f'media-type="application/xhtml+xml"/>' for i in range(len(chapters)))
        spine = "".join(f'<itemref idref="c{i}"/>' for i in range(len(chapters)))
        zf.writestr("OEBPS/content.opf", (
            '<?xml version="1.0" encoding="utf-8"?><package xmlns="http://www.idpf.org/2007/opf" '
            'version="3.0" unique-identifier="id"><metadata '
            'xmlns:dc="http://purl.org/dc/elements/1.1/">'
            '<dc:identifier id="id">test</dc:identifier>'
            f"<dc:title>{escape(title)}</dc:title><dc:language>fr</dc:language></metadata>"
            f"<manifest>{items}</manifest><spine>{spine}</spine></package>"))
        for i, paragraphs in enumerate(chapters):
            body = "".join(f"<p>{escape(p)}</p>" for p in paragraphs)
            zf.writestr(f"OEBPS/text/ch{i}.xhtml", (
                '<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml">'
                f"<head><title>Chapitre {i + 1}</title></head><body>{body}</body></html>"))
