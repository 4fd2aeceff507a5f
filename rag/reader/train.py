"""`rag train-reader`: train the reader on PIAF and SQuAD 2.0, choose its threshold, measure it.

Reproducible on a 2-core CPU in a few minutes (most of it indexing the two corpora and building
candidates, see ``dataset.py``); fixed seed; progress bars. Steps:

1. candidates and labels for every question of both benchmarks, through the program's own
   index and retrieval; split by article into train and validation;
2. the abstention threshold from out-of-fold predictions on the train part (``FOLDS`` folds by
   article), so the validation part is never used to train or to tune anything;
3. the final classifier on the whole train part; weights (fp16 safetensors) and a card (data,
   seed, size, validation figures, comparison with simpler judges) beside them.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import IndexSettings, SearchSettings, cache_dir
from .dataset import BENCH_DIR, BENCHMARKS, VALIDATION_SHARE, Examples, build_examples, concatenate
from .features import FEATURES_VERSION, SCALAR_NAMES
from .model import DEFAULT_WEIGHTS, save_reader, sigmoid

SEED = 13
HIDDEN = 64
EPOCHS = 24
FOLDS = 3
#: The share of answerable train questions (out of fold) the threshold may refuse.
TARGET_FALSE_REFUSAL = 0.08
#: A further sentence joins an answer at this probability or more.
EXTRA_THRESHOLD = 0.75
#: Abstention is compared across judges at this share of answerable questions refused.
FIXED_FALSE_REFUSAL = 0.10
READER = "reader (shipped: MLP, scalar features)"


@dataclass
class Padded:
    """Candidates as (questions, max candidates, features) with a mask, for listwise training."""

    x: np.ndarray
    y: np.ndarray
    mask: np.ndarray


def pad(ex: Examples, columns: np.ndarray | None = None) -> Padded:
    counts = np.bincount(ex.group, minlength=len(ex.questions))
    width = max(1, int(counts.max()) if len(counts) else 1)
    features = ex.features if columns is None else ex.features[:, columns]
    x = np.zeros((len(ex.questions), width, features.shape[1]), np.float32)
    y = np.zeros((len(ex.questions), width), np.float32)
    mask = np.zeros((len(ex.questions), width), bool)
    slot = np.zeros(len(ex.group), np.int64)
    seen = np.zeros(len(ex.questions), np.int64)
    for i, g in enumerate(ex.group):
        slot[i] = seen[g]
        seen[g] += 1
    x[ex.group, slot] = features
    y[ex.group, slot] = ex.labels
    mask[ex.group, slot] = True
    return Padded(x, y, mask)


def fit(ex: Examples, seed: int = SEED, hidden: int = HIDDEN, epochs: int | None = None,
        columns: np.ndarray | None = None, progress: str | None = None,
        null: bool = True) -> dict[str, np.ndarray]:
    """Train the classifier; returns its arrays (see ``model.TENSORS``).

    Loss per question: binary cross-entropy on every candidate (calibrates the probability the
    abstention threshold reads) plus the listwise cross-entropy of the right choice against all:
    the answering candidates, or, with ``null``, a learned "none of them" score when no candidate
    answers (which sentence comes first, and whether any should).
    """
    import torch
    from tqdm import tqdm
    epochs = EPOCHS if epochs is None else epochs
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    features = ex.features if columns is None else ex.features[:, columns]
    mean = features.mean(0)
    scale = 1.0 / (features.std(0) + 1e-3)
    data = pad(ex, columns)
    x = torch.from_numpy((data.x - mean) * scale * data.mask[..., None])
    y, mask = torch.from_numpy(data.y), torch.from_numpy(data.mask)
    layers = ([torch.nn.Linear(x.shape[-1], hidden), torch.nn.ReLU(), torch.nn.Dropout(0.1),
               torch.nn.Linear(hidden, 1)] if hidden else [torch.nn.Linear(x.shape[-1], 1)])
    net = torch.nn.Sequential(*layers)
    null_logit = torch.nn.Parameter(torch.zeros(1))
    optimiser = torch.optim.AdamW([*net.parameters(), null_logit], lr=2e-3, weight_decay=1e-3)
    batches = range(0, len(x), 64)
    bar = tqdm(total=epochs * len(batches), desc=progress or "train", file=sys.stderr,
               disable=progress is None, unit="batch", mininterval=1)
    for _ in range(epochs):
        net.train()
        order = torch.from_numpy(rng.permutation(len(x)))
        for start in batches:
            pick = order[start:start + 64]
            logits = net(x[pick]).squeeze(-1)
            m, t = mask[pick], y[pick]
            bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[m], t[m])
            masked = logits.masked_fill(~m, -1e4)
            has_answer = (t * m).sum(1) > 0
            if null:  # one more choice, "none of them", right when no candidate answers
                masked = torch.cat([masked, null_logit.expand(len(masked), 1)], dim=1)
                t = torch.cat([t, (~has_answer).float().unsqueeze(1)], dim=1)
                chosen = torch.ones_like(has_answer)
            else:
                chosen = has_answer
            listwise = torch.tensor(0.0)
            if chosen.any():
                all_ = torch.logsumexp(masked[chosen], dim=1)
                good = torch.logsumexp(masked[chosen].masked_fill(t[chosen] < 0.5, -1e4), dim=1)
                listwise = (all_ - good).mean()
            loss = bce + listwise
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            bar.update(1)
    bar.close()
    first, last = net[0], net[-1]
    if not hidden:  # a linear judge, written in the same two-layer form (identity hidden layer)
        weight = first.weight.detach().numpy().T
        return {"mean": mean, "scale": scale, "w1": weight, "b1": first.bias.detach().numpy(),
                "w2": np.ones((1, 1), np.float32), "b2": np.zeros(1, np.float32), "linear": True}
    return {"mean": mean, "scale": scale, "w1": first.weight.detach().numpy().T,
            "b1": first.bias.detach().numpy(), "w2": last.weight.detach().numpy().T,
            "b2": last.bias.detach().numpy()}


def scores_of(arrays: dict, ex: Examples, columns: np.ndarray | None = None) -> np.ndarray:
    """Per-candidate probabilities under ``arrays``."""
    features = ex.features if columns is None else ex.features[:, columns]
    x = (features - arrays["mean"]) * arrays["scale"]
    hidden = x @ arrays["w1"] + arrays["b1"]
    if not arrays.get("linear"):
        hidden = np.maximum(hidden, 0.0)
    return sigmoid((hidden @ arrays["w2"] + arrays["b2"]).reshape(-1))


def question_view(ex: Examples, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per question: the best candidate's score (-inf without candidates) and whether that
    candidate answers."""
    best = np.full(len(ex.questions), -np.inf)
    correct = np.zeros(len(ex.questions), bool)
    order = np.lexsort((-scores, ex.group))  # by question, best first
    first = np.ones(len(order), bool)
    first[1:] = ex.group[order][1:] != ex.group[order][:-1]
    top = order[first]
    best[ex.group[top]] = scores[top]
    correct[ex.group[top]] = ex.labels[top] > 0.5
    return best, correct


def judge_report(ex: Examples, scores: np.ndarray, threshold: float | None) -> dict:
    """Top-1 accuracy, abstention shares at ``threshold``, and abstention on unanswerable
    questions at a fixed false-refusal rate, on one benchmark's examples."""
    best, correct = question_view(ex, scores)
    answerable = np.array([q["answerable"] for q in ex.questions])
    withheld = np.array([q["withheld"] for q in ex.questions])
    unanswerable = ~answerable & ~withheld
    has_positive = np.zeros(len(ex.questions), bool)
    has_positive[ex.group[ex.labels > 0.5]] = True
    fixed = float(np.quantile(best[answerable], FIXED_FALSE_REFUSAL)) if answerable.any() else 0
    out = {
        "questions": int(answerable.sum()),
        "candidate_recall": float(has_positive[answerable].mean()),
        "top1": float(correct[answerable].mean()),
        "abstain_unanswerable_at_10pct": (float((best[unanswerable] < fixed).mean())
                                          if unanswerable.any() else None),
        "abstain_withheld_at_10pct": (float((best[withheld] < fixed).mean())
                                      if withheld.any() else None),
    }
    if threshold is not None:
        out.update({
            "abstain_answerable": float((best[answerable] < threshold).mean()),
            "abstain_unanswerable": (float((best[unanswerable] < threshold).mean())
                                     if unanswerable.any() else None),
            "abstain_withheld": float((best[withheld] < threshold).mean()) if withheld.any() else None,
            "top1_answered": float(correct[answerable & (best >= threshold)].mean()),
        })
    return out


def fold_of(ex: Examples, folds: int) -> np.ndarray:
    """A fold number per question, by article (the first source's hash), never by question."""
    import hashlib
    articles = [q["source"] for q in ex.questions]
    return np.array([int(hashlib.sha256(f"fold:{a}".encode()).hexdigest()[:8], 16) % folds
                     for a in articles])


def out_of_fold_threshold(train: Examples, seed: int,
                          columns: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """The threshold that refuses ``TARGET_FALSE_REFUSAL`` of answerable train questions, from
    predictions each made by a model that did not see that question's article."""
    folds = fold_of(train, FOLDS)
    scores = np.zeros(len(train.labels), np.float32)
    for k in range(FOLDS):
        held = folds == k
        if held.all() or not held.any():  # a fold without data (tiny sets) predicts nothing
            continue
        arrays = fit(train.select(~held), seed, columns=columns, progress=f"fold {k + 1}/{FOLDS}")
        rows = held[train.group]
        scores[rows] = scores_of(arrays, train.select(held), columns)
    best, _ = question_view(train, scores)
    answerable = np.array([q["answerable"] for q in train.questions])
    return float(np.quantile(best[answerable], TARGET_FALSE_REFUSAL)), scores


def baselines(ex: Examples) -> dict[str, np.ndarray]:
    """Scores of simpler judges on the same candidates: the e5 cosine alone, and the extractive
    answerer's rule-weighted score."""
    col = {name: i for i, name in enumerate(SCALAR_NAMES)}
    f, w = ex.features, SearchSettings()
    cosine = f[:, col["cos_sentence"]]
    asks_any = 1.0 - f[:, col["asks_other"]]
    extractive = ((1 - w.context_weight) * cosine + w.context_weight * f[:, col["cos_chunk"]]
                  + w.lexical_weight * f[:, col["overlap_sentence"]]
                  + w.type_bonus * asks_any * f[:, col["typed"]])
    return {"e5 cosine": cosine, "extractive score (rules)": extractive}


def load_or_build(benchmark: str, work: Path, bench: Path, limit: int | None) -> Examples:
    """The examples of one benchmark, cached in ``work`` as .npy + .json (no pickle), reused only
    for the same questions and corpus files (by content), limit, features and index settings (the
    model and its precision make the vectors the features come from)."""
    import hashlib
    folder = Path(bench) / benchmark
    key = hashlib.sha256(json.dumps([limit, SCALAR_NAMES, FEATURES_VERSION,
                                     IndexSettings().to_json()]).encode())
    for path in [folder / "questions.jsonl", *sorted((folder / "corpus").rglob("*"))]:
        if path.is_file():
            key.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    stem = work / f"{benchmark}-{limit or 'all'}"
    meta_path = stem.with_suffix(".json")
    if meta_path.exists():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("key") == key.hexdigest():
            arrays = {k: np.load(f"{stem}-{k}.npy", allow_pickle=False)
                      for k in ("features", "labels", "group")}
            return Examples(**arrays, questions=meta["questions"], texts=meta["texts"])
    ex = build_examples(benchmark, bench, work / f"{benchmark}-index", limit)
    for k in ("features", "labels", "group"):
        np.save(f"{stem}-{k}.npy", getattr(ex, k), allow_pickle=False)
    meta_path.write_text(json.dumps({"key": key.hexdigest(), "questions": ex.questions,
                                     "texts": ex.texts}, ensure_ascii=False),
                         encoding="utf-8")
    return ex


def train_reader(bench: Path = BENCH_DIR, out: Path = DEFAULT_WEIGHTS, work: Path | None = None,
                 seed: int = SEED, limit: int | None = None, compare: bool = True) -> dict:
    """Build the data, train, measure on validation, write weights and card; returns the card."""
    started = time.perf_counter()
    work = Path(work or cache_dir() / "reader-training")
    work.mkdir(parents=True, exist_ok=True)
    parts = [load_or_build(b, work, Path(bench), limit) for b in BENCHMARKS]
    data = concatenate(parts)
    split = np.array([q["split"] == "train" for q in data.questions])
    train, validation = data.select(split), data.select(~split)
    built = time.perf_counter()
    scalars = np.arange(len(SCALAR_NAMES))
    threshold, _ = out_of_fold_threshold(train, seed, scalars)
    fit_started = time.perf_counter()
    arrays = fit(train, seed, columns=scalars, progress="final")
    fit_minutes = (time.perf_counter() - fit_started) / 60
    judges = {READER: scores_of(arrays, validation, scalars)}
    timings = {READER: fit_minutes}
    if compare:
        judges.update(baselines(validation))
        t0 = time.perf_counter()
        linear = fit(train, seed, hidden=0, columns=scalars, progress="linear, scalar features")
        timings["logistic regression, same features"] = (time.perf_counter() - t0) / 60
        judges["logistic regression, same features"] = scores_of(linear, validation, scalars)
        t0 = time.perf_counter()
        with_products = fit(train, seed, progress="MLP + vector products")
        timings["MLP + question x sentence vector products"] = (time.perf_counter() - t0) / 60
        judges["MLP + question x sentence vector products"] = scores_of(with_products, validation)
    report = {}
    for name, scores in judges.items():
        report[name] = {"train_minutes": round(timings.get(name, 0.0), 2)}
        for benchmark in BENCHMARKS:
            keep = np.array([q["benchmark"] == benchmark for q in validation.questions])
            part = validation.select(keep)
            rows = keep[validation.group]
            report[name][benchmark] = judge_report(
                part, scores[rows], threshold if name == READER else None)
    n_params = sum(int(np.prod(arrays[k].shape)) for k in ("w1", "b1", "w2", "b2"))
    card = {
        "what": "Two-layer network over candidate-sentence features (rag/reader/features.py)",
        "threshold": round(threshold, 4),
        "extra_threshold": EXTRA_THRESHOLD,
        "seed": seed, "hidden": HIDDEN, "epochs": EPOCHS, "parameters": n_params,
        "products": False, "features_version": FEATURES_VERSION,
        "threshold_rule": (f"refuses {TARGET_FALSE_REFUSAL:.0%} of answerable train questions, "
                           f"out of fold ({FOLDS} folds by article)"),
        "data": {
            "piaf": "PIAF v1.1 (Etalab, MIT), ../shared/bench/piaf",
            "squad2": "SQuAD 2.0 dev, CS224N split, half (CC BY-SA 4.0), ../shared/bench/squad2",
            "split": f"by article: sha256('reader-split:' + file) < {VALIDATION_SHARE} -> validation",
            "train_questions": len(train.questions), "validation_questions": len(validation.questions),
            "train_candidates": int(len(train.labels)),
            "validation_candidates": int(len(validation.labels)),
            "limit": limit,
        },
        "validation": report,
        "minutes": {"data": round((built - started) / 60, 2),
                    "total": round((time.perf_counter() - started) / 60, 2)},
    }
    save_reader(out, arrays, card)
    return json.loads(Path(out).with_suffix(".json").read_text(encoding="utf-8"))


def print_card(card: dict) -> None:
    print(f"threshold {card['threshold']}, {card['parameters']} parameters, "
          f"{card['bytes']} bytes, {card['minutes']['total']} min")
    for name, block in card["validation"].items():
        for benchmark in BENCHMARKS:
            b = block[benchmark]
            print(f"{name:40s} {benchmark:7s} top1 {b['top1']:.3f} (recall {b['candidate_recall']:.3f})"
                  f" unanswerable@10% {b['abstain_unanswerable_at_10pct']}"
                  f" withheld@10% {b['abstain_withheld_at_10pct']:.3f}"
                  + (f" | at threshold: answerable {b['abstain_answerable']:.3f} "
                     f"unanswerable {b['abstain_unanswerable']} withheld {b['abstain_withheld']:.3f}"
                     if "abstain_answerable" in b else ""))

