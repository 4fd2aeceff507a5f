"""Reader alternative: e5 fine-tuned contrastively on (question, answering sentence) pairs.

What it measures. The reader picks, among the candidate sentences of a question (the sentences of
the top-5 retrieved passages), the one that answers, and abstains when its best score is low. This
script tries the option of replacing the feature classifier by the cosine of a *fine-tuned* e5:
question and sentence stay separate short inputs, so sentence vectors can still be computed once
at index time. It compares the bundled multilingual-e5-small as is ("original") with the same
model after contrastive fine-tuning ("tuned"), on exactly the candidates and labels of
``rag/reader/dataset.py`` (so the figures sit beside the feature classifier's from
``rag train-reader``; "original" here is that card's "e5 cosine" baseline):

1. every question of ``../shared/bench/piaf`` and ``../shared/bench/squad2`` goes through the
   product's retrieval (``Assistant.retrieve``, hybrid, same indexes as ``rag train-reader`` in
   ``~/.cache/rag/reader-training``); answerable questions are asked again with their gold files
   hidden ("withheld": every candidate is a negative). A candidate is positive when it comes from a
   gold file and its normalised text contains a normalised gold answer;
2. fine-tuning on the TRAIN split (by article, ``split_of``), answerable questions only: anchor
   "query: <question>", positive "passage: <answering sentence>" (the answering candidate the
   original model ranks first), one hard negative (the non-answering candidate the original model
   ranks first), MultipleNegativesRankingLoss (in-batch + hard negatives; batches never hold the
   same sentence twice, so no in-batch false negatives). Only the top ``--train-layers`` of the 12
   encoder layers learn; a wall-clock budget (``--minutes``) fixes the number of steps after a
   short timing, so the run fits; fixed seed, one CPU thread;
3. on the VALIDATION split only, per benchmark, for both models: top-1 accuracy (answerable
   questions whose highest-cosine candidate is positive), candidate recall (with any positive),
   and abstention at a fixed false-refusal rate (threshold = 10th percentile of the best cosine over
   answerable validation questions; share of SQuAD unanswerable and of withheld questions below
   it), computed by ``rag.reader.train.judge_report``. Also training minutes, inference ms per
   question (embed one question + score its candidates, whose vectors the product would have
   precomputed) and the fp16 size of the weights that changed.

Nothing is written into the repository: the tuned weights stay in memory; the figures go to
stdout (markdown) and /tmp/reader_contrastive.json; candidates are cached in /tmp.

Run (about 30 minutes on 2 cores, one thread):

    .venv/bin/python benchmarks/reader_contrastive.py [--minutes 20] [--train-layers 4]
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rag.config import cache_dir  # noqa: E402
from rag.language import is_english, normalize_answer  # noqa: E402
from rag.reader.dataset import BENCH_DIR, BENCHMARKS, Examples, read_questions, split_of  # noqa: E402
from rag.reader.train import judge_report  # noqa: E402

SEED = 13
OUT_JSON = Path("/tmp/reader_contrastive.json")
CACHE_DIR = Path("/tmp/reader_contrastive_cache")


# --------------------------------------------------------------------------- candidates


def build_candidates(benchmark: str, index_dir: Path, progress: bool = True) -> dict:
    """Candidates and labels of every question of ``benchmark``, as ``rag/reader/dataset.py``
    builds them (same retrieval, same candidates, same labels), plus the original model's cosine
    of each candidate (the index's sentence vectors, i.e. the "cos_sentence" feature)."""
    from tqdm import tqdm

    from rag.assistant import Assistant
    from rag.extractive import ExtractiveAnswerer
    folder = BENCH_DIR / benchmark
    assistant = Assistant(folder / "corpus", index_dir, answerer=ExtractiveAnswerer(),
                          progress=progress)
    questions = read_questions(folder / "questions.jsonl")
    texts = [assistant.clean_question(q["question"]) for q in questions]
    vectors = assistant.embedder.encode_queries(texts)
    asks = [(q, t, v, False) for q, t, v in zip(questions, texts, vectors)]
    asks += [(q, t, v, True) for q, t, v in zip(questions, texts, vectors) if q["answerable"]]
    sentence_text: dict[str, str] = {}
    groups = []
    for question, text, vector, withheld in tqdm(asks, desc=f"{benchmark} candidates",
                                                 disable=not progress, file=sys.stderr):
        hidden = question["sources"] if withheld else ()
        context, passages = assistant.retrieve(text, exclude_sources=hidden, query_vector=vector)
        index = context.index
        depth = context.settings.candidate_passages  # 5, as in rag/reader/features.py
        chunk_ids = list(dict.fromkeys(p.chunk_id for p in passages[:depth]))
        sentences = index.sentences_of(chunk_ids)
        gold = [normalize_answer(a) for a in question["answers"]] if not withheld else []
        ids, labels = [], []
        for sentence in sentences:
            source = index.chunk(sentence.chunk_id).source
            body = index.sentence_text(sentence)
            text_norm = normalize_answer(body)
            positive = source in question["sources"] and any(g and g in text_norm for g in gold)
            ids.append(sentence.id)
            labels.append(float(positive))
            sentence_text.setdefault(sentence.id, body)
        qv = np.asarray(context.query_vector, dtype=np.float32)
        cosines = (index.sentence_vectors.get(ids) @ qv).tolist() if ids else []
        groups.append({
            "id": question["id"], "benchmark": benchmark, "question": text,
            "source": question["sources"][0], "split": split_of(question["sources"][0]),
            "answerable": bool(question["answerable"]) and not withheld, "withheld": withheld,
            "kind": question.get("kind", ""), "english": is_english(text),
            "sentences": ids, "labels": labels, "cos_original": cosines,
        })
    return {"groups": groups, "sentence_text": sentence_text,
            "index_build": (index_dir / "CURRENT").read_text().strip()}


def load_candidates(benchmark: str, index_dir: Path, use_cache: bool) -> dict:
    """``build_candidates``, cached in /tmp under the index build's name."""
    build = (index_dir / "CURRENT").read_text().strip()
    code = hashlib.sha256(inspect.getsource(build_candidates).encode()).hexdigest()[:8]
    path = CACHE_DIR / f"{benchmark}-{build}-{code}.json"
    if use_cache and path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    data = build_candidates(benchmark, index_dir)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return data


def as_examples(groups: list[dict], scores_key: str | None = None,
                scores: list[list[float]] | None = None) -> tuple[Examples, np.ndarray]:
    """The groups as ``Examples`` (no features) and the flat per-candidate scores."""
    labels, group, flat = [], [], []
    for number, g in enumerate(groups):
        labels += g["labels"]
        group += [number] * len(g["labels"])
        flat += g[scores_key] if scores_key else scores[number]
    ex = Examples(np.zeros((len(labels), 0), np.float32), np.asarray(labels, np.float32),
                  np.asarray(group, np.int64),
                  [{k: g[k] for k in ("id", "benchmark", "split", "answerable", "withheld",
                                      "kind", "english", "source")} for g in groups],
                  [""] * len(labels))
    return ex, np.asarray(flat, np.float64)


def check_against_training_cache(benchmark: str, groups: list[dict]) -> str:
    """Compare labels and cosines with ``rag train-reader``'s cached examples when present."""
    work = cache_dir() / "reader-training"
    stem = work / f"{benchmark}-all"
    try:
        labels = np.load(f"{stem}-labels.npy", allow_pickle=False)
        group = np.load(f"{stem}-group.npy", allow_pickle=False)
        features = np.load(f"{stem}-features.npy", allow_pickle=False, mmap_mode="r")
    except OSError:
        return "no train-reader cache to compare with"
    ours = np.asarray([x for g in groups for x in g["labels"]], np.float32)
    our_group = np.asarray([i for i, g in enumerate(groups) for _ in g["labels"]], np.int64)
    if len(ours) != len(labels):
        return f"MISMATCH: {len(ours)} candidates here, {len(labels)} in the train-reader cache"
    cos = np.asarray([x for g in groups for x in g["cos_original"]], np.float32)
    same = (bool((ours == labels).all()) and bool((our_group == group).all()))
    gap = float(np.abs(cos - np.asarray(features[:, 0])).max()) if len(cos) else 0.0
    return (f"{'identical' if same else 'MISMATCH in'} labels and groups as the train-reader "
            f"cache ({len(ours)} candidates); max |cosine difference| {gap:.2e}")


# --------------------------------------------------------------------------- training


def triplets_of(groups: list[dict], texts: dict[str, str]) -> list[tuple[str, str, str]]:
    """(question, answering sentence, hardest non-answering candidate) for each answerable
    TRAIN question with both; "hardest" and which positive: the original model's top cosine."""
    out = []
    for g in groups:
        if g["split"] != "train" or not g["answerable"]:
            continue
        cos = np.asarray(g["cos_original"])
        lab = np.asarray(g["labels"]) > 0.5
        if not lab.any() or lab.all():
            continue
        pos = int(np.flatnonzero(lab)[np.argmax(cos[lab])])
        neg = int(np.flatnonzero(~lab)[np.argmax(cos[~lab])])
        out.append((g["question"], texts[g["sentences"][pos]], texts[g["sentences"][neg]]))
    return out


def batches_without_duplicates(triplets: list, lengths: np.ndarray, batch_size: int,
                               rng: np.random.Generator, pool: int = 50) -> list:
    """One epoch of batches in which no sentence (positive or negative) appears twice, so no
    in-batch negative is in fact another question's answer (PIAF's questions share paragraphs).

    "Sortish" order: shuffled, then sorted by length within pools of ``pool`` batches, so a batch
    holds sentences of similar length (a batch is padded to its longest: on one CPU thread that
    padding was half the cost), and the batches are shuffled again.
    """
    order = rng.permutation(len(triplets))
    batches = []
    size = pool * batch_size
    for start in range(0, len(order), size):
        part = order[start:start + size]
        pending = [triplets[i] for i in part[np.argsort(lengths[part], kind="stable")]]
        while pending:
            batch, seen, rest = [], set(), []
            for t in pending:
                if len(batch) < batch_size and t[1] not in seen and t[2] not in seen:
                    batch.append(t)
                    seen.update((t[1], t[2]))
                else:
                    rest.append(t)
            batches.append(batch)
            pending = rest
    return [batches[i] for i in rng.permutation(len(batches))]


def fine_tune(model, triplets: list, minutes: float, train_layers: int, batch_size: int,
              lr: float, scale: float, max_epochs: int, max_tokens: int, seed: int) -> dict:
    """Contrastive fine-tuning within ``minutes`` of wall clock; returns what was done."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from tqdm import tqdm
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    encoder = model[0].auto_model
    layers = encoder.encoder.layer
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = [p for layer in layers[len(layers) - train_layers:] for p in layer.parameters()]
    for p in trainable:
        p.requires_grad_(True)
    loss_fn = MultipleNegativesRankingLoss(model, scale=scale)
    optimiser = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.01)
    old_max = model.max_seq_length
    model.max_seq_length = max_tokens  # training only: a few long sentences would set the width

    def step(batch: list) -> float:
        features = [model.preprocess([t[0] for t in batch], prompt="query: "),
                    model.preprocess([t[1] for t in batch], prompt="passage: "),
                    model.preprocess([t[2] for t in batch], prompt="passage: ")]
        loss = loss_fn(features, None)
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimiser.step()
        return float(loss.detach())

    tokens = lambda texts: np.array([len(ids) for ids in model.tokenizer(  # noqa: E731
        list(texts), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]])
    lengths = np.maximum(tokens(t[1] for t in triplets), tokens(t[2] for t in triplets))
    epochs = [batches_without_duplicates(triplets, lengths, batch_size, rng)
              for _ in range(max_epochs)]
    per_epoch = len(epochs[0])
    schedule = [b for e in epochs for b in e]
    budget = minutes * 60
    started = time.perf_counter()
    # The learning rate follows a linear warm-up and decay over the number of steps that fit in
    # the budget; that number is set from the pace of the first steps (with a 10 % margin).
    warmup, planned = 10, len(schedule)
    set_lr = lambda s: [g.__setitem__("lr", lr * min(1.0, (s + 1) / warmup)  # noqa: E731
                                      * max(0.0, 1.0 - s / planned)) for g in optimiser.param_groups]
    model.train()
    bar = tqdm(total=planned, desc="fine-tuning", unit="batch", file=sys.stderr, mininterval=2)
    losses, done, pairs = [], 0, 0
    for s, batch in enumerate(schedule):
        if s == warmup:  # fix the plan from the measured pace
            pace = (time.perf_counter() - started) / s
            planned = min(len(schedule), max(s + 1, int(0.9 * budget / pace)))
            bar.total = planned
            bar.refresh()
        if s >= planned or time.perf_counter() - started > budget:
            break
        set_lr(s)
        losses.append(step(batch))
        done, pairs = s + 1, pairs + len(batch)
        bar.update(1)
        if done % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
    bar.close()
    model.eval()
    model.max_seq_length = old_max
    for p in model.parameters():
        p.requires_grad_(False)
    return {"train_minutes": round((time.perf_counter() - started) / 60, 2),
            "triplets_available": len(triplets), "steps": done, "batches_per_epoch": per_epoch,
            "pairs_seen": pairs, "epochs": round(done / per_epoch, 2),
            "loss_first_10": round(float(np.mean(losses[:10])), 4) if losses else None,
            "loss_last_10": round(float(np.mean(losses[-10:])), 4) if losses else None,
            "train_layers": train_layers, "batch_size": batch_size, "lr": lr, "scale": scale,
            "max_tokens": max_tokens}


def changed_megabytes(before: dict[str, torch.Tensor], model) -> tuple[float, int, list[str]]:
    """fp16 size of the tensors that differ from ``before``."""
    changed, count = [], 0
    for name, tensor in model.state_dict().items():
        if name in before and not torch.equal(before[name], tensor):
            changed.append(name)
            count += tensor.numel()
    return count * 2 / 1e6, count, changed


# --------------------------------------------------------------------------- evaluation


def tuned_scores(model, groups: list[dict], texts: dict[str, str], desc: str) -> list[list[float]]:
    """Cosine of each validation question with each of its candidates under ``model``."""
    ids = sorted({s for g in groups for s in g["sentences"]})
    print(f"{desc}: embedding {len(ids)} sentences and {len(groups)} questions", file=sys.stderr)
    with torch.inference_mode():
        sv = model.encode([texts[i] for i in ids], prompt="passage: ", batch_size=32,
                          normalize_embeddings=True, convert_to_numpy=True,
                          show_progress_bar=True)
        qv = model.encode([g["question"] for g in groups], prompt="query: ", batch_size=32,
                          normalize_embeddings=True, convert_to_numpy=True,
                          show_progress_bar=True)
    row = {s: i for i, s in enumerate(ids)}
    return [(sv[[row[s] for s in g["sentences"]]] @ q).tolist() if g["sentences"] else []
            for g, q in zip(groups, qv)]


def inference_ms(model, groups: list[dict], texts: dict[str, str], n: int = 100) -> float:
    """Mean ms to embed one question and score its (precomputed) candidate vectors."""
    sample = [g for g in groups if g["sentences"]][:n]
    ids = sorted({s for g in sample for s in g["sentences"]})
    with torch.inference_mode():
        vectors = dict(zip(ids, model.encode([texts[i] for i in ids], prompt="passage: ",
                                             batch_size=32, normalize_embeddings=True,
                                             convert_to_numpy=True)))
        model.encode(["query: échauffement"], batch_size=1)  # warm-up
        started = time.perf_counter()
        for g in sample:
            q = model.encode([g["question"]], prompt="query: ", batch_size=1,
                             normalize_embeddings=True, convert_to_numpy=True)[0]
            scores = np.stack([vectors[s] for s in g["sentences"]]) @ q
            int(np.argmax(scores))
    return (time.perf_counter() - started) * 1000 / len(sample)


def report(groups: list[dict], scores: list[list[float]]) -> dict:
    out = {}
    for benchmark in BENCHMARKS:
        keep = [i for i, g in enumerate(groups) if g["benchmark"] == benchmark]
        ex, flat = as_examples([groups[i] for i in keep], scores=[scores[i] for i in keep])
        out[benchmark] = judge_report(ex, flat, None)
    return out


def markdown(result: dict) -> str:
    rows = ["| model | benchmark | answerable q. | top-1 | candidate recall | "
            "abstain unanswerable @10% FR | abstain withheld @10% FR |",
            "|---|---|---|---|---|---|---|"]
    fmt = lambda x: "–" if x is None else f"{x:.3f}"  # noqa: E731
    for name in ("original", "tuned"):
        for benchmark in BENCHMARKS:
            b = result["validation"][name][benchmark]
            rows.append(f"| {name} | {benchmark} | {b['questions']} | {fmt(b['top1'])} | "
                        f"{fmt(b['candidate_recall'])} | {fmt(b['abstain_unanswerable_at_10pct'])} "
                        f"| {fmt(b['abstain_withheld_at_10pct'])} |")
    t = result["training"]
    rows += ["", "| | original | tuned |", "|---|---|---|",
             f"| training minutes | 0 | {t['train_minutes']} |",
             f"| pairs seen / available (epochs) | – | {t['pairs_seen']} / "
             f"{t['triplets_available']} ({t['epochs']}) |",
             f"| inference ms per question | {result['inference_ms']['original']:.1f} | "
             f"{result['inference_ms']['tuned']:.1f} |",
             f"| changed weights, fp16 MB | 0 | {result['changed_mb_fp16']:.1f} |"]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget (max 25)")
    parser.add_argument("--train-layers", type=int, default=4, help="top encoder layers trained")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--scale", type=float, default=20.0, help="MNRL scale (1/temperature)")
    parser.add_argument("--max-epochs", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128, help="truncation while training")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--no-cache", action="store_true", help="rebuild the candidates")
    parser.add_argument("--smoke", type=int, default=0,
                        help="debug only: keep this many validation asks per benchmark")
    args = parser.parse_args()
    if args.minutes > 25:
        parser.error("--minutes is capped at 25")
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    work = cache_dir() / "reader-training"

    groups, texts, checks = [], {}, {}
    for benchmark in BENCHMARKS:
        data = load_candidates(benchmark, work / f"{benchmark}-index", not args.no_cache)
        checks[benchmark] = check_against_training_cache(benchmark, data["groups"])
        print(f"{benchmark}: {len(data['groups'])} asks; {checks[benchmark]}", file=sys.stderr)
        groups += data["groups"]
        # sentence ids are unique per index only: prefix them with the benchmark
        for g in data["groups"]:
            g["sentences"] = [f"{benchmark}/{s}" for s in g["sentences"]]
        texts.update({f"{benchmark}/{k}": v for k, v in data["sentence_text"].items()})
    data_minutes = (time.perf_counter() - started) / 60
    validation = [g for g in groups if g["split"] == "validation"]
    if args.smoke:
        validation = [g for b in BENCHMARKS
                      for g in [g for g in validation if g["benchmark"] == b][:args.smoke]]
    triplets = triplets_of(groups, texts)
    print(f"{len(triplets)} training triplets; {len(validation)} validation asks", file=sys.stderr)

    from sentence_transformers import SentenceTransformer

    from rag.embedder import bundled_model_dir
    model = SentenceTransformer(str(bundled_model_dir()), device="cpu", local_files_only=True)
    model.eval()

    # Original model: the index's own sentence vectors (what the product has), and a check that
    # this SentenceTransformer reproduces them, so the tuned figures differ only by training.
    original = [g["cos_original"] for g in validation]
    reproduced = tuned_scores(model, validation[:40], texts, "original model (check)")
    gap = max((abs(a - b) for g, r in zip(validation[:40], reproduced)
               for a, b in zip(g["cos_original"], r)), default=0.0)
    print(f"original model re-encoded vs index vectors: max |cos diff| {gap:.2e}", file=sys.stderr)
    ms_original = inference_ms(model, validation, texts)

    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    training = fine_tune(model, triplets, args.minutes, args.train_layers, args.batch_size,
                         args.lr, args.scale, args.max_epochs, args.max_tokens, args.seed)
    mb, n_changed, changed = changed_megabytes(before, model)
    del before
    tuned = tuned_scores(model, validation, texts, "tuned model")
    ms_tuned = inference_ms(model, validation, texts)

    result = {
        "what": "multilingual-e5-small, original vs fine-tuned contrastively (MNRL, in-batch + "
                "1 hard negative), cosine as the reader's score, on rag/reader/dataset.py's "
                "candidates; validation split only",
        "validation": {"original": report(validation, original), "tuned": report(validation, tuned)},
        "training": training,
        "inference_ms": {"original": round(ms_original, 2), "tuned": round(ms_tuned, 2)},
        "changed_mb_fp16": round(mb, 2), "changed_parameters": n_changed,
        "changed_tensors": len(changed),
        "data": {"validation_asks": len(validation), "train_triplets": len(triplets),
                 "candidates_check": checks, "original_reencode_max_cos_diff": gap,
                 "data_minutes": round(data_minutes, 2)},
        "seed": args.seed, "threads": torch.get_num_threads(),
        "total_minutes": round((time.perf_counter() - started) / 60, 2),
    }
    OUT_JSON.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(markdown(result))
    print(f"\ntraining: {training['steps']} steps, {training['pairs_seen']} pairs "
          f"({training['epochs']} epochs of {training['triplets_available']}), loss "
          f"{training['loss_first_10']} -> {training['loss_last_10']}, "
          f"{training['train_minutes']} min; total {result['total_minutes']} min; "
          f"written to {OUT_JSON}")


if __name__ == "__main__":
    main()
