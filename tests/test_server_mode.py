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


def test_a_calibration_survives_a_recluster_in_another_process(chroma_server_port):
    import subprocess
    import sys

    import numpy as np
    from llama_index.core import Document

    from cluster_retriever.calibration import calibrate, calibration_queries
    from cluster_retriever.scan.lists import outlier_fence

    from .hash_embedding import HashEmbedding

    port, model = chroma_server_port, HashEmbedding()
    texts = [f"topic {i % 10} note {i} " + " ".join(f"w{(i * 7 + j) % 97}" for j in range(5)) for i in range(300)]
    docs = [Document(text=text, id_=f"doc{i}") for i, text in enumerate(texts)]
    index = ClusterIndex.build(
        docs, name="calibrated", host="127.0.0.1", port=port, embed_model=model, n_clusters=8, show_progress=False
    )
    questions = [f"w{i} w{i + 3} topic {i % 10}" for i in range(30)]
    index.calibrate(questions)
    generation = index.manifest.generation
    # An ingestion job of the app's, in its own process, re-clusters through the same server.
    job = (
        "from cluster_retriever import ClusterIndex; from tests.hash_embedding import HashEmbedding; "
        f"i = ClusterIndex.open('calibrated', host='127.0.0.1', port={port}, embed_model=HashEmbedding()); "
        "i.recluster(random_state=5)"
    )
    subprocess.run([sys.executable, "-c", job], check=True, timeout=120)
    index.refresh()
    vectors = calibration_queries(model, questions)
    assert index.manifest.generation != generation
    assert index.manifest.calibration == calibrate(index.lists, queries=vectors) != calibrate(index.lists, seed=5)
    assert index.manifest.query_fence == outlier_fence(np.max(vectors @ index.lists.centroids.T, axis=1))
