"""The generative answerer against a real server: llama.cpp's own OpenAI-compatible server
(``xllamacpp``) serving SmolLM2-135M-Instruct (tests/llm_fixtures.py starts it once).

The model is tiny and its answers are poor, so these tests assert the plumbing: readiness, the
JSON schema accepted, tokens streamed, the timeouts and the cut-off reply, and that whatever it
wrote comes out either checked (every citation on lines that hold its text) or as the marked
offline answer. Marked slow: each answer takes seconds on two cores.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest
from fake_embedder import FAKE_SEARCH, FAKE_SETTINGS, FakeEmbedder
from llm_fixtures import smollm2_url  # noqa: F401

from rag.assistant import Assistant
from rag.config import LlmSettings
from rag.extractive import ExtractiveAnswerer
from rag.llm import prompt
from rag.llm.answerer import LlmAnswerer
from rag.llm.client import LlmClient
from rag.llm.local import SMOLLM2_ALIAS

pytestmark = pytest.mark.slow

QUESTION = "Où se tiendra le prochain sommet de l'alliance ?"
#: llama.cpp reuses a cached prompt prefix unless told not to, which can change the next tokens.
DETERMINISTIC = {"cache_prompt": False}


def llm_assistant(tiny_template, url: str, **settings) -> Assistant:
    corpus, index = tiny_template
    # Generous waits: these tests check the plumbing, and a busy two-core machine can take longer
    # than the product's 30 s to read the prompt; the timeout test sets its own.
    patient = LlmSettings(url=url, max_tokens=120, first_token_timeout=300.0, total_timeout=600.0)
    llm = replace(patient, **settings)
    client = LlmClient(llm, extra_body=DETERMINISTIC)
    answerer = LlmAnswerer(llm, fallback=ExtractiveAnswerer(), client=client)
    return Assistant(corpus, index, index_settings=FAKE_SETTINGS,
                     search=replace(FAKE_SEARCH, answerer="llm", llm=llm),
                     embedder=FakeEmbedder(), answerer=answerer, update=False)


def test_readiness_lists_the_alias_given_as_a_set(smollm2_url):
    client = LlmClient(LlmSettings(url=smollm2_url))
    assert client.models() == [SMOLLM2_ALIAS]
    assert client.check() == SMOLLM2_ALIAS


def test_the_server_takes_the_json_schema_and_streams_tokens(smollm2_url, tiny_template):
    assistant = llm_assistant(tiny_template, smollm2_url)
    context, passages = assistant.retrieve(QUESTION)
    client = assistant.answerer.client
    chunks = list(client.stream(lambda fmt: prompt.messages(QUESTION, passages[:3], fmt),
                                prompt.SCHEMA))
    assert client.format == "json_schema"  # accepted, not fallen back
    assert len([c for c in chunks if c.text]) > 3  # token by token, not one block
    assert chunks[-1].finish_reason in ("stop", "length")
    if chunks[-1].finish_reason == "stop":  # constrained decoding: the schema's JSON object
        data = json.loads("".join(c.text for c in chunks))
        assert set(data) == {"found", "answer", "reason"} and isinstance(data["found"], bool)


def test_whatever_it_answers_is_checked_or_marked(smollm2_url, tiny_template):
    assistant = llm_assistant(tiny_template, smollm2_url)
    corpus = tiny_template[0]
    for question in (QUESTION, "Combien d'agents la police néerlandaise déploiera-t-elle ?",
                     "Qui a inventé la recette du camembert ?"):
        data = assistant.ask(question).to_json()
        assert data["answerer"] in ("llm", "extractive"), data
        if data["answerer"] == "extractive":
            assert data["note"], data  # a fallback always says why
        elif not data["abstained"]:
            kept = [v for v in data["verified"] if v["supported"]]
            assert kept and {v["citation"] for v in kept} == {c["n"] for c in data["citations"]}
        for citation in data["citations"]:
            lines = (corpus / citation["source"]).read_text(encoding="utf-8").split("\n")
            assert citation["text"] in "\n".join(
                lines[citation["start_line"] - 1:citation["end_line"]])
        for check in data["verified"]:
            assert check["supported"] == (check["citation"] is not None)
            assert check["supported"] or check["why"]


def test_deterministic_replies_with_cache_prompt_off(smollm2_url, tiny_template):
    first = llm_assistant(tiny_template, smollm2_url).ask(QUESTION).to_json()
    second = llm_assistant(tiny_template, smollm2_url).ask(QUESTION).to_json()
    assert (first["answer"], first["verified"]) == (second["answer"], second["verified"])


def test_a_reply_cut_at_max_tokens_gives_the_offline_answer(smollm2_url, tiny_template):
    data = llm_assistant(tiny_template, smollm2_url, max_tokens=3).ask(QUESTION).to_json()
    assert data["answerer"] == "extractive"
    assert data["note"].startswith("La réponse du modèle a été coupée (3 tokens)")


def test_a_first_token_too_slow_gives_the_offline_answer(smollm2_url, tiny_template):
    started = time.perf_counter()
    data = llm_assistant(tiny_template, smollm2_url,
                         first_token_timeout=0.05).ask(QUESTION).to_json()
    assert time.perf_counter() - started < 5
    assert data["answerer"] == "extractive"
    assert data["note"].startswith("Le modèle a mis trop de temps (no token for 0.05 s)")


def test_rag_ask_against_it_prints_a_checked_answer_or_a_marked_fallback(smollm2_url, assistant):
    """The command line, with the real embedding model over the seeds (as a user runs it)."""
    from conftest import run_rag
    result = run_rag("ask", "Où Mark Rutte a-t-il rencontré Donald Trump ?", "--corpus",
                     assistant.corpus, "--index", assistant.index_dir, "--llm-url", smollm2_url,
                     "--json", timeout=600)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["answerer"] in ("llm", "reader")
    assert "Traceback" not in result.stderr
    if data["answerer"] == "reader":
        assert result.stderr.strip() == f"rag: note: {data['note']}"
    else:
        assert result.stderr.strip() == "" and all(v["supported"] or v["why"]
                                                  for v in data["verified"])
