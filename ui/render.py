"""HTML for the chat: answers with clickable citation markers, the sources panel, the status line.

Pure functions from an answer's JSON (``Answer.to_json()`` plus a ``url`` per citation) to HTML
strings, so they are easy to test and shared by the chat and the API.

Corpus text is data, never markup: every piece of text from the corpus, the question or the
library goes through ``html.escape`` before our own tags are added around it. The Chatbot
renders its messages as (sanitized) HTML, not Markdown, so ``*``, ``_``, ``$$`` or a fenced block
in a document cannot change the layout either.
"""
from __future__ import annotations

import html
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

SOURCE_ROUTE = "/source/"
#: Where the original file of a PDF, DOCX or ODT downloads (ui/source_view.py).
ORIGINAL_ROUTE = "/original/"
#: Hex digits of a file's content hash carried by its links: enough to tell versions apart.
VERSION_CHARS = 12


def version_tag(content_hash: str) -> str:
    """The short form of a file's content hash that its links carry (``?v=``)."""
    return content_hash[:VERSION_CHARS]


def source_url(source: str, start_line: int | None = None, end_line: int | None = None,
               version: str | None = None, page: int | None = None) -> str:
    """Path of the source view for ``source`` (relative to the corpus), with lines lit.

    ``version`` (the file's content hash, or its short tag) pins the link to the text that was
    cited: once the file changes, the link says so instead of lighting lines that now hold
    something else. ``page``: for a file with pages (a PDF...), the page to open; the lines are
    then lines of that page.
    """
    query = []
    if version:
        query.append(f"v={version_tag(version)}")
    if page is not None:
        query.append(f"page={page}")
    if start_line is not None:
        query.append(f"lines={start_line}-{end_line if end_line is not None else start_line}")
    url = f"{SOURCE_ROUTE}{quote(source, safe='/')}"
    if query:
        url += "?" + "&".join(query)
    return url + (f"#L{start_line}" if start_line is not None else "")


def original_url(source: str, version: str | None = None) -> str:
    """Path that downloads the original file (a PDF, DOCX or ODT behind its extracted text)."""
    url = f"{ORIGINAL_ROUTE}{quote(source, safe='/')}"
    return url + (f"?v={version_tag(version)}" if version else "")


def with_urls(answer: dict, versions: Mapping[str, str] | None = None) -> dict:
    """The answer JSON with a ``url`` on each citation and passage (what the API returns).

    ``versions`` maps each file to its content hash in the index the answer came from; the chat
    always gives it (links without a version cannot tell that a file changed since).
    """
    for item in answer["citations"] + answer["passages"]:
        item["url"] = source_url(item["source"], item["start_line"], item["end_line"],
                                 (versions or {}).get(item["source"]), item.get("page"))
    return answer


def line_range(start: int, end: int, page: int | None = None) -> str:
    """``lignes 12–14``, or ``page 3, lignes 12–14`` for a file with pages."""
    lines = f"ligne {start}" if start == end else f"lignes {start}–{end}"
    return lines if page is None else f"page {page}, {lines}"


def marker_link(citation: dict) -> str:
    """``[n]`` as a link to the cited lines."""
    where = line_range(citation["start_line"], citation["end_line"], citation.get("page"))
    title = html.escape(f"{citation['source']}, {where}", quote=True)
    return (f'<a class="cite" href="{html.escape(citation["url"], quote=True)}" '
            f'title="{title}">[{citation["n"]}]</a>')


def answer_html(answer: dict) -> str:
    """The assistant's chat message: the answer's own text, escaped, with each ``[n]`` marker of
    a citation turned into a link to the cited lines.

    Markers inside quoted source text are left as text: a quoted sentence that itself contains
    "[2]" (a footnote in the source) must not become a link.
    """
    text = answer["answer"]
    if answer["abstained"] or not answer["citations"]:
        return f'<p class="abstained">{html.escape(text)}</p>'
    by_n = {c["n"]: c for c in answer["citations"]}
    quoted = _quoted_spans(text, answer["citations"])
    parts, at = [], 0
    for match in _MARKER.finditer(text):
        n = int(match.group(1))
        if n not in by_n or any(a <= match.start() < b for a, b in quoted):
            continue
        parts += [html.escape(text[at:match.start()]), marker_link(by_n[n])]
        at = match.end()
    parts.append(html.escape(text[at:]))
    return f'<p class="answer">{"".join(parts)}</p>'


_MARKER = re.compile(r"\[(\d+)\]")


def _quoted_spans(text: str, citations: list[dict]) -> list[tuple[int, int]]:
    """Where the answer text quotes each citation's sentence, in order."""
    spans, at = [], 0
    for citation in citations:
        found = text.find(citation["text"], at) if citation["text"] else -1
        if found >= 0:
            spans.append((found, found + len(citation["text"])))
            at = found + len(citation["text"])
    return spans


def question_html(question: str) -> str:
    """The user's chat message, shown as typed (escaped)."""
    return html.escape(question)


def notice_html(message: str) -> str:
    """A one-line message in the chat for a refused question or an internal error."""
    return f'<p class="notice">⚠️ {html.escape(message)}</p>'


def highlighted_passage(passage_text: str, sentence: str) -> str:
    """The passage, escaped, with the cited sentence wrapped in ``<mark>``."""
    at = passage_text.find(sentence) if sentence else -1
    if at < 0:
        return html.escape(passage_text)
    end = at + len(sentence)
    return (html.escape(passage_text[:at]) + "<mark>" + html.escape(sentence) + "</mark>"
            + html.escape(passage_text[end:]))


def passage_for(citation: dict, passages: list[dict]) -> dict | None:
    """The retrieved passage that contains the cited sentence, to show it in context."""
    for passage in passages:
        if (passage["source"] == citation["source"]
                and passage.get("page") == citation.get("page")
                and passage["start_line"] <= citation["start_line"]
                and citation["end_line"] <= passage["end_line"]
                and citation["text"] in passage["text"]):
            return passage
    return None


def source_card(label: str, item: dict, body: str) -> str:
    """One entry of the sources panel: a linked header (file, lines, score) and the text."""
    url = html.escape(item["url"], quote=True)
    return (f'<div class="source-card"><div class="source-head">'
            f'<span class="source-n">{html.escape(label)}</span> '
            f'<a class="source-link" href="{url}" target="_blank" rel="noopener">'
            f'{html.escape(item["source"])}</a> '
            f'<span class="source-lines">'
            f'{line_range(item["start_line"], item["end_line"], item.get("page"))}</span>'
            f'<span class="source-score">score {item["score"]:.2f}</span></div>'
            f'<div class="source-text">{body}</div></div>')


def sources_html(answer: dict | None, closest: int = 3) -> str:
    """The sources panel for the last answer.

    For an answer: one card per citation, the passage with the cited sentence marked. For an
    abstention: the message and the ``closest`` passages, so the reader can look for themselves.
    """
    if answer is None:
        return ('<div class="sources-empty">Les sources de la dernière réponse '
                's’afficheront ici, avec le passage cité surligné.</div>')
    if answer["abstained"] or not answer["citations"]:
        cards = [source_card(f"#{i}", p, html.escape(p["text"]))
                 for i, p in enumerate(answer["passages"][:closest], start=1)]
        intro = (f'<div class="sources-abstained">{html.escape(answer["answer"])}</div>'
                 + ('<div class="sources-sub">Passages les plus proches :</div>' if cards else ""))
        return intro + "".join(cards)
    cards = []
    for citation in answer["citations"]:
        passage = passage_for(citation, answer["passages"])
        body = (highlighted_passage(passage["text"], citation["text"]) if passage
                else f"<mark>{html.escape(citation['text'])}</mark>")
        cards.append(source_card(f"[{citation['n']}]", citation, body))
    return "".join(cards)


def status_html(status: dict) -> str:
    """The index status line: the corpus folder's name (never its path on the server), files,
    chunks, model, build time."""
    built = str(status.get("built", "")).replace("T", " ")[:16]
    folder = status.get("folder") or Path(str(status.get("corpus", ""))).name
    text = (f"Index de « {folder} » : {status['files']} fichiers · {status['chunks']} passages · "
            f"modèle {status['model']} · construit le {built}")
    return f'<div class="status-line">{html.escape(text)}</div>'
