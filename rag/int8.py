"""The bundled encoder in int8 for CPU inference, run by ONNX Runtime.

Why: on a 2-core laptop the fp32 encoder is the slowest part of both jobs: indexing (every chunk
and every sentence is embedded) and every question (one embedding). ONNX Runtime with fused BERT
kernels and int8 weights embeds a question and a corpus several times faster
(benchmarks/RESULTS.md, "int8 encoder"), and its vectors stay within a cosine of 0.997 of fp32's.
PyTorch's own dynamic quantisation was measured too: 1.5x faster but only 0.974 cosine to fp32,
so it was not kept.

The recipe, applied once to the converted fp32 folder and written beside it in the user cache
(``<model folder>-int8/``, atomically, like the conversion):

1. export the transformer to ONNX with eager attention (the pattern ONNX Runtime's BERT optimiser
   recognises), inputs ``input_ids``/``attention_mask``, output the last hidden state;
2. fuse embeddings + LayerNorm, attention, bias + GELU and skip + LayerNorm into single kernels;
3. quantise every MatMul weight to int8, one scale per output channel (dynamic quantisation:
   activations are quantised on the fly, so no calibration data is needed).

The cost, measured on PIAF's 3,779 questions (benchmarks/RESULTS.md, "int8 encoder"): retrieval
is unchanged (recall@5 0.935 against 0.937), but the first quoted sentence holds the answer 0.014
less often (0.635 against 0.649), because the reader's choice between neighbouring sentences
rests on small differences of similarity. Leaving each layer's second feed-forward projection in
fp32 (the widest activations) halved that loss (0.641) for 1.6x the time, and a reader retrained
on int8 vectors did not win it back; so int8 is the option for speed (large folders to index),
and fp32 stays the default.

Mean pooling over the attention mask and L2 normalisation then run in NumPy, exactly as the
folder's Pooling and Normalize modules do, and texts get the same prompts and truncation.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Written last into an int8 folder: its presence means the folder is complete.
INFO_FILE = "rag_int8.json"
#: Bump when the recipe changes, so that older int8 folders are rebuilt.
RECIPE_VERSION = 3
ONNX_FILE = "model_int8.onnx"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
_OPSET = 17


class OnnxSentenceEncoder:
    """Runs an int8 folder built by :func:`build_int8_folder`.

    It offers the part of ``SentenceTransformer``'s interface that :class:`rag.embedder.Embedder`
    uses (``encode``, ``tokenizer``, ``max_seq_length``, ``prompts``,
    ``get_embedding_dimension``), so the rest of the program does not know which one it holds.
    """

    def __init__(self, folder: Path, threads: int | None = None) -> None:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        info = read_info(folder)
        if info is None:
            raise ValueError(f"{folder} is not a complete int8 model folder")
        self.folder = Path(folder)
        self.prompts: dict[str, str] = info["prompts"]
        self.max_seq_length: int = int(info["max_seq_length"])
        self._dim = int(info["dim"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        # Idle worker threads would otherwise spin for a while after each call and take the CPU
        # from the retrieval and reader work that follows the question's embedding.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(folder / ONNX_FILE), options,
                                             providers=["CPUExecutionProvider"])

    def get_embedding_dimension(self) -> int:
        return self._dim

    def encode(self, sentences: list[str], prompt: str | None = None, batch_size: int = 32,
               show_progress_bar: bool = False, convert_to_numpy: bool = True,
               normalize_embeddings: bool = True) -> np.ndarray:
        """L2-normalised float32 vectors ``(n, dim)``.

        Texts run one at a time, whatever ``batch_size`` says: dynamic quantisation scales the
        activations over the whole batch, so in a batch a text's vector would depend on its
        neighbours (up to 0.014 per component), and an index updated file by file would differ
        from one built at once. Alone, a text always gets the same vector, and without padding
        it is no slower on a CPU (benchmarks/RESULTS.md, "int8 encoder").
        """
        texts = [(prompt or "") + text for text in sentences]
        vectors = np.zeros((len(texts), self._dim), dtype=np.float32)
        rows = range(len(texts))
        if show_progress_bar:
            from tqdm.auto import tqdm
            rows = tqdm(rows, desc="Texts", unit="text")
        for row in rows:
            vectors[row] = self._embed([texts[row]])[0]
        if normalize_embeddings:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors /= np.maximum(norms, 1e-12)
        return vectors

    def _embed(self, texts: list[str]) -> np.ndarray:
        batch = self.tokenizer(texts, padding=True, truncation=True,
                               max_length=self.max_seq_length, return_tensors="np")
        ids = batch["input_ids"].astype(np.int64)
        mask = batch["attention_mask"].astype(np.int64)
        hidden = self._session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        weights = mask[..., None].astype(np.float32)
        return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)


def read_info(folder: Path) -> dict | None:
    """The int8 folder's record, or None when the folder is absent or incomplete."""
    try:
        info = json.loads((Path(folder) / INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    needed = ("source_sha256", "recipe_version", "weights_sha256", "prompts", "max_seq_length", "dim")
    return info if isinstance(info, dict) and all(k in info for k in needed) else None


def is_complete(folder: Path, source_sha256: str) -> bool:
    info = read_info(folder)
    return (info is not None and info["source_sha256"] == source_sha256
            and info["recipe_version"] == RECIPE_VERSION and (Path(folder) / ONNX_FILE).is_file())


def build_int8_folder(source: Path, source_sha256: str, out: Path) -> None:
    """Write the int8 build of the sentence-transformers folder ``source`` into ``out`` (a fresh
    temporary folder that the caller renames into place). Takes about a minute on 2 cores."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    started = time.perf_counter()
    out.mkdir(parents=True)
    fp32 = SentenceTransformer(str(source), device="cpu", local_files_only=True)
    pooling = json.loads((Path(source) / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
    if pooling.get("pooling_mode") != "mean":
        raise ValueError(f"int8 build supports mean pooling only, not {pooling.get('pooling_mode')}")
    model = AutoModel.from_pretrained(str(source), attn_implementation="eager",
                                      local_files_only=True).eval()
    config = model.config
    sample = fp32.tokenizer(["query: exemple"], return_tensors="pt")
    exported = out / "model_fp32.onnx"
    fused = out / "model_fused.onnx"
    with torch.no_grad():
        torch.onnx.export(
            _last_hidden(model), (sample["input_ids"], sample["attention_mask"]), str(exported),
            input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
            dynamic_axes={name: {0: "batch", 1: "tokens"}
                          for name in ("input_ids", "attention_mask", "last_hidden_state")},
            opset_version=_OPSET, dynamo=False)
    optimized = optimizer.optimize_model(str(exported), model_type="bert",
                                         num_heads=config.num_attention_heads,
                                         hidden_size=config.hidden_size, opt_level=1)
    optimized.save_model_to_file(str(fused))
    exported.unlink()
    quantize_dynamic(str(fused), str(out / ONNX_FILE), weight_type=QuantType.QInt8,
                     per_channel=True, extra_options={"DefaultTensorType": 1})  # 1 = float
    fused.unlink()
    for name in _TOKENIZER_FILES:
        if (Path(source) / name).is_file():
            shutil.copy2(Path(source) / name, out / name)
    info = {
        "source": str(source),
        "source_sha256": source_sha256,
        "recipe_version": RECIPE_VERSION,
        "weights_sha256": _sha256(out / ONNX_FILE),
        "fused_operators": {k: v for k, v in optimized.get_fused_operator_statistics().items() if v},
        "prompts": dict(fp32.prompts),
        "max_seq_length": int(fp32.max_seq_length),
        "dim": int(fp32.get_embedding_dimension()),
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    (out / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    log.info("int8 encoder built in %.0f s", info["build_seconds"])


def _last_hidden(model: Any) -> Any:
    """``model(input_ids, attention_mask).last_hidden_state`` as a module torch can export."""
    import torch

    class LastHidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    return LastHidden().eval()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
