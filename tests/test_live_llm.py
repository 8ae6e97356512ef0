"""Opt-in: the reranker against a real local LLM server.

Set CLUSTER_RETRIEVER_LIVE_LLM to a litellm model string and CLUSTER_RETRIEVER_LIVE_API_BASE
to its server, e.g.

    CLUSTER_RETRIEVER_LIVE_LLM=ollama_chat/llama3.2 CLUSTER_RETRIEVER_LIVE_API_BASE=http://localhost:11434 \\
        .venv/bin/pytest -m live_llm

Skipped (with this reason shown) when no server is configured: CI has none.
"""

import os

import pytest
from llama_index.core.schema import NodeWithScore, TextNode

from cluster_retriever import PairwiseLLMReranker

MODEL = os.environ.get("CLUSTER_RETRIEVER_LIVE_LLM")
pytestmark = [
    pytest.mark.live_llm,
    pytest.mark.skipif(not MODEL, reason="set CLUSTER_RETRIEVER_LIVE_LLM (and _API_BASE) to run against a real LLM"),
]


def test_real_llm_puts_the_answer_first():
    passages = [
        "The Eiffel Tower is a wrought-iron tower in Lyon built for a fair.",  # near miss
        "Bananas are rich in potassium.",
        "The Eiffel Tower stands on the Champ de Mars in Paris, France.",
    ]
    nodes = [NodeWithScore(node=TextNode(id_=str(i), text=t), score=1.0) for i, t in enumerate(passages)]
    reranker = PairwiseLLMReranker(
        model=MODEL, api_base=os.environ.get("CLUSTER_RETRIEVER_LIVE_API_BASE"), method="allpair", timeout=120
    )
    result = reranker.postprocess_nodes(nodes, query_str="In which city is the Eiffel Tower?")
    assert sorted(n.node.node_id for n in result) == ["0", "1", "2"]
    assert reranker.last_stats.failures < reranker.last_stats.llm_calls
    assert result[0].node.node_id == "2"
