"""Lint, types, import hygiene and packaging, run by the test command like everything else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(*command: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, **kwargs)


@pytest.mark.lint
def test_ruff_finds_nothing():
    check = run(str(BIN / "ruff"), "check", ".")
    assert check.returncode == 0, check.stdout[-3000:]
    formatted = run(str(BIN / "ruff"), "format", "--check", ".")
    assert formatted.returncode == 0, formatted.stdout[-3000:]


@pytest.mark.lint
def test_mypy_strict_is_clean():
    checked = run(str(BIN / "mypy"))  # [tool.mypy] in pyproject.toml: strict, on cluster_retriever/
    assert checked.returncode == 0, checked.stdout[-3000:]


# Third-party packages are imported before the snapshot: scikit-learn sets KMP_* variables
# at import, which is its side effect, not ours.
IMPORT_PROBE = """
import json, os, sys
import litellm, matplotlib, sklearn, chromadb, ragas, ranx, llama_index.core, sentence_transformers
env = dict(os.environ)
debug = litellm.suppress_debug_info
backend = matplotlib.rcParams._get_backend_or_none()
import cluster_retriever, cluster_retriever.rerank.pairwise, cluster_retriever.evaluation.report
import cluster_retriever.evaluation.metrics, cluster_retriever.evaluation.runner, cluster_retriever.cli
print(json.dumps({
    "env_changed": sorted(k for k in set(env) | set(os.environ) if env.get(k) != os.environ.get(k)),
    "litellm_debug_changed": litellm.suppress_debug_info != debug,
    "backend_changed": matplotlib.rcParams._get_backend_or_none() != backend,
}))
"""


def test_importing_the_package_changes_nothing_in_the_host_process():
    env = {k: v for k, v in os.environ.items() if k not in ("RAGAS_DO_NOT_TRACK", "MPLBACKEND")}
    probe = run(sys.executable, "-c", IMPORT_PROBE, env=env, timeout=300)
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert json.loads(probe.stdout.splitlines()[-1]) == {
        "env_changed": [],
        "litellm_debug_changed": False,
        "backend_changed": False,
    }


CORE_ONLY_PROBE = """
import cluster_retriever
print("version", cluster_retriever.__version__)
import cluster_retriever.cli  # the command is part of the core
for name, extra in (("cluster_retriever.rerank", "rerank"), ("cluster_retriever.evaluation", "eval")):
    try:
        __import__(name)
        raise SystemExit(f"{name} imported without its extra")
    except ImportError as exc:
        assert f"cluster-retriever[{extra}]" in str(exc), exc
try:
    cluster_retriever.PairwiseLLMReranker
    raise SystemExit("the reranker imported without litellm")
except ImportError as exc:
    assert "cluster-retriever[rerank]" in str(exc), exc
print("extras ok")
"""


@pytest.mark.packaging
@pytest.mark.slow
def test_the_wheel_installs_with_only_the_core_and_runs_the_quickstart(tmp_path):
    built = run(sys.executable, "-m", "build", "--outdir", str(tmp_path / "dist"), timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    wheels = list((tmp_path / "dist").glob("*.whl"))
    assert len(wheels) == 1 and list((tmp_path / "dist").glob("*.tar.gz"))
    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", str(venv)).returncode == 0
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    for step in (["torch==2.13.0"], ["-c", str(REPO / "constraints.txt"), str(wheels[0])]):
        installed = run(*pip, *step, timeout=900)
        assert installed.returncode == 0, installed.stderr[-3000:]
    listed = run(str(venv / "bin" / "python"), "-m", "pip", "list", "--format", "json")
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    heavy = names & {"litellm", "ragas", "matplotlib", "ranx", "faiss-cpu", "langchain-community", "bm25s"}
    assert not heavy, heavy
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    python = str(venv / "bin" / "python")
    probe = subprocess.run([python, "-c", CORE_ONLY_PROBE], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert probe.returncode == 0 and "extras ok" in probe.stdout, probe.stderr[-3000:]
    quick = subprocess.run(
        [python, str(REPO / "examples" / "quickstart.py")], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300
    )
    assert quick.returncode == 0, quick.stderr[-3000:]
    assert "Product marketing managers" in quick.stdout.splitlines()[1]  # line 0 is the question
    assert "typed" in run(sys.executable, "-m", "zipfile", "-l", str(wheels[0])).stdout.replace("py.typed", "typed")
