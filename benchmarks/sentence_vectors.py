"""What sentence vectors cost and what an index without them costs per question.

Builds the same corpus with and without sentence vectors (``IndexSettings.sentence_vectors``),
alternately, with the model loaded once beforehand, and reports the texts and characters
embedded, the build time (best of ``--repeat``), the build's size on disk; then asks the project
questions of both indexes and reports the question latency (p50/p95 of ``Assistant.ask``), for
the index without sentence vectors both cold (its sentence cache emptied before every question:
a question about passages nobody asked about yet) and warm.

The quality side (PIAF validation recall@5 and first sentence, the seeds gates) comes from
``rag eval`` with and without ``--no-sentence-vectors``; see benchmarks/RESULTS.md.

    python benchmarks/sentence_vectors.py [--corpus seeds] [--repeat 2]
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

from rag.config import IndexSettings, set_offline_environment  # noqa: E402


class Counting:
    """The real embedder, counting the passages (and their characters) it embeds."""

    def __init__(self, embedder) -> None:
        self.embedder, self.texts, self.chars = embedder, 0, 0
        self.name, self.weights_hash, self.dim = embedder.name, embedder.weights_hash, embedder.dim

    def encode_passages(self, texts, show_progress=False, batch_size=32):
        self.texts += len(texts)
        self.chars += sum(map(len, texts))
        return self.embedder.encode_passages(texts, show_progress, batch_size)


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def percentiles(values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    return statistics.median(values), values[min(len(values) - 1, int(0.95 * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "seeds")
    parser.add_argument("--questions", type=Path, default=ROOT / "eval" / "questions.jsonl")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    set_offline_environment()
    from rag.assistant import Assistant
    from rag.embedder import load_embedder
    from rag.index import current_build, update_index

    embedder = load_embedder()
    modes = {"with sentence vectors": IndexSettings(),
             "without (per question)": replace(IndexSettings(), sentence_vectors=False)}
    work = Path(tempfile.mkdtemp(prefix="rag-sentvec-"))
    built: dict[str, dict] = {name: {"seconds": []} for name in modes}
    for attempt in range(args.repeat):
        for name, settings in modes.items():
            counting = Counting(embedder)
            folder = work / f"{attempt}-{len(built[name]['seconds'])}-{name[:4]}"
            started = time.perf_counter()
            update_index(args.corpus, folder, settings, lambda: counting)
            built[name]["seconds"].append(time.perf_counter() - started)
            built[name].update(texts=counting.texts, chars=counting.chars, folder=folder,
                               mb=folder_mb(current_build(folder)))
    questions = [json.loads(line)["question"] for line in args.questions.open(encoding="utf-8")
                 if line.strip()]
    print(f"corpus {args.corpus}, {len(questions)} questions, best of {args.repeat} builds\n")
    print(f"{'index':24} {'texts':>7} {'chars':>9} {'build s':>8} {'MB':>6} "
          f"{'ask p50':>8} {'ask p95':>8}")
    for name, settings in modes.items():
        b = built[name]
        assistant = Assistant(args.corpus, b["folder"], settings, embedder=embedder)
        store = assistant.index.sentence_vectors
        passes = [("", True)] if getattr(store, "searchable", True) else [(" cold", True),
                                                                           (" warm", False)]
        for label, cold in passes:
            times = []
            for question in questions:
                if cold and hasattr(store, "_cache"):
                    store._cache.clear()
                started = time.perf_counter()
                assistant.ask(question)
                times.append((time.perf_counter() - started) * 1000)
            p50, p95 = percentiles(times)
            print(f"{name + label:24} {b['texts']:7d} {b['chars']:9d} {min(b['seconds']):8.1f} "
                  f"{b['mb']:6.1f} {p50:8.1f} {p95:8.1f}")
    full, lean = (built[n] for n in modes)
    print(f"\nwithout sentence vectors: {lean['texts'] / full['texts']:.2f} of the texts, "
          f"{lean['chars'] / full['chars']:.2f} of the characters, "
          f"{min(lean['seconds']) / min(full['seconds']):.2f} of the build time, "
          f"{lean['mb'] / full['mb']:.2f} of the disk")


if __name__ == "__main__":
    main()
