"""The fake embedder the fast tests stand on: it must keep the contract of the real one, so that
what passes with it would pass with the model, and its similarities must mean something, so that
retrieval tests built on it can fail."""
from __future__ import annotations

import inspect

import numpy as np
import pytest

from fake_embedder import FAKE_MODEL, FakeEmbedder
from rag.embedder import Embedder

SENTENCES = ["Le prochain sommet de l'alliance atlantique se tiendra à La Haye au mois de juin.",
             "Marie Harel aurait inventé la recette du camembert en 1791.",
             "Les coureurs parcourront 3 400 kilomètres en vingt et une étapes."]


def test_it_has_the_interface_of_the_real_embedder():
    fake = FakeEmbedder()
    for method in ("encode_queries", "encode_passages"):
        real = list(inspect.signature(getattr(Embedder, method)).parameters)
        assert list(inspect.signature(getattr(FakeEmbedder, method)).parameters) == real, method
    for attribute in ("name", "weights_hash", "dim", "max_tokens"):
        assert hasattr(Embedder, attribute) or attribute in Embedder.__dataclass_fields__
        assert getattr(fake, attribute)
    assert fake.name == FAKE_MODEL and len(fake.weights_hash) == 64


def test_encode_contract():
    fake = FakeEmbedder()
    for vectors in (fake.encode_queries(SENTENCES),
                    fake.encode_passages(SENTENCES, show_progress=False, batch_size=2)):
        assert vectors.dtype == np.float32 and vectors.shape == (3, fake.dim)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    for empty in (fake.encode_queries([]), fake.encode_passages([])):
        assert empty.shape == (0, fake.dim) and empty.dtype == np.float32
    for blank in ("", "   ", "?!", "et le la"):  # no content word: still a unit vector
        assert np.linalg.norm(fake.encode_queries([blank])[0]) == pytest.approx(1.0)


def test_it_is_deterministic_and_weights_follow_the_vectors():
    a, b = FakeEmbedder(), FakeEmbedder()
    np.testing.assert_array_equal(a.encode_passages(SENTENCES), b.encode_passages(SENTENCES))
    assert a.weights_hash == b.weights_hash
    assert FakeEmbedder(dim=128).weights_hash != a.weights_hash


@pytest.mark.parametrize("question, best", [
    ("Où se tiendra le prochain sommet ?", 0),
    ("Qui a inventé le camembert ?", 1),
    ("Combien de kilomètres parcourent les coureurs ?", 2),
    ("OU SE TIENDRA LE SOMMET DE L'ALLIANCE ?", 0),  # case and accents do not matter
])
def test_a_question_is_closest_to_the_sentence_sharing_its_words(question, best):
    fake = FakeEmbedder()
    cosines = fake.encode_passages(SENTENCES) @ fake.encode_queries([question])[0]
    assert int(np.argmax(cosines)) == best
    others = np.delete(cosines, best)
    assert cosines[best] > 0.3 and cosines[best] - others.max() > 0.2, cosines


def test_unrelated_texts_are_near_orthogonal_and_close_words_close():
    fake = FakeEmbedder()
    recipe, summit, summits = fake.encode_passages(
        ["La recette de la ratatouille demande des courgettes.", "sommet", "sommets"])
    assert abs(float(recipe @ summit)) < 0.2
    assert float(summit @ summits) > 0.3  # shared trigrams
