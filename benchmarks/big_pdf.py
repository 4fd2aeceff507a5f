"""Reading a long PDF: time per page as the page count grows, and the two PDF libraries compared.

Builds PDFs of 50 to 300 pages from the seeds' paragraphs (repeated) with reportlab's canvas, as
tests/format_files.py does (running header, page numbers, words hyphenated at line ends), and a
two-column PDF whose content draws both columns' lines row by row. For each it prints:

- the time to extract the text (``rag.formats.extract``, pdfminer.six) and per page: the reading
  is linear if the time per page stays flat as the page count grows;
- the time to read and chunk it as the indexer does (``parse_document`` + ``split_document``,
  embedding excluded: that cost is per chunk, measured by benchmarks/embedding_throughput.py);
- the same pages through pypdf's ``extract_text``, and whether each library reads the two-column
  page in column order, mends hyphenated words and spells ligatures out.

Run: ``.venv/bin/python benchmarks/big_pdf.py [--pages 50 100 200 300]`` (about a minute);
``--index --pages 100 300`` indexes a PDF of each size with the real model instead (minutes).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from format_files import (make_ligature_pdf, make_pdf, seed_names,  # noqa: E402
                          seed_paragraphs)

from rag.chunking import split_document  # noqa: E402
from rag.config import IndexSettings  # noqa: E402
from rag.corpus import parse_document  # noqa: E402
from rag.formats import extract  # noqa: E402


def paragraphs() -> list[str]:
    return [p for seed in seed_names() for p in seed_paragraphs(seed)]


def pdf_of_pages(path: Path, pages: int) -> int:
    """A PDF of about ``pages`` pages: copies of the seeds, each paragraph marked with its copy's
    number (the boilerplate rule drops a line that repeats an earlier one); its page count."""
    base = paragraphs()
    per_copy = make_pdf(path, base).pages
    copies = max(1, round(pages / per_copy))
    return make_pdf(path, [f"{p} (copie {k + 1})" for k in range(copies) for p in base]).pages


def pypdf_text(data: bytes) -> str:
    import io

    from pypdf import PdfReader
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


def timed(fn, *args):
    started = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, nargs="+", default=[50, 100, 200, 300])
    parser.add_argument("--index", action="store_true",
                        help="instead, index a PDF of each size with the real model (`rag index` "
                             "with its progress bars; minutes)")
    args = parser.parse_args()
    settings = IndexSettings()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.index:
            for pages in args.pages:
                index_one(folder / f"run-{pages}", pages, settings)
            return
        print("pages  MB    pdfminer s  ms/page  index-read s  chunks  pypdf s  ms/page")
        for wanted in args.pages:
            path = folder / f"big-{wanted}.pdf"
            pages = pdf_of_pages(path, wanted)
            data = path.read_bytes()
            extracted, miner = timed(extract, "big.pdf", data)
            assert len(extracted.pages) == pages, (len(extracted.pages), pages)
            started = time.perf_counter()
            doc, why = parse_document("big.pdf", data, settings.min_words)
            chunks = split_document(doc, settings.chunk_size, settings.chunk_overlap)
            indexed = time.perf_counter() - started
            _, other = timed(pypdf_text, data)
            print(f"{pages:5d}  {len(data) / 1e6:4.1f}  {miner:10.2f}  {1000 * miner / pages:7.1f}"
                  f"  {indexed:12.2f}  {len(chunks):6d}  {other:7.2f}  {1000 * other / pages:7.1f}")

        print()
        two = folder / "two.pdf"
        source = [p for seed in seed_names()[:3] for p in seed_paragraphs(seed)]
        make_pdf(two, source, columns=2, interleave=True)
        lig = folder / "lig.pdf"
        make_ligature_pdf(lig)
        words = " ".join(source).split()
        for name, read in (("pdfminer.six (rag.formats)", lambda d: extract("x.pdf", d).text),
                           ("pypdf", pypdf_text)):
            text = read(two.read_bytes())
            got = text.split()
            in_order = _in_order(words, got)
            cut = sum(1 for w in got if w.endswith("-") and w[:-1].isalpha())
            ligatures = "ﬁ" not in read(lig.read_bytes()) and "ﬂ" not in read(lig.read_bytes())
            print(f"{name}: two columns drawn row by row read in order: {in_order:.0%} of words; "
                  f"words left cut with a hyphen: {cut}; ligatures spelt out: {ligatures}")


def index_one(folder: Path, pages: int, settings: IndexSettings) -> None:
    """`rag index` on a folder holding one PDF of ``pages`` pages, real model, progress shown."""
    from rag.config import set_offline_environment
    set_offline_environment()
    from rag.embedder import load_embedder
    from rag.index import update_index
    corpus = folder / "corpus"
    corpus.mkdir(parents=True)
    pages = pdf_of_pages(corpus / "big.pdf", pages)
    embedder = load_embedder(settings.model, settings.precision)
    started = time.perf_counter()
    report = update_index(corpus, folder / "index", settings, lambda: embedder, progress=True)
    seconds = time.perf_counter() - started
    print(f"indexed a {pages}-page PDF ({(corpus / 'big.pdf').stat().st_size / 1e6:.1f} MB): "
          f"{report.chunks} chunks in {seconds:.1f} s ({1000 * seconds / pages:.0f} ms per page, "
          f"{report.chunks / seconds:.1f} chunks/s, embedding included)\n")


def _in_order(expected: list[str], got: list[str]) -> float:
    """Share of the expected words found in the same order in ``got`` (longest common
    subsequence of words, over the expected length)."""
    previous = [0] * (len(got) + 1)
    for word in expected:
        current = [0]
        for j, other in enumerate(got, start=1):
            current.append(previous[j - 1] + 1 if word == other
                           else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1] / len(expected)


if __name__ == "__main__":
    main()
