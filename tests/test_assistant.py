"""Answers over the real seeds index: facts, citations, abstention, follow-ups, retrievers, CLI.

Every test here asks the real model (the session's ``assistant``), so the module is ``slow``; the
same code paths run fast with the fake embedder in tests/test_ask.py and tests/test_cli.py. What
only this module shows is that the real model finds the right facts in the seeds.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.assistant import retrieval_query
from rag.config import RETRIEVERS

pytestmark = pytest.mark.slow


def assert_citations_verbatim(answer, corpus: Path) -> None:
    """Every citation's text lies, word for word, within the lines it names."""
    for c in answer.citations:
        lines = (corpus / c.source).read_text(encoding="utf-8").splitlines()
        assert 1 <= c.start_line <= c.end_line <= len(lines)
        assert c.text in "\n".join(lines[c.start_line - 1:c.end_line])
        assert f"[{c.n}]" in answer.answer


def test_french_factual_question(assistant, seeds_copy):
    answer = assistant.ask("Quelle part de leur PIB Donald Trump exige-t-il que les membres de l'alliance consacrent à la défense ?")
    assert not answer.abstained
    assert "5 %" in answer.answer
    cited = next(c for c in answer.citations if "5 %" in c.text)
    assert (cited.source, cited.start_line, cited.end_line) == ("000_024703823b32d0c5.txt", 5, 5)
    assert_citations_verbatim(answer, seeds_copy)


def test_english_question_is_answered_from_french_text(assistant, seeds_copy):
    answer = assistant.ask("How many North Korean soldiers does the Pentagon estimate were sent to the Kursk region?")
    assert not answer.abstained
    assert "10 000" in answer.answer
    assert {c.source for c in answer.citations} == {"004_8d320c1e2e7514cc.txt"}
    assert_citations_verbatim(answer, seeds_copy)


@pytest.mark.parametrize("question, english", [
    ("Quelle est la recette de la ratatouille ?", False),
    ("Who painted the Mona Lisa?", True),
    ("Quels sont les rabais de la semaine ?", False),
])
def test_off_topic_questions_abstain_in_the_question_language(assistant, question, english):
    answer = assistant.ask(question)
    assert answer.abstained and not answer.citations
    assert answer.answer.startswith("The documents do not" if english else "Les documents ne")
    assert answer.passages  # the closest passages are still shown


def test_hidden_files_are_left_out_and_the_assistant_then_abstains(assistant):
    question = ("Combien de soldats nord-coréens le Pentagone estime-t-il envoyés dans la région "
                "de Koursk ?")
    assert "10 000" in assistant.ask(question).answer
    for excluded in (["004_8d320c1e2e7514cc.txt"], "004_8d320c1e2e7514cc.txt"):
        hidden = assistant.ask(question, exclude_sources=excluded)
        assert hidden.passages
        assert "004_8d320c1e2e7514cc.txt" not in {p.source for p in hidden.passages}
        assert hidden.abstained and not hidden.citations


@pytest.fixture(scope="module")
def extractive(assistant):
    """The same index and model, read by the extractive answerer (its rules and reasons)."""
    from rag.assistant import Assistant
    from rag.extractive import ExtractiveAnswerer
    return Assistant(assistant.corpus, assistant.index_dir, update=False,
                     answerer=ExtractiveAnswerer())


@pytest.mark.parametrize("question", [
    "What did Trump say about NATO members who don't pay?",
    "Pourquoi Trump critique-t-il l'OTAN ?",
    "Qui est le secrétaire général de l'OTAN ?",
])
def test_every_answerer_leads_with_its_best_sentence(assistant, extractive, question):
    """The sentence read first is the best-scored one, whichever answerer quotes it (the English
    question over French text goes to the extractive answerer even by default)."""
    quoted = 0
    for reader in (assistant, extractive):
        answer = reader.ask(question)
        scores = [c.score for c in answer.citations]
        assert scores == sorted(scores, reverse=True)
        assert not answer.citations or answer.answer.startswith(answer.citations[0].text[:40])
        quoted += len(answer.citations)
    assert quoted >= 2


@pytest.mark.parametrize("question, reason", [
    # La Haye is named in the article, but not near the sentence that gives a date
    ("Quel jour exact de juin s'ouvrira le sommet de l'OTAN à La Haye ?",
     "Le passage le plus proche ne mentionne pas « La Haye »."),
    # the articles never count the missiles
    ("Combien de missiles la Russie a-t-elle livrés à la Corée du Nord ?",
     "Aucun des passages les plus proches ne contient un nombre de missiles."),
    # asks for a sum: "d'ici deux mois" holds a number but no amount
    ("What is the total amount of military aid Rutte promised Ukraine during his visit to Kyiv?",
     "None of the closest passages holds a sum of money."),
    ("Quelle est la recette de la ratatouille ?",
     "Le passage le plus proche est trop éloigné de la question (score 0,"),
])
def test_extractive_answerer_abstains_and_says_why(extractive, question, reason):
    answer = extractive.ask(question)
    assert answer.abstained and not answer.citations
    assert answer.reason.startswith(reason)
    assert reason in answer.answer and answer.to_json()["reason"] == answer.reason


@pytest.mark.parametrize("question, reason", [
    # the articles never count the missiles: no sentence holds a number of missiles (type rule)
    ("Combien de missiles la Russie a-t-elle livrés à la Corée du Nord ?",
     "Aucun des passages les plus proches ne contient un nombre de missiles."),
    ("Quelle est la recette de la ratatouille ?",
     "Aucune phrase des passages les plus proches n'y répond (confiance 0,"),
    ("What is the capital of Australia?", "The closest passage is too far from the question"),
])
def test_reader_abstains_and_says_why(assistant, question, reason):
    answer = assistant.ask(question)
    assert answer.abstained and not answer.citations
    assert answer.reason.startswith(reason), answer.reason
    assert reason in answer.answer and answer.to_json()["reason"] == answer.reason


def test_a_question_about_words_someone_said_needs_reported_speech(assistant):
    # the best sentence only announces the meeting: nothing Hegseth said is reported
    assert assistant.ask("Qu'a répondu Pete Hegseth à Mark Rutte lors de leur entretien à "
                         "Washington ?").abstained
    said = assistant.ask("Qu'a déclaré Alexander De Croo sur la sécurité ?")
    assert not said.abstained and not said.reason
    assert "sous-traiter" in said.answer


def test_follow_up_uses_the_previous_turn(assistant):
    first = "Dans quelle ville Mark Rutte a-t-il rencontré le président Volodymyr Zelensky ?"
    assert "Kiev" in assistant.ask(first).answer
    history = [{"role": "user", "content": first}, {"role": "assistant", "content": "Kiev"}]
    follow = assistant.ask("Et où l'a-t-il rencontré ?", history=history)
    assert not follow.abstained and "Kiev" in follow.answer
    alone = assistant.ask("Et où l'a-t-il rencontré ?")
    assert "Kiev" not in alone.answer


def test_self_contained_question_ignores_history(assistant):
    history = ["Dans quelle ville Mark Rutte a-t-il rencontré le président Volodymyr Zelensky ?"]
    question = "Combien de membres de l'OTAN atteignent l'objectif de 2 % du PIB ?"
    assert retrieval_query(question, history) == question
    assert "23" in assistant.ask(question, history=history).answer


@pytest.mark.parametrize("retriever", RETRIEVERS)
def test_every_retriever_finds_the_source(assistant, retriever):
    answer = assistant.ask("Qui est le ministre des Affaires étrangères du Costa Rica ?", retriever=retriever)
    assert answer.passages and answer.passages[0].source == "000_024703823b32d0c5.txt"
    assert [p.score for p in answer.passages] == sorted((p.score for p in answer.passages), reverse=True)
    assert "Arnoldo Andre" in answer.answer


def test_answers_never_merge_articles(assistant):
    for question in ("Qui est le secrétaire général de l'OTAN ?", "Que pense Rutte de Trump ?",
                     "Quelles dépenses de défense sont demandées aux alliés ?"):
        answer = assistant.ask(question)
        assert len({c.source for c in answer.citations}) <= 1
        assert len(answer.citations) <= 3


def test_blank_question_is_refused(assistant):
    for blank in ("", "   ", "\n\t"):
        with pytest.raises(ValueError, match="empty"):  # a QuestionError
            assistant.ask(blank)


def test_very_long_question_is_cut_and_answered(assistant, caplog):
    question = "Combien de soldats nord-coréens ont été envoyés dans la région de Koursk ? " + "x " * 50_000
    answer = assistant.ask(question)
    assert len(answer.question) <= assistant.search.max_question_chars
    assert "cut" in caplog.text
    assert answer.passages


def test_ask_cli_json_shape(seeds_copy, assistant, rag_main):
    result = rag_main("ask", "Où Mark Rutte a-t-il rencontré Donald Trump ?", "--corpus",
                      seeds_copy, "--index", assistant.index_dir, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert {"question", "answer", "abstained", "citations", "passages", "latency_ms"} <= set(data)
    assert "Palm Beach" in data["answer"] and data["abstained"] is False
    assert set(data["citations"][0]) == {"n", "source", "start_line", "end_line", "text", "score"}
    assert data["support"] >= data["threshold"] > 0
    assert set(data["passages"][0]) == {"source", "start_line", "end_line", "text", "score"}


def test_ask_cli_human_output_and_bad_input(seeds_copy, assistant, rag_main):
    args = ("--corpus", seeds_copy, "--index", assistant.index_dir)
    human = rag_main("ask", "Où Mark Rutte a-t-il rencontré Donald Trump ?", *args)
    assert human.returncode == 0 and "[1] 001_f8703a92264a5ef2.txt:2-2" in human.stdout
    blank = rag_main("ask", "   ", *args)
    assert blank.returncode == 2 and blank.stderr.startswith("rag: error:")
    assert "Traceback" not in blank.stderr and len(blank.stderr.strip().splitlines()) == 1
    abstained = rag_main("ask", "Quelle est la recette de la ratatouille ?", *args)
    assert abstained.returncode == 0 and abstained.stdout.count("\n- ") == 3  # closest passages
