"""Reader alternative: a cross-encoder that reads the question and each candidate sentence together.

What it measures. The shipped reader judges each candidate sentence from free features (vectors
already in the index, word counts); it cannot relate the question's words to the sentence's. This
script tries the third option of the reader issue: the bundled multilingual-e5-small as a
cross-encoder over the pair "query: <question>" / "passage: <sentence>", started so that it cannot
do worse than the feature judge at step 0 (a residual head: its output is *added* to the judge's
logit, head initialised at zero) and trained with the judge's own listwise loss:

1. candidates, labels and the train/validation split are ``rag/reader/dataset.py``'s (the cache
   `rag train-reader` builds in ``~/.cache/rag/reader-training``); the feature judge scores every
   train question out of fold (3 folds by article) and keeps its best ``TOP_K`` candidates;
2. training groups: answerable questions whose top candidates hold an answer, every SQuAD 2.0
   unanswerable question, up to ``MAX_WITHHELD`` questions asked with their article hidden; the
   articles of a calibration share are kept out to choose the abstention threshold (the
   judge's rule: refuse 8% of answerable questions); top ``TUNED_LAYERS`` layers and the head
   learn, within a wall-clock budget, fixed seed, 2 threads;
3. on the VALIDATION articles only: top-1 and abstention, for the feature judge alone and with
   the cross-encoder on its top candidates (``rag.reader.train.judge_report``), the inference
   cost per question and the fp16 size of what changed.

Measured (25 min budget, 852 of 1,302 batches): no gain. PIAF top-1 0.608 vs the judge's 0.612,
SQuAD 2.0 0.843 vs 0.840; abstention at 10% false refusal within 0.01; its corrections score
non-answering candidates slightly *higher* than answering ones on average (the training loss never
left the judge's own level), at 122 ms per question and 21 MB of changed layers. Reading pairs is
a new task for a bi-encoder, and some 31,000 pairs on 2 cores are too few to learn it.

Nothing is written into the repository: the weights go to /tmp/reader_cross/, the figures to
stdout and /tmp/reader_cross/report.json.

Run (about 40 minutes on 2 cores, after `rag train-reader` has built its candidates once):

    .venv/bin/python benchmarks/reader_cross.py [--minutes 25]
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rag.config import DEFAULT_MODEL, cache_dir  # noqa: E402
from rag.embedder import load_embedder  # noqa: E402
from rag.reader import train as T  # noqa: E402
from rag.reader.dataset import BENCH_DIR, BENCHMARKS, Examples, concatenate  # noqa: E402
from rag.reader.features import SCALAR_NAMES  # noqa: E402
from rag.reader.model import sha256_of, sigmoid  # noqa: E402

OUT = Path("/tmp/reader_cross")


# --------------------------------------------------------------------------- the model

#: Question and sentence together are cut to this many tokens (a sentence of about 60 words).
MAX_TOKENS = 128


def pair_texts(question: str, sentence: str) -> tuple[str, str]:
    """The two segments the encoder reads, with e5's own prompts."""
    return f"query: {question}", f"passage: {sentence}"


def mean_pool(hidden, mask):
    """Mean of the token states where ``mask`` is 1 (e5's pooling)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def tuned_copy(base, tuned_layers: int):
    """A view of the e5 transformer ``base`` whose top ``tuned_layers`` layers are private copies
    (to be trained or loaded) while the embeddings and lower layers stay shared with ``base``."""
    import torch
    model = copy.copy(base)
    model._modules = dict(base._modules)
    encoder = copy.copy(base.encoder)
    encoder._modules = dict(base.encoder._modules)
    layers = list(base.encoder.layer)
    cut = len(layers) - tuned_layers
    encoder.layer = torch.nn.ModuleList([*layers[:cut], *(copy.deepcopy(l) for l in layers[cut:])])
    model.encoder = encoder
    return model


def tuned_parameters(model, tuned_layers: int) -> dict:
    """The trainable tensors of a ``tuned_copy``, by name (those the weights file stores)."""
    layers = model.encoder.layer
    cut = len(layers) - tuned_layers
    return {f"layer.{i}.{name}": p for i in range(cut, len(layers))
            for name, p in layers[i].named_parameters()}


@dataclass
class CrossEncoder:
    """The loaded stage: ``corrections(question, sentences)`` -> one logit correction each."""

    model: object  # the transformer with tuned top layers (torch.nn.Module)
    tokenizer: object
    head_weight: np.ndarray  # (dim,)
    head_bias: float
    top_k: int
    card: dict
    lock: threading.Lock

    def corrections(self, question: str, sentences: list[str]) -> np.ndarray:
        """Added to the judge's logits of ``sentences`` (its best ``top_k``), in one batch."""
        import torch
        if not sentences:
            return np.zeros(0, np.float32)
        firsts, seconds = zip(*(pair_texts(question, s) for s in sentences))
        with self.lock, torch.inference_mode():
            batch = self.tokenizer(list(firsts), list(seconds), padding=True, truncation=True,
                                   max_length=MAX_TOKENS, return_tensors="pt")
            hidden = self.model(input_ids=batch["input_ids"],
                                attention_mask=batch["attention_mask"]).last_hidden_state
            pooled = mean_pool(hidden, batch["attention_mask"]).numpy()
        return (pooled @ self.head_weight + self.head_bias).astype(np.float32)


def load_cross(weights: Path) -> CrossEncoder:
    """The stage as ``save_cross`` wrote it (fp16 weights, so the figures are those of the file a
    product would ship), over the bundled e5 model."""
    import torch
    from safetensors.torch import load_file
    card = json.loads(weights.with_suffix(".json").read_text(encoding="utf-8"))
    assert sha256_of(weights) == card["sha256"]
    embedder = load_embedder(DEFAULT_MODEL, "fp32")
    st = embedder.model
    model = tuned_copy(st[0].auto_model, int(card["tuned_layers"]))
    tensors = load_file(str(weights))
    with torch.no_grad():
        for name, p in tuned_parameters(model, int(card["tuned_layers"])).items():
            p.copy_(tensors[name].to(torch.float32))
    model.eval()
    return CrossEncoder(model, st.tokenizer,
                        tensors["head.weight"].to(torch.float32).numpy().reshape(-1),
                        float(tensors["head.bias"].to(torch.float32).reshape(-1)[0]),
                        int(card["top_k"]), card, embedder._lock)


def save_cross(path: Path, model, head, tuned_layers: int, card: dict) -> dict:
    """Write the tuned layers and the head in fp16 with a card (sha256 included); returns it."""
    import torch
    from safetensors.torch import save_file
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: p.detach().to(torch.float16).contiguous()
               for name, p in tuned_parameters(model, tuned_layers).items()}
    tensors["head.weight"] = head.weight.detach().to(torch.float16).contiguous()
    tensors["head.bias"] = head.bias.detach().to(torch.float16).contiguous()
    save_file(tensors, str(path))
    card = {**card, "sha256": sha256_of(path), "bytes": path.stat().st_size,
            "tuned_layers": tuned_layers}
    path.with_suffix(".json").write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    return card


# --------------------------------------------------------------------------- training

TOP_K = 6
TUNED_LAYERS = 6
BATCH_QUESTIONS = 4
LEARNING_RATE = 4e-5
HEAD_LEARNING_RATE = 1e-3
MAX_WITHHELD = 1500
CALIBRATION_SHARE = 0.15


@dataclass
class Group:
    """One question and its best ``TOP_K`` candidates under the judge."""

    number: int  # the question's number in its Examples
    question: str
    texts: list[str]
    judge_logits: np.ndarray
    labels: np.ndarray
    rows: np.ndarray  # candidate rows in the Examples


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p)).astype(np.float32)


def top_groups(ex: Examples, probabilities: np.ndarray, top_k: int = TOP_K) -> list[Group]:
    """Per question, its ``top_k`` candidates by the judge's probability, best first."""
    order = np.lexsort((-probabilities, ex.group))
    starts = np.searchsorted(ex.group[order], np.arange(len(ex.questions)))
    ends = np.append(starts[1:], len(order))
    groups = []
    for number, (a, b) in enumerate(zip(starts, ends)):
        rows = order[a:min(b, a + top_k)]
        groups.append(Group(number, ex.questions[number]["question"],
                            [ex.texts[r] for r in rows], logit(probabilities[rows]),
                            ex.labels[rows].astype(np.float32), rows))
    return groups


def calibration_article(source: str) -> bool:
    digest = hashlib.sha256(f"cross-calibration:{source}".encode()).hexdigest()
    return int(digest[:8], 16) / 2**32 < CALIBRATION_SHARE


def training_groups(ex: Examples, groups: list[Group], seed: int) -> list[Group]:
    """The groups the stage learns from (see the module doc), shuffled with ``seed``."""
    rng = np.random.default_rng(seed)
    keep, withheld = [], []
    for g in groups:
        q = ex.questions[g.number]
        if calibration_article(q["source"]) or not g.texts:
            continue
        if q["withheld"]:
            withheld.append(g)
        elif not q["answerable"] or g.labels.max() > 0.5:
            keep.append(g)
    picked = rng.permutation(len(withheld))[:MAX_WITHHELD]
    keep += [withheld[i] for i in sorted(picked)]
    return [keep[i] for i in rng.permutation(len(keep))]


def train_stage(groups: list[Group], seed: int, tuned_layers: int = TUNED_LAYERS,
                max_minutes: float | None = None, progress: bool = True):
    """Train the top layers and the head on ``groups``; returns (model, head)."""
    import torch
    from tqdm import tqdm
    torch.manual_seed(seed)
    st = load_embedder(DEFAULT_MODEL, "fp32").model
    base, tokenizer = st[0].auto_model, st.tokenizer
    model = tuned_copy(base, tuned_layers)
    for p in base.parameters():
        p.requires_grad_(False)
    trained = list(tuned_parameters(model, tuned_layers).values())
    for p in trained:
        p.requires_grad_(True)
    head = torch.nn.Linear(base.config.hidden_size, 1)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    null = torch.nn.Parameter(torch.zeros(1))
    optimiser = torch.optim.AdamW([
        {"params": trained, "lr": LEARNING_RATE, "weight_decay": 0.01},
        {"params": [*head.parameters(), null], "lr": HEAD_LEARNING_RATE, "weight_decay": 0.0}])
    steps = (len(groups) + BATCH_QUESTIONS - 1) // BATCH_QUESTIONS
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / (steps - warmup + 1))))
    model.train()
    started = time.perf_counter()
    bar = tqdm(total=steps, desc="cross-encoder", unit="batch", file=sys.stderr,
               disable=not progress, mininterval=2)
    running = None
    for start in range(0, len(groups), BATCH_QUESTIONS):
        batch = groups[start:start + BATCH_QUESTIONS]
        firsts, seconds = zip(*(pair_texts(g.question, t) for g in batch for t in g.texts))
        tokens = tokenizer(list(firsts), list(seconds), padding=True, truncation=True,
                           max_length=MAX_TOKENS, return_tensors="pt")
        hidden = model(input_ids=tokens["input_ids"],
                       attention_mask=tokens["attention_mask"]).last_hidden_state
        deltas = head(mean_pool(hidden, tokens["attention_mask"])).squeeze(-1)
        loss, at = torch.tensor(0.0), 0
        for g in batch:
            n = len(g.texts)
            z = torch.from_numpy(g.judge_logits) + deltas[at:at + n]
            y = torch.from_numpy(g.labels)
            at += n
            bce = torch.nn.functional.binary_cross_entropy_with_logits(z, y)
            choices = torch.cat([z, null])
            right = torch.cat([y, torch.tensor([0.0 if y.max() > 0.5 else 1.0])])
            listwise = (torch.logsumexp(choices, 0)
                        - torch.logsumexp(choices.masked_fill(right < 0.5, -1e4), 0))
            loss = loss + (bce + listwise) / len(batch)
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimiser.step()
        schedule.step()
        running = float(loss) if running is None else 0.98 * running + 0.02 * float(loss)
        bar.set_postfix(loss=f"{running:.3f}", refresh=False)
        bar.update(1)
        if max_minutes is not None and time.perf_counter() - started > max_minutes * 60:
            break
    bar.close()
    base.eval()
    model.eval()
    for p in trained:
        p.requires_grad_(False)
    return model, head


def corrections(stage, groups: list[Group], progress: bool = True) -> list[np.ndarray]:
    """The loaded stage's corrections for each group's candidates."""
    from tqdm import tqdm
    return [stage.corrections(g.question, g.texts)
            for g in tqdm(groups, desc="cross-encoder scores", unit="question", file=sys.stderr,
                          disable=not progress, mininterval=2)]


def combined_scores(ex: Examples, groups: list[Group], deltas: list[np.ndarray]) -> np.ndarray:
    """Per candidate row: the stage's probability for the judge's top ones, 0 for the rest (they
    are not considered)."""
    scores = np.zeros(len(ex.labels), np.float32)
    for g, d in zip(groups, deltas):
        scores[g.rows] = sigmoid(g.judge_logits + d)
    return scores


# --------------------------------------------------------------------------- the run


def by_benchmark(ex: Examples, scores: np.ndarray, threshold: float | None) -> dict:
    out = {}
    for b in BENCHMARKS:
        keep = np.array([q["benchmark"] == b for q in ex.questions])
        out[b] = T.judge_report(ex.select(keep), scores[keep[ex.group]], threshold)
    return out


def main() -> None:
    import torch
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=25.0, help="training budget")
    parser.add_argument("--seed", type=int, default=T.SEED)
    parser.add_argument("--smoke", type=int, default=0,
                        help="check the script runs: only N groups to train on and to score")
    args = parser.parse_args()
    torch.set_num_threads(2)
    work = cache_dir() / "reader-training"
    data = concatenate([T.load_or_build(b, work, BENCH_DIR, None) for b in BENCHMARKS])
    split = np.array([q["split"] == "train" for q in data.questions])
    train, validation = data.select(split), data.select(~split)
    columns = np.arange(len(SCALAR_NAMES))
    judge_threshold, out_of_fold = T.out_of_fold_threshold(train, args.seed, columns)
    judge = T.fit(train, args.seed, columns=columns, progress="judge")
    judged = T.scores_of(judge, validation, columns)

    groups = top_groups(train, out_of_fold)
    learn = training_groups(train, groups, args.seed)[:args.smoke or None]
    print(f"training groups {len(learn)}, pairs {sum(len(g.texts) for g in learn)}", flush=True)
    started = time.perf_counter()
    model, head = train_stage(learn, args.seed, max_minutes=args.minutes)
    train_minutes = (time.perf_counter() - started) / 60
    base_hash = load_embedder(DEFAULT_MODEL, "fp32").weights_hash
    save_cross(OUT / "cross.safetensors", model, head, TUNED_LAYERS,
               {"top_k": TOP_K, "base_weights_sha256": base_hash})
    stage = load_cross(OUT / "cross.safetensors")

    held = np.zeros(len(train.questions), bool)
    held[[g.number for g in groups if calibration_article(train.questions[g.number]["source"])]] = True
    calibration = train.select(held)
    calibration_groups = top_groups(calibration, out_of_fold[held[train.group]])[:args.smoke or None]
    deltas = corrections(stage, calibration_groups)
    best = np.array([(g.judge_logits + d).max() if len(d) else -np.inf
                     for g, d in zip(calibration_groups, deltas)])
    answerable = np.array([calibration.questions[g.number]["answerable"]
                           for g in calibration_groups])
    threshold = float(sigmoid(np.array([np.quantile(best[answerable], T.TARGET_FALSE_REFUSAL)]))[0])

    validation_groups = top_groups(validation, judged)[:args.smoke or None]
    started = time.perf_counter()
    deltas = corrections(stage, validation_groups)
    ms = (time.perf_counter() - started) * 1000 / max(1, len(validation_groups))
    combined = combined_scores(validation, validation_groups, deltas)
    result = {
        "what": ("multilingual-e5-small as a cross-encoder over (question, sentence), residual on "
                 "the feature judge's logit, listwise + BCE loss; validation split only"),
        "validation": {"judge": by_benchmark(validation, judged, judge_threshold),
                       "cross": by_benchmark(validation, combined, threshold)},
        "training": {"minutes": round(train_minutes, 2), "groups": len(learn),
                     "pairs": sum(len(g.texts) for g in learn), "top_k": TOP_K,
                     "tuned_layers": TUNED_LAYERS, "batch_questions": BATCH_QUESTIONS,
                     "learning_rate": LEARNING_RATE, "seed": args.seed},
        "threshold": round(threshold, 4),
        "inference_ms_per_question": round(ms, 1),
        "changed_mb_fp16": round((OUT / "cross.safetensors").stat().st_size / 2**20, 1),
    }
    (OUT / "report.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    for name, block in result["validation"].items():
        for b, r in block.items():
            print(name, b, {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()})


if __name__ == "__main__":
    main()
