"""When would an approximate index pay? Exact inner-product search (what the index uses) against
HNSW, one query at a time, on random normalized 384-dimension vectors.

    python benchmarks/faiss_scale.py [--sizes 10000 100000 1000000]
"""
from __future__ import annotations

import argparse
import time

import faiss
import numpy as np


def per_query_ms(index: faiss.Index, queries: np.ndarray) -> float:
    started = time.perf_counter()
    for q in queries:
        index.search(q.reshape(1, -1), 10)
    return (time.perf_counter() - started) * 1000 / len(queries)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--hnsw-max", type=int, default=100_000, help="largest size built as HNSW")
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)  # as the assistant runs it: one question at a time
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((50, 384), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    for n in args.sizes:
        vectors = rng.standard_normal((n, 384), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        flat = faiss.IndexFlatIP(384)
        flat.add(vectors)
        line = f"{n:>9,d} chunks: exact {per_query_ms(flat, queries):7.2f} ms/query"
        if n <= args.hnsw_max:
            started = time.perf_counter()
            hnsw = faiss.IndexHNSWFlat(384, 32, faiss.METRIC_INNER_PRODUCT)
            hnsw.add(vectors)
            build = time.perf_counter() - started
            line += f"   HNSW {per_query_ms(hnsw, queries):6.2f} ms/query (built in {build:.0f} s)"
        print(line, flush=True)


if __name__ == "__main__":
    main()
