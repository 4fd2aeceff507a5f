"""Embedding throughput of the index builder next to raw ``SentenceTransformer.encode``.

Both embed the same seed chunks in the same process, so the ratio shows what our wrapper costs
(prompt handling, locking, dtype conversion) on top of the model itself.

    python benchmarks/embedding_throughput.py [--corpus seeds] [--repeat 3]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.chunking import split_document  # noqa: E402
from rag.config import IndexSettings  # noqa: E402
from rag.corpus import load_corpus  # noqa: E402
from rag.embedder import load_embedder  # noqa: E402


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", type=Path, default=Path(__file__).resolve().parent.parent / "seeds")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    settings = IndexSettings()
    chunks = [c.text for d in load_corpus(args.corpus, settings.min_words)
              for c in split_document(d, settings.chunk_size, settings.chunk_overlap)]
    embedder = load_embedder(settings.model)
    embedder.encode_passages(chunks[:4])  # warm up
    ours = best_of(args.repeat, lambda: embedder.encode_passages(chunks))
    raw = best_of(args.repeat, lambda: embedder.model.encode(
        chunks, prompt="passage: ", batch_size=32, normalize_embeddings=True))
    print(f"{len(chunks)} chunks, best of {args.repeat}")
    print(f"rag Embedder.encode_passages : {len(chunks) / ours:7.1f} chunks/s ({ours:.2f} s)")
    print(f"SentenceTransformer.encode   : {len(chunks) / raw:7.1f} chunks/s ({raw:.2f} s)")
    print(f"ratio (ours / raw time)      : {ours / raw:7.2f}")


if __name__ == "__main__":
    main()
