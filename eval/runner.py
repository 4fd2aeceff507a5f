"""`rag eval`: ask a question set through ``Assistant.ask`` and measure the answers.

One ``Assistant`` is built (which builds or updates the index), then every question is asked
through ``Assistant.ask`` -- the chat's own code path -- with each requested retriever. Metrics are
computed from the per-question records by the pure functions of ``eval/metrics.py``.

JSON written by ``--json OUT``::

    {"metrics": {...}, "questions": [...], "run": {...}}

* ``metrics``: with one retriever (``--retriever hybrid``, the default), the flat metrics block
  ``{"recall@1": ..., ...}``; with ``--retriever all``, one block per retriever
  ``{"bm25": {...}, "dense": {...}, "hybrid": {...}}``, all measured in the same run.
* ``questions``: one record per question per retriever: ``id``, ``question``, ``kind``,
  ``retriever``, ``answer``, ``abstained``, ``citations``, ``passages`` (ranked),
  ``retrieved_sources`` (files of the passages in rank order, deduplicated), ``latency_ms``
  (the ``Assistant.ask`` time),
  ``support`` (score of the best candidate sentence, the one compared with the abstention
  threshold), ``withheld_abstained`` (answerable questions: whether it abstained once the gold
  files were hidden from the search), ``answerer`` (who wrote the answer shown: "llm" or the
  offline fallback), ``answerer_configured``, ``verified`` (the generative answerer's claims and
  their check) and ``note`` (why its answer was not shown),
  the gold ``answerable``/``gold_answers``/``gold_sources``,
  and ``error`` (one line)
  for a question that raised -- the run goes on and ``n_failed`` counts them.
* ``run``: what was run (corpus, questions file, retrievers, settings, date, machine, wall time).

Questions file: JSON Lines, one object per line with ``id``, ``question``, ``answers`` (list),
``sources`` (list of paths relative to the corpus), ``answerable`` (bool) and ``kind``; other keys
are ignored, except an optional ``history`` (list of earlier user questions) passed to ``ask`` for
follow-up questions.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from rag.errors import UserError
from rag.config import PROJECT_ROOT, RETRIEVERS, IndexSettings, SearchSettings

from .metrics import METRIC_KEYS, SourceLines, check_gates, compute_metrics

log = logging.getLogger(__name__)

EVAL_DIR = Path(__file__).resolve().parent
DEFAULT_QUESTIONS = EVAL_DIR / "questions.jsonl"
DEFAULT_GATES = EVAL_DIR / "gates.json"
#: The retriever the gates apply to (the one the chat uses).
GATED_RETRIEVER = "hybrid"
#: Order of the table's columns and of ``--retriever all``.
ALL_RETRIEVERS = ("bm25", "dense", "hybrid")
assert set(ALL_RETRIEVERS) == set(RETRIEVERS)


# --------------------------------------------------------------------------- questions


def load_questions(path: Path) -> list[dict]:
    """The questions of a JSONL file; a problem raises UserError naming the line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"questions file not found: {path} (give a JSONL file with --questions)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read questions file {path}: {exc}".splitlines()[0]) from None
    questions, seen = [], set()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path} line {lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        questions.append(validate_question(row, where))
        if row["id"] in seen:
            raise UserError(f"{where}: duplicate id {row['id']!r}")
        seen.add(row["id"])
    if not questions:
        raise UserError(f"questions file {path} holds no question")
    return questions


def validate_question(row: object, where: str) -> dict:
    """The row as a question dict, or UserError saying what is wrong with it."""
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(row).__name__}")
    missing = [k for k in ("id", "question", "answers", "sources", "answerable") if k not in row]
    if missing:
        raise UserError(f"{where}: missing key(s) {', '.join(missing)}")
    if not isinstance(row["id"], (str, int)) or isinstance(row["id"], bool):
        raise UserError(f"{where}: 'id' must be a string")
    if not isinstance(row["question"], str):
        raise UserError(f"{where}: 'question' must be a string")
    for key in ("answers", "sources"):
        if not isinstance(row[key], list) or not all(isinstance(x, str) for x in row[key]):
            raise UserError(f"{where}: '{key}' must be a list of strings")
    if not isinstance(row["answerable"], bool):
        raise UserError(f"{where}: 'answerable' must be true or false")
    history = row.get("history", [])
    if not isinstance(history, list) or not all(isinstance(x, str) for x in history):
        raise UserError(f"{where}: 'history' must be a list of strings")
    return {"id": str(row["id"]), "question": row["question"], "answers": row["answers"],
            "sources": row["sources"], "answerable": row["answerable"],
            "kind": str(row.get("kind", "")), "history": history}


# --------------------------------------------------------------------------- asking


def retrieved_sources(passages: Sequence[dict]) -> list[str]:
    """Files of the ranked passages, first occurrence only."""
    seen: dict[str, None] = {}
    for p in passages:
        seen.setdefault(p["source"], None)
    return list(seen)


def ask_one(assistant, question: dict, retriever: str, withheld: bool = True) -> dict:
    """The record of one question asked with one retriever (never raises for a bad question).
    ``withheld=False`` skips asking it again with its files hidden (``withheld_abstained`` is
    then None): a generative answerer pays seconds per question."""
    record = {"id": question["id"], "question": question["question"], "kind": question["kind"],
              "retriever": retriever}
    try:
        data = assistant.ask(question["question"], history=question["history"],
                             retriever=retriever).to_json()
        record.update(answer=data["answer"], abstained=data["abstained"],
                      citations=data["citations"], passages=data["passages"],
                      retrieved_sources=retrieved_sources(data["passages"]),
                      latency_ms=data["latency_ms"], support=data["support"],
                      abstain_threshold=data["threshold"],
                      answerer=data["answerer"], answerer_configured=assistant.search.answerer,
                      verified=data["verified"], note=data["note"],
                      withheld_abstained=withheld_abstained(assistant, question, retriever)
                      if withheld else None)
    except Exception as exc:  # recorded, and the run goes on
        message = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        log.debug("question %s failed", question["id"], exc_info=True)
        record.update(answer="", abstained=None, citations=[], passages=[], retrieved_sources=[],
                      latency_ms=None, support=None, abstain_threshold=None,
                      withheld_abstained=None, error=message)
    record.update(answerable=question["answerable"], gold_answers=question["answers"],
                  gold_sources=question["sources"])
    return record


def withheld_abstained(assistant, question: dict, retriever: str) -> bool | None:
    """For an answerable question: whether the assistant abstains once the files that answer it
    are hidden from the search. This turns any answerable question set (PIAF's 3,779 included)
    into unanswerable questions about neighbouring topics; None for unanswerable questions."""
    if not question["answerable"] or not question["sources"]:
        return None
    return assistant.ask(question["question"], history=question["history"], retriever=retriever,
                         exclude_sources=question["sources"]).abstained


def run_questions(assistant, questions: Sequence[dict], retrievers: Sequence[str],
                  progress: bool = True) -> list[dict]:
    """Ask every question with every retriever."""
    from tqdm import tqdm
    records = []
    total = len(questions) * len(retrievers)
    with tqdm(total=total, desc="eval", unit="q", file=sys.stderr, disable=not progress,
              dynamic_ncols=True, mininterval=0.5) as bar:
        for question in questions:
            for retriever in retrievers:
                records.append(ask_one(assistant, question, retriever))
                bar.update(1)
    return records


def metrics_by_retriever(records: Sequence[dict], retrievers: Sequence[str], corpus: Path,
                         min_words: int) -> dict[str, dict]:
    sources = SourceLines(corpus, min_words)  # each cited file read once for all retrievers
    return {r: compute_metrics([x for x in records if x["retriever"] == r], corpus,
                               sources=sources) for r in retrievers}


# --------------------------------------------------------------------------- the run


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cores} CPU cores ({cpu}), {platform.system()} {platform.release()}, no GPU used"


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def run_eval(corpus: Path, questions_path: Path, retrievers: Sequence[str],
             index_dir: Path | None = None, model: str = IndexSettings.model,
             precision: str = IndexSettings.precision,
             sentence_vectors: bool = IndexSettings.sentence_vectors,
             limit: int | None = None, progress: bool = True,
             assistant_factory: Callable | None = None,
             search: SearchSettings = SearchSettings(), split: str = "all",
             store=None) -> dict:
    """Run the evaluation; returns ``{"metrics": {retriever: block}, "questions", "run"}``
    (always keyed by retriever; ``output_json`` flattens the single-retriever case). ``store``
    (a ``rag.stores.StoreLocation``) says where the vectors are, None where the index says."""
    from rag.assistant import Assistant

    started = time.perf_counter()
    when = _dt.datetime.now().astimezone()
    load_before = _load_average()
    questions = load_questions(questions_path)
    n_in_file = len(questions)
    if split != "all":
        from rag.reader.dataset import split_of
        questions = [q for q in questions if q["sources"] and split_of(q["sources"][0]) == split]
        if not questions:
            raise UserError(f"no question of {questions_path} is in the {split} split")
    if limit is not None:
        if limit < 1:
            raise UserError(f"--limit must be at least 1 (got {limit})")
        questions = questions[:limit]
    settings = IndexSettings(model=model, precision=precision, sentence_vectors=sentence_vectors)
    factory = assistant_factory or Assistant
    assistant = factory(corpus, index_dir, settings, search,
                        progress=progress and sys.stderr.isatty(),
                        **({"store": store} if store is not None else {}))
    index_seconds = time.perf_counter() - started
    assistant.embedder  # load the model before the questions' clock starts
    load_seconds = time.perf_counter() - started - index_seconds
    asked = time.perf_counter()
    records = run_questions(assistant, questions, retrievers, progress=progress)
    ask_seconds = time.perf_counter() - asked
    metrics = metrics_by_retriever(records, retrievers, Path(corpus), settings.min_words)
    search: SearchSettings = assistant.search
    report = assistant.report
    run = {
        "date": when.isoformat(timespec="seconds"),
        "machine": machine_description(),
        "corpus": str(corpus),
        "index": str(assistant.index_dir),
        "questions_file": str(questions_path),
        "n_questions_in_file": n_in_file,
        "limit": limit,
        "split": split,
        "retrievers": list(retrievers),
        "index_settings": settings.to_json(),
        "search_settings": asdict(search),
        "answerer": type(assistant.answerer).__name__,
        "abstain_threshold": getattr(assistant.answerer, "threshold", search.abstain_threshold),
        "index_build": report.to_json() if report is not None else None,
        # Other work on the machine slows every number down (latencies most): 1-minute load
        # averages when the run started and ended, to compare with the number of cores.
        "load_average": [load_before, _load_average()],
        "seconds": {"index": round(index_seconds, 2), "model_load": round(load_seconds, 2),
                    "questions": round(ask_seconds, 2),
                    "total": round(time.perf_counter() - started, 2)},
    }
    return {"metrics": metrics, "questions": records, "run": run}


def output_json(result: dict) -> dict:
    """The ``--json`` document: metrics flat for one retriever, per retriever for several."""
    metrics = result["metrics"]
    if len(result["run"]["retrievers"]) == 1:
        metrics = next(iter(metrics.values()))
    return {"metrics": metrics, "questions": result["questions"], "run": result["run"]}


def blocks_of(document: dict) -> dict[str, dict]:
    """Metric blocks keyed by retriever from a ``--json`` document (flat or per retriever)."""
    metrics = document["metrics"]
    if "n_questions" in metrics:
        retrievers = document.get("run", {}).get("retrievers") or [GATED_RETRIEVER]
        return {retrievers[0]: metrics}
    return metrics


# --------------------------------------------------------------------------- output


def format_value(name: str, value) -> str:
    if value is None:
        return "n/a"
    if name.startswith("n_"):
        return str(int(value))
    if name.startswith(("latency", "answer_chars")):
        return f"{value:.1f}"
    return f"{value:.3f}"


def format_table(metrics: dict[str, dict]) -> str:
    """Metrics as a text table, one column per retriever."""
    names = list(metrics)
    width = max(len(k) for k in METRIC_KEYS) + 2
    lines = ["metric".ljust(width) + "".join(n.rjust(10) for n in names)]
    for key in METRIC_KEYS:
        lines.append(key.ljust(width)
                     + "".join(format_value(key, metrics[n].get(key)).rjust(10) for n in names))
    return "\n".join(lines)


def load_gates(path: Path = DEFAULT_GATES) -> dict:
    try:
        gates = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read gates file {path}: {exc}".splitlines()[0]) from None
    if not isinstance(gates, dict) or not all(
            isinstance(v, dict) and set(v) <= {"min", "max"} for k, v in gates.items()
            if not k.startswith("_")):
        raise UserError(f"gates file {path} must map metric names to {{\"min\"|\"max\": number}}")
    return gates


def format_gates(results) -> str:
    lines = []
    for name, kind, bound, value, ok in results:
        sign = ">=" if kind == "min" else "<="
        shown = format_value(name, value)
        lines.append(f"{'PASS' if ok else 'FAIL'}  {name} = {shown} (needs {sign} {bound:g})")
    return "\n".join(lines)


def summary(result: dict) -> str:
    """The table and timings ``rag eval`` prints; warns on stderr when questions failed."""
    metrics, run = result["metrics"], result["run"]
    failed = sum(m["n_failed"] for m in metrics.values())
    if failed:
        first = next(r for r in result["questions"] if r.get("error"))
        print(f"warning: {failed} question(s) failed, e.g. {first['id']}: {first['error']}",
              file=sys.stderr)
    return (format_table(metrics) + f"\n\n{len(result['questions'])} answers in "
            f"{run['seconds']['total']:.1f} s (index {run['seconds']['index']:.1f} s, "
            f"questions {run['seconds']['questions']:.1f} s)")


def write_results(path: Path, result: dict) -> None:
    """Write the ``--json`` document."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(output_json(result), ensure_ascii=False, indent=1) + "\n",
                        encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def gate_report(result: dict, gates: dict) -> tuple[bool, str]:
    """Whether the gated retriever passes every gate, and the lines that say so."""
    results = check_gates(result["metrics"][GATED_RETRIEVER], gates)
    text = (f"\ngates ({GATED_RETRIEVER}, {DEFAULT_GATES.relative_to(PROJECT_ROOT)}):\n"
            + format_gates(results))
    return all(ok for *_, ok in results), text
