"""Evaluation metrics: pure functions over per-question records.

A *record* is the dict the runner writes for one question asked through one retriever (see
``eval/runner.py``). The functions here read only these keys, so they can be unit-tested on
hand-made dicts and re-run on a saved ``--json`` file:

``answerable`` (bool), ``gold_answers`` (list of str), ``gold_sources`` (list of str),
``answer`` (str), ``abstained`` (bool), ``citations`` (list of dicts with ``source``,
``start_line``, ``end_line``, ``text``, ``score``), ``retrieved_sources`` (file paths in rank order,
deduplicated), ``latency_ms`` (float), ``support`` (float or None), ``abstain_threshold`` (the threshold
applied to that question, optional), ``withheld_abstained`` (bool, answerable questions only)
and, for a question that raised, ``error`` (str).

Definitions (keys of the metrics block, exactly):

* ``recall@1`` / ``recall@5``: share of answerable questions with a gold source among the first
  1 / 5 entries of ``retrieved_sources`` (distinct files, so "5 files", not "5 passages").
* ``mrr@10``: mean over answerable questions of 1 / rank of the first gold source within the first
  10 distinct files (0 when none).
* ``answer_contains``: among answerable questions that were answered (not abstained), the share
  whose answer contains a gold string after ``normalize_answer``. It measures the quality of the
  answers given, independently of how often the assistant abstains.
* ``answer_accuracy``: the same correct answers divided by *all* answerable questions (an
  abstention or a failure counts as wrong). ``answer_accuracy <= answer_contains`` always.
* ``top_citation_contains``: among answerable questions that were answered, the share whose
  best-scored cited sentence alone holds a gold string: what a user reads first.
* ``answer_chars_p50``: median length of the answers given, in characters (markers included).
* ``abstain_unanswerable``: share of unanswerable questions that abstained (higher is better).
* ``abstain_answerable``: share of answerable questions that abstained (lower is better).
* ``abstain_withheld``: share of answerable questions that abstained when asked again with their
  gold files hidden from the search (higher is better). It turns any answerable set into
  unanswerable questions whose closest passages are on neighbouring topics: PIAF then measures
  abstention too, on 3,779 questions nobody wrote for this project.
* ``citation_valid``: share of all citations whose text is found verbatim in the cited file within
  the cited lines (file read with ``rag.corpus.read_document``, as the index read it; for a file
  with pages, a PDF, the lines of the cited page).
* ``latency_ms_p50`` / ``latency_ms_p95``: percentiles of ``Assistant.ask`` time.
* ``unsupported_claims``: generative answerer (``--answerer llm``): the share of the claims the
  model wrote that the check against the cited passage dropped.
* ``llm_fallback``: generative answerer: the share of questions the offline reader answered
  instead (server failure, reply cut off or unreadable, or no claim supported).
* ``n_questions``, ``n_answerable``, ``n_unanswerable``, ``n_citations``, ``n_failed``: counts.

A failed question (``error`` set) counts as a retrieval miss, a wrong answer and a non-abstention;
it is excluded from ``answer_contains``'s denominator and from latencies. A metric whose
denominator is empty (e.g. abstention on unanswerable questions for PIAF, which has none) is
``None`` rather than a division by zero.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from rag.language import normalize_answer

#: Keys of a metrics block, in the order the table prints them.
METRIC_KEYS = (
    "recall@1", "recall@5", "mrr@10", "answer_contains", "answer_accuracy",
    "top_citation_contains", "answer_chars_p50", "abstain_unanswerable", "abstain_answerable",
    "abstain_withheld", "citation_valid",
    "latency_ms_p50", "latency_ms_p95", "unsupported_claims", "llm_fallback",
    "n_questions", "n_answerable", "n_unanswerable", "n_citations", "n_failed",
)

def answer_matches(answer: str, gold: Iterable[str]) -> bool:
    """Whether ``answer`` contains one of the ``gold`` strings once both are normalised."""
    norm = normalize_answer(answer or "")
    return any((g := normalize_answer(s)) and g in norm for s in gold)


def _share(numerator: float, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _failed(record: dict) -> bool:
    return bool(record.get("error"))


def gold_rank(record: dict, depth: int) -> int | None:
    """1-based rank of the first gold source among the first ``depth`` retrieved files."""
    gold = {s.replace("\\", "/") for s in record.get("gold_sources") or ()}
    for rank, source in enumerate((record.get("retrieved_sources") or [])[:depth], start=1):
        if source in gold:
            return rank
    return None


def recall_at(records: Sequence[dict], k: int) -> float | None:
    answerable = [r for r in records if r.get("answerable")]
    return _share(sum(gold_rank(r, k) is not None for r in answerable), len(answerable))


def mrr_at(records: Sequence[dict], k: int) -> float | None:
    answerable = [r for r in records if r.get("answerable")]
    ranks = [gold_rank(r, k) for r in answerable]
    return _share(sum(1.0 / rank for rank in ranks if rank), len(answerable))


def is_correct(record: dict) -> bool:
    """Answered (not abstained, not failed) and the answer holds a gold string."""
    return (bool(record.get("answerable")) and not _failed(record)
            and record.get("abstained") is False
            and answer_matches(record.get("answer", ""), record.get("gold_answers") or ()))


def answer_contains(records: Sequence[dict]) -> float | None:
    """Correct answers / answerable questions that were answered."""
    answered = [r for r in records if r.get("answerable") and not _failed(r)
                and r.get("abstained") is False]
    return _share(sum(is_correct(r) for r in answered), len(answered))


def top_citation(record: dict) -> dict | None:
    """The cited sentence the answerer scored highest (the first one on equal scores)."""
    citations = record.get("citations") or []
    return max(citations, key=lambda c: float(c.get("score", 0.0))) if citations else None


def top_citation_contains(records: Sequence[dict]) -> float | None:
    """Over answered answerable questions: the share whose best-scored cited sentence, alone,
    holds a gold string. Stricter than ``answer_contains``, which a long answer flatters."""
    answered = [r for r in records if r.get("answerable") and not _failed(r)
                and r.get("abstained") is False]
    hits = sum(bool((c := top_citation(r)) and answer_matches(c.get("text", ""),
                                                             r.get("gold_answers") or ()))
               for r in answered)
    return _share(hits, len(answered))


def answer_chars(records: Sequence[dict]) -> list[int]:
    """Length in characters of each answer given (abstentions and failures left out)."""
    return [len(r.get("answer") or "") for r in records
            if not _failed(r) and r.get("abstained") is False]


def answer_accuracy(records: Sequence[dict]) -> float | None:
    """Correct answers / all answerable questions."""
    answerable = [r for r in records if r.get("answerable")]
    return _share(sum(is_correct(r) for r in answerable), len(answerable))


def abstain_share(records: Sequence[dict], answerable: bool) -> float | None:
    """Share of the (un)answerable questions that abstained; a failure is not an abstention."""
    group = [r for r in records if bool(r.get("answerable")) is answerable]
    return _share(sum(r.get("abstained") is True and not _failed(r) for r in group), len(group))


def withheld_share(records: Sequence[dict]) -> float | None:
    """Share of the answerable questions that abstained when their gold files were hidden."""
    asked = [r["withheld_abstained"] for r in records
             if r.get("answerable") and isinstance(r.get("withheld_abstained"), bool)]
    return _share(sum(asked), len(asked))


class SourceLines:
    """Cited files read once each, as the index read them, split into lines."""

    def __init__(self, corpus_root: Path, min_words: int) -> None:
        self.root = Path(corpus_root)
        self.min_words = min_words
        self._lines: dict[str, list[str] | None] = {}
        self._first_lines: dict[str, list[int]] = {}  # first line of each page, files with pages

    def lines(self, source: str, page: int | None = None) -> list[str] | None:
        """The lines of ``source``, or of its page ``page`` (1-based) for a file with pages (a
        PDF...), whose citations count lines within the page; None when there is no such file or
        page."""
        if source not in self._lines:
            from rag.corpus import read_document
            from rag.index import page_starts
            path = self.root / source
            doc = None
            if path.is_file() and path.resolve().is_relative_to(self.root.resolve()):
                doc = read_document(self.root, path, self.min_words)
            # Line numbers count "\n" (rag.corpus.line_number), so split on "\n" only.
            self._lines[source] = doc.text.split("\n") if doc else None
            self._first_lines[source] = [line for _, line in page_starts(doc)] if doc else []
        lines, firsts = self._lines[source], self._first_lines[source]
        if lines is None or page is None:
            return lines
        if not 1 <= page <= len(firsts):  # no such page, or a file without pages
            return None
        last = firsts[page] - 1 if page < len(firsts) else len(lines)
        return lines[firsts[page - 1] - 1:last]

    def citation_ok(self, citation: dict) -> bool:
        try:
            start, end = int(citation["start_line"]), int(citation["end_line"])
            text, source = citation["text"], citation["source"]
            page = citation.get("page")
            page = None if page is None else int(page)
        except (KeyError, TypeError, ValueError):
            return False
        lines = self.lines(source, page)
        if page is None and self._first_lines.get(source):
            return False  # a file with pages is cited by page: lines alone say nothing
        if not lines or not text or start < 1 or end < start or end > len(lines):
            return False
        return text in "\n".join(lines[start - 1:end])


def citation_validity(records: Sequence[dict], corpus_root: Path, min_words: int | None = None,
                      sources: SourceLines | None = None) -> tuple[float | None, int]:
    """(share of valid citations, number of citations) over all records."""
    if sources is None:
        if min_words is None:
            from rag.config import IndexSettings
            min_words = IndexSettings().min_words
        sources = SourceLines(corpus_root, min_words)
    citations = [c for r in records if not _failed(r) for c in r.get("citations") or ()]
    return _share(sum(sources.citation_ok(c) for c in citations), len(citations)), len(citations)


def unsupported_claims(records: Sequence[dict]) -> float | None:
    """Generative answerer: the share of the claims the model wrote that the check dropped
    (no sentence of the cited passage supports it, a marker naming a passage not sent, no
    marker); None when no record holds a checked claim (the other answerers)."""
    claims = [c for r in records if not _failed(r) for c in r.get("verified") or ()]
    return _share(sum(not c.get("supported") for c in claims), len(claims))


def llm_fallback(records: Sequence[dict]) -> float | None:
    """Generative answerer: the share of questions answered by the offline reader instead (the
    server failed, or no claim survived the check); None for the other answerers."""
    asked = [r for r in records if not _failed(r) and r.get("answerer_configured") == "llm"]
    return _share(sum(r.get("answerer") != "llm" for r in asked), len(asked))


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) with linear interpolation, None for no values."""
    data = sorted(float(v) for v in values)
    if not data:
        return None
    pos = (len(data) - 1) * q / 100.0
    low, high = math.floor(pos), math.ceil(pos)
    return data[low] + (data[high] - data[low]) * (pos - low)


def compute_metrics(records: Sequence[dict], corpus_root: Path, min_words: int | None = None,
                    sources: SourceLines | None = None) -> dict:
    """The metrics block of one retriever's records (see the module docstring)."""
    latencies = [r["latency_ms"] for r in records
                 if not _failed(r) and isinstance(r.get("latency_ms"), (int, float))]
    valid, n_citations = citation_validity(records, corpus_root, min_words, sources)
    n_answerable = sum(bool(r.get("answerable")) for r in records)
    metrics = {
        "recall@1": recall_at(records, 1),
        "recall@5": recall_at(records, 5),
        "mrr@10": mrr_at(records, 10),
        "answer_contains": answer_contains(records),
        "answer_accuracy": answer_accuracy(records),
        "top_citation_contains": top_citation_contains(records),
        "answer_chars_p50": percentile(answer_chars(records), 50),
        "abstain_unanswerable": abstain_share(records, answerable=False),
        "abstain_answerable": abstain_share(records, answerable=True),
        "abstain_withheld": withheld_share(records),
        "citation_valid": valid,
        "latency_ms_p50": percentile(latencies, 50),
        "latency_ms_p95": percentile(latencies, 95),
        "unsupported_claims": unsupported_claims(records),
        "llm_fallback": llm_fallback(records),
        "n_questions": len(records),
        "n_answerable": n_answerable,
        "n_unanswerable": len(records) - n_answerable,
        "n_citations": n_citations,
        "n_failed": sum(_failed(r) for r in records),
    }
    assert tuple(metrics) == METRIC_KEYS
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics.items()}


# --- gates -----------------------------------------------------------------------------------

def check_gates(metrics: dict, gates: dict) -> list[tuple[str, str, float, object, bool]]:
    """Each gate as (metric, "min"|"max", bound, value, passed).

    ``gates`` maps a metric to ``{"min": x}`` and/or ``{"max": y}``. A metric that is missing or
    None fails its gate: a floor that cannot be measured does not hold.
    """
    results = []
    for name, bounds in gates.items():
        if name.startswith("_"):  # comments
            continue
        value = metrics.get(name)
        for kind in ("min", "max"):
            if kind not in bounds:
                continue
            bound = float(bounds[kind])
            ok = isinstance(value, (int, float)) and (value >= bound if kind == "min" else value <= bound)
            results.append((name, kind, bound, value, ok))
    return results


# --- abstention trade-off ---------------------------------------------------------------------

def support_of(record: dict) -> float | None:
    """The support score the abstention decision compared with the threshold, when known."""
    value = record.get("support")
    return float(value) if isinstance(value, (int, float)) else None


def abstention_curves(records: Sequence[dict], thresholds: Sequence[float],
                      run_threshold: float | None = None) -> dict:
    """What each abstention threshold would give, from the records of one run.

    The assistant answers when the best sentence's support score (``support``) reaches the
    threshold. A record may carry the threshold actually applied to it (``abstain_threshold``:
    lower for English questions); the difference from ``run_threshold`` (the configured one) is
    kept as that question's offset, so the curves move the configured threshold as the program
    would. A record abstained although its support reached its threshold was refused for another
    reason (a veto such as a name missing from the passage around the answer) and is never
    answered. Below ``run_threshold`` a veto of a question the run abstained on anyway cannot be
    seen, so the "answered" curves are then upper bounds.

    Returns, per threshold, the share of answerable questions answered, the share of unanswerable
    questions answered, and the share of answerable questions answered *correctly*. The answer text
    does not depend on the threshold, so correctness is exact for thresholds >= ``run_threshold``;
    below it, a question the run abstained on would get an answer whose text the record does not
    hold, so that curve is None there. A record without a support score counts as never answered
    (``n_unknown_support`` says how many there were).
    """
    usable = [r for r in records if not _failed(r)]
    answerable = [r for r in usable if r.get("answerable")]
    unanswerable = [r for r in usable if not r.get("answerable")]

    def offset(rec: dict) -> float:
        own = rec.get("abstain_threshold")
        if run_threshold is None or not isinstance(own, (int, float)):
            return 0.0
        return run_threshold - float(own)

    def vetoed(rec: dict) -> bool:
        own, s = rec.get("abstain_threshold"), support_of(rec)
        return (rec.get("abstained") is True and s is not None
                and isinstance(own, (int, float)) and s >= own)

    def answered(rec: dict, t: float) -> bool:
        s = support_of(rec)
        return s is not None and not vetoed(rec) and s >= t - offset(rec) - 1e-12

    curves = {"thresholds": [float(t) for t in thresholds],
              "answerable_answered": [], "answerable_correct": [], "unanswerable_answered": [],
              "n_answerable": len(answerable), "n_unanswerable": len(unanswerable),
              "n_unknown_support": sum(support_of(r) is None for r in usable),
              "n_vetoed": sum(vetoed(r) for r in usable)}
    for t in thresholds:
        curves["answerable_answered"].append(
            _share(sum(answered(r, t) for r in answerable), len(answerable)))
        exact = run_threshold is None or t >= run_threshold - 1e-12
        curves["answerable_correct"].append(
            _share(sum(answered(r, t) and is_correct(r) for r in answerable), len(answerable))
            if exact else None)
        curves["unanswerable_answered"].append(
            _share(sum(answered(r, t) for r in unanswerable), len(unanswerable)))
    return curves
