"""The three seams: the vector store, the reranker and the answerer, each swapped for another
implementation written here, and the chat rendering an answer's own text with its markers."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from fake_embedder import FAKE_SEARCH, FAKE_SETTINGS, FakeEmbedder
from rag.answerer import AnswerContext, Draft, cite
from rag.assistant import Assistant
from rag.records import Passage
from rag.rerank import rerank
from rag.vector_store import FaissVectorStore
from ui.render import answer_html, with_urls


def unit(rows: list[list[float]]) -> np.ndarray:
    vectors = np.asarray(rows, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


# --------------------------------------------------------------------------- vector store


def test_vector_store_is_keyed_by_id_through_add_remove_save_and_load(tmp_path):
    store = FaissVectorStore(3)
    store.add(["a", "b", "c"], unit([[1, 0, 0], [0, 1, 0], [0, 0, 1]]))
    assert [i for i, _ in store.search(unit([[0.9, 0.1, 0]])[0], 2)] == ["a", "b"]
    store.remove(["a", "unknown"])
    assert store.ids == ["b", "c"] and len(store) == 2
    assert store.search(unit([[1, 0, 0.1]])[0], 5)[0][0] == "c"
    np.testing.assert_allclose(store.get(["c", "b"]), unit([[0, 0, 1], [0, 1, 0]]))
    store.save(tmp_path, "v")
    loaded = FaissVectorStore.load(tmp_path, "v")
    assert loaded.ids == ["b", "c"]
    np.testing.assert_array_equal(loaded.get(["b"]), store.get(["b"]))


def test_vector_store_refuses_repeated_ids_and_reports_unknown_ones():
    store = FaissVectorStore(2)
    store.add(["x"], unit([[1, 0]]))
    with pytest.raises(ValueError, match="already stored"):
        store.add(["x"], unit([[0, 1]]))
    with pytest.raises(ValueError, match="2 ids for 1 vectors"):
        store.add(["y", "z"], unit([[0, 1]]))
    with pytest.raises(KeyError, match="'nope'"):
        store.get(["nope"])
    assert FaissVectorStore(2).search(unit([[1, 0]])[0], 3) == []
    assert store.get([]).shape == (0, 2)


# --------------------------------------------------------------------------- reranker


class LongestFirst:
    """A reranker that prefers long passages: easy to predict, unlike retrieval's order."""

    def scores(self, question: str, passages: Sequence[Passage]) -> list[float]:
        return [float(len(p.text)) for p in passages]


def test_reranker_reorders_the_top_passages_and_keeps_the_rest(tiny_template):
    corpus, index = tiny_template
    plain = Assistant(corpus, index, index_settings=FAKE_SETTINGS, search=FAKE_SEARCH,
                      embedder=FakeEmbedder())
    reranked = Assistant(corpus, index, index_settings=FAKE_SETTINGS, search=FAKE_SEARCH,
                         embedder=FakeEmbedder(), reranker=LongestFirst())
    question = "Où se tiendra le prochain sommet de l'alliance atlantique ?"
    before = plain.ask(question).passages
    after = reranked.ask(question).passages
    assert {p.chunk_id for p in after} == {p.chunk_id for p in before}
    assert [len(p.text) for p in after] == sorted((len(p.text) for p in after), reverse=True)
    assert after[0].score == len(after[0].text)


def test_rerank_depth_limits_what_is_reordered():
    passages = [Passage(f"c{i}", "f.txt", i, i, "x" * i, 1.0 / (i + 1)) for i in range(1, 6)]
    out = rerank(LongestFirst(), "q", passages, depth=3)
    assert [p.chunk_id for p in out] == ["c3", "c2", "c1", "c4", "c5"]
    with pytest.raises(ValueError, match="2 scores for 3 passages"):
        rerank(type("Short", (), {"scores": lambda self, q, p: [1.0, 2.0]})(), "q", passages, 3)


# --------------------------------------------------------------------------- answerer


class FirstSentenceAnswerer:
    """A different way of answering: paraphrase-free, cites the first sentence of the best
    passage and says so in its own words (the text is not just the quoted sentence)."""

    def answer(self, question: str, passages: list[Passage], context: AnswerContext) -> Draft:
        sentence = context.index.sentences_of([passages[0].chunk_id])[0]
        citation = cite(context.index, sentence, 1, 0.5)
        return Draft(f"D'après le premier passage [1] : « {citation.text} »", [citation], False,
                     support=0.5, threshold=0.25)


def test_another_answerer_plugs_in_and_its_own_text_reaches_the_user(tiny_template):
    corpus, index = tiny_template
    assistant = Assistant(corpus, index, index_settings=FAKE_SETTINGS, embedder=FakeEmbedder(),
                          answerer=FirstSentenceAnswerer())
    answer = assistant.ask("Qui aurait inventé la recette du camembert ?")
    assert answer.answer.startswith("D'après le premier passage [1]")
    assert (answer.support, answer.threshold) == (0.5, 0.25)
    assert answer.to_json()["threshold"] == 0.25
    html = answer_html(with_urls(answer.to_json()))
    assert html.count('class="cite"') == 1 and "D&#x27;après le premier passage" in html


def test_markers_inside_quoted_text_stay_text():
    citation = {"n": 1, "source": "a.txt", "start_line": 2, "end_line": 2,
                "text": "Voir la note [2] du rapport.", "score": 0.9}
    answer = with_urls({"answer": "Voir la note [2] du rapport. [1]", "abstained": False,
                        "citations": [citation], "passages": []})
    html = answer_html(answer)
    assert html.count('class="cite"') == 1 and "note [2] du rapport" in html
    assert "<script>" not in answer_html({**answer, "answer": "<script>x</script> [1]"})
