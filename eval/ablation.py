"""Ablation: what each answerer and each hand rule earns, on the seeds and both benchmarks.

    python -m eval.ablation --json /tmp/ablation.json [--bench ../shared/bench]

Runs ``rag eval``'s ``run_eval`` (hybrid retriever) in one process for every set x configuration:
the seeds question set, PIAF's and SQuAD 2.0's *validation* articles (never trained or tuned on),
and the extractive answerer, the reader alone, the reader with the answer-type rule, with the
names rule, and with both. ``python -m eval.report --ablation`` turns the JSON into a table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rag.config import PROJECT_ROOT, SearchSettings, cache_dir, set_offline_environment

from rag.reader.dataset import BENCH_DIR

from .runner import DEFAULT_QUESTIONS, run_eval

CONFIGS = {
    "extractive (rules, no training)": SearchSettings(answerer="extractive"),
    "reader": SearchSettings(answerer="reader", reader_type_rule=False, reader_names_rule=False),
    "reader + answer-type rule (default)": SearchSettings(answerer="reader", reader_type_rule=True,
                                                          reader_names_rule=False),
    "reader + names rule": SearchSettings(answerer="reader", reader_type_rule=False,
                                          reader_names_rule=True),
    "reader + both rules": SearchSettings(answerer="reader", reader_type_rule=True,
                                          reader_names_rule=True),
}
KEYS = ("top_citation_contains", "answer_contains", "answer_accuracy", "abstain_answerable",
        "abstain_unanswerable", "abstain_withheld", "answer_chars_p50", "latency_ms_p50")


def sets(bench: Path) -> list[tuple[str, Path, Path, str, Path | None]]:
    """(label, corpus, questions, split, index folder) of each evaluated set."""
    work = cache_dir() / "reader-training"
    return [
        ("seeds", PROJECT_ROOT / "seeds", DEFAULT_QUESTIONS, "all", None),
        ("PIAF validation", bench / "piaf" / "corpus", bench / "piaf" / "questions.jsonl",
         "validation", work / "piaf-index"),
        ("SQuAD 2.0 validation", bench / "squad2" / "corpus", bench / "squad2" / "questions.jsonl",
         "validation", work / "squad2-index"),
    ]


def main(argv: list[str] | None = None) -> int:
    set_offline_environment()
    parser = argparse.ArgumentParser(prog="python -m eval.ablation",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, default=BENCH_DIR)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results: dict[str, dict[str, dict]] = {}
    for label, corpus, questions, split, index in sets(args.bench):
        for name, search in CONFIGS.items():
            print(f"{label}: {name}", file=sys.stderr)
            run = run_eval(corpus, questions, ["hybrid"], index_dir=index, progress=False,
                           search=search, split=split)
            block = run["metrics"]["hybrid"]
            results.setdefault(label, {})[name] = {k: block.get(k) for k in (*KEYS, "n_questions")}
    document = {"configs": list(CONFIGS), "sets": results, "keys": list(KEYS),
                "minutes": round((time.perf_counter() - started) / 60, 1),
                "command": "python -m eval.ablation --json " + str(args.json)}
    args.json.write_text(json.dumps(document, indent=1), encoding="utf-8")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
