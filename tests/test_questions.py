"""Sanity checks for the evaluation question set eval/questions.jsonl."""
import json
import unicodedata
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ROOT / "eval" / "questions.jsonl"
SEEDS = ROOT / "seeds"

KINDS = {
    "fact",
    "paraphrase",
    "english",
    "date",
    "followup",
    "unanswerable_near",
    "unanswerable_offtopic",
    "boilerplate_trap",
}
ANSWERABLE_KINDS = {"fact", "paraphrase", "english", "date", "followup"}
UNANSWERABLE_KINDS = {"unanswerable_near", "unanswerable_offtopic", "boilerplate_trap"}

MIN_ANSWERABLE = 36
MIN_TOTAL = 64
MIN_UNANSWERABLE = 20
MIN_PER_KIND = {
    "paraphrase": 8,
    "english": 8,
    "date": 6,
    "unanswerable_near": 8,
    "unanswerable_offtopic": 6,
    "boilerplate_trap": 4,
}
MIN_PER_SEED = 5

_APOSTROPHES = {
    "\u2019": "'",  # right single quotation mark
    "\u2018": "'",  # left single quotation mark
    "\u02bc": "'",  # modifier letter apostrophe
    "\u2032": "'",  # prime
    "\u00b4": "'",  # acute accent
    "`": "'",
}


def local_normalize(text: str) -> str:
    """NFKC, case-fold, typographic apostrophes -> ', whitespace runs -> one space."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(_APOSTROPHES.get(c, c) for c in text)
    return " ".join(text.split())


try:  # use the project's normaliser when it exists
    from eval.metrics import normalize_answer as project_normalize  # type: ignore
except Exception:  # module absent or not importable yet
    project_normalize = None

NORMALIZERS = [local_normalize] + ([project_normalize] if project_normalize else [])


def load_rows():
    rows = []
    with QUESTIONS.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:  # pragma: no cover - message only
                raise AssertionError(f"line {lineno} is not valid JSON: {exc}") from exc
    return rows


ROWS = load_rows()


def seed_text(name: str) -> str:
    return (SEEDS / name).read_text(encoding="utf-8")


def test_file_is_utf8_not_ascii_escaped():
    raw = QUESTIONS.read_text(encoding="utf-8")
    assert "\\u00" not in raw and "\\u20" not in raw, "write with ensure_ascii=False"


def test_keys_and_types():
    expected = {"id", "question", "answers", "sources", "answerable", "kind"}
    for row in ROWS:
        assert set(row) == expected, row
        assert isinstance(row["id"], str) and row["id"]
        assert isinstance(row["question"], str) and row["question"].strip()
        assert isinstance(row["answers"], list)
        assert all(isinstance(a, str) and a.strip() for a in row["answers"]), row
        assert isinstance(row["sources"], list)
        assert all(isinstance(s, str) and s for s in row["sources"]), row
        assert isinstance(row["answerable"], bool)
        assert row["kind"] in KINDS, row


def test_ids_unique_and_well_formed():
    ids = [row["id"] for row in ROWS]
    assert len(ids) == len(set(ids))
    for i, qid in enumerate(ids, 1):
        assert qid == f"q{i:03d}", qid


def test_questions_unique():
    questions = [local_normalize(row["question"]) for row in ROWS]
    dupes = [q for q, n in Counter(questions).items() if n > 1]
    assert not dupes, dupes


def test_answerable_consistency():
    for row in ROWS:
        if row["answerable"]:
            assert row["answers"] and row["sources"], row["id"]
            assert row["kind"] in ANSWERABLE_KINDS, row["id"]
        else:
            assert row["answers"] == [] and row["sources"] == [], row["id"]
            assert row["kind"] in UNANSWERABLE_KINDS, row["id"]


def test_sources_exist():
    for row in ROWS:
        assert len(row["sources"]) == len(set(row["sources"])), row["id"]
        for src in row["sources"]:
            assert "/" not in src and "\\" not in src, src
            assert (SEEDS / src).is_file(), f"{row['id']}: missing seed {src}"


def test_answers_are_short():
    for row in ROWS:
        for ans in row["answers"]:
            assert len(ans.split()) <= 6, (row["id"], ans)


def test_every_answer_verbatim_in_a_source():
    for row in ROWS:
        texts = [seed_text(s) for s in row["sources"]]
        for ans in row["answers"]:
            assert any(ans in t for t in texts), f"{row['id']}: {ans!r} not verbatim in sources"
            for norm in NORMALIZERS:
                na = norm(ans)
                assert na, (row["id"], ans)
                assert any(na in norm(t) for t in texts), (
                    f"{row['id']}: {ans!r} not found after {norm.__name__}"
                )


def test_every_source_contains_an_answer():
    # each listed source must itself state the answer (any alternative)
    for row in ROWS:
        for src in row["sources"]:
            text = local_normalize(seed_text(src))
            assert any(local_normalize(a) in text for a in row["answers"]), (row["id"], src)


def test_kind_counts():
    kinds = Counter(row["kind"] for row in ROWS)
    assert len(ROWS) >= MIN_TOTAL
    assert sum(1 for r in ROWS if r["answerable"]) >= MIN_ANSWERABLE
    assert sum(1 for r in ROWS if not r["answerable"]) >= MIN_UNANSWERABLE
    for kind, minimum in MIN_PER_KIND.items():
        assert kinds[kind] >= minimum, (kind, kinds[kind], minimum)


def test_every_seed_covered():
    seeds = sorted(p.name for p in SEEDS.glob("*.txt"))
    assert seeds, "no seed files"
    per_seed = Counter(s for r in ROWS if r["answerable"] for s in r["sources"])
    for name in seeds:
        assert per_seed[name] >= MIN_PER_SEED, (name, per_seed[name])
