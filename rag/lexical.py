"""BM25 over chunks with French stemming and stop words (``bm25s`` + ``PyStemmer``).

Tokens are lower-cased, accent-preserving words of two letters or more; French stop words are
removed and the rest reduced by the Snowball French stemmer, so "dépenses" matches "dépense" and
"l’OTAN" matches "OTAN". The same function tokenizes chunks and questions.
"""
from __future__ import annotations

import logging
import re
import unicodedata
from functools import lru_cache
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


@lru_cache(maxsize=1)
def _stemmer() -> Stemmer.Stemmer:
    return Stemmer.Stemmer("french")


def tokenize(text: str) -> list[str]:
    """Stemmed content words of ``text``."""
    words = _WORD.findall(unicodedata.normalize("NFKC", text).lower())
    return _stemmer().stemWords([w for w in words if w not in STOPWORDS])


class LexicalIndex:
    """A bm25s index whose rows are the index's chunks, in the same order."""

    def __init__(self, model: bm25s.BM25, n_docs: int) -> None:
        self.model = model
        self.n_docs = n_docs

    @classmethod
    def build(cls, texts: list[str]) -> "LexicalIndex":
        model = bm25s.BM25()
        # Empty token lists would shift bm25s rows; a placeholder token keeps rows aligned.
        corpus = [tokenize(t) or ["\u2400"] for t in texts]
        model.index(corpus, show_progress=False)
        return cls(model, len(texts))

    def save(self, folder: Path) -> None:
        self.model.save(str(folder))

    @classmethod
    def load(cls, folder: Path, n_docs: int) -> "LexicalIndex":
        return cls(bm25s.BM25.load(str(folder), mmap=False), n_docs)

    def known_tokens(self, question: str) -> tuple[list[str], int]:
        """The question's tokens that occur in the corpus, and how many tokens it has in all."""
        tokens = tokenize(question)
        vocab = self.model.vocab_dict
        return [t for t in tokens if t in vocab], len(tokens)

    def coverage(self, question: str) -> float:
        """Share of the question's content words that occur in the corpus (0 when it has none)."""
        known, total = self.known_tokens(question)
        return len(known) / total if total else 0.0

    def scores(self, question: str) -> np.ndarray:
        """BM25 score of every chunk for ``question`` (zeros when no word is known)."""
        tokens, _ = self.known_tokens(question)
        if not tokens:
            return np.zeros(self.n_docs, dtype=np.float32)
        return np.asarray(self.model.get_scores(tokens), dtype=np.float32)
