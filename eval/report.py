"""Write eval/RESULTS.md and eval/abstention.png from saved `rag eval --json` runs.

    rag eval --retriever all --json /tmp/seeds.json
    rag eval --corpus ../shared/bench/piaf/corpus --questions ../shared/bench/piaf/questions.jsonl \\
        --retriever all --json /tmp/piaf.json
    python -m eval.report --seeds /tmp/seeds.json --piaf /tmp/piaf.json

Everything in RESULTS.md comes from the two JSON files (metrics, commands, dates, machine, wall
times), so the file is regenerated, never edited by hand.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from .metrics import METRIC_KEYS, abstention_curves, check_gates, is_correct, support_of
from .runner import ALL_RETRIEVERS, DEFAULT_GATES, GATED_RETRIEVER, blocks_of, format_value, load_gates

EVAL_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = EVAL_DIR / "RESULTS.md"
BENCHMARKS_DIR = EVAL_DIR.parent / "benchmarks"
DEFAULT_PLOT = EVAL_DIR / "abstention.png"

METRIC_NOTES = {
    "recall@1": "answerable questions whose first retrieved file is a gold source",
    "recall@5": "... a gold source among the first 5 distinct retrieved files",
    "mrr@10": "mean of 1/rank of the first gold file among the first 10 distinct files",
    "answer_contains": "answered (not abstained) answerable questions whose answer contains a "
                       "gold string (normalised)",
    "answer_accuracy": "the same correct answers over *all* answerable questions",
    "top_citation_contains": "answered answerable questions whose best-scored cited sentence, "
                             "alone, contains a gold string (what a user reads first)",
    "answer_chars_p50": "median length of the answers given, in characters",
    "abstain_unanswerable": "unanswerable questions that abstained (higher is better)",
    "abstain_answerable": "answerable questions that wrongly abstained (lower is better)",
    "abstain_withheld": "answerable questions asked again with their gold files hidden from the "
                        "search that abstained (higher is better)",
    "citation_valid": "citations whose text is verbatim in the cited file within the cited lines",
    "latency_ms_p50": "median `Assistant.ask` time, ms",
    "latency_ms_p95": "95th percentile of `Assistant.ask` time, ms",
}


def load_run(path: Path) -> dict:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        sys.exit(f"eval.report: cannot read {path}: {exc}".splitlines()[0])
    if not isinstance(document, dict) or "metrics" not in document or "questions" not in document:
        sys.exit(f"eval.report: {path} is not a `rag eval --json` file")
    document.setdefault("run", {})
    document["blocks"] = blocks_of(document)
    return document


def records_of(document: dict, retriever: str) -> list[dict]:
    return [r for r in document["questions"] if r.get("retriever", retriever) == retriever]


# --------------------------------------------------------------------------- markdown pieces


def metrics_table(blocks: dict[str, dict]) -> list[str]:
    names = [r for r in ALL_RETRIEVERS if r in blocks] + [r for r in blocks if r not in ALL_RETRIEVERS]
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for key in METRIC_KEYS:
        cells = [format_value(key, blocks[n].get(key)) for n in names]
        lines.append(f"| `{key}` | " + " | ".join(cells) + " |")
    return lines


def describe_set(document: dict, label: str) -> str:
    run = document["run"]
    n_done = max((b.get("n_questions", 0) for b in document["blocks"].values()), default=0)
    total = run.get("n_questions_in_file")
    text = f"{label}: {n_done} questions"
    if run.get("limit") and total and n_done < total:
        text += f" — **PARTIAL RUN: only the first {n_done} of {total:,} questions (`--limit {run['limit']}`)**"
    return text


def wall_time(run: dict) -> str:
    seconds = run.get("seconds") or {}
    if not seconds:
        return "n/a"
    build = run.get("index_build") or {}
    built = "index built" if build.get("embedded") else "index up to date"
    load = run.get("load_average")
    busy = (f"; machine load average {load[0]:g} at start, {load[1]:g} at end"
            if isinstance(load, list) and len(load) == 2 and None not in load else "")
    return (f"{seconds.get('total', 0):.0f} s total ({built}: {seconds.get('index', 0):.0f} s, "
            f"model load {seconds.get('model_load', 0):.0f} s, questions "
            f"{seconds.get('questions', 0):.0f} s){busy}")


def run_table(runs: list[tuple[str, dict]]) -> list[str]:
    lines = ["| set | command | date | machine | wall time |", "|---|---|---|---|---|"]
    for label, document in runs:
        run = document["run"]
        lines.append(f"| {label} | `{run.get('command', 'n/a')}` | {run.get('date', 'n/a')} | "
                     f"{run.get('machine', 'n/a')} | {wall_time(run)} |")
    return lines


def gates_section(document: dict) -> list[str]:
    block = document["blocks"].get(GATED_RETRIEVER)
    if block is None:
        return ["(no hybrid block in this run)"]
    gates = load_gates(DEFAULT_GATES)
    lines = ["| gate | floor (CI) | hybrid | result |", "|---|---|---:|---|"]
    for name, kind, bound, value, ok in check_gates(block, gates):
        sign = ">=" if kind == "min" else "<="
        lines.append(f"| `{name}` | {sign} {bound:g} | {format_value(name, value)} | "
                     f"{'PASS' if ok else '**FAIL**'} |")
    return lines


def per_kind_table(records: list[dict]) -> list[str]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[r.get("kind") or "?"].append(r)
    lines = ["| kind | questions | answerable | abstained | correct answers | retrieval hit@1 |",
             "|---|---:|---:|---:|---:|---:|"]
    for kind in sorted(groups, key=lambda k: (not groups[k][0].get("answerable"), k)):
        rs = groups[kind]
        answerable = [r for r in rs if r.get("answerable")]
        abstained = sum(r.get("abstained") is True for r in rs)
        correct = sum(is_correct(r) for r in answerable)
        hit1 = sum(bool(set(r.get("retrieved_sources", [])[:1]) & set(r.get("gold_sources", [])))
                   for r in answerable)
        lines.append(f"| {kind} | {len(rs)} | {len(answerable)} | {abstained} | "
                     + (f"{correct}/{len(answerable)}" if answerable else "–") + " | "
                     + (f"{hit1}/{len(answerable)}" if answerable else "–") + " |")
    return lines


def mistakes(records: list[dict], limit: int = 40) -> list[str]:
    """Questions the hybrid run got wrong, to guide tuning."""
    lines = []
    for r in records:
        if r.get("error"):
            why = f"error: {r['error']}"
        elif r.get("answerable") and r.get("abstained"):
            why = "abstained on an answerable question"
        elif r.get("answerable") and not is_correct(r):
            why = "answer lacks the gold string"
        elif not r.get("answerable") and r.get("abstained") is False:
            why = "answered an unanswerable question"
        else:
            continue
        support = support_of(r)
        shown = f"{support:.3f}" if support is not None else "n/a"
        lines.append(f"| {r['id']} | {r.get('kind', '')} | {why} | {shown} | "
                     f"{r['question'].replace('|', '/')} |")
    if not lines:
        return ["None."]
    head = ["| id | kind | problem | support | question |", "|---|---|---|---:|---|"]
    extra = [f"\n({len(lines) - limit} more not shown)"] if len(lines) > limit else []
    return head + lines[:limit] + extra


# --------------------------------------------------------------------------- abstention plot


def threshold_grid(records: list[dict], run_threshold: float) -> list[float]:
    """Thresholds spanning the run's support scores (the reader's probabilities lie in [0, 1])."""
    supports = sorted(s for r in records if (s := support_of(r)) is not None and s >= 0)
    if supports:  # the bulk of the scores, not a stray outlier
        supports = supports[len(supports) // 50:len(supports) - len(supports) // 50]
    low = max(0.0, min(supports + [run_threshold]) - 0.02)
    high = max(supports + [run_threshold]) + 0.02
    low, high = round(low * 200) / 200, round(high * 200) / 200
    steps = max(1, int(round((high - low) / 0.0025)))
    return [round(low + i * 0.0025, 6) for i in range(steps + 1)]


def plot_abstention(seeds: dict, out: Path, piaf: dict | None = None) -> dict:
    """Draw the trade-off for the hybrid retriever of the seeds run; returns the curves."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_threshold = seeds["run"].get("abstain_threshold")
    records = records_of(seeds, GATED_RETRIEVER)
    grid = threshold_grid(records, run_threshold if run_threshold is not None else 0.8)
    curves = abstention_curves(records, grid, run_threshold)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    ax.plot(grid, curves["answerable_answered"], color="tab:blue", lw=2,
            label=f"answerable questions answered (n={curves['n_answerable']})")
    ax.plot(grid, curves["unanswerable_answered"], color="tab:red", lw=2,
            label=f"unanswerable questions answered (n={curves['n_unanswerable']})")
    correct = [(t, v) for t, v in zip(grid, curves["answerable_correct"]) if v is not None]
    if correct:
        ax.plot(*zip(*correct), color="tab:blue", lw=1.2, ls="--",
                label="answerable questions answered correctly (known at/above the threshold used)")
    if piaf is not None:
        piaf_records = records_of(piaf, GATED_RETRIEVER)
        if piaf_records:
            p = abstention_curves(piaf_records, grid, piaf["run"].get("abstain_threshold"))
            ax.plot(grid, p["answerable_answered"], color="tab:green", lw=1.2, ls=":",
                    label=f"PIAF answerable answered (n={p['n_answerable']})")
    if run_threshold is not None:
        ax.axvline(run_threshold, color="black", lw=1, ls="-.")
        i = min(range(len(grid)), key=lambda k: abs(grid[k] - run_threshold))
        ax.annotate(f"chosen threshold {run_threshold:g}\n"
                    f"answerable answered {curves['answerable_answered'][i]:.0%}\n"
                    f"unanswerable answered {curves['unanswerable_answered'][i]:.0%}",
                    xy=(run_threshold, 0.5), xytext=(8, 0), textcoords="offset points",
                    fontsize=8, va="center",
                    bbox={"facecolor": "white", "edgecolor": "0.7", "alpha": 0.9})
    ax.set_xlabel("abstention threshold (support of the best sentence: the reader's probability, "
                  "or the extractive score)", fontsize=8)
    ax.set_ylabel("share of questions answered")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title("Abstention trade-off, seeds question set, hybrid retriever")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return curves


def tradeoff_table(curves: dict, run_threshold: float | None, step: float = 0.01) -> list[str]:
    lines = ["| threshold | answerable answered | answerable correct | unanswerable answered |",
             "|---:|---:|---:|---:|"]
    grid = curves["thresholds"]
    picks = sorted({min(range(len(grid)), key=lambda k: abs(grid[k] - t))
                    for t in [grid[0] + step * i for i in range(int((grid[-1] - grid[0]) / step) + 1)]
                    + ([run_threshold] if run_threshold is not None else [])})
    for i in picks:
        t = grid[i]
        mark = " **(chosen)**" if run_threshold is not None and abs(t - run_threshold) < 1e-9 else ""
        cells = [curves[k][i] for k in ("answerable_answered", "answerable_correct",
                                         "unanswerable_answered")]
        shown = ["n/a" if v is None else f"{v:.0%}" for v in cells]
        lines.append(f"| {t:.3f}{mark} | " + " | ".join(shown) + " |")
    return lines


def _cell(value) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def reader_section(card: dict, contrastive: dict | None, cross: dict | None = None) -> list[str]:
    """The comparison of judges from the reader's card (validation articles only)."""
    validation = card["validation"]
    md = ["## The reader: which judge picks the sentence", "",
          "From `rag/reader/weights/reader.json`, written by `rag train-reader` (seed "
          f"{card['seed']}, {card['data']['train_questions']:,} train and "
          f"{card['data']['validation_questions']:,} validation questions, withheld variants "
          "included; split by article). Every judge scores the same candidates: the sentences of "
          "the 5 passages the hybrid retriever returns first. Figures on the validation articles "
          "only.", "",
          "- **top-1**: answerable questions whose highest-scored candidate contains a gold "
          "answer (over all answerable questions; *recall* is the share with any such candidate, "
          "the ceiling).",
          "- **abstention at 10% false refusal**: the threshold that refuses 10% of answerable "
          "validation questions, and the share of SQuAD 2.0 unanswerable questions and of "
          "withheld questions (asked with their article hidden) it refuses.", "",
          "| judge | PIAF top-1 | SQuAD top-1 | SQuAD unanswerable refused @10% | PIAF withheld "
          "refused @10% | SQuAD withheld refused @10% | train min |",
          "|---|---:|---:|---:|---:|---:|---:|"]
    for name, block in validation.items():
        piaf, squad = block["piaf"], block["squad2"]
        md.append(f"| {name} | {_cell(piaf['top1'])} | {_cell(squad['top1'])} | "
                  f"{_cell(squad['abstain_unanswerable_at_10pct'])} | "
                  f"{_cell(piaf['abstain_withheld_at_10pct'])} | "
                  f"{_cell(squad['abstain_withheld_at_10pct'])} | "
                  f"{_cell(block.get('train_minutes') or None)} |")
    if contrastive:
        training = contrastive["training"]
        block = contrastive["validation"]["tuned"]
        piaf, squad = block["piaf"], block["squad2"]
        md.append(f"| e5 fine-tuned contrastively (top {training['train_layers']} layers, "
                  f"{training['pairs_seen']:,} pairs, in-batch + hard negatives), cosine | "
                  f"{_cell(piaf['top1'])} | {_cell(squad['top1'])} | "
                  f"{_cell(squad.get('abstain_unanswerable_at_10pct'))} | "
                  f"{_cell(piaf.get('abstain_withheld_at_10pct'))} | "
                  f"{_cell(squad.get('abstain_withheld_at_10pct'))} | "
                  f"{_cell(training['train_minutes'])} |")
    if cross:
        training = cross["training"]
        piaf, squad = cross["validation"]["cross"]["piaf"], cross["validation"]["cross"]["squad2"]
        md.append(f"| cross-encoder: e5 reading (question, sentence) together, top "
                  f"{training['tuned_layers']} layers, residual on the reader's top "
                  f"{training['top_k']}, {training['pairs']:,} pairs | "
                  f"{_cell(piaf['top1'])} | {_cell(squad['top1'])} | "
                  f"{_cell(squad.get('abstain_unanswerable_at_10pct'))} | "
                  f"{_cell(piaf.get('abstain_withheld_at_10pct'))} | "
                  f"{_cell(squad.get('abstain_withheld_at_10pct'))} | "
                  f"{_cell(training['minutes'])} |")
    piaf, squad = validation[next(iter(validation))]["piaf"], validation[next(iter(validation))]["squad2"]
    md += ["", f"Candidate recall (the ceiling of top-1): PIAF {piaf['candidate_recall']:.3f}, "
           f"SQuAD 2.0 {squad['candidate_recall']:.3f}.", "",
           f"Shipped reader: {card['parameters']:,} parameters, {card['bytes']:,} bytes (fp16 "
           f"safetensors), threshold {card['threshold']} ({card['threshold_rule']}), a further "
           f"sentence at probability {card['extra_threshold']} or more. Training took "
           f"{card['minutes']['total']} min on 2 cores from an empty work folder, "
           f"{card['minutes']['data']} min of it indexing both corpora and building the "
           "candidates; a second run from scratch wrote weights with the same sha256.", ""]
    if contrastive:
        md += [f"The fine-tuned e5 row comes from `benchmarks/reader_contrastive.py` "
               f"(`benchmarks/reader_contrastive.json`): it ranks better than the original e5 but "
               f"its cosine becomes a worse abstention signal, it would add "
               f"{contrastive['changed_mb_fp16']} MB of changed layers, a second set of sentence "
               f"vectors and a second question embedding "
               f"({contrastive['inference_ms']['tuned']} ms), and the feature classifier beats it "
               "on both counts.", ""]
    if cross:
        judge = cross["validation"]["judge"]
        training = cross["training"]
        md += [f"The cross-encoder row comes from `benchmarks/reader_cross.py` "
               f"(`benchmarks/reader_cross.json`). Its output is added to the reader's logit for "
               f"the reader's {training['top_k']} best candidates (head started at zero, so it "
               f"begins as the reader) and it learns with the reader's listwise loss; in the same "
               f"run the reader alone scored PIAF top-1 {judge['piaf']['top1']:.3f} and SQuAD "
               f"{judge['squad2']['top1']:.3f}. In {training['minutes']} min on 2 cores it saw "
               f"{training['batches_done']} of {training['batches_planned']} planned batches; "
               "its loss never left the reader's own level and on validation questions its "
               "corrections were no higher for answering sentences than for the others. It would "
               f"cost {cross['inference_ms_per_question']} ms per question and "
               f"{cross['changed_mb_fp16']} MB: not shipped.", ""]
    return md


def ablation_section(ablation: dict) -> list[str]:
    """One table per set: each answerer and rule with the metrics that decide them."""
    keys = ablation["keys"]
    md = ["## Ablation: answerers and hand rules (hybrid retriever)", "",
          f"`{ablation['command']}` ({ablation['minutes']} min). PIAF and SQuAD 2.0: validation "
          "articles only. A rule stays on only where it earns its place across the three sets.", ""]
    for label, configs in ablation["sets"].items():
        n = next(iter(configs.values())).get("n_questions")
        md += [f"### {label} ({n} questions)", "",
               "| answerer | " + " | ".join(f"`{k}`" for k in keys) + " |",
               "|---|" + "---:|" * len(keys)]
        for name, block in configs.items():
            md.append(f"| {name} | " + " | ".join(format_value(k, block.get(k)) for k in keys) + " |")
        md.append("")
    return md


# --------------------------------------------------------------------------- the file


def write_results(seeds: dict, piaf: dict | None, out: Path, plot: Path,
                  seeds_path: Path, piaf_path: Path | None, squad: dict | None = None,
                  squad_path: Path | None = None, card: dict | None = None,
                  contrastive: dict | None = None, ablation: dict | None = None,
                  ablation_path: Path | None = None, cross: dict | None = None) -> None:
    curves = plot_abstention(seeds, plot, piaf)
    run_threshold = seeds["run"].get("abstain_threshold")
    runs = ([("seeds", seeds)] + ([("PIAF", piaf)] if piaf else [])
            + ([("SQuAD 2.0", squad)] if squad else []))
    report_cmd = (f"python -m eval.report --seeds {seeds_path}"
                  + (f" --piaf {piaf_path}" if piaf_path else "")
                  + (f" --squad {squad_path}" if squad_path else "")
                  + (f" --ablation {ablation_path}" if ablation_path else ""))
    md = ["# Evaluation results", "",
          f"Generated by `{report_cmd}` from the JSON of the runs below; regenerate it rather than "
          "editing it. Every question goes through `Assistant.ask`, the chat's code path, with each "
          "retriever in turn (one index, one process per set).", ""]
    if piaf and piaf["run"].get("limit"):
        md += ["> **The PIAF numbers below come from a partial run** (`--limit "
               f"{piaf['run']['limit']}`): they are a smoke test, not the benchmark result. "
               "Rerun the full command below once the retriever is final.", ""]
    md += ["## Runs", ""] + run_table(runs) + [""]
    md += ["To regenerate (from the repository root, with the venv active):", "", "```sh"]
    for _, document in runs:
        md.append(document["run"].get("command", "rag eval --retriever all --json OUT"))
    if piaf and piaf["run"].get("limit"):
        md.append("# full PIAF benchmark (drop --limit):")
        md.append("rag eval --corpus ../shared/bench/piaf/corpus --questions "
                  "../shared/bench/piaf/questions.jsonl --retriever all --json /tmp/piaf.json")
    if ablation:
        md.append(ablation["command"])
    md += [report_cmd, "```", ""]

    md += ["## Seeds question set (`eval/questions.jsonl`)", "",
           describe_set(seeds, "Project question set on `seeds/`") + ".", ""]
    md += metrics_table(seeds["blocks"]) + [""]
    md += ["### Quality gates (`eval/gates.json`, hybrid retriever)", "",
           "`tests/test_eval.py` asserts these in CI; `rag eval --gates` exits 1 when one fails.",
           ""] + gates_section(seeds) + [""]
    hybrid = records_of(seeds, GATED_RETRIEVER)
    if hybrid:
        md += ["### By kind of question (hybrid)", ""] + per_kind_table(hybrid) + [""]
        md += ["### Questions the hybrid retriever got wrong", ""] + mistakes(hybrid) + [""]
    if piaf:
        md += ["## PIAF benchmark (`../shared/bench/piaf/`, validation articles)", "",
               describe_set(piaf, "PIAF (French SQuAD-style; every question answerable, one "
                            "gold file each)") + ".", ""]
        md += metrics_table(piaf["blocks"]) + [""]
        md += ["PIAF has no unanswerable question, so `abstain_unanswerable` is n/a; "
               "`abstain_answerable` is the share of its questions the assistant declined. "
               "`abstain_withheld` asks every question again with its article hidden from the "
               "search: the question then has no answer in the corpus, and the closest passages "
               "come from other articles, often on a neighbouring topic. It measures abstention "
               "on questions written by others. The reader was trained on PIAF's other articles: "
               "these runs use `--split validation`, the articles it never saw. On the seeds the same number is lower "
               "by nature: the five articles report the same events, so hiding the file listed "
               "as the source often leaves another that answers.", ""]

    if squad:
        md += ["## SQuAD 2.0 benchmark (`../shared/bench/squad2/`, validation articles)", "",
               describe_set(squad, "SQuAD 2.0 (English questions over English Wikipedia, about "
                            "half of them unanswerable near misses written against a real "
                            "paragraph)") + ".", ""]
        md += metrics_table(squad["blocks"]) + [""]
    if card:
        md += reader_section(card, contrastive, cross)
    if ablation:
        md += ablation_section(ablation)
    md += ["## Abstention trade-off (seeds, hybrid)", "",
           "![abstention trade-off](abstention.png)", "",
           "x: the abstention threshold (the assistant answers when the support of its best "
           "sentence, the reader's probability, reaches it; English questions, answered by the "
           "extractive rules, are shifted by the difference of their own threshold); y: share "
           "of questions answered. Raising the threshold refuses more unanswerable questions (red "
           "falls) at the cost of answerable ones (blue falls). Each record carries its support "
           "score, so the curves are computed from one run without re-asking. Below the chosen "
           "threshold the curves are upper bounds (a question the run abstained on could still be "
           "refused by a veto, e.g. a name absent from the passage around the answer), and the correctness of answers "
           "the run did not give is unknown.", ""]
    if run_threshold is not None:
        md += [f"Chosen threshold: **{run_threshold:g}** (the reader's, `rag/reader/weights/reader.json`, "
               "chosen on training articles out of fold; for `--answerer extractive`, "
               "`SearchSettings.abstain_threshold`)."]
    if curves.get("n_vetoed"):
        md += [f"{curves['n_vetoed']} hybrid question(s) were refused by a veto although their "
               "support reached the threshold; they count as never answered."]
    md += [""] + tradeoff_table(curves, run_threshold) + [""]

    md += ["## Metric definitions", "",
           "From `eval/metrics.py` (pure functions over the per-question records of the JSON):", ""]
    md += [f"- `{k}`: {v}." for k, v in METRIC_NOTES.items()]
    md += ["- Normalisation for `answer_contains`: NFKC, case-fold, typographic apostrophes "
           "(’ ‘) to `'`, every run of white space (no-break spaces included) to one space.",
           "- Retrieval metrics rank *distinct files* (`retrieved_sources`, from the 10 passages "
           "`ask` returns). The seeds corpus has only 5 files, so `recall@5` there is ~1 by "
           "construction; `recall@1` and `mrr@10` are the informative ones. PIAF (480 files) is "
           "the real retrieval test.",
           "- Latency: each `Assistant.ask` call is timed whole (question embedding included), "
           "as the chat would take it; latencies depend on the load of the machine during the "
           "run.",
           "- A question that raised is recorded with `error` and counted in `n_failed` (a miss "
           "for retrieval and accuracy).", ""]
    out.write_text("\n".join(md), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.report", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=Path, required=True, help="`rag eval --json` of the seeds set")
    parser.add_argument("--piaf", type=Path, default=None, help="`rag eval --json` of PIAF")
    parser.add_argument("--squad", type=Path, default=None, help="`rag eval --json` of SQuAD 2.0")
    parser.add_argument("--ablation", type=Path, default=None,
                        help="`python -m eval.ablation --json` output")
    parser.add_argument("--contrastive", type=Path, default=BENCHMARKS_DIR / "reader_contrastive.json",
                        help="benchmarks/reader_contrastive.py output, shown beside the reader "
                             "(default: the one in the repository)")
    parser.add_argument("--cross", type=Path, default=BENCHMARKS_DIR / "reader_cross.json",
                        help="benchmarks/reader_cross.py output, shown beside the reader "
                             "(default: the one in the repository)")
    parser.add_argument("--card", type=Path, default=None,
                        help="reader card (default: rag/reader/weights/reader.json)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT)
    args = parser.parse_args(argv)
    seeds = load_run(args.seeds)
    piaf = load_run(args.piaf) if args.piaf else None
    squad = load_run(args.squad) if args.squad else None
    from rag.reader.model import DEFAULT_WEIGHTS, card_path
    card_file = args.card or card_path(DEFAULT_WEIGHTS)
    card = json.loads(card_file.read_text(encoding="utf-8")) if card_file.is_file() else None
    contrastive, cross = (json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
                          for path in (args.contrastive, args.cross))
    ablation = json.loads(args.ablation.read_text(encoding="utf-8")) if args.ablation else None
    write_results(seeds, piaf, args.out, args.plot, args.seeds, args.piaf, squad, args.squad,
                  card, contrastive, ablation, args.ablation, cross)
    print(f"wrote {args.out} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
