"""A small deterministic embedder for the fast tests: hashed words and character trigrams.

It has the duck-typed interface of ``rag.embedder.Embedder`` (``name``, ``weights_hash``, ``dim``,
``max_tokens``, ``encode_queries``, ``encode_passages``), needs no model file and embeds thousands
of sentences a second, so everything downstream of the embedder (index builds, incremental
updates, retrieval, citations, abstention, the UI, the evaluation) is tested in seconds. The real
model keeps its own tests, marked ``slow``.

It is meaningful, not random: a text becomes a bag of lower-cased, accent-folded word tokens
(weight 1; common French and English function words and question words left out) and of their
character trigrams (weight 0.5, so "sommet" still meets "sommets"), each hashed into one of
``dim`` buckets with a hashed sign, then L2-normalised. Texts that share words get a clearly higher
cosine than texts that do not, and unrelated texts sit near 0. The hash is BLAKE2b, not Python's
salted ``hash``, so vectors are identical across processes and runs.

Its similarities run lower than the real model's, so tests that expect an answer use
:data:`FAKE_SEARCH`, whose abstention threshold is set for this embedder.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from rag.config import IndexSettings, SearchSettings

#: The model name recorded in the settings of every index the fast tests build. It differs from
#: the real model's, so a real-model run never silently reuses a fake index: it rebuilds and says so.
FAKE_MODEL = "fake-hash"
#: Every other setting is the default one, as ``rag index --model fake-hash`` would record it: the
#: command line can then work on an index the fast tests built, as long as it embeds nothing.
FAKE_SETTINGS = IndexSettings(model=FAKE_MODEL)
#: The extractive answerer, whose rule is plain: a sentence of the asked kind scoring at least
#: ``abstain_threshold``. The default threshold (0.84) is calibrated for e5's similarities; with
#: this embedder the sentence that answers one of the tiny corpus's questions scores 0.5 to 0.8,
#: the best sentence for an off-topic question below 0.2.
FAKE_SEARCH = SearchSettings(answerer="extractive", abstain_threshold=0.4)

#: Words every text uses, which would make every text look alike (folded spelling, no accents).
STOP_WORDS = frozenset("""
a au aux avec ce ces cet cette d dans de des du elle en est et il ils l la le les leur leurs
lui m mais me n ne nous on ou par pas pour qu que qui s sa se ses son sur t ta te un une vous
y quel quelle quels quelles combien quand comment pourquoi
the of and to in is was what who how which
""".split())

_WORD = re.compile(r"\w+")
_WORD_WEIGHT = 1.0
_TRIGRAM_WEIGHT = 0.5


def fold(text: str) -> str:
    """Lower case without accents: "Écosse" -> "ecosse"."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def words(text: str) -> list[str]:
    """The folded content words of ``text``, in order."""
    return [w for w in map(_fold_word, _WORD.findall(unicodedata.normalize("NFC", text).lower()))
            if w and w not in STOP_WORDS]


@lru_cache(maxsize=100_000)
def _fold_word(word: str) -> str:
    return fold(word)


def features(word: str) -> list[tuple[str, float]]:
    """The weighted features of one content word: the word itself and its character trigrams."""
    padded = f"<{word}>"
    return [("w:" + word, _WORD_WEIGHT)] + [("t:" + padded[i:i + 3], _TRIGRAM_WEIGHT)
                                            for i in range(len(padded) - 2)]


def _bucket(feature: str, dim: int) -> tuple[int, float]:
    """Where a feature lands and with which sign (the same in every process)."""
    value = int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest(),
                           "little")
    return value % dim, (1.0 if value >> 63 else -1.0)


@lru_cache(maxsize=100_000)
def _word_vector(word: str, dim: int) -> np.ndarray:
    """The (unnormalised) contribution of one word; cached, as corpora repeat their words."""
    vector = np.zeros(dim, dtype=np.float32)
    for feature, weight in features(word):
        bucket, sign = _bucket(feature, dim)
        vector[bucket] += sign * weight
    vector.flags.writeable = False
    return vector


class FakeEmbedder:
    """Hashed bag of words and trigrams; the interface of ``rag.embedder.Embedder``."""

    def __init__(self, dim: int = 256, name: str = FAKE_MODEL, max_tokens: int = 512) -> None:
        self.dim = dim
        self.name = name
        self.max_tokens = max_tokens
        # Stands for the weights: it changes exactly when the vectors would.
        self.weights_hash = hashlib.sha256(
            f"{name}|dim={dim}|w={_WORD_WEIGHT}|t={_TRIGRAM_WEIGHT}|v1".encode()).hexdigest()
        #: Texts embedded so far, so a test can tell whether (and how much) anything was embedded.
        self.texts_embedded = 0

    def embed(self, text: str) -> np.ndarray:
        """The unit vector of one text; a text without a content word gets one fixed vector."""
        vector = np.zeros(self.dim, dtype=np.float32)
        for word in words(text) or ["\u2205"]:
            vector += _word_vector(word, self.dim)
        return vector / np.linalg.norm(vector)

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        self.texts_embedded += len(texts)
        if not len(texts):
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self.embed(t) for t in texts]).astype(np.float32, copy=False)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts)

    def encode_passages(self, texts: list[str], show_progress: bool = False,
                        batch_size: int = 32) -> np.ndarray:
        return self._encode(texts)


def build_fake_index(corpus: Path | str, index_dir: Path | str,
                     settings: IndexSettings = FAKE_SETTINGS, rebuild: bool = False):
    """``rag.index.update_index`` with a fresh fake embedder; returns its ``BuildReport``.

    A module-level function, not a lambda, so that a ``multiprocessing`` child can run it too.
    """
    from rag.index import update_index
    return update_index(Path(corpus), Path(index_dir), settings, lambda: FakeEmbedder(),
                        rebuild=rebuild)
