"""An index built without sentence vectors (``IndexSettings.sentence_vectors = False``): it
keeps every sentence record, stores no sentence vector, embeds the sentences a question needs
with the same model, and answers as the full index does where that matters (fake embedder)."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from fake_embedder import FAKE_SEARCH, FAKE_SETTINGS, FakeEmbedder, build_fake_index

from rag.assistant import Assistant
from rag.index import current_build, load_index, update_index
from rag.sentence_vectors import OnDemandSentenceVectors, lend_model

LEAN = replace(FAKE_SETTINGS, sentence_vectors=False)


class CountingEmbedder(FakeEmbedder):
    """The fake embedder, counting the passages it embeds."""

    def __init__(self) -> None:
        super().__init__()
        self.passages = 0

    def encode_passages(self, texts, show_progress=False, batch_size=32):
        self.passages += len(texts)
        return super().encode_passages(texts, show_progress, batch_size)


def test_lean_index_embeds_no_sentence_and_keeps_records(tiny_corpus, tmp_path):
    counting = CountingEmbedder()
    report = update_index(tiny_corpus, tmp_path / "lean", LEAN, lambda: counting)
    build_fake_index(tiny_corpus, tmp_path / "full")
    full = load_index(tmp_path / "full")
    lean = load_index(tmp_path / "lean")
    assert counting.passages == report.chunks  # the chunks only (distinct texts)
    assert [s.id for s in lean.sentences] == [s.id for s in full.sentences]
    assert isinstance(lean.sentence_vectors, OnDemandSentenceVectors)
    manifest = json.loads((current_build(tmp_path / "lean") / "manifest.json").read_text())
    assert manifest["settings"]["sentence_vectors"] is False
    assert manifest["vector_stores"]["sentences"]["vectors"] == 0

    # Sentence vectors on demand are the ones the full index stored.
    lend_model(lean, FakeEmbedder)
    ids = [s.id for s in full.sentences[:7]]
    assert np.allclose(lean.sentence_vectors.get(ids), full.sentence_vectors.get(ids), atol=1e-6)


def test_switching_the_setting_rebuilds(tiny_corpus, tiny_index):
    report = update_index(tiny_corpus, tiny_index, LEAN, FakeEmbedder)
    assert report.full_rebuild and "sentence_vectors" in report.reason
    assert update_index(tiny_corpus, tiny_index, LEAN, FakeEmbedder).embedded == 0


def test_an_index_written_before_the_setting_is_not_rebuilt(tiny_corpus, tiny_index):
    """Indexes built before the setting existed had sentence vectors: still up to date."""
    folder = current_build(tiny_index)
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    del manifest["settings"]["sentence_vectors"]
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    report = update_index(tiny_corpus, tiny_index, FAKE_SETTINGS, FakeEmbedder)
    assert report.embedded == 0 and not report.full_rebuild


@pytest.mark.parametrize("question", [
    "Qui aurait inventé la recette du camembert ?",
    "Combien d'agents la police déploiera-t-elle ?",
    "D'où partira le Tour de France ?",
])
def test_lean_index_answers_like_the_full_one(tiny_corpus, tmp_path, question):
    build_fake_index(tiny_corpus, tmp_path / "full")
    build_fake_index(tiny_corpus, tmp_path / "lean", LEAN)
    full = Assistant(tiny_corpus, tmp_path / "full", FAKE_SETTINGS, FAKE_SEARCH,
                     embedder=FakeEmbedder())
    counting = CountingEmbedder()
    lean = Assistant(tiny_corpus, tmp_path / "lean", LEAN, FAKE_SEARCH, embedder=counting)
    a, b = full.ask(question), lean.ask(question)
    assert not a.abstained and b.answer == a.answer
    assert [c.source for c in b.citations] == [c.source for c in a.citations]
    assert counting.passages > 0  # its sentences were embedded for the question
