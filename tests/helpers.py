"""What several test files share: the environment a command runs in, running one as its own process, small files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "PYTHONPATH": str(ROOT)}


def run_module(module: str, *args, timeout: float = 300, env: dict | None = None, **popen) -> subprocess.CompletedProcess:
    """``python -m module args...`` from the checkout, offline, its output captured."""
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**ENV, **(env or {})}, cwd=ROOT, **popen)


def questions_file(tmp_path: Path, n: int = 2) -> Path:
    """The first ``n`` toy MT-Bench questions as FastChat's question.jsonl."""
    from handbook.toy.judges import toy_questions

    path = tmp_path / "question.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in toy_questions(1)[:n]))
    return path


def cache_records(path: Path) -> list[dict]:
    """The records of a call cache (its first line is the header)."""
    return [json.loads(x) for x in path.read_text().splitlines()[1:]]
