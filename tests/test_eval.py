"""The evaluation runner: metric arithmetic, a run end to end, and the CI quality gate.

The metrics are pure functions of hand-made records. A whole run (every retriever, hidden-file
re-asks, the JSON file, the RESULTS.md report) runs fast over the tiny corpus with the fake
embedder; `rag eval` on the seeds with the real model and the quality gate are ``slow``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import write_tiny_corpus
from eval.metrics import (METRIC_KEYS, SourceLines, abstention_curves, answer_accuracy,
                          answer_contains, answer_matches, check_gates, citation_validity,
                          compute_metrics, mrr_at, normalize_answer, percentile, recall_at)
from eval.runner import (ALL_RETRIEVERS, DEFAULT_GATES, DEFAULT_QUESTIONS, load_gates,
                         load_questions, run_eval, write_results)
from fake_embedder import FAKE_SEARCH, FAKE_SETTINGS, FakeEmbedder
from rag.assistant import Assistant
from rag.cli import UserError


def rec(**kw) -> dict:
    """A hand-made per-question record with harmless defaults."""
    base = {"id": "x", "question": "?", "kind": "fact", "retriever": "hybrid", "answerable": True,
            "gold_answers": ["Oslo"], "gold_sources": ["a.txt"], "answer": "", "abstained": False,
            "citations": [], "passages": [], "retrieved_sources": [], "latency_ms": 10.0,
            "support": 0.9}
    base.update(kw)
    return base


# --------------------------------------------------------------------------- normalisation


def test_normalize_answer_spaces_apostrophes_case_nfkc():
    assert normalize_answer("10\u00a0000 soldats") == "10 000 soldats"  # no-break space
    assert normalize_answer("5\u202f%") == "5 %"  # narrow no-break space
    assert normalize_answer("l\u2019OTAN") == normalize_answer("L'otan") == "l'otan"
    assert normalize_answer("\u2018x\u2019") == "'x'"
    assert normalize_answer("  Jens\n\t  STOLTENBERG ") == "jens stoltenberg"
    assert normalize_answer("\ufb01n") == "fin"  # NFKC ligature
    assert normalize_answer("47\u1d49") == "47e"  # NFKC superscript


def test_answer_matches_after_normalisation():
    assert answer_matches("Environ 10\u00a0000 soldats [1]", ["10 000"])
    assert answer_matches("le chef de l’Alliance", ["l'alliance"])
    assert not answer_matches("Oslo", ["Bergen"])
    assert not answer_matches("anything", [])
    assert not answer_matches("anything", ["   "])  # a blank gold string never matches


# --------------------------------------------------------------------------- retrieval


def test_recall_and_mrr_math():
    records = [
        rec(retrieved_sources=["a.txt", "b.txt"]),                          # rank 1
        rec(retrieved_sources=["b.txt", "c.txt", "a.txt"]),                 # rank 3
        rec(retrieved_sources=[f"{i}.txt" for i in range(5)] + ["a.txt"]),  # rank 6
        rec(retrieved_sources=["b.txt"]),                                   # miss
        rec(gold_sources=["z.txt", "c.txt"], retrieved_sources=["b.txt", "c.txt"]),  # rank 2
        rec(answerable=False, gold_answers=[], gold_sources=[], retrieved_sources=["a.txt"]),
    ]
    assert recall_at(records, 1) == pytest.approx(1 / 5)
    assert recall_at(records, 5) == pytest.approx(3 / 5)
    assert mrr_at(records, 10) == pytest.approx((1 + 1 / 3 + 1 / 6 + 0 + 1 / 2) / 5)
    assert mrr_at(records, 2) == pytest.approx((1 + 1 / 2) / 5)


def test_failed_question_is_a_miss_and_counted():
    records = [rec(retrieved_sources=["a.txt"], answer="Oslo"),
               rec(error="RuntimeError: boom", abstained=None, answer="", latency_ms=None)]
    m = compute_metrics(records, Path("/nonexistent"))
    assert m["n_failed"] == 1 and m["n_questions"] == 2
    assert m["recall@1"] == 0.5
    assert m["answer_accuracy"] == 0.5
    assert m["answer_contains"] == 1.0  # the failure did not answer
    assert m["abstain_answerable"] == 0.0  # nor abstain
    assert m["latency_ms_p50"] == 10.0


# --------------------------------------------------------------------------- answers, abstention


def test_answer_contains_vs_answer_accuracy():
    records = [
        rec(answer="C'est à Oslo. [1]"),                      # correct
        rec(answer="C'est à Bergen. [1]"),                    # wrong
        rec(answer="Les documents ne répondent pas", abstained=True),  # abstained
        rec(answer="La capitale\u00a0: OSLO [1]"),            # correct after normalising
        rec(answerable=False, gold_answers=[], gold_sources=[], answer="Oslo"),  # not counted
    ]
    assert answer_contains(records) == pytest.approx(2 / 3)
    assert answer_accuracy(records) == pytest.approx(2 / 4)


def test_abstention_shares():
    un = dict(answerable=False, gold_answers=[], gold_sources=[])
    records = [rec(**un, abstained=True), rec(**un, abstained=True), rec(**un, abstained=False),
               rec(**un, abstained=None, error="x"),
               rec(abstained=True), rec(abstained=False), rec(abstained=False), rec(abstained=False)]
    m = compute_metrics(records, Path("/nonexistent"))
    assert m["abstain_unanswerable"] == pytest.approx(2 / 4)
    assert m["abstain_answerable"] == pytest.approx(1 / 4)
    assert (m["n_answerable"], m["n_unanswerable"]) == (4, 4)


def test_withheld_share_counts_answerable_questions_asked_again_without_their_files():
    un = dict(answerable=False, gold_answers=[], gold_sources=[], withheld_abstained=None)
    records = [rec(withheld_abstained=True), rec(withheld_abstained=False),
               rec(withheld_abstained=True), rec(**un, abstained=True),
               rec(abstained=None, error="x", withheld_abstained=None)]
    assert compute_metrics(records, Path("/nonexistent"))["abstain_withheld"] == pytest.approx(2 / 3)


def test_empty_sets_do_not_divide_by_zero():
    m = compute_metrics([], Path("/nonexistent"))
    assert tuple(m) == METRIC_KEYS
    assert all(m[k] is None for k in METRIC_KEYS if not k.startswith("n_"))
    assert m["n_questions"] == 0
    # only answerable questions (PIAF): the unanswerable share is undefined, not 0
    m = compute_metrics([rec(answer="Oslo")], Path("/nonexistent"))
    assert m["abstain_unanswerable"] is None and m["citation_valid"] is None
    assert m["answer_contains"] == 1.0
    # only abstentions: nothing answered, so answer_contains is undefined
    assert answer_contains([rec(abstained=True)]) is None


def test_percentile():
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile(list(range(101)), 95) == pytest.approx(95)


# --------------------------------------------------------------------------- citations


def test_citation_validity_on_real_files(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "a.txt").write_text("Titre\n\nLe sommet aura lieu à La Haye.\nIl durera deux "
                                  "jours.\nFin du texte ici.\n", encoding="utf-8")
    (corpus / "sub" / "p.html").write_text(
        "<html><head><title>T</title></head><body><p>Première phrase du texte.</p>"
        "<p>Le ministre a parlé &agrave; Oslo mardi.</p></body></html>", encoding="utf-8")

    def cite(source, start, end, text):
        return {"n": 1, "source": source, "start_line": start, "end_line": end, "text": text,
                "score": 0.9}

    good = [cite("a.txt", 3, 3, "Le sommet aura lieu à La Haye."),
            cite("a.txt", 3, 4, "La Haye.\nIl durera deux jours."),  # spans two lines
            cite("sub/p.html", 5, 5, "Le ministre a parlé à Oslo mardi.")]  # the text the index read
    bad = [cite("a.txt", 4, 4, "Le sommet aura lieu à La Haye."),  # wrong line
           cite("a.txt", 3, 3, "Le sommet aura lieu à Paris."),  # not verbatim
           cite("a.txt", 9, 9, "Fin"),  # beyond the file
           cite("missing.txt", 1, 1, "x"),  # no such file
           cite("../outside.txt", 1, 1, "x"),  # outside the corpus
           cite("sub/p.html", 5, 5, "<p>Le ministre")]  # raw markup is not what the index read
    (tmp_path / "outside.txt").write_text("x\n", encoding="utf-8")
    sources = SourceLines(corpus, min_words=5)
    html_lines = sources.lines("sub/p.html")
    assert html_lines is not None and html_lines[4] == "Le ministre a parlé à Oslo mardi.", html_lines
    assert [sources.citation_ok(c) for c in good] == [True] * 3
    assert [sources.citation_ok(c) for c in bad] == [False] * 6
    share, n = citation_validity([rec(citations=good), rec(citations=bad[:1])], corpus, 5)
    assert (share, n) == (pytest.approx(3 / 4), 4)
    assert citation_validity([rec()], corpus, 5) == (None, 0)


# --------------------------------------------------------------------------- gates, curves


def test_check_gates_min_max_and_missing():
    gates = {"a": {"min": 0.5}, "b": {"max": 0.1}, "c": {"min": 1.0}, "_comment": "ignored"}
    results = {name: ok for name, _, _, _, ok in check_gates({"a": 0.5, "b": 0.2, "c": None}, gates)}
    assert results == {"a": True, "b": False, "c": False}


def test_gates_file_has_the_required_floors():
    gates = load_gates(DEFAULT_GATES)
    assert gates["recall@5"]["min"] >= 0.95 and gates["citation_valid"] == {"min": 1.0}
    # what a user reads first, and both sides of abstention, are all held
    assert gates["top_citation_contains"]["min"] >= 0.75
    assert gates["abstain_unanswerable"]["min"] >= 0.6 and gates["abstain_answerable"]["max"] <= 0.2
    assert gates["abstain_withheld"]["min"] > 0.5 and gates["answer_chars_p50"]["max"] <= 250
    assert all(name in METRIC_KEYS for name in gates if not name.startswith("_"))


def test_abstention_curves():
    un = dict(answerable=False, gold_answers=[], gold_sources=[])
    records = [
        rec(support=0.95, answer="Oslo", abstain_threshold=0.8),
        rec(support=0.85, answer="Bergen", abstain_threshold=0.8),
        rec(support=0.78, abstained=True, answer="", abstain_threshold=0.8),
        rec(support=0.90, abstained=True, answer="", abstain_threshold=0.8),  # vetoed
        rec(support=0.77, answer="Oslo", abstain_threshold=0.76),  # English: offset 0.04
        rec(**un, support=0.82, abstain_threshold=0.8),
        rec(**un, support=0.70, abstained=True, abstain_threshold=0.8),
        rec(**un, support=None, abstained=True),
    ]
    c = abstention_curves(records, [0.75, 0.8, 0.9, 1.0], run_threshold=0.8)
    assert c["n_vetoed"] == 1 and c["n_unknown_support"] == 1
    # at 0.75: the 0.78 one answers too (upper bound), the English one (0.77 >= 0.71) answers
    assert c["answerable_answered"] == pytest.approx([4 / 5, 3 / 5, 1 / 5, 0])
    assert c["unanswerable_answered"] == pytest.approx([1 / 3, 1 / 3, 0, 0])
    assert c["answerable_correct"][0] is None  # unknown below the threshold used
    assert c["answerable_correct"][1:] == pytest.approx([2 / 5, 1 / 5, 0])


# --------------------------------------------------------------------------- questions file


def test_load_questions_errors_name_the_line(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_questions(tmp_path / "nope.jsonl")
    path = tmp_path / "q.jsonl"
    good = json.dumps({"id": "a", "question": "Q ?", "answers": [], "sources": [],
                       "answerable": False, "kind": "x", "extra": 1})
    path.write_text(good + "\n\n{not json\n", encoding="utf-8")
    with pytest.raises(UserError, match="line 3: not valid JSON"):
        load_questions(path)
    path.write_text(good + "\n" + json.dumps({"id": "b", "question": "Q"}) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match="line 2: missing key"):
        load_questions(path)
    path.write_text(good + "\n" + good + "\n", encoding="utf-8")
    with pytest.raises(UserError, match="line 2: duplicate id"):
        load_questions(path)
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(UserError, match="no question"):
        load_questions(path)
    path.write_text(good + "\n", encoding="utf-8")
    assert load_questions(path)[0]["history"] == []


# --------------------------------------------------------------------------- a run, fast

#: Over conftest.TINY_FILES: three facts, one question they do not answer, one blank question.
TINY_SET = [
    {"id": "t1", "question": "Où se tiendra le prochain sommet de l'alliance atlantique ?",
     "answers": ["La Haye"], "sources": ["sommet.txt"], "answerable": True, "kind": "fact"},
    {"id": "t2", "question": "Combien de kilomètres parcourront les coureurs du Tour de France ?",
     "answers": ["3 400"], "sources": ["tour.txt"], "answerable": True, "kind": "fact"},
    {"id": "t3", "question": "Et qui aurait inventé la recette du camembert ?",
     "answers": ["Marie Harel"], "sources": ["fromages/camembert.md"], "answerable": True,
     "kind": "followup", "history": ["Que sait-on du camembert de Normandie ?"]},
    {"id": "t4", "question": "Quelle est la capitale de l'Australie ?", "answers": [],
     "sources": [], "answerable": False, "kind": "unanswerable_offtopic", "note": "ignored"},
    {"id": "t5", "question": "   ", "answers": [], "sources": [], "answerable": False,
     "kind": "blank"},  # Assistant.ask refuses it: recorded as a failure, the run goes on
]


def write_questions(path: Path, questions: list[dict]) -> Path:
    path.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in questions),
                    encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory) -> tuple[dict, Path, Path]:
    """``run_eval`` with every retriever over the tiny corpus, the assistant using the fake
    embedder; returns the result, the written ``--json`` file and the corpus."""
    folder = tmp_path_factory.mktemp("eval")
    corpus = write_tiny_corpus(folder / "corpus")

    def fake_assistant(corpus, index_dir, *args, **kwargs) -> Assistant:
        return Assistant(corpus, folder / "index", FAKE_SETTINGS, FAKE_SEARCH,
                         embedder=FakeEmbedder())

    result = run_eval(corpus, write_questions(folder / "tiny.jsonl", TINY_SET),
                      list(ALL_RETRIEVERS), progress=False, assistant_factory=fake_assistant)
    write_results(folder / "out.json", result)
    return result, folder / "out.json", corpus


def test_a_run_records_every_question_with_every_retriever(fake_run):
    _, out, _ = fake_run
    data = json.loads(out.read_text(encoding="utf-8"))
    assert set(data["metrics"]) == set(ALL_RETRIEVERS)
    for block in data["metrics"].values():
        assert tuple(block) == METRIC_KEYS
        assert (block["n_questions"], block["n_failed"]) == (5, 1)
        assert (block["n_answerable"], block["n_unanswerable"]) == (3, 2)
        assert block["citation_valid"] in (None, 1.0)
    records = data["questions"]
    assert len(records) == 15
    assert sorted({r["retriever"] for r in records}) == sorted(ALL_RETRIEVERS)
    assert {r["id"] for r in records} == {q["id"] for q in TINY_SET}
    for r in records:
        for key in ("id", "question", "kind", "answer", "abstained", "citations", "passages",
                    "retrieved_sources", "latency_ms", "support"):
            assert key in r, key
        if r["id"] == "t5":
            assert r["error"] and "\n" not in r["error"]
            continue
        assert "error" not in r
        sources = [p["source"] for p in r["passages"]]
        assert r["retrieved_sources"] == list(dict.fromkeys(sources))
        assert r["latency_ms"] > 0
    assert data["run"]["retrievers"] == list(ALL_RETRIEVERS)


def test_a_run_measures_what_the_assistant_did(fake_run):
    """The three facts are easy for the fake embedder: hybrid retrieval and answers score
    perfectly, and hiding the file that answers makes the assistant abstain."""
    result, _, _ = fake_run
    hybrid = result["metrics"]["hybrid"]
    assert hybrid["recall@1"] == hybrid["answer_contains"] == hybrid["citation_valid"] == 1.0
    assert hybrid["abstain_answerable"] == 0.0
    assert hybrid["abstain_unanswerable"] == 0.5  # t4 abstained; the blank t5 failed instead
    by_id = {r["id"]: r for r in result["questions"] if r["retriever"] == "hybrid"}
    assert "Marie Harel" in by_id["t3"]["answer"]  # the history reached Assistant.ask
    assert by_id["t2"]["withheld_abstained"] is True
    assert by_id["t4"]["withheld_abstained"] is None  # unanswerable: nothing to hide
    assert hybrid["abstain_withheld"] is not None


def test_single_retriever_metrics_block_is_flat(fake_run, tmp_path):
    result, _, corpus = fake_run
    index = Path(result["run"]["index"])

    def fake_assistant(corpus, index_dir, *args, **kwargs) -> Assistant:
        return Assistant(corpus, index, FAKE_SETTINGS, FAKE_SEARCH, embedder=FakeEmbedder())

    one = run_eval(corpus, write_questions(tmp_path / "one.jsonl", TINY_SET[1:2]), ["bm25"],
                   progress=False, assistant_factory=fake_assistant)
    write_results(tmp_path / "out.json", one)
    data = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    assert tuple(data["metrics"]) == METRIC_KEYS and data["metrics"]["n_questions"] == 1
    assert [r["retriever"] for r in data["questions"]] == ["bm25"]


def test_report_writes_results_and_plot(fake_run, tmp_path):
    from eval.report import main as report_main
    _, out, _ = fake_run
    md, png = tmp_path / "RESULTS.md", tmp_path / "abstention.png"
    assert report_main(["--seeds", str(out), "--piaf", str(out), "--out", str(md),
                        "--plot", str(png)]) == 0
    text = md.read_text(encoding="utf-8")
    assert "| `recall@5` |" in text and "abstention.png" in text and "rag eval" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- the real model

SMALL_SET = [
    {"id": "s1", "question": "Quel pourcentage du PIB Donald Trump a-t-il exigé des membres de "
     "l'alliance transatlantique ?", "answers": ["5 %"], "sources": ["000_024703823b32d0c5.txt"],
     "answerable": True, "kind": "fact"},
    {"id": "s2", "question": "Combien de soldats nord-coréens le Pentagone estime-t-il envoyés "
     "dans la région de Koursk ?", "answers": ["10 000"], "sources": ["004_8d320c1e2e7514cc.txt"],
     "answerable": True, "kind": "fact"},
    {"id": "s3", "question": "Who was the US Secretary of Defense in 2017?",
     "answers": ["Mattis"], "sources": ["002_eec1d2d7e8e00ced.txt"], "answerable": True,
     "kind": "english"},
    {"id": "s4", "question": "Quelle est la recette de la tarte tatin ?", "answers": [],
     "sources": [], "answerable": False, "kind": "unanswerable_offtopic"},
    {"id": "s5", "question": "Qui a gagné la Coupe du monde de football 1998 ?", "answers": [],
     "sources": [], "answerable": False, "kind": "unanswerable_offtopic", "note": "ignored"},
    {"id": "s6", "question": "   ", "answers": [], "sources": [], "answerable": False,
     "kind": "blank"},
]


@pytest.mark.slow
def test_rag_eval_all_retrievers_on_the_seeds(seeds_copy, assistant, tmp_path, rag_main):
    """`rag eval --retriever all` with the real model, on the index the session's assistant
    built (nothing is embedded twice)."""
    out = tmp_path / "out.json"
    result = rag_main("eval", "--corpus", seeds_copy, "--index", assistant.index_dir,
                      "--questions", write_questions(tmp_path / "small.jsonl", SMALL_SET),
                      "--retriever", "all", "--json", out)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    for word in ("recall@5", "bm25", "dense", "hybrid"):
        assert word in result.stdout
    data = json.loads(out.read_text(encoding="utf-8"))
    assert set(data["metrics"]) == {"bm25", "dense", "hybrid"}
    for block in data["metrics"].values():
        assert (block["n_questions"], block["n_failed"]) == (6, 1)
        assert block["citation_valid"] in (None, 1.0)
    assert len(data["questions"]) == 18
    hybrid = {r["id"]: r for r in data["questions"] if r["retriever"] == "hybrid"}
    assert "000_024703823b32d0c5.txt" in hybrid["s1"]["retrieved_sources"]
    # asked again with its file hidden, the soldiers question has nothing left to answer from
    assert hybrid["s2"]["withheld_abstained"] is True
    assert hybrid["s4"]["withheld_abstained"] is None


@pytest.mark.slow
def test_quality_gates_hold_on_the_project_question_set(assistant, seeds_copy):
    """THE quality gate: the full project question set on the seeds with the chat's (hybrid)
    retriever must meet every floor of eval/gates.json."""
    result = run_eval(seeds_copy, DEFAULT_QUESTIONS, ["hybrid"], progress=False,
                      assistant_factory=lambda *args, **kwargs: assistant)
    metrics = result["metrics"]["hybrid"]
    assert metrics["n_questions"] == len(load_questions(DEFAULT_QUESTIONS))
    failures = [f"{name}={value} (needs {'>=' if kind == 'min' else '<='} {bound})"
                for name, kind, bound, value, ok in check_gates(metrics, load_gates(DEFAULT_GATES))
                if not ok]
    assert not failures, "quality gates failed: " + "; ".join(failures)
