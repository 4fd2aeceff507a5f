"""Reading and chunking one big file: time must grow in proportion to its size, memory stay bounded.

For generated French prose files of 1, 2, 4, 8 and 50 MB, prints the seconds and seconds per MB of
what the indexer does to a file before embedding it: read and decode it, apply the boilerplate
rule, split it into chunks (with their line numbers) and the chunks into sentences. Embedding is
excluded: it costs the same per chunk whatever the file, and it dwarfs all of this. Each size runs
in a fresh process, so its peak resident memory (``ru_maxrss``) is its own; the memory of the
interpreter with its libraries loaded is printed apart, and the rest is what the file costs.

    python benchmarks/big_file.py [--sizes 1 2 4 8 50]
    python benchmarks/big_file.py --unchanged-check 100000

``--unchanged-check N`` builds an index of about N chunks (2,000 generated files; vectors from a
stand-in embedder of 8 dimensions, since only the index's bookkeeping is measured) and times
``update_index`` on the unchanged corpus: what ``rag index`` costs when nothing changed.
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MB = 1 << 20
WORDS = ("le secrétaire général de l'alliance a rappelé que chaque pays membre doit consacrer "
         "une part de sa richesse à la défense européenne pendant le sommet de juin à La Haye "
         "où les chefs d'État discuteront du budget des armées et des missiles livrés à "
         "l'Ukraine").split()


def write_prose(path: Path, size: int, seed: int = 13) -> None:
    """About ``size`` bytes of French-looking prose: sentences of 8 to 24 words, paragraphs of 2 to
    6 sentences separated by blank lines, an occasional short title line (which the boilerplate
    rule drops)."""
    rng = random.Random(seed)
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < size:
            if rng.random() < 0.1:
                title = " ".join(rng.choice(WORDS) for _ in range(3)).capitalize()
                f.write(title + "\n\n")
                written += len(title.encode()) + 2
            sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 24))).capitalize()
                         + "." for _ in range(rng.randint(2, 6))]
            paragraph = " ".join(sentences) + "\n\n"
            f.write(paragraph)
            written += len(paragraph.encode())


def measure(path: Path) -> dict:
    """In this process: read + chunk + sentence split of ``path``, timed; peak memory."""
    from rag.config import IndexSettings
    from rag.corpus import read_document
    from rag.chunking import split_document
    from rag.index import sentences_of

    settings = IndexSettings()
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    doc = read_document(path.parent, path, settings.min_words)
    read = time.perf_counter()
    chunks = split_document(doc, settings.chunk_size, settings.chunk_overlap)
    chunked = time.perf_counter()
    sentences = sentences_of(chunks)
    done = time.perf_counter()
    return {"bytes": path.stat().st_size, "read": read - started, "chunk": chunked - read,
            "sentences": done - chunked, "total": done - started, "chunks": len(chunks),
            "sentence_count": len(sentences), "baseline_mb": baseline,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_one(size_mb: float, folder: Path) -> dict:
    path = folder / f"prose-{size_mb:g}mb.txt"
    write_prose(path, int(size_mb * MB))
    out = subprocess.run([sys.executable, __file__, "--measure", str(path)], check=True,
                         capture_output=True, text=True)
    path.unlink()
    return json.loads(out.stdout)


class ConstantEmbedder:
    """Stands in for the model where vectors do not matter: the interface of ``Embedder``."""

    name, weights_hash, dim, max_tokens = "constant", "0" * 64, 8, 512

    def encode_passages(self, texts, show_progress=False, batch_size=32):
        import numpy as np
        return np.full((len(texts), self.dim), 8 ** -0.5, dtype=np.float32)

    encode_queries = encode_passages


def unchanged_check(chunks: int, folder: Path) -> None:
    """Build an index of about ``chunks`` chunks, then time updates of the unchanged corpus."""
    from rag.config import IndexSettings
    from rag.index import update_index

    files = 2000
    corpus = folder / "corpus"
    corpus.mkdir()
    per_file = chunks // files * 650  # generated paragraphs make chunks of ~650 characters
    for i in range(files):
        write_prose(corpus / f"doc-{i:04d}.txt", per_file, seed=i)
    settings = IndexSettings(model="constant")
    started = time.perf_counter()
    first = update_index(corpus, folder / "index", settings, ConstantEmbedder)
    print(f"index of {first.files} files, {first.chunks} chunks built in "
          f"{time.perf_counter() - started:.0f} s (stand-in embedder)")
    for run in range(3):
        started = time.perf_counter()
        again = update_index(corpus, folder / "index", settings,
                             lambda: sys.exit("the model must not be loaded"))
        print(f"unchanged check {run + 1}: {time.perf_counter() - started:.3f} s "
              f"({again.embedded} embedded, {again.reused} chunks reused)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 2, 4, 8, 50])
    parser.add_argument("--unchanged-check", type=int, metavar="CHUNKS",
                        help="instead: time the check of an unchanged corpus of that many chunks")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    if args.unchanged_check:
        with tempfile.TemporaryDirectory() as tmp:
            unchanged_check(args.unchanged_check, Path(tmp))
        return
    print("read + boilerplate + chunk + sentence split of one generated prose file "
          "(embedding excluded); one fresh process per size")
    print(f"{'size':>7} {'chunks':>8} {'sentences':>10} {'read s':>7} {'chunk s':>8} "
          f"{'sent. s':>8} {'total s':>8} {'s/MB':>6} {'peak MB':>8} {'file cost MB':>13}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            r = run_one(size, Path(tmp))
            mb = r["bytes"] / MB
            print(f"{mb:6.1f}M {r['chunks']:8d} {r['sentence_count']:10d} {r['read']:7.2f} "
                  f"{r['chunk']:8.2f} {r['sentences']:8.2f} {r['total']:8.2f} "
                  f"{r['total'] / mb:6.3f} {r['peak_mb']:8.0f} "
                  f"{r['peak_mb'] - r['baseline_mb']:13.0f}")
    print(f"(peak MB: the whole process; file cost MB: peak minus the {r['baseline_mb']:.0f} MB "
          "of the interpreter with its libraries loaded)")


if __name__ == "__main__":
    main()
