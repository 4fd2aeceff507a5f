"""The reader: its shipped weights, its judgement, and `rag train-reader` end to end.

The weights and their card are checked without the model (fast). What the judge decides is
checked with the real model on the seeds (slow), like the issues that motivated it: a near-miss
question must score the sentence lower than the question it answers, and an open "pourquoi"
question must quote the sentence that answers it.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error
from rag.errors import ReaderError
from rag.reader.features import SCALAR_NAMES
from rag.reader.model import DEFAULT_WEIGHTS, TENSORS, card_path, load_reader, sha256_of

SENT = "Combien de soldats nord-coréens ont été envoyés dans la région russe de Koursk ?"
KILLED = "Combien de soldats nord-coréens ont été tués dans la région russe de Koursk ?"


# --------------------------------------------------------------------------- shipped weights


def test_shipped_weights_are_small_fp16_safetensors_with_a_matching_card():
    card = json.loads(card_path(DEFAULT_WEIGHTS).read_text(encoding="utf-8"))
    assert DEFAULT_WEIGHTS.stat().st_size == card["bytes"] <= 25 * 1024 * 1024
    assert sha256_of(DEFAULT_WEIGHTS) == card["sha256"]
    from safetensors import safe_open
    with safe_open(str(DEFAULT_WEIGHTS), framework="numpy") as f:
        assert sorted(f.keys()) == sorted(TENSORS)
        assert all(f.get_tensor(k).dtype == np.float16 for k in f.keys())
    # What a model we train must say about itself.
    assert card["seed"] and card["data"]["piaf"] and card["data"]["squad2"]
    assert card["scalar_features"] == list(SCALAR_NAMES)
    shipped = card["validation"][next(iter(card["validation"]))]
    assert 0 < shipped["piaf"]["top1"] <= shipped["piaf"]["candidate_recall"] <= 1
    assert 0 < card["threshold"] < 1


def test_altered_or_missing_weights_are_refused_with_one_line(tmp_path):
    weights = tmp_path / "reader.safetensors"
    shutil.copy(DEFAULT_WEIGHTS, weights)
    shutil.copy(card_path(DEFAULT_WEIGHTS), card_path(weights))
    assert load_reader(weights).threshold > 0
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ReaderError, match="sha256"):
        load_reader(weights)
    weights.unlink()
    with pytest.raises(ReaderError, match="missing"):
        load_reader(weights)
    assert len(str(ReaderError("x")).splitlines()) == 1


def test_probabilities_are_probabilities():
    model = load_reader()
    rng = np.random.default_rng(0)
    features = rng.normal(0, 50, (7, len(SCALAR_NAMES))).astype(np.float32)  # extreme inputs
    p = model.probabilities(features)
    assert p.shape == (7,) and np.all((p >= 0) & (p <= 1)) and np.isfinite(p).all()


# --------------------------------------------------------------------------- the judge (slow)


def probability_of(assistant, question: str, passages, words: str) -> float:
    """The reader's probability that the sentence holding ``words`` answers ``question``, judged
    among the sentences of ``passages``."""
    from rag.reader.answerer import ReaderAnswerer
    reader = assistant.answerer
    assert isinstance(reader, ReaderAnswerer)
    vector = assistant.embedder.encode_queries([question])[0]
    context, _ = assistant.retrieve(question, query_vector=vector)
    sentences, probabilities, _ = reader.judge(question, passages, context)
    texts = [context.index.sentence_text(s) for s in sentences]
    return next(float(p) for t, p in zip(texts, probabilities) if words in t)


@pytest.mark.slow
def test_judge_scores_the_answering_sentence_above_a_near_miss(assistant):
    """'How many were sent' is answered by the sentence; 'how many were killed' is not."""
    _, passages = assistant.retrieve(SENT)
    sent = probability_of(assistant, SENT, passages, "10 000 soldats")
    killed = probability_of(assistant, KILLED, passages, "10 000 soldats")
    assert sent > killed
    assert sent >= assistant.answerer.threshold
    assert "10 000" in assistant.ask(SENT).citations[0].text


@pytest.mark.slow
def test_reader_answers_lead_with_their_best_sentence(assistant):
    answer = assistant.ask("Quel pourcentage du PIB Trump exige-t-il ?")
    assert not answer.abstained
    scores = [c.score for c in answer.citations]
    assert scores == sorted(scores, reverse=True) and scores[0] == answer.support
    assert "5 %" in answer.citations[0].text
    assert answer.threshold == assistant.answerer.threshold


@pytest.mark.slow
def test_reader_abstains_with_a_reason_in_the_question_language(assistant):
    french = assistant.ask("Quelle est la recette de la tarte tatin ?")
    english = assistant.ask("What is the recipe of the tarte tatin?")
    assert french.abstained and "Les documents ne répondent pas" in french.answer
    assert english.abstained and "The documents do not answer" in english.answer
    assert french.support < french.threshold and french.reason


# --------------------------------------------------------------------------- training (slow)

#: A tiny benchmark in PIAF's and SQuAD 2.0's layout: articles of one fact per paragraph.
ARTICLES = {
    "Lille": ["Lille est une ville du nord de la France située près de la frontière belge.",
              "La braderie de Lille a lieu chaque année le premier week-end de septembre."],
    "Camembert": ["Le camembert est un fromage normand au lait cru.",
                  "Marie Harel aurait inventé la recette en 1791 dans le village de Camembert."],
    "Tour": ["Le Tour de France est une course cycliste créée en 1903 par Henri Desgrange.",
             "Les coureurs parcourent environ 3 400 kilomètres en trois semaines."],
    # Caen falls in the validation split (rag.reader.dataset.split_of), the others in train.
    "Caen": ["Le château de Caen a été construit vers 1060 par Guillaume le Conquérant.",
             "Le mémorial de Caen est consacré à l'histoire du vingtième siècle."],
    "Alpes": ["Le mont Blanc culmine à 4 805 mètres d'altitude dans les Alpes.",
              "La première ascension du mont Blanc date de 1786."],
}
QUESTIONS = [
    ("Lille", 1, "Quand a lieu la braderie de Lille ?", "premier week-end de septembre"),
    ("Camembert", 1, "Qui aurait inventé la recette du camembert ?", "Marie Harel"),
    ("Tour", 0, "Qui a créé le Tour de France ?", "Henri Desgrange"),
    ("Tour", 1, "Combien de kilomètres parcourent les coureurs ?", "3 400 kilomètres"),
    ("Caen", 0, "Qui a construit le château de Caen ?", "Guillaume le Conquérant"),
    ("Alpes", 0, "Quelle est l'altitude du mont Blanc ?", "4 805 mètres"),
    ("Alpes", 1, "En quelle année a eu lieu la première ascension du mont Blanc ?", "1786"),
]


def write_bench(root: Path) -> Path:
    for name in ("piaf", "squad2"):
        corpus = root / name / "corpus"
        corpus.mkdir(parents=True)
        for title, paragraphs in ARTICLES.items():
            (corpus / f"{title}.txt").write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
        rows = [{"id": f"{name}{i}", "question": q, "answers": [a], "sources": [f"{t}.txt"],
                 "answerable": True, "kind": name, "paragraph_index": p}
                for i, (t, p, q, a) in enumerate(QUESTIONS)]
        if name == "squad2":
            rows.append({"id": "u1", "question": "Combien d'habitants compte le village de "
                         "Camembert ?", "answers": [], "sources": ["Camembert.txt"],
                         "answerable": False, "kind": "squad2-unanswerable", "paragraph_index": 1})
        (root / name / "questions.jsonl").write_text(
            "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return root


@pytest.mark.slow
def test_train_reader_end_to_end_is_reproducible(tmp_path, rag_main, monkeypatch):
    import rag.reader.train as train
    monkeypatch.setattr(train, "EPOCHS", 3)
    bench = write_bench(tmp_path / "bench")
    first, second = tmp_path / "a" / "reader.safetensors", tmp_path / "b" / "reader.safetensors"
    result = rag_main("train-reader", "--bench", bench, "--out", first, "--work", tmp_path / "work")
    assert result.returncode == 0, result.stderr
    assert "weights written to" in result.stdout
    rag_main("train-reader", "--bench", bench, "--out", second, "--work", tmp_path / "work")
    assert sha256_of(first) == sha256_of(second)  # fixed seed, same data: same weights
    card = json.loads(card_path(first).read_text(encoding="utf-8"))
    assert card["data"]["train_questions"] > 0 and card["data"]["validation_questions"] > 0
    assert load_reader(first).threshold == card["threshold"]


def test_train_reader_without_the_benchmarks_is_a_one_line_error(tmp_path, rag_main):
    assert_one_line_error(rag_main("train-reader", "--bench", tmp_path), "--bench")


def test_reader_rules_are_switches_of_the_search_settings():
    from rag.assistant import make_answerer
    from rag.config import SearchSettings
    from rag.extractive import ExtractiveAnswerer
    from rag.reader.answerer import ReaderAnswerer
    assert isinstance(make_answerer(SearchSettings(answerer="extractive")), ExtractiveAnswerer)
    reader = make_answerer(replace(SearchSettings(), reader_type_rule=True))
    assert isinstance(reader, ReaderAnswerer) and reader.rules.answer_type
    with pytest.raises(ValueError, match="unknown answerer"):
        make_answerer(SearchSettings(answerer="oracle"))
