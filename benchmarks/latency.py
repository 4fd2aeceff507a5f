"""Warm question latency: `Assistant.ask` over the evaluation questions, next to the floor it
cannot go below (embedding the question alone), measured in the same process.

    python benchmarks/latency.py [--corpus seeds] [--questions eval/questions.jsonl] [--repeat 3]
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


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", type=Path, default=ROOT / "seeds")
    parser.add_argument("--questions", type=Path, default=ROOT / "eval" / "questions.jsonl")
    parser.add_argument("--index", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    questions = [json.loads(line)["question"] for line in
                 args.questions.read_text(encoding="utf-8").splitlines() if line.strip()]
    assistant = Assistant(args.corpus, args.index)
    assistant.ask(questions[0])  # warm up
    embed_ms, ask_ms = [], []
    for _ in range(args.repeat):
        for q in questions:
            started = time.perf_counter()
            assistant.embedder.encode_queries([q])
            embed_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            assistant.ask(q)
            ask_ms.append((time.perf_counter() - started) * 1000)
    for name, values in (("embed question only", embed_ms), ("Assistant.ask", ask_ms)):
        print(f"{name:20s} p50 {statistics.median(values):6.1f} ms   p95 {percentile(values, 0.95):6.1f} ms"
              f"   ({len(values)} calls)")
    print(f"ask / embed (p50)    {statistics.median(ask_ms) / statistics.median(embed_ms):6.2f}")


if __name__ == "__main__":
    main()
