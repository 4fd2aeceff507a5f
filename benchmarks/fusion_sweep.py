"""Choose the hybrid retriever's settings by measurement: document recall for BM25, dense and
weighted reciprocal rank fusion over a grid of (k, BM25 weight, depth), with and without scaling
the BM25 weight by the question's vocabulary coverage, and BM25 with and without the question-word
stop list. Query vectors and both rankings are computed once, so the grid costs seconds.

    python benchmarks/fusion_sweep.py --corpus ../shared/bench/piaf/corpus \\
        --questions ../shared/bench/piaf/questions.jsonl [--limit N]
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag import lexical  # noqa: E402
from rag.assistant import Assistant  # noqa: E402
from rag.retrieve import (Ranking, bm25_ranking, dense_ranking, fuse,  # noqa: E402
                          sentence_ranking)


def doc_recall(rankings: list[list[str]], golds: list[set[str]], ks=(1, 5, 10)) -> dict[str, float]:
    out = {}
    for k in ks:
        out[f"r@{k}"] = float(np.mean([bool(set(r[:k]) & g) for r, g in zip(rankings, golds)]))
    return out


def sources(index, chunk_ids: list[str]) -> list[str]:
    seen: list[str] = []
    for chunk_id in chunk_ids:
        s = index.chunk(chunk_id).source
        if s not in seen:
            seen.append(s)
    return seen


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", type=Path, default=Path("seeds"))
    parser.add_argument("--questions", type=Path, default=Path("eval/questions.jsonl"))
    parser.add_argument("--index", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()

    assistant = Assistant(args.corpus, args.index, progress=True)
    index = assistant.index
    questions = [json.loads(line) for line in args.questions.read_text(encoding="utf-8").splitlines()
                 if line.strip()]
    questions = [q for q in questions if q.get("answerable", True)][:args.limit]
    golds = [set(q["sources"]) for q in questions]
    texts = [q["question"] for q in questions]
    print(f"{len(questions)} answerable questions, {len(index.chunks)} chunks")

    started = time.perf_counter()
    vectors = assistant.embedder.encode_queries(texts)
    print(f"query embedding: {1000 * (time.perf_counter() - started) / len(texts):.1f} ms/question")
    dense = [dense_ranking(index, v, 100) for v in vectors]
    sentence_dense = [sentence_ranking(index, v, 100) for v in vectors]
    print("sentence-level dense             ", doc_recall([sources(index, r.ids) for r in sentence_dense], golds))

    variants = {}
    for name, question_words in (("bm25s French list", False), ("+ question words", True)):
        index.lexical = lexical.LexicalIndex.build([c.id for c in index.chunks],
                                                   [c.text for c in index.chunks],
                                                   lexical.stop_words(question_words))
        bm25 = [bm25_ranking(index, t, 100) for t in texts]
        coverage = [index.lexical.coverage(t) for t in texts]
        variants[name] = (bm25, coverage)
        print(f"BM25 stop words = {name:18s}", doc_recall([sources(index, r.ids) for r in bm25], golds))
    print("dense                            ", doc_recall([sources(index, r.ids) for r in dense], golds))

    print("\nfusion grid (stop words + question words):")
    bm25, coverage = variants["+ question words"]
    results = []
    for k, weight, depth, scaled, sw in itertools.product((5, 20, 60), (0.75, 1.0, 1.5), (50, 100),
                                                          (False, True), (0.0, 0.5, 1.0)):
        fused = []
        for d, sd, b, c in zip(dense, sentence_dense, bm25, coverage):
            w = weight * (c if scaled else 1.0)
            fused.append(fuse([(Ranking(d.ids[:depth], d.scores[:depth]), 1.0),
                               (Ranking(sd.ids[:depth], sd.scores[:depth]), sw),
                               (Ranking(b.ids[:depth], b.scores[:depth]), w)], k, index.position).ids)
        scores = doc_recall([sources(index, r) for r in fused], golds)
        results.append((scores["r@5"], scores["r@1"], k, weight, depth, scaled, sw, scores))
    for r5, r1, k, weight, depth, scaled, sw, scores in sorted(results, reverse=True)[:15]:
        print(f"k={k:3d} bm25_weight={weight:4.2f} depth={depth:3d} coverage_scaled={scaled!s:5s} "
              f"sentence_weight={sw:3.1f}", scores)


if __name__ == "__main__":
    main()
