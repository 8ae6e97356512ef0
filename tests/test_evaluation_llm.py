"""`eval/run_ragas.py --llm` end to end: answers, reranking and the RAGAS LLM metrics through
the real litellm path, against the stub LLM (which answers RAGAS's structured prompts from their text)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from .stub_ollama import StubOllama
from .test_evaluation import write_beir

REPO = Path(__file__).resolve().parents[1]
LLM_METRICS = ("faithfulness", "answer_relevancy", "llm_context_precision_with_reference", "context_recall")
pytestmark = pytest.mark.slow


def run_with_llm(tmp_path: Path, stub: StubOllama) -> tuple[dict, str]:
    out = tmp_path / "out"
    command = [sys.executable, str(REPO / "eval" / "run_ragas.py"), "--dataset", str(write_beir(tmp_path / "mini"))]
    command += ["--out", str(out), "--models", "all-MiniLM-L6-v2", "--modes", "flat,routed", "--max-queries", "3"]
    command += ["--cache-dir", str(tmp_path / "cache"), "--llm", "ollama_chat/stub", "--api-base", stub.url]
    shown = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert shown.returncode == 0, shown.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    reranked = next(r for r in results["runs"] if r.get("mode") == "routed+rerank")
    return reranked, (out / "report.md").read_text()


def test_every_llm_metric_is_a_number(tmp_path):
    with StubOllama() as stub:
        run, report = run_with_llm(tmp_path, stub)
    assert run["llm"] == {"samples": 3, "answers_failed": 0, "failed": dict.fromkeys(LLM_METRICS, 0)}
    for name in LLM_METRICS:
        assert math.isfinite(run["metrics"][name]) and 0 <= run["metrics"][name] <= 1
    # The stub answers with sentences of the context, so every statement is supported.
    assert run["metrics"]["faithfulness"] == 1.0
    assert run["cost"]["llm_calls_per_query"] > 0 and run["metrics"]["ndcg@10"] > 0.9
    # every call's tokens as the stub counted them (a prompt holds two passages and the query)
    assert run["cost"]["llm_tokens_per_query"] > 20 * run["cost"]["llm_calls_per_query"]
    assert run["cost"]["rerank_s_p50"] > 0 and "llm_cost_usd_per_query" in run["cost"]
    assert "tokens/q" in report and "$/q" in report
    assert "| all-MiniLM-L6-v2 | routed+rerank |" in report and "/3 failed)" not in report


def test_malformed_outputs_are_counted_per_metric_not_averaged(tmp_path):
    with StubOllama() as stub:
        stub.garble = "verify if the context was useful"  # LLM context precision's prompt only
        run, report = run_with_llm(tmp_path, stub)
    assert run["llm"]["failed"]["llm_context_precision_with_reference"] == 3
    assert "llm_context_precision_with_reference" not in run["metrics"]  # no NaN mean
    for name in ("faithfulness", "answer_relevancy", "context_recall"):
        assert run["llm"]["failed"][name] == 0 and math.isfinite(run["metrics"][name])
    assert "n/a (3/3 failed)" in report
