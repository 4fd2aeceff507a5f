"""Warm question latency: `Assistant.ask` with the reader and with the extractive answerer, next
to the floor neither can go below (embedding the question alone), measured in the same process,
question by question, in turn (so a change of machine load hits all three alike).

    python benchmarks/latency.py [--corpus seeds] [--questions eval/questions.jsonl] [--repeat 3]
                                 [--precision int8|fp32]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.assistant import Assistant  # noqa: E402
from rag.config import PRECISIONS, IndexSettings  # noqa: E402
from rag.extractive import ExtractiveAnswerer  # noqa: E402
from rag.reader.answerer import ReaderAnswerer  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", type=Path, default=ROOT / "seeds")
    parser.add_argument("--questions", type=Path, default=ROOT / "eval" / "questions.jsonl")
    parser.add_argument("--index", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--precision", choices=PRECISIONS, default=IndexSettings.precision,
                        help="how the bundled encoder runs (another precision: another index)")
    args = parser.parse_args()
    questions = [json.loads(line)["question"] for line in
                 args.questions.read_text(encoding="utf-8").splitlines() if line.strip()]
    reader = ReaderAnswerer()
    extractive = ExtractiveAnswerer()
    assistant = Assistant(args.corpus, args.index, IndexSettings(precision=args.precision),
                          answerer=reader)
    print(f"encoder precision {args.precision}")
    assistant.ask(questions[0])  # warm up
    timings: dict[str, list[float]] = {"embed question only": [], "ask, extractive": [],
                                       "ask, reader": []}
    for _ in range(args.repeat):
        for q in questions:
            started = time.perf_counter()
            assistant.embedder.encode_queries([q])
            timings["embed question only"].append((time.perf_counter() - started) * 1000)
            for name, answerer in (("ask, extractive", extractive), ("ask, reader", reader)):
                assistant.answerer = answerer
                started = time.perf_counter()
                assistant.ask(q)
                timings[name].append((time.perf_counter() - started) * 1000)
    for name, values in timings.items():
        print(f"{name:20s} p50 {statistics.median(values):6.1f} ms   p95 {percentile(values, 0.95):6.1f} ms"
              f"   ({len(values)} calls)")
    p50 = {name: statistics.median(values) for name, values in timings.items()}
    print(f"reader / extractive (p50)   {p50['ask, reader'] / p50['ask, extractive']:6.2f}")
    print(f"reader / embed only (p50)   {p50['ask, reader'] / p50['embed question only']:6.2f}")


if __name__ == "__main__":
    main()
