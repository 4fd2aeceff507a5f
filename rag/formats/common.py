"""What every reader returns, and the text clean-up they share: ligatures, soft hyphens, words
hyphenated at the end of a line, page furniture (running headers, footers, page numbers)."""
from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass


class FormatError(Exception):
    """The file cannot be indexed; the message says why and what to do (shown after
    "skipping <file>: ")."""


@dataclass(frozen=True)
class Extracted:
    """A document's text, one paragraph per line, and where its pages start.

    ``pages``: the offset in ``text`` of the first character of each page (page 1 at 0), empty
    for a document without pages (a word-processor file that records no page break).
    ``furniture``: (start, end) spans of lines that are running headers, footers or page
    numbers; they stay in the text (the source view shows the page as it is) but are never
    indexed.
    """

    text: str
    pages: tuple[int, ...] = ()
    furniture: tuple[tuple[int, int], ...] = ()
    #: Something the user should know about a file that is indexed all the same (logged as a
    #: warning naming it): "pages 3, 4 have no text layer (scanned?)".
    note: str = ""


#: Typographic ligatures (Unicode's compatibility forms) and the letters they stand for.
LIGATURES = str.maketrans({"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi",
                           "\ufb04": "ffl", "\ufb05": "st", "\ufb06": "st"})
#: Control characters (except tab and newline) and soft hyphens: never part of the words.
_INVISIBLE = re.compile("[\x00-\x08\x0b-\x1f\x7f\u00ad\ufeff]")
_SPACES = re.compile(r"[ \t\r\f\v]+")
#: A word cut at the end of a line: a letter then a hyphen.
_CUT_WORD = re.compile(r"[^\W\d_]-$")


def clean(text: str) -> str:
    """Ligatures spelt out, invisible characters removed, runs of spaces made one."""
    return _SPACES.sub(" ", _INVISIBLE.sub("", text.translate(LIGATURES))).strip()


def join_lines(lines: list[str]) -> str:
    """The visual lines of one paragraph as one line of text.

    A line ending in letter + hyphen is joined to the next without a space: the hyphen is dropped
    when the next line starts with a lower-case letter (a word cut by the typesetter: "défen-" +
    "se"), kept otherwise ("Trump-" + "Rutte"). A compound cut at its own hyphen
    ("porte-" + "parole") loses it: the page does not say which hyphen it was.
    """
    out = ""
    for raw in lines:
        line = clean(raw)
        if not line:
            continue
        if not out:
            out = line
        elif _CUT_WORD.search(out):
            out = out[:-1] + line if line[0].islower() else out + line
        else:
            out = f"{out} {line}"
    return out


#: How a paragraph can end; a text box that ends otherwise and is followed by one starting in
#: lower case is the same paragraph, cut by the end of a column.
PARAGRAPH_END = (".", "!", "?", "…", ":", ";", "»", '"', "”", ")")


def continues(previous: str, following: str) -> bool:
    """Whether ``following`` goes on with the paragraph ``previous`` ends (a column break)."""
    return (bool(previous) and bool(following) and following[0].islower()
            and not previous.endswith(PARAGRAPH_END))


_DIGITS = re.compile(r"\d+")
#: A page needs this many of the document's pages to share a line at its top or bottom before
#: that line counts as a running header or footer (and at least two pages).
FURNITURE_SHARE = 0.5
#: Lines looked at, at the top and at the bottom of each page (a footer can come before the last
#: lines of a right-hand column in reading order).
FURNITURE_DEPTH = 3


def _furniture_key(line: str) -> str:
    """A line with its numbers made alike: "Page 3 sur 12" and "Page 4 sur 12" share a key."""
    return _DIGITS.sub("#", " ".join(line.lower().split()))


#: A line that is a page number and nothing else: "3", "- 3 -", "Page 3", "p. 3", "3 / 12",
#: "Page 3 sur 12", "page 3 of 12".
PAGE_NUMBER = re.compile(r"(?i)^[-–—\s]*(?:page|p\.)?\s*\d{1,4}\s*(?:(?:/|sur|of|de)\s*\d{1,4})?"
                         r"[-–—\s]*$")


def furniture_lines(pages: list[list[str]],
                    edges: list[set[int]] | None = None) -> list[set[int]]:
    """For each page, the indexes of its lines that are running headers, footers or page numbers.

    Such a line sits among the first or last :data:`FURNITURE_DEPTH` lines of a page and either
    is a page number alone, or, numbers aside, is the same line that sits there on at least half
    of the pages (and two pages at least). Today's boilerplate rule would drop the repeats but keep
    the first copy, and page numbers only when short; this drops every copy. (A one-page
    document's header cannot be told from its title: it stays.)

    ``edges``: for each page, the indexes of the lines at its top and bottom, when the reader
    knows where they sit on the page (a PDF); else the first and last lines in reading order.
    """
    with_text = [p for p in pages if p]
    if edges is None:
        edges = [set(range(min(FURNITURE_DEPTH, len(lines)))) | set(
            range(max(0, len(lines) - FURNITURE_DEPTH), len(lines))) for lines in pages]
    counts: Counter[str] = Counter()
    for lines, edge in zip(pages, edges):
        counts.update({_furniture_key(lines[i]) for i in edge})
    needed = max(2, math.ceil(FURNITURE_SHARE * len(with_text)))
    return [{i for i in edge if PAGE_NUMBER.match(lines[i])
             or counts[_furniture_key(lines[i])] >= needed} for lines, edge in zip(pages, edges)]


def assemble(pages: list[list[str]], paged: bool = True,
             edges: list[set[int]] | None = None) -> Extracted:
    """Pages of lines (paragraphs) as one text, with page starts and furniture spans.

    Each page's text is its own lines only: a word hyphenated across a page break stays cut
    ("désor-" ending page 1, "mais" starting page 2). Mending it would make a page's text depend
    on its neighbours (and on the furniture found over all pages), and the source view reads
    the cited page of a long PDF alone, which must give exactly the text the index holds."""
    parts: list[str] = []
    starts: list[int] = []
    furniture: list[tuple[int, int]] = []
    at = 0
    dropped = furniture_lines(pages, edges) if paged else [set() for _ in pages]
    for lines, drop in zip(pages, dropped):
        starts.append(at)
        for i, line in enumerate(lines):
            if i in drop:
                furniture.append((at, at + len(line)))
            parts.append(line + "\n")
            at += len(line) + 1
    return Extracted("".join(parts), tuple(starts) if paged else (), tuple(furniture))


def cut_spans(spans: tuple[tuple[int, int], ...], text: str, pages: tuple[int, ...],
              furniture: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    """``spans`` (runs of kept lines) with furniture lines taken out and cut at page starts, each
    piece trimmed of white space: no chunk, and so no citation, straddles two pages or includes a
    running header."""
    cuts = sorted({p for p in pages if p > 0})
    holes = sorted(furniture)
    out: list[tuple[int, int]] = []

    def add(start: int, end: int) -> None:
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if start < end:
            out.append((start, end))

    h = 0
    for start, end in spans:
        pieces = [start]
        for cut in cuts[bisect_right(cuts, start):]:
            if cut >= end:
                break
            pieces.append(cut)
        pieces.append(end)
        for a, b in zip(pieces, pieces[1:]):
            while h < len(holes) and holes[h][1] <= a:
                h += 1
            k, cursor = h, a
            while k < len(holes) and holes[k][0] < b:
                add(cursor, holes[k][0])
                cursor = max(cursor, holes[k][1])
                k += 1
            add(cursor, b)
    return tuple(out)
