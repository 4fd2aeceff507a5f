"""Beyond one machine, measured on this one: embedding locally vs on a 1-node and a 2-node Ray
cluster, the memory of every process, and (when benchmarks/pgvector_bench.py is present) FAISS
vs pgvector search.

All the Ray nodes run on this machine and share its cores, so the Ray figures are the cost of
going through Ray (actor start, model load per actor, shipping texts and vectors), not a
speed-up: on a real cluster each node brings its own cores and the embedding rate scales with
them. Each configuration embeds the same chunks (PIAF articles when ../shared/bench is present,
else the seeds repeated) with the same number of actors (2, one CPU each).

    python benchmarks/distributed.py [--chunks 400] [--actors 2] [--no-pgvector]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.chunking import split_document  # noqa: E402
from rag.config import ClusterSettings, IndexSettings, set_offline_environment  # noqa: E402
from rag.corpus import load_corpus  # noqa: E402

PIAF = ROOT.parent / "shared" / "bench" / "piaf" / "corpus"
NOTE = ("all nodes share this machine's 2 cores: the Ray rates are Ray's overhead, not a "
        "speed-up (a real cluster adds each node's cores)")


def chunk_texts(limit: int) -> list[str]:
    settings = IndexSettings()
    source = PIAF if PIAF.is_dir() else ROOT / "seeds"
    texts = [c.text for d in load_corpus(source, settings.min_words)
             for c in split_document(d, settings.chunk_size, settings.chunk_overlap)]
    while len(texts) < limit:
        texts = texts + texts
    return texts[:limit]


def rss_mb(pid: int | str = "self") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cluster_processes(folder: str) -> dict[int, str]:
    """Pid -> kind of every live process of the cluster living in ``folder``: those naming it on
    their command line (raylets, GCS, agents) and their descendants (the workers, whose command
    line Ray replaces with ``ray::<what they run>``)."""
    lines, parents = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat[0] != "Z":
            lines[int(entry.name)], parents[int(entry.name)] = cmdline, int(stat[1])
    ours = {pid for pid, cmdline in lines.items() if folder in cmdline}
    grew = True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in ours} - ours
        ours |= more
        grew = bool(more)
    return {pid: _kind(lines[pid]) for pid in ours}


def _kind(cmdline: str) -> str:
    if cmdline.startswith("ray::"):
        return "worker (" + cmdline.split()[0][5:] + ")"
    for marker, kind in (("raylet", "raylet"), ("gcs_server", "gcs_server"),
                         ("default_worker", "worker"), ("dashboard/agent", "dashboard agent"),
                         ("runtime_env/agent", "runtime_env agent"),
                         ("log_monitor", "log monitor"), ("monitor.py", "monitor")):
        if marker in cmdline:
            return kind
    return cmdline.split()[0].rsplit("/", 1)[-1]


class Peaks:
    """Largest RSS seen per process of the cluster, sampled after every batch."""

    def __init__(self, folder: str) -> None:
        self.folder, self.peak, self.kind = folder, {}, {}
        self.times: list[tuple[float, int]] = []

    def batch(self, done: int, total: int) -> None:
        self.times.append((time.perf_counter(), done))
        self.sample()

    def sample(self) -> None:
        for pid, kind in cluster_processes(self.folder).items():
            self.kind[pid] = kind
            self.peak[pid] = max(self.peak.get(pid, 0.0), rss_mb(pid))
        self.peak["driver"] = max(self.peak.get("driver", 0.0), rss_mb())
        self.kind["driver"] = "driver (rag index)"

    def table(self) -> list[tuple[str, int, float]]:
        """(kind, count, total MB) per kind of process."""
        rows: dict[str, list[float]] = {}
        for pid, mb in self.peak.items():
            rows.setdefault(self.kind[pid], []).append(mb)
        return sorted(((k, len(v), sum(v)) for k, v in rows.items()), key=lambda r: -r[2])


def steady_rate(times: list[tuple[float, int]]) -> float:
    """Texts per second between the first and the last batch back (actor start excluded)."""
    if len(times) < 2 or times[-1][1] == times[0][1]:
        return float("nan")
    (t0, n0), (t1, n1) = times[0], times[-1]
    return (n1 - n0) / (t1 - t0)


def run_local(texts: list[str]) -> dict:
    from rag.embedder import load_embedder
    started = time.perf_counter()
    embedder = load_embedder()
    loaded = time.perf_counter()
    embedder.encode_passages(texts)
    done = time.perf_counter()
    return {"name": "local (this process, 2 threads)", "start_s": loaded - started,
            "embed_s": done - loaded, "rate": len(texts) / (done - loaded),
            "steady": len(texts) / (done - loaded), "memory": [("driver (rag index)", 1, rss_mb())]}


def run_ray(texts: list[str], nodes: int, actors: int) -> dict:
    from rag.ray_embed import RayEncoder, connected, local_cluster_nodes
    settings = ClusterSettings(actors=actors, local_nodes=nodes)
    started = time.perf_counter()
    with local_cluster_nodes(settings) as cluster:
        peaks = Peaks(os.environ["RAY_TMPDIR"])
        with connected(cluster.address, settings):
            encoder = RayEncoder(IndexSettings().model, IndexSettings().precision, settings,
                                 on_batch=peaks.batch)
            ready = time.perf_counter()
            peaks.sample()
            encoder.encode_passages(texts)
            done = time.perf_counter()
            peaks.sample()
        used = len(encoder.nodes_used)
    return {"name": f"Ray, {nodes} node{'s' * (nodes > 1)} x 2 CPUs, {actors} actors "
                    f"({used} node{'s' * (used > 1)} used)",
            "start_s": ready - started, "embed_s": done - ready, "rate": len(texts) / (done - ready),
            "steady": steady_rate(peaks.times), "memory": peaks.table()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=400)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--no-pgvector", action="store_true")
    parser.add_argument("--local-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    set_offline_environment()
    texts = chunk_texts(args.chunks)
    if args.local_only:
        print(json.dumps(run_local(texts)))
        return
    print(f"{len(texts)} chunks of 800 characters at most ({'PIAF' if PIAF.is_dir() else 'seeds'}),"
          f" {os.cpu_count()} cores; {NOTE}.")
    # Locally in a fresh process: its memory is the model's and the program's, not Ray's.
    local = subprocess.run([sys.executable, __file__, "--chunks", str(args.chunks), "--local-only"],
                           check=True, capture_output=True, text=True)
    results = [json.loads(local.stdout)]
    for nodes in (1, 2):
        results.append(run_ray(texts, nodes, args.actors))
    print(f"\n{'embedding':52} {'start s':>8} {'embed s':>8} {'chunks/s':>9} {'steady':>7}")
    for r in results:
        print(f"{r['name']:52} {r['start_s']:8.1f} {r['embed_s']:8.1f} {r['rate']:9.1f} "
              f"{r['steady']:7.1f}")
    print("start: model load (local) or cluster start + one worker loading the model to read its "
          "hash (Ray);\nembed: the whole encode call, actors starting and loading the model "
          "included; steady: between the first and the last batch back.")
    print("\nmemory, peak RSS per kind of process (MB; workers hold the model):")
    for r in results:
        print(f"  {r['name']}")
        for kind, count, mb in r["memory"]:
            print(f"    {kind:28} x{count:<3} {mb:8.0f}")
    pg = ROOT / "benchmarks" / "pgvector_bench.py"
    if pg.is_file() and not args.no_pgvector:
        print("\nFAISS vs pgvector (benchmarks/pgvector_bench.py):")
        spec = importlib.util.spec_from_file_location("pgvector_bench", pg)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        result = module.run()
        if hasattr(module, "print_report"):
            module.print_report(result)
        else:
            print(result)


if __name__ == "__main__":
    main()
