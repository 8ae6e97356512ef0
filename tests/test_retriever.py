import asyncio
import time

import numpy as np
import pytest
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.chat_engine import CondensePlusContextChatEngine
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import QueryBundle

from cluster_retriever import ClusterIndex, ClusterRetriever
from cluster_retriever.errors import EmbeddingMismatchError, EmptyQueryError

pytestmark = pytest.mark.slow


def ids(hits):
    return [h.node.node_id for h in hits]


def test_scores_are_cosine_and_nodes_carry_their_cluster(index, embed_model):
    hits = ClusterRetriever(index, similarity_top_k=5).retrieve("go-to-market launch messaging")
    assert all(h.node.node_id.startswith("pmm-") for h in hits)
    query = np.asarray(embed_model.get_query_embedding("go-to-market launch messaging"))
    for hit in hits:
        doc = np.asarray(embed_model.get_text_embedding(hit.node.get_content(metadata_mode="embed")))
        assert hit.score == pytest.approx(float(query @ doc / np.linalg.norm(doc)), abs=1e-4)
        assert hit.node.metadata["cluster_id"] == index.lists.cluster_of(hit.node.node_id)
        assert "cluster_id" not in hit.node.get_content(metadata_mode="llm")
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_flat_equals_exact_search(index, embed_model, docs):
    query = "ETL with Spark"
    vectors = np.asarray(embed_model.get_text_embedding_batch([d.get_content(metadata_mode="embed") for d in docs]))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    exact = np.argsort(-(vectors @ np.asarray(embed_model.get_query_embedding(query))))[:7]
    retriever = ClusterRetriever(index, similarity_top_k=7, mode="flat")
    assert ids(retriever.retrieve(query)) == [docs[i].doc_id for i in exact]
    assert retriever.last_stats.fraction_scanned == 1.0


def test_strict_searches_one_cluster_and_filters_near_misses(index):
    strict = ClusterRetriever(index, similarity_top_k=5, mode="strict")
    hits = strict.retrieve("product marketing manager")
    assert {h.node.metadata["cluster_id"] for h in hits} == {index.lists.cluster_of("pmm-0")}
    assert all(h.node.node_id.startswith("pmm-") for h in hits)
    assert strict.last_stats.clusters_probed == 1 and strict.last_stats.fraction_scanned == pytest.approx(5 / 20)
    flat = ids(ClusterRetriever(index, similarity_top_k=10, mode="flat").retrieve("product marketing manager"))
    assert any(i.startswith("pm-") for i in flat)  # the near miss the filter removes


def test_strict_and_routed_fill_top_k_from_the_next_clusters(index):
    """The nearest cluster holds 5 nodes; asking for 12 probes the next nearest clusters
    instead of returning 5 (a mode never returns fewer hits than the index could give)."""
    for kwargs in ({"mode": "strict"}, {"n_probe": 1}, {}):
        retriever = ClusterRetriever(index, similarity_top_k=12, **kwargs)
        hits = retriever.retrieve("product marketing manager")
        assert len(hits) == 12 and len({h.node.node_id for h in hits}) == 12
        assert retriever.last_stats.clusters_probed >= 3
        assert all(h.node.node_id.startswith("pmm-") for h in hits[:5])
    everything = ClusterRetriever(index, similarity_top_k=200, mode="strict").retrieve("pastry")
    assert len(everything) == 20


def test_fixed_n_probe(index):
    retriever = ClusterRetriever(index, similarity_top_k=5, n_probe=2)
    assert len({h.node.metadata["cluster_id"] for h in retriever.retrieve("a profile")}) == 2
    assert retriever.last_stats.clusters_probed == 2


@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
def test_empty_query(index, query):
    with pytest.raises(EmptyQueryError, match="empty"):
        ClusterRetriever(index).retrieve(query)
    with pytest.raises(EmptyQueryError):
        asyncio.run(ClusterRetriever(index).aretrieve(query))


@pytest.mark.parametrize("kwargs", [{"similarity_top_k": 0}, {"mode": "fuzzy"}, {"n_probe": 0}])
def test_invalid_parameters(index, kwargs):
    with pytest.raises(ValueError):
        ClusterRetriever(index, **kwargs)


def test_query_embedding_of_the_wrong_dimension(index):
    with pytest.raises(EmbeddingMismatchError, match="384-d"):
        ClusterRetriever(index).retrieve(QueryBundle(query_str="x", embedding=[0.1] * 8))


def test_precomputed_query_embedding_is_used(index, embed_model):
    bundle = QueryBundle(query_str="unused", embedding=embed_model.get_query_embedding("croissants"))
    assert ids(ClusterRetriever(index, similarity_top_k=3).retrieve(bundle))[0].startswith("chef-")


async def test_concurrent_aretrieve_gives_independent_results(index):
    retriever = ClusterRetriever(index, similarity_top_k=5)
    queries = ["croissants", "Spark pipelines", "roadmap backlog", "positioning launches"] * 3
    expected = [ids(retriever.retrieve(q)) for q in queries]
    results = await asyncio.gather(*(retriever.aretrieve(q) for q in queries))
    assert [ids(r) for r in results] == expected


class SlowEmbedding(BaseEmbedding):
    """Wraps a real embedder and takes 0.3 s per query, synchronously."""

    inner: BaseEmbedding

    def _get_query_embedding(self, query):
        time.sleep(0.3)
        return self.inner.get_query_embedding(query)

    def _get_text_embedding(self, text):
        return self.inner.get_text_embedding(text)

    async def _aget_query_embedding(self, query):
        return self._get_query_embedding(query)  # a blocking "async" method, as local models have


async def test_aretrieve_does_not_block_the_event_loop(index, embed_model):
    slow = ClusterIndex(index.store, index.manifest, index.lists, SlowEmbedding(inner=embed_model))
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    hits = await ClusterRetriever(slow, similarity_top_k=3).aretrieve("croissants")
    task.cancel()
    assert ids(hits)[0].startswith("chef-")
    assert ticks >= 10  # ~30 ticks fit in 0.3 s; a blocked loop gives ~0


def test_works_inside_query_and_chat_engines(index):
    retriever = ClusterRetriever(index, similarity_top_k=3)
    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM())
    response = engine.query("who bakes croissants?")
    assert [n.node.node_id.split("-")[0] for n in response.source_nodes] == ["chef"] * 3
    chat = CondensePlusContextChatEngine.from_defaults(retriever, llm=MockLLM())
    reply = chat.chat("who builds Spark pipelines?")
    assert reply.source_nodes and all(n.node.node_id.startswith("de-") for n in reply.source_nodes)
