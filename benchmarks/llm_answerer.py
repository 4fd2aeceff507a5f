"""Reader vs the generative answerer (an OpenAI-compatible server), in one run, on the same
questions of the seeds, PIAF and SQuAD 2.0 validation sets, with the evaluation's own metrics
(eval/metrics.py) plus the claims the check dropped, the fallbacks and the latency.

    python benchmarks/llm_answerer.py --llm-url http://127.0.0.1:11434/v1 [--llm-model NAME]
    python benchmarks/llm_answerer.py --smollm2          # starts llama.cpp's server (xllamacpp)
        [--sets seeds,piaf,squad2] [--limit 10] [--seeds-limit 20] [--passages 5]
        [--max-tokens 400] [--first-token-timeout 30] [--total-timeout 120] [--withheld]
        [--json OUT]
    python benchmarks/llm_answerer.py --claims          # measures the claim check alone

``--limit`` takes that many validation questions of PIAF and SQuAD, evenly spaced through the
file (``--seeds-limit`` for the seeds), so a small model on two cores finishes in minutes. Each
question is asked by both answerers through one assistant (same index, same passages). Without
``--withheld`` the questions are not asked again with their files hidden (that doubles the LLM's
time); ``abstain_withheld`` is then n/a.

``--claims`` measures the check of rag/llm/verify.py without a model: on the seeds' answerable
questions, a claim "question : gold answer" must be accepted against the gold sentence; the same
claim with another question's answer, and the right claim against a sentence of the same passage
that lacks the answer, must be refused. It prints the share accepted for several thresholds.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.config import LlmSettings, SearchSettings, cache_dir, set_offline_environment  # noqa: E402

set_offline_environment()

from eval.metrics import SourceLines, compute_metrics  # noqa: E402
from eval.runner import ask_one, format_value, load_questions  # noqa: E402

BENCH = ROOT.parent / "shared" / "bench"
SETS = {
    "seeds": (ROOT / "seeds", ROOT / "eval" / "questions.jsonl", None),
    "piaf": (BENCH / "piaf" / "corpus", BENCH / "piaf" / "questions.jsonl", "piaf"),
    "squad2": (BENCH / "squad2" / "corpus", BENCH / "squad2" / "questions.jsonl", "squad2"),
}
SHOWN = ("recall@5", "answer_contains", "top_citation_contains", "answer_chars_p50",
         "abstain_unanswerable", "abstain_answerable", "abstain_withheld", "citation_valid",
         "unsupported_claims", "llm_fallback", "latency_ms_p50", "latency_ms_p95",
         "n_questions", "n_answerable", "n_unanswerable")


def spread(questions: list[dict], limit: int | None) -> list[dict]:
    """``limit`` questions evenly spaced through the list (all of them without a limit)."""
    if not limit or limit >= len(questions):
        return questions
    step = len(questions) / limit
    return [questions[int(i * step)] for i in range(limit)]


def set_questions(name: str, limit: int | None) -> list[dict]:
    _, path, split_name = SETS[name]
    questions = load_questions(path)
    if split_name:  # the validation articles, never used to train or tune the reader
        from rag.reader.dataset import split_of
        questions = [q for q in questions if q["sources"] and split_of(q["sources"][0])
                     == "validation"]
    return spread(questions, limit)


def run_set(name: str, args, url: str, model: str, extra: dict) -> dict[str, dict]:
    from rag.assistant import Assistant
    from rag.llm.answerer import LlmAnswerer
    from rag.llm.client import LlmClient
    corpus, _, bench_name = SETS[name]
    index = Path(args.indexes) / f"{bench_name}-index" if bench_name else None
    limit = args.seeds_limit if name == "seeds" else args.limit
    questions = set_questions(name, limit)
    started = time.perf_counter()
    assistant = Assistant(corpus, index, progress=sys.stderr.isatty())
    assistant.embedder
    print(f"{name}: {len(questions)} questions, index ready in "
          f"{time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    reader, reader_search = assistant.answerer, assistant.search
    llm = LlmSettings(url=url, model=model, passages=args.passages, max_tokens=args.max_tokens,
                      first_token_timeout=args.first_token_timeout,
                      total_timeout=args.total_timeout)
    generative = LlmAnswerer(llm, fallback=reader, client=LlmClient(llm, extra_body=extra))
    sources = SourceLines(corpus, assistant.index_settings.min_words)
    blocks, records_by = {}, {}
    for label, answerer, search in (
            ("reader", reader, reader_search),
            ("llm", generative, replace(reader_search, answerer="llm", llm=llm))):
        assistant.answerer, assistant.search = answerer, search
        records, began = [], time.perf_counter()
        for i, question in enumerate(questions, start=1):
            records.append(ask_one(assistant, question, "hybrid", withheld=args.withheld))
            if label == "llm":
                print(f"  {name} {label} {i}/{len(questions)} "
                      f"{records[-1].get('latency_ms') or 0:.0f} ms "
                      f"{records[-1].get('answerer')}", file=sys.stderr, flush=True)
        blocks[f"{name} {label}"] = compute_metrics(records, corpus, sources=sources)
        blocks[f"{name} {label}"]["seconds"] = round(time.perf_counter() - began, 1)
        records_by[label] = records
        if label == "llm":
            notes = Counter(r["note"].split(" (")[0] for r in records
                            if r.get("note"))
            print(f"{name}: why the reader answered instead: "
                  + ("; ".join(f"{n} x{k}" for n, k in notes.most_common()) or "never"),
                  flush=True)
    if args.json:
        args.dump[name] = records_by
    return blocks


def print_table(blocks: dict[str, dict]) -> None:
    names = list(blocks)
    width = max(len(k) for k in SHOWN) + 2
    print("metric".ljust(width) + "".join(n.rjust(14) for n in names))
    for key in (*SHOWN, "seconds"):
        print(key.ljust(width) + "".join(format_value(key, blocks[n].get(key)).rjust(14)
                                         for n in names))


@contextlib.contextmanager
def server(args):
    """The server to measure: the one given, or SmolLM2 on llama.cpp's server (xllamacpp)."""
    if not args.smollm2:
        yield args.llm_url, args.llm_model, {}
        return
    from rag.llm.local import SMOLLM2_ALIAS, local_server, smollm2_gguf
    with local_server(smollm2_gguf(), threads=args.threads) as url:
        yield url, SMOLLM2_ALIAS, {"cache_prompt": False}


# --- the claim check alone -------------------------------------------------------------------


def claims_benchmark() -> None:
    import numpy as np

    from rag.answer_types import expected_type
    from rag.assistant import Assistant
    from rag.language import is_english, normalize_answer
    from rag.llm.verify import sentence_support
    assistant = Assistant(ROOT / "seeds")
    index = assistant.index
    questions = [q for q in load_questions(ROOT / "eval" / "questions.jsonl")
                 if q["answerable"] and q["answers"]]
    cases = []  # (kind of case, claim, sentence text, passage text, question)
    for i, q in enumerate(questions):
        gold = q["answers"][0]
        context, passages = assistant.retrieve(q["question"])
        for passage in passages[:5]:
            sentences = index.sentences_of([passage.chunk_id])
            texts = [index.sentence_text(s) for s in sentences]
            holding = [t for t in texts if normalize_answer(gold) in normalize_answer(t)]
            if not holding or passage.source not in q["sources"]:
                continue
            claim = f"{q['question'].rstrip(' ?')} : {gold}."
            kind = expected_type(q["question"])
            others = [o["answers"][0] for o in questions if o is not q and o["answers"]
                      and expected_type(o["question"]) == kind
                      and normalize_answer(o["answers"][0]) not in normalize_answer(passage.text)]
            cases.append(("right claim, its sentence", claim, holding[0], passage.text,
                          q["question"]))
            if others:
                wrong = f"{q['question'].rstrip(' ?')} : {others[i % len(others)]}."
                cases.append(("wrong answer, same sentence", wrong, holding[0], passage.text,
                              q["question"]))
            lacking = [t for t in texts if normalize_answer(gold) not in normalize_answer(t)]
            if lacking:
                cases.append(("right claim, another sentence", claim, lacking[0], passage.text,
                              q["question"]))
            break
    embed = assistant.embedder.encode_passages
    claim_vectors = embed([c[1] for c in cases])
    sentence_vectors = embed([c[2] for c in cases])
    kinds = sorted({c[0] for c in cases})
    print(f"{len(cases)} cases from {len(questions)} answerable seeds questions: "
          + ", ".join(f"{k} {sum(c[0] == k for c in cases)}" for k in kinds))
    grid = [(o, c) for o in (0.4, 0.5, 0.6, 0.7, 1.01) for c in (0.85, 0.88, 0.9, 0.92, 1.01)]
    print("accepted share per case (overlap threshold / cosine threshold; 1.01 = that test off)")
    print("overlap cosine " + "".join(k[:30].rjust(32) for k in kinds))
    for overlap, cosine in grid:
        settings = LlmSettings(support_overlap=overlap, support_cosine=cosine)
        accepted = {k: [] for k in kinds}
        for (kind, claim, sentence, passage, question), cv, sv in zip(cases, claim_vectors,
                                                                       sentence_vectors):
            same_language = is_english(question) == is_english(passage)
            support = sentence_support(claim, cv, sentence, sv, passage, same_language, settings,
                                       question=question)
            accepted[kind].append(support.supported)
        print(f"{overlap:7.2f} {cosine:6.2f} "
              + "".join(f"{np.mean(accepted[k]):32.3f}" for k in kinds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm-url", default="")
    parser.add_argument("--llm-model", default="")
    parser.add_argument("--smollm2", action="store_true",
                        help="start SmolLM2-135M-Instruct on llama.cpp's server (xllamacpp)")
    parser.add_argument("--sets", default="seeds,piaf,squad2")
    parser.add_argument("--limit", type=int, default=10, help="PIAF and SQuAD questions")
    parser.add_argument("--seeds-limit", type=int, default=None, help="default: all 74")
    parser.add_argument("--passages", type=int, default=LlmSettings.passages)
    parser.add_argument("--max-tokens", type=int, default=LlmSettings.max_tokens)
    parser.add_argument("--first-token-timeout", type=float,
                        default=LlmSettings.first_token_timeout)
    parser.add_argument("--total-timeout", type=float, default=LlmSettings.total_timeout)
    parser.add_argument("--threads", type=int, default=2, help="--smollm2: llama.cpp threads "
                        "(1 fares better on cores other work keeps busy)")
    parser.add_argument("--withheld", action="store_true",
                        help="also ask each question with its files hidden (doubles the time)")
    parser.add_argument("--json", type=Path, default=None, help="write every record here")
    parser.add_argument("--claims", action="store_true", help="measure the claim check alone")
    parser.add_argument("--indexes", type=Path, default=cache_dir() / "reader-training",
                        help="folder of piaf-index/ and squad2-index/ (built when missing), "
                             "default: where `rag train-reader` keeps them")
    args = parser.parse_args()
    if args.claims:
        claims_benchmark()
        return
    if not args.smollm2 and not args.llm_url:
        parser.error("give --llm-url (and --llm-model) or --smollm2")
    args.dump = {}
    started = time.perf_counter()
    blocks: dict[str, dict] = {}
    with server(args) as (url, model, extra):
        print(f"server {url}, model {model or '(the only one served)'}; passages "
              f"{args.passages}, max_tokens {args.max_tokens}, timeouts first token "
              f"{args.first_token_timeout:g} s, total {args.total_timeout:g} s", flush=True)
        for name in args.sets.split(","):
            blocks.update(run_set(name, args, url, model, extra))
    print_table(blocks)
    print(f"total {time.perf_counter() - started:.0f} s; {SearchSettings().retriever} retriever")
    if args.json:
        args.json.write_text(json.dumps(args.dump, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    main()
