"""The app's own setup, as apps build it: Chroma clients made with Chroma's default settings
(persistent, in-memory, HTTP to a `chroma run` server), the README's snippets run verbatim,
an ingestion job writing the embedded folder from another process, and MMR."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import chromadb
import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode
from llama_index.vector_stores.chroma import ChromaVectorStore

from cluster_retriever import ClusterIndex, ClusterVectorStore, SearchParams
from cluster_retriever.errors import StoreOutOfSyncError

from .chroma_server import chroma_server
from .conftest import CISI, requires_cisi
from .hash_embedding import HashEmbedding, text_of
from .stub_ollama import StubOllama

REPO = Path(__file__).resolve().parents[1]
TENANTS = ["acme", "globex", "initech"]


def readme_block(heading: str, index: int = 0) -> str:
    """The ``index``-th python block under a README heading, verbatim."""
    text = (REPO / "README.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)[index]


def app_collection(client, name: str, embed, n: int = 120) -> ChromaVectorStore:
    """What an app has: documents written by LlamaIndex to its own ChromaVectorStore."""
    chroma = ChromaVectorStore(chroma_collection=client.get_or_create_collection(name))
    docs = [Document(id_=f"doc{i}", text=text_of(i), metadata={"tenant": TENANTS[i % 3]}) for i in range(n)]
    VectorStoreIndex.from_documents(docs, storage_context=StorageContext.from_defaults(vector_store=chroma), embed_model=embed)
    return chroma


def run_quickstart(chroma_vector_store, embed_model, stub_url: str) -> dict:
    from llama_index.llms.litellm import LiteLLM

    names = {
        "chroma_vector_store": chroma_vector_store,
        "embed_model": embed_model,
        "document": Document(id_="new-doc", text="volcano lava magma eruption", metadata={"tenant": "acme"}),
        "llm": LiteLLM(model="ollama_chat/stub", api_base=stub_url),
    }
    exec(compile(readme_block("Quickstart", 0), "README.md#quickstart", "exec"), names)
    return names


def check_quickstart(names: dict, collection) -> None:
    store, index, tenant = names["store"], names["index"], names["tenant"]
    assert collection.count() == len(store.index) == 121  # insert wrote through to the app's collection and the clusters
    hits = index.as_retriever(filters=tenant, similarity_top_k=5).retrieve("volcano lava magma eruption")
    assert hits[0].node.ref_doc_id == "new-doc"
    assert all(hit.node.metadata["tenant"] == "acme" for hit in hits)


@pytest.fixture
def in_tmp_cwd(tmp_path, monkeypatch):
    """Run in an empty folder, so anything written to the working directory shows."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


@pytest.mark.parametrize("kind", ["persistent", "ephemeral"])
def test_readme_quickstart_runs_verbatim_on_a_default_settings_client(kind, tmp_path, in_tmp_cwd, capsys):
    embed = HashEmbedding()
    client = chromadb.PersistentClient(path=str(tmp_path / "app")) if kind == "persistent" else chromadb.EphemeralClient()
    chroma = app_collection(client, f"quickstart-{kind}", embed)
    with StubOllama() as stub:
        names = run_quickstart(chroma, embed, stub.url)
        assert stub.requests >= 1  # the query engine asked the LLM
    check_quickstart(names, chroma._collection)
    assert list(in_tmp_cwd.iterdir()) == []  # no stray ./chroma
    assert "reading the collection" in capsys.readouterr().err  # adoption shows progress where a person waits


@pytest.mark.server
@pytest.mark.slow
def test_readme_quickstart_runs_verbatim_against_a_chroma_server(tmp_path, in_tmp_cwd):
    embed = HashEmbedding()
    with chroma_server(tmp_path / "server") as port, StubOllama() as stub:
        client = chromadb.HttpClient(host="127.0.0.1", port=port)  # Chroma's default settings
        chroma = app_collection(client, "quickstart-http", embed)
        names = run_quickstart(chroma, embed, stub.url)
        check_quickstart(names, chroma._collection)
    assert list(in_tmp_cwd.iterdir()) == []


def test_the_index_opens_by_path_beside_the_apps_default_settings_client(tmp_path):
    embed = HashEmbedding()
    folder = tmp_path / "app"
    client = chromadb.PersistentClient(path=str(folder))  # the app's, telemetry setting left as Chroma's default
    app_collection(client, "app_docs", embed)
    docs = [Document(id_=f"b{i}", text=text_of(i)) for i in range(30)]
    ClusterIndex.build(docs, path=str(folder), name="built", embed_model=embed, n_clusters=3, show_progress=False).close()
    opened = ClusterIndex.open("built", path=str(folder), embed_model=embed)
    assert len(opened) == 30
    assert client.get_collection("app_docs").count() == 120  # the app's client still works


def test_a_chroma_vector_store_passed_to_the_constructor_names_from_chroma(tmp_path):
    chroma = ChromaVectorStore(chroma_collection=chromadb.EphemeralClient().get_or_create_collection("wrong-kind"))
    with pytest.raises(TypeError, match=r"ClusterVectorStore\.from_chroma"):
        ClusterVectorStore(chroma)


def test_adoption_is_quiet_when_asked(capsys):
    embed = HashEmbedding()
    chroma = app_collection(chromadb.EphemeralClient(), "quiet-adoption", embed, n=30)
    ClusterVectorStore.from_chroma(chroma, embed_model=embed, show_progress=False)
    assert "reading the collection" not in capsys.readouterr().err


INGEST = """
import chromadb
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.vector_stores.chroma import ChromaVectorStore
from tests.hash_embedding import HashEmbedding
chroma = ChromaVectorStore(chroma_collection=chromadb.PersistentClient(path={folder!r}).get_collection("app_docs"))
VectorStoreIndex.from_documents(
    [Document(id_="ingested-%d" % i, text="volcano lava magma eruption %d" % i) for i in range(20)],
    storage_context=StorageContext.from_defaults(vector_store=chroma), embed_model=HashEmbedding())
"""

VERIFY = """
import chromadb
from llama_index.vector_stores.chroma import ChromaVectorStore
from cluster_retriever import ClusterVectorStore
from tests.hash_embedding import HashEmbedding
chroma = ChromaVectorStore(chroma_collection=chromadb.PersistentClient(path={folder!r}).get_collection("app_docs"))
store = ClusterVectorStore.from_chroma(chroma, embed_model=HashEmbedding(), show_progress=False)
print(len(store.index))
"""


@pytest.mark.faults
def test_an_ingestion_job_in_another_process_does_not_take_the_apps_queries_down(tmp_path, caplog):
    embed = HashEmbedding()
    folder = str(tmp_path / "app")
    chroma = app_collection(chromadb.PersistentClient(path=folder), "app_docs", embed)
    store = ClusterVectorStore.from_chroma(chroma, embed_model=embed, max_staleness_s=0.0, show_progress=False)
    index = VectorStoreIndex.from_vector_store(store, embed_model=embed)
    retriever = index.as_retriever(similarity_top_k=3)
    before = [hit.node.node_id for hit in retriever.retrieve(text_of(7))]

    done = subprocess.run(
        [sys.executable, "-c", INGEST.format(folder=folder)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]

    with caplog.at_level(logging.WARNING, logger="cluster_retriever.index"):
        for _ in range(5):  # every query answers, from the last state this process could read
            assert [hit.node.node_id for hit in retriever.retrieve(text_of(7))] == before
    warnings = [r for r in caplog.records if "last readable state" in r.getMessage()]
    assert len(warnings) == 1 and "chroma run" in warnings[0].getMessage()
    with pytest.raises(StoreOutOfSyncError, match="restart this process"):
        store.refresh()

    store.index.close()  # a new process (the app restarted) sees the ingested documents
    seen = subprocess.run(
        [sys.executable, "-c", VERIFY.format(folder=folder)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert seen.returncode == 0, seen.stderr[-2000:]
    assert seen.stdout.split()[-1] == "140"


def test_mmr_through_as_retriever_matches_chroma_vector_stores_mmr():
    embed = HashEmbedding()
    client = chromadb.EphemeralClient()
    chroma = ChromaVectorStore(chroma_collection=client.get_or_create_collection("mmr-docs"))
    # near-duplicates of one text, so plain dense search returns copies and MMR must not
    texts = [text_of(i) for i in range(60)] + [f"{text_of(5)} copy {j}" for j in range(6)]
    docs = [Document(id_=f"d{i}", text=t) for i, t in enumerate(texts)]
    VectorStoreIndex.from_documents(docs, storage_context=StorageContext.from_defaults(vector_store=chroma), embed_model=embed)
    store = ClusterVectorStore.from_chroma(chroma, embed_model=embed, show_progress=False)
    ours = VectorStoreIndex.from_vector_store(store, embed_model=embed)
    plain = VectorStoreIndex.from_vector_store(chroma, embed_model=embed)
    options = {"vector_store_query_mode": "mmr", "similarity_top_k": 5, "vector_store_kwargs": {"mmr_threshold": 0.3}}
    mmr = [h.node.node_id for h in ours.as_retriever(**options).retrieve(text_of(5))]
    expected = [h.node.node_id for h in plain.as_retriever(**options).retrieve(text_of(5))]
    dense = [h.node.node_id for h in ours.as_retriever(similarity_top_k=5).retrieve(text_of(5))]
    assert mmr == expected
    assert mmr != dense and len(set(mmr)) == 5

    vector = embed.get_query_embedding(text_of(5))
    for mode in (VectorStoreQueryMode.HYBRID, VectorStoreQueryMode.SPARSE, VectorStoreQueryMode.TEXT_SEARCH):
        with pytest.raises(ValueError, match="mmr"):
            store.query(VectorStoreQuery(query_embedding=vector, similarity_top_k=3, mode=mode))
    for bad in (-1, 0, None, 2.5, True):
        with pytest.raises(ValueError, match="similarity_top_k"):
            store.query(VectorStoreQuery(query_embedding=vector, similarity_top_k=bad))


OFF_TOPIC = [
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit.",
    "Meeting notes: bring snacks on Friday.",
    "Password reset instructions for the VPN.",
    "Recipe: two eggs, flour, sugar; bake 20 minutes.",
    "TODO fix the build",
    "Quarterly parking permit renewal form",
    "Happy birthday Anna!",
    "Error 500 when uploading avatar images",
    "The cat sat on the mat.",
    "Invoice #4411 overdue by 30 days",
]


@pytest.mark.slow
@requires_cisi
def test_every_inserted_document_is_found_by_its_own_text_even_far_from_every_cluster(embed_model):
    """An app of 800 CISI abstracts (routing forced on, otherwise the defaults) inserts 150
    documents through VectorStoreIndex.insert with app metadata: 100 BBC News articles and 10
    notes that fit no cluster, 40 more abstracts. Each is found by its own text where exact
    search finds it (first, but for CISI's own near-duplicates)."""
    from cluster_retriever.datasets import load_bbc_news, load_beir

    corpus = load_beir(CISI).corpus
    base, held = corpus[:800], corpus[800:840]
    inserted = [(d.text, f"bbc-{i}") for i, d in enumerate(load_bbc_news().corpus[:100])]
    inserted += [(d.text, f"cisi-{d.doc_id}") for d in held] + [(t, f"note-{i}") for i, t in enumerate(OFF_TOPIC)]
    chroma = ChromaVectorStore(chroma_collection=chromadb.EphemeralClient().get_or_create_collection("outlier-app"))
    VectorStoreIndex.from_documents(
        base, storage_context=StorageContext.from_defaults(vector_store=chroma), embed_model=embed_model
    )
    routing = SearchParams(exact_scan_max_floats=0)
    store = ClusterVectorStore.from_chroma(chroma, embed_model=embed_model, show_progress=False, search_params=routing)
    store.index.recluster_growth = None
    index = VectorStoreIndex.from_vector_store(store, embed_model=embed_model)
    for text, ref in inserted:
        index.insert(Document(id_=ref, text=text, metadata={"file_name": f"upload_{ref}_final_v2.pdf", "owner": "J. Smith"}))
    routed = index.as_retriever(similarity_top_k=3)
    flat = ClusterVectorStore(store.index, mode="flat")
    misses = []
    for text, ref in inserted:
        found = [hit.node.ref_doc_id for hit in routed.retrieve(text)]
        vector = embed_model.get_query_embedding(text)
        exact = [n.ref_doc_id for n in flat.query(VectorStoreQuery(query_embedding=vector, similarity_top_k=3)).nodes]
        if found[0] != exact[0] or (exact[0] != ref and ref.startswith(("bbc-", "note-"))):
            misses.append((ref, found, exact))
    lists = store.index.lists
    print(f"outliers scanned by every routed query: {len(lists.spill)} of {len(lists)} rows (fence {lists.fence:.3f})")
    assert misses == []
