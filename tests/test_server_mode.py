"""Server mode: a real Chroma server on loopback, started and stopped by this test."""

import asyncio
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cluster_retriever import ClusterIndex, ClusterRetriever
from cluster_retriever.store import make_client

pytestmark = [pytest.mark.slow, pytest.mark.server]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory):
    chroma = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    port = free_port()
    data = tmp_path_factory.mktemp("chroma-server")
    process = subprocess.Popen(
        [chroma, "run", "--path", str(data), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                make_client(host="127.0.0.1", port=port).heartbeat()
                break
            except Exception:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the Chroma server did not start")
                time.sleep(0.3)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_build_open_and_query_through_the_server(chroma_server, embed_model, docs):
    port = chroma_server
    built = ClusterIndex.build(docs, host="127.0.0.1", port=port, embed_model=embed_model, n_clusters=4, show_progress=False)
    index = ClusterIndex.open(host="127.0.0.1", port=port, embed_model=embed_model)
    assert index.manifest == built.manifest and len(index) == len(docs)
    retriever = ClusterRetriever(index, similarity_top_k=3)
    queries = {"croissants and desserts": "chef-", "Spark ETL pipelines": "de-", "roadmap and backlog": "pm-"}

    # several clients at once: threads on the sync API ...
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda q: retriever.retrieve(q), list(queries) * 4))
    for query, hits in zip(list(queries) * 4, results):
        assert all(h.node.node_id.startswith(queries[query]) for h in hits)

    # ... and concurrent aretrieve calls from one event loop
    async def many():
        return await asyncio.gather(*(retriever.aretrieve(q) for q in list(queries) * 4))

    for query, hits in zip(list(queries) * 4, asyncio.run(many())):
        assert all(h.node.node_id.startswith(queries[query]) for h in hits)


def test_a_second_client_sees_additions(chroma_server, embed_model, docs):
    from llama_index.core import Document

    port = chroma_server
    writer = ClusterIndex.build(docs, name="shared-index", host="127.0.0.1", port=port, embed_model=embed_model, n_clusters=4, show_progress=False)
    writer.add([Document(id_="chef-late", text="Pastry chef who laminates croissant dough at dawn.")])
    reader = ClusterIndex.open("shared-index", host="127.0.0.1", port=port, embed_model=embed_model)
    assert "chef-late" in reader.lists and reader.manifest.doc_count == writer.manifest.doc_count
