"""The small records that flow through the pipeline.

files -> Document -> Chunk (and its Sentences) -> (index) -> Passage -> Answer with Citation.
They are plain dataclasses so every layer (CLI, UI, evaluation) shares one vocabulary and the
JSON shapes are produced in one place (``Answer.to_json``).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Document:
    """One corpus file as the program sees it.

    ``text`` is the exact decoded file content (for HTML: the text the page reduces to), so that
    every offset and line number below refers to what a user sees when opening the source.
    ``kept`` lists the (start, end) character spans that survived the boilerplate rule.
    """

    source: str  # path relative to the corpus root, with forward slashes
    text: str
    content_hash: str
    kept: tuple[tuple[int, int], ...]
    #: Offset in ``text`` where each page starts (page 1 at 0) for a PDF, or a word-processor
    #: file that records page breaks; empty for a file without pages (rag/formats).
    pages: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Chunk:
    """A retrievable unit: ``document.text[start:end] == text`` always holds."""

    id: str
    source: str
    start: int
    end: int
    start_line: int  # 1-based, inclusive
    end_line: int  # 1-based, inclusive
    text: str


@dataclass(frozen=True, slots=True)
class Sentence:
    """One sentence of a chunk: ``start``/``end`` are offsets in the file, like a chunk's.

    Its id is ``<chunk id>:<k>`` (the k-th sentence of that chunk), so it is as stable as the
    chunk's and says which chunk it belongs to.
    """

    id: str
    chunk_id: str
    start: int
    end: int


#: The keys a passage and a citation share in the JSON output.
SPAN_KEYS = ("source", "start_line", "end_line", "text", "score")


def _json_fields(record: object, keys: tuple[str, ...]) -> dict:
    # Only a file with pages (a PDF...) has the key, right after its source:
    # {"source": "rapport.pdf", "page": 3, "start_line": 12, ...}; text files' JSON is as it was.
    if getattr(record, "page", None) is not None:
        at = keys.index("source") + 1
        keys = (*keys[:at], "page", *keys[at:])
    data = {key: getattr(record, key) for key in keys}
    data["score"] = round(float(data["score"]), 6)
    return data


@dataclass(frozen=True)
class Passage:
    """A chunk returned for a question, with its retrieval score (higher is better)."""

    chunk_id: str
    source: str
    start_line: int
    end_line: int
    text: str
    score: float
    #: 1-based page for a file with pages; the lines are then counted within that page.
    page: int | None = None

    def to_json(self) -> dict:
        return _json_fields(self, SPAN_KEYS)


@dataclass(frozen=True)
class Citation:
    """A verbatim span of a source file that supports one answer sentence."""

    n: int
    source: str
    start_line: int
    end_line: int
    text: str
    score: float
    #: 1-based page for a file with pages (a PDF...); ``start_line``/``end_line`` then count the
    #: lines of that page, as its source view numbers them. None for a text file.
    page: int | None = None

    def to_json(self) -> dict:
        return _json_fields(self, ("n", *SPAN_KEYS))


@dataclass
class Answer:
    """What the assistant says: a short text whose sentences end with ``[n]`` markers."""

    question: str
    answer: str
    abstained: bool
    citations: list[Citation] = field(default_factory=list)
    passages: list[Passage] = field(default_factory=list)
    latency_ms: float = 0.0
    #: Score of the best candidate sentence; the assistant abstains below its threshold.
    support: float = 0.0
    #: Why it abstained (one sentence in the question's language); empty when it answers.
    reason: str = ""
    #: What ``support`` was compared with (it depends on the answerer and the question's language).
    threshold: float = 0.0
    #: Who wrote the answer: "reader", "extractive" or "llm" (a generative answer whose every
    #: claim was checked against its passage; "reader" when it fell back on the offline reader).
    answerer: str = ""
    #: The generative answerer's claims and their check: ``{"claim", "cited", "supported",
    #: "citation", "score", "why"}`` each; empty for the other answerers.
    verified: list[dict] = field(default_factory=list)
    #: Why the generative answer is not the one shown (server down, no supported claim...).
    note: str = ""

    def to_json(self) -> dict:
        """The object ``rag ask --json`` prints and the UI's API returns."""
        return {
            "question": self.question,
            "answer": self.answer,
            "abstained": self.abstained,
            "citations": [c.to_json() for c in self.citations],
            "passages": [p.to_json() for p in self.passages],
            "latency_ms": round(self.latency_ms, 2),
            "support": round(float(self.support), 6),
            "threshold": round(float(self.threshold), 6),
            "reason": self.reason,
            "answerer": self.answerer,
            "verified": self.verified,
            "note": self.note,
        }
