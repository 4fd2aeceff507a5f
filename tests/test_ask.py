"""``Assistant.ask`` end to end on the tiny corpus, with the fake embedder: what reaches the user.

Retrieval, the choice of the cited sentence, its file and line numbers, hidden files, abstention
and odd input all run here in milliseconds, with the extractive answerer and a threshold set for
the fake embedder (``fake_assistant``); the default answerer is checked for well-formed answers.
Whether the real model finds the right facts in the seeds is tested in tests/test_assistant.py
(slow).
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from fake_embedder import FAKE_SETTINGS, FakeEmbedder
from rag.assistant import Assistant, retrieval_query
from rag.config import RETRIEVERS, SearchSettings
from rag.language import is_english, is_follow_up
from rag.records import Answer

#: question -> (file, line, words the cited line holds): one fact per line in conftest.TINY_FILES.
FACTS = {
    "Où se tiendra le prochain sommet de l'alliance atlantique ?":
        ("sommet.txt", 3, "La Haye"),
    "Combien d'agents la police néerlandaise déploiera-t-elle ?":
        ("sommet.txt", 14, "quatre mille agents"),
    "Quand arrivera la délégation canadienne ?":
        ("sommet.txt", 10, "la veille de l'ouverture"),
    "Qui aurait inventé la recette du camembert ?":
        ("fromages/camembert.md", 4, "Marie Harel"),
    "Combien de kilomètres parcourront les coureurs du Tour de France ?":
        ("tour.txt", 2, "3 400 kilomètres"),
}
KILOMETRES = "Combien de kilomètres parcourront les coureurs du Tour de France ?"


def assert_citations_verbatim(answer: Answer, corpus: Path) -> None:
    """Every citation's text lies, word for word, within the lines it names, and is marked."""
    assert answer.citations
    for c in answer.citations:
        lines = (corpus / c.source).read_text(encoding="utf-8").splitlines()
        assert 1 <= c.start_line <= c.end_line <= len(lines), c
        assert c.text in "\n".join(lines[c.start_line - 1:c.end_line]), c
        assert f"[{c.n}]" in answer.answer
    assert [c.n for c in answer.citations] == list(range(1, len(answer.citations) + 1))


@pytest.mark.parametrize("question", FACTS)
def test_the_answer_cites_the_sentence_that_holds_the_fact(fake_assistant, question):
    source, line, fact = FACTS[question]
    answer = fake_assistant.ask(question)
    assert not answer.abstained and not answer.reason
    assert fact in answer.answer
    first = answer.citations[0]
    assert (first.source, first.start_line, first.end_line) == (source, line, line)
    assert_citations_verbatim(answer, fake_assistant.corpus)
    assert answer.passages[0].source == source
    assert answer.support >= fake_assistant.search.abstain_threshold


@pytest.mark.parametrize("retriever", RETRIEVERS)
def test_every_retriever_ranks_the_source_first(fake_assistant, retriever):
    answer = fake_assistant.ask("Qui aurait inventé la recette du camembert ?", retriever=retriever)
    assert answer.passages[0].source == "fromages/camembert.md"
    scores = [p.score for p in answer.passages]
    assert scores == sorted(scores, reverse=True)
    assert len(answer.passages) <= fake_assistant.search.top_k
    assert len({p.chunk_id for p in answer.passages}) == len(answer.passages)
    assert "Marie Harel" in answer.answer


def test_passages_are_exact_spans_of_their_files(fake_assistant):
    for passage in fake_assistant.ask(KILOMETRES).passages:
        lines = (fake_assistant.corpus / passage.source).read_text(encoding="utf-8").splitlines()
        cited = "\n".join(lines[passage.start_line - 1:passage.end_line])
        assert passage.text in cited
        assert passage.text.splitlines()[0] in lines[passage.start_line - 1]
        assert passage.text.splitlines()[-1] in lines[passage.end_line - 1]


@pytest.mark.parametrize("hidden", [["tour.txt"], "tour.txt", {"tour.txt", "sommet.txt"}])
def test_hidden_files_are_left_out_and_the_assistant_then_abstains(fake_assistant, hidden):
    assert not fake_assistant.ask(KILOMETRES).abstained
    answer = fake_assistant.ask(KILOMETRES, exclude_sources=hidden)
    assert answer.passages
    assert "tour.txt" not in {p.source for p in answer.passages}
    assert answer.abstained and not answer.citations
    assert "kilomètres" in answer.reason  # no passage left holds a number of kilometres


@pytest.mark.parametrize("question, english", [
    ("Quelle est la capitale de l'Australie ?", False),
    ("Quel fromage est affiné dans le massif du Jura ?", False),
    ("Who painted the Mona Lisa?", True),
])
def test_off_topic_questions_abstain_in_the_question_language(fake_assistant, question, english):
    answer = fake_assistant.ask(question)
    assert answer.abstained and not answer.citations
    assert answer.answer.startswith("The documents do not" if english else "Les documents ne")
    assert answer.reason and answer.reason in answer.answer
    assert answer.support < answer.threshold
    assert answer.passages  # the closest passages are still shown


@pytest.mark.parametrize("blank", ["", "   ", "\n\t", "\x00\x01\x7f", "\u200b\u200d\ufeff"])
def test_blank_question_is_refused(fake_assistant, blank):
    with pytest.raises(ValueError, match="empty"):
        fake_assistant.ask(blank)


@pytest.mark.parametrize("not_text", [None, 42, b"Quel pays ?", ["Quel pays ?"]])
def test_a_question_that_is_not_text_is_refused_as_such(fake_assistant, not_text):
    with pytest.raises(ValueError, match="must be text"):
        fake_assistant.ask(not_text)


@pytest.mark.parametrize("odd", ["???", "😀😀", "et le la ?", "<script>alert(1)</script>",
                                 "a", "1 2 3", "'; DROP TABLE chunks; --"])
def test_odd_input_abstains_instead_of_failing(fake_assistant, odd):
    answer = fake_assistant.ask(odd)
    assert answer.abstained and not answer.citations
    assert answer.passages and answer.reason
    json.dumps(answer.to_json())


def test_very_long_question_is_cut_and_answered(fake_assistant, caplog):
    question = "Combien d'agents la police néerlandaise déploiera-t-elle ? " + "x " * 50_000
    answer = fake_assistant.ask(question)
    assert len(answer.question) == fake_assistant.search.max_question_chars
    assert "cut" in caplog.text
    assert answer.passages[0].source == "sommet.txt"


def test_follow_up_uses_the_previous_question_in_any_history_format(fake_assistant):
    first = "Quand arrivera la délégation canadienne ?"
    follow = "Et avec qui ?"
    assert fake_assistant.ask(follow).abstained  # alone, it asks nothing the corpus answers
    answers = [fake_assistant.ask(follow, history=history).answer for history in (
        [first],
        [{"role": "user", "content": first}, {"role": "assistant", "content": "La veille."}],
        [(first, "La veille.")],
    )]
    assert len(set(answers)) == 1 and "délégation canadienne" in answers[0]


def test_self_contained_question_ignores_history(fake_assistant):
    history = ["Quand arrivera la délégation canadienne ?"]
    question = "Qui aurait inventé la recette du camembert ?"
    assert retrieval_query(question, history) == question
    assert fake_assistant.ask(question, history=history).answer == \
        fake_assistant.ask(question).answer


def test_answers_never_merge_files(fake_assistant):
    for question in [*FACTS, "Que sait-on du sommet, du camembert et du Tour de France ?"]:
        answer = fake_assistant.ask(question)
        assert len({c.source for c in answer.citations}) <= 1
        assert len(answer.citations) <= fake_assistant.search.max_sentences


def test_the_default_answerer_cites_verbatim_or_says_why_it_abstains(fake_assistant):
    """The chat's own settings, whatever they are calibrated for: every answer either cites
    lines that hold its text or abstains with a reason, and always shows passages."""
    corpus = fake_assistant.corpus
    assistant = Assistant(corpus, fake_assistant.index_dir, FAKE_SETTINGS, SearchSettings(),
                          embedder=FakeEmbedder())
    for question in [*FACTS, "Quelle est la capitale de l'Australie ?", "Who painted it?"]:
        answer = assistant.ask(question)
        assert answer.passages and answer.question == question
        if answer.abstained:
            assert not answer.citations and answer.reason and answer.reason in answer.answer
        else:
            assert_citations_verbatim(answer, corpus)


def test_answer_json_shape(fake_assistant):
    data = fake_assistant.ask("Où se tiendra le prochain sommet de l'alliance atlantique ?").to_json()
    assert {"question", "answer", "abstained", "citations", "passages", "latency_ms", "support",
            "reason"} <= set(data)
    assert set(data["citations"][0]) == {"n", "source", "start_line", "end_line", "text", "score"}
    assert set(data["passages"][0]) == {"source", "start_line", "end_line", "text", "score"}
    assert data["abstained"] is False and data["latency_ms"] > 0
    assert json.loads(json.dumps(data, ensure_ascii=False)) == data


def test_status_describes_the_index(fake_assistant):
    status = fake_assistant.status()
    assert (status["files"], status["model"]) == (3, "fake-hash")
    assert status["chunks"] == len(fake_assistant.index.chunks) >= 4
    assert status["corpus"] == str(fake_assistant.corpus)


def test_concurrent_questions_each_get_their_own_answer(fake_assistant):
    """The chat serves several visitors from one assistant, in threads."""
    expected = {q: fake_assistant.ask(q).answer for q in FACTS}
    results: dict[int, tuple[str, str]] = {}

    def ask(i: int, question: str) -> None:
        results[i] = (question, fake_assistant.ask(question).answer)

    threads = [threading.Thread(target=ask, args=(i, q)) for i, q in enumerate(list(FACTS) * 4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == len(threads)
    assert all(answer == expected[question] for question, answer in results.values())


def test_language_and_follow_up_detection():
    assert is_english("Who is the NATO secretary general?")
    assert not is_english("Qui est le secrétaire général de l'OTAN ?")
    assert is_follow_up("Et en 2016 ?") and is_follow_up("Et où l'a-t-il rencontré ?")
    assert not is_follow_up("Qui est le secrétaire général de l'OTAN en 2025 ?")
