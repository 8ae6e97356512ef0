"""Server mode: a real Chroma server on loopback, started and stopped by this test."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from cluster_retriever import ClusterIndex, ClusterRetriever

from .chroma_server import chroma_server

pytestmark = [pytest.mark.slow, pytest.mark.server]


@pytest.fixture(scope="module")
def chroma_server_port(tmp_path_factory):
    with chroma_server(tmp_path_factory.mktemp("chroma-server")) as port:
        yield port


def test_build_open_and_query_through_the_server(chroma_server_port, embed_model, docs):
    port = chroma_server_port
    built = ClusterIndex.build(docs, host="127.0.0.1", port=port, embed_model=embed_model, n_clusters=4, show_progress=False)
    index = ClusterIndex.open(host="127.0.0.1", port=port, embed_model=embed_model)
    assert index.manifest == built.manifest and len(index) == len(docs)
    retriever = ClusterRetriever(index, similarity_top_k=3)
    queries = {"croissants and desserts": "chef-", "Spark ETL pipelines": "de-", "roadmap and backlog": "pm-"}

    # several clients at once: threads on the sync API ...
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda q: retriever.retrieve(q), list(queries) * 4))
    for query, hits in zip(list(queries) * 4, results, strict=False):
        assert all(h.node.node_id.startswith(queries[query]) for h in hits)

    # ... and concurrent aretrieve calls from one event loop
    async def many():
        return await asyncio.gather(*(retriever.aretrieve(q) for q in list(queries) * 4))

    for query, hits in zip(list(queries) * 4, asyncio.run(many()), strict=False):
        assert all(h.node.node_id.startswith(queries[query]) for h in hits)


def test_a_second_client_sees_additions(chroma_server_port, embed_model, docs):
    from llama_index.core import Document

    port = chroma_server_port
    writer = ClusterIndex.build(
        docs, name="shared-index", host="127.0.0.1", port=port, embed_model=embed_model, n_clusters=4, show_progress=False
    )
    writer.add([Document(id_="chef-late", text="Pastry chef who laminates croissant dough at dawn.")])
    reader = ClusterIndex.open("shared-index", host="127.0.0.1", port=port, embed_model=embed_model)
    assert "chef-late" in reader.lists and reader.doc_count == writer.doc_count
