"""Chunk size by measurement: the project's question set on the seeds, one fresh index per size,
every metric of `rag eval` for the hybrid retriever (the sentence vectors do not depend on the
chunk size, so the differences come from ranking and from the passage context in sentence scores).

    python benchmarks/chunk_size.py [--sizes 300 500 800 1200 2000]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eval.metrics import compute_metrics  # noqa: E402
from eval.runner import DEFAULT_QUESTIONS, load_questions, run_questions  # noqa: E402
from rag.assistant import Assistant  # noqa: E402
from rag.config import IndexSettings  # noqa: E402

SHOWN = ("recall@1", "mrr@10", "answer_contains", "answer_accuracy", "abstain_unanswerable",
         "abstain_answerable")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 500, 800, 1200, 2000])
    args = parser.parse_args()
    questions = load_questions(DEFAULT_QUESTIONS)
    print("size  chunks  " + "  ".join(f"{m:>20s}" for m in SHOWN))
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as index_dir:
            settings = IndexSettings(chunk_size=size)
            assistant = Assistant(ROOT / "seeds", index_dir, settings)
            records = run_questions(assistant, questions, ["hybrid"], progress=False)
            metrics = compute_metrics(records, ROOT / "seeds", settings.min_words)
            print(f"{size:4d}  {len(assistant.index.chunks):6d}  "
                  + "  ".join(f"{metrics[m]:20.3f}" for m in SHOWN))


if __name__ == "__main__":
    main()
