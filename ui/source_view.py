"""The source view: one corpus file as an HTML page, with line numbers and the cited lines lit.

Served by the chat app at ``GET /source/{path}?lines=12-14``. A citation link lands on the exact
lines it quotes, so a reader can check the answer against the document in one click.

Only corpus documents can be shown: every request path is checked against the corpus folder
after resolving symlinks and ``..``, and anything else is a plain 404 (not a 403), so the route
says nothing about which files exist elsewhere on the machine. File text is data, never markup:
every line is HTML-escaped.
"""
from __future__ import annotations

import base64
import hashlib
import html
import logging
from pathlib import Path

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import HTMLResponse

from rag.config import CORPUS_SUFFIXES
from rag.corpus import read_document

log = logging.getLogger(__name__)


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
"""


#: Scrolls the first cited line to the middle of the window (the #L anchor alone puts it at the
#: very top, under the sticky header).
SCROLL_SCRIPT = ("addEventListener('load',function(){var e=document.querySelector('.hl');"
                 "if(e)e.scrollIntoView({block:'center'});});")
#: Defense in depth: even if some text escaped escaping, the browser runs no script but ours.
CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-"
       + base64.b64encode(hashlib.sha256(SCROLL_SCRIPT.encode()).digest()).decode() + "'")


def render_page(source: str, text: str, lines: tuple[int, int] | None) -> str:
    """The whole page: heading, one ``<div id="L<n>">`` per line, the cited lines with class hl."""
    rows = text.split("\n")
    if rows and rows[-1] == "":
        rows.pop()  # the final line break does not start a line
    first, last = lines or (0, -1)
    body = []
    for number, line in enumerate(rows, start=1):
        lit = " hl" if first <= number <= last else ""
        text_html = html.escape(line.rstrip("\r"))
        body.append(f'<div class="line{lit}" id="L{number}"><a class="ln" href="#L{number}">'
                    f'{number}</a><span class="tx">{text_html}</span></div>')
    name = html.escape(source)
    where = (f"lignes {first}–{last}" if first != last else f"ligne {first}") if lines else ""
    subtitle = f"<p>{where} · {len(rows)} lignes</p>" if lines else f"<p>{len(rows)} lignes</p>"
    script = f"<script>{SCROLL_SCRIPT}</script>"
    return (f'<!doctype html><html lang="fr"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{name}</title><style>{PAGE_CSS}</style></head><body>"
            f"<header><h1>{name}</h1>{subtitle}</header><main>{''.join(body)}</main>"
            f"{script}</body></html>")


def source_router(corpus: Path, min_words: int) -> APIRouter:
    """The ``/source/...`` route for one corpus folder."""
    router = APIRouter()

    @router.get("/source/{path:path}", response_class=HTMLResponse, include_in_schema=False)
    def source(path: str, lines: str | None = Query(default=None)) -> HTMLResponse:
        file = resolve_source(corpus, path)
        document = None
        if file is not None:
            try:
                # The same reader the indexer used, so line numbers match the citations (for
                # HTML files this is the extracted text, not the markup).
                document = read_document(corpus.resolve(), file, min_words)
            except OSError:
                log.exception("cannot read %s", file)
        if document is None:
            raise HTTPException(status_code=404, detail="Not a document of this corpus")
        return HTMLResponse(render_page(document.source, document.text, parse_lines(lines)),
                            headers={"Content-Security-Policy": CSP})

    return router
