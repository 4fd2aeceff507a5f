"""The command line's promises that need no model: every error a user can cause is one line on
stderr and exit status 2, never a traceback; and ``python -m rag.cli`` is a working entry point.

The commands run in this process through ``rag.cli.main`` (the ``rag_main`` fixture). They work
on an index the fake embedder built, whose settings are what ``--model fake-hash`` records: the
command line reads and checks it like any index, and only fails, cleanly, if it must embed
something, since no model of that name can be loaded. Answers printed by ``rag ask`` need the real
model: tests/test_assistant.py (slow).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import assert_one_line_error, run_rag
from fake_embedder import FAKE_MODEL

COMMANDS = ("index", "ask", "eval", "chat")


@pytest.fixture()
def index(tiny_index) -> Path:
    """The tiny corpus's fake index, a copy this test may change."""
    return tiny_index


def command(name: str, corpus: Path, index: Path) -> list[object]:
    """The arguments of one command over ``corpus`` and ``index`` (``ask`` needs a question)."""
    question = ["Où se tiendra le sommet ?"] if name == "ask" else []
    return [name, *question, "--corpus", corpus, "--index", index, "--model", FAKE_MODEL]


@pytest.mark.parametrize("name", COMMANDS)
def test_a_missing_or_empty_corpus_is_a_one_line_error(name, tmp_path, rag_main):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # nothing readable
    for corpus, words in ((tmp_path / "missing", "not found"), (tmp_path / "empty", "no readable")):
        assert_one_line_error(rag_main(*command(name, corpus, tmp_path / "index")), words)
    assert not (tmp_path / "index").exists()  # an error writes no index


def test_a_blank_question_is_a_one_line_error(tiny_corpus, index, rag_main):
    for blank in ("", "   ", "\n\t"):
        result = rag_main("ask", blank, "--corpus", tiny_corpus, "--index", index,
                          "--model", FAKE_MODEL)
        assert_one_line_error(result, "empty")
        assert result.stdout == ""


@pytest.mark.parametrize("model, words", [
    (FAKE_MODEL, "not available offline"),  # a name found neither on disk nor in the HF cache
    ("./no/such/model/folder", "does not exist"),
])
def test_a_model_that_cannot_be_loaded_is_a_one_line_error(model, words, tiny_corpus, tmp_path,
                                                           rag_main):
    assert_one_line_error(rag_main("index", "--corpus", tiny_corpus, "--index", tmp_path / "new",
                                   "--model", model), words, model)


def test_asking_with_a_model_that_cannot_be_loaded_is_a_one_line_error(tiny_corpus, index,
                                                                      rag_main):
    """The index is up to date, so only the question needs the model."""
    result = rag_main(*command("ask", tiny_corpus, index))
    assert_one_line_error(result, "not available offline")


def test_eval_questions_file_errors_name_the_file_and_line(tiny_corpus, index, tmp_path,
                                                           rag_main):
    good = {"id": "a", "question": "Où se tiendra le sommet ?", "answers": ["La Haye"],
            "sources": ["sommet.txt"], "answerable": True, "kind": "fact"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(good) + '\n{"id": "b", "question": \n', encoding="utf-8")
    args = ["--corpus", tiny_corpus, "--index", index, "--model", FAKE_MODEL]
    assert_one_line_error(rag_main("eval", *args, "--questions", bad), "line 2", "bad.jsonl")
    assert_one_line_error(rag_main("eval", *args, "--questions", tmp_path / "none.jsonl"),
                          "not found")


def test_eval_option_errors(tiny_corpus, index, tmp_path, rag_main):
    args = ["--corpus", tiny_corpus, "--index", index, "--model", FAKE_MODEL]
    assert_one_line_error(rag_main("eval", *args, "--retriever", "bm25", "--gates"), "hybrid")
    assert_one_line_error(rag_main("eval", *args, "--json", tmp_path), "folder")
    assert_one_line_error(rag_main("eval", *args, "--limit", "0"), "--limit")


def test_usage_errors_exit_with_status_2(rag_main, capsys):
    for argv in ([], ["ask"], ["frobnicate"], ["ask", "q", "--retriever", "psychic"]):
        with pytest.raises(SystemExit) as exit_:
            rag_main(*argv)
        assert exit_.value.code == 2, argv
        assert "usage: rag" in capsys.readouterr().err


def test_python_m_rag_cli_is_the_entry_point(tmp_path):
    """Once through a real process: ``python -m rag.cli`` runs ``main`` and its exit status (2
    here, not the 0 a forgotten ``sys.exit`` would give) reaches the shell."""
    failed = run_rag("index", "--corpus", tmp_path / "missing", timeout=120)
    assert_one_line_error(failed, "not found")
    assert failed.stdout == ""
