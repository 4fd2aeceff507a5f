"""Cold first run (model conversion + index of the seeds) and an unchanged re-run, each in a fresh
process with an empty cache folder: wall time and peak memory (max RSS of the child).

    python benchmarks/cold_start.py
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(args: list[str], env: dict) -> tuple[float, dict]:
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "rag.cli", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True)
    return time.perf_counter() - started, json.loads(out.stdout)


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "RAG_CACHE_DIR": cache}
        cold, summary = run(["index", "--json"], env)
        peak_cold = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        warm, again = run(["index", "--json"], env)
        print(f"cold (convert model + index seeds): {cold:6.1f} s wall, peak RSS {peak_cold:6.0f} MB, "
              f"{summary['chunks']} chunks embedded")
        print(f"unchanged re-run (whole process)  : {warm:6.1f} s wall, index check {again['seconds']:.3f} s, "
              f"{again['embedded']} embedded")


if __name__ == "__main__":
    main()
