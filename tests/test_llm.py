"""The generative answerer against a fake OpenAI-compatible server: each crafted reply (a right
answer, a wrong [n], a claim its passage does not hold, cut-off JSON, a 500, a hang, garbage, a
refusal) and its exact outcome; the request the server receives; the command line's errors.

Fast: the fake embedder and the tiny corpus (tests/conftest.py); the real llama.cpp server has
its own tests (tests/test_llm_server.py).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import replace

import pytest
from fake_embedder import FAKE_SEARCH, FAKE_SETTINGS, FakeEmbedder
from llm_fixtures import (FAKE_MODEL_ID, closed_port_url, fake_llm, json_reply,  # noqa: F401
                          passage_number, sent_passages)

from rag.assistant import Assistant
from rag.config import LlmSettings
from rag.extractive import ExtractiveAnswerer
from rag.llm import prompt
from rag.llm.answerer import LlmAnswerer
from rag.llm.client import LlmClient, LlmUnavailable

QUESTION = "Où se tiendra le prochain sommet de l'alliance ?"
FACT = "Le prochain sommet de l'alliance atlantique se tiendra à La Haye au mois de juin."
#: What the extractive answerer (the fallback here) answers to QUESTION.
OFFLINE = f"{FACT} [1]"


def assistant_for(corpus_index, url: str, **settings) -> Assistant:
    corpus, index = corpus_index
    llm = replace(LlmSettings(url=url), **settings)
    answerer = LlmAnswerer(llm, fallback=ExtractiveAnswerer())
    return Assistant(corpus, index, index_settings=FAKE_SETTINGS,
                     search=replace(FAKE_SEARCH, answerer="llm", llm=llm),
                     embedder=FakeEmbedder(), answerer=answerer, update=False)


@pytest.fixture()
def ask(tiny_template, fake_llm):
    """Ask QUESTION (or another) through the fake server; returns the answer JSON."""
    def run(question: str = QUESTION, **settings) -> dict:
        return assistant_for(tiny_template, fake_llm.url, **settings).ask(question).to_json()
    return run


def lines_of(corpus, citation: dict) -> str:
    text = (corpus / citation["source"]).read_text(encoding="utf-8").split("\n")
    return "\n".join(text[citation["start_line"] - 1:citation["end_line"]])


# --- crafted replies and their exact outcome ----------------------------------------------------


def test_a_supported_answer_is_shown_with_the_sentence_it_cites(ask, fake_llm, tiny_template):
    fake_llm.reply = lambda body: json_reply(
        f"Le sommet aura lieu à La Haye, au mois de juin [{passage_number(body, 'La Haye')}].")
    data = ask()
    assert data["answerer"] == "llm" and not data["abstained"] and data["note"] == ""
    assert data["answer"] == "Le sommet aura lieu à La Haye, au mois de juin [1]."
    [citation] = data["citations"]
    assert (citation["source"], citation["start_line"], citation["end_line"]) == ("sommet.txt", 3, 3)
    assert citation["text"] == FACT and FACT in lines_of(tiny_template[0], citation)
    [check] = data["verified"]
    assert check["supported"] and check["citation"] == 1 and check["why"] == ""


def test_a_claim_citing_the_wrong_passage_is_dropped(ask, fake_llm):
    def reply(body):
        right = passage_number(body, "La Haye")
        wrong = passage_number(body, "Tour de France")
        assert right != wrong
        return json_reply(f"Le prochain sommet de l'alliance se tiendra à La Haye [{wrong}].")
    fake_llm.reply = reply
    data = ask()
    assert data["answerer"] == "extractive" and data["answer"] == OFFLINE
    assert data["note"].startswith("Aucune affirmation du modèle n'est confirmée")
    [check] = data["verified"]
    assert not check["supported"] and check["citation"] is None
    assert "no sentence says it" in check["why"] or "does not name" in check["why"]


def test_a_marker_naming_a_passage_not_sent_is_refused(ask, fake_llm):
    fake_llm.reply = lambda body: json_reply(
        f"Le sommet se tiendra à La Haye [{sent_passages(body) + 5}].")
    data = ask()
    assert data["answerer"] == "extractive" and data["answer"] == OFFLINE
    [check] = data["verified"]
    assert check["cited"] == [9] and not check["supported"]
    assert check["why"] == "it cites [9], but only [1]-[4] were sent"


def test_an_uncited_claim_is_dropped_and_the_cited_one_kept(ask, fake_llm):
    fake_llm.reply = lambda body: json_reply(
        f"Le prochain sommet se tiendra à La Haye [{passage_number(body, 'La Haye')}]. "
        "Les hôtels de la ville seront tous gratuits.")
    data = ask()
    assert data["answerer"] == "llm"
    assert data["answer"] == "Le prochain sommet se tiendra à La Haye [1]."
    assert [c["supported"] for c in data["verified"]] == [True, False]
    assert data["verified"][1]["why"] == "it cites no passage"


def test_a_claim_with_a_number_its_sentence_lacks_is_dropped(ask, fake_llm):
    fake_llm.reply = lambda body: json_reply(
        f"Le prochain sommet de l'alliance atlantique se tiendra à La Haye en juin 2031 "
        f"[{passage_number(body, 'La Haye')}].")
    data = ask()
    assert data["answerer"] == "extractive" and data["answer"] == OFFLINE
    assert data["verified"][0]["why"] == "the sentence does not hold 2031"


def test_a_claim_naming_someone_its_passage_does_not_is_dropped(ask, fake_llm):
    fake_llm.reply = lambda body: json_reply(
        f"Le prochain sommet de l'alliance se tiendra à La Haye selon Emmanuel Macron "
        f"[{passage_number(body, 'La Haye')}].")
    data = ask()
    assert data["answerer"] == "extractive"
    assert data["verified"][0]["why"] == "the passage does not name Emmanuel Macron"


def test_the_model_saying_the_documents_do_not_answer_is_an_abstention(ask, fake_llm):
    fake_llm.reply = lambda body: json_reply(
        found=False, reason="Les passages ne donnent pas la date du sommet suivant.")
    data = ask("Quand aura lieu le sommet suivant ?")
    assert data["abstained"] and data["answerer"] == "llm" and data["citations"] == []
    assert data["reason"] == "Les passages ne donnent pas la date du sommet suivant."
    assert data["answer"].startswith("Les documents ne répondent pas à cette question.")


@pytest.mark.parametrize("case, setup, note", [
    ("cut-off JSON", dict(finish_reason="length", reply=lambda body: '{"found": true, "answer": '
                                                                     '"Le sommet se tien'),
     "La réponse du modèle a été coupée (400 tokens)"),
    ("HTTP 500", dict(status=500), "Le serveur du modèle a renvoyé une erreur (HTTP 500"),
    ("garbage", dict(reply=lambda body: "Bonjour ! Je suis un modèle très serviable."),
     "La réponse du modèle est illisible (not the JSON object asked for)"),
    ("wrong JSON", dict(reply=lambda body: '{"found": true, "answer": 42, "reason": ""}'),
     "La réponse du modèle est illisible (the answer or the reason is not text)"),
])
def test_a_failed_reply_gives_the_offline_answer_and_says_why(ask, fake_llm, case, setup, note):
    for key, value in setup.items():
        setattr(fake_llm, key, value)
    data = ask()
    assert data["answerer"] == "extractive" and data["answer"] == OFFLINE, case
    assert data["note"].startswith(note), (case, data["note"])
    assert data["note"].endswith("voici la réponse du lecteur hors ligne.")


def test_a_hung_server_is_given_up_at_the_first_token_timeout(ask, fake_llm):
    fake_llm.hang = True
    started = time.perf_counter()
    data = ask(first_token_timeout=0.5)
    assert time.perf_counter() - started < 5
    assert data["answerer"] == "extractive" and data["answer"] == OFFLINE
    assert data["note"].startswith("Le modèle a mis trop de temps (no token for 0.5 s)")


def test_a_slow_drip_is_given_up_at_the_total_timeout(ask, fake_llm):
    fake_llm.reply = lambda body: json_reply("Le sommet se tiendra à La Haye [1]." * 5)
    fake_llm.drip_seconds = 0.2
    started = time.perf_counter()
    data = ask(total_timeout=1.0)
    assert time.perf_counter() - started < 4
    assert data["answerer"] == "extractive"
    assert data["note"].startswith("Le modèle a mis trop de temps (no complete answer within 1 s)")


def test_a_server_gone_after_startup_gives_the_offline_answer(tiny_template, fake_llm):
    assistant = assistant_for(tiny_template, fake_llm.url)
    fake_llm.shutdown()
    fake_llm.server_close()
    data = assistant.ask(QUESTION).to_json()
    assert data["answerer"] == "extractive" and data["answer"] == OFFLINE
    assert data["note"].startswith("Le serveur du modèle ne répond pas")


def test_an_english_question_gets_english_notes(ask, fake_llm):
    fake_llm.status = 503
    data = ask("Where will the next summit of the alliance be held?")
    assert data["note"].startswith("The model's server returned an error (HTTP 503")


# --- the request --------------------------------------------------------------------------------


def test_the_request_numbers_the_top_passages_and_asks_for_the_schema(ask, fake_llm):
    fake_llm.reply = lambda body: json_reply(found=False, reason="rien")
    ask(max_tokens=123, passages=3)
    [body] = fake_llm.requests
    assert body["model"] == FAKE_MODEL_ID and body["stream"] is True
    assert body["max_tokens"] == 123 and body["temperature"] == 0.0
    assert body["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "cited_answer", "strict": True, "schema": prompt.SCHEMA}}
    system, user = body["messages"]
    assert system["role"] == "system" and "[2]" in system["content"]
    assert "language of the question" in system["content"]
    assert sent_passages(body) == 3
    assert user["content"].startswith("Passages:\n\n[1] (sommet.txt)\nLe sommet de l'alliance")
    assert user["content"].endswith(f"Question: {QUESTION}")


def test_a_server_refusing_json_schema_is_asked_for_json_object_then_text(tiny_template,
                                                                          fake_llm):
    fake_llm.refuse_formats = {"json_schema"}
    fake_llm.reply = lambda body: json_reply(
        f"Le sommet se tiendra à La Haye [{passage_number(body, 'La Haye')}].")
    assistant = assistant_for(tiny_template, fake_llm.url)
    assert assistant.ask(QUESTION).answerer == "llm"
    assert assistant.ask(QUESTION).answerer == "llm"
    # Refused once, then json_object straight away for the next question.
    assert fake_llm.formats() == ["json_schema", "json_object", "json_object"]

    fake_llm.refuse_formats = {"json_schema", "json_object"}
    fake_llm.reply = lambda body: (
        f"Le sommet se tiendra à La Haye [{passage_number(body, 'La Haye')}].")
    fresh = assistant_for(tiny_template, fake_llm.url)
    answer = fresh.ask(QUESTION)
    assert answer.answerer == "llm" and answer.answer == "Le sommet se tiendra à La Haye [1]."
    assert fake_llm.formats()[3:] == ["json_schema", "json_object", "text"]
    assert "NOT_IN_DOCUMENTS:" in fake_llm.requests[-1]["messages"][0]["content"]


def test_plain_text_refusal_is_an_abstention(tiny_template, fake_llm):
    fake_llm.refuse_formats = {"json_schema", "json_object"}
    fake_llm.reply = lambda body: "NOT_IN_DOCUMENTS: rien sur le sujet."
    answer = assistant_for(tiny_template, fake_llm.url).ask(QUESTION)
    assert answer.abstained and answer.reason == "rien sur le sujet."


def test_the_api_key_is_sent_as_a_bearer_token(tiny_template, fake_llm, monkeypatch):
    monkeypatch.setenv("RAG_LLM_API_KEY", "s3cret-key")
    fake_llm.reply = lambda body: json_reply(found=False, reason="rien")
    assistant_for(tiny_template, fake_llm.url).ask(QUESTION)
    assert {h.get("Authorization") for h in fake_llm.headers_seen} == {"Bearer s3cret-key"}
    assert "s3cret-key" not in json.dumps(assistant_for(tiny_template, fake_llm.url).ask(
        QUESTION).to_json())


# --- streaming ----------------------------------------------------------------------------------


def test_the_answer_streams_then_the_checked_answer_replaces_it(tiny_template, fake_llm):
    fake_llm.reply = lambda body: json_reply(
        f"Le sommet aura lieu à La Haye [{passage_number(body, 'La Haye')}]. Et à Rome.")
    fake_llm.piece_chars = 4
    assistant = assistant_for(tiny_template, fake_llm.url)
    *partials, final = list(assistant.ask_stream(QUESTION))
    assert all(isinstance(p, str) for p in partials) and len(partials) > 5
    assert all(b.startswith(a) for a, b in zip(partials, partials[1:]))  # it only grows
    assert partials[-1] == "Le sommet aura lieu à La Haye [1]. Et à Rome."
    assert final.answer == "Le sommet aura lieu à La Haye [1]."  # "Et à Rome." cites nothing


# --- pieces -------------------------------------------------------------------------------------


@pytest.mark.parametrize("answer, expected", [
    ("A dit oui [1]. B a dit non [2].", [("A dit oui", (1,)), ("B a dit non", (2,))]),
    ("A dit oui [1] et B non [2].", [("A dit oui", (1,)), ("et B non", (2,))]),
    ("A dit oui. [1] B non [1, 3].", [("A dit oui.", (1,)), ("B non", (1, 3))]),
    ("A dit oui [1][2]. Sans source.", [("A dit oui", (1, 2)), ("Sans source.", ())]),
    ("", []),
])
def test_claims_are_cut_at_their_markers(answer, expected):
    assert [(c.text, c.cited) for c in prompt.claims(answer)] == expected


def test_a_partial_json_answer_is_read_as_it_streams():
    raw = '{"found": true, "answer": "Il a dit \\"oui\\" \\u00e0 Paris [1'
    assert prompt.partial_answer(raw, "json_schema") == 'Il a dit "oui" à Paris [1'
    assert prompt.partial_answer('{"found": tr', "json_schema") == ""
    assert prompt.partial_answer("Texte libre [1]", "text") == "Texte libre [1]"


# --- startup and the command line ---------------------------------------------------------------


def test_readiness_names_the_only_model_and_refuses_an_unknown_one(fake_llm):
    assert LlmClient(LlmSettings(url=fake_llm.url)).check() == FAKE_MODEL_ID
    with pytest.raises(LlmUnavailable, match="does not serve 'llama3'; it serves: fake-llm"):
        LlmClient(LlmSettings(url=fake_llm.url, model="llama3")).check()
    assert fake_llm.requests == []  # readiness is GET /v1/models alone


def test_ask_with_an_unreachable_server_is_one_line_and_status_2(rag_main, tiny_template):
    from conftest import assert_one_line_error
    corpus, index = tiny_template
    url = closed_port_url()
    result = rag_main("ask", QUESTION, "--corpus", corpus, "--index", index, "--model",
                      "fake-hash", "--llm-url", url)
    assert_one_line_error(result, "cannot reach the LLM server", url)


@pytest.mark.parametrize("status, words", [(401, "RAG_LLM_API_KEY"), (404, "ends in /v1")])
def test_ask_with_a_server_refusing_readiness_says_what_to_do(rag_main, tiny_template, fake_llm,
                                                              monkeypatch, status, words):
    from conftest import assert_one_line_error
    monkeypatch.setenv("RAG_LLM_API_KEY", "s3cret-key")
    fake_llm.models_status = status
    corpus, index = tiny_template
    result = rag_main("ask", QUESTION, "--corpus", corpus, "--index", index, "--model",
                      "fake-hash", "--llm-url", fake_llm.url)
    assert_one_line_error(result, words)
    assert "s3cret-key" not in result.stderr + result.stdout


def test_answerer_llm_without_a_url_says_how_to_give_one(rag_main, tiny_template, monkeypatch):
    from conftest import assert_one_line_error
    monkeypatch.delenv("RAG_LLM_URL", raising=False)
    corpus, index = tiny_template
    result = rag_main("ask", QUESTION, "--corpus", corpus, "--index", index, "--model",
                      "fake-hash", "--answerer", "llm")
    assert_one_line_error(result, "--llm-url", "RAG_LLM_URL")


def test_llm_url_from_the_environment_chooses_the_llm_answerer(monkeypatch):
    from rag.cli import build_parser, search_settings
    monkeypatch.setenv("RAG_LLM_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("RAG_LLM_MODEL", "m")
    args = build_parser().parse_args(["ask", "q"])
    settings = search_settings(args)
    assert (settings.answerer, settings.llm.url, settings.llm.model) == (
        "llm", "http://127.0.0.1:1/v1", "m")
    args = build_parser().parse_args(["ask", "q", "--answerer", "reader"])
    assert search_settings(args).answerer == "reader"


def test_failures_are_logged_below_warning(ask, fake_llm, caplog):
    """The CLI prints the note as its one line; the log stays quiet unless -v."""
    fake_llm.status = 500
    with caplog.at_level(logging.WARNING):
        ask()
    assert not [r for r in caplog.records if r.name.startswith("rag.llm")]


# --- the evaluation -----------------------------------------------------------------------------


def test_eval_measures_dropped_claims_and_fallbacks(tiny_template, fake_llm, tmp_path):
    """`rag eval --answerer llm`: the same metrics, plus the share of generated claims the check
    dropped and of questions the offline reader answered instead."""
    from eval.runner import run_eval

    questions = tmp_path / "q.jsonl"
    rows = [{"id": "1", "question": QUESTION, "answers": ["La Haye"],
             "sources": ["sommet.txt"], "answerable": True},
            {"id": "2", "question": "Quand le Tour de France partira-t-il de Lille ?",
             "answers": ["5 juillet"], "sources": ["tour.txt"], "answerable": True}]
    questions.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows),
                         encoding="utf-8")

    def reply(body):
        if "sommet" in body["messages"][-1]["content"].rsplit("Question:", 1)[1]:
            n = passage_number(body, "La Haye")  # one claim kept, one without a marker dropped
            return json_reply(f"Le prochain sommet se tiendra à La Haye [{n}]. Il pleuvra.")
        return json_reply("Le Tour partira de Lille le 14 juillet [1].")  # not in its sentence
    fake_llm.reply = reply
    result = run_eval(tiny_template[0], questions, ["hybrid"], progress=False,
                      assistant_factory=lambda *a, **k: assistant_for(tiny_template, fake_llm.url))
    metrics = result["metrics"]["hybrid"]
    assert metrics["unsupported_claims"] == pytest.approx(2 / 3)
    assert metrics["llm_fallback"] == 0.5
    first, second = result["questions"]
    assert (first["answerer"], second["answerer"]) == ("llm", "extractive")
    assert second["note"].startswith("Aucune affirmation")
    assert result["run"]["search_settings"]["llm"]["url"] == fake_llm.url


def test_a_follow_up_tells_the_model_the_question_before(tiny_template, fake_llm):
    fake_llm.reply = lambda body: json_reply(found=False, reason="rien")
    assistant_for(tiny_template, fake_llm.url).ask("Et en quel mois ?", history=[QUESTION])
    user = fake_llm.requests[-1]["messages"][-1]["content"]
    assert user.endswith(f"Previous question: {QUESTION}\nQuestion: Et en quel mois ?")
