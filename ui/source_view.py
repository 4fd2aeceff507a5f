"""The source view: one indexed file as an HTML page, with line numbers and the cited lines lit.

Served by the chat app at ``GET /source/{path}?v=<version>&lines=12-14``. A citation link lands on
the exact lines it quotes, so a reader can check the answer against the document in one click.

Only files of the loaded index are shown, and only as long as they are: the path must be a file
of the index's manifest (a corpus-suffixed file that was never indexed is not served), and it is
checked again against the corpus folder after resolving symlinks and ``..``. Anything else is a
404 page that does not repeat the path, so the route says nothing about which files exist
elsewhere on the machine.

``v`` is the short content hash of the file the answer quoted (see ``ui.render.source_url``).
When the file has changed since, lighting the same line numbers would point at other text: the
page says the file changed and links to the current version instead. A file that has left the
index gets a page saying so. A file larger than :data:`MAX_SOURCE_BYTES` is not read at all: its
page shows the cited lines from the index. File text is data, never markup: every line is
HTML-escaped.

A PDF (or a Word or OpenDocument file that records page breaks) is shown one page at a time:
``?page=3&lines=12-14`` opens its page 3, lines numbered within the page as citations count them,
with links to the pages around it and to the original file, which ``GET /original/{path}?v=``
downloads (as an attachment: a PDF's own scripts never run in the chat's origin). The text shown
is the one the indexer extracted. A PDF's page is read alone (a page's text depends on that page
only), so the page of a 300-page PDF opens as fast as that of a one-page one; Word, OpenDocument
and EPUB files are read whole, and the last few are kept, keyed by path, size and modification
time.
"""
from __future__ import annotations

import base64
import hashlib
import html
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, HTMLResponse, Response

from rag.config import CORPUS_SUFFIXES
from rag.corpus import content_hash, file_hash, read_document
from rag.formats import FormatError, is_document_format
from rag.formats.pdf import read_pdf_page
from rag.index import Index
from rag.records import Document

from .render import line_range, original_url, source_url, version_tag

log = logging.getLogger(__name__)

#: Largest file (bytes on disk) the source view shows whole. Its page is about twice its size in
#: HTML and the whole text is read and decoded per request: a 50 MB file made a 78 MB page and
#: took 350 MB of server memory. Above this, the page shows only the cited lines, from the index.
MAX_SOURCE_BYTES = 1_000_000
#: Most lines the page of a too-large file shows, whatever range the link asks for.
MAX_SHOWN_LINES = 200
#: The same limit for a PDF, DOCX or ODT file: these hold far less text per byte (fonts, images,
#: compression), and their text is read once and kept (:data:`DOCUMENT_CACHE` documents).
MAX_DOCUMENT_BYTES = 50_000_000
DOCUMENT_CACHE = 4
#: Media types of the originals offered for download.
MEDIA_TYPES = {".pdf": "application/pdf",
               ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
               ".odt": "application/vnd.oasis.opendocument.text",
               ".epub": "application/epub+zip"}


def resolve_source(corpus: Path, relative: str) -> Path | None:
    """The corpus file named by ``relative`` (as found in a citation), or None if it is not one.

    Refused: absolute paths, ``..`` or hidden parts (the indexer skips hidden files too),
    backslashes, files whose real location (after symlinks) is outside the corpus, and files that
    are not of a corpus kind. The path is taken as already URL-decoded once by the server; it is
    never decoded again, so ``%2e%2e`` stays a (missing) file name.
    """
    if not relative or "\\" in relative or "\x00" in relative or relative.startswith("/"):
        return None
    parts = relative.split("/")
    if any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        return None
    root = corpus.resolve()
    candidate = root.joinpath(*parts)
    if candidate.suffix.lower() not in CORPUS_SUFFIXES:
        return None
    try:
        real = candidate.resolve(strict=True)
    except (OSError, RuntimeError):  # missing file, symlink loop
        return None
    if not real.is_relative_to(root) or not real.is_file():
        return None
    if real.suffix.lower() not in CORPUS_SUFFIXES:
        return None
    return candidate


def document_name(relative: str) -> bool:
    """Whether ``relative`` is spelt like a path the indexer could have recorded (a corpus
    suffix, no hidden, empty or ``..`` part): only such a name is repeated on a page."""
    parts = relative.split("/")
    return (bool(relative) and "\\" not in relative and "\x00" not in relative
            and not any(part in ("", ".", "..") or part.startswith(".") for part in parts)
            and Path(parts[-1]).suffix.lower() in CORPUS_SUFFIXES)


def parse_lines(value: str | None) -> tuple[int, int] | None:
    """``"12-14"`` -> (12, 14), ``"7"`` -> (7, 7); anything malformed -> None (no highlight)."""
    if not value:
        return None
    start, _, end = value.partition("-")
    try:
        first, last = int(start), int(end or start)
    except ValueError:
        return None
    if first < 1 or last < first:
        return None
    return first, last


PAGE_CSS = """
body { margin: 0; font-family: system-ui, -apple-system, "Segoe UI", sans-serif;
       color: #1f2937; background: #f9fafb; }
header { position: sticky; top: 0; background: #fff; border-bottom: 1px solid #e5e7eb;
         padding: .75rem 1.25rem; z-index: 1; }
header h1 { margin: 0; font-size: 1.15rem; word-break: break-all; }
header p { margin: .25rem 0 0; color: #6b7280; font-size: .9rem; }
main { padding: 1rem 0 40vh; }
.line { display: flex; padding: 0 1.25rem; line-height: 1.55; scroll-margin-top: 6rem; }
.line .ln { flex: 0 0 3.5rem; text-align: right; padding-right: 1rem; color: #9ca3af;
            text-decoration: none; user-select: none; font-variant-numeric: tabular-nums; }
.line .tx { white-space: pre-wrap; word-break: break-word; flex: 1; }
.line.hl { background: #fef3c7; box-shadow: inset 4px 0 #f59e0b; }
.line:target .ln { color: #b45309; font-weight: 600; }
.notice { margin: 0 1.25rem 1rem; padding: .75rem 1rem; border: 1px solid #f59e0b;
          border-radius: 8px; background: #fffbeb; color: #92400e; line-height: 1.5; }
.notice p { margin: 0 0 .4rem; }
.notice p:last-child { margin-bottom: 0; }
.notice a { color: #1d4ed8; font-weight: 600; }
nav.pages { display: flex; gap: 1rem; flex-wrap: wrap; margin: .4rem 0 0; font-size: .9rem; }
nav.pages a { color: #1d4ed8; text-decoration: none; font-weight: 600; }
"""


#: Scrolls the first cited line to the middle of the window (the #L anchor alone puts it at the
#: very top, under the sticky header).
SCROLL_SCRIPT = ("addEventListener('load',function(){var e=document.querySelector('.hl');"
                 "if(e)e.scrollIntoView({block:'center'});});")
#: Defense in depth: even if some text escaped escaping, the browser runs no script but ours.
CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-"
       + base64.b64encode(hashlib.sha256(SCROLL_SCRIPT.encode()).digest()).decode() + "'")


def page(title: str, subtitle: str, body: str, status: int = 200, nav: str = "") -> HTMLResponse:
    """Any source-view page: sticky heading, then ``body`` (already HTML); escapes the texts.
    ``nav``: links under the heading (already HTML)."""
    html_page = (f'<!doctype html><html lang="fr"><head><meta charset="utf-8">'
                 f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                 f"<title>{html.escape(title)}</title><style>{PAGE_CSS}</style></head><body>"
                 f"<header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p>{nav}"
                 f"</header>"
                 f"<main>{body}</main><script>{SCROLL_SCRIPT}</script></body></html>")
    return HTMLResponse(html_page, status_code=status, headers={"Content-Security-Policy": CSP})


def line_rows(numbered: Iterable[tuple[int, str]], lines: tuple[int, int] | None) -> str:
    """One ``<div id="L<n>">`` per line, the lines in ``lines`` with class ``hl``."""
    first, last = lines or (0, -1)
    rows = []
    for number, line in numbered:
        lit = " hl" if first <= number <= last else ""
        rows.append(f'<div class="line{lit}" id="L{number}"><a class="ln" href="#L{number}">'
                    f'{number}</a><span class="tx">{html.escape(line.rstrip(chr(13)))}</span>'
                    f"</div>")
    return "".join(rows)


def _rows(text: str) -> list[str]:
    rows = text.split("\n")
    if rows and rows[-1] == "":
        rows.pop()  # the final line break does not start a line
    return rows


def render_page(source: str, text: str, lines: tuple[int, int] | None,
                download: str = "") -> HTMLResponse:
    """The whole file: heading, one row per line, the cited lines lit. ``download``: the URL of
    the original file, for a document whose text was extracted."""
    rows = _rows(text)
    count = f"{len(rows)} lignes"
    subtitle = f"{line_range(*lines)} · {count}" if lines else count
    nav = _nav([("Télécharger l’original", download)]) if download else ""
    return page(source, subtitle, line_rows(enumerate(rows, start=1), lines), nav=nav)


def _nav(links: list[tuple[str, str]]) -> str:
    return '<nav class="pages">' + "".join(
        f'<a href="{html.escape(url, quote=True)}">{html.escape(label)}</a>'
        for label, url in links) + "</nav>"


def parse_page(value: str | None) -> int | None:
    """``"3"`` -> 3; anything else (missing, not a number, below 1) -> None."""
    try:
        number = int(value) if value else None
    except ValueError:
        return None
    return number if number is not None and number >= 1 else None


def page_text(document: Document, number: int) -> str:
    """The text of page ``number`` (1-based) of a document with pages."""
    starts = document.pages
    end = starts[number] if number < len(starts) else len(document.text)
    return document.text[starts[number - 1]:end]


def render_document_page(document: Document, number: int | None, lines: tuple[int, int] | None,
                         version: str) -> HTMLResponse:
    """One page of a document with pages (whole in memory: a Word or OpenDocument file)."""
    count = len(document.pages)
    shown = number if number is not None and number <= count else 1
    return render_paged(document.source, number, count, _rows(page_text(document, shown)), lines,
                        version)


def render_paged(source: str, number: int | None, count: int, rows: list[str],
                 lines: tuple[int, int] | None, version: str) -> HTMLResponse:
    """One page: its lines (``rows``, of page ``number``, or of page 1 when ``number`` is None or
    past the last page) numbered within the page, the cited ones lit, the page number shown,
    links to the pages around it and to the original file."""
    missing = number is not None and number > count
    if number is None or missing:
        number, lines = 1, None
    parts = [f"page {number} sur {count}"]
    if lines:
        parts.append(line_range(*lines))
    parts.append(f"{len(rows)} lignes")
    links = []
    if number > 1:
        links.append((f"← page {number - 1}", source_url(source, version=version,
                                                         page=number - 1)))
    if number < count:
        links.append((f"page {number + 1} →", source_url(source, version=version,
                                                         page=number + 1)))
    links.append(("Télécharger l’original", original_url(source, version)))
    body = line_rows(enumerate(rows, start=1), lines)
    if missing:
        body = notice(f"Ce document n’a que {count} pages : voici la première.") + body
    elif not rows:
        body = notice("Cette page ne contient pas de texte (une image, une page blanche).")
    return page(source, " · ".join(parts), body, nav=_nav(links))


def pdf_page(source: str, file: Path, number: int | None, lines: tuple[int, int] | None,
             v: str | None) -> HTMLResponse:
    """One page of a PDF, reading that page alone (a long PDF's first click takes as long as
    one page, not the whole file): its text is exactly what the indexer read there."""
    data = file.read_bytes()
    digest = content_hash(data)
    if v and v != version_tag(digest):
        return changed_page(source, lines, digest)
    try:
        try:
            rows, count = read_pdf_page(data, number or 1)
        except IndexError:
            rows, count = read_pdf_page(data, 1)
    except FormatError:  # no longer a readable PDF (caught in the middle of a write?)
        return changed_page(source, lines, None) if v else gone_page(source)
    return render_paged(source, number, count, rows, lines, digest)


def notice(*paragraphs: str) -> str:
    """A highlighted message block; the paragraphs are HTML already."""
    return '<div class="notice">' + "".join(f"<p>{p}</p>" for p in paragraphs) + "</div>"


def not_found_page() -> HTMLResponse:
    """For any path that is not a file of the index: the path is not repeated."""
    return page("Document introuvable", "Ce document n’est pas dans l’index.",
                notice("Ce lien ne mène à aucun document de l’index.",
                       '<a href="/">Retour aux questions</a>'), 404)


def gone_page(source: str) -> HTMLResponse:
    """A cited file that has left the index (deleted, renamed or emptied since the answer)."""
    name = html.escape(source)
    return page(source, "Ce fichier n’est plus dans l’index.",
                notice(f"Le fichier « {name} » n’est plus dans l’index : il a été supprimé, "
                       "renommé ou vidé depuis la réponse qui le citait.",
                       "Posez la question à nouveau pour obtenir une réponse à jour : "
                       '<a href="/">retour aux questions</a>.'), 404)


def changed_page(source: str, lines: tuple[int, int] | None,
                 current_hash: str | None) -> HTMLResponse:
    """A cited file whose content changed since the answer: its line numbers may now hold other
    text, so nothing is lit; the current version (``current_hash``, None when the file holds no
    text right now) is one click away."""
    name = html.escape(source)
    where = f" ({line_range(*lines)})" if lines else ""
    again = "posez la question à nouveau pour une réponse à jour."
    if current_hash is None:
        follow = "Le fichier ne contient plus de texte pour l’instant : " + again
    else:
        current = html.escape(source_url(source, version=current_hash), quote=True)
        follow = f'<a href="{current}">Voir la version actuelle du fichier</a> ou {again}'
    return page(source, "Ce fichier a changé depuis la réponse.",
                notice(f"Le fichier « {name} » a été modifié depuis la réponse qui le citait : "
                       f"les lignes citées{where} peuvent maintenant contenir un autre texte, "
                       "elles ne sont donc pas surlignées.", follow))


def too_large_page(source: str, size: int, lines: tuple[int, int] | None,
                   shown: list[tuple[int, str]], limit_bytes: int = MAX_SOURCE_BYTES,
                   page_number: int | None = None) -> HTMLResponse:
    """A file too large to show whole: its size, and the cited lines as the index holds them
    (of page ``page_number``, for a document with pages)."""
    megabytes = f"{size / 1e6:.1f}".replace(".", ",")
    limit = f"{limit_bytes / 1e6:g}".replace(".", ",")
    message = (f"Ce fichier fait {megabytes} Mo : il est trop grand pour être affiché en entier "
               f"(limite {limit} Mo).")
    if shown:
        message += " Voici les lignes citées, telles qu’elles sont indexées."
    elif lines:
        message += " Les lignes demandées ne sont pas dans l’index."
    subtitle = "trop grand pour être affiché"
    if lines:
        subtitle = f"{line_range(*lines, page_number)} · {subtitle}"
    return page(source, subtitle, notice(html.escape(message)) + line_rows(shown, lines))


def indexed_lines(index: Index, source: str, lines: tuple[int, int]) -> list[tuple[int, str]]:
    """Lines ``lines`` of ``source`` rebuilt from the index's chunks (at most
    :data:`MAX_SHOWN_LINES`); a line cut between two chunks is joined back."""
    first, last = lines[0], min(lines[1], lines[0] + MAX_SHOWN_LINES - 1)
    pieces: dict[int, list[str]] = {}
    for chunk_id in index.manifest["files"][source]["chunks"]:
        chunk = index.chunk(chunk_id)
        if chunk.end_line < first or chunk.start_line > last:
            continue
        for offset, line in enumerate(chunk.text.split("\n")):
            if first <= chunk.start_line + offset <= last:
                pieces.setdefault(chunk.start_line + offset, []).append(line)
    return [(n, " ".join(pieces[n])) for n in sorted(pieces)]


class DocumentCache:
    """The last few documents read, keyed by path, size and modification time (a changed file
    has another key): a Word, OpenDocument or EPUB file is parsed once, not at every click on
    one of its citations."""

    def __init__(self, size: int = DOCUMENT_CACHE) -> None:
        self.size = size
        self._docs: OrderedDict[tuple, Document | None] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, root: Path, file: Path, min_words: int) -> Document | None:
        stat = file.stat()
        key = (str(file), stat.st_size, stat.st_mtime_ns, min_words)
        with self._lock:
            if key in self._docs:
                self._docs.move_to_end(key)
                return self._docs[key]
        document = read_document(root, file, min_words)
        with self._lock:
            self._docs[key] = document
            while len(self._docs) > self.size:
                self._docs.popitem(last=False)
        return document


def page_lines_from_index(index: Index, source: str, number: int | None,
                          lines: tuple[int, int]) -> list[tuple[int, str]]:
    """:func:`indexed_lines` for lines of page ``number`` of a document with pages, numbered
    within the page."""
    pages = index.manifest["files"][source].get("pages")
    if not pages or number is None or number > len(pages):
        return indexed_lines(index, source, lines)
    first = pages[number - 1][1] - 1
    shown = indexed_lines(index, source, (lines[0] + first, lines[1] + first))
    return [(n - first, text) for n, text in shown]


def source_router(corpus: Path, min_words: int, current_index: Callable[[], Index]) -> APIRouter:
    """The ``/source/...`` and ``/original/...`` routes for one corpus folder; ``current_index``
    gives the index in use (it changes while the chat runs)."""
    router = APIRouter()
    documents = DocumentCache()

    @router.get("/original/{path:path}", include_in_schema=False)
    def original(path: str, v: str | None = Query(default=None)) -> Response:
        """The original PDF, DOCX or ODT file of the index, as a download."""
        index = current_index()
        entry = index.manifest["files"].get(path)
        file = (resolve_source(corpus, path)
                if entry is not None and is_document_format(path) else None)
        if file is None:
            cited = entry is not None or (v is not None and document_name(path))
            return gone_page(path) if cited else not_found_page()
        try:
            digest = file_hash(file)
        except OSError:
            return gone_page(path)
        if v and v != version_tag(digest):
            return changed_page(path, None, digest)
        return FileResponse(file, media_type=MEDIA_TYPES[Path(path).suffix.lower()],
                            filename=Path(path).name, content_disposition_type="attachment",
                            headers={"X-Content-Type-Options": "nosniff",
                                     "Content-Security-Policy": "default-src 'none'; sandbox"})

    @router.get("/source/{path:path}", response_class=HTMLResponse, include_in_schema=False)
    def source(path: str, lines: str | None = Query(default=None),
               v: str | None = Query(default=None),
               page_number: str | None = Query(default=None, alias="page")) -> HTMLResponse:
        index = current_index()  # one snapshot for the whole request
        entry = index.manifest["files"].get(path)
        wanted = parse_lines(lines)
        file = resolve_source(corpus, path) if entry is not None else None
        if file is None:
            # A link from an answer (it carries a version) to a file that has left the index, or
            # that is gone from the disk before the index caught up; else a path never indexed.
            cited = entry is not None or (v is not None and document_name(path))
            return gone_page(path) if cited else not_found_page()
        try:
            size = file.stat().st_size
        except OSError:
            return gone_page(path)
        formatted = is_document_format(path)
        number = parse_page(page_number)
        limit = MAX_DOCUMENT_BYTES if formatted else MAX_SOURCE_BYTES
        if size > limit:
            if v and v != version_tag(entry["hash"]):
                return changed_page(path, wanted, entry["hash"])
            shown = page_lines_from_index(index, path, number, wanted) if wanted else []
            paged = number if entry.get("pages") else None
            return too_large_page(path, size, wanted, shown, limit, paged)
        try:
            if path.lower().endswith(".pdf"):
                return pdf_page(path, file, number, wanted, v)
            # The same reader the indexer used, so line numbers match the citations (for HTML
            # files this is the extracted text, not the markup; for a Word file, its text).
            if formatted:
                document = documents.read(corpus.resolve(), file, min_words)
            else:
                document = read_document(corpus.resolve(), file, min_words)
        except OSError:
            log.warning("cannot read %s", path)
            document = None
        if document is None:  # no text any more (emptied, or caught in the middle of a write)
            return changed_page(path, wanted, None) if v else gone_page(path)
        if v and v != version_tag(document.content_hash):
            return changed_page(path, wanted, document.content_hash)
        if document.pages:
            return render_document_page(document, number, wanted, document.content_hash)
        download = original_url(document.source, document.content_hash) if formatted else ""
        return render_page(document.source, document.text, wanted, download)

    return router
