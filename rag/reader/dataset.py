"""Training and validation data for the reader, built from the external benchmarks.

Sources (read in place from ``../shared/bench``, never copied): PIAF v1.1 (French, MIT) and half
of SQuAD 2.0's dev split (English, CC BY-SA 4.0, with adversarial unanswerable questions). Each
corpus is indexed with the program's own index, and every question goes through the assistant's
own retrieval, so the reader learns on exactly the candidates it will judge:

* an answerable question as asked: its candidates are the sentences of the top passages; those
  from a gold file that contain a gold answer are positives, every other one a negative (the other
  sentences of the gold paragraph included);
* the same question asked again with its gold files hidden: every candidate is a negative (the
  closest passages of other articles);
* a SQuAD 2.0 unanswerable question: every candidate is a negative (near misses by design).

Split by article, never by question (PIAF's questions share paragraphs): an article is in the
validation part when a hash of its file name falls under ``VALIDATION_SHARE``. Nothing is built
from the project's own ``eval/questions.jsonl``.
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import PROJECT_ROOT
from ..language import is_english, normalize_answer
from .features import candidates

BENCH_DIR = PROJECT_ROOT.parent / "shared" / "bench"
BENCHMARKS = ("piaf", "squad2")
#: Share of articles held out for validation: 90 of PIAF's 477 files (663 questions) and 2 of
#: SQuAD 2.0's 8 (592 questions, 299 unanswerable).
VALIDATION_SHARE = 0.2


def split_of(source: str) -> str:
    """"validation" or "train" for the article ``source`` (a file name), fixed by its hash."""
    digest = hashlib.sha256(f"reader-split:{source}".encode()).hexdigest()
    return "validation" if int(digest[:8], 16) / 2**32 < VALIDATION_SHARE else "train"


def read_questions(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()
            if line.strip()]


@dataclass
class Examples:
    """Candidate rows of many questions: ``features[group == q]`` are question q's candidates."""

    features: np.ndarray  # (n, f) float32
    labels: np.ndarray  # (n,) float32, 1 = contains a gold answer in a gold file
    group: np.ndarray  # (n,) int64 question number
    questions: list[dict]  # per group: id, benchmark, split, answerable, withheld, kind, english,
    #                        question (the text asked)
    texts: list[str]  # (n,) the candidate sentences (benchmarks/reader_cross.py reads them)

    def select(self, keep: np.ndarray) -> Examples:
        """The examples of the groups where ``keep`` (per question) is true, renumbered."""
        new_number = np.cumsum(keep) - 1
        rows = keep[self.group]
        return Examples(self.features[rows], self.labels[rows], new_number[self.group[rows]],
                        [q for q, k in zip(self.questions, keep) if k],
                        [t for t, r in zip(self.texts, rows) if r])


def build_examples(benchmark: str, bench: Path, index_dir: Path, limit: int | None = None,
                   progress: bool = True) -> Examples:
    """Index ``benchmark``'s corpus (incrementally, in ``index_dir``) and turn each of its
    questions into candidate rows (see the module doc). The question vectors are kept beside
    the index (``queries.npy``, checked against the model's weights hash), so building
    candidates again after a change of features does not embed them again."""
    from tqdm import tqdm

    from ..assistant import Assistant
    from ..extractive import ExtractiveAnswerer
    folder = Path(bench) / benchmark
    # Only retrieval is used; an answerer that needs no reader weights keeps training standalone.
    assistant = Assistant(folder / "corpus", index_dir, answerer=ExtractiveAnswerer(),
                          progress=progress)
    questions = read_questions(folder / "questions.jsonl")[:limit]
    texts = [assistant.clean_question(q["question"]) for q in questions]
    vectors = _query_vectors(assistant, texts, Path(index_dir))
    features, labels, group, meta, sentence_texts = [], [], [], [], []
    asks = [(q, t, v, False) for q, t, v in zip(questions, texts, vectors)]
    asks += [(q, t, v, True) for q, t, v in zip(questions, texts, vectors) if q["answerable"]]
    for question, text, vector, withheld in tqdm(asks, desc=f"{benchmark} candidates",
                                                 disable=not progress, file=sys.stderr):
        hidden = question["sources"] if withheld else ()
        context, passages = assistant.retrieve(text, exclude_sources=hidden, query_vector=vector)
        found = candidates(context.index, context.query, vector, passages, context.english,
                           context.settings.candidate_passages, products=True)
        gold = [normalize_answer(a) for a in question["answers"]] if not withheld else []
        index = context.index
        for sentence, row in zip(found.sentences, found.features):
            source = index.chunk(sentence.chunk_id).source
            sentence_text = index.sentence_text(sentence)
            sentence_texts.append(sentence_text)
            text_norm = normalize_answer(sentence_text)
            positive = source in question["sources"] and any(g and g in text_norm for g in gold)
            features.append(row)
            labels.append(float(positive))
            group.append(len(meta))
        meta.append({"id": question["id"], "benchmark": benchmark, "source": question["sources"][0],
                     "split": split_of(question["sources"][0]),
                     "answerable": bool(question["answerable"]) and not withheld,
                     "withheld": withheld, "kind": question.get("kind", ""),
                     "english": is_english(text), "question": text})
    dim = assistant.index.sentence_vectors.dim
    return Examples(np.asarray(features, np.float32).reshape(len(features), -1) if features
                    else np.zeros((0, dim), np.float32),
                    np.asarray(labels, np.float32), np.asarray(group, np.int64), meta,
                    sentence_texts)


def _query_vectors(assistant, texts: list[str], index_dir: Path) -> np.ndarray:
    key = hashlib.sha256("\0".join([assistant.index.manifest["model"]["weights_hash"], *texts])
                         .encode()).hexdigest()
    path = index_dir / f"queries-{key[:16]}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    vectors = assistant.embedder.encode_queries(texts)
    np.save(path, vectors, allow_pickle=False)
    return vectors


def concatenate(parts: list[Examples]) -> Examples:
    offsets = np.cumsum([0] + [len(p.questions) for p in parts])
    return Examples(np.concatenate([p.features for p in parts]),
                    np.concatenate([p.labels for p in parts]),
                    np.concatenate([p.group + o for p, o in zip(parts, offsets)]),
                    [q for p in parts for q in p.questions], [t for p in parts for t in p.texts])
