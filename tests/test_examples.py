"""The example scripts, run as a user would (the chat one against the stub LLM through litellm)."""

import subprocess
import sys
import time
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


def run_example(*args, timeout=300):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_chat_without_an_llm_retrieves_from_its_own_handbook(tmp_path):
    shown = run_example(
        REPO / "examples" / "chat.py", "--index-path", tmp_path / "index", "--question", "how many vacation days?"
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    sources = shown.stdout.split("sources:")[1].splitlines()
    assert "Vacation and leave" in sources[1]  # the best source, from examples/docs


def test_chat_says_in_one_line_what_to_start_when_the_llm_is_unreachable(tmp_path):
    from .chroma_server import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    shown = run_example(
        REPO / "examples" / "chat.py",
        "--index-path",
        tmp_path / "index",
        "--llm",
        "ollama_chat/llama3.2",
        "--api-base",
        url,
        "--question",
        "how many vacation days?",
    )
    assert shown.returncode == 2 and time.monotonic() - started < 120
    errors = [line for line in shown.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "ollama serve" in errors[0] and "without --llm" in errors[0]
    assert "Traceback" not in shown.stderr


def test_quickstart_asks_about_the_folder_it_was_given(text_folder):
    shown = run_example(REPO / "examples" / "quickstart.py", text_folder)
    assert shown.returncode == 0, shown.stderr[-2000:]
    question = shown.stdout.splitlines()[0]
    assert question.startswith("question: ") and ("chef" in question.lower() or "engineer" in question.lower())
    first_hit = shown.stdout.splitlines()[1].lower()
    assert ("chef" in question.lower()) == ("chef" in first_hit)  # the answer is about what was asked
