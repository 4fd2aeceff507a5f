"""int8 against fp32 for the bundled encoder, side by side in one process.

Prints, for each precision: question embedding p50/p95 (the eval questions, one at a time),
passage throughput, and a full index build of a corpus (PIAF's 480 articles by default) with the
time split by stage (read + chunk, chunk vectors, sentence vectors, BM25, write), then the int8 /
fp32 ratios. The two builds run one after the other in the same process, so a change of machine
load between them shows as noise in both.

    python benchmarks/precision.py [--corpus ../shared/bench/piaf/corpus] [--questions eval/questions.jsonl]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.chunking import split_document  # noqa: E402
from rag.config import PRECISIONS, IndexSettings  # noqa: E402
from rag.corpus import load_corpus  # noqa: E402
from rag.embedder import Embedder, load_embedder  # noqa: E402
from rag.index import sentences_of, update_index  # noqa: E402
from rag.lexical import LexicalIndex, stop_words  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def query_latency(embedder: Embedder, questions: list[str]) -> list[float]:
    embedder.encode_queries(questions[:2])  # warm up
    timings = []
    for question in questions:
        started = time.perf_counter()
        embedder.encode_queries([question])
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def stages(embedder: Embedder, corpus: Path, settings: IndexSettings) -> dict[str, float]:
    """Where a build's time goes, stage by stage (the same work ``update_index`` does)."""
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    docs = load_corpus(corpus, settings.min_words)
    chunks = [c for d in docs for c in split_document(d, settings.chunk_size, settings.chunk_overlap)]
    sentences = sentences_of(chunks)
    by_id = {c.id: c for c in chunks}
    texts = [by_id[s.chunk_id].text[s.start - by_id[s.chunk_id].start:s.end - by_id[s.chunk_id].start]
             for s in sentences]
    seconds["read + chunk + split"] = time.perf_counter() - started
    started = time.perf_counter()
    embedder.encode_passages([c.text for c in chunks])
    seconds[f"chunk vectors ({len(chunks)})"] = time.perf_counter() - started
    started = time.perf_counter()
    embedder.encode_passages(texts)
    seconds[f"sentence vectors ({len(texts)})"] = time.perf_counter() - started
    started = time.perf_counter()
    LexicalIndex.build([c.id for c in chunks], [c.text for c in chunks],
                       stop_words(settings.question_stop_words))
    seconds["BM25"] = time.perf_counter() - started
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "bench" / "piaf" / "corpus")
    parser.add_argument("--questions", type=Path, default=ROOT / "eval" / "questions.jsonl")
    parser.add_argument("--no-build", action="store_true", help="skip the index builds")
    args = parser.parse_args()
    questions = [json.loads(line)["question"] for line in
                 args.questions.read_text(encoding="utf-8").splitlines() if line.strip()]
    embedders = {p: load_embedder(precision=p) for p in PRECISIONS}
    results: dict[str, dict[str, float]] = {p: {} for p in PRECISIONS}

    print(f"question embedding, {len(questions)} questions one at a time:")
    for _ in range(2):  # alternate, so load changes hit both
        for precision, embedder in embedders.items():
            timings = query_latency(embedder, questions)
            results[precision]["query p50 ms"] = statistics.median(timings)
            results[precision]["query p95 ms"] = percentile(timings, 0.95)
    for precision in PRECISIONS:
        r = results[precision]
        print(f"  {precision:5s} p50 {r['query p50 ms']:6.1f} ms   p95 {r['query p95 ms']:6.1f} ms")

    if not args.no_build:
        for precision, embedder in embedders.items():
            settings = replace(IndexSettings(), precision=precision)
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                report = update_index(args.corpus, Path(tmp) / "index", settings, lambda: embedder)
                results[precision]["build s"] = time.perf_counter() - started
            print(f"\n{precision}: index build of {args.corpus.name}/ ({report.files} files, "
                  f"{report.chunks} chunks): {results[precision]['build s']:.1f} s; by stage:")
            for stage, seconds in stages(embedder, args.corpus, settings).items():
                print(f"  {stage:28s} {seconds:7.1f} s")

    int8, fp32 = results["int8"], results["fp32"]
    print("\nint8 / fp32:")
    print(f"  question embedding p50  {int8['query p50 ms'] / fp32['query p50 ms']:.2f}")
    if not args.no_build:
        print(f"  index build time        {int8['build s'] / fp32['build s']:.2f}  "
              f"(fp32 {fp32['build s']:.1f} s, int8 {int8['build s']:.1f} s: "
              f"{fp32['build s'] / int8['build s']:.2f}x faster)")


if __name__ == "__main__":
    main()
