"""The example scripts, run as a user would (the chat one against the stub LLM through litellm)."""

import subprocess
import sys
from pathlib import Path

import pytest

from .stub_ollama import StubOllama

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_chat_single_turn_with_reranking(tmp_path, text_folder):
    docs = text_folder
    with StubOllama() as stub:
        shown = subprocess.run(
            [
                sys.executable,
                str(REPO / "examples" / "chat.py"),
                "--docs",
                str(docs),
                "--index-path",
                str(tmp_path / "index"),
                "--llm",
                "ollama_chat/stub",
                "--api-base",
                stub.url,
                "--rerank",
                "--top-k",
                "2",
                "--question",
                "who laminates croissant dough?",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
        )
        assert shown.returncode == 0, shown.stderr[-3000:]
        assert stub.requests > 2  # condense/answer calls and the reranker's comparisons
    out = shown.stdout
    assert "assistant>" in out and "sources:" in out
    sources = out.split("sources:")[1]
    assert sources.count("Pastry chef") == 2 and "cluster" in sources


def test_role_confusion_says_the_data_is_generated():
    shown = subprocess.run(
        [sys.executable, str(REPO / "examples" / "role_confusion.py")], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "generated" in shown.stdout.splitlines()[0]
    mean = next(line for line in shown.stdout.splitlines() if line.startswith("mean")).split()[1:]
    assert len(mean) == 3 and all(0 <= float(v) <= 1 for v in mean)
