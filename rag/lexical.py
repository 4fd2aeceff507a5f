"""BM25 over chunks with French stemming and stop words (``bm25s`` + ``PyStemmer``).

Tokens are lower-cased, accent-preserving words of two letters or more; French stop words are
removed and the rest reduced by the Snowball French stemmer, so "dépenses" matches "dépense" and
"l’OTAN" matches "OTAN". The same function tokenizes chunks and questions.
"""
from __future__ import annotations

import json
import logging
import re
import unicodedata
from functools import cached_property, lru_cache
from pathlib import Path

import bm25s
import numpy as np
import Stemmer
from bm25s.stopwords import STOPWORDS_FRENCH

# bm25s sets its own logger to DEBUG, which prints "Building index from tokens" on every build.
logging.getLogger("bm25s").setLevel(logging.WARNING)

_WORD = re.compile(r"\w\w+")
#: Question words and the commonest verbs of questions are not in the bm25s list; left in, "quel"
#: or "comment" would match every passage that happens to use them.
QUESTION_WORDS = frozenset({
    "quel", "quelle", "quels", "quelles", "lequel", "laquelle", "lesquels", "lesquelles", "comment",
    "combien", "pourquoi", "quand", "où", "qui", "que", "quoi", "dont", "selon", "lors", "lorsque",
    "lorsqu", "est", "sont", "était", "étaient", "être", "avoir", "ont", "avait", "avaient", "fait",
    "faire", "elle", "elles", "ils", "il"})
STOPWORDS = frozenset(STOPWORDS_FRENCH) | QUESTION_WORDS


def stop_words(question_words: bool = True) -> frozenset[str]:
    """The words BM25 ignores: the bm25s French list, plus question words unless turned off
    (``IndexSettings.question_stop_words``)."""
    return STOPWORDS if question_words else frozenset(STOPWORDS_FRENCH)


@lru_cache(maxsize=1)
def _stemmer() -> Stemmer.Stemmer:
    return Stemmer.Stemmer("french")


def tokenize(text: str, stop: frozenset[str] = STOPWORDS) -> list[str]:
    """Stemmed content words of ``text``."""
    words = _WORD.findall(unicodedata.normalize("NFKC", text).lower())
    return _stemmer().stemWords([w for w in words if w not in stop])


class LexicalIndex:
    """A bm25s index over chunks, keyed by chunk id; it keeps the stop words it was built with,
    so questions are tokenized exactly like the chunks were."""

    def __init__(self, model: bm25s.BM25, ids: list[str], stop: frozenset[str]) -> None:
        self.model = model
        self.ids = ids
        self.stop = stop
        #: The last question's scores: retrieval and the reader's features both need them, and
        #: scoring walks the whole corpus. One (tokens, scores) pair, replaced whole, so threads
        #: answering other questions at worst miss it.
        self._last: tuple[tuple[str, ...], np.ndarray] | None = None

    @classmethod
    def build(cls, ids: list[str], texts: list[str],
              stop: frozenset[str] = STOPWORDS) -> LexicalIndex:
        model = bm25s.BM25()
        # Empty token lists would shift bm25s rows; a placeholder token keeps rows aligned.
        # Each distinct word is kept once: the stemmer returns a new string per occurrence, and
        # 100,000 chunks hold 8 million of them (measured: 246 MB of lists, 85 MB interned).
        words: dict[str, str] = {}
        corpus = [[words.setdefault(w, w) for w in tokenize(t, stop)] or ["\u2400"]
                  for t in texts]
        model.index(corpus, show_progress=False)
        return cls(model, list(ids), stop)

    def save(self, folder: Path) -> None:
        self.model.save(str(folder))
        (folder / "ids.json").write_text(json.dumps(self.ids), encoding="utf-8")
        (folder / "stopwords.json").write_text(json.dumps(sorted(self.stop), ensure_ascii=False),
                                               encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> LexicalIndex:
        """The saved index, its score arrays memory-mapped: a question reads only the postings
        of its own words, so memory holds what questions touch (the arrays are 0.6 GB at a
        million chunks). Never save another index into the folder a loaded one maps."""
        ids = json.loads((folder / "ids.json").read_text(encoding="utf-8"))
        stop = frozenset(json.loads((folder / "stopwords.json").read_text(encoding="utf-8")))
        return cls(bm25s.BM25.load(str(folder), mmap=True), ids, stop)

    def tokenize(self, text: str) -> list[str]:
        return tokenize(text, self.stop)

    @cached_property
    def _idf(self) -> np.ndarray:
        """BM25's inverse document frequency of every vocabulary token."""
        indptr = np.asarray(self.model.scores["indptr"])
        df = np.diff(indptr).astype(np.float64)
        n = max(1, len(self.ids))
        return np.log(1.0 + (n - df + 0.5) / (df + 0.5)).astype(np.float32)

    def idf(self, tokens: list[str]) -> list[float]:
        """How rare each (already tokenized) token is in the corpus; unknown tokens count as the
        rarest possible (they are in no chunk)."""
        vocab, idf = self.model.vocab_dict, self._idf
        n = max(1, len(self.ids))
        unknown = float(np.log(1.0 + (n + 0.5) / 0.5))
        return [float(idf[vocab[t]]) if t in vocab and vocab[t] < len(idf) else unknown
                for t in tokens]

    def known_tokens(self, question: str) -> tuple[list[str], int]:
        """The question's tokens that occur in the corpus, and how many tokens it has in all."""
        tokens = self.tokenize(question)
        vocab = self.model.vocab_dict
        return [t for t in tokens if t in vocab], len(tokens)

    def coverage(self, question: str) -> float:
        """Share of the question's content words that occur in the corpus (0 when it has none)."""
        known, total = self.known_tokens(question)
        return len(known) / total if total else 0.0

    def scores(self, question: str) -> np.ndarray:
        """BM25 score of every chunk for ``question``, in ``ids`` order (zeros when no word of the
        question is known)."""
        tokens = tuple(self.known_tokens(question)[0])
        last = self._last
        if last is not None and last[0] == tokens:
            return last[1]
        if not tokens:
            scores = np.zeros(len(self.ids), dtype=np.float32)
        else:
            scores = np.asarray(self.model.get_scores(list(tokens)), dtype=np.float32)
        scores.flags.writeable = False  # shared between callers
        self._last = (tokens, scores)
        return scores

    def top(self, question: str, k: int) -> list[tuple[str, float]]:
        """The ``k`` best chunk ids with a positive score, best first (ties in index order)."""
        scores = self.scores(question)
        return [(self.ids[i], float(scores[i])) for i in top_positions(scores, k)]


def top_positions(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` highest positive ``scores``, best first, equal scores in position
    order: the order of a stable full sort, without sorting every chunk. A full sort of a million
    scores costs 16 to 240 ms; this costs one pass to find the positive scores (most chunks share
    no word with a question), a partition of those, and a sort of ``k``."""
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    candidates = np.flatnonzero(scores > 0)
    if len(candidates) > k:
        values = scores[candidates]
        kth = np.partition(values, len(values) - k)[len(values) - k]  # the k-th highest score
        above = candidates[values > kth]
        tied = candidates[values == kth][:k - len(above)]  # the first ones in position order
        candidates = np.sort(np.concatenate([above, tied]))
    return candidates[np.argsort(-scores[candidates], kind="stable")]
