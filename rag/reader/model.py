"""The reader's classifier: a small two-layer network over the candidate features, run in NumPy.

Weights live in ``rag/reader/weights/reader.safetensors`` (fp16) beside ``reader.json``, which
records their sha256 (checked at every load), the feature names, the thresholds chosen on
validation data and how the weights were trained and measured. No pickle, no download.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ReaderError
from .features import FEATURES_VERSION, SCALAR_NAMES

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "reader.safetensors"
TENSORS = ("mean", "scale", "w1", "b1", "w2", "b2")


@dataclass(frozen=True)
class ReaderModel:
    """``probabilities(features)`` = sigmoid(relu(((x - mean) * scale) W1 + b1) W2 + b2)."""

    mean: np.ndarray
    scale: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    #: Below this probability for its best sentence, the reader abstains (chosen on validation).
    threshold: float
    #: A further sentence joins the answer only at this probability or more.
    extra_threshold: float
    card: dict

    @property
    def uses_products(self) -> bool:
        """Whether it reads the question x sentence vector products besides the scalars."""
        return bool(self.card.get("products"))

    def logits(self, features: np.ndarray) -> np.ndarray:
        x = (np.asarray(features, np.float32) - self.mean) * self.scale
        hidden = np.maximum(x @ self.w1 + self.b1, 0.0)
        return (hidden @ self.w2 + self.b2).reshape(-1)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        return sigmoid(self.logits(features))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x) without overflow for large |x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def card_path(weights: Path) -> Path:
    return Path(weights).with_suffix(".json")


def load_reader(weights: Path = DEFAULT_WEIGHTS) -> ReaderModel:
    """The reader stored at ``weights``; ``ReaderError`` when it is missing, altered or built
    for other features (retrain with `rag train-reader`, or restore the file from git)."""
    from safetensors.numpy import load_file
    weights = Path(weights)
    try:
        card = json.loads(card_path(weights).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReaderError(f"reader card {card_path(weights)} is unreadable ({exc.__class__.__name__}); "
                          "restore it from git or run `rag train-reader`") from None
    if not weights.is_file():
        raise ReaderError(f"reader weights {weights} are missing; restore them from git or run "
                          "`rag train-reader`")
    if sha256_of(weights) != card.get("sha256"):
        raise ReaderError(f"reader weights {weights} do not match the sha256 in "
                          f"{card_path(weights).name}; restore them from git or run `rag train-reader`")
    if (tuple(card.get("scalar_features", ())) != SCALAR_NAMES
            or card.get("features_version", 1) != FEATURES_VERSION):
        raise ReaderError("reader weights were trained on other features than this program "
                          "computes; run `rag train-reader`")
    try:
        tensors = load_file(str(weights))
        arrays = {name: tensors[name].astype(np.float32) for name in TENSORS}
    except Exception as exc:  # a damaged file, whatever the library says about it
        raise ReaderError(f"reader weights {weights} are unreadable ({exc.__class__.__name__}); "
                          "restore them from git or run `rag train-reader`") from None
    if not card.get("products") and arrays["w1"].shape[0] != len(SCALAR_NAMES):
        raise ReaderError("reader weights do not match this program's features; "
                          "run `rag train-reader`")
    return ReaderModel(**arrays, threshold=float(card["threshold"]),
                       extra_threshold=float(card["extra_threshold"]), card=card)


def save_reader(path: Path, arrays: dict[str, np.ndarray], card: dict) -> None:
    """Write fp16 weights and their card (with the sha256 of the weights file)."""
    from safetensors.numpy import save_file
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: np.ascontiguousarray(arrays[k], dtype=np.float16) for k in TENSORS}, str(tmp))
    tmp.replace(path)
    card = {**card, "sha256": sha256_of(path), "bytes": path.stat().st_size,
            "scalar_features": list(SCALAR_NAMES)}
    card_path(path).write_text(json.dumps(card, ensure_ascii=False, indent=1) + "\n",
                               encoding="utf-8")
