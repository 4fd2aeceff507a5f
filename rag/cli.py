"""`rag index | ask | chat | eval`: the command line.

Every failure a user can cause (missing corpus, unreadable index, blank question, unknown model)
ends with one line on stderr that says what to do and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import sys
from dataclasses import replace
from pathlib import Path

from .config import (ANSWERERS, DEFAULT_CORPUS, PRECISIONS, RETRIEVERS, ClusterSettings,
                     IndexSettings, SearchSettings, default_index_dir, set_offline_environment)
from .config import LlmSettings
from .errors import RagError, UserError
from .stores import parse_store, redact

EXIT_USAGE = 2
#: Environment variables for the generative answerer's server (rag/llm); the API key's
#: (RAG_LLM_API_KEY) is read by rag/llm/client.py alone and never printed.
LLM_URL_ENV, LLM_MODEL_ENV, API_KEY_ENV = "RAG_LLM_URL", "RAG_LLM_MODEL", "RAG_LLM_API_KEY"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS,
                        help="folder of .txt/.md/.html files (default: the shipped seeds/)")
    parser.add_argument("--index", type=Path, default=None,
                        help="index folder (default: one per corpus under ~/.cache/rag/indexes)")
    parser.add_argument("--model", default=IndexSettings.model,
                        help="embedding model: the bundled multilingual-e5-small, a local folder "
                             "or a sentence-transformers name in the local cache")
    parser.add_argument("--precision", choices=PRECISIONS, default=IndexSettings.precision,
                        help="how the bundled model runs: fp32 (PyTorch, default) or int8 (ONNX "
                             "Runtime: several times faster, slightly less exact quotes); other "
                             "models run as they are")
    parser.add_argument("--sentence-vectors", action=argparse.BooleanOptionalAction,
                        default=IndexSettings.sentence_vectors,
                        help="embed every sentence at index time (default); without, a question "
                             "embeds the sentences of its best passages (index about 5x faster, "
                             "see README)")
    parser.add_argument("--store", action="append", default=None, metavar="URL",
                        help="where the vectors live: 'local' (FAISS files in the index folder, "
                             "the default for a new index) or postgres://USER@HOST:PORT/DB "
                             "(PostgreSQL with pgvector), given once per shard; in each URL, "
                             "replica=HOST:PORT sends reads to a replica, search=exact compares "
                             "every vector. Default: where the index keeps them already")


def _answering(parser: argparse.ArgumentParser) -> None:
    defaults = SearchSettings()
    parser.add_argument("--answerer", choices=ANSWERERS, default=None,
                        help="who reads the passages: the trained reader (default), the "
                             "similarity rules of the extractive answerer, or your own LLM "
                             "(llm: the default once --llm-url or RAG_LLM_URL is given)")
    parser.add_argument("--llm-url", default=os.environ.get(LLM_URL_ENV, ""), metavar="URL",
                        help="OpenAI-compatible server for --answerer llm, e.g. "
                             "http://127.0.0.1:11434/v1 (Ollama) or http://127.0.0.1:8080/v1 "
                             f"(llama.cpp); default ${LLM_URL_ENV}. An API key, if the server "
                             f"needs one, is read from ${API_KEY_ENV}")
    parser.add_argument("--llm-model", default=os.environ.get(LLM_MODEL_ENV, ""), metavar="NAME",
                        help=f"model name on that server (default ${LLM_MODEL_ENV}, else the "
                             "only model it serves)")
    parser.add_argument("--type-rule", action=argparse.BooleanOptionalAction,
                        default=defaults.reader_type_rule,
                        help="reader: only sentences holding the asked kind (number, date...) answer")
    parser.add_argument("--names-rule", action=argparse.BooleanOptionalAction,
                        default=defaults.reader_names_rule,
                        help="reader: a French question's names must appear around the answer")


def search_settings(args: argparse.Namespace) -> SearchSettings:
    """The search settings the command line asked for (defaults elsewhere)."""
    answerer = args.answerer or ("llm" if args.llm_url else SearchSettings.answerer)
    if answerer == "llm" and not args.llm_url:
        raise UserError(f"--answerer llm needs a server: pass --llm-url (e.g. "
                        f"http://127.0.0.1:11434/v1 for Ollama) or set {LLM_URL_ENV}")
    llm = replace(LlmSettings(), url=args.llm_url, model=args.llm_model)
    return SearchSettings(answerer=answerer, reader_type_rule=args.type_rule,
                          reader_names_rule=args.names_rule, llm=llm)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rag", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="build or update the index of a corpus")
    _common(p)
    p.add_argument("--rebuild", action="store_true", help="rebuild everything from scratch")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="embed on the Ray cluster at ADDRESS (HOST:6379, the head's address; run "
                        "this on a node of the cluster), or 'auto' for a 2-node cluster on this "
                        "machine started for the run (needs the ray extra: pip install "
                        "'rag-cite[ray]')")
    p.add_argument("--ray-actors", type=int, default=None, metavar="N",
                   help="with --ray: actors embedding at once (default: one per CPU of the "
                        "cluster, one per GPU when it has GPUs; 2 with 'auto')")

    p = sub.add_parser("ask", help="answer one question with citations")
    _common(p)
    p.add_argument("question")
    p.add_argument("--retriever", choices=RETRIEVERS, default="hybrid")
    _answering(p)
    p.add_argument("--json", action="store_true", help="print the answer as one JSON object")

    p = sub.add_parser("chat", help="serve the chat UI")
    _common(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: local only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--watch", action=argparse.BooleanOptionalAction, default=True,
                   help="follow changes to the corpus folder while the chat runs: changed "
                        "files are indexed again and answered from within seconds (default: on)")
    _answering(p)

    p = sub.add_parser("eval", help="run the evaluation question set")
    _common(p)
    p.add_argument("--questions", type=Path, default=None,
                   help="questions JSONL (default: eval/questions.jsonl)")
    p.add_argument("--retriever", choices=(*RETRIEVERS, "all"), default="hybrid")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="write results here")
    p.add_argument("--limit", type=int, default=None, help="ask only the first N questions")
    p.add_argument("--split", choices=("all", "train", "validation"), default="all",
                   help="only the questions of the reader's train or validation articles "
                        "(for the benchmarks the reader was trained on; see rag/reader/dataset.py)")
    _answering(p)
    p.add_argument("--gates", action="store_true",
                   help="exit with status 1 when a metric falls below its floor (eval/gates.json)")

    p = sub.add_parser("train-reader", help="train the reader on PIAF and SQuAD 2.0 (optional: "
                                            "trained weights ship with the program)")
    p.add_argument("--bench", type=Path, default=None,
                   help="folder holding piaf/ and squad2/ (default: ../shared/bench)")
    p.add_argument("--out", type=Path, default=None,
                   help="weights file to write (default: rag/reader/weights/reader.safetensors)")
    p.add_argument("--work", type=Path, default=None,
                   help="folder for the benchmark indexes and candidates (default: the cache)")
    p.add_argument("--seed", type=int, default=None, help="default: the seed of the shipped weights")
    p.add_argument("--limit", type=int, default=None, help="only the first N questions of each set")
    return parser


def index_settings(args: argparse.Namespace) -> IndexSettings:
    """The index settings the command line asked for (defaults elsewhere)."""
    return IndexSettings(model=args.model, precision=args.precision,
                         sentence_vectors=args.sentence_vectors)


def _assistant(args: argparse.Namespace, progress: bool):
    from .assistant import Assistant
    return Assistant(args.corpus, args.index, index_settings(args), search_settings(args),
                     progress=progress, store=parse_store(args.store))


@contextlib.contextmanager
def _encoder(args: argparse.Namespace, settings: IndexSettings):
    """With ``--ray``: the cluster's ``load_model`` (None otherwise: the local model)."""
    if args.ray is None:
        yield None
        return
    if args.ray_actors is not None and args.ray_actors < 1:
        raise UserError("--ray-actors must be 1 or more")
    import importlib.util
    if importlib.util.find_spec("ray") is None:
        raise UserError("--ray needs Ray, which is not installed: pip install 'rag-cite[ray]'")
    from .ray_embed import ray_encoder_factory
    with ray_encoder_factory(args.ray, settings.model, settings.precision,
                             ClusterSettings(actors=args.ray_actors)) as load_model:
        yield load_model


def cmd_index(args: argparse.Namespace) -> int:
    from .embedder import load_embedder
    from .index import update_index
    settings = index_settings(args)
    index_dir = args.index or default_index_dir(args.corpus)
    store = parse_store(args.store)
    with _encoder(args, settings) as load_model:
        report = update_index(args.corpus, index_dir, settings,
                              load_model or (lambda: load_embedder(settings.model,
                                                                   settings.precision)),
                              rebuild=args.rebuild, progress=sys.stderr.isatty(),
                              store=store)
    if report.reason and not report.repaired:  # a repair was already announced as a warning
        print(f"full rebuild: {report.reason}", file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        print(f"{report.files} files, {report.chunks} chunks: {report.embedded} embedded, "
              f"{report.reused} reused, {report.removed} files removed in {report.seconds:.1f} s "
              f"-> {index_dir}"
              + (f", vectors in {store}" if store and not store.is_local else ""))
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    assistant = _assistant(args, progress=sys.stderr.isatty())
    answer = assistant.ask(args.question, retriever=args.retriever)
    if answer.note:  # the LLM failed or wrote nothing supported: the reader's answer follows
        print(f"rag: note: {answer.note}", file=sys.stderr)
    if args.json:
        print(json.dumps(answer.to_json(), ensure_ascii=False))
        return 0
    print(answer.answer)
    print()
    for c in answer.citations:
        print(f"[{c.n}] {_where(c)}")
    if answer.abstained:
        for p in answer.passages[:3]:
            print(f"- {_where(p)}")
    return 0


def _where(span) -> str:
    """``file:12-14``, or ``file, page 3:12-14`` for a file with pages (lines of that page)."""
    page = f", page {span.page}" if getattr(span, "page", None) is not None else ""
    return f"{span.source}{page}:{span.start_line}-{span.end_line}"


def cmd_chat(args: argparse.Namespace) -> int:
    assistant = _assistant(args, progress=sys.stderr.isatty())
    assistant.embedder  # load the model before the first visitor, not during their question
    from ui.app import serve

    from .watch import CorpusWatcher, describe
    watcher = None
    if args.watch:
        watcher = CorpusWatcher(assistant, lambda report: print(describe(report), flush=True))
        watcher.start()
    try:
        serve(assistant, host=args.host, port=args.port)
    finally:
        if watcher is not None:
            watcher.stop()
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from eval import runner
    retrievers = list(runner.ALL_RETRIEVERS) if args.retriever == "all" else [args.retriever]
    questions = args.questions or runner.DEFAULT_QUESTIONS
    gates = runner.load_gates() if args.gates else None  # a broken gates file fails first
    if args.gates and runner.GATED_RETRIEVER not in retrievers:
        raise UserError(f"--gates applies to the {runner.GATED_RETRIEVER} retriever; "
                        f"use --retriever {runner.GATED_RETRIEVER} or all")
    if args.json is not None and args.json.is_dir():
        raise UserError(f"--json {args.json} is a folder; give a file name")
    result = runner.run_eval(args.corpus, questions, retrievers, index_dir=args.index,
                             model=args.model, precision=args.precision, limit=args.limit,
                             sentence_vectors=args.sentence_vectors,
                             progress=True,
                             search=search_settings(args), split=args.split,
                             store=parse_store(args.store))
    result["run"]["command"] = shlex.join(["rag", *args.argv])
    print(runner.summary(result))
    if args.json is not None:
        runner.write_results(args.json, result)
        print(f"results written to {args.json}")
    if gates is not None:
        passed, text = runner.gate_report(result, gates)
        print(text)
        if not passed:
            return 1
    return 0


def cmd_train_reader(args: argparse.Namespace) -> int:
    from .reader.dataset import BENCH_DIR
    from .reader.model import DEFAULT_WEIGHTS
    from .reader.train import SEED, print_card, train_reader
    bench = args.bench or BENCH_DIR
    missing = [b for b in ("piaf", "squad2") if not (Path(bench) / b / "questions.jsonl").is_file()]
    if missing:
        raise UserError(f"no {' or '.join(missing)} benchmark under {bench}; "
                        "give the folder holding piaf/ and squad2/ with --bench")
    seed = SEED if args.seed is None else args.seed
    card = train_reader(Path(bench), args.out or DEFAULT_WEIGHTS, args.work, seed, args.limit)
    print_card(card)
    print(f"weights written to {args.out or DEFAULT_WEIGHTS}")
    return 0


#: Options that name files or folders.
PATH_OPTIONS = ("corpus", "index", "questions", "json", "bench", "out", "work")


def check_paths(args: argparse.Namespace) -> None:
    """Refuse a path that is not valid UTF-8 (the shell passes such bytes on; Python carries them
    as lone surrogates): the index records its corpus and files as UTF-8 text and could not."""
    for option in PATH_OPTIONS:
        value = getattr(args, option, None)
        if isinstance(value, Path):
            try:
                str(value).encode("utf-8")
            except UnicodeEncodeError:
                shown = repr(bytes(value))
                raise UserError(f"--{option} {shown} is not valid UTF-8; rename it or use a "
                                "symlink with a UTF-8 name") from None


COMMANDS = {"index": cmd_index, "ask": cmd_ask, "chat": cmd_chat, "eval": cmd_eval,
            "train-reader": cmd_train_reader}


def main(argv: list[str] | None = None) -> int:
    set_offline_environment()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = [redact(a) for a in argv]  # recorded by `rag eval`; never a password
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s: %(message)s")
    try:
        check_paths(args)
        return COMMANDS[args.command](args)
    except RagError as exc:
        print(f"rag: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("rag: interrupted; the previous index is still in place", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
