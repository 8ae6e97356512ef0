"""Fault injection: the reranker against a misbehaving LLM server. Every rerank must return
a permutation of its input within its deadline, keep the verdicts it got, and say when it
fell back. The worst wall time against the deadline is written to runs/faults/llm.json."""

import json
import logging
import time
from pathlib import Path

import pytest
from llama_index.core.schema import NodeWithScore, TextNode

from cluster_retriever import PairwiseLLMReranker
from cluster_retriever.rerank.pairwise import RerankResult

from .stub_ollama import StubOllama

pytestmark = pytest.mark.faults

QUERY = "how do pastry chefs laminate croissant dough " * 3
CANDIDATES = [
    NodeWithScore(node=TextNode(id_=f"n{i}", text=f"passage {i} about dough and chefs"), score=1 - i / 100) for i in range(20)
]
TIMEOUT, DEADLINE, GRACE = 1.0, 2.5, 0.5
REPORT: dict[str, dict] = {}


def ids(nodes):
    return [n.node.node_id for n in nodes]


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    out = Path(__file__).resolve().parents[1] / "runs" / "faults"
    out.mkdir(parents=True, exist_ok=True)
    (out / "llm.json").write_text(json.dumps(REPORT, indent=2))


@pytest.mark.parametrize("fault", ["hang", "dribble", "reset", "429", "invalid_json", "huge"])
def test_a_misbehaving_server_never_breaks_the_deadline_or_the_order(fault, caplog):
    with StubOllama() as stub:
        stub.fault = fault
        reranker = PairwiseLLMReranker(
            model="ollama_chat/stub", api_base=stub.url, timeout=TIMEOUT, max_wall_s=DEADLINE, top_n=20, max_concurrency=4
        )
        started = time.perf_counter()
        with caplog.at_level(logging.WARNING, logger="cluster_retriever"):
            result = reranker.rerank(CANDIDATES, QUERY)
        wall = time.perf_counter() - started
    REPORT[fault] = {"wall_s": round(wall, 3), "deadline_s": DEADLINE, "llm_calls": result.stats.llm_calls}
    assert ids(result.nodes) == ids(CANDIDATES)  # nothing dropped or repeated; first-stage order
    assert wall <= DEADLINE + GRACE  # "huge" too: litellm parses it off the caller's loop
    assert result.stats.fell_back and result.stats.failures + result.stats.cut_by_deadline == result.stats.llm_calls
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def rerank_past_a_deadline(method: str, delay: float, concurrency: int, caplog) -> tuple[RerankResult, str]:
    """A rerank of ``CANDIDATES`` against a server too slow for its 1 s deadline: the result
    and the last warning, after checking the deadline held."""
    with StubOllama() as stub:
        stub.delay = delay
        reranker = PairwiseLLMReranker(
            model="ollama_chat/stub", api_base=stub.url, method=method, timeout=5, max_wall_s=1.0, max_concurrency=concurrency
        )
        started = time.perf_counter()
        with caplog.at_level(logging.WARNING, logger="cluster_retriever"):
            result = reranker.rerank(CANDIDATES, QUERY)
    assert time.perf_counter() - started <= 1.0 + GRACE
    return result, caplog.records[-1].getMessage()


def test_a_rerank_cut_by_its_deadline_says_so(caplog):
    result, warning = rerank_past_a_deadline("tournament", 0.4, 1, caplog)
    assert result.stats.fell_back and result.stats.skipped_past_deadline > 0 and result.stats.failures <= 1
    assert "deadline" in warning and "the server did not fail" in warning


def test_a_budgeted_rerank_cut_by_its_deadline_keeps_the_order_its_verdicts_found(caplog):
    result, warning = rerank_past_a_deadline("budgeted", 0.3, 2, caplog)
    stats = result.stats
    assert stats.stopped_by == "deadline" and not stats.fell_back and 0 < stats.llm_calls < 40
    assert "deadline" in warning and "best its model found" in warning
    assert len(set(ids(result.nodes))) == len(result.nodes) == 10 and set(ids(result.nodes)) <= set(ids(CANDIDATES))


def test_good_verdicts_obtained_before_a_server_hangs_are_kept():
    with StubOllama() as stub:
        stub.fault, stub.fault_after = "hang", 12
        reranker = PairwiseLLMReranker(model="ollama_chat/stub", api_base=stub.url, timeout=0.3, max_wall_s=10, max_concurrency=1)
        result = reranker.rerank(CANDIDATES, QUERY)
    assert result.stats.llm_calls - result.stats.failures == 12 and result.stats.fell_back
    assert len(reranker._cache._memory) == 12  # kept for the next query
    assert len(set(ids(result.nodes))) == 10 and set(ids(result.nodes)) <= set(ids(CANDIDATES))


def test_a_server_that_always_says_a_is_a_tie_every_time():
    with StubOllama() as stub:
        stub.answer = "A"
        reranker = PairwiseLLMReranker(model="ollama_chat/stub", api_base=stub.url, top_n=20, method="allpair")
        result = reranker.rerank(CANDIDATES[:8], QUERY)
    assert ids(result.nodes) == ids(CANDIDATES[:8])  # position bias cancelled: first-stage order
    assert not result.stats.fell_back and result.stats.failures == 0


def test_a_huge_query_is_cut_like_the_passages():
    with StubOllama() as stub:
        reranker = PairwiseLLMReranker(model="ollama_chat/stub", api_base=stub.url, max_passage_chars=300)
        prompt = reranker._judge.render("q" * 1_000_000, "a", "b")
    assert len(prompt) < 1000


async def test_concurrent_reranks_get_their_own_stats():
    import asyncio

    with StubOllama() as stub:
        reranker = PairwiseLLMReranker(model="ollama_chat/stub", api_base=stub.url, top_n=3)

        async def one(n):
            result = await reranker.arerank(CANDIDATES[:n], QUERY)
            return n, result.stats.candidates, reranker.last_stats.candidates

        outcomes = await asyncio.gather(*(one(n) for n in (3, 5, 7, 9) * 5))
    assert all(n == from_result == from_last for n, from_result, from_last in outcomes)
