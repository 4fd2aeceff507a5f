"""What a question asks for and what a sentence must hold to answer it (pure functions)."""
from __future__ import annotations

import pytest

from rag.answer_types import expected_type, fold, has_expected_type, names_in, names_missing


@pytest.mark.parametrize("question, kind", [
    ("Combien de soldats ont été envoyés ?", "number"),
    ("Quelle part de leur PIB les membres consacrent-ils à la défense ?", "number"),
    ("Quel montant en 2003 ?", "money"),
    ("Quel est le nouveau budget de l'UNESCO ?", "money"),
    ("What is the total amount of military aid promised?", "money"),
    ("À quelle date Rutte s'est-il rendu à Washington ?", "date"),
    ("Quand le sommet aura-t-il lieu ?", "when"),
    ("Qui était secrétaire général de l'OTAN en 2017 ?", "name"),
    ("Qu'a répondu Pete Hegseth à Mark Rutte ?", "speech"),
    ("What did Trump say about NATO?", "speech"),
    ("Dans quelle ville Rutte a-t-il rencontré Trump ?", ""),
])
def test_expected_type(question, kind):
    assert expected_type(question) == kind


@pytest.mark.parametrize("kind, sentence, holds", [
    ("money", "Le budget atteint 14,2 milliards d'euros.", True),
    ("money", "Il a reçu 507 millions de dollars américains.", True),
    ("money", "Environ 22 % du budget.", True),
    ("money", "Le sommet de l'OTAN aura lieu d'ici deux mois.", False),
    ("speech", "« Nous devons rassembler la famille », a dit ce diplomate.", True),
    ("speech", "Rutte a déclaré que l'alliance restait unie.", True),
    ("speech", "Rutte rencontrera le secrétaire à la Défense Pete Hegseth.", False),
    ("number", "Rutte a parlé d'un soutien global à l'Ukraine.", False),  # "un" is no amount
    ("number", "Rutte a parlé de deux guerres.", True),
])
def test_sentence_holds_the_asked_kind(kind, sentence, holds):
    assert has_expected_type(kind, sentence, "Combien ?") is holds


def test_a_count_may_stand_before_the_word_after_the_counted_noun():
    question = "Combien de pays membres compte l'OTAN ?"
    assert has_expected_type("number", "l'Alliance militaire de 32 membres", question)
    assert has_expected_type("number", "Les 32 pays de l'Alliance", question)
    assert not has_expected_type("number", "Les pays membres ont signé en 2014.", question)
    sent = "Combien de soldats nord-coréens ont été envoyés ?"
    assert has_expected_type("number", "environ 10 000 soldats nord-coréens", sent)
    assert has_expected_type("number", "10 000 Nord-Coréens ont été envoyés", sent)
    assert not has_expected_type("number", "Des soldats nord-coréens ont été envoyés", sent)


def test_a_name_the_question_already_gives_is_no_answer_to_who():
    question = "Qui a rencontré Rutte à Palm Beach ?"
    assert not has_expected_type("name", "Ce jour-là, Mark Rutte était à Palm Beach.", question)
    assert has_expected_type("name", "Ce jour-là, Donald Trump a reçu Mark Rutte.", question)


def test_names_are_runs_of_capitalised_words_after_the_first_word():
    text = "Le secrétaire général de l'OTAN, M. Mark Rutte, était à La Haye avec l'Europe."
    assert names_in(text) == [("OTAN",), ("Mark", "Rutte"), ("La", "Haye"), ("Europe",)]
    assert names_in("") == []


def test_names_missing_reads_whole_names_without_accents():
    question = "Quand neige-t-il en Ecosse, selon Mark Rutte, à Palm Beach ?"
    context = "En Écosse il neige, a dit M. Rutte."
    assert names_missing(question, context) == ["Palm Beach"]
    assert names_missing(question, context + " Palm Beach") == []
    assert fold("Écosse ÉTATS") == "ecosse etats"
